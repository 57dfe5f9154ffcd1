// Reductions over any set of dims, with keepdim: sum, mean, max, min, argmax,
// argmin, logsumexp; and sum_to, which the engine uses to undo broadcasting.
#pragma once
#include <algorithm>

#include "elementwise.hpp"

namespace ga {

namespace ops {
GA_REGISTER_OP(sum, "reduce")
GA_REGISTER_OP(mean, "reduce")
GA_REGISTER_OP(max, "reduce")
GA_REGISTER_OP(min, "reduce")
GA_REGISTER_OP(argmax, "reduce")
GA_REGISTER_OP(logsumexp, "reduce")

/// Which dims a reduction folds: `dims` wrapped and deduplicated; empty means all.
struct ReducePlan {
  std::vector<bool> reduced;  // per input dim
  Shape keep_shape;           // the output with keepdim (1 at reduced dims)
  Shape out_shape;            // the output without keepdim
  int64_t n = 1;              // elements folded into each output
};

inline ReducePlan plan_reduce(const char* op, const Tensor& x, const std::vector<int64_t>& dims) {
  ReducePlan p;
  const int64_t nd = x.dim();
  p.reduced.assign(nd, dims.empty());
  for (int64_t d : dims) {
    const int64_t w = wrap_dim(d, nd, op);
    if (nd > 0) {
      GA_CHECK(!p.reduced[w], IndexError, op, ": dim ", d, " listed twice");
      p.reduced[w] = true;
    }
  }
  for (int64_t i = 0; i < nd; ++i) {
    if (p.reduced[i]) {
      p.keep_shape.push_back(1);
      p.n *= x.shape()[i];
    } else {
      p.keep_shape.push_back(x.shape()[i]);
      p.out_shape.push_back(x.shape()[i]);
    }
  }
  return p;
}

/// Runs a backend reduction: kept dims first, folded dims last, as a [rows, n] matrix.
inline Tensor reduce_forward(const char* op, backend::ReduceOp kind, const Tensor& x, const ReducePlan& p,
                             bool keepdim) {
  check_float(op, x);
  std::vector<int64_t> perm;
  for (int64_t i = 0; i < x.dim(); ++i)
    if (!p.reduced[i]) perm.push_back(i);
  for (int64_t i = 0; i < x.dim(); ++i)
    if (p.reduced[i]) perm.push_back(i);
  const int64_t rows = numel_of(p.out_shape);
  Tensor x2 = x.detach().permute(perm).contiguous().view({rows, p.n});
  const bool index = kind == backend::ReduceOp::ArgMax || kind == backend::ReduceOp::ArgMin;
  if (p.n == 0 && !(kind == backend::ReduceOp::Sum || kind == backend::ReduceOp::Mean ||
                    kind == backend::ReduceOp::LogSumExp))
    throw ValueError(cat(op, ": cannot reduce an empty dim of ", shape_str(x.shape())));
  Tensor out = empty({rows}, index ? DType::i64 : x.dtype(), x.device());
  backend::of(x).reduce_last(kind, x2, out);
  return out.view(keepdim ? p.keep_shape : p.out_shape);
}
}  // namespace ops

/// Sum over `dims` (all when empty).
inline Tensor sum(const Tensor& x, const std::vector<int64_t>& dims = {}, bool keepdim = false) {
  const ops::ReducePlan p = ops::plan_reduce("sum", x, dims);
  Tensor y = ops::reduce_forward("sum", backend::ReduceOp::Sum, x, p, keepdim);
  return autograd::record("sum", {x}, y, [p, in = x.shape()](const Tensor& g, const ops::Needs&) {
    return ops::Grads{g.reshape(p.keep_shape).expand(in)};
  });
}

/// Mean over `dims` (all when empty).
inline Tensor mean(const Tensor& x, const std::vector<int64_t>& dims = {}, bool keepdim = false) {
  const ops::ReducePlan p = ops::plan_reduce("mean", x, dims);
  Tensor y = ops::reduce_forward("mean", backend::ReduceOp::Mean, x, p, keepdim);
  return autograd::record("mean", {x}, y, [p, in = x.shape()](const Tensor& g, const ops::Needs&) {
    return ops::Grads{(g / double(p.n)).reshape(p.keep_shape).expand(in)};
  });
}

namespace ops {
/// max and min: the gradient is shared equally among tied extremes.
inline Tensor extreme(const char* op, backend::ReduceOp kind, const Tensor& x, const std::vector<int64_t>& dims,
                      bool keepdim) {
  const ReducePlan p = plan_reduce(op, x, dims);
  Tensor y = reduce_forward(op, kind, x, p, keepdim);
  return autograd::record(op, {x}, y, [p, x = x.detach(), y = y.detach()](const Tensor& g, const Needs&) {
    Tensor hit = eq(x, y.reshape(p.keep_shape)).to(x.dtype());
    std::vector<int64_t> rd;
    for (size_t i = 0; i < p.reduced.size(); ++i)
      if (p.reduced[i]) rd.push_back(static_cast<int64_t>(i));
    Tensor count = sum(hit, rd, true);
    return Grads{mul(hit, div(g.reshape(p.keep_shape), count))};
  });
}
}  // namespace ops

inline Tensor max(const Tensor& x, const std::vector<int64_t>& dims = {}, bool keepdim = false) {
  return ops::extreme("max", backend::ReduceOp::Max, x, dims, keepdim);
}
inline Tensor min(const Tensor& x, const std::vector<int64_t>& dims = {}, bool keepdim = false) {
  return ops::extreme("min", backend::ReduceOp::Min, x, dims, keepdim);
}

/// Index (i64) of the first maximum along `dim`; over all elements (flattened) when dim is absent.
inline Tensor argmax(const Tensor& x, int64_t dim, bool keepdim = false) {
  return ops::reduce_forward("argmax", backend::ReduceOp::ArgMax, x, ops::plan_reduce("argmax", x, {dim}), keepdim);
}
inline Tensor argmax(const Tensor& x) { return argmax(x.reshape({-1}), 0, false); }
inline Tensor argmin(const Tensor& x, int64_t dim, bool keepdim = false) {
  return ops::reduce_forward("argmin", backend::ReduceOp::ArgMin, x, ops::plan_reduce("argmin", x, {dim}), keepdim);
}

/// log(sum(exp(x))) over `dims`, computed stably.
inline Tensor logsumexp(const Tensor& x, const std::vector<int64_t>& dims = {}, bool keepdim = false) {
  const ops::ReducePlan p = ops::plan_reduce("logsumexp", x, dims);
  Tensor y = ops::reduce_forward("logsumexp", backend::ReduceOp::LogSumExp, x, p, keepdim);
  return autograd::record("logsumexp", {x}, y, [p, x = x.detach(), y = y.detach()](const Tensor& g, const ops::Needs&) {
    return ops::Grads{mul(g.reshape(p.keep_shape), exp(sub(x, y.reshape(p.keep_shape))))};
  });
}

/// Sums g down to `shape`, undoing NumPy broadcasting (leading dims and size-1 dims).
/// Requires `shape` to broadcast to g's shape.
inline Tensor sum_to(const Tensor& g, const Shape& shape) {
  if (g.shape() == shape) return g;
  GA_CHECK(broadcast_shapes(shape, g.shape(), "sum_to") == g.shape(), ShapeError, "sum_to: ", shape_str(shape),
           " does not broadcast to ", shape_str(g.shape()));
  const int64_t lead = g.dim() - static_cast<int64_t>(shape.size());
  std::vector<int64_t> dims;
  for (int64_t i = 0; i < g.dim(); ++i)
    if (i < lead || (shape[i - lead] == 1 && g.shape()[i] != 1)) dims.push_back(i);
  if (dims.empty()) return g.reshape(shape);
  return sum(g, dims, true).reshape(shape);
}

}  // namespace ga
