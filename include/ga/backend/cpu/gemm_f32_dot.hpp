// The CPU backend's f32 matrix product in dot-product form, for products with few rows whose
// operands both run along k: x [M, K] @ w^T with w [N, K] row-major, which is a linear
// layer on one image or one prompt. Each result is a dot product of a row of x with a row
// of w, accumulated 16 k at a time in a zmm register and summed across its lanes at the end.
//
// Why a second form: the packed kernel (gemm_f32.hpp) wants B's rows as vectors, so it
// transposes w into panels before multiplying, and then uses each packed value for only M
// rows. At M = 50 (ViT-B/32 on one image) that packing costs about a fifth of the product,
// and it reads the weight from memory in a burst with no arithmetic under it. Here w is read
// where it lies, a few rows at a time, each row a contiguous run that the hardware
// prefetcher follows; and while one tile of rows is multiplied, the next one is prefetched
// into L2, so the weight streams in under the arithmetic. On the development machine
// (bench/RESULTS.md) this is faster than the packed kernel up to about 64 rows when the
// weight comes from memory, and it parallelises a vector-matrix product (M = 1), which the
// packed path leaves to Eigen on one thread.
#pragma once
#include "gemm_f32.hpp"

#if GA_EMIT_CPU_KERNELS && GA_X86_F32_KERNELS
#include <algorithm>
#include <array>
#include <atomic>
#include <cstring>
#include <tuple>
#include <utility>

#include "epilogue.hpp"
#include "host_cache.hpp"
#include "parallel.hpp"

namespace ga::backend::cpu::f32_gemm {

GA_SIMD_WARNINGS_PUSH  // see cpu_features.hpp

// Register tile: kDotMR rows of x by kDotNR rows of w, 24 accumulators, 10 loads per 24 FMAs.
// A w tile is at most kDotKC deep (24 KiB), so it stays in L1 while every row of x passes
// over it; a deeper product is cut into k chunks whose sums are added into C in order.
// Tiles are taken in groups of up to kDotGroup (48 columns); a tile adds the epilogue's
// biases and residual as it stores its last k chunk, and applies the activation there too
// (store_activated) where C's rows are contiguous; else the activation follows the group's
// last tile, while its results are in cache.
inline constexpr int64_t kDotMR = 4, kDotNR = 6, kDotKC = 1024, kDotGroup = 8;

/// Cache lines for a dot tile to prefetch: lines [first, first + count) of rows `ld` bytes
/// apart, each `per_row` lines (64 bytes apart) from its start; row 0 starts at `base`.
/// (Described rather than listed: a tile's list of up to 384 addresses took as long to
/// write as a tenth of its arithmetic.)
struct PrefetchLines {
  const char* base = nullptr;
  int64_t ld = 0, per_row = 1, first = 0, count = 0;
};

/// Whether rows ld floats apart all start in the same L1 sets: ld floats a multiple of 4 KiB.
/// A dot tile's 4 rows of x and 6 rows of w then need more lines there than the sets have
/// ways, and the tile reloads from L2 (K = 3072: ViT's c_proj and patch embedding).
inline bool rows_share_l1_sets(int64_t ld) { return (ld * int64_t(sizeof(float))) % 4096 == 0; }

/// The row stride to lay out x [M, K] for dot_gemm with: K, or where that would put the rows
/// in the same L1 sets, K + 16 (rows a cache line further apart each).
inline int64_t dot_row_stride(int64_t K) { return rows_share_l1_sets(K) ? K + 16 : K; }

/// The lane sums of v[0 .. 16), in order, in one vector, where v[i] for i >= N counts as zero
/// (so a tile's accumulators need no zero vectors): a tree of in-register transposes and
/// adds, 45 operations where summing each vector on its own takes 16 x 7. Each sum is
/// ((L0 + L2) + (L1 + L3)) over the vector's 128-bit lanes, a lane being ((e0 + e2) + (e1 + e3)).
/// Inlined, with its loops unrolled, so that v stays in registers (an out-of-line call made
/// GCC spill the tile's accumulators to the stack and zero them with memset).
template <int N>
GA_TARGET_AVX512F inline __attribute__((always_inline)) __m512 lane_sums16(const __m512* v) {
  static_assert(N >= 1 && N <= 16, "lane_sums16 sums 1 to 16 vectors");
  const __m512 zero = _mm512_setzero_ps();
  __m512 s[8], t[4], u[2];
  // In each 128-bit lane, (x, y) -> [x0 + x2, y0 + y2, x1 + x3, y1 + y3].
#pragma GCC unroll 8
  for (int i = 0; i < 8; ++i) {
    const __m512 x = 2 * i < N ? v[2 * i] : zero, y = 2 * i + 1 < N ? v[2 * i + 1] : zero;
    s[i] = _mm512_add_ps(_mm512_unpacklo_ps(x, y), _mm512_unpackhi_ps(x, y));
  }
  // In each 128-bit lane, the lane's sums of v[4i .. 4i + 3].
#pragma GCC unroll 4
  for (int i = 0; i < 4; ++i)
    t[i] = _mm512_add_ps(_mm512_shuffle_ps(s[2 * i], s[2 * i + 1], 0x44), _mm512_shuffle_ps(s[2 * i], s[2 * i + 1], 0xee));
  // 128-bit lanes: t[2i] over lanes 0 + 2 and 1 + 3, then t[2i + 1] over the same.
#pragma GCC unroll 2
  for (int i = 0; i < 2; ++i)
    u[i] = _mm512_add_ps(_mm512_shuffle_f32x4(t[2 * i], t[2 * i + 1], 0x44),
                         _mm512_shuffle_f32x4(t[2 * i], t[2 * i + 1], 0xee));
  return _mm512_add_ps(_mm512_shuffle_f32x4(u[0], u[1], 0x88), _mm512_shuffle_f32x4(u[0], u[1], 0xdd));
}

/// What a tile adds to its results as it stores its last k chunk, in this order (the order
/// of the unfused ops, so that the bits are theirs): a bias per row, a bias per column, and
/// the residual, laid out as C. Each pointer is at the tile's first row / column / result,
/// or null. Then, where C's rows are contiguous, the activation (None where they are not).
struct DotTileAdds {
  const float* row_bias;
  const float* col_bias;
  const float* residual;
  Activation activation;
};

/// The lanes [from, to) of a 16-lane mask, clamped to [0, 16).
constexpr __mmask16 lane_range(int from, int to) {
  from = from < 0 ? 0 : from > 16 ? 16 : from;
  to = to < from ? from : to > 16 ? 16 : to;
  return __mmask16(((1u << to) - 1) & ~((1u << from) - 1));
}

/// For tile MR x NR: the row (rows) or the column of the result in each of the 32 lanes of
/// (lo, hi), lane r * NR + j holding (r, j); lanes past the tile repeat the last row.
template <int MR, int NR>
constexpr std::array<int32_t, 32> tile_lane_index(bool rows) {
  std::array<int32_t, 32> a{};
  for (int i = 0; i < 32; ++i) a[size_t(i)] = rows ? std::min(i / NR, MR - 1) : i % NR;
  return a;
}

/// Row r's values at p + r * stride, for r < MR, in the lanes of tile MR x NR's results
/// (vlo: lanes 0-15, vhi: 16-31; the other lanes 0). The loads are masked to those lanes.
template <int MR, int NR>
GA_TARGET_AVX512F inline __attribute__((always_inline)) void rows_in_lanes(const float* p, int64_t stride, __m512& vlo,
                                                                           __m512& vhi) {
  vlo = _mm512_setzero_ps();
  vhi = _mm512_setzero_ps();
#pragma GCC unroll 4
  for (int r = 0; r < MR; ++r) {
    const float* row = p + r * stride;
    if (lane_range(r * NR, r * NR + NR)) vlo = _mm512_mask_loadu_ps(vlo, lane_range(r * NR, r * NR + NR), row - r * NR);
    if (lane_range(r * NR - 16, r * NR + NR - 16))
      vhi = _mm512_mask_loadu_ps(vhi, lane_range(r * NR - 16, r * NR + NR - 16), row + 16 - r * NR);
  }
}

/// (vlo, vhi) = values[index[lane]] for the 32 lanes.
GA_TARGET_AVX512F inline __attribute__((always_inline)) void spread(__m512 values, const std::array<int32_t, 32>& index,
                                                                    __m512& vlo, __m512& vhi) {
  vlo = _mm512_permutexvar_ps(_mm512_loadu_si512(index.data()), values);
  vhi = _mm512_permutexvar_ps(_mm512_loadu_si512(index.data() + 16), values);
}

/// dot_tile's last store where it applies the activation (C's rows contiguous). The MR x NR
/// results sit in lane order: result (r, j) in lane r * NR + j of (lo, hi), lanes 16 and up in
/// hi. They get their adds and the activation in that order, so that a tile's 24 results
/// take two vectors of the activation, not one a row, and go to C a row at a time. Row r's
/// lanes load from and store to C at an offset of -r * NR floats (its other lanes masked off;
/// the pointer stays within C, whose rows are at least NR long). Applied in registers, the
/// activation saves a pass that read C back (the store-to-load round trip made a fused
/// QuickGELU cost ~15% of ViT-B/32's c_fc product; bench/RESULTS.md, eighteenth session).
template <int MR, int NR>
GA_TARGET_AVX512F inline __attribute__((always_inline)) void store_activated(__m512 lo, __m512 hi, float* c,
                                                                             int64_t rs, bool accumulate,
                                                                             const DotTileAdds& adds) {
  static_assert(MR * NR <= 32, "two vectors hold the tile");
  __m512 vlo, vhi;
  if (accumulate) {  // C + sums, as dot_tile's row stores add them
    rows_in_lanes<MR, NR>(c, rs, vlo, vhi);
    lo = _mm512_add_ps(vlo, lo);
    hi = _mm512_add_ps(vhi, hi);
  }
  if (adds.row_bias) {
    static constexpr std::array<int32_t, 32> kRow = tile_lane_index<MR, NR>(true);
    spread(_mm512_maskz_loadu_ps(lane_range(0, MR), adds.row_bias), kRow, vlo, vhi);
    lo = _mm512_add_ps(lo, vlo);
    hi = _mm512_add_ps(hi, vhi);
  }
  if (adds.col_bias) {
    static constexpr std::array<int32_t, 32> kCol = tile_lane_index<MR, NR>(false);
    spread(_mm512_maskz_loadu_ps(lane_range(0, NR), adds.col_bias), kCol, vlo, vhi);
    lo = _mm512_add_ps(lo, vlo);
    hi = _mm512_add_ps(hi, vhi);
  }
  if (adds.residual) {
    rows_in_lanes<MR, NR>(adds.residual, rs, vlo, vhi);
    lo = _mm512_add_ps(lo, vlo);
    hi = _mm512_add_ps(hi, vhi);
  }
  if (adds.activation == Activation::Relu) {  // as Eigen's max(x, 0): x where x is nan or -0
    lo = _mm512_max_ps(_mm512_setzero_ps(), lo);
    hi = _mm512_max_ps(_mm512_setzero_ps(), hi);
  } else if (adds.activation == Activation::QuickGelu) {
    lo = activation_avx512::quick_gelu(lo);
    if constexpr (MR * NR > 16) hi = activation_avx512::quick_gelu(hi);
  } else if (adds.activation == Activation::Gelu) {
    lo = activation_avx512::gelu(lo);
    if constexpr (MR * NR > 16) hi = activation_avx512::gelu(hi);
  }
#pragma GCC unroll 4
  for (int r = 0; r < MR; ++r) {
    float* row = c + r * rs;
    if (lane_range(r * NR, r * NR + NR)) _mm512_mask_storeu_ps(row - r * NR, lane_range(r * NR, r * NR + NR), lo);
    if (lane_range(r * NR - 16, r * NR + NR - 16))
      _mm512_mask_storeu_ps(row + 16 - r * NR, lane_range(r * NR - 16, r * NR + NR - 16), hi);
  }
}

/// C(r, j) = (accumulate ? C(r, j) : 0) + sum_k a[r, k] w[j, k] (+ adds, where given) for
/// r < MR, j < NR, over kc values of k (rows lda and ldw floats apart, each contiguous along
/// k), where C(r, j) is c[r * rs + j * cs]. While it runs it prefetches the cache lines
/// pf names into L2, one per 16 values of k (pf.count <= that).
template <int MR, int NR>
GA_TARGET_AVX512F inline void dot_tile(int64_t kc, const float* a, int64_t lda, const float* w, int64_t ldw,
                                       float* c, int64_t rs, int64_t cs, bool accumulate, const DotTileAdds* adds,
                                       const PrefetchLines& pf) {
  constexpr int kAcc = MR * NR, kGroups = (kAcc + 15) / 16;
  static_assert(kGroups <= 2, "dot_tile's sums are written for at most 32 accumulators");
  // acc[r * NR + j]. The loops over it are unrolled so that it lives in registers.
  __m512 acc[kAcc];
#pragma GCC unroll 32
  for (int i = 0; i < kAcc; ++i) acc[i] = _mm512_setzero_ps();
  // The next line to prefetch: line `line` of the row at pf_row.
  const char* pf_row = pf.base + (pf.count > 0 ? pf.first / pf.per_row * pf.ld : 0);
  int64_t line = pf.count > 0 ? pf.first % pf.per_row : 0;
  int64_t k = 0;
  for (int64_t s = 0; k + 16 <= kc; k += 16, ++s) {
    if (s < pf.count) {
      _mm_prefetch(pf_row + line * 64, _MM_HINT_T1);
      if (++line == pf.per_row) {
        line = 0;
        pf_row += pf.ld;
      }
    }
    __m512 wv[NR];
#pragma GCC unroll 32
    for (int j = 0; j < NR; ++j) {
      wv[j] = _mm512_loadu_ps(w + j * ldw + k);
      // Kept in a register: GCC would otherwise fold the load into each row's FMA, which
      // makes 28 loads of 24 FMAs, and on a CPU that loads one zmm a cycle the loads bound
      // the loop (about 0.75 of the FMA rate; bench/RESULTS.md, thirteenth session).
      asm("" : "+v"(wv[j]));
    }
#pragma GCC unroll 32
    for (int r = 0; r < MR; ++r) {
      const __m512 av = _mm512_loadu_ps(a + r * lda + k);
#pragma GCC unroll 32
      for (int j = 0; j < NR; ++j) acc[r * NR + j] = _mm512_fmadd_ps(av, wv[j], acc[r * NR + j]);
    }
  }
  if (k < kc) {  // the last kc % 16 values of k
    const __mmask16 m = avx512::first_lanes(kc - k);
    __m512 wv[NR];
#pragma GCC unroll 32
    for (int j = 0; j < NR; ++j) wv[j] = _mm512_maskz_loadu_ps(m, w + j * ldw + k);
#pragma GCC unroll 32
    for (int r = 0; r < MR; ++r) {
      const __m512 av = _mm512_maskz_loadu_ps(m, a + r * lda + k);
#pragma GCC unroll 32
      for (int j = 0; j < NR; ++j) acc[r * NR + j] = _mm512_fmadd_ps(av, wv[j], acc[r * NR + j]);
    }
  }
  const __m512 lo = lane_sums16<(kAcc < 16 ? kAcc : 16)>(acc);
  __m512 hi = _mm512_setzero_ps();
  if constexpr (kAcc > 16) hi = lane_sums16<kAcc - 16>(acc + 16);
  if (cs == 1 && adds && adds->activation != Activation::None) {
    store_activated<MR, NR>(lo, hi, c, rs, accumulate, *adds);
    return;
  }
  if (cs == 1) {  // C's rows contiguous: a row of the tile at a time, in the first NR lanes
    const __mmask16 cols = __mmask16((1u << NR) - 1);
#pragma GCC unroll 4
    for (int r = 0; r < MR; ++r) {
      // Lane i takes result r * NR + i of the 32 in (lo, hi).
      const __m512i at = _mm512_add_epi32(_mm512_set1_epi32(r * NR),
                                          _mm512_set_epi32(15, 14, 13, 12, 11, 10, 9, 8, 7, 6, 5, 4, 3, 2, 1, 0));
      __m512 v = _mm512_permutex2var_ps(lo, at, hi);
      float* out = c + r * rs;
      if (accumulate) v = _mm512_add_ps(_mm512_maskz_loadu_ps(cols, out), v);
      if (adds) {
        if (adds->row_bias) v = _mm512_add_ps(v, _mm512_set1_ps(adds->row_bias[r]));
        if (adds->col_bias) v = _mm512_add_ps(v, _mm512_maskz_loadu_ps(cols, adds->col_bias));
        if (adds->residual) v = _mm512_add_ps(v, _mm512_maskz_loadu_ps(cols, adds->residual + r * rs));
      }
      _mm512_mask_storeu_ps(out, cols, v);
    }
    return;
  }
  alignas(64) float sums[kGroups * 16];
  _mm512_store_ps(sums, lo);
  if constexpr (kAcc > 16) _mm512_store_ps(sums + 16, hi);
  for (int r = 0; r < MR; ++r)
    for (int j = 0; j < NR; ++j) {
      float* out = c + r * rs + j * cs;
      float v = accumulate ? *out + sums[r * NR + j] : sums[r * NR + j];
      if (adds) {
        if (adds->row_bias) v += adds->row_bias[r];
        if (adds->col_bias) v += adds->col_bias[j];
        if (adds->residual) v += adds->residual[r * rs + j * cs];
      }
      *out = v;
    }
}

using DotTile = void (*)(int64_t, const float*, int64_t, const float*, int64_t, float*, int64_t, int64_t, bool,
                         const DotTileAdds*, const PrefetchLines&);

/// The tile for rows x cols (1 <= rows <= kDotMR, 1 <= cols <= kDotNR).
inline DotTile dot_tile_for(int64_t rows, int64_t cols) {
  static const auto table = [] {
    std::array<std::array<DotTile, kDotNR>, kDotMR> t{};
    auto fill_row = [&](auto r_tag) {
      constexpr int R = decltype(r_tag)::value;
      t[R - 1] = {dot_tile<R, 1>, dot_tile<R, 2>, dot_tile<R, 3>, dot_tile<R, 4>, dot_tile<R, 5>, dot_tile<R, 6>};
    };
    fill_row(std::integral_constant<int, 1>{});
    fill_row(std::integral_constant<int, 2>{});
    fill_row(std::integral_constant<int, 3>{});
    fill_row(std::integral_constant<int, 4>{});
    return t;
  }();
  static_assert(kDotMR == 4 && kDotNR == 6, "dot_tile_for's table lists the tile sizes");
  return table[size_t(rows - 1)][size_t(cols - 1)];
}

/// Where the dot form's C [M, N] lies: C(r, j) at p[r * rs + j * cs], one of the strides 1
/// (row-major, or transposed: a convolution's out [O, P] is C [P, O] with rs = 1). The
/// epilogue's residual is laid out as C.
struct DotLayout {
  float* p;
  int64_t rs, cs;
};

/// C [M, N] (laid out as `C` says) = epilogue(A [M, K] @ W [N, K]^T) on `threads` threads,
/// where A(r, k) = a[r * lda + k] and W(j, k) = w[j * ldw + k]: both contiguous along k.
/// K >= 1. The threads share W's rows (each streams its own part of the weight); a result's
/// value does not depend on the thread count. The epilogue is the same f32 operations, in
/// the same order (row bias, column bias, residual, activation), as the unfused ops.
inline void dot_gemm(const float* a, int64_t lda, const float* w, int64_t ldw, const DotLayout& C, int64_t M,
                     int64_t N, int64_t K, int threads, const Epilogue& e) {
  const int64_t tiles = (N + kDotNR - 1) / kDotNR, groups = (tiles + kDotGroup - 1) / kDotGroup;
  threads = int(std::max<int64_t>(1, std::min<int64_t>(threads, groups)));
  // x's rows in the same L1 sets (rows_share_l1_sets): a copy at dot_row_stride(K) costs M x
  // K floats (a few percent of the product) and gained 8-12% on ViT's shapes
  // (bench/RESULTS.md, thirteenth session).
  std::shared_ptr<Storage> spaced;
  const int64_t spaced_lda = dot_row_stride(K);
  const bool respace = M > 1 && K >= 512 && rows_share_l1_sets(lda);
  const float* const x = a;
  const int64_t ldx = lda;
  if (respace) {  // from here on, a is the copy
    spaced = HostBlockCache::instance().allocate(size_t(M * spaced_lda) * sizeof(float));
    a = static_cast<const float*>(spaced->data());
    lda = spaced_lda;
  }
  auto copy_rows = [&](int64_t r0, int64_t r1) {
    float* dst = static_cast<float*>(spaced->data());
    for (int64_t r = r0; r < r1; ++r) std::memcpy(dst + r * spaced_lda, x + r * ldx, size_t(K) * sizeof(float));
  };
  // k chunks of about equal depth, a multiple of 16 (so each w row run starts on a whole
  // vector), at most kDotKC; the last one shorter.
  const int64_t even = (K + (K + kDotKC - 1) / kDotKC - 1) / ((K + kDotKC - 1) / kDotKC);
  const int64_t chunk = (even + 15) / 16 * 16, chunks = (K + chunk - 1) / chunk;
  const int64_t row_tiles = (M + kDotMR - 1) / kDotMR;
  // The activation is applied by the tiles, in registers, where C's rows are contiguous (the
  // vector functions are the unfused ops' own, activation_simd.hpp); with C's columns
  // contiguous (a convolution's output), it follows each run of tiles over C.
  const Activation tile_activation = C.cs == 1 ? e.activation : Activation::None;
  const bool adds = e.row_bias || e.col_bias || e.residual || tile_activation != Activation::None;
  // The threads take runs of tiles from a shared counter, so that a thread slowed by the
  // memory system does not hold the others at the end: kDotGroup tiles (a group) at a time,
  // and toward the end a share of what is left, down to one tile, so that they finish
  // together (with 16 groups, as at N = 768, the last whole group kept one thread waiting
  // 5-9% of the product). In a group, each k chunk runs over all its tiles (a chunk of x is
  // reused by the group's tiles). Which thread computes a tile, and in which group, does
  // not change its arithmetic.
  std::atomic<int64_t> next_tile{0};
  auto claim = [&]() -> std::pair<int64_t, int64_t> {
    int64_t t0 = next_tile.load(std::memory_order_relaxed), take = 0;
    do {
      if (t0 >= tiles) return {tiles, tiles};
      take = std::clamp<int64_t>((tiles - t0) / (2 * threads), 1, kDotGroup);
    } while (!next_tile.compare_exchange_weak(t0, t0 + take, std::memory_order_relaxed));
    return {t0, t0 + take};
  };
  auto work = [&]() {
    // The cache lines of tile t's k chunk q (its rows' runs of k), all of them.
    auto tile_lines = [&](int64_t t, int64_t q) {
      const int64_t k0 = q * chunk, bytes = std::min(chunk, K - k0) * int64_t(sizeof(float));
      const int64_t per_row = (bytes + 63) / 64, rows = std::min(N, t * kDotNR + kDotNR) - t * kDotNR;
      return PrefetchLines{reinterpret_cast<const char*>(w + t * kDotNR * ldw + k0), ldw * int64_t(sizeof(float)),
                           per_row, 0, rows * per_row};
    };
    int64_t g0 = 0, g1 = 0;
    std::tie(g0, g1) = claim();
    while (g0 < tiles) {
      std::pair<int64_t, int64_t> following{tiles, tiles};  // the run this thread takes next
      for (int64_t q = 0; q < chunks; ++q) {
        const int64_t k0 = q * chunk, kc = std::min(chunk, K - k0);
        const bool last = q + 1 == chunks;
        for (int64_t t = g0; t < g1; ++t) {
          // What comes next in this order: the next tile, else the group's first at the next
          // chunk, else the first of the run this thread takes next, claimed now so that its
          // first weights can be prefetched under this tile.
          int64_t nt = t + 1, nq = q;
          if (nt == g1) {
            if (!last) {
              nt = g0;
              nq = q + 1;
            } else {
              following = claim();
              nt = following.first;
              nq = 0;
            }
          }
          const PrefetchLines next = nt < tiles ? tile_lines(nt, nq) : PrefetchLines{};
          const int64_t lines = next.count;
          const int64_t n0 = t * kDotNR, cols = std::min(kDotNR, N - n0);
          // The prefetches spread over the row tiles, one per k step at most.
          const int64_t per_tile = std::min(kc / 16, (lines + row_tiles - 1) / row_tiles);
          for (int64_t m = 0, i = 0; m < M; m += kDotMR, ++i) {
            const int64_t rows = std::min(kDotMR, M - m);
            PrefetchLines part = next;
            part.first = std::min(lines, i * per_tile);
            part.count = std::min(lines, part.first + per_tile) - part.first;
            const DotTileAdds tile_adds{e.row_bias ? e.row_bias + m : nullptr, e.col_bias ? e.col_bias + n0 : nullptr,
                                        e.residual ? e.residual + m * C.rs + n0 * C.cs : nullptr, tile_activation};
            dot_tile_for(rows, cols)(kc, a + m * lda + k0, lda, w + n0 * ldw + k0, ldw, C.p + m * C.rs + n0 * C.cs,
                                     C.rs, C.cs, q > 0, last && adds ? &tile_adds : nullptr, part);
          }
        }
      }
      // C's columns contiguous (rs = 1; the tiles applied the activation where cs = 1): over
      // each column of the run.
      if (e.activation != Activation::None && tile_activation == Activation::None)
        for (int64_t j = g0 * kDotNR; j < std::min(N, g1 * kDotNR); ++j)
          detail::activate_row<float>(e.activation, C.p + j * C.cs, M);
      std::tie(g0, g1) = following;
    }
  };
#ifdef _OPENMP
  if (threads > 1) {
#pragma omp parallel num_threads(threads)
    {
      if (respace) {
        const int64_t t = omp_get_thread_num(), nt = omp_get_num_threads();
        copy_rows(M * t / nt, M * (t + 1) / nt);
#pragma omp barrier
      }
      work();
    }
    return;
  }
#endif
  if (respace) copy_rows(0, M);
  work();
}

GA_SIMD_WARNINGS_POP

/// out[i] = epilogue(a[i] @ b[i]) in dot-product form for a [Bt, M, K] and b [Bt, K, N]
/// (f32, both contiguous along k: a's stride 2 and b's stride 1 are 1; batch stride 0 for a
/// broadcast operand), out [Bt, M, N] contiguous f32 (see backend::MatmulEpilogue). K >= 1.
inline void matmul_dot(const Tensor& a, const Tensor& b, const Tensor& out, const MatmulEpilogue& epilogue) {
  const int64_t Bt = out.size(0), M = out.size(1), N = out.size(2), K = a.size(2);
  if (out.numel() == 0) return;
  detail::check_epilogue("matmul", out, epilogue);
  const Shape& as = a.strides();
  const Shape& bs = b.strides();
  GA_CHECK(K >= 1 && as[2] == 1 && bs[1] == 1, ValueError, "matmul: the dot-product form needs both operands ",
           "contiguous along k and K >= 1 (a strides ", shape_str(as), ", b strides ", shape_str(bs), ")");
  const float* ap = static_cast<const float*>(a.raw_data());
  const float* bp = static_cast<const float*>(b.raw_data());
  float* cp = static_cast<float*>(out.raw_data());
  // The work a product is weighed by for threading: its flops, or for few rows its weight's
  // stream from memory, which is what bounds a vector-matrix product (a 768 x 768 weight
  // took 0.18 ms on one thread of the development VM, at 1.2 MFLOP below the 2-thread cut).
  const double work = std::max(2.0 * double(M), 16.0) * double(N) * double(K);
  for_each_product_range(Bt, work, [&](int64_t lo, int64_t hi, int threads) {
    for (int64_t i = lo; i < hi; ++i)
      dot_gemm(ap + i * as[0], as[1], bp + i * bs[0], bs[2], DotLayout{cp + i * M * N, N, 1}, M, N, K, threads,
               Epilogue::for_item(epilogue, M, N, i));
  });
}

}  // namespace ga::backend::cpu::f32_gemm
#endif  // GA_EMIT_CPU_KERNELS && GA_X86_F32_KERNELS
