// CPU kernels for indexing: index_select / index_add, gather / scatter_add.
#pragma once
#include "cpu_backend.hpp"

namespace ga::backend::cpu {

inline void CpuBackend::index_select(const Tensor&, int64_t, const Tensor&, const Tensor&) {
  throw Error("index_select: not implemented yet");
}
inline void CpuBackend::index_add(const Tensor&, int64_t, const Tensor&, const Tensor&) {
  throw Error("index_add: not implemented yet");
}
inline void CpuBackend::gather(const Tensor&, int64_t, const Tensor&, const Tensor&) {
  throw Error("gather: not implemented yet");
}
inline void CpuBackend::scatter_add(const Tensor&, int64_t, const Tensor&, const Tensor&) {
  throw Error("scatter_add: not implemented yet");
}

}  // namespace ga::backend::cpu
