// Matrix products: matmul with NumPy/PyTorch semantics (1-d operands, broadcast
// batch dims) and linear (x @ w^T + b), the layer every model is made of, with the
// epilogue (residual sum, activation) a layer can fuse into its output.
#pragma once
#include "reduce.hpp"

namespace ga {

using backend::Activation;

/// What a layer (linear, conv2d) may fuse into its output: y = activation(layer(x) +
/// residual), with residual of y's shape and dtype (undefined: none). Fused, this costs no
/// extra pass over memory; when the call records for backward, it is computed as those
/// separate ops, with their gradients.
struct Epilogue {
  Tensor residual;
  Activation activation = Activation::None;
};

/// activation(x) as its own op (Activation::None: x itself).
inline Tensor activate(const Tensor& x, Activation a) {
  switch (a) {
    case Activation::Relu: return relu(x);
    case Activation::QuickGelu: return quick_gelu(x);
    case Activation::Gelu: return gelu(x);
    case Activation::None: break;
  }
  return x;
}

namespace ops {
GA_REGISTER_OP(matmul, "linalg")
GA_REGISTER_OP(linear, "linalg")

/// Whether dt is a storage-only dtype that products accept as a weight (bf16, f16).
inline bool is_low_precision(DType dt) { return dt == DType::bf16 || dt == DType::f16; }

/// Checks the operand dtypes of a product (matmul, linear, conv2d) and returns the result's:
/// both f32 or both f64 give that dtype; f32 with bf16 or f16 (either side) gives f32, the
/// mixed product (bf16 arithmetic, f32 accumulation, as exact as ga::mixed_matmul_precision()
/// asks: exact by default; see backend::MixedPrecision). The bf16/f16 operand cannot require
/// a gradient (no bf16 or f16 tensor can); gradients flow to the f32 one, through mixed
/// products again.
inline DType product_dtype(const char* op, const Tensor& a, const Tensor& b) {
  check_defined(op, a);
  check_defined(op, b);
  if (is_low_precision(a.dtype()) || is_low_precision(b.dtype())) {
    const bool a_low = is_low_precision(a.dtype());
    const Tensor& other = a_low ? b : a;
    GA_CHECK(other.dtype() == DType::f32, DTypeError, op, ": a ", dtype_name(a_low ? a.dtype() : b.dtype()),
             " operand multiplies only an f32 one, got ", dtype_name(a.dtype()), " and ", dtype_name(b.dtype()),
             " (convert one of them with .to(ga::f32))");
    return DType::f32;
  }
  check_float(op, a);
  check_float(op, b);
  check_same_dtype(op, a, b);
  return a.dtype();
}

/// Collapses the batch dims of t [batch..., r, c] into one, as a view when the batch
/// dims are laid out uniformly (including stride-0 broadcast), else through a copy.
inline Tensor as_batch3(const Tensor& t) {
  const int64_t nd = t.dim();
  const int64_t r = t.shape()[nd - 2], c = t.shape()[nd - 1];
  // Batch dims of size > 1, inner to outer; they merge when each outer stride is the
  // inner stride times the inner size (true for contiguous and for stride-0 broadcast).
  int64_t batch = 1, bstride = 0;
  bool uniform = true;
  for (int64_t i = nd - 3; i >= 0; --i) {
    const int64_t s = t.shape()[i], st = t.strides()[i];
    if (s == 1) continue;
    if (batch == 1) bstride = st;
    else if (st != bstride * batch) uniform = false;
    batch *= s;
  }
  if (uniform) return t.as_strided({batch, r, c}, {bstride, t.strides()[nd - 2], t.strides()[nd - 1]}, t.offset());
  Tensor cc = t.contiguous();
  return cc.as_strided({batch, r, c}, {r * c, c, 1}, cc.offset());
}

/// The backend epilogue that adds b (converted to y's dtype when stored as bf16/f16; one value
/// per row of each product when bias_per_row, else per column), then `then`'s residual
/// (checked against y's shape, made contiguous) and activation.
inline backend::MatmulEpilogue epilogue_for(const char* op, const Tensor& y, const Tensor& b, bool bias_per_row,
                                            const Epilogue& then) {
  backend::MatmulEpilogue e;
  if (b.defined()) e.bias = (b.dtype() == y.dtype() ? b.detach() : b.detach().to(y.dtype())).contiguous();
  e.bias_per_row = bias_per_row;
  if (then.residual.defined()) {
    GA_CHECK(then.residual.shape() == y.shape(), ShapeError, op, ": residual ", shape_str(then.residual.shape()),
             " does not match the output ", shape_str(y.shape()));
    check_same_dtype(op, y, then.residual);
    check_same_device(op, y, then.residual);
    e.residual = then.residual.detach().contiguous();
  }
  e.activation = then.activation;
  return e;
}

/// `layer` (the plain op) followed by `then` as separate ops: what a fused layer computes,
/// for when it records for backward.
template <class F>
inline Tensor unfused(const F& layer, const Epilogue& then) {
  Tensor y = layer();
  if (then.residual.defined()) y = add(y, then.residual);
  return activate(y, then.activation);
}

/// Whether a layer with epilogue `then` must run unfused: it records for backward.
inline bool needs_unfused(std::initializer_list<const Tensor*> inputs, const Epilogue& then) {
  return (then.residual.defined() || then.activation != Activation::None) && autograd::needs_record(inputs);
}

/// a [..., M, K] @ b [..., K, N] with broadcast batch dims; both at least 2-d.
inline Tensor matmul_nd(const Tensor& a, const Tensor& b) {
  const int64_t M = a.size(-2), K = a.size(-1), N = b.size(-1);
  GA_CHECK(b.size(-2) == K, ShapeError, "matmul: shapes ", shape_str(a.shape()), " and ", shape_str(b.shape()),
           " cannot be multiplied (", K, " vs ", b.size(-2), ")");
  const Shape ab(a.shape().begin(), a.shape().end() - 2), bb(b.shape().begin(), b.shape().end() - 2);
  Shape batch;
  try {
    batch = broadcast_shapes(ab, bb, "matmul");
  } catch (const ShapeError&) {  // name the operands, not just their batch dims
    throw ShapeError(cat("matmul: batch dims of ", shape_str(a.shape()), " and ", shape_str(b.shape()),
                         " cannot be broadcast together"));
  }
  Shape as = batch, bs = batch, os = batch;
  as.insert(as.end(), {M, K});
  bs.insert(bs.end(), {K, N});
  os.insert(os.end(), {M, N});
  Tensor a3 = as_batch3(a.detach().expand(as));
  Tensor b3 = as_batch3(b.detach().expand(bs));
  Tensor out = empty(os, product_dtype("matmul", a, b), a.device());
  const int64_t B = numel_of(batch);
  backend::of(a).matmul(a3, b3, out.view({B, M, N}));
  return autograd::record("matmul", {a, b}, out, [a = a.detach(), b = b.detach()](const Tensor& g, const Needs& n) {
    return Grads{n[0] ? matmul_nd(g, b.transpose(-1, -2)) : Tensor(),
                 n[1] ? matmul_nd(a.transpose(-1, -2), g) : Tensor()};
  });
}
}  // namespace ops

/// Matrix product with torch.matmul's rules: 1-d @ 1-d is a dot product; a 1-d left
/// operand is a row, a 1-d right operand a column (and that dim is removed); other
/// leading dims broadcast. Both f32 or both f64; or f32 with a bf16/f16 operand (weights
/// kept as stored) on either side, giving f32 (ops::product_dtype says how it is computed).
inline Tensor matmul(const Tensor& a, const Tensor& b) {
  ops::product_dtype("matmul", a, b);
  ops::check_same_device("matmul", a, b);
  GA_CHECK(a.dim() >= 1 && b.dim() >= 1, ShapeError, "matmul: 0-d operand (", shape_str(a.shape()), " and ",
           shape_str(b.shape()), ")");
  const bool a_vec = a.dim() == 1, b_vec = b.dim() == 1;
  // Checked here too so that a 1-d operand is named as given, not as its 2-d form.
  const int64_t ka = a.size(-1), kb = b_vec ? b.size(0) : b.size(-2);
  GA_CHECK(ka == kb, ShapeError, "matmul: shapes ", shape_str(a.shape()), " and ", shape_str(b.shape()),
           " cannot be multiplied (", ka, " vs ", kb, ")");
  Tensor y = ops::matmul_nd(a_vec ? a.unsqueeze(0) : a, b_vec ? b.unsqueeze(1) : b);
  if (a_vec) y = y.squeeze(-2);
  if (b_vec) y = y.squeeze(-1);
  return y;
}

/// x [..., in] @ w[out, in]^T + b[out] (b optional), then `then` (see Epilogue). The weight
/// is used transposed in place (no copy). x, w and b share one float dtype; or x is f32 and w
/// (and b) bf16 or f16, computed as ops::product_dtype describes, giving f32.
inline Tensor linear(const Tensor& x, const Tensor& w, const Tensor& b = Tensor(), const Epilogue& then = {}) {
  if (ops::needs_unfused({&x, &w, &b, &then.residual}, then))
    return ops::unfused([&] { return linear(x, w, b); }, then);
  ops::check_float("linear", x);
  const DType yt = ops::product_dtype("linear", x, w);
  ops::check_same_device("linear", x, w);
  GA_CHECK(w.dim() == 2, ShapeError, "linear: weight must be 2-d [out, in], got ", shape_str(w.shape()));
  GA_CHECK(x.dim() >= 1 && x.size(-1) == w.size(1), ShapeError, "linear: input ", shape_str(x.shape()),
           " does not end in the weight's in-features ", w.size(1), " (weight ", shape_str(w.shape()), ")");
  if (b.defined()) {
    if (!ops::is_low_precision(b.dtype()) || b.dtype() != w.dtype()) ops::check_same_dtype("linear", x, b);
    GA_CHECK(b.dim() == 1 && b.size(0) == w.size(0), ShapeError, "linear: bias ", shape_str(b.shape()),
             " does not match out-features ", w.size(0));
  }
  const int64_t in = w.size(1), outf = w.size(0);
  Shape os = x.shape();
  os.back() = outf;
  Tensor x2 = x.detach().reshape({-1, in});
  Tensor y = empty(os, yt, x.device());
  backend::MatmulEpilogue e = ops::epilogue_for("linear", y, b, /*bias_per_row=*/false, then);
  if (e.residual.defined()) e.residual = e.residual.view({1, x2.size(0), outf});
  backend::of(x).matmul(x2.unsqueeze(0), w.detach().t().unsqueeze(0), y.view({1, x2.size(0), outf}), e);
  return autograd::record("linear", {x, w, b}, y,
                          [x2, w = w.detach(), in, xs = x.shape()](const Tensor& g, const ops::Needs& n) {
                            Tensor g2 = g.reshape({-1, g.size(-1)});
                            return ops::Grads{n[0] ? matmul(g2, w).reshape(xs) : Tensor(),
                                              n[1] ? matmul(g2.t(), x2) : Tensor(),
                                              n[2] ? sum(g2, {0}) : Tensor()};
                          });
}

}  // namespace ga
