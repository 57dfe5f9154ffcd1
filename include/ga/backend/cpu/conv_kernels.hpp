// CPU kernels for convolution (the forward as a product; im2col / col2im) and average
// pooling.
//
// im2col and col2im only look at x as [C, H, W], so the ops layer passes a batch as
// [N*C, H, W]; cols is then [N, C*kh*kw, OH*OW] laid out as one matrix.
#pragma once
#include <algorithm>
#include <cstring>

#include "cpu_backend.hpp"
#include "epilogue.hpp"
#include "gemm_bf16.hpp"
#include "gemm_f32.hpp"
#include "gemm_f32_dot.hpp"

namespace ga::backend::cpu {

/// How CpuBackend::conv2d computes a convolution.
enum class ConvPath {
  Pointwise,  // 1x1, stride 1, no padding, not Implicit: the images are the column matrices; one matmul
  Implicit,   // a packed f32 GEMM over the whole batch, packing the columns straight from the images
  Columns,    // im2col into scratch (a chunk of images at a time), then matmul
  Rows,       // few output positions: each window a row, out^T = rows @ w^T in dot-product form
};

inline const char* conv_path_name(ConvPath p) {
  switch (p) {
    case ConvPath::Pointwise: return "pointwise";
    case ConvPath::Implicit: return "implicit GEMM";
    case ConvPath::Columns: return "im2col + GEMM";
    case ConvPath::Rows: return "rows, dot form";
  }
  return "?";
}

/// The path CpuBackend::conv2d takes for x [B, C, H, W], w [O, C*kh*kw] under window g.
/// Rows where the dot-product form computes the transposed product rows @ w^T, a row per
/// output position of the batch (f32_gemm_path with both operands along k: up to 64
/// positions, one 7 x 7 output, with deep enough windows); else the implicit GEMM wherever
/// a packed f32 kernel (AVX-512 or AVX2) computes w @ [im2col(x[0]) ... im2col(x[B-1])] (with
/// the batch's columns side by side). A bf16 or f16 weight takes the implicit GEMM too where
/// the mixed product is the reference kernel's single product of exact f32 values
/// (bf16_gemm::single_product: a bf16 weight, or Medium precision), which the f32 kernel
/// computes; otherwise (the AMX and AVX512-BF16 kernels) im2col and the mixed product.
inline ConvPath conv2d_path(const Tensor& x, const Tensor& w, const Window2d& g) {
  const int64_t columns = x.size(0) * g.out_h(x.size(2)) * g.out_w(x.size(3));
  const bool f32 = GA_X86_F32_KERNELS && x.dtype() == DType::f32 && w.dtype() == DType::f32;
  const bool single_mixed = GA_X86_F32_KERNELS && x.dtype() == DType::f32 &&
                            (w.dtype() == DType::bf16 || w.dtype() == DType::f16) &&
                            bf16_kernel() == Bf16Kernel::Reference &&
                            bf16_gemm::single_product(w.dtype(), x.dtype(), mixed_matmul_precision());
  if (f32 && w.strides()[1] == 1 &&
      f32_gemm_path(columns, w.size(0), w.size(1), /*k_contiguous=*/true) == F32Kernel::Avx512Dot)
    return ConvPath::Rows;
  if (f32 || single_mixed) {
    const F32Kernel packed = f32_gemm_path(w.size(0), columns, w.size(1));
    if (packed == F32Kernel::Avx512 || packed == F32Kernel::Avx2) return ConvPath::Implicit;
  }
  if (g.pointwise()) return ConvPath::Pointwise;
  return ConvPath::Columns;
}

}  // namespace ga::backend::cpu

#if GA_EMIT_CPU_KERNELS
namespace ga::backend::cpu {

namespace detail {
/// Rows of work per thread so that each chunk touches at least ~32K elements.
inline int64_t grain_for(int64_t per_item) { return std::max<int64_t>(1, 32768 / std::max<int64_t>(per_item, 1)); }

/// An uninitialised contiguous host tensor, outside autograd.
inline Tensor scratch_tensor(const Shape& shape, DType dtype) {
  auto impl = std::make_shared<TensorImpl>();
  impl->storage = HostBlockCache::instance().allocate(size_t(numel_of(shape)) * dtype_size(dtype));
  impl->shape = shape;
  impl->strides = contiguous_strides(shape);
  impl->dtype = dtype;
  return Tensor(impl);
}
}  // namespace detail

GA_CPU_KERNEL void CpuBackend::conv2d(const Tensor& x, const Tensor& w, const Window2d& g, const Tensor& out,
                                      const MatmulEpilogue& e) {
  const int64_t N = x.size(0), C = x.size(1), H = x.size(2), W = x.size(3);
  const int64_t O = w.size(0), CKK = w.size(1), P = out.size(2);
  GA_CHECK(CKK == C * g.kh * g.kw && P == g.out_h(H) * g.out_w(W) && out.size(1) == O, ShapeError, "conv2d: input ",
           shape_str(x.shape()), ", weight ", shape_str(w.shape()), " and output ", shape_str(out.shape()),
           " do not fit a ", g.kh, "x", g.kw, " window");
  if (out.numel() == 0) return;
  // The weight broadcast over `images` images, and images [n0, n0 + images) of x as [., C, H*W].
  auto weight_for = [&](int64_t images) {
    return w.as_strided({images, O, CKK}, {0, w.strides()[0], w.strides()[1]}, w.offset());
  };
  auto images = [&](const Tensor& t, int64_t n0, int64_t count, int64_t rows, int64_t cols) {
    return t.as_strided({count, rows, cols}, {rows * cols, cols, 1}, t.offset() + n0 * rows * cols);
  };
  const ConvPath path = conv2d_path(x, w, g);
#if GA_X86_F32_KERNELS
  if (path == ConvPath::Implicit) {
    const F32Kernel packed = f32_gemm_path(O, N * P, CKK);
    if (w.dtype() == DType::f32) {
      f32_gemm::packed_conv2d(packed, x, w, g, out, e);
      return;
    }
    // A bf16 / f16 weight whose mixed product is one product of exact f32 values (see
    // conv2d_path): the weight, and the images unless that product takes them whole, summed
    // to the terms it multiplies, in f32, then the f32 convolution.
    const auto single = bf16_gemm::single_product(w.dtype(), x.dtype(), mixed_matmul_precision());
    const Tensor wf = detail::scratch_tensor({O, CKK}, DType::f32);
    bf16_gemm::to_f32_terms(bf16_gemm::Operand{w.raw_data(), w.dtype(), w.strides()[0], w.strides()[1], 1}, O, CKK,
                            single.a_terms, static_cast<float*>(wf.raw_data()));
    Tensor xf = x;
    if (single.b_terms < bf16_gemm::exact_planes(DType::f32)) {
      xf = detail::scratch_tensor(x.shape(), DType::f32);
      bf16_gemm::to_f32_terms(bf16_gemm::Operand{x.raw_data(), DType::f32, W, 1, 1}, N * C * H, W, single.b_terms,
                              static_cast<float*>(xf.raw_data()));
    }
    f32_gemm::packed_conv2d(packed, xf, wf, g, out, e);
    return;
  }
#endif
  if (path == ConvPath::Pointwise) {
    matmul(weight_for(N), images(x, 0, N, C, H * W), out, e);
    return;
  }
#if GA_X86_F32_KERNELS
  if (path == ConvPath::Rows) {
    // Image by image: rows [P, CKK], each output position's window (im2col transposed), and
    // out^T = rows @ w^T in dot-product form, stored straight into out [O, P] as a transposed
    // C, with the bias (one per output channel: a column), residual and activation fused.
    detail::check_epilogue("conv2d", out, e);
    const float* xp = static_cast<const float*>(x.raw_data());
    const float* bias = e.bias.defined() ? static_cast<const float*>(e.bias.raw_data()) : nullptr;
    const float* residual = e.residual.defined() ? static_cast<const float*>(e.residual.raw_data()) : nullptr;
    float* op = static_cast<float*>(out.raw_data());
    f32_gemm::for_each_product_range(N, 2.0 * double(P) * double(O) * double(CKK), [&](int64_t lo, int64_t hi,
                                                                                        int threads) {
      const Tensor cols = g.pointwise() ? Tensor() : detail::scratch_tensor({CKK, P}, x.dtype());
      // Laid out as dot_gemm wants them, so that it need not copy them (ViT's 32 x 32 patches).
      const int64_t ldr = f32_gemm::dot_row_stride(CKK);
      const Tensor rows = detail::scratch_tensor({P, ldr}, x.dtype());
      for (int64_t n = lo; n < hi; ++n) {
        const float* image_cols = xp + n * C * H * W;  // a pointwise window's columns: the image
        if (!g.pointwise()) {
          im2col(x.as_strided({C, H, W}, {H * W, W, 1}, x.offset() + n * C * H * W), g, cols);
          image_cols = static_cast<const float*>(cols.raw_data());
        }
        // Split over the window's depth in 16-deep blocks when this product has the threads.
        float* rp = static_cast<float*>(rows.raw_data());
        parallel_for(0, (CKK + 15) / 16, threads > 1 ? 1 : (CKK + 15) / 16, [&](int64_t lo, int64_t hi) {
          const int64_t r0 = lo * 16, r1 = std::min(CKK, hi * 16);
          f32_gemm::avx512::transpose_matrix(image_cols + r0 * P, r1 - r0, P, P, rp + r0, ldr);
        });
        const f32_gemm::Epilogue ep{nullptr, bias, residual ? residual + n * O * P : nullptr, 0, e.activation};
        f32_gemm::dot_gemm(static_cast<const float*>(rows.raw_data()), ldr, static_cast<const float*>(w.raw_data()),
                           w.strides()[0], f32_gemm::DotLayout{op + n * O * P, 1, P}, P, O, CKK, threads, ep);
      }
    });
    return;
  }
#endif
  const int64_t chunk = im2col_chunk(N, CKK * P);
  const Tensor cols = detail::scratch_tensor({chunk, CKK, P}, x.dtype());
  for (int64_t n0 = 0; n0 < N; n0 += chunk) {
    const int64_t B = std::min(chunk, N - n0);
    im2col(x.as_strided({B * C, H, W}, {H * W, W, 1}, x.offset() + n0 * C * H * W), g,
           cols.as_strided({B * CKK, P}, {P, 1}, 0));
    MatmulEpilogue part = e;
    if (e.residual.defined()) part.residual = images(e.residual, n0, B, O, P);
    matmul(weight_for(B), cols.as_strided({B, CKK, P}, {CKK * P, P, 1}, 0), images(out, n0, B, O, P), part);
  }
}

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
        if (g.kh == 2 && g.kw == 2 && g.sh == 2 && g.sw == 2 && g.ph == 0 && g.pw == 0) {
          // A ResNet's 2x2 pooling: a window size known to the compiler, so it vectorises the
          // strided loads (the loops below do not: 3-7x slower). The same sums in the same
          // order as below, and / 4 is exact, so the same bits.
          for (int64_t oh = 0; oh < OH; ++oh) {
            T* yr = yc + oh * OW;
            const T* x0 = xc + 2 * oh * W;
            const T* x1 = x0 + W;
            for (int64_t ow = 0; ow < OW; ++ow)
              yr[ow] = (((x0[2 * ow] + x0[2 * ow + 1]) + x1[2 * ow]) + x1[2 * ow + 1]) / T(4);
          }
          continue;
        }
        if (g.ph == 0 && g.pw == 0) {
          // Every window inside the image: whole output rows at a time; the same sums in the
          // same order as below.
          const T div = T(g.kh * g.kw);
          for (int64_t oh = 0; oh < OH; ++oh) {
            T* yr = yc + oh * OW;
            std::fill(yr, yr + OW, T(0));
            for (int64_t i = 0; i < g.kh; ++i) {
              const T* xr = xc + (oh * g.sh + i) * W;
              for (int64_t j = 0; j < g.kw; ++j)
                for (int64_t ow = 0; ow < OW; ++ow) yr[ow] += xr[ow * g.sw + j];
            }
            for (int64_t ow = 0; ow < OW; ++ow) yr[ow] /= div;
          }
          continue;
        }
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
