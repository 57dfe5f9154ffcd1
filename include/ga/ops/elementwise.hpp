// Elementwise ops with NumPy broadcasting: arithmetic, math functions, activations,
// comparisons, where / masked_fill, and the in-place forms optimizers use.
// Each op's gradient rule sits right after its forward.
#pragma once
#include <cmath>

#include "view.hpp"

namespace ga {

namespace ops {
GA_REGISTER_OP(add, "elementwise")
GA_REGISTER_OP(sub, "elementwise")
GA_REGISTER_OP(mul, "elementwise")
GA_REGISTER_OP(div, "elementwise")
GA_REGISTER_OP(neg, "elementwise")
GA_REGISTER_OP(pow, "elementwise")
GA_REGISTER_OP(pow_scalar, "elementwise")
GA_REGISTER_OP(exp, "elementwise")
GA_REGISTER_OP(log, "elementwise")
GA_REGISTER_OP(sqrt, "elementwise")
GA_REGISTER_OP(rsqrt, "elementwise")
GA_REGISTER_OP(abs, "elementwise")
GA_REGISTER_OP(clamp, "elementwise")
GA_REGISTER_OP(tanh, "elementwise")
GA_REGISTER_OP(sigmoid, "elementwise")
GA_REGISTER_OP(relu, "elementwise")
GA_REGISTER_OP(gelu, "elementwise")
GA_REGISTER_OP(quick_gelu, "elementwise")
GA_REGISTER_OP(compare, "elementwise")
GA_REGISTER_OP(where, "elementwise")
GA_REGISTER_OP(masked_fill, "elementwise")

using backend::BinaryOp;
using backend::UnaryOp;
using Grads = std::vector<Tensor>;
using Needs = std::vector<bool>;

inline Tensor unary_forward(const char* op, UnaryOp kind, const Tensor& x, double a = 0, double b = 0) {
  check_float(op, x);
  Tensor out = empty(x.shape(), x.dtype(), x.device());
  backend::of(x).unary(kind, x, out, a, b);
  return out;
}

inline Tensor binary_forward(const char* op, BinaryOp kind, const Tensor& a, const Tensor& b) {
  check_float(op, a);
  check_float(op, b);
  check_same_dtype(op, a, b);
  check_same_device(op, a, b);
  const Shape s = broadcast_shapes(a.shape(), b.shape(), op);
  const bool cmp = kind >= BinaryOp::Eq;
  Tensor out = empty(s, cmp ? DType::b8 : a.dtype(), a.device());
  backend::of(a).binary(kind, a.detach().expand(s), b.detach().expand(s), out);
  return out;
}

/// A scalar as a 0-d tensor matching t's dtype and device (for mixed tensor-scalar ops).
inline Tensor scalar_like(const Tensor& t, double v) { return scalar_tensor(v, t.dtype(), t.device()); }
}  // namespace ops

// ---- arithmetic ----

/// a + b, broadcast. Both f32 or both f64, on one device.
inline Tensor add(const Tensor& a, const Tensor& b) {
  Tensor y = ops::binary_forward("add", ops::BinaryOp::Add, a, b);
  return autograd::record("add", {a, b}, y, [](const Tensor& g, const ops::Needs&) { return ops::Grads{g, g}; });
}

inline Tensor neg(const Tensor& x) {
  Tensor y = ops::unary_forward("neg", ops::UnaryOp::Neg, x);
  return autograd::record("neg", {x}, y, [](const Tensor& g, const ops::Needs&) { return ops::Grads{neg(g)}; });
}

inline Tensor sub(const Tensor& a, const Tensor& b) {
  Tensor y = ops::binary_forward("sub", ops::BinaryOp::Sub, a, b);
  return autograd::record("sub", {a, b}, y,
                          [](const Tensor& g, const ops::Needs& n) { return ops::Grads{g, n[1] ? neg(g) : Tensor()}; });
}

inline Tensor mul(const Tensor& a, const Tensor& b) {
  Tensor y = ops::binary_forward("mul", ops::BinaryOp::Mul, a, b);
  return autograd::record("mul", {a, b}, y, [a = a.detach(), b = b.detach()](const Tensor& g, const ops::Needs& n) {
    return ops::Grads{n[0] ? mul(g, b) : Tensor(), n[1] ? mul(g, a) : Tensor()};
  });
}

inline Tensor div(const Tensor& a, const Tensor& b) {
  Tensor y = ops::binary_forward("div", ops::BinaryOp::Div, a, b);
  return autograd::record("div", {a, b}, y,
                          [a = a.detach(), b = b.detach(), y = y.detach()](const Tensor& g, const ops::Needs& n) {
                            Tensor ga = n[0] || n[1] ? div(g, b) : Tensor();
                            return ops::Grads{ga, n[1] ? neg(mul(ga, y)) : Tensor()};  // -g a / b^2 = -(g/b) y
                          });
}

inline Tensor operator+(const Tensor& a, const Tensor& b) { return add(a, b); }
inline Tensor operator-(const Tensor& a, const Tensor& b) { return sub(a, b); }
inline Tensor operator*(const Tensor& a, const Tensor& b) { return mul(a, b); }
inline Tensor operator/(const Tensor& a, const Tensor& b) { return div(a, b); }
inline Tensor operator-(const Tensor& a) { return neg(a); }
inline Tensor operator+(const Tensor& a, double s) { return add(a, ops::scalar_like(a, s)); }
inline Tensor operator+(double s, const Tensor& a) { return add(ops::scalar_like(a, s), a); }
inline Tensor operator-(const Tensor& a, double s) { return sub(a, ops::scalar_like(a, s)); }
inline Tensor operator-(double s, const Tensor& a) { return sub(ops::scalar_like(a, s), a); }
inline Tensor operator*(const Tensor& a, double s) { return mul(a, ops::scalar_like(a, s)); }
inline Tensor operator*(double s, const Tensor& a) { return mul(ops::scalar_like(a, s), a); }
inline Tensor operator/(const Tensor& a, double s) { return div(a, ops::scalar_like(a, s)); }
inline Tensor operator/(double s, const Tensor& a) { return div(ops::scalar_like(a, s), a); }

// ---- math functions ----

inline Tensor exp(const Tensor& x) {
  Tensor y = ops::unary_forward("exp", ops::UnaryOp::Exp, x);
  return autograd::record("exp", {x}, y,
                          [y = y.detach()](const Tensor& g, const ops::Needs&) { return ops::Grads{mul(g, y)}; });
}

inline Tensor log(const Tensor& x) {
  Tensor y = ops::unary_forward("log", ops::UnaryOp::Log, x);
  return autograd::record("log", {x}, y,
                          [x = x.detach()](const Tensor& g, const ops::Needs&) { return ops::Grads{div(g, x)}; });
}

inline Tensor sqrt(const Tensor& x) {
  Tensor y = ops::unary_forward("sqrt", ops::UnaryOp::Sqrt, x);
  return autograd::record("sqrt", {x}, y, [y = y.detach()](const Tensor& g, const ops::Needs&) {
    return ops::Grads{div(g, y * 2.0)};
  });
}

inline Tensor rsqrt(const Tensor& x) {
  Tensor y = ops::unary_forward("rsqrt", ops::UnaryOp::Rsqrt, x);
  return autograd::record("rsqrt", {x}, y, [y = y.detach()](const Tensor& g, const ops::Needs&) {
    return ops::Grads{mul(g, mul(y, mul(y, y)) * -0.5)};  // d x^-1/2 = -1/2 x^-3/2
  });
}

inline Tensor abs(const Tensor& x) {
  Tensor y = ops::unary_forward("abs", ops::UnaryOp::Abs, x);
  return autograd::record("abs", {x}, y, [x = x.detach()](const Tensor& g, const ops::Needs&) {
    return ops::Grads{mul(g, ops::unary_forward("abs", ops::UnaryOp::Sign, x))};
  });
}

/// x ^ p for a scalar exponent.
inline Tensor pow(const Tensor& x, double p) {
  Tensor y = ops::unary_forward("pow", ops::UnaryOp::PowScalar, x, p);
  return autograd::record("pow_scalar", {x}, y, [x = x.detach(), p](const Tensor& g, const ops::Needs&) {
    return ops::Grads{mul(g, ops::unary_forward("pow", ops::UnaryOp::PowScalar, x, p - 1) * p)};
  });
}

/// a ^ b elementwise, broadcast. The gradient for b needs a > 0.
inline Tensor pow(const Tensor& a, const Tensor& b) {
  Tensor y = ops::binary_forward("pow", ops::BinaryOp::Pow, a, b);
  return autograd::record("pow", {a, b}, y,
                          [a = a.detach(), b = b.detach(), y = y.detach()](const Tensor& g, const ops::Needs& n) {
                            return ops::Grads{n[0] ? mul(g, mul(b, pow(a, b - 1.0))) : Tensor(),
                                              n[1] ? mul(g, mul(y, log(a))) : Tensor()};
                          });
}

/// min(max(x, lo), hi). The gradient passes where lo <= x <= hi.
inline Tensor clamp(const Tensor& x, double lo = -INFINITY, double hi = INFINITY) {
  GA_CHECK(!(lo > hi), ValueError, "clamp: min ", lo, " is greater than max ", hi);
  Tensor y = ops::unary_forward("clamp", ops::UnaryOp::Clamp, x, lo, hi);
  return autograd::record("clamp", {x}, y, [x = x.detach(), lo, hi](const Tensor& g, const ops::Needs&) {
    return ops::Grads{mul(g, ops::unary_forward("clamp", ops::UnaryOp::Step, x, lo, hi))};
  });
}

// ---- activations ----

inline Tensor tanh(const Tensor& x) {
  Tensor y = ops::unary_forward("tanh", ops::UnaryOp::Tanh, x);
  return autograd::record("tanh", {x}, y, [y = y.detach()](const Tensor& g, const ops::Needs&) {
    return ops::Grads{mul(g, 1.0 - mul(y, y))};
  });
}

inline Tensor sigmoid(const Tensor& x) {
  Tensor y = ops::unary_forward("sigmoid", ops::UnaryOp::Sigmoid, x);
  return autograd::record("sigmoid", {x}, y, [y = y.detach()](const Tensor& g, const ops::Needs&) {
    return ops::Grads{mul(g, mul(y, 1.0 - y))};
  });
}

inline Tensor gt(const Tensor& a, const Tensor& b);

inline Tensor relu(const Tensor& x) {
  Tensor y = ops::unary_forward("relu", ops::UnaryOp::Relu, x);
  return autograd::record("relu", {x}, y, [y = y.detach()](const Tensor& g, const ops::Needs&) {
    return ops::Grads{mul(g, gt(y, ops::scalar_like(y, 0.0)).to(y.dtype()))};
  });
}

/// Exact GELU: x * Phi(x) with the normal CDF (erf), not the tanh approximation.
inline Tensor gelu(const Tensor& x) {
  Tensor y = ops::unary_forward("gelu", ops::UnaryOp::Gelu, x);
  return autograd::record("gelu", {x}, y, [x = x.detach()](const Tensor& g, const ops::Needs&) {
    return ops::Grads{mul(g, ops::unary_forward("gelu", ops::UnaryOp::GeluGrad, x))};
  });
}

/// CLIP's QuickGELU: x * sigmoid(1.702 x).
inline Tensor quick_gelu(const Tensor& x) {
  Tensor y = ops::unary_forward("quick_gelu", ops::UnaryOp::QuickGelu, x);
  return autograd::record("quick_gelu", {x}, y, [x = x.detach()](const Tensor& g, const ops::Needs&) {
    return ops::Grads{mul(g, ops::unary_forward("quick_gelu", ops::UnaryOp::QuickGeluGrad, x))};
  });
}

// ---- comparisons (b8 results, not differentiable) ----

inline Tensor eq(const Tensor& a, const Tensor& b) { return ops::binary_forward("eq", ops::BinaryOp::Eq, a, b); }
inline Tensor ne(const Tensor& a, const Tensor& b) { return ops::binary_forward("ne", ops::BinaryOp::Ne, a, b); }
inline Tensor lt(const Tensor& a, const Tensor& b) { return ops::binary_forward("lt", ops::BinaryOp::Lt, a, b); }
inline Tensor le(const Tensor& a, const Tensor& b) { return ops::binary_forward("le", ops::BinaryOp::Le, a, b); }
inline Tensor gt(const Tensor& a, const Tensor& b) { return ops::binary_forward("gt", ops::BinaryOp::Gt, a, b); }
inline Tensor ge(const Tensor& a, const Tensor& b) { return ops::binary_forward("ge", ops::BinaryOp::Ge, a, b); }
inline Tensor operator<(const Tensor& a, const Tensor& b) { return lt(a, b); }
inline Tensor operator<=(const Tensor& a, const Tensor& b) { return le(a, b); }
inline Tensor operator>(const Tensor& a, const Tensor& b) { return gt(a, b); }
inline Tensor operator>=(const Tensor& a, const Tensor& b) { return ge(a, b); }
inline Tensor operator<(const Tensor& a, double s) { return lt(a, ops::scalar_like(a, s)); }
inline Tensor operator<=(const Tensor& a, double s) { return le(a, ops::scalar_like(a, s)); }
inline Tensor operator>(const Tensor& a, double s) { return gt(a, ops::scalar_like(a, s)); }
inline Tensor operator>=(const Tensor& a, double s) { return ge(a, ops::scalar_like(a, s)); }

// ---- selection ----

/// cond ? a : b elementwise, all three broadcast together. cond is b8; a and b one float dtype.
inline Tensor where(const Tensor& cond, const Tensor& a, const Tensor& b) {
  ops::check_defined("where", cond, "condition");
  GA_CHECK(cond.dtype() == DType::b8, DTypeError, "where: condition must be bool, got ", dtype_name(cond.dtype()));
  ops::check_float("where", a);
  ops::check_float("where", b);
  ops::check_same_dtype("where", a, b);
  ops::check_same_device("where", a, b);
  ops::check_same_device("where", cond, a);
  const Shape s = broadcast_shapes(broadcast_shapes(cond.shape(), a.shape(), "where"), b.shape(), "where");
  Tensor y = empty(s, a.dtype(), a.device());
  backend::of(a).where(cond.detach().expand(s), a.detach().expand(s), b.detach().expand(s), y);
  return autograd::record("where", {a, b}, y, [cond](const Tensor& g, const ops::Needs& n) {
    Tensor z = ops::scalar_like(g, 0.0);
    return ops::Grads{n[0] ? where(cond, g, z) : Tensor(), n[1] ? where(cond, z, g) : Tensor()};
  });
}

/// x with the elements where mask (b8, broadcast to x) is true replaced by value.
inline Tensor masked_fill(const Tensor& x, const Tensor& mask, double value) {
  ops::check_float("masked_fill", x);
  GA_CHECK(broadcast_shapes(mask.shape(), x.shape(), "masked_fill") == x.shape(), ShapeError,
           "masked_fill: mask ", shape_str(mask.shape()), " does not broadcast to ", shape_str(x.shape()));
  Tensor y = where(mask, ops::scalar_like(x, value), x);
  return y;
}

// ---- in place (for optimizers and initialisers; refused where autograd would be wrong) ----

namespace ops {
inline Tensor& inplace_binary(const char* op, BinaryOp kind, Tensor& self, const Tensor& other) {
  check_float(op, self);
  check_float(op, other);
  check_same_dtype(op, self, other);
  GA_CHECK(!(grad_enabled() && self.requires_grad()), AutogradError, op,
           ": in-place update of a tensor that requires grad; wrap it in ga::NoGradGuard");
  for (int64_t d = 0; d < self.dim(); ++d)  // an expanded view would write one element many times
    GA_CHECK(self.strides()[d] != 0 || self.shape()[d] <= 1, ValueError, op,
             ": in-place target is an expanded view (stride 0 in dim ", d, " of ", shape_str(self.shape()), ")");
  GA_CHECK(broadcast_shapes(other.shape(), self.shape(), op) == self.shape(), ShapeError, op, ": ",
           shape_str(other.shape()), " does not broadcast to ", shape_str(self.shape()));
  Tensor target = self.detach(), rhs = other.detach().expand(self.shape());
  if (self.is_contiguous()) {
    backend::of(self).binary(kind, target, rhs, target);  // the kernel's out must be contiguous
  } else {
    Tensor result = empty(self.shape(), self.dtype(), self.device());
    backend::of(self).binary(kind, target, rhs, result);
    backend::of(self).copy(result, target);
  }
  return self;
}
}  // namespace ops
inline Tensor& add_(Tensor& self, const Tensor& o) { return ops::inplace_binary("add_", ops::BinaryOp::Add, self, o); }
inline Tensor& sub_(Tensor& self, const Tensor& o) { return ops::inplace_binary("sub_", ops::BinaryOp::Sub, self, o); }
inline Tensor& mul_(Tensor& self, const Tensor& o) { return ops::inplace_binary("mul_", ops::BinaryOp::Mul, self, o); }
inline Tensor& div_(Tensor& self, const Tensor& o) { return ops::inplace_binary("div_", ops::BinaryOp::Div, self, o); }
inline Tensor& mul_(Tensor& self, double s) { return mul_(self, ops::scalar_like(self, s)); }
inline Tensor& add_(Tensor& self, double s) { return add_(self, ops::scalar_like(self, s)); }

}  // namespace ga
