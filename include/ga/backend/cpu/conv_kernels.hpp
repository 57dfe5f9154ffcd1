// CPU kernels for convolution (im2col / col2im) and average pooling.
#pragma once
#include "cpu_backend.hpp"

namespace ga::backend::cpu {

inline void CpuBackend::im2col(const Tensor&, const Window2d&, const Tensor&) {
  throw Error("im2col: not implemented yet");
}
inline void CpuBackend::col2im(const Tensor&, const Window2d&, const Tensor&) {
  throw Error("col2im: not implemented yet");
}
inline void CpuBackend::avg_pool2d(const Tensor&, const Window2d&, bool, const Tensor&) {
  throw Error("avg_pool2d: not implemented yet");
}
inline void CpuBackend::avg_pool2d_backward(const Tensor&, const Window2d&, bool, const Tensor&) {
  throw Error("avg_pool2d_backward: not implemented yet");
}
inline void CpuBackend::adaptive_avg_pool2d(const Tensor&, const Tensor&) {
  throw Error("adaptive_avg_pool2d: not implemented yet");
}
inline void CpuBackend::adaptive_avg_pool2d_backward(const Tensor&, const Tensor&) {
  throw Error("adaptive_avg_pool2d_backward: not implemented yet");
}

}  // namespace ga::backend::cpu
