// Building blocks shared by CLIP's three towers: named weight lookup with dtype checks, the
// f32 view of a stored (possibly f16/bf16) weight, activations, multi-head attention, and
// OpenAI's pre-norm ResidualAttentionBlock in batch-first layout. Inference only: callers
// hold a NoGradGuard; nothing here records onto the autograd tape.
#pragma once
#include <cstdint>
#include <functional>
#include <map>
#include <string>
#include <utility>
#include <vector>

#include "../tensor.hpp"

namespace ga::clip {

/// Named intermediate activations, in the order a forward pass produced them. Batch-first:
/// transformer activations are [N, L, D], convolutional ones [N, C, H, W].
using Trace = std::vector<std::pair<std::string, Tensor>>;

/// Tensors by OpenAI state-dict name.
using TensorMap = std::map<std::string, Tensor>;

/// Called by a loader's weight conversions with each original tensor once its converted copy
/// exists (may be empty): Model::load drops the original's mapped pages.
using WeightRelease = std::function<void(const Tensor&)>;

namespace detail {

/// The tensor `name` from `m`. Requires it present (KeyError naming it) and of a floating
/// dtype (DTypeError naming it and its dtype).
inline const Tensor& weight_at(const TensorMap& m, const std::string& name) {
  auto it = m.find(name);
  GA_CHECK(it != m.end(), KeyError, "clip model: tensor ", name, " is missing");
  GA_CHECK(is_floating(it->second.dtype()), DTypeError, "clip model: tensor ", name, " has dtype ",
           dtype_name(it->second.dtype()), ", expected f32, f16 or bf16");
  return it->second;
}

/// The f32 values of a small weight (biases, norms, embeddings), converted once when the
/// towers are built: the tensor itself when it is f32, else a converted copy. The products'
/// weights are not converted: matmul, linear and conv2d take f16/bf16 weights directly (the
/// mixed product, exact unless the forward pass runs under a lower MixedPrecisionScope; see
/// LoadOptions).
inline Tensor as_f32(const Tensor& t) { return !t.defined() || t.dtype() == DType::f32 ? t : t.to(DType::f32); }

/// The small weight `name` from `m` as f32 (see as_f32).
inline Tensor small_weight_at(const TensorMap& m, const std::string& name) { return as_f32(weight_at(m, name)); }

/// Layer norm over the last dim, OpenAI's eps 1e-5 (its LayerNorm subclass computes in f32).
struct LayerNormWeights {
  Tensor weight, bias;  // f32
  static LayerNormWeights from(const TensorMap& m, const std::string& prefix) {
    return {small_weight_at(m, prefix + ".weight"), small_weight_at(m, prefix + ".bias")};
  }
  Tensor operator()(const Tensor& x) const { return layer_norm(x, {x.size(-1)}, weight, bias, 1e-5); }
};

struct LinearWeights {
  Tensor weight, bias;  // [out, in] as stored (undefined once quantized), [out] f32
  backend::Int8Weight int8;  // defined once quantized (WeightMode::Int8)
  static LinearWeights from(const TensorMap& m, const std::string& prefix) {
    return {weight_at(m, prefix + ".weight"), small_weight_at(m, prefix + ".bias"), {}};
  }
  /// then.activation(x @ weight^T + bias + then.residual), fused into the product's stores.
  Tensor operator()(const Tensor& x, const Epilogue& then = {}) const {
    return int8.defined() ? linear_int8(x, int8, bias, then) : linear(x, weight, bias, then);
  }
  /// Replaces the weight by its int8 quantization (quantize_int8 of its f32 values), for
  /// products that quantize their inputs as `inputs` says.
  void quantize(backend::Int8Inputs inputs) {
    int8 = quantize_int8(as_f32(weight), inputs);
    weight = Tensor();
  }
};

/// The MLP activation named by ClipConfig::activation: QuickGelu or Gelu.
inline Activation activation_from_name(const std::string& name) {
  if (name == "quick_gelu") return Activation::QuickGelu;
  GA_CHECK(name == "gelu", ValueError, "clip model: unknown activation \"", name,
           "\" (expected \"quick_gelu\" or \"gelu\")");
  return Activation::Gelu;
}

/// Multi-head attention on already projected q [N, Lq, D], k, v [N, L, D] with `heads`
/// heads of D / heads each; returns the heads' outputs concatenated, [N, Lq, D], before the
/// output projection. `causal`: query i sees keys 0..i only.
inline Tensor multi_head_attention(const Tensor& q, const Tensor& k, const Tensor& v, int64_t heads, bool causal) {
  const int64_t N = q.size(0), Lq = q.size(1), L = k.size(1), D = q.size(2), hd = D / heads;
  auto split = [&](const Tensor& t, int64_t len) { return t.reshape({N, len, heads, hd}).permute({0, 2, 1, 3}); };
  Tensor o = scaled_dot_product_attention(split(q, Lq), split(k, L), split(v, L), Tensor(), causal);
  return o.permute({0, 2, 1, 3}).reshape({N, Lq, D});
}

/// x[n, pos[n]] for each sequence n of x [N, L, D] (contiguous f32): [N, D]. Requires
/// pos.size() == N and 0 <= pos[n] < L.
inline Tensor rows_at(const Tensor& x, const std::vector<int64_t>& pos) {
  const int64_t N = x.size(0), L = x.size(1), D = x.size(2);
  std::vector<int64_t> rows(static_cast<size_t>(N));
  for (int64_t n = 0; n < N; ++n) rows[static_cast<size_t>(n)] = n * L + pos[static_cast<size_t>(n)];
  return index_select(x.view({N * L, D}), 0, tensor(rows));
}

/// OpenAI's ResidualAttentionBlock: x + attn(ln_1(x)), then + c_proj(act(c_fc(ln_2(x)))),
/// with attn's q, k, v projections stacked in in_proj_weight / in_proj_bias.
struct ResidualBlockWeights {
  LayerNormWeights ln_1, ln_2;
  Tensor in_proj_weight, in_proj_bias;  // [3D, D] as stored, [3D] f32: q, k, v stacked
  LinearWeights out_proj, c_fc, c_proj;
  // Once quantized (WeightMode::Int8): the stacked projection as q, k, v together, and (for
  // forward_at, a tower's last block only) q alone and k, v together.
  LinearWeights in_proj_int8, q_int8, kv_int8;

  /// Quantizes every product weight to int8 (see LinearWeights::quantize); `split` also
  /// quantizes the pieces forward_at uses.
  void quantize(bool split, backend::Int8Inputs inputs) {
    const int64_t D = in_proj_weight.size(1);
    const Tensor w = as_f32(in_proj_weight);
    in_proj_int8 = {w, in_proj_bias, {}};
    in_proj_int8.quantize(inputs);
    if (split) {
      q_int8 = {w.narrow(0, 0, D), in_proj_bias.narrow(0, 0, D), {}};
      kv_int8 = {w.narrow(0, D, 2 * D), in_proj_bias.narrow(0, D, 2 * D), {}};
      q_int8.quantize(inputs);
      kv_int8.quantize(inputs);
    }
    in_proj_weight = Tensor();
    out_proj.quantize(inputs);
    c_fc.quantize(inputs);
    c_proj.quantize(inputs);
  }

  /// h @ in_proj_weight[rows]^T + in_proj_bias[rows] for the stacked rows [first, first +
  /// count): all three (0, 3D), q (0, D) or k and v (D, 2D).
  Tensor in_proj(const Tensor& h, int64_t first, int64_t count) const {
    if (in_proj_int8.int8.defined()) {
      const int64_t D = in_proj_int8.int8.channels;
      const LinearWeights& q = count == 3 * D ? in_proj_int8 : first == 0 ? q_int8 : kv_int8;
      GA_CHECK(q.int8.defined(), ValueError, "clip model: this block's split int8 projection was not prepared");
      return q(h);
    }
    if (first == 0 && count == in_proj_weight.size(0)) return linear(h, in_proj_weight, in_proj_bias);
    return linear(h, in_proj_weight.narrow(0, first, count), in_proj_bias.narrow(0, first, count));
  }

  static ResidualBlockWeights from(const TensorMap& m, const std::string& prefix) {
    ResidualBlockWeights b;
    b.ln_1 = LayerNormWeights::from(m, prefix + ".ln_1");
    b.ln_2 = LayerNormWeights::from(m, prefix + ".ln_2");
    b.in_proj_weight = weight_at(m, prefix + ".attn.in_proj_weight");
    b.in_proj_bias = small_weight_at(m, prefix + ".attn.in_proj_bias");
    b.out_proj = LinearWeights::from(m, prefix + ".attn.out_proj");
    b.c_fc = LinearWeights::from(m, prefix + ".mlp.c_fc");
    b.c_proj = LinearWeights::from(m, prefix + ".mlp.c_proj");
    return b;
  }

  /// Replaces x [N, L, D] (contiguous, not requiring grad) by the block's output; the
  /// residual sums and the MLP activation are fused into the products.
  void forward_inplace(Tensor& x, int64_t heads, Activation act, bool causal) const {
    const int64_t D = x.size(-1);
    Tensor qkv = in_proj(ln_1(x), 0, 3 * D);  // [N, L, 3D]
    Tensor a = multi_head_attention(qkv.narrow(-1, 0, D), qkv.narrow(-1, D, D), qkv.narrow(-1, 2 * D, D), heads,
                                    causal);
    x = out_proj(a, {x});
    x = c_proj(c_fc(ln_2(x), {Tensor(), act}), {x});
  }

  /// The block's output at one position per sequence: row n of the result [N, D] is
  /// forward_inplace's x[n, pos[n]]. Requires x [N, L, D] contiguous and 0 <= pos[n] < L.
  /// Every position still supplies keys and values, but only the N read positions get a
  /// query, the output projection and the MLP: for the last block of a tower, whose output
  /// is read at one token per sequence, that skips nearly 10/12 of the block's products.
  /// Exact (the other positions' outputs reach nothing read); numerically equal up to the
  /// products' blocking. `causal`: position pos[n] sees keys 0..pos[n] only.
  Tensor forward_at(const Tensor& x, const std::vector<int64_t>& pos, int64_t heads, Activation act,
                    bool causal) const {
    const int64_t N = x.size(0), D = x.size(2);
    const Tensor h = ln_1(x);
    const Tensor kv = in_proj(h, D, 2 * D);  // [N, L, 2D]
    const Tensor x_at = rows_at(x, pos).view({N, 1, D});
    const Tensor q = in_proj(rows_at(h, pos).view({N, 1, D}), 0, D);  // [N, 1, D]
    Tensor a;
    if (!causal) {
      a = multi_head_attention(q, kv.narrow(-1, 0, D), kv.narrow(-1, D, D), heads, false);
    } else {
      // Sequence n's query is the last of the keys it may see, so its keys 0..pos[n] need no mask.
      a = empty({N, 1, D});
      for (int64_t n = 0; n < N; ++n) {
        const Tensor kv_n = kv.narrow(0, n, 1).narrow(1, 0, pos[static_cast<size_t>(n)] + 1);
        a.narrow(0, n, 1).copy_(
            multi_head_attention(q.narrow(0, n, 1), kv_n.narrow(-1, 0, D), kv_n.narrow(-1, D, D), heads, false));
      }
    }
    Tensor y = out_proj(a, {x_at});
    y = c_proj(c_fc(ln_2(y), {Tensor(), act}), {y});
    return y.view({N, D});
  }
};

/// OpenAI's Transformer: a stack of residual blocks, all with the same head count.
struct TransformerWeights {
  std::vector<ResidualBlockWeights> blocks;

  static TransformerWeights from(const TensorMap& m, const std::string& prefix, int64_t layers) {
    TransformerWeights t;
    for (int64_t i = 0; i < layers; ++i)
      t.blocks.push_back(ResidualBlockWeights::from(m, prefix + ".resblocks." + std::to_string(i)));
    return t;
  }

  /// Quantizes every block's product weights to int8 (the last block's split projections too).
  void quantize(backend::Int8Inputs inputs) {
    for (size_t i = 0; i < blocks.size(); ++i) blocks[i].quantize(i + 1 == blocks.size(), inputs);
  }

  /// Runs every block on x [N, L, D] (replaced by the output); records "<prefix>.resblocks.<i>" after each
  /// block into `trace` when given.
  void forward_inplace(Tensor& x, int64_t heads, Activation act, bool causal, Trace* trace,
                       const std::string& prefix) const {
    for (size_t i = 0; i < blocks.size(); ++i) {
      blocks[i].forward_inplace(x, heads, act, causal);
      if (trace) trace->emplace_back(prefix + ".resblocks." + std::to_string(i), x.clone());
    }
  }

  /// The stack's output at one position per sequence, [N, D] (see
  /// ResidualBlockWeights::forward_at): every block but the last runs on all of x [N, L, D]
  /// (x is overwritten), the last only where it is read. Requires 0 <= pos[n] < L.
  Tensor forward_at(Tensor& x, const std::vector<int64_t>& pos, int64_t heads, Activation act, bool causal) const {
    if (blocks.empty()) return rows_at(x, pos);
    for (size_t i = 0; i + 1 < blocks.size(); ++i) blocks[i].forward_inplace(x, heads, act, causal);
    return blocks.back().forward_at(x, pos, heads, act, causal);
  }
};

}  // namespace detail
}  // namespace ga::clip
