// The CPU backend's int8 product (Backend::int8_weight, int8_linear, int8_conv2d): weights
// quantized once to 7-bit signed integers per output channel, activations quantized per
// row (a linear layer) or per image (a convolution) to unsigned integers with a zero point
// (8 bits, or 7: Int8Weight::inputs), products summed exactly in int32, then scaled back.
//
// Why 7-bit weights: on x86 CPUs without AVX-VNNI the fastest 8-bit product is VPMADDUBSW
// (bytes u8 x s8, adjacent pairs summed into int16, saturating) then VPMADDWD by ones (pairs
// of int16 summed into int32): 32 multiply-adds in two instructions where an f32 FMA does 8.
// With weights in [-63, 63] a pair sum is at most 2 * 255 * 63 = 32130 < 2^15, so nothing
// ever saturates and the integer sums are exact; the price is one bit of weight precision.
//
// Why 7-bit activations as an option (Int8Inputs::Bits7): with activations in [0, 127] a
// pair sum is at most 2 * 127 * 63 = 16002, so the int16 sum of two VPMADDUBSW (four
// products) is still exact and one VPMADDWD widens 64 multiply-adds instead of 32. The
// multiplier ports bound this kernel: measured on a Zen 3 core, 22-26% more multiply-adds
// per second. The price, measured with random weights of the real sizes: CLIP's image
// embeddings' cosine to f32 went from 0.99961 to 0.99943 (ViT-B/32) and 0.99933 to 0.99922
// (RN50), where weight rounding dominates, but a small text tower's (the test fixture's)
// from 0.99945 to 0.99871.
//
// Where the CPU has AVX512-VNNI (Intel since Ice Lake, AMD since Zen 4), VPDPBUSD sums four
// u8 x s8 products straight into int32 lanes: 64 multiply-adds in one zmm instruction, with
// no int16 step, so nothing can saturate whatever the bit widths. The weights stay 7-bit and
// the inputs as chosen anyway, so every kernel computes the same integers and a result does
// not depend on the machine; measured on a Zen 4 core, L1-resident data: 225 G multiply-adds
// a second (its peak, one VPDPBUSD a cycle) against the AVX2 tile's 133-138 (7-bit inputs).
//
// Layouts. A weight [N, C, kh, kw] (a linear weight [N, K] is C = K, kh = kw = 1) is reduced
// over k = (tap, channel) with the channel innermost and C padded to Cp, a multiple of 4, so
// that four consecutive k of one output position are four bytes of one pixel of an
// NHWC-ordered image. It is stored in panels of kNR = 16 output channels: panel p holds
// bytes ((p * K4 + k4) * 16 + c) * 4 + j = q[16 p + c][4 k4 + j] (K4 = kh * kw * Cp / 4),
// rows past N zero. Activations are not packed: the register kernel reads each of its kMR = 4
// rows through its own pointer, 4 bytes at a time, so a linear layer's quantized rows and a
// convolution's quantized NHWC image are read in place (a padded window position reads a
// row of zero points, whose value is exactly 0).
#pragma once
#include <algorithm>
#include <atomic>
#include <cmath>
#include <cstdint>
#include <cstdlib>
#include <cstring>
#include <limits>
#include <memory>
#include <string>
#include <utility>
#include <vector>

#include "cpu_backend.hpp"

#if defined(__x86_64__) && defined(__GNUC__)
#define GA_X86_INT8_KERNELS 1
#include <immintrin.h>
#else
#define GA_X86_INT8_KERNELS 0
#endif

namespace ga::backend::cpu::int8_gemm {

inline constexpr int64_t kMR = 4, kNR = 16;
/// The largest weight magnitude (see the file comment): 7-bit weights.
inline constexpr int kWeightMax = 63;

/// The largest quantized activation.
inline int32_t activation_max(Int8Inputs inputs) { return inputs == Int8Inputs::Bits7 ? 127 : 255; }

inline int64_t round_up(int64_t v, int64_t m) { return (v + m - 1) / m * m; }

/// Whether the AVX2 kernel runs here (else the portable one, same integer results).
inline bool avx2_supported() {
#if GA_X86_INT8_KERNELS
  static const bool s = [] {
    __builtin_cpu_init();
    return __builtin_cpu_supports("avx2") != 0;
  }();
  return s;
#else
  return false;
#endif
}

/// Whether the AVX512-VNNI kernel runs here (the compiler's probe also checks that the OS
/// saves the zmm state).
inline bool vnni_supported() {
#if GA_X86_INT8_KERNELS
  static const bool s = [] {
    __builtin_cpu_init();
    return __builtin_cpu_supports("avx512f") && __builtin_cpu_supports("avx512vl") &&
           __builtin_cpu_supports("avx512vnni");
  }();
  return s;
#else
  return false;
#endif
}

}  // namespace ga::backend::cpu::int8_gemm

namespace ga::backend::cpu {

/// Who computes the int8 products' register tiles. Every kernel gives the same integers,
/// so the same results. Auto: the fastest this machine runs (Avx512Vnni, else Avx2, else
/// Portable).
enum class Int8Kernel { Auto, Avx512Vnni, Avx2, Portable };

inline const char* int8_kernel_name(Int8Kernel k) {
  switch (k) {
    case Int8Kernel::Auto: return "auto";
    case Int8Kernel::Avx512Vnni: return "avx512vnni";
    case Int8Kernel::Avx2: return "avx2";
    case Int8Kernel::Portable: return "portable";
  }
  return "?";
}

/// Whether this machine (CPU, OS, and this build's compiler) can run kernel k. Auto and
/// Portable always can.
inline bool int8_kernel_supported(Int8Kernel k) {
  if (k == Int8Kernel::Avx512Vnni) return int8_gemm::vnni_supported();
  if (k == Int8Kernel::Avx2) return int8_gemm::avx2_supported();
  return true;
}

namespace detail {

inline Int8Kernel best_int8_kernel() {
  if (int8_gemm::vnni_supported()) return Int8Kernel::Avx512Vnni;
  if (int8_gemm::avx2_supported()) return Int8Kernel::Avx2;
  return Int8Kernel::Portable;
}

/// The initial choice: the best kernel, unless the environment variable GA_GEMM_INT8 names
/// one this machine runs (avx512vnni, avx2 or portable). Read once, at the first product.
inline Int8Kernel initial_int8_kernel() {
  const char* env = std::getenv("GA_GEMM_INT8");
  if (env)
    for (Int8Kernel k : {Int8Kernel::Avx512Vnni, Int8Kernel::Avx2, Int8Kernel::Portable})
      if (int8_kernel_name(k) == std::string(env) && int8_kernel_supported(k)) return k;
  return best_int8_kernel();
}

inline Int8Kernel& int8_kernel_setting() {
  static Int8Kernel k = initial_int8_kernel();
  return k;
}

}  // namespace detail

/// Selects the kernel for every later int8 product (Auto: the fastest this machine runs;
/// overrides GA_GEMM_INT8). Not thread-safe against products running concurrently; meant
/// for tests, benchmarks and start-up. Throws ValueError when the machine cannot run k.
inline void set_int8_kernel(Int8Kernel k) {
  GA_CHECK(int8_kernel_supported(k), ValueError, "set_int8_kernel: the ", int8_kernel_name(k),
           " kernel is not supported on this machine (CPU, OS or compiler)");
  detail::int8_kernel_setting() = k == Int8Kernel::Auto ? detail::best_int8_kernel() : k;
}

/// The kernel int8 products use now (never Auto).
inline Int8Kernel int8_kernel() { return detail::int8_kernel_setting(); }

}  // namespace ga::backend::cpu

namespace ga::backend::cpu::int8_gemm {

/// The scale and zero point of one quantized row of activations: value = scale * (q - zero),
/// q in [0, top].
struct RowQuant {
  float scale = 1;
  int32_t zero = 0;
  int32_t top = 255;
};

/// The quantization of values with minimum lo and maximum hi: the range [min(lo, 0),
/// max(hi, 0)] spread over 0..top, zero exactly representable. A non-finite lo or hi gives a
/// NaN scale, so every product of the row is NaN, as the f32 product's would be (or inf).
inline RowQuant row_quant(float lo, float hi, int32_t top) {
  RowQuant r;
  r.top = top;
  if (!std::isfinite(lo) || !std::isfinite(hi)) {
    r.scale = std::numeric_limits<float>::quiet_NaN();
    return r;
  }
  lo = std::min(lo, 0.0f);
  hi = std::max(hi, 0.0f);
  if (hi == lo) return r;  // all zero
  r.scale = (hi - lo) / static_cast<float>(top);
  r.zero = static_cast<int32_t>(std::min(static_cast<float>(top), std::max(0.0f, std::nearbyint(-lo / r.scale))));
  return r;
}

/// q[i] = clamp(round(x[i] * (1 / scale)) + zero, 0, top) for i < n (round half to even;
/// the clamp matters where the two roundings of a row's maximum add up to top + 1).
inline void quantize_portable(const float* x, int64_t n, RowQuant rq, uint8_t* q) {
  const float inv = 1.0f / rq.scale;
  for (int64_t i = 0; i < n; ++i) {
    const float v = std::nearbyint(x[i] * inv) + static_cast<float>(rq.zero);
    q[i] = static_cast<uint8_t>(std::min(static_cast<float>(rq.top), std::max(0.0f, v)));
  }
}

#if GA_X86_INT8_KERNELS
__attribute__((target("avx2"))) inline void minmax_avx2(const float* x, int64_t n, float& lo, float& hi) {
  __m256 vlo = _mm256_set1_ps(0.0f), vhi = vlo, bad = _mm256_setzero_ps();
  int64_t i = 0;
  for (; i + 8 <= n; i += 8) {
    const __m256 v = _mm256_loadu_ps(x + i);
    vlo = _mm256_min_ps(vlo, v);
    vhi = _mm256_max_ps(vhi, v);
    bad = _mm256_or_ps(bad, _mm256_cmp_ps(v, v, _CMP_UNORD_Q));  // min/max would drop a NaN
  }
  alignas(32) float l[8], h[8], b[8];
  _mm256_store_ps(l, vlo);
  _mm256_store_ps(h, vhi);
  _mm256_store_ps(b, bad);
  for (int j = 0; j < 8; ++j) {
    lo = std::min(lo, l[j]);
    hi = std::max(hi, h[j]);
    if (b[j] != 0.0f) lo = std::numeric_limits<float>::quiet_NaN();
  }
  for (; i < n; ++i) {
    if (std::isnan(x[i])) lo = std::numeric_limits<float>::quiet_NaN();
    lo = std::min(lo, x[i]);
    hi = std::max(hi, x[i]);
  }
}

/// quantize_portable, the same results: VCVTPS2DQ rounds half to even, as nearbyint does,
/// the packs saturate to 0..255 and VPMINUB clamps to top.
__attribute__((target("avx2"))) inline void quantize_avx2(const float* x, int64_t n, RowQuant rq, uint8_t* q) {
  const __m256 inv = _mm256_set1_ps(1.0f / rq.scale);
  const __m256i zero = _mm256_set1_epi32(rq.zero);
  const __m256i order = _mm256_setr_epi32(0, 4, 1, 5, 2, 6, 3, 7);
  const __m256i top = _mm256_set1_epi8(static_cast<char>(rq.top));
  int64_t i = 0;
  for (; i + 32 <= n; i += 32) {
    __m256i v[4];
    for (int j = 0; j < 4; ++j)
      v[j] = _mm256_add_epi32(_mm256_cvtps_epi32(_mm256_mul_ps(_mm256_loadu_ps(x + i + 8 * j), inv)), zero);
    const __m256i p = _mm256_packus_epi16(_mm256_packs_epi32(v[0], v[1]), _mm256_packs_epi32(v[2], v[3]));
    _mm256_storeu_si256(reinterpret_cast<__m256i*>(q + i), _mm256_min_epu8(_mm256_permutevar8x32_epi32(p, order), top));
  }
  quantize_portable(x + i, n - i, rq, q + i);
}
#endif

/// The extremes of x[0, n) and 0: lo = min(0, x...), hi = max(0, x...); lo is NaN where x
/// holds a NaN (row_quant then gives a NaN scale).
struct Extremes {
  float lo = 0, hi = 0;
  /// The extremes of both ranges (a NaN in either stays).
  Extremes merged(const Extremes& o) const {
    if (std::isnan(lo) || std::isnan(o.lo)) return {std::numeric_limits<float>::quiet_NaN(), std::max(hi, o.hi)};
    return {std::min(lo, o.lo), std::max(hi, o.hi)};
  }
};

inline Extremes extremes_of(const float* x, int64_t n) {
  Extremes e;
#if GA_X86_INT8_KERNELS
  if (avx2_supported()) {
    minmax_avx2(x, n, e.lo, e.hi);
    return e;
  }
#endif
  for (int64_t i = 0; i < n; ++i) {
    if (std::isnan(x[i])) return {std::numeric_limits<float>::quiet_NaN(), e.hi};
    e.lo = std::min(e.lo, x[i]);
    e.hi = std::max(e.hi, x[i]);
  }
  return e;
}

/// The quantization of x[0, n) over 0..top (row_quant of its extremes).
inline RowQuant quant_of(const float* x, int64_t n, int32_t top) {
  const Extremes e = extremes_of(x, n);
  return row_quant(e.lo, e.hi, top);
}

#if GA_X86_INT8_KERNELS
/// Stores the transpose of the 16 x 16 bytes in r (row c in r[c]): dst[i * dst_stride + c] =
/// byte i of r[c]. Four rounds of SSE2 unpacks pair up rows 1, 2, 4, then 8 apart, so that
/// each register holds 1, 2, 4, then 8 bytes of consecutive rows per column.
inline void store_transposed_16x16(const __m128i* r, uint8_t* dst, int64_t dst_stride) {
  __m128i a[16], b[16], c[16];
  for (int j = 0; j < 8; ++j) {  // a[2j], a[2j + 1]: columns 0-7, 8-15 of rows 2j, 2j + 1
    a[2 * j] = _mm_unpacklo_epi8(r[2 * j], r[2 * j + 1]);
    a[2 * j + 1] = _mm_unpackhi_epi8(r[2 * j], r[2 * j + 1]);
  }
  for (int j = 0; j < 4; ++j) {  // b[4j + x]: columns 4x..4x+3 of rows 4j..4j+3
    b[4 * j] = _mm_unpacklo_epi16(a[4 * j], a[4 * j + 2]);
    b[4 * j + 1] = _mm_unpackhi_epi16(a[4 * j], a[4 * j + 2]);
    b[4 * j + 2] = _mm_unpacklo_epi16(a[4 * j + 1], a[4 * j + 3]);
    b[4 * j + 3] = _mm_unpackhi_epi16(a[4 * j + 1], a[4 * j + 3]);
  }
  for (int j = 0; j < 2; ++j)  // c[8j + y]: columns 2y, 2y + 1 of rows 8j..8j+7
    for (int x = 0; x < 4; ++x) {
      c[8 * j + 2 * x] = _mm_unpacklo_epi32(b[8 * j + x], b[8 * j + 4 + x]);
      c[8 * j + 2 * x + 1] = _mm_unpackhi_epi32(b[8 * j + x], b[8 * j + 4 + x]);
    }
  for (int y = 0; y < 8; ++y) {  // column 2y, then 2y + 1, of all 16 rows
    _mm_storeu_si128(reinterpret_cast<__m128i*>(dst + 2 * y * dst_stride), _mm_unpacklo_epi64(c[y], c[8 + y]));
    _mm_storeu_si128(reinterpret_cast<__m128i*>(dst + (2 * y + 1) * dst_stride), _mm_unpackhi_epi64(c[y], c[8 + y]));
  }
}
#endif

/// dst[i * dst_stride + c] = src[c * src_stride + i] for c, i < 16: a 16 x 16 block of bytes
/// transposed (on x86 by store_transposed_16x16, 3.5x faster than byte by byte).
inline void transpose_bytes_16x16(const uint8_t* src, int64_t src_stride, uint8_t* dst, int64_t dst_stride) {
#if GA_X86_INT8_KERNELS
  __m128i r[16];
  for (int i = 0; i < 16; ++i) r[i] = _mm_loadu_si128(reinterpret_cast<const __m128i*>(src + i * src_stride));
  store_transposed_16x16(r, dst, dst_stride);
#else
  for (int64_t i = 0; i < 16; ++i)
    for (int64_t c = 0; c < 16; ++c) dst[i * dst_stride + c] = src[c * src_stride + i];
#endif
}

/// Quantizes x[0, n) into q[0, n) contiguous with rq.
inline void quantize(const float* x, int64_t n, RowQuant rq, uint8_t* q) {
  if (std::isnan(rq.scale)) {
    std::memset(q, 0, static_cast<size_t>(n));
    return;
  }
#if GA_X86_INT8_KERNELS
  if (avx2_supported()) return quantize_avx2(x, n, rq, q);
#endif
  quantize_portable(x, n, rq, q);
}

#if GA_X86_INT8_KERNELS
GA_SIMD_WARNINGS_PUSH  // see cpu_features.hpp

/// The NHWC bytes of n pixels of one image whose C channels (a multiple of 16) lie HW floats
/// apart: d[i * C + c] = quantize(x[c * HW + i]) for i < n, c < C, with rq (its scale not
/// NaN). Sixteen channels' runs of 16 pixels are quantized in zmm registers and transposed
/// there (store_transposed_16x16), where quantize-then-transpose wrote every byte to a
/// buffer and read it back. The same operations per value as quantize_avx2 (VCVTPS2DQ
/// rounds half to even; negative sums go to 0, and VPMOVUSDB saturates above 255, as its
/// packs do; then the clamp to top), so the same bytes.
__attribute__((target("avx512f"))) inline void quantize_nhwc_avx512(const float* x, int64_t HW, int64_t C, int64_t n,
                                                                    RowQuant rq, uint8_t* d) {
  const __m512 inv = _mm512_set1_ps(1.0f / rq.scale);
  const __m512i zero = _mm512_set1_epi32(rq.zero), none = _mm512_setzero_si512();
  const __m128i top = _mm_set1_epi8(static_cast<char>(rq.top));
  const int64_t whole = n / 16 * 16;
  for (int64_t c0 = 0; c0 < C; c0 += 16) {
    for (int64_t i = 0; i < whole; i += 16) {
      __m128i r[16];
      for (int c = 0; c < 16; ++c) {
        const __m512 scaled = _mm512_mul_ps(_mm512_loadu_ps(x + (c0 + c) * HW + i), inv);
        const __m512i v = _mm512_add_epi32(_mm512_cvtps_epi32(scaled), zero);
        r[c] = _mm_min_epu8(_mm512_cvtusepi32_epi8(_mm512_max_epi32(v, none)), top);
      }
      store_transposed_16x16(r, d + i * C + c0, C);
    }
    for (int64_t c = c0; c < c0 + 16; ++c)  // the last n % 16 pixels, as quantize does them
      for (int64_t i = whole; i < n; ++i) quantize_portable(x + c * HW + i, 1, rq, d + i * C + c);
  }
}

GA_SIMD_WARNINGS_POP
#endif

// ---- the register kernel: acc[kMR][16] (+)= sum over k4 < K4 of rows[r][4 k4 + j] * b[k4][c][j] ----

inline void kernel_portable(int64_t k4, const uint8_t* const* rows, const int8_t* b, int32_t* acc, bool zero_first) {
  if (zero_first) std::fill(acc, acc + kMR * kNR, 0);
  for (int64_t k = 0; k < k4; ++k)
    for (int64_t r = 0; r < kMR; ++r) {
      const uint8_t* a = rows[r] + 4 * k;
      const int8_t* bk = b + k * kNR * 4;
      for (int64_t c = 0; c < kNR; ++c)
        acc[r * kNR + c] += a[0] * bk[4 * c] + a[1] * bk[4 * c + 1] + a[2] * bk[4 * c + 2] + a[3] * bk[4 * c + 3];
    }
}

#if GA_X86_INT8_KERNELS
// Written in assembly because GCC, given the equivalent intrinsics, keeps the accumulators'
// temporaries live at once and spills (measured on the 6 x 16 tile this one replaced: 44-54
// GMAC/s on a Zen 3 core against 67 in assembly). ymm0-7 accumulate (row r in ymm 2r and
// 2r + 1: columns 0-7 and 8-15), ymm8-11 hold b for two k4 steps (step 0's columns 0-7 and
// 8-15, then step 1's), ymm12-13 a row's broadcast bytes for the two steps, ymm14-15 the
// products. With 7-bit activations (`pairs` > 0), per two k4 steps and row half: two
// VPMADDUBSW, their exact int16 sum, one VPMADDWD by ones (from memory: no register left),
// one VPADDD; the loads stay below the two 256-bit loads a cycle that a 6 x 16 tile reading
// b from memory ran into. Single k4 steps (`singles`: all of them with 8-bit activations,
// the odd last one with 7-bit) widen each VPMADDUBSW on its own.
#define GA_INT8_ROW_PAIR(r, ca, cb)                \
  "vpbroadcastd (%[a" #r "],%[i]), %%ymm12\n\t"    \
  "vpbroadcastd 4(%[a" #r "],%[i]), %%ymm13\n\t"   \
  "vpmaddubsw %%ymm8, %%ymm12, %%ymm14\n\t"        \
  "vpmaddubsw %%ymm10, %%ymm13, %%ymm15\n\t"       \
  "vpaddw %%ymm15, %%ymm14, %%ymm14\n\t"           \
  "vpmaddwd (%[ones]), %%ymm14, %%ymm14\n\t"       \
  "vpaddd %%ymm14, %%ymm" #ca ", %%ymm" #ca "\n\t" \
  "vpmaddubsw %%ymm9, %%ymm12, %%ymm14\n\t"        \
  "vpmaddubsw %%ymm11, %%ymm13, %%ymm15\n\t"       \
  "vpaddw %%ymm15, %%ymm14, %%ymm14\n\t"           \
  "vpmaddwd (%[ones]), %%ymm14, %%ymm14\n\t"       \
  "vpaddd %%ymm14, %%ymm" #cb ", %%ymm" #cb "\n\t"
#define GA_INT8_ROW_SINGLE(r, ca, cb)              \
  "vpbroadcastd (%[a" #r "],%[i]), %%ymm12\n\t"    \
  "vpmaddubsw %%ymm8, %%ymm12, %%ymm14\n\t"        \
  "vpmaddwd (%[ones]), %%ymm14, %%ymm14\n\t"       \
  "vpaddd %%ymm14, %%ymm" #ca ", %%ymm" #ca "\n\t" \
  "vpmaddubsw %%ymm9, %%ymm12, %%ymm14\n\t"        \
  "vpmaddwd (%[ones]), %%ymm14, %%ymm14\n\t"       \
  "vpaddd %%ymm14, %%ymm" #cb ", %%ymm" #cb "\n\t"
#define GA_INT8_ACC(op, i) op " " #i "*32(%[acc]), %%ymm" #i "\n\t"
#define GA_INT8_ALL(op)                                                                                 \
  GA_INT8_ACC(op, 0) GA_INT8_ACC(op, 1) GA_INT8_ACC(op, 2) GA_INT8_ACC(op, 3) GA_INT8_ACC(op, 4)        \
  GA_INT8_ACC(op, 5) GA_INT8_ACC(op, 6) GA_INT8_ACC(op, 7)
#define GA_INT8_STORE(i) "vmovdqu %%ymm" #i ", " #i "*32(%[acc])\n\t"

__attribute__((target("avx2"), noinline)) inline void kernel_avx2(int64_t pairs, int64_t singles,
                                                                  const uint8_t* const* rows, const int8_t* b,
                                                                  int32_t* acc, bool zero_first) {
  alignas(32) static const int16_t ones[16] = {1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1};
  if (zero_first) std::memset(acc, 0, sizeof(int32_t) * kMR * kNR);
  if (pairs + singles <= 0) return;
  int64_t i = 0;
  const uint8_t *a0 = rows[0], *a1 = rows[1], *a2 = rows[2], *a3 = rows[3];
  asm volatile(GA_INT8_ALL("vmovdqu")  //
               "test %[p], %[p]\n\t"
               "jz 2f\n\t"
               "1:\n\t"
               "vmovdqu (%[b]), %%ymm8\n\t"
               "vmovdqu 32(%[b]), %%ymm9\n\t"
               "vmovdqu 64(%[b]), %%ymm10\n\t"
               "vmovdqu 96(%[b]), %%ymm11\n\t"  //
               GA_INT8_ROW_PAIR(0, 0, 1) GA_INT8_ROW_PAIR(1, 2, 3) GA_INT8_ROW_PAIR(2, 4, 5)
                   GA_INT8_ROW_PAIR(3, 6, 7)  //
               "add $8, %[i]\n\t"
               "sub $-128, %[b]\n\t"
               "dec %[p]\n\t"
               "jnz 1b\n\t"
               "2:\n\t"
               "test %[s], %[s]\n\t"
               "jz 4f\n\t"
               "3:\n\t"
               "vmovdqu (%[b]), %%ymm8\n\t"
               "vmovdqu 32(%[b]), %%ymm9\n\t"  //
               GA_INT8_ROW_SINGLE(0, 0, 1) GA_INT8_ROW_SINGLE(1, 2, 3) GA_INT8_ROW_SINGLE(2, 4, 5)
                   GA_INT8_ROW_SINGLE(3, 6, 7)  //
               "add $4, %[i]\n\t"
               "add $64, %[b]\n\t"
               "dec %[s]\n\t"
               "jnz 3b\n\t"
               "4:\n\t"  //
               GA_INT8_STORE(0) GA_INT8_STORE(1) GA_INT8_STORE(2) GA_INT8_STORE(3) GA_INT8_STORE(4)
                   GA_INT8_STORE(5) GA_INT8_STORE(6) GA_INT8_STORE(7)
               : [i] "+r"(i), [b] "+r"(b), [p] "+r"(pairs), [s] "+r"(singles)
               : [a0] "r"(a0), [a1] "r"(a1), [a2] "r"(a2), [a3] "r"(a3), [ones] "r"(ones), [acc] "r"(acc)
               : "cc", "memory", "xmm0", "xmm1", "xmm2", "xmm3", "xmm4", "xmm5", "xmm6", "xmm7", "xmm8", "xmm9",
                 "xmm10", "xmm11", "xmm12", "xmm13", "xmm14", "xmm15");
}
#undef GA_INT8_ROW_PAIR
#undef GA_INT8_ROW_SINGLE
#undef GA_INT8_ACC
#undef GA_INT8_ALL
#undef GA_INT8_STORE

// The AVX512-VNNI tile: row r's 16 columns in zmm r (even k4 steps) and zmm r + 4 (odd ones,
// so that eight sums are in flight: VPDPBUSD's latency is 4-5 cycles at up to one a cycle),
// b's two steps in zmm8-9, a row's broadcast bytes in zmm10-13. In assembly like the AVX2
// tile: GCC 12, given the intrinsics of a 4 x 32 variant, copied every accumulator through
// another register each step and ran at 156-171 G multiply-adds/s; written out, the
// schedule does not depend on the compiler.
#define GA_VNNI_ROWS(x, y, xo, yo)                \
  "vpbroadcastd (%[a" #x "],%[i]), %%zmm10\n\t"   \
  "vpbroadcastd 4(%[a" #x "],%[i]), %%zmm11\n\t"  \
  "vpbroadcastd (%[a" #y "],%[i]), %%zmm12\n\t"   \
  "vpbroadcastd 4(%[a" #y "],%[i]), %%zmm13\n\t"  \
  "vpdpbusd %%zmm8, %%zmm10, %%zmm" #x "\n\t"    \
  "vpdpbusd %%zmm9, %%zmm11, %%zmm" #xo "\n\t"   \
  "vpdpbusd %%zmm8, %%zmm12, %%zmm" #y "\n\t"    \
  "vpdpbusd %%zmm9, %%zmm13, %%zmm" #yo "\n\t"
#define GA_VNNI_LAST(x, r)                     \
  "vpbroadcastd (%[a" #x "],%[i]), %%zmm10\n\t" \
  "vpdpbusd %%zmm8, %%zmm10, %%zmm" #r "\n\t"

__attribute__((target("avx512f,avx512vl,avx512vnni"), noinline)) inline void kernel_vnni(
    int64_t k4, const uint8_t* const* rows, const int8_t* b, int32_t* acc, bool zero_first) {
  if (zero_first) std::memset(acc, 0, sizeof(int32_t) * kMR * kNR);
  if (k4 <= 0) return;
  int64_t i = 0, pairs = k4 / 2, single = k4 % 2;
  const uint8_t *a0 = rows[0], *a1 = rows[1], *a2 = rows[2], *a3 = rows[3];
  asm volatile(
      "vmovdqu32 (%[acc]), %%zmm0\n\t"
      "vmovdqu32 64(%[acc]), %%zmm1\n\t"
      "vmovdqu32 128(%[acc]), %%zmm2\n\t"
      "vmovdqu32 192(%[acc]), %%zmm3\n\t"
      "vpxord %%zmm4, %%zmm4, %%zmm4\n\t"
      "vpxord %%zmm5, %%zmm5, %%zmm5\n\t"
      "vpxord %%zmm6, %%zmm6, %%zmm6\n\t"
      "vpxord %%zmm7, %%zmm7, %%zmm7\n\t"
      "test %[p], %[p]\n\t"
      "jz 2f\n\t"
      "1:\n\t"
      "vmovdqu32 (%[b]), %%zmm8\n\t"
      "vmovdqu32 64(%[b]), %%zmm9\n\t"  //
      GA_VNNI_ROWS(0, 1, 4, 5) GA_VNNI_ROWS(2, 3, 6, 7)  //
      "add $8, %[i]\n\t"
      "sub $-128, %[b]\n\t"
      "dec %[p]\n\t"
      "jnz 1b\n\t"
      "2:\n\t"
      "test %[s], %[s]\n\t"
      "jz 3f\n\t"
      "vmovdqu32 (%[b]), %%zmm8\n\t"  //
      GA_VNNI_LAST(0, 0) GA_VNNI_LAST(1, 1) GA_VNNI_LAST(2, 2) GA_VNNI_LAST(3, 3)  //
      "3:\n\t"
      "vpaddd %%zmm4, %%zmm0, %%zmm0\n\t"
      "vpaddd %%zmm5, %%zmm1, %%zmm1\n\t"
      "vpaddd %%zmm6, %%zmm2, %%zmm2\n\t"
      "vpaddd %%zmm7, %%zmm3, %%zmm3\n\t"
      "vmovdqu32 %%zmm0, (%[acc])\n\t"
      "vmovdqu32 %%zmm1, 64(%[acc])\n\t"
      "vmovdqu32 %%zmm2, 128(%[acc])\n\t"
      "vmovdqu32 %%zmm3, 192(%[acc])\n\t"
      "vzeroupper\n\t"
      : [i] "+r"(i), [b] "+r"(b), [p] "+r"(pairs), [s] "+r"(single)
      : [a0] "r"(a0), [a1] "r"(a1), [a2] "r"(a2), [a3] "r"(a3), [acc] "r"(acc)
      : "cc", "memory", "xmm0", "xmm1", "xmm2", "xmm3", "xmm4", "xmm5", "xmm6", "xmm7", "xmm8", "xmm9",
        "xmm10", "xmm11", "xmm12", "xmm13", "xmm14", "xmm15");
}
#undef GA_VNNI_ROWS
#undef GA_VNNI_LAST
#endif

/// The register kernel `which` (never Auto) over k4 steps; `paired`: the activations are
/// 7-bit (Int8Inputs::Bits7), so the AVX2 kernel may add two steps' products in int16.
inline void kernel(Int8Kernel which, int64_t k4, bool paired, const uint8_t* const* rows, const int8_t* b,
                   int32_t* acc, bool zero_first) {
#if GA_X86_INT8_KERNELS
  if (which == Int8Kernel::Avx512Vnni) return kernel_vnni(k4, rows, b, acc, zero_first);
  if (which == Int8Kernel::Avx2)
    return paired ? kernel_avx2(k4 / 2, k4 % 2, rows, b, acc, zero_first)
                  : kernel_avx2(0, k4, rows, b, acc, zero_first);
#else
  (void)which;
  (void)paired;
#endif
  kernel_portable(k4, rows, b, acc, zero_first);
}

// ---- the blocked product ----

/// A tile's results, transposed for column runs: runs[c][r] = (acc[r][c] - zero_r * sums[c])
/// * (scale_r * scales[c]) for r < rows, c < cols, so that the results a column stores (rows
/// consecutive floats) are one aligned vector. Writing them one float at a time and then
/// reading the run back for the epilogue stalled every column on store forwarding: measured,
/// a 1x1 convolution 64 -> 256 on 56 x 56 spent two thirds of its time there.
inline void transpose_tile_portable(const int32_t* acc, const RowQuant* rq, int64_t rows, int64_t cols,
                                    const int32_t* sums, const float* scales, float (*runs)[kMR]) {
  for (int64_t r = 0; r < rows; ++r)
    for (int64_t c = 0; c < cols; ++c)
      runs[c][r] = static_cast<float>(acc[r * kNR + c] - rq[r].zero * sums[c]) * (rq[r].scale * scales[c]);
}

#if GA_X86_INT8_KERNELS
/// transpose_tile_portable for a full tile (the same bits: the same operations per value).
__attribute__((target("avx2"))) inline void transpose_tile_avx2(const int32_t* acc, const RowQuant* rq,
                                                                const int32_t* sums, const float* scales,
                                                                float (*runs)[kMR]) {
  static_assert(kMR == 4 && kNR == 16, "transpose_tile_avx2 is written for 4 x 16 tiles");
  for (int64_t c0 = 0; c0 < kNR; c0 += 4) {
    const __m128i s = _mm_loadu_si128(reinterpret_cast<const __m128i*>(sums + c0));
    const __m128 sc = _mm_loadu_ps(scales + c0);
    __m128 v[kMR];
    for (int64_t r = 0; r < kMR; ++r) {
      const __m128i a = _mm_loadu_si128(reinterpret_cast<const __m128i*>(acc + r * kNR + c0));
      const __m128i d = _mm_sub_epi32(a, _mm_mullo_epi32(_mm_set1_epi32(rq[r].zero), s));
      v[r] = _mm_mul_ps(_mm_cvtepi32_ps(d), _mm_mul_ps(_mm_set1_ps(rq[r].scale), sc));
    }
    _MM_TRANSPOSE4_PS(v[0], v[1], v[2], v[3]);
    for (int64_t j = 0; j < 4; ++j) _mm_store_ps(runs[c0 + j], v[j]);
  }
}
#endif

inline void transpose_tile(const int32_t* acc, const RowQuant* rq, int64_t rows, int64_t cols, const int32_t* sums,
                           const float* scales, float (*runs)[kMR]) {
#if GA_X86_INT8_KERNELS
  if (rows == kMR && cols == kNR && avx2_supported()) return transpose_tile_avx2(acc, rq, sums, scales, runs);
#endif
  transpose_tile_portable(acc, rq, rows, cols, sums, scales, runs);
}

/// A prepared weight's raw views (see Int8Weight).
struct PackedWeight {
  const int8_t* panels;
  const float* scales;
  const int32_t* sums;
  int64_t rows, taps, k4_per_tap;  // K4 = taps * k4_per_tap
  bool paired;                     // 7-bit activations (see kernel)
};

inline PackedWeight packed_of(const Int8Weight& w) {
  return {static_cast<const int8_t*>(w.packed.raw_data()),
          static_cast<const float*>(w.scales.raw_data()),
          static_cast<const int32_t*>(w.sums.raw_data()),
          w.rows,
          w.kh * w.kw,
          round_up(w.channels, 4) / 4,
          w.inputs == Int8Inputs::Bits7};
}

/// out(m, n) = scale(m) * w.scales[n] * (sum_k qa(m, k) qw(n, k) - zero(m) * w.sums[n]) for m
/// < M, n < w.rows. rows_of(m0, ptrs) sets ptrs[tap * kMR + r] to the bytes that row m0 + r
/// (r < kMR) multiplies by tap `tap` (k4_per_tap * 4 readable bytes each, also for rows past M);
/// quant_of_row(m) gives row m's RowQuant; out_of(m) a pointer p and a stride s such that
/// out(m, n) goes to p[n * s]; finish.row(p + n0 * s, s, n0, cols) then applies the epilogue
/// to the just-stored results n0..n0+cols-1 of a row, or finish.column(p, rows, n) to those
/// of column n in rows that lie one after another; finish.tile_columns may instead scale,
/// finish and store a whole tile of such rows that share one quantization (it returns false
/// where it does not). Parallel over blocks of rows and columns.
template <class RowsOf, class QuantOfRow, class OutOf, class Finish>
void product(int64_t M, const PackedWeight& w, const RowsOf& rows_of, const QuantOfRow& quant_of_row,
             const OutOf& out_of, const Finish& finish) {
  const int64_t m_panels = (M + kMR - 1) / kMR, n_panels = (w.rows + kNR - 1) / kNR;
  const int64_t K4 = w.taps * w.k4_per_tap, panel_bytes = K4 * kNR * 4;
  // A chunk of weight panels stays in L2 (128 KiB) while a block of row panels sweeps it;
  // blocks shrink until every thread has several tasks.
  int64_t n_chunk = std::max<int64_t>(1, std::min<int64_t>(n_panels, (int64_t(128) << 10) / panel_bytes));
  int64_t m_block = 96 / kMR;  // row panels per block: 96 rows
  const int64_t want = 4 * get_num_threads();
  auto tasks = [&] { return ((m_panels + m_block - 1) / m_block) * ((n_panels + n_chunk - 1) / n_chunk); };
  while (tasks() < want && m_block > 1) m_block /= 2;
  while (tasks() < want && n_chunk > 1) n_chunk = (n_chunk + 1) / 2;
  const int64_t m_blocks = (m_panels + m_block - 1) / m_block, n_chunks = (n_panels + n_chunk - 1) / n_chunk;
  // Tasks are taken from a shared counter: their sizes differ (the last block of each kind is
  // partial), and a static split left one thread waiting.
  const int64_t task_count = m_blocks * n_chunks;
  std::atomic<int64_t> next_task{0};
  const Int8Kernel which = int8_kernel();
  parallel_for(0, std::min<int64_t>(get_num_threads(), task_count), 1, [&](int64_t, int64_t) {
    alignas(32) int32_t acc[kMR * kNR];
    alignas(16) float runs[kNR][kMR];
    std::vector<const uint8_t*> ptrs(static_cast<size_t>(w.taps * kMR));
    for (int64_t t = next_task++; t < task_count; t = next_task++) {
      const int64_t mb = t / n_chunks, nc = t % n_chunks;
      const int64_t mp_end = std::min(m_panels, (mb + 1) * m_block), np_end = std::min(n_panels, (nc + 1) * n_chunk);
      for (int64_t mp = mb * m_block; mp < mp_end; ++mp) {
        const int64_t m0 = mp * kMR, rows = std::min(kMR, M - m0);
        RowQuant rq[kMR];
        float* out_row[kMR];
        int64_t out_stride[kMR];
        rows_of(m0, ptrs.data());
        for (int64_t r = 0; r < rows; ++r) {
          rq[r] = quant_of_row(m0 + r);
          const auto [p, stride] = out_of(m0 + r);
          out_row[r] = p;
          out_stride[r] = stride;
        }
        // A convolution's tile whose rows are consecutive pixels of one image: each output
        // channel's results are one run of `rows` floats, stored and finished in one pass
        // (by rows they would be 16 strided runs, each element its own cache line).
        bool column_runs = rows > 1 && out_stride[0] != 1;
        for (int64_t r = 1; r < rows && column_runs; ++r)
          column_runs = out_row[r] == out_row[0] + r && out_stride[r] == out_stride[0];
        // Whether the tile's rows share one quantization (pixels of one image).
        bool one_quant = true;
        for (int64_t r = 1; r < rows; ++r)
          one_quant = one_quant && rq[r].zero == rq[0].zero && rq[r].top == rq[0].top &&
                      std::memcmp(&rq[r].scale, &rq[0].scale, sizeof(float)) == 0;
        for (int64_t np = nc * n_chunk; np < np_end; ++np) {
          const int8_t* panel = w.panels + np * panel_bytes;
          for (int64_t tap = 0; tap < w.taps; ++tap)
            kernel(which, w.k4_per_tap, w.paired, ptrs.data() + tap * kMR, panel + tap * w.k4_per_tap * kNR * 4, acc,
                   tap == 0);
          const int64_t n0 = np * kNR, cols = std::min(kNR, w.rows - n0);
          if (column_runs) {
            if (rows == kMR && cols == kNR && one_quant &&
                finish.tile_columns(acc, rq[0], w.sums + n0, w.scales + n0, out_row[0] + n0 * out_stride[0],
                                    out_stride[0], n0))
              continue;
            transpose_tile(acc, rq, rows, cols, w.sums + n0, w.scales + n0, runs);
            for (int64_t c = 0; c < cols; ++c) finish.column(out_row[0] + (n0 + c) * out_stride[0], runs[c], rows, n0 + c);
            continue;
          }
          for (int64_t r = 0; r < rows; ++r) {
            const int64_t stride = out_stride[r];
            float* o = out_row[r] + n0 * stride;
            const int32_t* a = acc + r * kNR;
            const int32_t zero = rq[r].zero;
            const float scale = rq[r].scale;
            const int32_t* sums = w.sums + n0;
            const float* scales = w.scales + n0;
            if (stride == 1) {  // a linear layer's row: contiguous, so vectorized
              for (int64_t c = 0; c < cols; ++c) o[c] = static_cast<float>(a[c] - zero * sums[c]) * (scale * scales[c]);
            } else {
              for (int64_t c = 0; c < cols; ++c)
                o[c * stride] = static_cast<float>(a[c] - zero * sums[c]) * (scale * scales[c]);
            }
          }
        }
        // The epilogue once per row of the chunk (still in L1), not per tile: fewer, longer runs.
        const int64_t n_begin = nc * n_chunk * kNR, n_end = std::min(w.rows, np_end * kNR);
        if (!column_runs)
          for (int64_t r = 0; r < rows; ++r)
            finish.row(out_row[r] + n_begin * out_stride[r], out_stride[r], n_begin, n_end - n_begin);
      }
    }
  });
}

}  // namespace ga::backend::cpu::int8_gemm

#include "conv_kernels.hpp"
#include "epilogue.hpp"
#if GA_EMIT_CPU_KERNELS

namespace ga::backend::cpu {

namespace int8_gemm {
GA_SIMD_WARNINGS_PUSH  // see cpu_features.hpp

/// The epilogue e applied to a run of results in out (f32): o[c * stride] for c < cols are
/// the results of columns n0 + c (a bias is per column in both products' terms: a linear
/// layer's output feature, a convolution's output channel); the residual has out's layout.
struct Finisher {
  const float* bias = nullptr;
  const float* residual = nullptr;
  const float* out = nullptr;
  Activation activation = Activation::None;
  // Decided once per product: whether the activation is one the vector paths apply (none or
  // ReLU: column_sse, tile_columns_avx512), and whether whole tiles go through AVX-512.
  bool vector_activation = false, avx512_tiles = false;

  Finisher(const Tensor& o, const MatmulEpilogue& e, const char* op) {
    detail::check_epilogue(op, o, e);
    out = static_cast<const float*>(o.raw_data());
    if (e.bias.defined()) bias = static_cast<const float*>(e.bias.raw_data());
    if (e.residual.defined()) residual = static_cast<const float*>(e.residual.raw_data());
    activation = e.activation;
    vector_activation = activation == Activation::None || activation == Activation::Relu;
#if GA_X86_INT8_KERNELS
    avx512_tiles = vector_activation && detail::f32_avx512_supported();
#endif
  }
  /// Stores o[r] = the epilogue of v[r] for r < rows <= kMR: the results of column n, which
  /// go to consecutive places of out. One pass, one store per value; on x86 a full tile's run
  /// without an activation or with ReLU is one SSE vector (column_sse).
  void column(float* o, const float* v, int64_t rows, int64_t n) const {
#if GA_X86_INT8_KERNELS
    if (rows == kMR && vector_activation) return column_sse(o, v, n);
#endif
    if (rows == kMR) return column_run<kMR>(o, v, kMR, n);
    column_run<0>(o, v, rows, n);
  }
#if GA_X86_INT8_KERNELS
  /// column() for a full tile's run (v 16-byte aligned) without an activation or with ReLU,
  /// in one SSE vector: the same operations in the same order as column_run, so the same
  /// bits. (column_run compiled to scalar code: a third of the product's time outside its
  /// register kernel went there on RN50's 1x1 convolutions.)
  void column_sse(float* o, const float* v, int64_t n) const {
    static_assert(kMR == 4, "column_sse holds a run in one SSE vector");
    __m128 t = _mm_load_ps(v);
    if (bias) t = _mm_add_ps(t, _mm_set1_ps(bias[n]));
    if (residual) t = _mm_add_ps(t, _mm_loadu_ps(residual + (o - out)));
    // MAXPS gives its second operand where either is NaN or both are zeros: t < 0 ? 0 : t.
    if (activation == Activation::Relu) t = _mm_max_ps(_mm_setzero_ps(), t);
    _mm_storeu_ps(o, t);
  }
#endif
  /// For a full tile whose kMR rows lie one after another in out and share the quantization
  /// rq (a convolution's pixels of one image): o[c * stride + r] = the epilogue of (acc[r][c]
  /// - rq.zero * sums[c]) * (rq.scale * scales[c]) for c < kNR, r < kMR, where o is column
  /// n0's run. The same operations in the same order as transpose_tile and column, so the
  /// same bits. Returns false, having done nothing, where it does not apply (no AVX-512, an
  /// activation other than ReLU).
  bool tile_columns(const int32_t* acc, const RowQuant& rq, const int32_t* sums, const float* scales, float* o,
                    int64_t stride, int64_t n0) const {
#if GA_X86_INT8_KERNELS
    if (avx512_tiles) {
      tile_columns_avx512(acc, rq, sums, scales, o, stride, n0);
      return true;
    }
#endif
    (void)acc, (void)rq, (void)sums, (void)scales, (void)o, (void)stride, (void)n0;
    return false;
  }
#if GA_X86_INT8_KERNELS
  /// tile_columns on AVX-512: the tile's rows scaled in four zmm (one per row, 16 columns),
  /// transposed within each 128-bit lane, so that lane j of vector i holds column 4j + i's
  /// run, then finished four runs per vector and stored a lane at a time. Where the tile
  /// went through transpose_tile and one column() call per column (a third of the product's
  /// time outside its register kernel on RN50's 1x1 convolutions at batch 1), this is about
  /// 80 instructions a tile.
  __attribute__((target("avx512f"))) void tile_columns_avx512(const int32_t* acc, const RowQuant& rq,
                                                             const int32_t* sums, const float* scales, float* o,
                                                             int64_t stride, int64_t n0) const {
    static_assert(kMR == 4 && kNR == 16, "tile_columns_avx512 is written for 4 x 16 tiles");
    const __m512i correction = _mm512_mullo_epi32(_mm512_set1_epi32(rq.zero), _mm512_loadu_si512(sums));
    const __m512 scale = _mm512_mul_ps(_mm512_set1_ps(rq.scale), _mm512_loadu_ps(scales));
    __m512 v[kMR];
    for (int r = 0; r < kMR; ++r)
      v[r] = _mm512_mul_ps(_mm512_cvtepi32_ps(_mm512_sub_epi32(_mm512_loadu_si512(acc + r * kNR), correction)), scale);
    const __m512 t0 = _mm512_unpacklo_ps(v[0], v[1]), t1 = _mm512_unpackhi_ps(v[0], v[1]);
    const __m512 t2 = _mm512_unpacklo_ps(v[2], v[3]), t3 = _mm512_unpackhi_ps(v[2], v[3]);
    const __m512 columns[4] = {_mm512_shuffle_ps(t0, t2, 0x44), _mm512_shuffle_ps(t0, t2, 0xee),
                               _mm512_shuffle_ps(t1, t3, 0x44), _mm512_shuffle_ps(t1, t3, 0xee)};
    const __m512 biases = bias ? _mm512_loadu_ps(bias + n0) : _mm512_setzero_ps();
    const float* res = residual ? residual + (o - out) : nullptr;
    for (int i = 0; i < 4; ++i) {
      __m512 c = columns[i];
      if (bias) {  // lane j: bias of column 4j + i, four times
        const __m512i which = _mm512_set_epi32(12 + i, 12 + i, 12 + i, 12 + i, 8 + i, 8 + i, 8 + i, 8 + i, 4 + i,
                                               4 + i, 4 + i, 4 + i, i, i, i, i);
        c = _mm512_add_ps(c, _mm512_permutexvar_ps(which, biases));
      }
      if (res) {
        __m512 r = _mm512_zextps128_ps512(_mm_loadu_ps(res + i * stride));
        r = _mm512_insertf32x4(r, _mm_loadu_ps(res + (4 + i) * stride), 1);
        r = _mm512_insertf32x4(r, _mm_loadu_ps(res + (8 + i) * stride), 2);
        r = _mm512_insertf32x4(r, _mm_loadu_ps(res + (12 + i) * stride), 3);
        c = _mm512_add_ps(c, r);
      }
      // MAXPS gives its second operand where either is NaN or both are zeros: t < 0 ? 0 : t.
      if (activation == Activation::Relu) c = _mm512_max_ps(_mm512_setzero_ps(), c);
      _mm_storeu_ps(o + i * stride, _mm512_castps512_ps128(c));
      _mm_storeu_ps(o + (4 + i) * stride, _mm512_extractf32x4_ps(c, 1));
      _mm_storeu_ps(o + (8 + i) * stride, _mm512_extractf32x4_ps(c, 2));
      _mm_storeu_ps(o + (12 + i) * stride, _mm512_extractf32x4_ps(c, 3));
    }
  }
#endif
  /// column() with kFixed rows (0: `count` rows).
  template <int64_t kFixed>
  void column_run(float* o, const float* v, int64_t count, int64_t n) const {
    const int64_t rows = kFixed ? kFixed : count;
    float t[kMR];
    const float b = bias ? bias[n] : 0.0f;
    for (int64_t r = 0; r < rows; ++r) t[r] = bias ? v[r] + b : v[r];
    if (residual) {
      const float* res = residual + (o - out);
      for (int64_t r = 0; r < rows; ++r) t[r] += res[r];
    }
    if (activation == Activation::Relu) {  // the common case, inline for a run this short (NaN stays NaN)
      for (int64_t r = 0; r < rows; ++r) o[r] = t[r] < 0 ? 0.0f : t[r];
      return;
    }
    for (int64_t r = 0; r < rows; ++r) o[r] = t[r];
    detail::activate_row<float>(activation, o, rows);
  }
  void row(float* o, int64_t stride, int64_t n0, int64_t cols) const {
    const float* r = residual ? residual + (o - out) : nullptr;
    if (stride == 1) {  // contiguous: vectorized
      if (bias)
        for (int64_t c = 0; c < cols; ++c) o[c] += bias[n0 + c];
      if (r)
        for (int64_t c = 0; c < cols; ++c) o[c] += r[c];
      return detail::activate_row<float>(activation, o, cols);
    }
    if (bias)
      for (int64_t c = 0; c < cols; ++c) o[c * stride] += bias[n0 + c];
    if (r)
      for (int64_t c = 0; c < cols; ++c) o[c * stride] += r[c * stride];
    if (activation == Activation::None) return;
    const UnaryOp op = detail::activation_op(activation);
    for (int64_t c = 0; c < cols; ++c) o[c * stride] = detail::unary_scalar<float>(op, o[c * stride], 0.0f, 0.0f);
  }
};

GA_SIMD_WARNINGS_POP
}  // namespace int8_gemm

GA_CPU_KERNEL Int8Weight CpuBackend::int8_weight(const Tensor& w) {
  using namespace int8_gemm;
  GA_CHECK(w.dtype() == DType::f32 && w.is_contiguous() && (w.dim() == 2 || w.dim() == 4), ShapeError,
           "int8_weight: the weight must be a contiguous f32 [out, in] or [out, channels, kh, kw] tensor, got ",
           dtype_name(w.dtype()), " ", shape_str(w.shape()));
  Int8Weight q;
  q.rows = w.size(0);
  q.channels = w.size(1);
  q.kh = w.dim() == 4 ? w.size(2) : 1;
  q.kw = w.dim() == 4 ? w.size(3) : 1;
  const int64_t N = q.rows, C = q.channels, taps = q.kh * q.kw, Cp = round_up(C, 4), K4 = taps * Cp / 4;
  const int64_t panels = (N + kNR - 1) / kNR;
  q.packed = detail::scratch_tensor({panels * K4 * kNR * 4}, DType::u8);
  q.scales = detail::scratch_tensor({N}, DType::f32);
  q.sums = detail::scratch_tensor({N}, DType::i32);
  std::memset(q.packed.raw_data(), 0, static_cast<size_t>(q.packed.numel()));
  const float* src = static_cast<const float*>(w.raw_data());
  int8_t* dst = static_cast<int8_t*>(q.packed.raw_data());
  float* scales = static_cast<float*>(q.scales.raw_data());
  int32_t* sums = static_cast<int32_t*>(q.sums.raw_data());
  parallel_for(0, N, 16, [&](int64_t lo, int64_t hi) {
    for (int64_t n = lo; n < hi; ++n) {
      const float* row = src + n * C * taps;  // [C][taps]
      float amax = 0;
      bool finite = true;
      for (int64_t i = 0; i < C * taps; ++i) {
        finite = finite && std::isfinite(row[i]);
        amax = std::max(amax, std::fabs(row[i]));
      }
      GA_CHECK(finite, ValueError, "int8_weight: output channel ", n, " of the weight ", shape_str(w.shape()),
               " holds a non-finite value");
      const float scale = amax > 0 ? amax / kWeightMax : 1.0f;
      int32_t sum = 0;
      for (int64_t c = 0; c < C; ++c)
        for (int64_t t = 0; t < taps; ++t) {
          const float v = std::nearbyint(row[c * taps + t] / scale);
          const int8_t qv = static_cast<int8_t>(std::min<float>(kWeightMax, std::max<float>(-kWeightMax, v)));
          const int64_t k = t * Cp + c;  // tap-major, channel innermost
          dst[((n / kNR * K4 + k / 4) * kNR + n % kNR) * 4 + k % 4] = qv;
          sum += qv;
        }
      scales[n] = scale;
      sums[n] = sum;
    }
  });
  return q;
}

GA_CPU_KERNEL void CpuBackend::int8_linear(const Tensor& x, const Int8Weight& w, const Tensor& out,
                                           const MatmulEpilogue& e) {
  using namespace int8_gemm;
  const int64_t M = x.size(0), K = x.size(1), N = w.rows;
  GA_CHECK(x.dtype() == DType::f32 && x.is_contiguous() && x.dim() == 2 && w.kh == 1 && w.kw == 1 &&
               K == w.channels && out.dtype() == DType::f32 && out.is_contiguous() &&
               out.shape() == Shape({1, M, N}),
           ShapeError, "int8_linear: input ", shape_str(x.shape()), " ", dtype_name(x.dtype()), ", an int8 weight [",
           N, ", ", w.channels, "] (", w.kh, "x", w.kw, ") and output ", shape_str(out.shape()), " do not fit");
  if (M == 0 || N == 0) return;
  const int64_t Kp = round_up(K, 4);
  const int32_t top = activation_max(w.inputs);
  // The quantized rows, then one row of zeros that the kernel reads for rows past M.
  const std::unique_ptr<uint8_t[]> q(new uint8_t[static_cast<size_t>((M + 1) * Kp)]);
  std::vector<RowQuant> rq(static_cast<size_t>(M));
  const float* xs = static_cast<const float*>(x.raw_data());
  parallel_for(0, M, 8, [&](int64_t lo, int64_t hi) {
    for (int64_t m = lo; m < hi; ++m) {
      rq[static_cast<size_t>(m)] = quant_of(xs + m * K, K, top);
      quantize(xs + m * K, K, rq[static_cast<size_t>(m)], q.get() + m * Kp);
      std::memset(q.get() + m * Kp + K, 0, static_cast<size_t>(Kp - K));  // times zero weights
    }
  });
  const uint8_t* pad = q.get() + M * Kp;
  std::memset(q.get() + M * Kp, 0, static_cast<size_t>(Kp));
  float* o = static_cast<float*>(out.raw_data());
  product(
      M, packed_of(w),
      [&](int64_t m0, const uint8_t** ptrs) {
        for (int64_t r = 0; r < kMR; ++r) ptrs[r] = m0 + r < M ? q.get() + (m0 + r) * Kp : pad;
      },
      [&](int64_t m) { return rq[static_cast<size_t>(m)]; },
      [&](int64_t m) { return std::pair<float*, int64_t>(o + m * N, 1); }, Finisher(out, e, "int8_linear"));
}

GA_CPU_KERNEL void CpuBackend::int8_conv2d(const Tensor& x, const Int8Weight& w, const Window2d& g, const Tensor& out,
                                           const MatmulEpilogue& e) {
  using namespace int8_gemm;
  const int64_t B = x.size(0), C = x.size(1), H = x.size(2), W = x.size(3), O = w.rows;
  const int64_t OH = g.out_h(H), OW = g.out_w(W), P = OH * OW;
  GA_CHECK(x.dtype() == DType::f32 && x.is_contiguous() && x.dim() == 4 && C == w.channels && g.kh == w.kh &&
               g.kw == w.kw && out.dtype() == DType::f32 && out.is_contiguous() && out.shape() == Shape({B, O, P}),
           ShapeError, "int8_conv2d: input ", shape_str(x.shape()), " ", dtype_name(x.dtype()), ", an int8 weight [",
           O, ", ", w.channels, ", ", w.kh, ", ", w.kw, "] and output ", shape_str(out.shape()), " do not fit");
  if (out.numel() == 0) return;
  // Each image quantized as a whole, stored NHWC with channels padded to Cp (by its zero
  // point). Every byte of q is written below, so it starts uninitialised.
  const int64_t Cp = round_up(C, 4), HW = H * W;
  const int32_t top = activation_max(w.inputs);
  const std::unique_ptr<uint8_t[]> q(new uint8_t[static_cast<size_t>(B * HW * Cp)]);
  // Without horizontal padding every window row lies in its image row: the kw pixels a
  // window row reads are one run of kw * Cp bytes, so the kernel runs over whole window rows
  // (taps = kh; the ViT's patch embedding would otherwise call it once per 4 bytes).
  const bool row_taps = g.pw == 0;
  const int64_t span = row_taps ? g.kw * Cp : Cp;
  PackedWeight pw = packed_of(w);
  if (row_taps) {
    pw.taps = g.kh;
    pw.k4_per_tap = g.kw * Cp / 4;
  }
  std::vector<uint8_t> zero_rows(static_cast<size_t>((B + 1) * span), 0);  // per image, then one for rows past M
  std::vector<RowQuant> iq(static_cast<size_t>(B));
  const float* xs = static_cast<const float*>(x.raw_data());
  // Each image's extremes, over pieces of at least 32 K values so that one image keeps every
  // thread busy (at batch 1, a serial pass over the image held the other thread idle).
  const int64_t threads = get_num_threads();
  const int64_t pieces = std::max<int64_t>(1, std::min<int64_t>(C * HW / (int64_t(32) << 10), 4 * threads / B));
  std::vector<Extremes> piece_extremes(static_cast<size_t>(B * pieces));
  parallel_for(0, B * pieces, 1, [&](int64_t lo, int64_t hi) {
    for (int64_t t = lo; t < hi; ++t) {
      const int64_t b = t / pieces, j = t % pieces, first = C * HW * j / pieces, end = C * HW * (j + 1) / pieces;
      piece_extremes[static_cast<size_t>(t)] = extremes_of(xs + b * C * HW + first, end - first);
    }
  });
  for (int64_t b = 0; b < B; ++b) {
    Extremes e = piece_extremes[static_cast<size_t>(b * pieces)];
    for (int64_t j = 1; j < pieces; ++j) e = e.merged(piece_extremes[static_cast<size_t>(b * pieces + j)]);
    iq[static_cast<size_t>(b)] = row_quant(e.lo, e.hi, top);
  }
  // Blocks of `run` pixels: each channel's run quantized into an L2-sized buffer [Cp][run]
  // (at most about 128 KiB), then transposed into the NHWC rows 16 x 16 bytes at a time.
  // (Scattering bytes straight into rows of Cp bytes touches a new cache line per byte;
  // short runs per channel read too many pages at once for the prefetchers: 64-pixel runs
  // made a 1x1 convolution 2x slower.) With fewer images than threads, each image is cut
  // into a multiple of the threads' count of blocks, so that no thread waits on another.
  // Where the channels come in whole groups of 16 and the CPU has AVX-512, a block skips the
  // buffer: quantize_nhwc_avx512 quantizes and transposes in registers.
  const int64_t buffer_bytes = int64_t(128) << 10;
  int64_t blocks = std::max<int64_t>(1, (HW * Cp + buffer_bytes - 1) / buffer_bytes);
  if (B < threads) blocks = round_up(blocks, (threads + B - 1) / B);
  const int64_t run = round_up((HW + blocks - 1) / blocks, 16);
  blocks = (HW + run - 1) / run;
  parallel_for(0, B * blocks, 1, [&](int64_t lo, int64_t hi) {
    std::vector<uint8_t> buf;  // sized on first use: the fused path needs none
    for (int64_t t = lo; t < hi; ++t) {
      const int64_t b = t / blocks, i0 = t % blocks * run, n = std::min(run, HW - i0);
      const RowQuant rq = iq[static_cast<size_t>(b)];
#if GA_X86_INT8_KERNELS
      if (C % 16 == 0 && !std::isnan(rq.scale) && detail::f32_avx512_supported()) {
        quantize_nhwc_avx512(xs + b * C * HW + i0, HW, C, n, rq, q.get() + (b * HW + i0) * Cp);
        continue;
      }
#endif
      buf.resize(static_cast<size_t>(Cp * run));
      for (int64_t c = 0; c < C; ++c) quantize(xs + (b * C + c) * HW + i0, n, rq, buf.data() + c * run);
      std::memset(buf.data() + C * run, rq.zero, static_cast<size_t>((Cp - C) * run));
      // Locals only: byte stores may alias anything the lambda reaches by reference.
      uint8_t* const d = q.get() + (b * HW + i0) * Cp;
      const uint8_t* const src = buf.data();
      const int64_t cp = Cp, stride = run, whole = n / 16 * 16;
      for (int64_t c0 = 0; c0 < cp; c0 += 16) {
        const int64_t c1 = std::min(cp, c0 + 16);
        int64_t i = 0;
        if (c1 - c0 == 16)
          for (; i < whole; i += 16) transpose_bytes_16x16(src + c0 * stride + i, stride, d + i * cp + c0, cp);
        for (; i < n; ++i)
          for (int64_t c = c0; c < c1; ++c) d[i * cp + c] = src[c * stride + i];
      }
    }
  });
  for (int64_t b = 0; b < B; ++b)
    std::fill(zero_rows.begin() + b * span, zero_rows.begin() + (b + 1) * span,
              static_cast<uint8_t>(iq[static_cast<size_t>(b)].zero));
  const int64_t M = B * P;
  float* o = static_cast<float*>(out.raw_data());
  product(
      M, pw,
      [&](int64_t m0, const uint8_t** ptrs) {
        for (int64_t r = 0; r < kMR; ++r) {
          const int64_t m = m0 + r;
          if (m >= M) {
            for (int64_t tap = 0; tap < pw.taps; ++tap) ptrs[tap * kMR + r] = zero_rows.data() + B * span;
            continue;
          }
          const int64_t b = m / P, p = m % P, y0 = p / OW * g.sh - g.ph, x0 = p % OW * g.sw - g.pw;
          const uint8_t* image = q.get() + b * HW * Cp;
          if (row_taps) {
            for (int64_t ky = 0; ky < g.kh; ++ky) {
              const int64_t iy = y0 + ky;
              ptrs[ky * kMR + r] = iy >= 0 && iy < H ? image + (iy * W + x0) * Cp : zero_rows.data() + b * span;
            }
            continue;
          }
          for (int64_t ky = 0; ky < g.kh; ++ky)
            for (int64_t kx = 0; kx < g.kw; ++kx) {
              const int64_t iy = y0 + ky, ix = x0 + kx;
              ptrs[(ky * g.kw + kx) * kMR + r] = iy >= 0 && iy < H && ix >= 0 && ix < W
                                                     ? image + (iy * W + ix) * Cp
                                                     : zero_rows.data() + b * Cp;
            }
        }
      },
      [&](int64_t m) { return iq[static_cast<size_t>(m / P)]; },
      [&](int64_t m) { return std::pair<float*, int64_t>(o + m / P * O * P + m % P, P); },
      Finisher(out, e, "int8_conv2d"));
}

}  // namespace ga::backend::cpu
#endif
