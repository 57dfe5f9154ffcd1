// Scaled dot-product attention (PyTorch's F.scaled_dot_product_attention, math form)
// and the causal mask. Written from matmul, softmax and where, so its gradients are
// those of the composition. Inference (nothing recorded for backward) takes one fused
// kernel instead (Backend::attention): the CLIP towers' benchmark asked for it, since the
// composition's head copies, scale and softmax passes cost 7-12% of a transformer forward.
#pragma once
#include <cmath>

#include "nn_ops.hpp"

namespace ga {

namespace ops {
GA_REGISTER_OP(scaled_dot_product_attention, "attention")
}  // namespace ops

/// The additive causal mask [L, S] of dtype dt (f32/f64): 0 where query i may attend key j
/// (j <= i, the diagonal aligned top-left as in PyTorch's is_causal), -inf above it.
inline Tensor causal_mask(int64_t L, int64_t S, DType dt = DType::f32, Device d = Device::cpu()) {
  GA_CHECK(L >= 0 && S >= 0, ValueError, "causal_mask: negative size [", L, ", ", S, "]");
  GA_CHECK(dt == DType::f32 || dt == DType::f64, DTypeError, "causal_mask: dtype ", dtype_name(dt),
           " not supported (expects f32 or f64)");
  return detail::from_host_fn({L, S}, dt, d, [S](int64_t i) { return i % S <= i / S ? 0.0 : -INFINITY; });
}

namespace detail {
/// The fused inference path of scaled_dot_product_attention: q, k, v of the same up to two
/// batch dims (unbroadcast), viewed as [B0, B1, ., .]. The result is [..., L, Ev], laid out
/// as [B0, L, B1, Ev] underneath: for multi-head attention (B1 = heads) that is the heads'
/// outputs already concatenated per position, so merging them back is a free view.
inline Tensor fused_attention(const Tensor& q, const Tensor& k, const Tensor& v, double scale, bool causal) {
  auto as4 = [](Tensor t) {
    while (t.dim() < 4) t = t.unsqueeze(0);
    return t.stride(3) == 1 ? t : t.contiguous();  // the kernel reads rows in place
  };
  const Tensor q4 = as4(q.detach()), k4 = as4(k.detach()), v4 = as4(v.detach());
  const int64_t B0 = q4.size(0), B1 = q4.size(1), L = q4.size(2), Ev = v4.size(3);
  Tensor out = empty({B0, L, B1, Ev}, q.dtype(), q.device()).permute({0, 2, 1, 3});
  backend::of(q).attention(q4, k4, v4, scale, causal, out);
  Shape os(q.shape().begin(), q.shape().end() - 2);
  os.insert(os.end(), {L, Ev});
  return q.dim() == 4 ? out : out.reshape(os);  // fewer dims: B0 (and B1) are 1, a view
}
}  // namespace detail

/// softmax(q k^T * scale + mask) v over the last two dims; leading dims (batch, heads) of
/// q [..., L, E], k [..., S, E] and v [..., S, Ev] broadcast; the result is [..., L, Ev].
/// scale defaults (nan) to 1/sqrt(E). attn_mask, when given, broadcasts to [..., L, S] and is
/// either float of q's dtype (added to the scores) or b8 (true = may attend). is_causal
/// applies causal_mask(L, S) and excludes attn_mask. A query row with every key masked gets
/// all-zero weights (PyTorch >= 2.5 behaviour), so its output and gradients are 0, not nan.
/// When nothing is recorded for backward, there is no attn_mask and q, k, v share their (at
/// most two) batch dims, one fused kernel computes it, and the result may be a non-contiguous
/// view (see detail::fused_attention). Throws ShapeError / DTypeError / ValueError naming the
/// op and the shapes.
inline Tensor scaled_dot_product_attention(const Tensor& q, const Tensor& k, const Tensor& v,
                                           const Tensor& attn_mask = Tensor(), bool is_causal = false,
                                           double scale = NAN) {
  const char* op = "scaled_dot_product_attention";
  for (const Tensor* t : {&q, &k, &v}) ops::check_float(op, *t);
  ops::check_same_dtype(op, q, k);
  ops::check_same_dtype(op, q, v);
  ops::check_same_device(op, q, k);
  ops::check_same_device(op, q, v);
  const std::string shapes =
      cat("q ", shape_str(q.shape()), ", k ", shape_str(k.shape()), ", v ", shape_str(v.shape()));
  GA_CHECK(q.dim() >= 2 && k.dim() >= 2 && v.dim() >= 2, ShapeError, op,
           ": expects q [..., L, E], k [..., S, E], v [..., S, Ev] (at least 2-d); got ", shapes);
  const int64_t L = q.size(-2), E = q.size(-1), S = k.size(-2);
  GA_CHECK(k.size(-1) == E, ShapeError, op, ": q and k differ in the embedding dim (", E, " vs ", k.size(-1),
           "); got ", shapes);
  GA_CHECK(v.size(-2) == S, ShapeError, op, ": k and v differ in the key length (", S, " vs ", v.size(-2),
           "); got ", shapes);
  Shape batch;
  try {
    batch = broadcast_shapes(broadcast_shapes(Shape(q.shape().begin(), q.shape().end() - 2),
                                              Shape(k.shape().begin(), k.shape().end() - 2), op),
                             Shape(v.shape().begin(), v.shape().end() - 2), op);
  } catch (const ShapeError&) {
    throw ShapeError(cat(op, ": leading (batch) dims do not broadcast together; got ", shapes));
  }
  Shape scores_shape = batch;
  scores_shape.insert(scores_shape.end(), {L, S});
  if (attn_mask.defined()) {
    GA_CHECK(!is_causal, ValueError, op, ": pass either attn_mask or is_causal, not both");
    GA_CHECK(attn_mask.dtype() == DType::b8 || attn_mask.dtype() == q.dtype(), DTypeError, op, ": attn_mask dtype ",
             dtype_name(attn_mask.dtype()), " must be b8 or the query's ", dtype_name(q.dtype()));
    ops::check_same_device(op, q, attn_mask);
    bool fits = attn_mask.dim() <= static_cast<int64_t>(scores_shape.size());
    for (int64_t i = 1; fits && i <= attn_mask.dim(); ++i) {
      const int64_t m = attn_mask.size(-i), s = scores_shape[scores_shape.size() - static_cast<size_t>(i)];
      fits = m == s || m == 1;
    }
    GA_CHECK(fits, ShapeError, op, ": attn_mask ", shape_str(attn_mask.shape()),
             " does not broadcast to the scores ", shape_str(scores_shape), " (", shapes, ")");
  }
  // With E = 0 every score is 0 whatever the scale; 1 avoids 0 * inf = nan.
  const double sc = !std::isnan(scale) ? scale : E > 0 ? 1.0 / std::sqrt(double(E)) : 1.0;
  if (!attn_mask.defined() && !autograd::needs_record({&q, &k, &v}) && L > 0 && S > 0 && E > 0 && q.dim() <= 4 &&
      k.dim() == q.dim() && v.dim() == q.dim() && Shape(q.shape().begin(), q.shape().end() - 2) == batch &&
      Shape(k.shape().begin(), k.shape().end() - 2) == batch && Shape(v.shape().begin(), v.shape().end() - 2) == batch)
    return detail::fused_attention(q, k, v, sc, is_causal);
  Tensor scores = mul(matmul(q, k.transpose(-1, -2)), ops::scalar_like(q, sc));
  Tensor p;
  if (attn_mask.defined()) {
    if (attn_mask.dtype() == DType::b8) scores = where(attn_mask, scores, ops::scalar_like(scores, -INFINITY));
    else scores = add(scores, attn_mask);
    if (S > 0) {
      // Rows with no finite score would give nan weights and nan gradients for every
      // input; they are given uniform scores (finite softmax and backward) and then zeroed.
      Tensor dead;
      {
        NoGradGuard ng;
        dead = eq(max(scores.detach(), {-1}, true), ops::scalar_like(scores, -INFINITY));
      }
      Tensor zero = ops::scalar_like(scores, 0.0);
      p = where(dead, zero, softmax(where(dead, zero, scores), -1));
    } else {
      p = softmax(scores, -1);
    }
  } else {
    if (is_causal) scores = add(scores, causal_mask(L, S, q.dtype(), q.device()));
    p = softmax(scores, -1);  // causal rows always keep key 0, so none is fully masked
  }
  return matmul(p, v);
}

}  // namespace ga
