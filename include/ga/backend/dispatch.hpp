// backend::get: maps a Device to its backend. The only #ifdef on CUDA in the library.
#pragma once
#include "backend.hpp"
#include "cpu/cpu.hpp"
#include "cuda/cuda_backend.hpp"

namespace ga::backend {

/// Whether this build compiled the CUDA backend in (CMake option GA_CUDA). Code above
/// backend/ asks this instead of testing GA_WITH_CUDA itself.
inline constexpr bool cuda_compiled_in() {
#ifdef GA_WITH_CUDA
  return true;
#else
  return false;
#endif
}

inline Backend& get(Device d) {
  if (d.is_cpu()) return cpu::instance();
#ifdef GA_WITH_CUDA
  return cuda::instance(d.index);
#else
  throw DeviceError(cat("device ", d.str(),
                        " requested, but this build has no CUDA backend; configure with -DGA_CUDA=ON"));
#endif
}

}  // namespace ga::backend
