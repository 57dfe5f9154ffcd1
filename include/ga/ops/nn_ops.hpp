// Neural-network ops: softmax and log-softmax along any dim, layer norm, inference
// batch norm, dropout, L2 normalisation and cosine similarity. Softmax and layer norm
// run backend kernels with their own gradient rules; the rest are compositions.
#pragma once
#include <cmath>

#include "linalg.hpp"

namespace ga {

namespace ops {
GA_REGISTER_OP(softmax, "nn")
GA_REGISTER_OP(log_softmax, "nn")
GA_REGISTER_OP(layer_norm, "nn")
GA_REGISTER_OP(batch_norm, "nn")
GA_REGISTER_OP(dropout, "nn")
GA_REGISTER_OP(normalize, "nn")
GA_REGISTER_OP(cosine_similarity, "nn")

/// Runs the row-wise softmax kernel along `d` (already wrapped): moves d last, runs on a
/// [rows, n] matrix, and returns the result in x's logical order, contiguous (as PyTorch
/// gives for contiguous input, so callers may view() it). No tape: callers record rules.
inline Tensor softmax_along(const Tensor& x, int64_t d, bool log) {
  const int64_t nd = x.dim();
  if (nd == 0) return softmax_along(x.detach().reshape({1}), 0, log).reshape({});
  std::vector<int64_t> perm, inverse(static_cast<size_t>(nd));
  for (int64_t i = 0; i < nd; ++i)
    if (i != d) perm.push_back(i);
  perm.push_back(d);
  for (int64_t i = 0; i < nd; ++i) inverse[static_cast<size_t>(perm[static_cast<size_t>(i)])] = i;
  Tensor xt = x.detach().permute(perm).contiguous();
  const int64_t n = x.shape()[d];
  int64_t rows = 1;
  for (int64_t i = 0; i < nd; ++i)
    if (i != d) rows *= x.shape()[i];
  Tensor out = empty(xt.shape(), x.dtype(), x.device());
  backend::of(x).softmax_last(xt.view({rows, n}), out.view({rows, n}), log);
  return d == nd - 1 ? out : out.permute(inverse).contiguous();
}
}  // namespace ops

/// exp(x) / sum(exp(x)) along `dim`, computed stably; the result is contiguous. Requires
/// f32/f64 and a valid dim (IndexError otherwise). A row that is all -inf gives nan, as in
/// PyTorch.
inline Tensor softmax(const Tensor& x, int64_t dim) {
  ops::check_float("softmax", x);
  const int64_t d = wrap_dim(dim, x.dim(), "softmax");
  Tensor y = ops::softmax_along(x, d, false);
  return autograd::record("softmax", {x}, y, [y = y.detach(), d](const Tensor& g, const ops::Needs&) {
    // d softmax: y * (g - <g, y>) along the row.
    return ops::Grads{mul(y, sub(g, sum(mul(g, y), {d}, true)))};
  });
}

/// x - logsumexp(x) along `dim`, computed stably. Same requirements as softmax.
inline Tensor log_softmax(const Tensor& x, int64_t dim) {
  ops::check_float("log_softmax", x);
  const int64_t d = wrap_dim(dim, x.dim(), "log_softmax");
  Tensor y = ops::softmax_along(x, d, true);
  return autograd::record("log_softmax", {x}, y, [y = y.detach(), d](const Tensor& g, const ops::Needs&) {
    return ops::Grads{sub(g, mul(exp(y), sum(g, {d}, true)))};
  });
}

/// Layer norm over the trailing dims `normalized_shape` of x (biased variance, eps inside
/// the square root), then * weight + bias when given. Requires: x f32/f64 ending in
/// normalized_shape (at least one dim); weight and bias undefined or of normalized_shape,
/// x's dtype and device. Differentiable in x, weight and bias.
inline Tensor layer_norm(const Tensor& x, const Shape& normalized_shape, const Tensor& weight = Tensor(),
                         const Tensor& bias = Tensor(), double eps = 1e-5) {
  const char* op = "layer_norm";
  ops::check_float(op, x);
  const int64_t k = static_cast<int64_t>(normalized_shape.size());
  GA_CHECK(k >= 1, ShapeError, op, ": normalized_shape must have at least one dim");
  GA_CHECK(x.dim() >= k && Shape(x.shape().end() - k, x.shape().end()) == normalized_shape, ShapeError, op,
           ": input ", shape_str(x.shape()), " does not end in normalized_shape ", shape_str(normalized_shape));
  for (const Tensor* p : {&weight, &bias}) {
    if (!p->defined()) continue;
    const char* what = p == &weight ? "weight" : "bias";
    ops::check_float(op, *p);
    ops::check_same_dtype(op, x, *p);
    ops::check_same_device(op, x, *p);
    GA_CHECK(p->shape() == normalized_shape, ShapeError, op, ": ", what, " ", shape_str(p->shape()),
             " does not match normalized_shape ", shape_str(normalized_shape));
  }
  const int64_t n = numel_of(normalized_shape);
  int64_t rows = 1;
  for (int64_t i = 0; i < x.dim() - k; ++i) rows *= x.shape()[i];
  Tensor x2 = x.detach().contiguous().view({rows, n});
  Tensor w = weight.defined() ? weight.detach().contiguous().view({n}) : Tensor();
  Tensor b = bias.defined() ? bias.detach().contiguous().view({n}) : Tensor();
  Tensor y = empty({rows, n}, x.dtype(), x.device());
  Tensor mu = empty({rows, 1}, x.dtype(), x.device()), rstd = empty({rows, 1}, x.dtype(), x.device());
  backend::of(x).layer_norm_last(x2, w, b, eps, y, mu.view({rows}), rstd.view({rows}));
  y = y.view(x.shape());
  return autograd::record(op, {x, weight, bias}, y,
                          [x2, w, mu, rstd, rows, n, xs = x.shape(), ns = normalized_shape](const Tensor& g,
                                                                                           const ops::Needs& need) {
                            Tensor g2 = g.reshape({rows, n});
                            Tensor xhat = mul(sub(x2, mu), rstd);
                            Tensor gx;
                            if (need[0]) {
                              // d/dx of (x - mu) * rstd, with mu and rstd functions of the row.
                              Tensor gh = w.defined() ? mul(g2, w) : g2;
                              Tensor c1 = mean(gh, {1}, true), c2 = mean(mul(gh, xhat), {1}, true);
                              gx = mul(rstd, sub(sub(gh, c1), mul(xhat, c2))).reshape(xs);
                            }
                            return ops::Grads{gx, need[1] ? sum(mul(g2, xhat), {0}).reshape(ns) : Tensor(),
                                              need[2] ? sum(g2, {0}).reshape(ns) : Tensor()};
                          });
}

/// Inference batch norm: (x - running_mean) / sqrt(running_var + eps) * weight + bias per
/// channel. Requires x f32/f64 of shape [N, C, ...]; running stats [C]; weight and bias [C]
/// or undefined; one dtype and device. A composition, so differentiable in every tensor
/// argument (training code normally differentiates x, weight and bias only).
inline Tensor batch_norm(const Tensor& x, const Tensor& running_mean, const Tensor& running_var,
                         const Tensor& weight, const Tensor& bias, double eps = 1e-5) {
  const char* op = "batch_norm";
  ops::check_float(op, x);
  GA_CHECK(x.dim() >= 2, ShapeError, op, ": input must be [N, C, ...], got ", shape_str(x.shape()));
  const int64_t C = x.size(1);
  const char* names[] = {"running_mean", "running_var", "weight", "bias"};
  const Tensor* params[] = {&running_mean, &running_var, &weight, &bias};
  for (int i = 0; i < 4; ++i) {
    const Tensor& p = *params[i];
    if (i < 2) ops::check_defined(op, p, names[i]);
    if (!p.defined()) continue;
    ops::check_float(op, p);
    ops::check_same_dtype(op, x, p);
    ops::check_same_device(op, x, p);
    GA_CHECK(p.shape() == Shape{C}, ShapeError, op, ": ", names[i], " ", shape_str(p.shape()), " does not match ",
             C, " channels of input ", shape_str(x.shape()));
  }
  Shape s(static_cast<size_t>(x.dim()), 1);
  s[1] = C;
  // Folded into one scale and one shift per channel, so only two full-size ops run.
  Tensor scale = rsqrt(running_var + eps);
  if (weight.defined()) scale = mul(scale, weight);
  Tensor shift = neg(mul(running_mean, scale));
  if (bias.defined()) shift = add(shift, bias);
  return add(mul(x, scale.reshape(s)), shift.reshape(s));
}

/// Training-time dropout: each element is zeroed with probability p (drawn from `gen` in
/// row-major order) and the kept ones are scaled by 1 / (1 - p), so the expectation is x.
/// Returns x itself when !training or p == 0. Requires 0 <= p < 1 (ValueError).
/// The gradient is the same mask / (1 - p).
inline Tensor dropout(const Tensor& x, double p, bool training, Generator& gen = default_generator()) {
  GA_CHECK(p >= 0.0 && p < 1.0, ValueError, "dropout: p must be in [0, 1), got ", p);
  ops::check_float("dropout", x);
  if (!training || p == 0.0) return x;
  Tensor keep;
  {
    NoGradGuard ng;
    Tensor u = rand(x.shape(), gen, x.dtype(), 0.0, 1.0, x.device());
    keep = where(ge(u, ops::scalar_like(u, p)), ops::scalar_like(u, 1.0 / (1.0 - p)), ops::scalar_like(u, 0.0));
  }
  return mul(x, keep);
}

/// x / max(||x||_2, eps) along `dim` (torch.nn.functional.normalize with p = 2).
/// Requires f32/f64 and a valid dim. Where the norm is below eps the gradient is g / eps;
/// a zero vector thus gets a finite gradient (no 0/0 through the norm).
inline Tensor normalize(const Tensor& x, int64_t dim = -1, double eps = 1e-12) {
  ops::check_float("normalize", x);
  const int64_t d = wrap_dim(dim, x.dim(), "normalize");
  Tensor xd = x.detach();
  Tensor norm = sqrt(sum(mul(xd, xd), {d}, true));
  Tensor den = clamp(norm, eps, INFINITY);
  Tensor y = div(xd, den);
  return autograd::record("normalize", {x}, y,
                          [y = y.detach(), norm, den, d, eps](const Tensor& g, const ops::Needs&) {
                            // Unclamped: (g - y <g, y>) / ||x||. Clamped: the denominator is the
                            // constant eps, so only g / eps remains.
                            Tensor proj = mul(y, sum(mul(g, y), {d}, true));
                            Tensor live = ge(norm, ops::scalar_like(norm, eps));
                            return ops::Grads{div(sub(g, where(live, proj, ops::scalar_like(proj, 0.0))), den)};
                          });
}

/// Cosine similarity of a and b (broadcast together) along `dim` of the broadcast shape.
/// Follows PyTorch's current definition (since 1.12): each operand is divided by its own
/// clamped norm, sum(a / max(||a||, eps) * b / max(||b||, eps)), which keeps the result in
/// [-1, 1]; the older sum(a*b) / max(||a|| ||b||, eps) differs only for tiny norms. The
/// gradient is the exact one of that formula (PyTorch's differs where a norm is below eps,
/// because it clamps without recording). Requires f32/f64, one dtype and device.
inline Tensor cosine_similarity(const Tensor& a, const Tensor& b, int64_t dim = -1, double eps = 1e-8) {
  const char* op = "cosine_similarity";
  ops::check_float(op, a);
  ops::check_float(op, b);
  ops::check_same_dtype(op, a, b);
  ops::check_same_device(op, a, b);
  const Shape s = broadcast_shapes(a.shape(), b.shape(), op);
  const int64_t nd = static_cast<int64_t>(s.size());
  const int64_t d = wrap_dim(dim, nd, op);
  // An operand whose own extent along d is the full one can be normalised before it is
  // broadcast (its norms do not change), which saves work for [N,1,D] x [1,M,D] shapes.
  auto unit = [&](const Tensor& t) {
    const int64_t td = d - (nd - t.dim());
    if (nd > 0 && td >= 0 && t.shape()[td] == s[d]) return normalize(t, td, eps);
    return normalize(t.expand(s), d, eps);
  };
  return sum(mul(unit(a), unit(b)), {d});
}

}  // namespace ga
