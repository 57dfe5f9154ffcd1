// The fused attention's two products in f32 on AVX-512, one (batch, head) at a time: the
// scores q k^T and the output p v. Eigen's GEMM packs both operands of every product and
// blocks for large ones; at a head's sizes (ViT-B/32: L = S = 50, E = 64) that overhead is
// a large part of the product (the fused attention took 1.1-1.3 ms of a batch-1 forward,
// against the 0.8 ms its products take at the GEMM ceiling's speed; this block takes
// 5-35% off it, bench/RESULTS.md). Here C = A B with B's rows read
// where they lie: a block of 4 rows x 64 columns of C in 16 registers; per k, up to 4
// loads of B's row, 4 broadcasts of A's values, 16 FMAs. For the scores, B is k^T, made
// once per head by 16 x 16 register transposes.
#pragma once
#include "gemm_f32.hpp"

#if GA_EMIT_CPU_KERNELS && GA_X86_F32_KERNELS
#include <array>

namespace ga::backend::cpu::f32_gemm {

GA_SIMD_WARNINGS_PUSH  // see cpu_features.hpp

/// c[r * ldc + j] = sum_{k < kd} a[r * lda + k] * b[k * ldb + j] for r < MR and j in the NV
/// vectors of 16 columns, the last one cut to the lanes of `tail` (not read or written past
/// them). kd may be 0 (then C's block is 0).
template <int MR, int NV>
GA_TARGET_AVX512F inline void rows_times_rows_tile(int64_t kd, const float* a, int64_t lda, const float* b,
                                                   int64_t ldb, __mmask16 tail, float* c, int64_t ldc) {
  __m512 acc[MR * NV];
#pragma GCC unroll 16
  for (int i = 0; i < MR * NV; ++i) acc[i] = _mm512_setzero_ps();
  for (int64_t k = 0; k < kd; ++k) {
    const float* bk = b + k * ldb;
    __m512 bv[NV];
#pragma GCC unroll 4
    for (int v = 0; v < NV; ++v)
      bv[v] = v + 1 < NV ? _mm512_loadu_ps(bk + 16 * v) : _mm512_maskz_loadu_ps(tail, bk + 16 * v);
#pragma GCC unroll 4
    for (int r = 0; r < MR; ++r) {
      const __m512 av = _mm512_set1_ps(a[r * lda + k]);
#pragma GCC unroll 4
      for (int v = 0; v < NV; ++v) acc[r * NV + v] = _mm512_fmadd_ps(av, bv[v], acc[r * NV + v]);
    }
  }
#pragma GCC unroll 4
  for (int r = 0; r < MR; ++r)
#pragma GCC unroll 4
    for (int v = 0; v < NV; ++v) {
      float* out = c + r * ldc + 16 * v;
      if (v + 1 < NV) _mm512_storeu_ps(out, acc[r * NV + v]);
      else _mm512_mask_storeu_ps(out, tail, acc[r * NV + v]);
    }
}

using RowsTimesRowsTile = void (*)(int64_t, const float*, int64_t, const float*, int64_t, __mmask16, float*, int64_t);

/// The tile for rows x vectors (1 <= rows <= 4, 1 <= vectors <= 4).
inline RowsTimesRowsTile rows_times_rows_tile_for(int rows, int vectors) {
  static const auto table = [] {
    std::array<std::array<RowsTimesRowsTile, 4>, 4> t{};
    auto fill_row = [&](auto r_tag) {
      constexpr int R = decltype(r_tag)::value;
      t[R - 1] = {rows_times_rows_tile<R, 1>, rows_times_rows_tile<R, 2>, rows_times_rows_tile<R, 3>,
                  rows_times_rows_tile<R, 4>};
    };
    fill_row(std::integral_constant<int, 1>{});
    fill_row(std::integral_constant<int, 2>{});
    fill_row(std::integral_constant<int, 3>{});
    fill_row(std::integral_constant<int, 4>{});
    return t;
  }();
  return table[size_t(rows - 1)][size_t(vectors - 1)];
}

/// C [M, N] = A [M, K] @ B [K, N] on this thread, each matrix's rows contiguous and lda, ldb,
/// ldc floats apart; K may be 0. Requires an AVX-512F CPU (f32_avx512_supported()).
inline void rows_times_rows(int64_t M, int64_t N, int64_t K, const float* a, int64_t lda, const float* b, int64_t ldb,
                            float* c, int64_t ldc) {
  for (int64_t n0 = 0; n0 < N; n0 += 64) {
    const int64_t cols = std::min<int64_t>(64, N - n0);
    const int vectors = int((cols + 15) / 16);
    const __mmask16 tail = avx512::first_lanes(cols - 16 * (vectors - 1));
    for (int64_t m = 0; m < M; m += 4)
      rows_times_rows_tile_for(int(std::min<int64_t>(4, M - m)), vectors)(K, a + m * lda, lda, b + n0, ldb, tail,
                                                                         c + m * ldc + n0, ldc);
  }
}

GA_SIMD_WARNINGS_POP

}  // namespace ga::backend::cpu::f32_gemm
#endif  // GA_EMIT_CPU_KERNELS && GA_X86_F32_KERNELS
