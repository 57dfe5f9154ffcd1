// The AVX-512 leaves of the packed f32 product (gemm_f32.hpp): a 12 x 32 register tile of
// zmm FMAs, the packing into its panels, and the 16 x 16 transposes both use. Included by
// gemm_f32.hpp, after the types the leaves share.
#pragma once

namespace ga::backend::cpu::f32_gemm::avx512 {

GA_SIMD_WARNINGS_PUSH  // see cpu_features.hpp

// Register block: kMR rows of C (A values broadcast) x kNR columns (two zmm of B), 24
// accumulators, 2 B loads and 12 broadcasts per 24 FMAs. Cache blocks: a kMR x kKC panel of A
// (18 KiB) stays in L1 while a kKC x kNC block of B (about 1 MiB, private to the thread)
// streams from L2 under it.
inline constexpr int64_t kMR = 12, kNR = 32, kKC = 384, kNC = 640;

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

/// dst[0, kNR) = 0.
GA_TARGET_AVX512F inline void zero_row(float* dst) {
  _mm512_storeu_ps(dst, _mm512_setzero_ps());
  _mm512_storeu_ps(dst + 16, _mm512_setzero_ps());
}

/// dst[0, kNR) = src[0, kNR).
GA_TARGET_AVX512F inline void copy_row(float* dst, const float* src) {
  _mm512_storeu_ps(dst, _mm512_loadu_ps(src));
  _mm512_storeu_ps(dst + 16, _mm512_loadu_ps(src + 16));
}

/// A packed B row as two halves of kNR / 2 lanes each (RowHalf), built by masked loads:
/// lanes [lo, hi) of a half (a LaneMask), the rest zero.
using RowHalf = __m512;
using LaneMask = __mmask16;
inline constexpr int64_t kHalfLanes = 16;

/// Lanes [lo, hi) of a half, 0 <= lo <= hi <= kHalfLanes.
inline LaneMask lane_range(int64_t lo, int64_t hi) { return LaneMask(first_lanes(hi) & ~first_lanes(lo)); }

GA_TARGET_AVX512F inline RowHalf zero_half() { return _mm512_setzero_ps(); }

/// h with the lanes in m read from p[lane] (only those are read); h's lanes in m must be zero.
GA_TARGET_AVX512F inline RowHalf merge_lanes(RowHalf h, LaneMask m, const float* p) {
  return _mm512_mask_loadu_ps(h, m, p);
}

/// dst[0, kNR) = the halves lo, hi.
GA_TARGET_AVX512F inline void store_halves(float* dst, RowHalf lo, RowHalf hi) {
  _mm512_storeu_ps(dst, lo);
  _mm512_storeu_ps(dst + 16, hi);
}

#define GA_F32_TARGET GA_TARGET_AVX512F
#include "gemm_f32_conv_pack.inl"
#undef GA_F32_TARGET

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

GA_SIMD_WARNINGS_POP

}  // namespace ga::backend::cpu::f32_gemm::avx512

namespace ga::backend::cpu::f32_gemm {

/// The AVX-512 leaves as the blocked product (gemm_f32.hpp) calls them.
struct Avx512Leaves {
  static constexpr int64_t kMR = avx512::kMR, kNR = avx512::kNR, kKC = avx512::kKC, kNC = avx512::kNC;
  static void pack_panels(const Operand& X, int64_t rows, int64_t kc, int64_t width, float* out) {
    avx512::pack_panels(X, rows, kc, width, out);
  }
  static void pack_conv_panels(const BSource& src, int64_t k0, int64_t kc, int64_t n0, int64_t nc, float* out) {
    avx512::pack_conv_panels(src, k0, kc, n0, nc, out);
  }
  /// The micro-kernel for a tile of `rows` <= kMR rows and `cols` <= kNR columns.
  static MicroKernel kernel(int64_t rows, int64_t cols) {
    return cols > 16 ? avx512::micro_kernel_for_rows<2>(rows) : avx512::micro_kernel_for_rows<1>(rows);
  }
};

}  // namespace ga::backend::cpu::f32_gemm
