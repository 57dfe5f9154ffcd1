// The AVX2 + FMA leaves of the packed f32 product (gemm_f32.hpp), for x86-64 CPUs without
// AVX-512 (AMD before Zen 4, most Intel client CPUs): a 6 x 16 register tile of ymm FMAs,
// the packing into its panels, and the 8 x 8 transposes the packing uses. The blocked
// product around them is the one the AVX-512 leaves use. Included by gemm_f32.hpp, after
// the types the leaves share.
//
// AVX2 has no mask registers: a partial vector is read with VMASKMOVPS (masked-off lanes
// read nothing, so a row's end is never overrun) and written the same way; AMD CPUs run a
// masked store slowly, so whole vectors are stored plainly and only a tile's last, partial
// vector takes the masked store.
#pragma once

namespace ga::backend::cpu::f32_gemm::avx2 {

GA_SIMD_WARNINGS_PUSH  // see cpu_features.hpp

// Register block: kMR rows of C (A values broadcast) x kNR columns (two ymm of B): 12
// accumulators, 2 B registers and a broadcast fill 15 of the 16 ymm registers; 2 B loads and
// 6 broadcasts per 12 FMAs. Cache blocks: a kMR x kKC panel of A (6 KiB) stays in L1 while a
// kKC x kNC block of B (256 KiB, private to the thread) streams from L2 under it (Zen 2 and 3
// have 512 KiB of L2 per core, most Intel client cores 256 KiB to 2 MiB).
inline constexpr int64_t kMR = 6, kNR = 16, kKC = 256, kNC = 256;

/// A VMASKMOVPS mask of the first n lanes (n clamped to [0, 8]).
GA_TARGET_AVX2 inline __m256i first_lanes(int64_t n) {
  const int v = int(std::max<int64_t>(0, std::min<int64_t>(8, n)));
  return _mm256_cmpgt_epi32(_mm256_set1_epi32(v), _mm256_setr_epi32(0, 1, 2, 3, 4, 5, 6, 7));
}

/// The first n lanes at p (n >= 8: all of them), the rest zero; reads only those lanes.
GA_TARGET_AVX2 inline __m256 load_first(const float* p, int64_t n) {
  return n >= 8 ? _mm256_loadu_ps(p) : _mm256_maskload_ps(p, first_lanes(n));
}

/// Writes the first n lanes of v to p (n >= 8: all of them), nothing past them.
GA_TARGET_AVX2 inline void store_first(float* p, int64_t n, __m256 v) {
  if (n >= 8) {
    _mm256_storeu_ps(p, v);
  } else if (n == 6) {  // an A panel's row: two plain stores
    _mm_storeu_ps(p, _mm256_castps256_ps128(v));
    _mm_storel_pi(reinterpret_cast<__m64*>(p + 4), _mm256_extractf128_ps(v, 1));
  } else if (n > 0) {
    _mm256_maskstore_ps(p, first_lanes(n), v);
  }
}

/// Transposes the 8 x 8 block r[0..7] (rows) in registers: afterwards r[j] holds column j.
GA_TARGET_AVX2 inline void transpose8(__m256* r) {
  __m256 t[8], s[8];
  for (int i = 0; i < 4; ++i) {
    t[2 * i] = _mm256_unpacklo_ps(r[2 * i], r[2 * i + 1]);      // a0 b0 a1 b1 | a4 b4 a5 b5
    t[2 * i + 1] = _mm256_unpackhi_ps(r[2 * i], r[2 * i + 1]);  // a2 b2 a3 b3 | a6 b6 a7 b7
  }
  for (int i = 0; i < 2; ++i) {
    s[4 * i] = _mm256_shuffle_ps(t[4 * i], t[4 * i + 2], 0x44);      // a0 b0 c0 d0 | a4 b4 c4 d4
    s[4 * i + 1] = _mm256_shuffle_ps(t[4 * i], t[4 * i + 2], 0xee);  // a1 b1 c1 d1 | a5 ...
    s[4 * i + 2] = _mm256_shuffle_ps(t[4 * i + 1], t[4 * i + 3], 0x44);
    s[4 * i + 3] = _mm256_shuffle_ps(t[4 * i + 1], t[4 * i + 3], 0xee);
  }
  for (int j = 0; j < 4; ++j) {
    r[j] = _mm256_permute2f128_ps(s[j], s[4 + j], 0x20);      // the low halves: column j
    r[4 + j] = _mm256_permute2f128_ps(s[j], s[4 + j], 0x31);  // the high halves: column 4 + j
  }
}

/// Packs X [rows, kc] (X(i, k) at p[i * rs + k * cs]) as `width`-wide k-major panels: panel q
/// holds rows [q * width, q * width + width) at out[q * width * kc + k * width + i], rows past
/// `rows` zero. This is A's layout (width kMR) and B's (width kNR, with X = B^T).
GA_TARGET_AVX2 inline void pack_panels(const Operand& X, int64_t rows, int64_t kc, int64_t width, float* out) {
  const int64_t panels = (rows + width - 1) / width;
  if (X.rs == 1) {
    // Each k is a contiguous run of rows: copy it into every panel, zero-padding the last.
    // k outermost, so that the source is read in order (it may be far larger than a cache).
    for (int64_t k = 0; k < kc; ++k) {
      const float* s = X.p + k * X.cs;
      for (int64_t q = 0; q < panels; ++q) {
        float* o = out + q * width * kc + k * width;
        const int64_t rv = std::min(width, rows - q * width);
        for (int64_t i = 0; i < width; i += 8) store_first(o + i, width - i, load_first(s + q * width + i, rv - i));
      }
    }
    return;
  }
  for (int64_t q = 0; q < panels; ++q) {
    float* o = out + q * width * kc;
    const int64_t r0 = q * width, rv = std::min(width, rows - r0);
    if (X.cs == 1) {
      // Rows contiguous along k: 8 x 8 transposes.
      for (int64_t k0 = 0; k0 < kc; k0 += 8) {
        const int64_t kv = std::min<int64_t>(8, kc - k0);
        for (int64_t i0 = 0; i0 < width; i0 += 8) {
          __m256 r[8];
          for (int64_t i = 0; i < 8; ++i)
            r[i] = i0 + i < rv ? load_first(X.p + (r0 + i0 + i) * X.rs + k0, kv) : _mm256_setzero_ps();
          transpose8(r);
          for (int64_t k = 0; k < kv; ++k) store_first(o + (k0 + k) * width + i0, width - i0, r[k]);
        }
      }
    } else {
      for (int64_t k = 0; k < kc; ++k)
        for (int64_t i = 0; i < width; ++i) o[k * width + i] = i < rv ? X.p[(r0 + i) * X.rs + k * X.cs] : 0.0f;
    }
  }
}

/// Copies n values src[0], src[step], ... to dst[0 .. n).
GA_TARGET_AVX2 inline void copy_run(const float* src, int64_t step, int64_t n, float* dst) {
  if (step == 1) {
    for (int64_t i = 0; i < n; i += 8) store_first(dst + i, n - i, load_first(src + i, n - i));
    return;
  }
  for (int64_t i = 0; i < n; ++i) dst[i] = src[i * step];
}

/// dst[0, kNR) = 0.
GA_TARGET_AVX2 inline void zero_row(float* dst) {
  _mm256_storeu_ps(dst, _mm256_setzero_ps());
  _mm256_storeu_ps(dst + 8, _mm256_setzero_ps());
}

/// dst[0, kNR) = src[0, kNR).
GA_TARGET_AVX2 inline void copy_row(float* dst, const float* src) {
  _mm256_storeu_ps(dst, _mm256_loadu_ps(src));
  _mm256_storeu_ps(dst + 8, _mm256_loadu_ps(src + 8));
}

/// A packed B row as two halves of kNR / 2 lanes each (RowHalf), built by masked loads:
/// lanes [lo, hi) of a half (a LaneMask), the rest zero.
using RowHalf = __m256;
using LaneMask = __m256i;
inline constexpr int64_t kHalfLanes = 8;

/// Lanes [lo, hi) of a half, 0 <= lo <= hi <= kHalfLanes.
GA_TARGET_AVX2 inline LaneMask lane_range(int64_t lo, int64_t hi) {
  return _mm256_andnot_si256(first_lanes(lo), first_lanes(hi));
}

GA_TARGET_AVX2 inline RowHalf zero_half() { return _mm256_setzero_ps(); }

/// h with the lanes in m read from p[lane] (only those are read); h's lanes in m must be zero.
GA_TARGET_AVX2 inline RowHalf merge_lanes(RowHalf h, LaneMask m, const float* p) {
  return _mm256_or_ps(h, _mm256_maskload_ps(p, m));
}

/// dst[0, kNR) = the halves lo, hi.
GA_TARGET_AVX2 inline void store_halves(float* dst, RowHalf lo, RowHalf hi) {
  _mm256_storeu_ps(dst, lo);
  _mm256_storeu_ps(dst + 8, hi);
}

#define GA_F32_TARGET GA_TARGET_AVX2
#include "gemm_f32_conv_pack.inl"
#undef GA_F32_TARGET

/// C[0..MR) x [0..cols) (row stride ldc) = (accumulate ? C : 0) + a @ b, where a is a packed
/// A panel (kMR values per k, the first MR used) and b holds 8 NV readable values per k, ldb
/// apart (a packed B panel, ldb = kNR). 8 (NV - 1) < cols <= 8 NV; columns past cols are
/// computed and not stored. With `ep`, each stored value is then (value + bias) + residual,
/// through ReLU when ep->relu: the same f32 operations a separate pass would do.
template <int MR, int NV>
GA_TARGET_AVX2 inline void micro_kernel(int64_t kc, const float* a, const float* b, int64_t ldb, float* c,
                                        int64_t ldc, int64_t cols, bool accumulate, const TileEpilogue* ep) {
  __m256 acc[MR][NV];
#pragma GCC unroll 6
  for (int r = 0; r < MR; ++r)
#pragma GCC unroll 2
    for (int j = 0; j < NV; ++j) acc[r][j] = _mm256_setzero_ps();
  // C rows are needed at the end: start bringing them in now.
#pragma GCC unroll 6
  for (int r = 0; r < MR; ++r) {
    _mm_prefetch(reinterpret_cast<const char*>(c + r * ldc), _MM_HINT_T0);
    _mm_prefetch(reinterpret_cast<const char*>(c + r * ldc + 8 * NV - 1), _MM_HINT_T0);
  }
#pragma GCC unroll 4
  for (int64_t k = 0; k < kc; ++k) {
    __m256 bv[NV];
#pragma GCC unroll 2
    for (int j = 0; j < NV; ++j) bv[j] = _mm256_loadu_ps(b + k * ldb + 8 * j);
#pragma GCC unroll 6
    for (int r = 0; r < MR; ++r) {
      const __m256 av = _mm256_broadcast_ss(a + k * kMR + r);
#pragma GCC unroll 2
      for (int j = 0; j < NV; ++j) acc[r][j] = _mm256_fmadd_ps(av, bv[j], acc[r][j]);
    }
  }
  const int64_t last = cols - 8 * (NV - 1);  // valid lanes of the last vector, in (0, 8]
#pragma GCC unroll 6
  for (int r = 0; r < MR; ++r) {
    float* cr = c + r * ldc;
#pragma GCC unroll 2
    for (int j = 0; j < NV; ++j) {
      const int64_t n = j + 1 < NV ? 8 : last;
      __m256 v = acc[r][j];
      if (accumulate) v = _mm256_add_ps(v, load_first(cr + 8 * j, n));
      if (ep) {
        if (ep->row_bias) v = _mm256_add_ps(v, _mm256_set1_ps(ep->row_bias[r]));
        if (ep->col_bias) v = _mm256_add_ps(v, load_first(ep->col_bias + 8 * j, n));
        if (ep->residual) v = _mm256_add_ps(v, load_first(ep->residual + r * ep->ldr + 8 * j, n));
        // MAXPS returns its second operand when either is NaN: v, so NaN stays NaN (as the
        // unfused ReLU, Eigen's max(x, 0), leaves it).
        if (ep->relu) v = _mm256_max_ps(_mm256_setzero_ps(), v);
      }
      store_first(cr + 8 * j, n, v);
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
    default: return micro_kernel<6, NV>;
  }
}

GA_SIMD_WARNINGS_POP

}  // namespace ga::backend::cpu::f32_gemm::avx2

namespace ga::backend::cpu::f32_gemm {

/// The AVX2 leaves as the blocked product (gemm_f32.hpp) calls them.
struct Avx2Leaves {
  static constexpr int64_t kMR = avx2::kMR, kNR = avx2::kNR, kKC = avx2::kKC, kNC = avx2::kNC;
  static void pack_panels(const Operand& X, int64_t rows, int64_t kc, int64_t width, float* out) {
    avx2::pack_panels(X, rows, kc, width, out);
  }
  static void pack_conv_panels(const BSource& src, int64_t k0, int64_t kc, int64_t n0, int64_t nc, float* out) {
    avx2::pack_conv_panels(src, k0, kc, n0, nc, out);
  }
  /// The micro-kernel for a tile of `rows` <= kMR rows and `cols` <= kNR columns.
  static MicroKernel kernel(int64_t rows, int64_t cols) {
    return cols > 8 ? avx2::micro_kernel_for_rows<2>(rows) : avx2::micro_kernel_for_rows<1>(rows);
  }
};

}  // namespace ga::backend::cpu::f32_gemm
