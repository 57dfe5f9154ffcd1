// Multi-head attention with torch.nn.MultiheadAttention's parameter names
// (in_proj_weight, in_proj_bias, out_proj.weight, out_proj.bias), which CLIP
// checkpoints use, so its weights load by name. Batch-first.
#pragma once
#include <cmath>
#include <memory>

#include "init.hpp"
#include "linear.hpp"
#include "module.hpp"

namespace ga::nn {

/// Attention of queries [B, L, E] over keys [B, S, E] and values [B, S, E] (or the same
/// without the batch dim), in num_heads heads of E / num_heads dims:
///   Q, K, V = q Wq^T + bq, k Wk^T + bk, v Wv^T + bv   (Wq, Wk, Wv: rows of in_proj_weight)
///   head h = softmax(Q_h K_h^T / sqrt(E / H) + mask) V_h;  out = concat(heads) Wo^T + bo
/// Initialised as PyTorch: in_proj_weight Xavier-uniform, biases zero, out_proj.weight as a
/// Linear's. Requires embed_dim divisible by num_heads (ValueError).
class MultiheadAttention : public Module {
 public:
  MultiheadAttention(int64_t embed_dim, int64_t num_heads, bool bias = true)
      : embed_dim(embed_dim), num_heads(num_heads) {
    GA_CHECK(embed_dim > 0 && num_heads > 0 && embed_dim % num_heads == 0, ValueError,
             "MultiheadAttention: embed_dim ", embed_dim, " must be a positive multiple of num_heads ", num_heads);
    in_proj_weight = register_parameter("in_proj_weight", empty({3 * embed_dim, embed_dim}));
    if (bias) in_proj_bias = register_parameter("in_proj_bias", zeros({3 * embed_dim}));
    out_proj = register_module("out_proj", std::make_shared<Linear>(embed_dim, embed_dim, bias));
    reset_parameters();
  }

  /// Redraws in_proj_weight (Xavier-uniform) and out_proj.weight (Linear's default) from
  /// `gen`, and zeroes both biases.
  void reset_parameters(Generator& gen = default_generator()) {
    init::xavier_uniform_(in_proj_weight, 1.0, gen);
    out_proj->reset_parameters(gen);
    if (in_proj_bias.defined()) init::zeros_(in_proj_bias);
    if (out_proj->bias.defined()) init::zeros_(out_proj->bias);
  }

  /// attn_mask, optional, follows nn.MultiheadAttention: [L, S], [B * num_heads, L, S] or
  /// anything broadcasting to [B, num_heads, L, S]; either b8 with true = may NOT attend
  /// (the opposite of scaled_dot_product_attention's b8 convention) or float, added to the
  /// scores (-inf blocks). is_causal additionally blocks keys after each query (j > i).
  /// Returns [B, L, E] ([L, E] for unbatched inputs).
  Tensor forward(const Tensor& query, const Tensor& key, const Tensor& value, const Tensor& attn_mask = Tensor(),
                 bool is_causal = false) {
    const char* op = "MultiheadAttention";
    const std::string shapes = cat("query ", shape_str(query.shape()), ", key ", shape_str(key.shape()), ", value ",
                                   shape_str(value.shape()));
    const bool batched = query.dim() == 3;
    GA_CHECK((query.dim() == 3 || query.dim() == 2) && key.dim() == query.dim() && value.dim() == query.dim(),
             ShapeError, op, ": expects query, key, value all [B, L, E] or all [L, E]; got ", shapes);
    Tensor q = batched ? query : query.unsqueeze(0);
    Tensor k = batched ? key : key.unsqueeze(0);
    Tensor v = batched ? value : value.unsqueeze(0);
    const int64_t B = q.size(0), L = q.size(1), S = k.size(1), E = embed_dim, H = num_heads, D = E / H;
    GA_CHECK(q.size(2) == E && k.size(2) == E && v.size(2) == E, ShapeError, op, ": embed_dim is ", E, "; got ",
             shapes);
    GA_CHECK(k.size(0) == B && v.size(0) == B && v.size(1) == S, ShapeError, op,
             ": batch sizes or key/value lengths differ; got ", shapes);

    auto project = [&](const Tensor& x, int64_t part, int64_t len) {
      Tensor w = in_proj_weight.narrow(0, part * E, E);
      Tensor b = in_proj_bias.defined() ? in_proj_bias.narrow(0, part * E, E) : Tensor();
      return linear(x, w, b).reshape({B, len, H, D}).transpose(1, 2);  // [B, H, len, D]
    };
    Tensor qh = project(q, 0, L), kh = project(k, 1, S), vh = project(v, 2, S);

    Tensor mask;
    if (attn_mask.defined()) {
      if (attn_mask.dtype() == DType::b8) {
        mask = masked_fill(zeros(attn_mask.shape(), q.dtype(), q.device()), attn_mask, -INFINITY);
      } else {
        GA_CHECK(is_floating(attn_mask.dtype()), DTypeError, op, ": attn_mask must be b8 or floating, got ",
                 dtype_name(attn_mask.dtype()));
        mask = attn_mask.to(q.dtype());
      }
      if (mask.dim() == 3 && mask.size(0) == B * H && B * H != 1) mask = mask.reshape({B, H, L, S});
      GA_CHECK(mask.dim() <= 4, ShapeError, op, ": attn_mask ", shape_str(attn_mask.shape()),
               " has more than 4 dims");
      if (is_causal) mask = add(mask, causal_mask(L, S, q.dtype(), q.device()));
    }
    Tensor o = scaled_dot_product_attention(qh, kh, vh, mask, is_causal && !mask.defined());
    Tensor y = out_proj->forward(o.transpose(1, 2).reshape({B, L, E}));
    return batched ? y : y.squeeze(0);
  }

  /// Self-attention: forward(x, x, x).
  Tensor forward(const Tensor& x) override { return forward(x, x, x); }

  int64_t embed_dim, num_heads;
  Tensor in_proj_weight, in_proj_bias;  // in_proj_bias undefined when built without bias
  std::shared_ptr<Linear> out_proj;
};

}  // namespace ga::nn
