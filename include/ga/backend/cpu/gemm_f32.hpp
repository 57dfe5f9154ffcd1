// The CPU backend's own f32 matrix product for x86-64 CPUs with AVX-512F: a packed,
// blocked GEMM (Goto/BLIS structure) with a 12 x 32 register micro-kernel of zmm FMAs.
// Eigen's GEMM stays the fallback (CPUs without AVX-512F, f64, tiny products, and on
// request). The kernel is compiled with per-function target attributes, so a portable
// build still carries it and uses it when the CPU (and the OS) allow AVX-512.
#pragma once
#include <algorithm>
#include <cstdint>
#include <cstdlib>
#include <cstring>
#include <memory>
#include <string>

#include "cpu_backend.hpp"

#if defined(__x86_64__) && (defined(__clang__) || (defined(__GNUC__) && __GNUC__ >= 9))
#define GA_X86_F32_KERNELS 1
#include <immintrin.h>
#else
#define GA_X86_F32_KERNELS 0
#endif

namespace ga::backend::cpu {

/// Who computes f32 matrix products. Auto: the AVX-512 kernels where the CPU runs them and
/// the product gains from them (the dot-product form, gemm_f32_dot.hpp, for few rows whose
/// operands both run along k; the packed kernel for other big enough products), Eigen
/// otherwise. Avx512: the packed kernel for every product (tests). Avx512Dot: the
/// dot-product form for every product whose operands both run along k, the packed kernel
/// for the rest (tests). Eigen: Eigen's GEMM for every product.
enum class F32Kernel { Auto, Avx512, Avx512Dot, Eigen };

inline const char* f32_kernel_name(F32Kernel k) {
  switch (k) {
    case F32Kernel::Auto: return "auto";
    case F32Kernel::Avx512: return "avx512";
    case F32Kernel::Avx512Dot: return "avx512dot";
    case F32Kernel::Eigen: return "eigen";
  }
  return "?";
}

namespace detail {

/// AVX-512F with the OS saving the zmm state (the compiler's CPU probe checks XCR0 too).
inline bool probe_f32_avx512() {
#if GA_X86_F32_KERNELS
  __builtin_cpu_init();
  return __builtin_cpu_supports("avx512f") && __builtin_cpu_supports("fma");
#else
  return false;
#endif
}

inline bool f32_avx512_supported() {
  static const bool s = probe_f32_avx512();
  return s;
}

/// The initial setting: Auto, unless the environment variable GA_GEMM_F32 says eigen, or
/// avx512 or avx512dot on a machine that runs them. Read once, at the first f32 product.
inline F32Kernel initial_f32_kernel() {
  const char* env = std::getenv("GA_GEMM_F32");
  if (!env) return F32Kernel::Auto;
  const std::string v = env;
  if (v == "eigen") return F32Kernel::Eigen;
  if (v == "avx512" && f32_avx512_supported()) return F32Kernel::Avx512;
  if (v == "avx512dot" && f32_avx512_supported()) return F32Kernel::Avx512Dot;
  return F32Kernel::Auto;
}

inline F32Kernel& f32_kernel_setting() {
  static F32Kernel k = initial_f32_kernel();
  return k;
}

}  // namespace detail

/// Whether this machine (CPU, OS, and this build's compiler) can run kernel k. Auto and
/// Eigen always can.
inline bool f32_kernel_supported(F32Kernel k) {
  return k == F32Kernel::Avx512 || k == F32Kernel::Avx512Dot ? detail::f32_avx512_supported() : true;
}

/// Selects who computes every later f32 product (overrides GA_GEMM_F32). Not thread-safe
/// against products running concurrently; meant for tests, benchmarks and start-up. Throws
/// ValueError when the machine cannot run k.
inline void set_f32_gemm_kernel(F32Kernel k) {
  GA_CHECK(f32_kernel_supported(k), ValueError, "set_f32_gemm_kernel: the ", f32_kernel_name(k),
           " kernel is not supported on this machine (CPU, OS or compiler)");
  detail::f32_kernel_setting() = k;
}

/// The current setting (Auto, Avx512, Avx512Dot or Eigen).
inline F32Kernel f32_gemm_kernel() { return detail::f32_kernel_setting(); }

/// Who computes an f32 product [M, K] @ [K, N] under the current setting: Avx512 (the packed
/// kernel), Avx512Dot (the dot-product form; only when k_contiguous: A's rows and B's
/// columns both run along k, as in x @ w^T) or Eigen.
inline F32Kernel f32_gemm_path(int64_t M, int64_t N, int64_t K, bool k_contiguous = false) {
  const F32Kernel k = f32_gemm_kernel();
  if (k == F32Kernel::Eigen || !detail::f32_avx512_supported()) return F32Kernel::Eigen;
  if (k == F32Kernel::Avx512Dot) return k_contiguous ? k : F32Kernel::Avx512;
  if (k == F32Kernel::Avx512) return k;
  // Up to 64 rows the dot-product form beats the packed kernel once each dot product is
  // 256 deep or more (with the weight read from memory, as in a forward pass; measured on
  // the development machine, bench/RESULTS.md); shallower, its final sums across lanes cost
  // too much.
  if (k_contiguous && M <= 64 && K >= 256) return F32Kernel::Avx512Dot;
  // Smaller or thinner products (a vector-matrix product, 40^3) spend more on packing than
  // the kernel saves, and with N < 64 (a 7 x 7 convolution) a 32-column block wastes too much
  // and A, packed whole, is used too few times: there Eigen is faster (measured on the
  // development machine).
  const bool big = M >= 4 && N >= 64 && double(M) * double(N) * double(K) >= double(1 << 17);
  return big ? F32Kernel::Avx512 : F32Kernel::Eigen;
}

}  // namespace ga::backend::cpu

#if GA_EMIT_CPU_KERNELS && GA_X86_F32_KERNELS
#include "epilogue.hpp"
#include "host_cache.hpp"
#include "parallel.hpp"

namespace ga::backend::cpu::f32_gemm {

// GCC 12's AVX-512 headers build some results from a self-initialised "undefined" vector,
// which -Wall reports as uninitialised wherever they are used; the values are all written.
#if defined(__GNUC__) && !defined(__clang__)
#pragma GCC diagnostic push
#pragma GCC diagnostic ignored "-Wuninitialized"
#pragma GCC diagnostic ignored "-Wmaybe-uninitialized"
#endif

#define GA_TARGET_AVX512F __attribute__((target("avx512f,fma")))

// Register block: kMR rows of C (A values broadcast) x kNR columns (two zmm of B), 24
// accumulators, 2 B loads and 12 broadcasts per 24 FMAs. Cache blocks: a kMR x kKC panel of A
// (18 KiB) stays in L1 while a kKC x kNC block of B (about 1 MiB, private to the thread)
// streams from L2 under it.
inline constexpr int64_t kMR = 12, kNR = 32, kKC = 384, kNC = 640;

/// One matrix operand [rows, cols]: element (i, j) is at p[i * rs + j * cs].
struct Operand {
  const float* p;
  int64_t rs, cs;
};

// ---- packing ----

/// Transposes the 16 x 16 block r[0..15] (rows) in registers: afterwards r[j] holds column j.
GA_TARGET_AVX512F inline void transpose16(__m512* r) {
  __m512 t[16];
  for (int i = 0; i < 8; ++i) {
    t[2 * i] = _mm512_unpacklo_ps(r[2 * i], r[2 * i + 1]);
    t[2 * i + 1] = _mm512_unpackhi_ps(r[2 * i], r[2 * i + 1]);
  }
  for (int i = 0; i < 4; ++i) {
    const __m512d a = _mm512_castps_pd(t[4 * i]), b = _mm512_castps_pd(t[4 * i + 1]);
    const __m512d c = _mm512_castps_pd(t[4 * i + 2]), d = _mm512_castps_pd(t[4 * i + 3]);
    r[4 * i] = _mm512_castpd_ps(_mm512_unpacklo_pd(a, c));
    r[4 * i + 1] = _mm512_castpd_ps(_mm512_unpackhi_pd(a, c));
    r[4 * i + 2] = _mm512_castpd_ps(_mm512_unpacklo_pd(b, d));
    r[4 * i + 3] = _mm512_castpd_ps(_mm512_unpackhi_pd(b, d));
  }
  // Within 128-bit lane l, r[4i + j] now holds column 4l + j of rows 4i .. 4i + 3.
  for (int j = 0; j < 4; ++j) {
    const __m512 u0 = _mm512_shuffle_f32x4(r[j], r[4 + j], 0x88), u1 = _mm512_shuffle_f32x4(r[j], r[4 + j], 0xdd);
    const __m512 u2 = _mm512_shuffle_f32x4(r[8 + j], r[12 + j], 0x88), u3 = _mm512_shuffle_f32x4(r[8 + j], r[12 + j], 0xdd);
    t[j] = _mm512_shuffle_f32x4(u0, u2, 0x88);
    t[4 + j] = _mm512_shuffle_f32x4(u1, u3, 0x88);
    t[8 + j] = _mm512_shuffle_f32x4(u0, u2, 0xdd);
    t[12 + j] = _mm512_shuffle_f32x4(u1, u3, 0xdd);
  }
  for (int i = 0; i < 16; ++i) r[i] = t[i];
}

inline __mmask16 first_lanes(int64_t n) {
  return n >= 16 ? __mmask16(0xffff) : n <= 0 ? __mmask16(0) : __mmask16((1u << n) - 1);
}

/// dst[j * ldd + i] = src[i * lds + j] for i < rows, j < cols, 16 x 16 blocks at a time.
GA_TARGET_AVX512F inline void transpose_matrix(const float* src, int64_t rows, int64_t cols, int64_t lds, float* dst,
                                               int64_t ldd) {
  for (int64_t i0 = 0; i0 < rows; i0 += 16) {
    const int64_t ri = std::min<int64_t>(16, rows - i0);
    for (int64_t j0 = 0; j0 < cols; j0 += 16) {
      const int64_t cj = std::min<int64_t>(16, cols - j0);
      const __mmask16 m = first_lanes(cj);
      __m512 r[16];
      for (int64_t i = 0; i < 16; ++i)
        r[i] = i < ri ? _mm512_maskz_loadu_ps(m, src + (i0 + i) * lds + j0) : _mm512_setzero_ps();
      transpose16(r);
      for (int64_t j = 0; j < cj; ++j) _mm512_mask_storeu_ps(dst + (j0 + j) * ldd + i0, first_lanes(ri), r[j]);
    }
  }
}

/// Packs X [rows, kc] (X(i, k) at p[i * rs + k * cs]) as `width`-wide k-major panels: panel q
/// holds rows [q * width, q * width + width) at out[q * width * kc + k * width + i], rows past
/// `rows` zero. This is A's layout (width kMR) and B's (width kNR, with X = B^T).
GA_TARGET_AVX512F inline void pack_panels(const Operand& X, int64_t rows, int64_t kc, int64_t width, float* out) {
  const int64_t panels = (rows + width - 1) / width;
  if (X.rs == 1) {
    // Each k is a contiguous run of rows: copy it into every panel, zero-padding the last.
    // k outermost, so that the source is read in order (it may be far larger than a cache).
    for (int64_t k = 0; k < kc; ++k) {
      const float* s = X.p + k * X.cs;
      for (int64_t q = 0; q < panels; ++q) {
        float* o = out + q * width * kc + k * width;
        const int64_t rv = std::min(width, rows - q * width);
        for (int64_t i = 0; i < width; i += 16)
          _mm512_mask_storeu_ps(o + i, first_lanes(width - i), _mm512_maskz_loadu_ps(first_lanes(rv - i), s + q * width + i));
      }
    }
    return;
  }
  for (int64_t q = 0; q < panels; ++q) {
    float* o = out + q * width * kc;
    const int64_t r0 = q * width, rv = std::min(width, rows - r0);
    if (X.cs == 1) {
      // Rows contiguous along k: 16 x 16 transposes.
      for (int64_t k0 = 0; k0 < kc; k0 += 16) {
        const __mmask16 km = first_lanes(kc - k0);
        const int64_t kv = std::min<int64_t>(16, kc - k0);
        for (int64_t i0 = 0; i0 < width; i0 += 16) {
          __m512 r[16];
          for (int64_t i = 0; i < 16; ++i)
            r[i] = i0 + i < rv ? _mm512_maskz_loadu_ps(km, X.p + (r0 + i0 + i) * X.rs + k0) : _mm512_setzero_ps();
          transpose16(r);
          const __mmask16 wm = first_lanes(width - i0);
          for (int64_t k = 0; k < kv; ++k) _mm512_mask_storeu_ps(o + (k0 + k) * width + i0, wm, r[k]);
        }
      }
    } else {
      for (int64_t k = 0; k < kc; ++k)
        for (int64_t i = 0; i < width; ++i) o[k * width + i] = i < rv ? X.p[(r0 + i) * X.rs + k * X.cs] : 0.0f;
    }
  }
}

/// B [K, N] of one product where it lies. Either a strided matrix (`matrix`), or, when
/// `images` is set, the im2col matrices of a batch of images [C, H, W] (contiguous, one
/// after the other) under `window`, side by side: column n is output position p = n % P
/// = (oh, ow) of image i = n / P, and B(k, n) for k = (c, ki, kj) is
/// image_i[c, oh*sh - ph + ki, ow*sw - pw + kj], zero outside the image. The second is read
/// by the packing directly, never materialised (an implicit GEMM): each packed value is
/// loaded from the image once, where im2col would write it to memory and the packing read
/// it back; and one product covers the whole batch, so that a tile of C may span two images
/// (a 7 x 7 output has 49 columns: alone, two 32-column panels hold it at 77% use).
struct BSource {
  Operand matrix{nullptr, 0, 0};
  const float* images = nullptr;
  int64_t image_size = 0;        // C * H * W: from one image to the next
  int64_t H = 0, W = 0, OW = 0;  // the image's height and width; the output's width
  int64_t P = 0;                 // output positions (columns) per image
  Window2d window;

  static BSource strided(const Operand& m) {
    BSource b;
    b.matrix = m;
    return b;
  }
  static BSource conv(const float* images, int64_t C, int64_t H, int64_t W, const Window2d& g) {
    BSource b;
    b.images = images;
    b.image_size = C * H * W;
    b.window = g;
    b.P = g.out_h(H) * g.out_w(W);
    b.H = H;
    b.W = W;
    b.OW = g.out_w(W);
    return b;
  }
};

/// Copies n values src[0], src[step], ... to dst[0 .. n).
GA_TARGET_AVX512F inline void copy_run(const float* src, int64_t step, int64_t n, float* dst) {
  if (step == 1) {
    for (int64_t i = 0; i < n; i += 16) {
      const __mmask16 m = first_lanes(n - i);
      _mm512_mask_storeu_ps(dst + i, m, _mm512_maskz_loadu_ps(m, src + i));
    }
    return;
  }
  const __m512i lanes = _mm512_mullo_epi32(_mm512_set_epi32(15, 14, 13, 12, 11, 10, 9, 8, 7, 6, 5, 4, 3, 2, 1, 0),
                                           _mm512_set1_epi32(int(step)));
  for (int64_t i = 0; i < n; i += 16) {
    const __mmask16 m = first_lanes(n - i);
    _mm512_mask_storeu_ps(dst + i, m, _mm512_mask_i32gather_ps(_mm512_setzero_ps(), m, lanes, src + i * step, 4));
  }
}

/// Calls f(offset, p, slot, len) for each piece of the batch columns [col, col + cols) (images
/// of per_image columns side by side, image_stride floats apart) that lies in one image:
/// columns [col + slot, col + slot + len) are that image's columns [p, p + len), the image at
/// `offset` floats from the first.
template <class F>
inline void for_each_image_piece(int64_t per_image, int64_t image_stride, int64_t col, int64_t cols, const F& f) {
  for (int64_t slot = 0; slot < cols;) {
    const int64_t n = col + slot, p = n % per_image, len = std::min(cols - slot, per_image - p);
    f(n / per_image * image_stride, p, slot, len);
    slot += len;
  }
}

/// Packs rows k in [k0, k0 + kc) and columns n in [n0, n0 + nc) of a convolution's
/// implicit B (src.images set) as pack_panels packs B^T: kNR-wide k-major panels, columns
/// past nc zero.
///
/// A pointwise window: B's row k is channel k of each image, so for each k (outermost, so
/// that each channel is read in order, as the hardware prefetcher expects) every panel is
/// copied from one image, or two where it spans an image's end.
///
/// Other windows: each panel's columns are cut once into runs that stay in one output row
/// of one image; then for each k every run is one strided read of an image row, clipped to
/// the columns whose input lies inside the image (the rest stays zero: the padding). Panel
/// by panel: a panel's rows k read the same few image rows again and again (3 x 3 windows
/// step along kj, then ki), which then stay in L1.
GA_TARGET_AVX512F inline void pack_conv_panels(const BSource& src, int64_t k0, int64_t kc, int64_t n0, int64_t nc,
                                               float* out) {
  const Window2d& g = src.window;
  const int64_t KK = g.kh * g.kw, plane = src.H * src.W;
  if (g.pointwise()) {
    for (int64_t k = 0; k < kc; ++k) {
      const int64_t channel = (k0 + k) * plane;
      for (int64_t col = 0; col < nc; col += kNR) {
        float* dst = out + col * kc + k * kNR;
        const int64_t n = n0 + col, p = n % src.P, cols = std::min(kNR, nc - col);
        const float* s = src.images + n / src.P * src.image_size + channel + p;
        if (cols == kNR && p + kNR <= src.P) {  // the common case: 32 values in a row
          _mm512_storeu_ps(dst, _mm512_loadu_ps(s));
          _mm512_storeu_ps(dst + 16, _mm512_loadu_ps(s + 16));
          continue;
        }
        _mm512_storeu_ps(dst, _mm512_setzero_ps());
        _mm512_storeu_ps(dst + 16, _mm512_setzero_ps());
        for_each_image_piece(src.P, src.image_size, n, cols,
                             [&](int64_t offset, int64_t pp, int64_t slot, int64_t len) {
                               copy_run(src.images + offset + channel + pp, 1, len, dst + slot);
                             });
      }
    }
    return;
  }
  struct Run {
    const float* image;         // the run's image
    int64_t slot, len, oh, ow;  // panel columns [slot, slot + len) are output (oh, ow .. ow + len)
  };
  for (int64_t q = 0; q * kNR < nc; ++q) {
    Run runs[kNR];
    int nruns = 0;
    const int64_t cols = std::min(kNR, nc - q * kNR);
    for (int64_t slot = 0; slot < cols;) {
      const int64_t n = n0 + q * kNR + slot, p = n % src.P, oh = p / src.OW, ow = p % src.OW;
      const int64_t len = std::min(cols - slot, src.OW - ow);
      runs[nruns++] = Run{src.images + n / src.P * src.image_size, slot, len, oh, ow};
      slot += len;
    }
    float* o = out + q * kNR * kc;
    int64_t c = k0 / KK, ki = k0 % KK / g.kw, kj = k0 % g.kw;
    for (int64_t k = 0; k < kc; ++k) {
      float* dst = o + k * kNR;
      _mm512_storeu_ps(dst, _mm512_setzero_ps());
      _mm512_storeu_ps(dst + 16, _mm512_setzero_ps());
      // Output columns whose input column lies inside the image: [ow_lo, ow_hi).
      const int64_t ow_lo = std::max<int64_t>(0, (g.pw - kj + g.sw - 1) / g.sw);
      const int64_t ow_hi = (src.W + g.pw - kj + g.sw - 1) / g.sw;
      for (int r = 0; r < nruns; ++r) {
        const Run& run = runs[r];
        const int64_t ih = run.oh * g.sh - g.ph + ki;
        const int64_t a = std::max(run.ow, ow_lo), b = std::min(run.ow + run.len, ow_hi);
        if (ih < 0 || ih >= src.H || a >= b) continue;
        copy_run(run.image + c * plane + ih * src.W + a * g.sw - g.pw + kj, g.sw, b - a,
                 dst + run.slot + (a - run.ow));
      }
      if (++kj == g.kw) {
        kj = 0;
        if (++ki == g.kh) {
          ki = 0;
          ++c;
        }
      }
    }
  }
}

/// Packs B's block k in [k0, k0 + kc), n in [n0, n0 + nc) as kNR-wide panels of B^T.
inline void pack_b(const BSource& B, int64_t k0, int64_t kc, int64_t n0, int64_t nc, float* out) {
  if (B.images) {
    pack_conv_panels(B, k0, kc, n0, nc, out);
    return;
  }
  // B^T's block: rows n (stride B.cs), depth k (stride B.rs).
  const Operand& m = B.matrix;
  pack_panels(Operand{m.p + k0 * m.rs + n0 * m.cs, m.cs, m.rs}, nc, kc, kNR, out);
}

// ---- epilogue ----

/// A product's epilogue (backend::MatmulEpilogue) for one C [M, N]: what is added to the
/// results and how they are activated, as raw pointers. Null pointers add nothing.
struct Epilogue {
  const float* row_bias = nullptr;  // [M]
  const float* col_bias = nullptr;  // [N]
  const float* residual = nullptr;  // [M, N], row stride ldr
  int64_t ldr = 0;
  Activation activation = Activation::None;

  bool empty() const { return !row_bias && !col_bias && !residual && activation == Activation::None; }

  /// Item i's part of e for a batch of [M, N] results stored one after another (row stride
  /// N): the bias is shared by the batch, the residual is the item's own.
  static Epilogue for_item(const MatmulEpilogue& e, int64_t M, int64_t N, int64_t i) {
    const float* bias = e.bias.defined() ? static_cast<const float*>(e.bias.raw_data()) : nullptr;
    const float* residual =
        e.residual.defined() ? static_cast<const float*>(e.residual.raw_data()) + i * M * N : nullptr;
    return Epilogue{e.bias_per_row ? bias : nullptr, e.bias_per_row ? nullptr : bias, residual, N, e.activation};
  }
};

/// The part of an Epilogue the micro-kernel applies in registers, for one register tile:
/// every pointer at the tile's first row / column.
struct TileEpilogue {
  const float* row_bias;
  const float* col_bias;
  const float* residual;
  int64_t ldr;
  bool relu;
};

// ---- micro-kernel ----

/// C[0..MR) x [0..cols) (row stride ldc) = (accumulate ? C : 0) + a @ b, where a is a packed
/// A panel (kMR values per k, the first MR used) and b holds 16 NV readable values per k, ldb
/// apart (a packed B panel, ldb = kNR, or B itself). cols <= 16 NV; columns past cols are
/// computed and not stored. With `ep`, each stored value is then (value + bias) + residual,
/// through ReLU when ep->relu: the same f32 operations a separate pass would do.
template <int MR, int NV>
GA_TARGET_AVX512F inline void micro_kernel(int64_t kc, const float* a, const float* b, int64_t ldb, float* c,
                                           int64_t ldc, int64_t cols, bool accumulate, const TileEpilogue* ep) {
  __m512 acc[MR][NV];
#pragma GCC unroll 12
  for (int r = 0; r < MR; ++r)
#pragma GCC unroll 2
    for (int j = 0; j < NV; ++j) acc[r][j] = _mm512_setzero_ps();
  // C rows are needed at the end: start bringing them in now.
#pragma GCC unroll 12
  for (int r = 0; r < MR; ++r) {
    _mm_prefetch(reinterpret_cast<const char*>(c + r * ldc), _MM_HINT_T0);
    _mm_prefetch(reinterpret_cast<const char*>(c + r * ldc + 16 * NV - 1), _MM_HINT_T0);
  }
#pragma GCC unroll 4
  for (int64_t k = 0; k < kc; ++k) {
    __m512 bv[NV];
#pragma GCC unroll 2
    for (int j = 0; j < NV; ++j) bv[j] = _mm512_loadu_ps(b + k * ldb + 16 * j);
#pragma GCC unroll 12
    for (int r = 0; r < MR; ++r) {
      const __m512 av = _mm512_set1_ps(a[k * kMR + r]);
#pragma GCC unroll 2
      for (int j = 0; j < NV; ++j) acc[r][j] = _mm512_fmadd_ps(av, bv[j], acc[r][j]);
    }
  }
  const __mmask16 last = first_lanes(cols - 16 * (NV - 1));
#pragma GCC unroll 12
  for (int r = 0; r < MR; ++r) {
    float* cr = c + r * ldc;
#pragma GCC unroll 2
    for (int j = 0; j < NV; ++j) {
      const __mmask16 m = j + 1 < NV ? __mmask16(0xffff) : last;
      __m512 v = acc[r][j];
      if (accumulate) v = _mm512_add_ps(v, _mm512_maskz_loadu_ps(m, cr + 16 * j));
      if (ep) {
        if (ep->row_bias) v = _mm512_add_ps(v, _mm512_set1_ps(ep->row_bias[r]));
        if (ep->col_bias) v = _mm512_add_ps(v, _mm512_maskz_loadu_ps(m, ep->col_bias + 16 * j));
        if (ep->residual) v = _mm512_add_ps(v, _mm512_maskz_loadu_ps(m, ep->residual + r * ep->ldr + 16 * j));
        // MAXPS returns its second operand when either is NaN: v, so NaN stays NaN (as the
        // unfused ReLU, Eigen's max(x, 0), leaves it).
        if (ep->relu) v = _mm512_max_ps(_mm512_setzero_ps(), v);
      }
      _mm512_mask_storeu_ps(cr + 16 * j, m, v);
    }
  }
}

using MicroKernel = void (*)(int64_t, const float*, const float*, int64_t, float*, int64_t, int64_t, bool,
                            const TileEpilogue*);

template <int NV>
inline MicroKernel micro_kernel_for_rows(int64_t rows) {
  switch (rows) {
    case 1: return micro_kernel<1, NV>;
    case 2: return micro_kernel<2, NV>;
    case 3: return micro_kernel<3, NV>;
    case 4: return micro_kernel<4, NV>;
    case 5: return micro_kernel<5, NV>;
    case 6: return micro_kernel<6, NV>;
    case 7: return micro_kernel<7, NV>;
    case 8: return micro_kernel<8, NV>;
    case 9: return micro_kernel<9, NV>;
    case 10: return micro_kernel<10, NV>;
    case 11: return micro_kernel<11, NV>;
    default: return micro_kernel<12, NV>;
  }
}

// ---- the blocked product ----

/// The packed A: for each k block kb (kKC deep, the last shorter), panels of kMR rows; panel
/// mp of block kb at kb * kKC * Mpad + mp * kMR * kc(kb).
struct PackedA {
  float* p;
  int64_t M, K, Mpad;
  const float* panel(int64_t kb, int64_t mp) const {
    return p + kb * kKC * Mpad + mp * kMR * std::min(kKC, K - kb * kKC);
  }
};

inline size_t packed_a_floats(int64_t M, int64_t K) { return size_t((M + kMR - 1) / kMR * kMR * K); }

/// Packs A's row panels [mp0, mp1) for every k block.
inline void pack_a(const Operand& A, const PackedA& pa, int64_t mp0, int64_t mp1) {
  if (mp0 >= mp1) return;
  for (int64_t k0 = 0; k0 < pa.K; k0 += kKC) {
    const int64_t kc = std::min(kKC, pa.K - k0);
    const Operand src{A.p + mp0 * kMR * A.rs + k0 * A.cs, A.rs, A.cs};
    pack_panels(src, std::min(pa.M, mp1 * kMR) - mp0 * kMR, kc, kMR, const_cast<float*>(pa.panel(k0 / kKC, mp0)));
  }
}

/// Where C [M, N] lies: column n is column n % per_image of image n / per_image, whose
/// [M, per_image] block (row stride ldc) starts image_stride floats after the previous
/// image's. A plain matrix is one image (per_image = N). The epilogue's residual is laid out
/// as C (its row stride Epilogue::ldr, the same image_stride).
struct CLayout {
  float* p;
  int64_t ldc, per_image, image_stride;

  static CLayout matrix(float* p, int64_t ldc, int64_t N) { return CLayout{p, ldc, N, 0}; }
};

/// A register tile whose columns span two or more images (C.per_image < N): computed into a
/// contiguous copy (what is there gathered first when accumulating; the residual gathered
/// too) with the same kernel and epilogue, so every value gets the same operations as in an
/// unsplit tile, then scattered back.
inline void run_split_tile(MicroKernel kernel, int64_t kc, const float* a, const float* b, const CLayout& C,
                           int64_t m, int64_t rows, int64_t col, int64_t cols, bool accumulate, const Epilogue* e) {
  alignas(64) float tile[kMR * kNR];
  alignas(64) float residual[kMR * kNR];
  auto gather = [&](const float* src, int64_t ld, float* dst) {
    for_each_image_piece(C.per_image, C.image_stride, col, cols,
                         [&](int64_t offset, int64_t p, int64_t slot, int64_t len) {
                           for (int64_t r = 0; r < rows; ++r)
                             std::memcpy(dst + r * kNR + slot, src + offset + (m + r) * ld + p,
                                         size_t(len) * sizeof(float));
                         });
  };
  if (accumulate) gather(C.p, C.ldc, tile);
  TileEpilogue tile_epilogue{};
  if (e) {
    if (e->residual) gather(e->residual, e->ldr, residual);
    tile_epilogue = TileEpilogue{e->row_bias ? e->row_bias + m : nullptr, e->col_bias ? e->col_bias + col : nullptr,
                                 e->residual ? residual : nullptr, kNR, e->activation == Activation::Relu};
  }
  kernel(kc, a, b, kNR, tile, kNR, cols, accumulate, e ? &tile_epilogue : nullptr);
  if (e && e->activation != Activation::None && e->activation != Activation::Relu)
    for (int64_t r = 0; r < rows; ++r) detail::activate_row<float>(e->activation, tile + r * kNR, cols);
  for_each_image_piece(C.per_image, C.image_stride, col, cols,
                       [&](int64_t offset, int64_t p, int64_t slot, int64_t len) {
                         for (int64_t r = 0; r < rows; ++r)
                           std::memcpy(C.p + offset + (m + r) * C.ldc + p, tile + r * kNR + slot,
                                       size_t(len) * sizeof(float));
                       });
}

/// Asks for part `part` of `parts` of the cache lines of X's rows [r0, r1) x depth [k0, k0 +
/// kc) (X(i, k) at p[i * rs + k], rows along k) to be brought into L2.
GA_TARGET_AVX512F inline void prefetch_part(const Operand& X, int64_t r0, int64_t r1, int64_t k0, int64_t kc,
                                            int64_t part, int64_t parts) {
  const int64_t per_row = (kc + 15) / 16, lines = (r1 - r0) * per_row;
  for (int64_t l = lines * part / parts; l < lines * (part + 1) / parts; ++l)
    _mm_prefetch(reinterpret_cast<const char*>(X.p + (r0 + l / per_row) * X.rs + k0 + l % per_row * 16), _MM_HINT_T1);
}

/// C rows [m0, m1) x columns [n0, n1) (m0 a multiple of kMR, n0 of kNR) on this thread, the
/// epilogue applied as each tile gets its last k block; bbuf has room for a kKC x kNC block
/// of B. With `own_a` (A [M, K] where it lies), this thread packs A's panels itself, each
/// just before its first use, and while a panel is multiplied the next one's rows are
/// prefetched: the weight of a convolution on few positions is read from memory under the
/// arithmetic instead of in a burst before it (its packing then cost about 6% of RN50 at
/// batch 1, the time of reading the weights).
inline void run_block(const PackedA& pa, const BSource& B, const CLayout& C, int64_t m0, int64_t m1, int64_t n0,
                      int64_t n1, float* bbuf, const Epilogue& e, const Operand* own_a = nullptr) {
  if (m0 >= m1 || n0 >= n1) return;
  const int64_t K = pa.K;
  // A shallow product takes wider B blocks (as many bytes), so that C is written in long runs.
  const int64_t block_cols = std::max(kNC, kKC * kNC / std::min(K, kKC) / kNR * kNR);
  for (int64_t nb = n0; nb < n1; nb += block_cols) {
    const int64_t nc = std::min(block_cols, n1 - nb);
    for (int64_t k0 = 0; k0 < K; k0 += kKC) {
      const int64_t kc = std::min(kKC, K - k0);
      pack_b(B, k0, kc, nb, nc, bbuf);
      for (int64_t m = m0; m < m1; m += kMR) {
        const int64_t rows = std::min(kMR, m1 - m);
        const float* a = pa.panel(k0 / kKC, m / kMR);
        const bool packing = own_a && nb == n0;  // A's panels are packed during the first column block
        if (packing) pack_panels(Operand{own_a->p + m * own_a->rs + k0 * own_a->cs, own_a->rs, own_a->cs}, rows, kc,
                                 kMR, const_cast<float*>(a));
        // The next panel to pack: the next rows of this k block, else the first of the next.
        const int64_t next_m = m + kMR < m1 ? m + kMR : m0, next_k = m + kMR < m1 ? k0 : k0 + kKC;
        const bool prefetching = packing && own_a->cs == 1 && next_k < K;
        const int64_t tiles = (nc + kNR - 1) / kNR;
        const MicroKernel full = micro_kernel_for_rows<2>(rows);
        const MicroKernel half = micro_kernel_for_rows<1>(rows);
        const bool last = k0 + kc == K && !e.empty();
        for (int64_t n = 0; n < nc; n += kNR) {
          if (prefetching)
            prefetch_part(*own_a, next_m, std::min(m1, next_m + kMR), next_k, std::min(kKC, K - next_k), n / kNR,
                          tiles);
          const int64_t cols = std::min(kNR, nc - n), col = nb + n;
          const MicroKernel kernel = cols > 16 ? full : half;
          const float* b = bbuf + n * kc;
          const int64_t p = col % C.per_image, image_offset = col / C.per_image * C.image_stride;
          if (p + cols <= C.per_image) {  // the tile lies in one image
            float* c = C.p + image_offset + m * C.ldc + p;
            const TileEpilogue tile{e.row_bias ? e.row_bias + m : nullptr, e.col_bias ? e.col_bias + col : nullptr,
                                    e.residual ? e.residual + image_offset + m * e.ldr + p : nullptr, e.ldr,
                                    e.activation == Activation::Relu};
            kernel(kc, a, b, kNR, c, C.ldc, cols, k0 > 0, last ? &tile : nullptr);
            // Other activations on the tile just stored, while it is in L1.
            if (last && e.activation != Activation::None && e.activation != Activation::Relu)
              for (int64_t r = 0; r < rows; ++r) detail::activate_row<float>(e.activation, c + r * C.ldc, cols);
          } else {
            run_split_tile(kernel, kc, a, b, C, m, rows, col, cols, k0 > 0, last ? &e : nullptr);
          }
        }
      }
    }
  }
}

/// How `threads` threads share the product: a tm x tn grid over row panels and column
/// panels, chosen to minimise the busiest thread's multiply work plus its B packing (each
/// thread packs the B columns it uses; a B element costs about as much as 24 flops).
inline void choose_grid(int64_t M, int64_t N, int threads, int& tm, int& tn) {
  const int64_t MP = (M + kMR - 1) / kMR, NP = (N + kNR - 1) / kNR;
  double best = 0;
  tm = 1;
  tn = 1;
  for (int m = 1; m <= threads; ++m) {
    if (threads % m) continue;
    const int n = threads / m;
    if (m > MP || n > NP) continue;
    const double rows = double(std::min(M, (MP + m - 1) / m * kMR));
    const double cols = double((NP + n - 1) / n * kNR);
    const double cost = rows * cols * 2 + cols * 24;
    if (best == 0 || cost < best) {
      best = cost;
      tm = m;
      tn = n;
    }
  }
}

/// C [M, N] (laid out as `C` says) = epilogue(A [M, K] @ B [K, N]) on `threads` threads,
/// K = pa.K >= 1. pa has room for A packed; pack false means A is already there (a weight
/// shared by a batch).
inline void gemm(const Operand& A, const BSource& B, const CLayout& C, int64_t M, int64_t N, const PackedA& pa,
                 bool pack, int threads, const Epilogue& e) {
  constexpr int kMaxThreads = 256;
  threads = std::max(1, std::min(threads, kMaxThreads));
  int tm = 1, tn = 1;
  choose_grid(M, N, threads, tm, tn);
  threads = tm * tn;
  const int64_t MP = (M + kMR - 1) / kMR, NP = (N + kNR - 1) / kNR;
  // Threads that split the rows only (tn == 1) each use only their own rows of A: each packs
  // them itself as it goes (run_block's own_a). Otherwise the team packs A first.
  const bool own_a = pack && tn == 1;
  auto work = [&](int tid, float* bbuf) {
    const int64_t im = tid / tn, in = tid % tn;
    run_block(pa, B, C, MP * im / tm * kMR, std::min(M, MP * (im + 1) / tm * kMR), NP * in / tn * kNR,
              std::min(N, NP * (in + 1) / tn * kNR), bbuf, e, own_a ? &A : nullptr);
  };
  const size_t bbytes = size_t(kKC * kNC) * sizeof(float);
#ifdef _OPENMP
  if (threads > 1) {
    std::shared_ptr<Storage> bufs[kMaxThreads];
    for (int t = 0; t < threads; ++t) bufs[t] = HostBlockCache::instance().allocate(bbytes);
#pragma omp parallel num_threads(threads)
    {
      const int tid = omp_get_thread_num(), nth = omp_get_num_threads();
      if (pack && !own_a) {
        pack_a(A, pa, MP * tid / nth, MP * (tid + 1) / nth);
#pragma omp barrier
      }
      if (nth == threads) {
        work(tid, static_cast<float*>(bufs[tid]->data()));
      } else if (tid == 0) {  // fewer threads than asked for: do it all here
        for (int t = 0; t < threads; ++t) work(t, static_cast<float*>(bufs[0]->data()));
      }
    }
    return;
  }
#endif
  auto buf = HostBlockCache::instance().allocate(bbytes);
  if (pack && !own_a) pack_a(A, pa, 0, MP);
  for (int t = 0; t < threads; ++t) work(t, static_cast<float*>(buf->data()));
}

#if defined(__GNUC__) && !defined(__clang__)
#pragma GCC diagnostic pop
#endif

/// Runs run_range(lo, hi, threads) over the Bt products of a batch, each of `flops`: many
/// small products [lo, hi) per thread, one thread each; larger ones all in one call, each
/// product on every thread.
template <class F>
inline void for_each_product_range(int64_t Bt, double flops, const F& run_range) {
  int threads = get_num_threads();
#ifdef _OPENMP
  if (omp_in_parallel()) threads = 1;
#endif
  if (Bt > 1 && flops < 4e6 && threads > 1) {
    parallel_for(0, Bt, 1, [&](int64_t lo, int64_t hi) { run_range(lo, hi, 1); });
    return;
  }
  // Small products gain nothing from a second thread.
  run_range(0, Bt, flops < 2e6 ? 1 : threads);
}

/// out[i] = epilogue(A_i @ B_i) for i < Bt, out [Bt, M, N] contiguous f32, K >= 1, where
/// a_of(i) is the Operand A_i [M, K] and b_of(i) the BSource B_i [K, N]; a_shared says every
/// A_i is the same (a broadcast weight, packed once). Threads as for_each_product_range.
template <class AOf, class BOf>
inline void batched_gemm(int64_t Bt, int64_t M, int64_t N, int64_t K, const AOf& a_of, bool a_shared, const BOf& b_of,
                         float* cp, const MatmulEpilogue& epilogue) {
  auto run = [&](int64_t i, const PackedA& pa, bool pack, int threads) {
    gemm(a_of(i), b_of(i), CLayout::matrix(cp + i * M * N, N, N), M, N, pa, pack, threads,
         Epilogue::for_item(epilogue, M, N, i));
  };
  const size_t abytes = packed_a_floats(M, K) * sizeof(float);
  for_each_product_range(Bt, 2.0 * double(M) * double(N) * double(K), [&](int64_t lo, int64_t hi, int threads) {
    auto apack = HostBlockCache::instance().allocate(abytes);
    const PackedA pa{static_cast<float*>(apack->data()), M, K, (M + kMR - 1) / kMR * kMR};
    for (int64_t i = lo; i < hi; ++i) run(i, pa, i == lo || !a_shared, threads);
  });
}

/// out[i] = epilogue(a[i] @ b[i]) for a [Bt, M, K], b [Bt, K, N] (f32, any strides, batch
/// stride 0 for a broadcast operand), out [Bt, M, N] contiguous f32 (see
/// backend::MatmulEpilogue).
inline void matmul(const Tensor& a, const Tensor& b, const Tensor& out, const MatmulEpilogue& epilogue = {}) {
  const int64_t Bt = out.size(0), M = out.size(1), N = out.size(2), K = a.size(2);
  float* cp = static_cast<float*>(out.raw_data());
  if (out.numel() == 0) return;
  if (K == 0) {
    std::memset(cp, 0, size_t(out.numel()) * sizeof(float));
    apply_epilogue(out, epilogue);
    return;
  }
  detail::check_epilogue("matmul", out, epilogue);
  const Shape& as = a.strides();
  const Shape& bs = b.strides();
  const float* ap = static_cast<const float*>(a.raw_data());
  const float* bp = static_cast<const float*>(b.raw_data());
  batched_gemm(
      Bt, M, N, K, [&](int64_t i) { return Operand{ap + i * as[0], as[1], as[2]}; }, as[0] == 0 || Bt == 1,
      [&](int64_t i) { return BSource::strided(Operand{bp + i * bs[0], bs[1], bs[2]}); }, cp, epilogue);
}

/// The implicit-GEMM convolution: out[i] = epilogue(w @ im2col(x[i])) for x [Bt, C, H, W]
/// contiguous f32, w [O, C*kh*kw] f32 (any strides), out [Bt, O, OH*OW] contiguous f32
/// (window g; see backend::Backend::conv2d; a bias is one per output channel), as one
/// product w @ [im2col(x[0]) ... im2col(x[Bt-1])] whose columns are packed straight from the
/// images: the weight is packed once and a tile may span two images.
inline void conv2d(const Tensor& x, const Tensor& w, const Window2d& g, const Tensor& out,
                   const MatmulEpilogue& epilogue = {}) {
  const int64_t Bt = x.size(0), C = x.size(1), H = x.size(2), W = x.size(3);
  const int64_t O = w.size(0), K = w.size(1), P = out.size(2);
  if (out.numel() == 0) return;
  GA_CHECK(K == C * g.kh * g.kw && K >= 1, ShapeError, "conv2d: weight ", shape_str(w.shape()), " does not hold ", C,
           " channels of a ", g.kh, "x", g.kw, " window");
  GA_CHECK(!epilogue.bias.defined() || epilogue.bias_per_row, ShapeError,
           "conv2d: the epilogue bias must be one per output channel (bias_per_row)");
  detail::check_epilogue("conv2d", out, epilogue);
  const float* bias = epilogue.bias.defined() ? static_cast<const float*>(epilogue.bias.raw_data()) : nullptr;
  const float* residual =
      epilogue.residual.defined() ? static_cast<const float*>(epilogue.residual.raw_data()) : nullptr;
  const Epilogue e{bias, nullptr, residual, P, epilogue.activation};
  int threads = get_num_threads();
#ifdef _OPENMP
  if (omp_in_parallel()) threads = 1;
#endif
  const int64_t N = Bt * P;
  // Small products gain nothing from a second thread.
  if (2.0 * double(O) * double(N) * double(K) < 2e6) threads = 1;
  auto apack = HostBlockCache::instance().allocate(packed_a_floats(O, K) * sizeof(float));
  const PackedA pa{static_cast<float*>(apack->data()), O, K, (O + kMR - 1) / kMR * kMR};
  const Operand A{static_cast<const float*>(w.raw_data()), w.strides()[0], w.strides()[1]};
  gemm(A, BSource::conv(static_cast<const float*>(x.raw_data()), C, H, W, g),
       CLayout{static_cast<float*>(out.raw_data()), P, P, O * P}, O, N, pa, true, threads, e);
}

}  // namespace ga::backend::cpu::f32_gemm
#endif  // GA_EMIT_CPU_KERNELS && GA_X86_F32_KERNELS
