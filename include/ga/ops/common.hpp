// What every op file needs: output allocation, argument checks that name the op,
// the op registry the test driver reads, and the tape.
//
// How an op is written (see README, "How to add an op"):
//   1. check the arguments (throw ShapeError / DTypeError / IndexError naming the op);
//   2. allocate the output and call the backend kernel;
//   3. autograd::record(...) the gradient rule, written with other ops;
//   4. GA_REGISTER_OP(name) so the test driver insists on a test for it.
#pragma once
#include <map>
#include <string>

#include "../autograd/tape.hpp"
#include "../backend/dispatch.hpp"

namespace ga {

/// An uninitialised contiguous tensor.
inline Tensor empty(const Shape& shape, DType dtype = DType::f32, Device device = Device::cpu()) {
  check_shape_valid(shape, "empty");
  auto impl = std::make_shared<TensorImpl>();
  impl->storage = backend::get(device).allocate(static_cast<size_t>(numel_of(shape)) * dtype_size(dtype));
  impl->shape = shape;
  impl->strides = contiguous_strides(shape);
  impl->dtype = dtype;
  return Tensor(impl);
}
inline Tensor empty_like(const Tensor& t) { return empty(t.shape(), t.dtype(), t.device()); }

namespace ops {

/// Names of every differentiable or non-differentiable op, with the file family it is in.
inline std::map<std::string, std::string>& registry() {
  static std::map<std::string, std::string> r;
  return r;
}
inline bool register_op(const char* name, const char* family) {
  registry()[name] = family;
  return true;
}

inline void check_defined(const char* op, const Tensor& t, const char* what = "input") {
  GA_CHECK(t.defined(), ValueError, op, ": ", what, " is an undefined tensor");
}
inline void check_float(const char* op, const Tensor& t) {
  check_defined(op, t);
  GA_CHECK(t.dtype() == DType::f32 || t.dtype() == DType::f64, DTypeError, op, ": dtype ",
           dtype_name(t.dtype()), " not supported (expects f32 or f64; convert with .to(ga::f32))");
}
inline void check_same_dtype(const char* op, const Tensor& a, const Tensor& b) {
  GA_CHECK(a.dtype() == b.dtype(), DTypeError, op, ": dtypes differ (", dtype_name(a.dtype()), " and ",
           dtype_name(b.dtype()), ")");
}
inline void check_same_device(const char* op, const Tensor& a, const Tensor& b) {
  GA_CHECK(a.device() == b.device(), DeviceError, op, ": tensors on different devices (", a.device().str(),
           " and ", b.device().str(), ")");
}
inline void check_index(const char* op, const Tensor& t) {
  check_defined(op, t, "index");
  GA_CHECK(t.dtype() == DType::i32 || t.dtype() == DType::i64, DTypeError, op, ": index dtype ",
           dtype_name(t.dtype()), " not supported (expects i32 or i64)");
}
inline void check_dim(const char* op, const Tensor& t, int64_t ndim) {
  GA_CHECK(t.dim() == ndim, ShapeError, op, ": expects a ", ndim, "-d tensor, got ", shape_str(t.shape()));
}

}  // namespace ops
}  // namespace ga

#define GA_CONCAT_INNER_(a, b) a##b
#define GA_CONCAT_(a, b) GA_CONCAT_INNER_(a, b)
/// Registers an op name so the op test driver can insist that it has a test case.
#define GA_REGISTER_OP(name, family) \
  inline const bool GA_CONCAT_(ga_registered_op_, name) = ::ga::ops::register_op(#name, family);
