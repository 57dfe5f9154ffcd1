// Factories: tensors filled with constants, ranges, random numbers, or caller data.
#pragma once
#include <cmath>
#include <cstring>
#include <vector>

#include "common.hpp"

namespace ga {

/// Every element set to `value` (converted to dtype).
inline Tensor full(const Shape& shape, double value, DType dtype = DType::f32, Device device = Device::cpu()) {
  Tensor t = empty(shape, dtype, device);
  backend::of(t).fill(t, value);
  return t;
}
inline Tensor zeros(const Shape& shape, DType dtype = DType::f32, Device device = Device::cpu()) {
  return full(shape, 0.0, dtype, device);
}
inline Tensor ones(const Shape& shape, DType dtype = DType::f32, Device device = Device::cpu()) {
  return full(shape, 1.0, dtype, device);
}
inline Tensor zeros_like(const Tensor& t) { return zeros(t.shape(), t.dtype(), t.device()); }
inline Tensor ones_like(const Tensor& t) { return ones(t.shape(), t.dtype(), t.device()); }
inline Tensor full_like(const Tensor& t, double v) { return full(t.shape(), v, t.dtype(), t.device()); }
/// A 0-d tensor holding v.
inline Tensor scalar_tensor(double v, DType dtype = DType::f32, Device device = Device::cpu()) {
  return full({}, v, dtype, device);
}

namespace detail {
/// Fills a host buffer through f(i) -> double, then moves it to `device`.
template <class F>
Tensor from_host_fn(const Shape& shape, DType dtype, Device device, const F& f) {
  Tensor host = empty(shape, dtype, Device::cpu());
  const int64_t n = host.numel();
  GA_DISPATCH_ALL(dtype, "factory", {
    scalar_t* p = host.data_ptr<scalar_t>();
    for (int64_t i = 0; i < n; ++i) p[i] = from_double<scalar_t>(f(i));
  });
  return host.to(device);
}
}  // namespace detail

/// start, start + step, ... while < end (> end for negative step).
inline Tensor arange(double start, double end, double step = 1.0, DType dtype = DType::i64,
                     Device device = Device::cpu()) {
  GA_CHECK(step != 0.0, ValueError, "arange: step must be nonzero");
  const double count = std::ceil((end - start) / step);
  const int64_t n = count > 0 ? static_cast<int64_t>(count) : 0;
  return detail::from_host_fn({n}, dtype, device, [&](int64_t i) { return start + step * double(i); });
}
inline Tensor arange(int64_t end, DType dtype = DType::i64) { return arange(0.0, double(end), 1.0, dtype); }

/// Uniform in [lo, hi), drawn in row-major order from `gen`.
inline Tensor rand(const Shape& shape, Generator& gen = default_generator(), DType dtype = DType::f32,
                   double lo = 0.0, double hi = 1.0, Device device = Device::cpu()) {
  check_shape_valid(shape, "rand");
  return detail::from_host_fn(shape, dtype, device, [&](int64_t) { return gen.uniform(lo, hi); });
}
/// Normal(mean, std^2), drawn in row-major order from `gen`.
inline Tensor randn(const Shape& shape, Generator& gen = default_generator(), DType dtype = DType::f32,
                    double mean = 0.0, double std = 1.0, Device device = Device::cpu()) {
  check_shape_valid(shape, "randn");
  return detail::from_host_fn(shape, dtype, device, [&](int64_t) { return mean + std * gen.normal(); });
}
/// Integers uniform in [lo, hi).
inline Tensor randint(int64_t lo, int64_t hi, const Shape& shape, Generator& gen = default_generator(),
                      DType dtype = DType::i64, Device device = Device::cpu()) {
  GA_CHECK(hi > lo, ValueError, "randint: empty range [", lo, ", ", hi, ")");
  return detail::from_host_fn(shape, dtype, device,
                              [&](int64_t) { return double(lo + int64_t(gen.below(uint64_t(hi - lo)))); });
}

/// Wraps caller memory without copying. The caller keeps `data` alive and unchanged in
/// layout for the tensor's lifetime (or passes `keep_alive`, released with the tensor).
/// `strides` defaults to row-major.
inline Tensor from_blob(void* data, const Shape& shape, DType dtype, Shape strides = {},
                        std::shared_ptr<void> keep_alive = nullptr, Device device = Device::cpu()) {
  check_shape_valid(shape, "from_blob");
  if (strides.empty()) strides = contiguous_strides(shape);
  GA_CHECK(strides.size() == shape.size(), ShapeError, "from_blob: strides ", shape_str(strides),
           " do not match shape ", shape_str(shape));
  int64_t span = 1;
  for (size_t i = 0; i < shape.size(); ++i) {
    GA_CHECK(strides[i] >= 0, ValueError, "from_blob: negative stride in ", shape_str(strides));
    if (shape[i] == 0) span = 0;
  }
  if (span) for (size_t i = 0; i < shape.size(); ++i) span += (shape[i] - 1) * strides[i];
  auto impl = std::make_shared<TensorImpl>();
  impl->storage = Storage::wrap(data, static_cast<size_t>(span) * dtype_size(dtype), device, std::move(keep_alive));
  impl->shape = shape;
  impl->strides = strides;
  impl->dtype = dtype;
  return Tensor(impl);
}

/// A tensor copied from a vector, with the given shape (an empty Shape means 0-d and needs
/// exactly one value).
template <class T>
Tensor tensor(const std::vector<T>& values, const Shape& shape, Device device = Device::cpu()) {
  check_shape_valid(shape, "tensor");
  GA_CHECK(numel_of(shape) == static_cast<int64_t>(values.size()), ShapeError, "tensor: ", values.size(),
           " values do not fill shape ", shape_str(shape));
  Tensor t = empty(shape, dtype_of<T>(), Device::cpu());
  if (!values.empty()) std::memcpy(t.raw_data(), values.data(), values.size() * sizeof(T));
  return t.to(device);
}
/// A 1-d tensor copied from a vector (as torch.tensor([...])).
template <class T>
Tensor tensor(const std::vector<T>& values) {
  return tensor(values, Shape{static_cast<int64_t>(values.size())});
}
inline Tensor tensor(std::initializer_list<float> values) { return tensor(std::vector<float>(values)); }
inline Tensor tensor(std::initializer_list<float> values, const Shape& shape) {
  return tensor(std::vector<float>(values), shape);
}

}  // namespace ga
