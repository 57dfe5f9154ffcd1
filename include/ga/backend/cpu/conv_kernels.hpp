// CPU kernels for convolution (im2col / col2im) and average pooling.
//
// im2col and col2im only look at x as [C, H, W], so the ops layer passes a batch as
// [N*C, H, W]; cols is then [N, C*kh*kw, OH*OW] laid out as one matrix.
#pragma once
#include <algorithm>
#include <cstring>

#include "cpu_backend.hpp"

#if GA_EMIT_CPU_KERNELS
namespace ga::backend::cpu {

namespace detail {
/// Rows of work per thread so that each chunk touches at least ~32K elements.
inline int64_t grain_for(int64_t per_item) { return std::max<int64_t>(1, 32768 / std::max<int64_t>(per_item, 1)); }
}  // namespace detail

GA_CPU_KERNEL void CpuBackend::im2col(const Tensor& x, const Window2d& g, const Tensor& cols) {
  const int64_t C = x.size(0), H = x.size(1), W = x.size(2);
  const int64_t OH = g.out_h(H), OW = g.out_w(W), P = OH * OW, KK = g.kh * g.kw;
  GA_DISPATCH_FLOAT(x.dtype(), "im2col", {
    using T = scalar_t;
    const T* xp = static_cast<const T*>(x.raw_data());
    T* cp = static_cast<T*>(cols.raw_data());
    // One row per (channel, ki, kj): each thread writes its own rows only.
    parallel_for(0, C * KK, detail::grain_for(P), [&](int64_t lo, int64_t hi) {
      for (int64_t r = lo; r < hi; ++r) {
        const int64_t c = r / KK, ki = (r % KK) / g.kw, kj = r % g.kw;
        const T* xc = xp + c * H * W;
        T* row = cp + r * P;
        // Output columns whose input column lies inside the image: [ow_lo, ow_hi).
        const int64_t ow_lo = std::min(OW, std::max<int64_t>(0, (g.pw - kj + g.sw - 1) / g.sw));
        const int64_t ow_hi = std::max(ow_lo, std::min(OW, (W + g.pw - kj + g.sw - 1) / g.sw));
        for (int64_t oh = 0; oh < OH; ++oh) {
          T* dst = row + oh * OW;
          const int64_t ih = oh * g.sh - g.ph + ki;
          if (ih < 0 || ih >= H) {
            std::fill(dst, dst + OW, T(0));
            continue;
          }
          std::fill(dst, dst + ow_lo, T(0));
          std::fill(dst + ow_hi, dst + OW, T(0));
          // Offsets, not pointers: base may be negative (left padding).
          const int64_t base = ih * W - g.pw + kj;
          if (g.sw == 1) {
            if (ow_hi > ow_lo) std::memcpy(dst + ow_lo, xc + base + ow_lo, sizeof(T) * (ow_hi - ow_lo));
          } else {
            for (int64_t ow = ow_lo; ow < ow_hi; ++ow) dst[ow] = xc[base + ow * g.sw];
          }
        }
      }
    });
  });
}

GA_CPU_KERNEL void CpuBackend::col2im(const Tensor& cols, const Window2d& g, const Tensor& x) {
  const int64_t C = x.size(0), H = x.size(1), W = x.size(2);
  const int64_t OH = g.out_h(H), OW = g.out_w(W), P = OH * OW, KK = g.kh * g.kw;
  GA_DISPATCH_FLOAT(x.dtype(), "col2im", {
    using T = scalar_t;
    const T* cp = static_cast<const T*>(cols.raw_data());
    T* xp = static_cast<T*>(x.raw_data());
    // Windows overlap within a channel, never across: one thread per channel range.
    parallel_for(0, C, detail::grain_for(KK * P), [&](int64_t lo, int64_t hi) {
      for (int64_t c = lo; c < hi; ++c) {
        T* xc = xp + c * H * W;
        for (int64_t k = 0; k < KK; ++k) {
          const int64_t ki = k / g.kw, kj = k % g.kw;
          const T* row = cp + (c * KK + k) * P;
          const int64_t ow_lo = std::min(OW, std::max<int64_t>(0, (g.pw - kj + g.sw - 1) / g.sw));
          const int64_t ow_hi = std::max(ow_lo, std::min(OW, (W + g.pw - kj + g.sw - 1) / g.sw));
          for (int64_t oh = 0; oh < OH; ++oh) {
            const int64_t ih = oh * g.sh - g.ph + ki;
            if (ih < 0 || ih >= H) continue;
            const T* src = row + oh * OW;
            const int64_t base = ih * W - g.pw + kj;
            for (int64_t ow = ow_lo; ow < ow_hi; ++ow) xc[base + ow * g.sw] += src[ow];
          }
        }
      }
    });
  });
}

namespace detail {
/// The divisor of one avg_pool2d window: PyTorch's rule without ceil_mode, where the
/// window never reaches past the padding, so including padding means kh * kw.
inline int64_t pool_divisor(const Window2d& g, bool count_include_pad, int64_t h0, int64_t h1, int64_t w0,
                            int64_t w1) {
  return count_include_pad ? g.kh * g.kw : (h1 - h0) * (w1 - w0);
}
}  // namespace detail

GA_CPU_KERNEL void CpuBackend::avg_pool2d(const Tensor& x, const Window2d& g, bool count_include_pad, const Tensor& out) {
  const int64_t planes = x.size(0) * x.size(1), H = x.size(2), W = x.size(3);
  const int64_t OH = out.size(2), OW = out.size(3);
  GA_DISPATCH_FLOAT(x.dtype(), "avg_pool2d", {
    using T = scalar_t;
    const T* xp = static_cast<const T*>(x.raw_data());
    T* yp = static_cast<T*>(out.raw_data());
    parallel_for(0, planes, detail::grain_for(OH * OW * g.kh * g.kw), [&](int64_t lo, int64_t hi) {
      for (int64_t p = lo; p < hi; ++p) {
        const T* xc = xp + p * H * W;
        T* yc = yp + p * OH * OW;
        for (int64_t oh = 0; oh < OH; ++oh) {
          const int64_t h0 = std::max<int64_t>(0, oh * g.sh - g.ph), h1 = std::min(H, oh * g.sh - g.ph + g.kh);
          for (int64_t ow = 0; ow < OW; ++ow) {
            const int64_t w0 = std::max<int64_t>(0, ow * g.sw - g.pw), w1 = std::min(W, ow * g.sw - g.pw + g.kw);
            T s = 0;
            for (int64_t ih = h0; ih < h1; ++ih)
              for (int64_t iw = w0; iw < w1; ++iw) s += xc[ih * W + iw];
            yc[oh * OW + ow] = s / T(detail::pool_divisor(g, count_include_pad, h0, h1, w0, w1));
          }
        }
      }
    });
  });
}

GA_CPU_KERNEL void CpuBackend::avg_pool2d_backward(const Tensor& gout, const Window2d& g, bool count_include_pad,
                                            const Tensor& gx) {
  const int64_t planes = gx.size(0) * gx.size(1), H = gx.size(2), W = gx.size(3);
  const int64_t OH = gout.size(2), OW = gout.size(3);
  GA_DISPATCH_FLOAT(gx.dtype(), "avg_pool2d_backward", {
    using T = scalar_t;
    const T* gp = static_cast<const T*>(gout.raw_data());
    T* xp = static_cast<T*>(gx.raw_data());
    // Windows overlap within a plane only: one thread per plane range.
    parallel_for(0, planes, detail::grain_for(OH * OW * g.kh * g.kw), [&](int64_t lo, int64_t hi) {
      for (int64_t p = lo; p < hi; ++p) {
        T* xc = xp + p * H * W;
        const T* gc = gp + p * OH * OW;
        for (int64_t oh = 0; oh < OH; ++oh) {
          const int64_t h0 = std::max<int64_t>(0, oh * g.sh - g.ph), h1 = std::min(H, oh * g.sh - g.ph + g.kh);
          for (int64_t ow = 0; ow < OW; ++ow) {
            const int64_t w0 = std::max<int64_t>(0, ow * g.sw - g.pw), w1 = std::min(W, ow * g.sw - g.pw + g.kw);
            const T v = gc[oh * OW + ow] / T(detail::pool_divisor(g, count_include_pad, h0, h1, w0, w1));
            for (int64_t ih = h0; ih < h1; ++ih)
              for (int64_t iw = w0; iw < w1; ++iw) xc[ih * W + iw] += v;
          }
        }
      }
    });
  });
}

namespace detail {
/// Adaptive bin i of n over a length of `len`: [floor(i*len/n), ceil((i+1)*len/n)).
inline int64_t bin_start(int64_t i, int64_t len, int64_t n) { return (i * len) / n; }
inline int64_t bin_end(int64_t i, int64_t len, int64_t n) { return ((i + 1) * len + n - 1) / n; }
}  // namespace detail

GA_CPU_KERNEL void CpuBackend::adaptive_avg_pool2d(const Tensor& x, const Tensor& out) {
  const int64_t planes = x.size(0) * x.size(1), H = x.size(2), W = x.size(3);
  const int64_t OH = out.size(2), OW = out.size(3);
  GA_DISPATCH_FLOAT(x.dtype(), "adaptive_avg_pool2d", {
    using T = scalar_t;
    const T* xp = static_cast<const T*>(x.raw_data());
    T* yp = static_cast<T*>(out.raw_data());
    parallel_for(0, planes, detail::grain_for(H * W), [&](int64_t lo, int64_t hi) {
      for (int64_t p = lo; p < hi; ++p) {
        const T* xc = xp + p * H * W;
        T* yc = yp + p * OH * OW;
        for (int64_t oh = 0; oh < OH; ++oh) {
          const int64_t h0 = detail::bin_start(oh, H, OH), h1 = detail::bin_end(oh, H, OH);
          for (int64_t ow = 0; ow < OW; ++ow) {
            const int64_t w0 = detail::bin_start(ow, W, OW), w1 = detail::bin_end(ow, W, OW);
            T s = 0;
            for (int64_t ih = h0; ih < h1; ++ih)
              for (int64_t iw = w0; iw < w1; ++iw) s += xc[ih * W + iw];
            yc[oh * OW + ow] = s / T((h1 - h0) * (w1 - w0));
          }
        }
      }
    });
  });
}

GA_CPU_KERNEL void CpuBackend::adaptive_avg_pool2d_backward(const Tensor& gout, const Tensor& gx) {
  const int64_t planes = gx.size(0) * gx.size(1), H = gx.size(2), W = gx.size(3);
  const int64_t OH = gout.size(2), OW = gout.size(3);
  GA_DISPATCH_FLOAT(gx.dtype(), "adaptive_avg_pool2d_backward", {
    using T = scalar_t;
    const T* gp = static_cast<const T*>(gout.raw_data());
    T* xp = static_cast<T*>(gx.raw_data());
    parallel_for(0, planes, detail::grain_for(H * W), [&](int64_t lo, int64_t hi) {
      for (int64_t p = lo; p < hi; ++p) {
        T* xc = xp + p * H * W;
        const T* gc = gp + p * OH * OW;
        for (int64_t oh = 0; oh < OH; ++oh) {
          const int64_t h0 = detail::bin_start(oh, H, OH), h1 = detail::bin_end(oh, H, OH);
          for (int64_t ow = 0; ow < OW; ++ow) {
            const int64_t w0 = detail::bin_start(ow, W, OW), w1 = detail::bin_end(ow, W, OW);
            const T v = gc[oh * OW + ow] / T((h1 - h0) * (w1 - w0));
            for (int64_t ih = h0; ih < h1; ++ih)
              for (int64_t iw = w0; iw < w1; ++iw) xc[ih * W + iw] += v;
          }
        }
      }
    });
  });
}

}  // namespace ga::backend::cpu
#endif  // GA_EMIT_CPU_KERNELS
