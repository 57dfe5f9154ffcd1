// Indexing ops: index_select / embedding and gather with their adjoints index_add and
// scatter_add (each one's gradient is the other), and concat / stack.
// Indices are i32 or i64 tensors; an index out of range throws ga::IndexError.
#pragma once
#include <vector>

#include "linalg.hpp"

namespace ga {

namespace ops {
GA_REGISTER_OP(index_select, "index")
GA_REGISTER_OP(index_add, "index")
GA_REGISTER_OP(embedding, "index")
GA_REGISTER_OP(gather, "index")
GA_REGISTER_OP(scatter_add, "index")
GA_REGISTER_OP(concat, "index")
GA_REGISTER_OP(stack, "index")

/// Common checks of the (x, dim, idx) ops; returns dim wrapped into [0, x.dim()).
inline int64_t check_indexing(const char* op, const Tensor& x, int64_t dim, const Tensor& idx) {
  check_float(op, x);
  check_index(op, idx);
  check_same_device(op, x, idx);
  GA_CHECK(x.dim() >= 1, ShapeError, op, ": input must have at least 1 dim, got a 0-d tensor");
  return wrap_dim(dim, x.dim(), op);
}

/// x's shape with dim resized to n.
inline Shape with_size(Shape s, int64_t dim, int64_t n) {
  s[dim] = n;
  return s;
}

/// idx [.., k at dim, ..] fits x for gather / scatter_add: same rank, and no larger than
/// x outside dim.
inline void check_gather_shapes(const char* op, const Tensor& x, int64_t dim, const Tensor& idx) {
  GA_CHECK(idx.dim() == x.dim(), ShapeError, op, ": index ", shape_str(idx.shape()), " and input ",
           shape_str(x.shape()), " differ in rank");
  for (int64_t d = 0; d < x.dim(); ++d)
    GA_CHECK(d == dim || idx.size(d) <= x.size(d), ShapeError, op, ": index ", shape_str(idx.shape()),
             " is larger than input ", shape_str(x.shape()), " in dim ", d, " (only dim ", dim, " may differ)");
}
}  // namespace ops

inline Tensor index_add(const Tensor& x, int64_t dim, const Tensor& idx, const Tensor& src);
inline Tensor scatter_add(const Tensor& x, int64_t dim, const Tensor& idx, const Tensor& src);

/// The slices of x at positions idx (1-d) along dim: y.shape = x.shape with dim
/// resized to idx.numel(). Indices may repeat; each lies in [0, x.size(dim)).
inline Tensor index_select(const Tensor& x, int64_t dim, const Tensor& idx) {
  const int64_t d = ops::check_indexing("index_select", x, dim, idx);
  GA_CHECK(idx.dim() == 1, ShapeError, "index_select: index must be 1-d, got ", shape_str(idx.shape()));
  Tensor y = empty(ops::with_size(x.shape(), d, idx.numel()), x.dtype(), x.device());
  backend::of(x).index_select(x.detach().contiguous(), d, idx.contiguous(), y);
  return autograd::record("index_select", {x}, y, [d, idx, xs = x.shape()](const Tensor& g, const ops::Needs&) {
    return ops::Grads{index_add(zeros(xs, g.dtype(), g.device()), d, idx, g)};
  });
}

/// x with src's slices added at positions idx (1-d) along dim: a copy of x whose slice
/// idx[j] gains src's slice j; repeated indices accumulate. src.shape = x.shape with dim
/// resized to idx.numel().
inline Tensor index_add(const Tensor& x, int64_t dim, const Tensor& idx, const Tensor& src) {
  const int64_t d = ops::check_indexing("index_add", x, dim, idx);
  ops::check_float("index_add", src);
  ops::check_same_dtype("index_add", x, src);
  ops::check_same_device("index_add", x, src);
  GA_CHECK(idx.dim() == 1, ShapeError, "index_add: index must be 1-d, got ", shape_str(idx.shape()));
  GA_CHECK(src.shape() == ops::with_size(x.shape(), d, idx.numel()), ShapeError, "index_add: source ",
           shape_str(src.shape()), " does not match input ", shape_str(x.shape()), " with dim ", d, " resized to ",
           idx.numel(), " indices");
  Tensor y = x.detach().clone();
  backend::of(x).index_add(y, d, idx.contiguous(), src.detach().contiguous());
  return autograd::record("index_add", {x, src}, y, [d, idx](const Tensor& g, const ops::Needs& n) {
    return ops::Grads{g, n[1] ? index_select(g, d, idx) : Tensor()};
  });
}

/// Rows of weight [V, D] looked up by ids (any shape, values in [0, V)):
/// y.shape = ids.shape + [D]. Repeated ids accumulate their gradients.
inline Tensor embedding(const Tensor& weight, const Tensor& ids) {
  ops::check_float("embedding", weight);
  ops::check_index("embedding", ids);
  GA_CHECK(weight.dim() == 2, ShapeError, "embedding: weight must be 2-d [V, D], got ", shape_str(weight.shape()));
  Shape ys = ids.shape();
  ys.push_back(weight.size(1));
  try {
    return index_select(weight, 0, ids.reshape({-1})).view(ys);
  } catch (const IndexError& e) {
    throw IndexError(cat("embedding (weight ", shape_str(weight.shape()), "): ", e.what()));
  }
}

/// torch.gather: y[i, j, ..] = x[.., idx[i, j, ..], ..] with the index replacing
/// position dim. idx has x's rank and no dim larger than x's except dim; y.shape = idx.shape.
inline Tensor gather(const Tensor& x, int64_t dim, const Tensor& idx) {
  const int64_t d = ops::check_indexing("gather", x, dim, idx);
  ops::check_gather_shapes("gather", x, d, idx);
  Tensor y = empty(idx.shape(), x.dtype(), x.device());
  backend::of(x).gather(x.detach().contiguous(), d, idx.contiguous(), y);
  return autograd::record("gather", {x}, y, [d, idx, xs = x.shape()](const Tensor& g, const ops::Needs&) {
    return ops::Grads{scatter_add(zeros(xs, g.dtype(), g.device()), d, idx, g)};
  });
}

/// torch.scatter_add, out of place: a copy of x where x[.., idx[i, j, ..], ..] (the index
/// replacing position dim) gains src[i, j, ..]; collisions accumulate. src.shape ==
/// idx.shape, which fits x as for gather.
inline Tensor scatter_add(const Tensor& x, int64_t dim, const Tensor& idx, const Tensor& src) {
  const int64_t d = ops::check_indexing("scatter_add", x, dim, idx);
  ops::check_float("scatter_add", src);
  ops::check_same_dtype("scatter_add", x, src);
  ops::check_same_device("scatter_add", x, src);
  ops::check_gather_shapes("scatter_add", x, d, idx);
  GA_CHECK(src.shape() == idx.shape(), ShapeError, "scatter_add: source ", shape_str(src.shape()),
           " and index ", shape_str(idx.shape()), " differ in shape");
  Tensor y = x.detach().clone();
  backend::of(x).scatter_add(y, d, idx.contiguous(), src.detach().contiguous());
  return autograd::record("scatter_add", {x, src}, y, [d, idx](const Tensor& g, const ops::Needs& n) {
    return ops::Grads{g, n[1] ? gather(g, d, idx) : Tensor()};
  });
}

/// xs joined along dim: all of one dtype (any; differentiable for f32 / f64) and one
/// device, equal in shape except at dim.
inline Tensor concat(const std::vector<Tensor>& xs, int64_t dim = 0) {
  GA_CHECK(!xs.empty(), ValueError, "concat: no tensors given");
  for (size_t i = 0; i < xs.size(); ++i) ops::check_defined("concat", xs[i], "a tensor");
  const Tensor& first = xs[0];
  GA_CHECK(first.dim() >= 1, ShapeError, "concat: tensor 0 is 0-d; concat needs at least 1 dim (use stack)");
  const int64_t d = wrap_dim(dim, first.dim(), "concat");
  int64_t total = 0;
  for (size_t i = 0; i < xs.size(); ++i) {
    const Tensor& t = xs[i];
    GA_CHECK(t.dtype() == first.dtype(), DTypeError, "concat: tensor ", i, " is ", dtype_name(t.dtype()),
             " but tensor 0 is ", dtype_name(first.dtype()));
    GA_CHECK(t.device() == first.device(), DeviceError, "concat: tensor ", i, " is on ", t.device().str(),
             " but tensor 0 is on ", first.device().str());
    GA_CHECK(t.dim() == first.dim() && ops::with_size(t.shape(), d, 0) == ops::with_size(first.shape(), d, 0),
             ShapeError, "concat: tensor ", i, " has shape ", shape_str(t.shape()), " but tensor 0 has shape ",
             shape_str(first.shape()), " (they must match except in dim ", d, ")");
    total += t.size(d);
  }
  Tensor y = empty(ops::with_size(first.shape(), d, total), first.dtype(), first.device());
  std::vector<int64_t> sizes;
  int64_t off = 0;
  for (const Tensor& t : xs) {
    if (t.numel() > 0) backend::of(y).copy(t.detach(), y.detach().narrow(d, off, t.size(d)));
    sizes.push_back(t.size(d));
    off += t.size(d);
  }
  return autograd::record("concat", xs, y, [d, sizes](const Tensor& g, const ops::Needs& n) {
    ops::Grads gs(sizes.size());
    int64_t o = 0;
    for (size_t i = 0; i < sizes.size(); ++i) {
      if (n[i]) gs[i] = g.narrow(d, o, sizes[i]);
      o += sizes[i];
    }
    return gs;
  });
}

/// xs (all one shape, dtype and device) joined along a new dim at position dim.
inline Tensor stack(const std::vector<Tensor>& xs, int64_t dim = 0) {
  GA_CHECK(!xs.empty(), ValueError, "stack: no tensors given");
  for (size_t i = 0; i < xs.size(); ++i) {
    ops::check_defined("stack", xs[i], "a tensor");
    GA_CHECK(xs[i].dtype() == xs[0].dtype(), DTypeError, "stack: tensor ", i, " is ", dtype_name(xs[i].dtype()),
             " but tensor 0 is ", dtype_name(xs[0].dtype()));
    GA_CHECK(xs[i].shape() == xs[0].shape(), ShapeError, "stack: tensor ", i, " has shape ",
             shape_str(xs[i].shape()), " but tensor 0 has shape ", shape_str(xs[0].shape()));
  }
  const int64_t d = wrap_dim(dim, xs[0].dim() + 1, "stack");
  std::vector<Tensor> us;
  us.reserve(xs.size());
  for (const Tensor& t : xs) us.push_back(t.unsqueeze(d));
  return concat(us, d);
}

}  // namespace ga
