// The CUDA backend's place in the dispatch seam. Compiled only with GA_WITH_CUDA
// (CMake option GA_CUDA). The kernels themselves arrive with the CUDA backend issue;
// until then asking for a CUDA device says so clearly.
#pragma once
#ifdef GA_WITH_CUDA
#include "../backend.hpp"

namespace ga::backend::cuda {

/// The CUDA backend for device `index`. Throws DeviceError until the backend lands.
inline Backend& instance(int index) {
  throw DeviceError(cat("cuda:", index,
                        ": this build has the CUDA switch on, but the CUDA kernels are not "
                        "implemented yet; use the CPU device"));
}

}  // namespace ga::backend::cuda
#endif
