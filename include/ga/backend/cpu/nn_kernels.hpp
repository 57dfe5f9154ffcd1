// CPU kernels for neural-network layers: softmax and layer norm.
#pragma once
#include <cmath>

#include <Eigen/Core>

#include "cpu_backend.hpp"

#if GA_EMIT_CPU_KERNELS
namespace ga::backend::cpu {

GA_CPU_KERNEL void CpuBackend::softmax_last(const Tensor& x, const Tensor& out, bool log) {
  const int64_t rows = x.size(0), n = x.size(1);
  GA_DISPATCH_FLOAT(x.dtype(), "softmax", {
    using T = scalar_t;
    using Arr = Eigen::Array<T, Eigen::Dynamic, 1>;
    const T* xp = static_cast<const T*>(x.raw_data());
    T* yp = static_cast<T*>(out.raw_data());
    parallel_for(0, rows, std::max<int64_t>(1, 8192 / std::max<int64_t>(n, 1)), [&](int64_t lo, int64_t hi) {
      for (int64_t r = lo; r < hi; ++r) {
        if (n == 0) continue;
        Eigen::Map<const Arr> xr(xp + r * n, n);
        Eigen::Map<Arr> yr(yp + r * n, n);
        const T m = xr.maxCoeff();
        if (m == -std::numeric_limits<T>::infinity()) {  // fully masked row: PyTorch gives nan
          yr.setConstant(std::numeric_limits<T>::quiet_NaN());
          continue;
        }
        // Eigen's vectorised exp gives ~3e-39 (an f32 subnormal), not 0, for inputs below -88.7,
        // masked (-inf) scores included, and computing subnormals is slow. Inputs whose exp
        // would be within e^2 of the smallest normal number give exactly 0 instead (as PyTorch
        // gives for masked scores; the weights dropped are below 1e-37, the largest is 1), and
        // the clamp keeps exp itself off subnormals. Otherwise attention's p @ v runs on
        // subnormals, which made causal attention ~50x slower on x86.
        const T cut = std::log(std::numeric_limits<T>::min()) + T(2);
        yr = (xr - m).max(cut).exp();
        yr = (xr - m < cut).select(T(0), yr);
        const T s = yr.sum();
        if (log) yr = (xr - m) - std::log(s);
        else yr /= s;
      }
    });
  });
}

GA_CPU_KERNEL void CpuBackend::layer_norm_last(const Tensor& x, const Tensor& w, const Tensor& b, double eps,
                                        const Tensor& out, const Tensor& mean, const Tensor& rstd) {
  const int64_t rows = x.size(0), n = x.size(1);
  GA_DISPATCH_FLOAT(x.dtype(), "layer_norm", {
    using T = scalar_t;
    using Arr = Eigen::Array<T, Eigen::Dynamic, 1>;
    const T* xp = static_cast<const T*>(x.raw_data());
    const T* wp = w.defined() ? static_cast<const T*>(w.raw_data()) : nullptr;
    const T* bp = b.defined() ? static_cast<const T*>(b.raw_data()) : nullptr;
    T* yp = static_cast<T*>(out.raw_data());
    T* mp = static_cast<T*>(mean.raw_data());
    T* rp = static_cast<T*>(rstd.raw_data());
    parallel_for(0, rows, std::max<int64_t>(1, 8192 / std::max<int64_t>(n, 1)), [&](int64_t lo, int64_t hi) {
      for (int64_t r = lo; r < hi; ++r) {
        Eigen::Map<const Arr> xr(xp + r * n, n);
        Eigen::Map<Arr> yr(yp + r * n, n);
        const T mu = xr.sum() / T(n);
        const T var = (xr - mu).square().sum() / T(n);  // two passes: stable for large offsets
        const T rs = T(1) / std::sqrt(var + T(eps));
        mp[r] = mu;
        rp[r] = rs;
        yr = (xr - mu) * rs;
        if (wp) yr *= Eigen::Map<const Arr>(wp, n);
        if (bp) yr += Eigen::Map<const Arr>(bp, n);
      }
    });
  });
}

}  // namespace ga::backend::cpu
#endif  // GA_EMIT_CPU_KERNELS
