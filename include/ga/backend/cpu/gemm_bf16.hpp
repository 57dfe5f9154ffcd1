// The CPU backend's mixed matrix product: C (f32) = A @ B where A and B are each f32, bf16
// or f16 (any strides), computed in bf16 arithmetic with f32 accumulation, each f32/f16
// operand split into as many bf16 terms as the precision asks (backend::MixedPrecision).
// This is how published bf16/f16 weights are used without converting them to f32 first.
//
// Three kernels, picked at run time from what the CPU and the OS allow (cpuid, XCR0, and on
// Linux the AMX permission request): AMX tiles (TDPBF16PS), AVX512-BF16 dot products
// (VDPBF16PS), or a portable reference (convert to f32, then Eigen's GEMM, or the packed f32
// kernel of gemm_f32.hpp where the sum is one product and that kernel takes it). The x86 code is
// compiled with per-function target attributes, so a portable build still carries it and
// uses it on CPUs that have the instructions. This file is the only place that knows them.
#pragma once
#include <algorithm>
#include <cmath>
#include <cstdint>
#include <cstdlib>
#include <cstring>
#include <memory>
#include <string>
#include <vector>

#include "cpu_backend.hpp"
#include "epilogue.hpp"
#include "gemm_f32.hpp"

#if defined(__x86_64__) && ((defined(__clang__) && __clang_major__ >= 12) || \
                            (defined(__GNUC__) && !defined(__clang__) && __GNUC__ >= 11))
#define GA_X86_BF16_KERNELS 1
#include <cpuid.h>
#include <immintrin.h>
#if defined(__linux__)
#include <sys/syscall.h>
#include <unistd.h>
#endif
#else
#define GA_X86_BF16_KERNELS 0
#endif

namespace ga::backend::cpu {

/// The implementations of the mixed product. They agree up to the order of
/// f32 accumulation; Reference runs everywhere.
enum class Bf16Kernel { Auto, Amx, Avx512Bf16, Reference };

inline const char* bf16_kernel_name(Bf16Kernel k) {
  switch (k) {
    case Bf16Kernel::Auto: return "auto";
    case Bf16Kernel::Amx: return "amx";
    case Bf16Kernel::Avx512Bf16: return "avx512bf16";
    case Bf16Kernel::Reference: return "reference";
  }
  return "?";
}

namespace detail {

struct Bf16CpuSupport {
  bool avx512bf16 = false;  // AVX-512 F/DQ/BW/VL + BF16, with the OS saving ZMM state
  bool amx = false;         // AMX-TILE + AMX-BF16, enabled by the OS and permitted to this process
};

#if GA_X86_BF16_KERNELS
inline uint64_t read_xcr0() {
  uint32_t lo, hi;
  __asm__ volatile("xgetbv" : "=a"(lo), "=d"(hi) : "c"(0));
  return (uint64_t(hi) << 32) | lo;
}
#endif

/// Probes the CPU once. On Linux, asks the kernel for permission to use AMX tile data
/// (arch_prctl ARCH_REQ_XCOMP_PERM): without it the first tile instruction kills the process.
inline Bf16CpuSupport probe_bf16_support() {
  Bf16CpuSupport s;
#if GA_X86_BF16_KERNELS
  unsigned a, b, c, d;
  if (!__get_cpuid(1, &a, &b, &c, &d) || !(c & (1u << 27))) return s;  // OSXSAVE
  if (!__get_cpuid_count(7, 0, &a, &b, &c, &d)) return s;
  const unsigned max_sub = a;
  const bool avx512 = (b & (1u << 16)) && (b & (1u << 17)) && (b & (1u << 30)) && (b & (1u << 31));  // F DQ BW VL
  const bool amx_bf16 = d & (1u << 22), amx_tile = d & (1u << 24);
  bool bf16 = false;
  if (max_sub >= 1 && __get_cpuid_count(7, 1, &a, &b, &c, &d)) bf16 = a & (1u << 5);
  const uint64_t xcr0 = read_xcr0();
  const bool zmm_state = (xcr0 & 0xe6) == 0xe6;  // SSE, AVX, opmask, ZMM upper halves, ZMM16-31
  s.avx512bf16 = avx512 && bf16 && zmm_state;
  const bool tile_state = (xcr0 & (3u << 17)) == (3u << 17);  // XTILECFG, XTILEDATA
  if (s.avx512bf16 && amx_bf16 && amx_tile && tile_state) {
#if defined(__linux__) && defined(SYS_arch_prctl)
    constexpr long kArchReqXcompPerm = 0x1023, kXfeatureXtiledata = 18;
    s.amx = syscall(SYS_arch_prctl, kArchReqXcompPerm, kXfeatureXtiledata) == 0;
#else
    s.amx = false;  // other systems: no known permission protocol, so no AMX
#endif
  }
#endif
  return s;
}

inline const Bf16CpuSupport& bf16_support() {
  static const Bf16CpuSupport s = probe_bf16_support();
  return s;
}

inline Bf16Kernel best_bf16_kernel() {
  if (bf16_support().amx) return Bf16Kernel::Amx;
  if (bf16_support().avx512bf16) return Bf16Kernel::Avx512Bf16;
  return Bf16Kernel::Reference;
}

/// The initial choice: the best kernel, capped by the environment variable GA_BF16_KERNEL
/// (amx, avx512bf16 or reference) when it names one this machine can run.
inline Bf16Kernel initial_bf16_kernel() {
  const Bf16Kernel best = best_bf16_kernel();
  const char* env = std::getenv("GA_BF16_KERNEL");
  if (!env) return best;
  const std::string v = env;
  if (v == "reference") return Bf16Kernel::Reference;
  if (v == "avx512bf16" && bf16_support().avx512bf16) return Bf16Kernel::Avx512Bf16;
  return best;
}

inline Bf16Kernel& bf16_kernel_setting() {
  static Bf16Kernel k = initial_bf16_kernel();
  return k;
}

}  // namespace detail

/// Whether this machine (CPU, OS, and this build's compiler) can run kernel k. Auto and
/// Reference always can.
inline bool bf16_kernel_supported(Bf16Kernel k) {
  switch (k) {
    case Bf16Kernel::Amx: return detail::bf16_support().amx;
    case Bf16Kernel::Avx512Bf16: return detail::bf16_support().avx512bf16;
    default: return true;
  }
}

/// Selects the kernel for every later mixed product (Auto: the fastest this
/// machine runs). Not thread-safe against products running concurrently; meant for tests,
/// benchmarks and start-up. Throws ValueError when the machine cannot run k.
inline void set_bf16_kernel(Bf16Kernel k) {
  GA_CHECK(bf16_kernel_supported(k), ValueError, "set_bf16_kernel: the ", bf16_kernel_name(k),
           " kernel is not supported on this machine (CPU, OS or compiler)");
  detail::bf16_kernel_setting() = k == Bf16Kernel::Auto ? detail::best_bf16_kernel() : k;
}

/// The kernel mixed products use now (never Auto).
inline Bf16Kernel bf16_kernel() { return detail::bf16_kernel_setting(); }

namespace bf16_gemm {

/// Bits of t0 .. t{n-1}, the bf16 terms of v: t0 = bf16(v), t1 = bf16(v - t0), ... (each
/// rounded to nearest even). A non-finite term ends the sum: the later ones are 0.
inline void split_scalar(float v, int n, uint16_t* terms) {
  for (int p = 0; p < n; ++p) {
    terms[p] = bfloat16::from_float(v);
    const float t = bfloat16::to_float(terms[p]);
    v = std::isfinite(t) ? v - t : 0.0f;
  }
}

/// One matrix operand [rows, cols]: element (i, j) is at p[i * rs + j * cs] (in elements)
/// and has dtype dt (f32, bf16 or f16); it is packed as `planes` bf16 terms.
struct Operand {
  const void* p;
  DType dt;
  int64_t rs, cs;
  int planes;
  const char* at(int64_t i, int64_t j) const {
    return static_cast<const char*>(p) + (i * rs + j * cs) * int64_t(dtype_size(dt));
  }
  /// The element's exact value.
  float value(const char* q) const {
    switch (dt) {
      case DType::bf16: {
        uint16_t v;
        std::memcpy(&v, q, 2);
        return bfloat16::to_float(v);
      }
      case DType::f16: {
        uint16_t v;
        std::memcpy(&v, q, 2);
        return half::to_float(v);
      }
      default: {
        float v;
        std::memcpy(&v, q, 4);
        return v;
      }
    }
  }
};

/// Terms an operand of dtype dt is split into at precision p: bf16 is exact in one; f16
/// (11 significant bits) in two; f32 (24) in three.
inline int planes_for(DType dt, MixedPrecision p) {
  const int n = static_cast<int>(p);
  return dt == DType::bf16 ? 1 : dt == DType::f16 ? std::min(n, 2) : n;
}

/// Where the reference kernel's sum is one product of exact f32 values (an operand of one
/// term: a bf16 one, or either at Medium precision), how many leading terms of each operand
/// it multiplies: 1 of that operand, the other's up to the precision. Both 0 where it sums
/// several products.
struct SingleProduct {
  int a_terms = 0, b_terms = 0;
  explicit operator bool() const { return a_terms > 0; }
};
inline SingleProduct single_product(DType a, DType b, MixedPrecision p) {
  const int n = static_cast<int>(p), ap = planes_for(a, p), bp = planes_for(b, p);
  if (ap != 1 && bp != 1) return {};
  return ap <= bp ? SingleProduct{1, std::min(bp, n)} : SingleProduct{std::min(ap, n), 1};
}

/// The partial products (term of A, term of B) a product sums: i + j < n, smallest first.
struct TermPairs {
  int count = 0;
  int a[6] = {}, b[6] = {};
  TermPairs(int a_planes, int b_planes, MixedPrecision p) {
    const int n = static_cast<int>(p);
    for (int s = n - 1; s >= 0; --s)
      for (int i = 0; i < a_planes; ++i)
        for (int j = 0; j < b_planes; ++j)
          if (i + j == s) {
            a[count] = i;
            b[count] = j;
            ++count;
          }
  }
};

// Packed layouts (bf16 bits, zero-padded to whole tiles), shared by both x86 kernels:
//   A [M, K]: tiles [M/16][planes][K/32], each 16 rows x 32 k, row-major (the AMX A-tile
//             layout).
//   B [K, N]: tiles [N/16][planes][K/32], each 16 k-pairs x 16 n x 2 (the AMX B-tile
//             "VNNI" layout: the two k of a pair side by side), so a row of a tile is one
//             VDPBF16PS operand.
inline constexpr int64_t kTileElems = 512;

}  // namespace bf16_gemm
}  // namespace ga::backend::cpu

#if GA_EMIT_CPU_KERNELS
#include <Eigen/Core>

#include "host_cache.hpp"
#include "parallel.hpp"

namespace ga::backend::cpu::bf16_gemm {

/// Terms an operand of dtype dt needs to be represented exactly (bf16 1, f16 2, f32 3).
inline int exact_planes(DType dt) { return dt == DType::bf16 ? 1 : dt == DType::f16 ? 2 : 3; }

/// Whether X runs down its columns (a transposed weight): then it is read, and converted,
/// column by column.
inline bool by_column(const Operand& X) { return X.rs == 1 && X.cs != 1; }

/// Writes the sum of terms [first, last) of every element of X [rows, cols] into m (an
/// Eigen matrix of that shape), sweeping X's contiguous dim; the exact value when the
/// terms cover it.
template <class Mat>
void fill_terms(const Operand& X, int64_t rows, int64_t cols, int first, int last, Mat& m) {
  const bool exact = first == 0 && last >= exact_planes(X.dt);
  auto sweep = [&](const auto& element) {
    if (by_column(X)) {
      parallel_for(0, cols, 16, [&](int64_t lo, int64_t hi) {
        for (int64_t j = lo; j < hi; ++j)
          for (int64_t i = 0; i < rows; ++i) m(i, j) = element(i * X.rs + j * X.cs);
      });
    } else {
      parallel_for(0, rows, 16, [&](int64_t lo, int64_t hi) {
        for (int64_t i = lo; i < hi; ++i)
          for (int64_t j = 0; j < cols; ++j) m(i, j) = element(i * X.rs + j * X.cs);
      });
    }
  };
  // The common cases (a bf16 weight, an f32 activation whole or rounded to its leading
  // term, as the Medium precision asks) with the dtype known, in loops the compiler can
  // vectorize: the general form below costs more per element than the product does per
  // multiply-add once the other operand has few rows (a convolution's 64 channels).
  const float* f32 = static_cast<const float*>(X.p);
  const uint16_t* u16 = static_cast<const uint16_t*>(X.p);
  if (X.dt == DType::bf16 && exact) return sweep([&](int64_t at) { return bfloat16::to_float(u16[at]); });
  if (X.dt == DType::f32 && exact) return sweep([&](int64_t at) { return f32[at]; });
  if (X.dt == DType::f32 && first == 0 && last == 1)
    return sweep([&](int64_t at) { return bfloat16::to_float(bfloat16::from_float(f32[at])); });
  sweep([&](int64_t at) {
    const float v = X.value(static_cast<const char*>(X.p) + at * int64_t(dtype_size(X.dt)));
    if (exact) return v;
    uint16_t t[3];
    split_scalar(v, last, t);
    float s = 0;
    for (int p = last - 1; p >= first; --p) s += bfloat16::to_float(t[p]);
    return s;
  });
}

/// out [rows, cols] (row-major f32) = the sum of the leading `terms` terms of every element
/// of X [rows, cols]: the exact value when they cover it.
inline void to_f32_terms(const Operand& X, int64_t rows, int64_t cols, int terms, float* out) {
  Eigen::Map<Eigen::Matrix<float, Eigen::Dynamic, Eigen::Dynamic, Eigen::RowMajor>> m(out, rows, cols);
  fill_terms(X, rows, cols, 0, terms, m);
}

/// Portable kernel: sums A_i @ B_j over the term pairs with Eigen's f32 GEMM, grouping the
/// terms of the operand with more of them (a sum of leading terms is exact in f32). Each
/// operand is converted in the layout of its source (column-major for a transposed one).
inline void gemm_reference(const Operand& A, const Operand& B, float* C, int64_t M, int64_t N, int64_t K,
                           MixedPrecision prec) {
  using RowMat = Eigen::Matrix<float, Eigen::Dynamic, Eigen::Dynamic, Eigen::RowMajor>;
  using ColMat = Eigen::Matrix<float, Eigen::Dynamic, Eigen::Dynamic, Eigen::ColMajor>;
  const int n = static_cast<int>(prec);
  Eigen::Map<RowMat> c(C, M, N);
  c.setZero();
  // c += (terms [a0, a1) of A) @ (terms [b0, b1) of B), each in its source's layout.
  auto add_product = [&](int a0, int a1, int b0, int b1) {
    auto with = [&](const Operand& X, int64_t rows, int64_t cols, int f, int l, const auto& fn) {
      if (by_column(X)) {
        ColMat m(rows, cols);
        fill_terms(X, rows, cols, f, l, m);
        fn(m);
      } else {
        RowMat m(rows, cols);
        fill_terms(X, rows, cols, f, l, m);
        fn(m);
      }
    };
    with(A, M, K, a0, a1, [&](const auto& a) {
      with(B, K, N, b0, b1, [&](const auto& b) { c.noalias() += a * b; });
    });
  };
  if (A.planes <= B.planes) {
    for (int i = 0; i < A.planes; ++i) add_product(i, i + 1, 0, std::min(B.planes, n - i));
  } else {
    for (int j = 0; j < B.planes; ++j) add_product(0, std::min(A.planes, n - j), j, j + 1);
  }
}

#if GA_X86_BF16_KERNELS

GA_SIMD_WARNINGS_PUSH  // see cpu_features.hpp

#define GA_TARGET_AVX512BF16 __attribute__((target("avx512f,avx512bw,avx512vl,avx512dq,avx512bf16,f16c,fma")))
#define GA_TARGET_AMX \
  __attribute__((target("amx-tile,amx-bf16,avx512f,avx512bw,avx512vl,avx512dq,avx512bf16,f16c,fma")))

/// The lanes [0, n) of 16 (n may be outside [0, 16]).
inline __mmask16 first_lanes(int64_t n) {
  return n >= 16 ? __mmask16(0xffff) : n <= 0 ? __mmask16(0) : __mmask16((1u << n) - 1);
}

/// n (<= 16, may be <= 0) elements of dtype dt from contiguous p, exactly as f32; the lanes
/// past n are zero and their memory is not touched.
GA_TARGET_AVX512BF16 inline __m512 load16_f32(const char* p, DType dt, int64_t n) {
  const __mmask16 m = first_lanes(n);
  switch (dt) {
    case DType::bf16:
      return _mm512_castsi512_ps(_mm512_slli_epi32(_mm512_cvtepu16_epi32(_mm256_maskz_loadu_epi16(m, p)), 16));
    case DType::f16: return _mm512_cvtph_ps(_mm256_maskz_loadu_epi16(m, p));
    default: return _mm512_maskz_loadu_ps(m, p);
  }
}

/// The first `planes` bf16 terms of 16 values (as split_scalar; inputs below 2^-126 count as 0).
GA_TARGET_AVX512BF16 inline void split16(__m512 v, int planes, __m256i* terms) {
  for (int p = 0; p < planes; ++p) {
    terms[p] = (__m256i)_mm512_cvtneps_pbh(v);
    if (p + 1 < planes) {
      const __m512 t = _mm512_castsi512_ps(_mm512_slli_epi32(_mm512_cvtepu16_epi32(terms[p]), 16));
      const __mmask16 finite = __mmask16(~_mm512_fpclass_ps_mask(t, 0x99));  // not nan or inf
      v = _mm512_maskz_sub_ps(finite, v, t);
    }
  }
}

/// Transposes a 16 x 16 matrix of 32-bit elements (contiguous rows) into `out`.
GA_TARGET_AVX512BF16 inline void transpose16x16_dwords(const uint32_t* in, uint32_t* out) {
  __m512i r[16], t[16];
  for (int i = 0; i < 16; ++i) r[i] = _mm512_loadu_si512(in + 16 * i);
  for (int i = 0; i < 8; ++i) {
    t[2 * i] = _mm512_unpacklo_epi32(r[2 * i], r[2 * i + 1]);
    t[2 * i + 1] = _mm512_unpackhi_epi32(r[2 * i], r[2 * i + 1]);
  }
  // Within each 128-bit lane l, r[4i + j] now holds column 4l + j of rows 4i .. 4i + 3.
  for (int i = 0; i < 4; ++i) {
    r[4 * i] = _mm512_unpacklo_epi64(t[4 * i], t[4 * i + 2]);
    r[4 * i + 1] = _mm512_unpackhi_epi64(t[4 * i], t[4 * i + 2]);
    r[4 * i + 2] = _mm512_unpacklo_epi64(t[4 * i + 1], t[4 * i + 3]);
    r[4 * i + 3] = _mm512_unpackhi_epi64(t[4 * i + 1], t[4 * i + 3]);
  }
  // A 4 x 4 transpose of 128-bit lanes per column group j gives output rows 4l + j.
  for (int j = 0; j < 4; ++j) {
    const __m512i u0 = _mm512_shuffle_i32x4(r[j], r[4 + j], 0x88), u1 = _mm512_shuffle_i32x4(r[j], r[4 + j], 0xdd);
    const __m512i u2 = _mm512_shuffle_i32x4(r[8 + j], r[12 + j], 0x88),
                  u3 = _mm512_shuffle_i32x4(r[8 + j], r[12 + j], 0xdd);
    _mm512_storeu_si512(out + 16 * (0 + j), _mm512_shuffle_i32x4(u0, u2, 0x88));
    _mm512_storeu_si512(out + 16 * (4 + j), _mm512_shuffle_i32x4(u1, u3, 0x88));
    _mm512_storeu_si512(out + 16 * (8 + j), _mm512_shuffle_i32x4(u0, u2, 0xdd));
    _mm512_storeu_si512(out + 16 * (12 + j), _mm512_shuffle_i32x4(u1, u3, 0xdd));
  }
}

// A tile in the two shapes the packers produce, for a source block of 16 "rows" r and 32
// "depths" k (k is K for both operands; r is M for A and N for B), rv rows and kv depths
// valid, the rest zero; one tile per term, `plane_stride` elements apart:
//   row-major: out[r * 32 + k]                      (the A layout)
//   pair-major: out[(k / 2) * 32 + r * 2 + k % 2]   (the B layout)
// Each is the 16 x 16 dword transpose of the other.

/// Row-major tiles from a source whose depth stride is 1 (rows `rs` elements apart).
GA_TARGET_AVX512BF16 inline void tile_rows_contiguous(const char* p, DType dt, int64_t rs, int64_t rv, int64_t kv,
                                                      int planes, uint16_t* out, int64_t plane_stride) {
  const int64_t es = int64_t(dtype_size(dt));
  if (dt == DType::f32 && planes == 1 && rv == 16 && kv == 32) {  // the common case
    const float* f = reinterpret_cast<const float*>(p);
    for (int64_t r = 0; r < 16; ++r) {
      const __m512i v = (__m512i)_mm512_cvtne2ps_pbh(_mm512_loadu_ps(f + r * rs + 16), _mm512_loadu_ps(f + r * rs));
      _mm512_storeu_si512(out + r * 32, v);
    }
    return;
  }
  __m256i lo[3], hi[3];
  for (int64_t r = 0; r < 16; ++r) {
    if (r < rv) {
      split16(load16_f32(p + r * rs * es, dt, kv), planes, lo);
      split16(load16_f32(p + (r * rs + 16) * es, dt, kv - 16), planes, hi);
    } else {
      for (int q = 0; q < planes; ++q) lo[q] = hi[q] = _mm256_setzero_si256();
    }
    for (int q = 0; q < planes; ++q) {
      _mm256_storeu_si256(reinterpret_cast<__m256i*>(out + q * plane_stride + r * 32), lo[q]);
      _mm256_storeu_si256(reinterpret_cast<__m256i*>(out + q * plane_stride + r * 32 + 16), hi[q]);
    }
  }
}

/// Pair-major tiles from a source whose row stride is 1 (depths `ks` elements apart).
GA_TARGET_AVX512BF16 inline void tile_pairs_contiguous(const char* p, DType dt, int64_t ks, int64_t rv, int64_t kv,
                                                       int planes, uint16_t* out, int64_t plane_stride) {
  const int64_t es = int64_t(dtype_size(dt));
  alignas(64) static constexpr uint16_t kInterleave[32] = {0, 16, 1, 17, 2,  18, 3,  19, 4,  20, 5,  21, 6,  22, 7,  23,
                                                           8, 24, 9, 25, 10, 26, 11, 27, 12, 28, 13, 29, 14, 30, 15, 31};
  const __m512i idx = _mm512_load_si512(kInterleave);
  if (dt == DType::f32 && planes == 1 && rv == 16 && kv == 32) {  // the common case, 4 instructions a row pair
    const float* f = reinterpret_cast<const float*>(p);
    for (int64_t kp = 0; kp < 16; ++kp) {
      const __m512 even = _mm512_loadu_ps(f + 2 * kp * ks), odd = _mm512_loadu_ps(f + (2 * kp + 1) * ks);
      const __m512i both = (__m512i)_mm512_cvtne2ps_pbh(odd, even);  // even in the low half
      _mm512_storeu_si512(out + kp * 32, _mm512_permutexvar_epi16(idx, both));
    }
    return;
  }
  __m256i even[3], odd[3];
  for (int64_t kp = 0; kp < 16; ++kp) {
    const int64_t k0 = 2 * kp;
    const __m512 zero = _mm512_setzero_ps();
    split16(k0 < kv ? load16_f32(p + k0 * ks * es, dt, rv) : zero, planes, even);
    split16(k0 + 1 < kv ? load16_f32(p + (k0 + 1) * ks * es, dt, rv) : zero, planes, odd);
    for (int q = 0; q < planes; ++q) {
      const __m512i both = _mm512_inserti64x4(_mm512_castsi256_si512(even[q]), odd[q], 1);
      _mm512_storeu_si512(out + q * plane_stride + kp * 32, _mm512_permutexvar_epi16(idx, both));
    }
  }
}

/// Either layout from any strides, one element at a time.
inline void tile_any(const Operand& src, bool a_side, int64_t r0, int64_t k0, int64_t rv, int64_t kv, bool pair_major,
                     uint16_t* out, int64_t plane_stride) {
  uint16_t t[3];
  for (int64_t r = 0; r < 16; ++r)
    for (int64_t k = 0; k < 32; ++k) {
      t[0] = t[1] = t[2] = 0;
      if (r < rv && k < kv)
        split_scalar(src.value(a_side ? src.at(r0 + r, k0 + k) : src.at(k0 + k, r0 + r)), src.planes, t);
      const int64_t o = pair_major ? (k / 2) * 32 + r * 2 + (k % 2) : r * 32 + k;
      for (int q = 0; q < src.planes; ++q) out[q * plane_stride + o] = t[q];
    }
}

/// Writes the dword transpose of `planes` tiles of tmp (contiguous) into out.
GA_TARGET_AVX512BF16 inline void transpose_planes(const uint16_t* tmp, int planes, uint16_t* out, int64_t plane_stride) {
  for (int q = 0; q < planes; ++q)
    transpose16x16_dwords(reinterpret_cast<const uint32_t*>(tmp + q * kTileElems),
                          reinterpret_cast<uint32_t*>(out + q * plane_stride));
}

/// Packs A tile (mt, kt) of A [M, K] (row-major), every term.
GA_TARGET_AVX512BF16 inline void pack_a_tile(const Operand& A, int64_t M, int64_t K, int64_t mt, int64_t kt,
                                             uint16_t* out, int64_t plane_stride) {
  const int64_t r0 = mt * 16, k0 = kt * 32, rv = std::min<int64_t>(16, M - r0), kv = std::min<int64_t>(32, K - k0);
  if (A.cs == 1) {
    tile_rows_contiguous(A.at(r0, k0), A.dt, A.rs, rv, kv, A.planes, out, plane_stride);
  } else if (A.rs == 1) {
    alignas(64) uint16_t tmp[3 * kTileElems];
    tile_pairs_contiguous(A.at(r0, k0), A.dt, A.cs, rv, kv, A.planes, tmp, kTileElems);
    transpose_planes(tmp, A.planes, out, plane_stride);
  } else {
    tile_any(A, true, r0, k0, rv, kv, false, out, plane_stride);
  }
}

/// Packs B tile (nt, kt) of B [K, N] (pair-major), every term.
GA_TARGET_AVX512BF16 inline void pack_b_tile(const Operand& B, int64_t N, int64_t K, int64_t nt, int64_t kt,
                                             uint16_t* out, int64_t plane_stride) {
  const int64_t r0 = nt * 16, k0 = kt * 32, rv = std::min<int64_t>(16, N - r0), kv = std::min<int64_t>(32, K - k0);
  if (B.cs == 1) {
    tile_pairs_contiguous(B.at(k0, r0), B.dt, B.rs, rv, kv, B.planes, out, plane_stride);
  } else if (B.rs == 1) {  // B = W^T with W [N, K] row-major: the linear layer's weight
    alignas(64) uint16_t tmp[3 * kTileElems];
    tile_rows_contiguous(B.at(k0, r0), B.dt, B.cs, rv, kv, B.planes, tmp, kTileElems);
    transpose_planes(tmp, B.planes, out, plane_stride);
  } else {
    tile_any(B, false, r0, k0, rv, kv, true, out, plane_stride);
  }
}

/// Packs B's column tiles [nt0, nt1) (every term, every k) into `out`, tile (nt, term, kt)
/// at (((nt - nt0) * planes + term) * KT + kt) * kTileElems. The sweep follows B's layout so
/// that consecutive tiles read consecutive memory: along k when k is contiguous (a linear
/// layer's weight), across columns otherwise (im2col columns, where each k is a long row).
inline void pack_b_panel(const Operand& B, int64_t N, int64_t K, int64_t KT, int64_t nt0, int64_t nt1, uint16_t* out) {
  const int64_t tile_stride = B.planes * KT * kTileElems, plane_stride = KT * kTileElems;
  auto one = [&](int64_t nt, int64_t kt) {
    pack_b_tile(B, N, K, nt, kt, out + (nt - nt0) * tile_stride + kt * kTileElems, plane_stride);
  };
  if (B.rs == 1 && B.cs != 1) {
    for (int64_t nt = nt0; nt < nt1; ++nt)
      for (int64_t kt = 0; kt < KT; ++kt) one(nt, kt);
  } else {
    for (int64_t kt = 0; kt < KT; ++kt)
      for (int64_t nt = nt0; nt < nt1; ++nt) one(nt, kt);
  }
}

/// Packs A's row tiles [mt0, mt1) (every term, every k), tile (mt, term, kt) at
/// ((mt * planes + term) * KT + kt) * kTileElems, sweeping along A's contiguous dim.
inline void pack_a_rows(const Operand& A, int64_t M, int64_t K, int64_t KT, int64_t mt0, int64_t mt1, uint16_t* out) {
  const int64_t tile_stride = A.planes * KT * kTileElems, plane_stride = KT * kTileElems;
  auto one = [&](int64_t mt, int64_t kt) {
    pack_a_tile(A, M, K, mt, kt, out + mt * tile_stride + kt * kTileElems, plane_stride);
  };
  if (A.cs == 1 || A.rs != 1) {
    for (int64_t mt = mt0; mt < mt1; ++mt)
      for (int64_t kt = 0; kt < KT; ++kt) one(mt, kt);
  } else {
    for (int64_t kt = 0; kt < KT; ++kt)
      for (int64_t mt = mt0; mt < mt1; ++mt) one(mt, kt);
  }
}

/// What the micro-kernels do to a block of C as they store it, the block's final values
/// (each call sums the whole of K): (sum + bias) + residual, then Relu, in registers and in
/// apply_epilogue's order, so that the bits are those of the unfused epilogue. A QuickGelu or
/// Gelu activation runs on the rows of a B panel's blocks once stored (run_blocks; only where
/// that gives the unfused bits, see matmul): these cost more to compute than to load, so runs
/// of a panel's width pay less per call than a block's. The pointers are one batch item's,
/// moved by `at` to a block's first row and column.
struct StoreEpilogue {
  const float* bias = nullptr;      // bias[r] (bias_per_row) or bias[j]; null: none
  bool bias_per_row = false;
  const float* residual = nullptr;  // residual[r * ldc + j], C's row stride; null: none
  bool relu = false;
  Activation stored_activation = Activation::None;  // None, QuickGelu or Gelu

  /// The same epilogue for the block whose first element is C's (row, col).
  StoreEpilogue at(int64_t row, int64_t col, int64_t ldc) const {
    StoreEpilogue e = *this;
    if (bias) e.bias += bias_per_row ? row : col;
    if (residual) e.residual += row * ldc + col;
    return e;
  }
  /// Whether a store needs more than copying the sums.
  bool changes_sums() const { return bias || residual || relu; }
};

/// Stores v, the final sums of row r, columns [j, j + 16) of the block at c (the lanes in m),
/// with e's register part applied.
GA_TARGET_AVX512BF16 inline void store16(const StoreEpilogue& e, __m512 v, float* c, int64_t ldc, int64_t r, int64_t j,
                                         __mmask16 m) {
  if (e.bias) v = _mm512_add_ps(v, e.bias_per_row ? _mm512_set1_ps(e.bias[r]) : _mm512_maskz_loadu_ps(m, e.bias + j));
  if (e.residual) v = _mm512_add_ps(v, _mm512_maskz_loadu_ps(m, e.residual + r * ldc + j));
  // MAXPS returns its second operand when either is NaN or both are zero: v, as Eigen's
  // max(x, 0) in the unfused Relu does.
  if (e.relu) v = _mm512_max_ps(_mm512_setzero_ps(), v);
  _mm512_mask_storeu_ps(c + r * ldc + j, m, v);
}

/// Stores rows [r0, r0 + rv) x columns [j0, j0 + cv) (cv <= 16) of the block at c from src
/// (16 floats a row, 64-byte aligned), through store16.
GA_TARGET_AVX512BF16 inline void store_tile_rows(const StoreEpilogue& e, const float* src, float* c, int64_t ldc,
                                                 int64_t r0, int64_t j0, int64_t rv, int64_t cv) {
  const __mmask16 m = first_lanes(cv);
  for (int64_t r = 0; r < rv; ++r) store16(e, _mm512_load_ps(src + 16 * r), c, ldc, r0 + r, j0, m);
}

/// Where one micro-kernel call reads its packed operands: the first A tile (row tile mt,
/// term 0, k 0) and the first B tile; the next row (column) tile is a_next (b_next)
/// further, the next term a_term (b_term) further; k tiles are consecutive.
struct BlockOperands {
  const uint16_t* a;
  const uint16_t* b;
  int64_t a_next, b_next, a_term, b_term, KT;
  const TermPairs* pairs;
};

// ---- AVX512-BF16 micro-kernel: 8 rows x NT tiles of 16 columns, accumulators in registers ----

template <int NT>
GA_TARGET_AVX512BF16 inline void avx512_block(const BlockOperands& o, const StoreEpilogue& e, float* c, int64_t ldc,
                                              int64_t rows, int64_t cols) {
  // o.a points at the first of the 8 rows inside its A tile.
  // The loops over r and j must unroll so that the accumulators live in registers.
  __m512 acc[8][NT];
#pragma GCC unroll 8
  for (int r = 0; r < 8; ++r)
#pragma GCC unroll 3
    for (int j = 0; j < NT; ++j) acc[r][j] = _mm512_setzero_ps();
  for (int pr = 0; pr < o.pairs->count; ++pr) {
    const uint16_t* a = o.a + o.pairs->a[pr] * o.a_term;
    const uint16_t* b = o.b + o.pairs->b[pr] * o.b_term;
    for (int64_t kt = 0; kt < o.KT; ++kt) {
      const uint16_t* at = a + kt * kTileElems;
      const uint16_t* bt = b + kt * kTileElems;
#pragma GCC unroll 2
      for (int kp = 0; kp < 16; ++kp) {
        __m512bh bv[NT];
#pragma GCC unroll 3
        for (int j = 0; j < NT; ++j) bv[j] = (__m512bh)_mm512_loadu_si512(bt + j * o.b_next + kp * 32);
#pragma GCC unroll 8
        for (int r = 0; r < 8; ++r) {
          int32_t pair;
          std::memcpy(&pair, at + r * 32 + 2 * kp, 4);
          const __m512bh av = (__m512bh)_mm512_set1_epi32(pair);
#pragma GCC unroll 3
          for (int j = 0; j < NT; ++j) acc[r][j] = _mm512_dpbf16_ps(acc[r][j], av, bv[j]);
        }
      }
    }
  }
  for (int r = 0; r < 8 && r < rows; ++r)
    for (int j = 0; j < NT; ++j) {
      const int64_t cv = cols - 16 * j;
      if (cv <= 0) break;
      store16(e, acc[r][j], c, ldc, r, 16 * j, first_lanes(cv));
    }
}

// ---- AMX micro-kernel: TM x TN tiles of 16 x 16 (at most 2 x 2), C in tiles 0-3 ----

struct alignas(64) TileConfig {
  uint8_t palette = 1, start_row = 0, reserved[14] = {};
  uint16_t colsb[16] = {};
  uint8_t rows[16] = {};
};

/// Every tile 16 rows x 64 bytes: C tiles (0-3) 16 x 16 f32, A tiles (4, 5) 16 x 32 bf16,
/// B tiles (6, 7) 16 pairs x 16 x 2 bf16.
GA_TARGET_AMX inline void amx_configure() {
  TileConfig cfg;
  for (int i = 0; i < 8; ++i) {
    cfg.rows[i] = 16;
    cfg.colsb[i] = 64;
  }
  // Not _tile_loadconfig: GCC 12's version tells the compiler it reads 8 bytes, so the stores
  // above can be dropped as dead and the tiles end up unconfigured (SIGILL at the first use).
  __asm__ volatile("ldtilecfg %0" : : "m"(cfg));
}
GA_TARGET_AMX inline void amx_release() { _tile_release(); }

template <int TM, int TN>
GA_TARGET_AMX inline void amx_block(const BlockOperands& o, const StoreEpilogue& e, float* c, int64_t ldc, int64_t rows,
                                    int64_t cols) {
  _tile_zero(0);
  if (TN > 1) _tile_zero(1);
  if (TM > 1) _tile_zero(2);
  if (TM > 1 && TN > 1) _tile_zero(3);
  // Term pairs inside the k loop: the operand that is not split (a bf16 weight) is loaded
  // once per k step and multiplied by every term of the other.
  const TermPairs& tp = *o.pairs;
  for (int64_t kt = 0; kt < o.KT; ++kt) {
    const int64_t k = kt * kTileElems;
    for (int pr = 0; pr < tp.count; ++pr) {
      if (pr == 0 || tp.a[pr] != tp.a[pr - 1]) {
        const uint16_t* a = o.a + tp.a[pr] * o.a_term + k;
        _tile_loadd(4, a, 64);
        if (TM > 1) _tile_loadd(5, a + o.a_next, 64);
      }
      if (pr == 0 || tp.b[pr] != tp.b[pr - 1]) {
        const uint16_t* b = o.b + tp.b[pr] * o.b_term + k;
        _tile_loadd(6, b, 64);
        if (TN > 1) _tile_loadd(7, b + o.b_next, 64);
      }
      _tile_dpbf16ps(0, 4, 6);
      if (TN > 1) _tile_dpbf16ps(1, 4, 7);
      if (TM > 1) _tile_dpbf16ps(2, 5, 6);
      if (TM > 1 && TN > 1) _tile_dpbf16ps(3, 5, 7);
    }
  }
  // Whole tiles of plain sums go straight to C; edge tiles, and tiles the epilogue changes,
  // through a buffer in L1 and store16.
  alignas(64) float buf[256];
#define GA_AMX_STORE_(T, TR, TC)                                                                              \
  do {                                                                                                        \
    const int64_t rv = std::min<int64_t>(16, rows - 16 * (TR)), cv = std::min<int64_t>(16, cols - 16 * (TC)); \
    if (rv == 16 && cv == 16 && !e.changes_sums()) {                                                          \
      _tile_stored(T, c + 16 * (TR) * ldc + 16 * (TC), ldc * 4);                                              \
    } else if (rv > 0 && cv > 0) {                                                                            \
      _tile_stored(T, buf, 64);                                                                               \
      store_tile_rows(e, buf, c, ldc, 16 * (TR), 16 * (TC), rv, cv);                                          \
    }                                                                                                         \
  } while (0)
  GA_AMX_STORE_(0, 0, 0);
  if (TN > 1) GA_AMX_STORE_(1, 0, 1);
  if (TM > 1) GA_AMX_STORE_(2, 1, 0);
  if (TM > 1 && TN > 1) GA_AMX_STORE_(3, 1, 1);
#undef GA_AMX_STORE_
}

// ---- the blocked product ----

/// How one product is cut up: micro-kernel blocks of m_unit_rows x (n_unit_tiles * 16), and
/// B panels of panel_units column blocks, packed together and kept in cache while every
/// row block passes over them.
struct Plan {
  Bf16Kernel kernel;
  int64_t M, N, K, MT, NT, KT;
  int64_t m_unit_rows;   // 32 (AMX) or 8 (AVX512-BF16)
  int64_t n_unit_tiles;  // 2 (AMX) or 3 (AVX512-BF16)
  int64_t panel_units;
  TermPairs pairs;
};

inline Plan make_plan(Bf16Kernel kernel, const Operand& A, const Operand& B, int64_t M, int64_t N, int64_t K,
                      MixedPrecision prec) {
  Plan p{kernel, M, N, K, (M + 15) / 16, (N + 15) / 16, (K + 31) / 32, 0, 0, 0, TermPairs(A.planes, B.planes, prec)};
  const bool amx = kernel == Bf16Kernel::Amx;
  p.m_unit_rows = amx ? 32 : 8;
  p.n_unit_tiles = amx ? 2 : 3;
  // A B panel of about 512 KiB stays in L2 while every row block passes over it.
  const int64_t unit_bytes = p.n_unit_tiles * B.planes * p.KT * kTileElems * 2;
  p.panel_units = std::max<int64_t>(1, (int64_t(512) << 10) / unit_bytes);
  return p;
}

/// Runs row blocks [m0, m1) x column blocks [u0, u1) of the product on this thread, applying
/// e to each block as it is stored; Ap holds every tile of A, bpanel has room for
/// panel_units column blocks of B.
inline void run_blocks(const Plan& p, const Operand& A, const Operand& B, const uint16_t* Ap, uint16_t* bpanel,
                       int64_t m0, int64_t m1, int64_t u0, int64_t u1, float* C, int64_t ldc, const StoreEpilogue& e) {
  const bool amx = p.kernel == Bf16Kernel::Amx;
  const int64_t a_tile = A.planes * p.KT * kTileElems, b_tile = B.planes * p.KT * kTileElems;
  BlockOperands o{nullptr, nullptr, a_tile, b_tile, p.KT * kTileElems, p.KT * kTileElems, p.KT, &p.pairs};
  if (amx) amx_configure();
  for (int64_t pu = u0; pu < u1; pu += p.panel_units) {
    const int64_t pe = std::min(u1, pu + p.panel_units);
    const int64_t nt0 = pu * p.n_unit_tiles, nt1 = std::min(p.NT, pe * p.n_unit_tiles);
    pack_b_panel(B, p.N, p.K, p.KT, nt0, nt1, bpanel);
    for (int64_t mu = m0; mu < m1; ++mu) {
      const int64_t row0 = mu * p.m_unit_rows;
      const int64_t rows = std::min(p.m_unit_rows, p.M - row0);
      for (int64_t nt = nt0; nt < nt1; nt += p.n_unit_tiles) {  // column blocks
        const int64_t tn = std::min(p.n_unit_tiles, nt1 - nt);
        const int64_t col0 = nt * 16, cols = std::min<int64_t>(16 * tn, p.N - col0);
        o.b = bpanel + (nt - nt0) * b_tile;
        float* c = C + row0 * ldc + col0;
        const StoreEpilogue eb = e.at(row0, col0, ldc);
        if (amx) {
          o.a = Ap + (row0 / 16) * a_tile;
          const bool two_m = rows > 16;
          if (two_m && tn > 1) amx_block<2, 2>(o, eb, c, ldc, rows, cols);
          else if (two_m) amx_block<2, 1>(o, eb, c, ldc, rows, cols);
          else if (tn > 1) amx_block<1, 2>(o, eb, c, ldc, rows, cols);
          else amx_block<1, 1>(o, eb, c, ldc, rows, cols);
        } else {
          o.a = Ap + (row0 / 16) * a_tile + (row0 % 16) * 32;
          if (tn == 3) avx512_block<3>(o, eb, c, ldc, rows, cols);
          else if (tn == 2) avx512_block<2>(o, eb, c, ldc, rows, cols);
          else avx512_block<1>(o, eb, c, ldc, rows, cols);
        }
      }
      if (e.stored_activation != Activation::None) {  // on this panel's columns, still in L1 or L2
        const int64_t col0 = nt0 * 16, cols = std::min(p.N, nt1 * 16) - col0;
        for (int64_t r = 0; r < rows; ++r)
          detail::activate_row<float>(e.stored_activation, C + (row0 + r) * ldc + col0, cols);
      }
    }
  }
  if (amx) amx_release();
}

/// C [M, N] (row stride ldc) = e(A [M, K] @ B [K, N]) with an x86 kernel on `threads` threads.
/// Ap has room for A's packed tiles; pack_a false means they are already there (a weight
/// shared by a batch). A is packed once and shared; each thread packs the B panels it needs.
inline void gemm_x86(Bf16Kernel kernel, const Operand& A, const Operand& B, float* C, int64_t ldc, int64_t M,
                     int64_t N, int64_t K, MixedPrecision prec, uint16_t* Ap, bool pack_a, int threads,
                     const StoreEpilogue& e) {
  const Plan p = make_plan(kernel, A, B, M, N, K, prec);
  const int64_t MU = (M + p.m_unit_rows - 1) / p.m_unit_rows;
  const int64_t NU = (p.NT + p.n_unit_tiles - 1) / p.n_unit_tiles;
  const size_t panel_elems = size_t(p.panel_units * p.n_unit_tiles * B.planes * p.KT * kTileElems);
  // Threads split the column blocks; when there are fewer blocks than threads, the rows too.
  auto work = [&](int tid, int nth, uint16_t* bpanel) {
    const int64_t tn = std::min<int64_t>(nth, NU), tm = std::max<int64_t>(1, nth / tn);
    if (tid >= tm * tn) return;
    const int64_t im = tid / tn, in = tid % tn;
    run_blocks(p, A, B, Ap, bpanel, MU * im / tm, MU * (im + 1) / tm, NU * in / tn, NU * (in + 1) / tn, C, ldc, e);
  };
  std::vector<std::shared_ptr<Storage>> panels(size_t(std::max(threads, 1)));
  for (auto& s : panels) s = HostBlockCache::instance().allocate(panel_elems * 2);
#ifdef _OPENMP
  if (threads > 1) {
#pragma omp parallel num_threads(threads)
    {
      const int tid = omp_get_thread_num(), nth = omp_get_num_threads();
      if (pack_a) pack_a_rows(A, M, K, p.KT, p.MT * tid / nth, p.MT * (tid + 1) / nth, Ap);
#pragma omp barrier
      work(tid, nth, static_cast<uint16_t*>(panels[size_t(tid)]->data()));
    }
    return;
  }
#endif
  if (pack_a) pack_a_rows(A, M, K, p.KT, 0, p.MT, Ap);
  work(0, 1, static_cast<uint16_t*>(panels[0]->data()));
}

GA_SIMD_WARNINGS_POP
#endif  // GA_X86_BF16_KERNELS

#if GA_X86_F32_KERNELS
/// cp [Bt, M, N] = epilogue((terms [0, a_terms) of a) @ (terms [0, b_terms) of b)) for a
/// [Bt, M, K], b [Bt, K, N] as in matmul below, on the packed f32 kernel `path` (Avx2 or
/// Avx512), which applies the epilogue as it stores (the bits of a pass after): each
/// operand's terms are summed into f32 first (one item for a broadcast operand), in its
/// source's layout (column-major where it runs down columns, as a transposed weight does),
/// which the kernel's packing reads either way.
inline void gemm_reference_packed(F32Kernel path, const Tensor& a, const Tensor& b, float* cp, int64_t Bt, int a_planes,
                                  int a_terms, int b_planes, int b_terms, const MatmulEpilogue& epilogue) {
  using RowMat = Eigen::Matrix<float, Eigen::Dynamic, Eigen::Dynamic, Eigen::RowMajor>;
  using ColMat = Eigen::Matrix<float, Eigen::Dynamic, Eigen::Dynamic, Eigen::ColMajor>;
  const int64_t M = a.size(1), K = a.size(2), N = b.size(2);
  struct Converted {
    std::shared_ptr<Storage> block;
    f32_gemm::Operand first;  // item 0
    int64_t item_stride;      // floats from one item to the next; 0 for a broadcast operand
  };
  auto convert = [&](const Tensor& t, int planes, int terms) {
    const Shape& s = t.strides();
    const int64_t rows = t.size(1), cols = t.size(2), items = s[0] == 0 ? 1 : Bt, size = rows * cols;
    const bool column_major = by_column(Operand{nullptr, t.dtype(), s[1], s[2], planes});
    Converted c;
    c.block = HostBlockCache::instance().allocate(size_t(items * size) * sizeof(float));
    float* f = static_cast<float*>(c.block->data());
    const char* base = static_cast<const char*>(t.raw_data());
    for (int64_t i = 0; i < items; ++i) {
      const Operand X{base + i * s[0] * int64_t(dtype_size(t.dtype())), t.dtype(), s[1], s[2], planes};
      if (column_major) {
        Eigen::Map<ColMat> m(f + i * size, rows, cols);
        fill_terms(X, rows, cols, 0, terms, m);
      } else {
        Eigen::Map<RowMat> m(f + i * size, rows, cols);
        fill_terms(X, rows, cols, 0, terms, m);
      }
    }
    c.first = column_major ? f32_gemm::Operand{f, 1, rows} : f32_gemm::Operand{f, cols, 1};
    c.item_stride = s[0] == 0 ? 0 : size;
    return c;
  };
  const Converted ca = convert(a, a_planes, a_terms), cb = convert(b, b_planes, b_terms);
  auto a_of = [&](int64_t i) { return f32_gemm::Operand{ca.first.p + i * ca.item_stride, ca.first.rs, ca.first.cs}; };
  auto b_of = [&](int64_t i) {
    return f32_gemm::BSource::strided(f32_gemm::Operand{cb.first.p + i * cb.item_stride, cb.first.rs, cb.first.cs});
  };
  const bool a_shared = ca.item_stride == 0 || Bt == 1;
  if (path == F32Kernel::Avx2)
    f32_gemm::batched_gemm<f32_gemm::Avx2Leaves>(Bt, M, N, K, a_of, a_shared, b_of, cp, epilogue);
  else
    f32_gemm::batched_gemm<f32_gemm::Avx512Leaves>(Bt, M, N, K, a_of, a_shared, b_of, cp, epilogue);
}
#endif

/// out[i] = epilogue(a[i] @ b[i]) for a [Bt, M, K], b [Bt, K, N] (f32, bf16 or f16, any
/// strides, batch stride 0 for a broadcast operand), out [Bt, M, N] contiguous f32 (see
/// backend::MatmulEpilogue), at the precision mixed_matmul_precision() names, with the kernel
/// bf16_kernel() names. The x86 kernels (and the reference where it takes the packed f32
/// kernel) apply the epilogue as they store each block of out; the reference on Eigen in a
/// pass after the product. Either way the bits are those of product() followed by
/// apply_epilogue().
inline void matmul(const Tensor& a, const Tensor& b, const Tensor& out, const MatmulEpilogue& epilogue = {}) {
  const int64_t Bt = out.size(0), M = out.size(1), N = out.size(2), K = a.size(2);
  float* cp = static_cast<float*>(out.raw_data());
  if (out.numel() == 0) return;
  if (K == 0) {
    std::memset(cp, 0, size_t(out.numel()) * 4);
    apply_epilogue(out, epilogue);
    return;
  }
  const MixedPrecision prec = mixed_matmul_precision();
  const Shape& as = a.strides();
  const Shape& bs = b.strides();
  const size_t ae = dtype_size(a.dtype()), be = dtype_size(b.dtype());
  const int a_planes = planes_for(a.dtype(), prec), b_planes = planes_for(b.dtype(), prec);
  auto operand_a = [&](int64_t i) {
    return Operand{static_cast<const char*>(a.raw_data()) + i * as[0] * int64_t(ae), a.dtype(), as[1], as[2], a_planes};
  };
  auto operand_b = [&](int64_t i) {
    return Operand{static_cast<const char*>(b.raw_data()) + i * bs[0] * int64_t(be), b.dtype(), bs[1], bs[2], b_planes};
  };
  const Bf16Kernel kernel = bf16_kernel();
#if GA_X86_BF16_KERNELS
  if (kernel == Bf16Kernel::Amx || kernel == Bf16Kernel::Avx512Bf16) {
    if (!epilogue.empty()) detail::check_epilogue("matmul", out, epilogue);
    StoreEpilogue fused;
    fused.bias = epilogue.bias.defined() ? static_cast<const float*>(epilogue.bias.raw_data()) : nullptr;
    fused.bias_per_row = epilogue.bias_per_row;
    fused.relu = epilogue.activation == Activation::Relu;
    const float* residual =
        epilogue.residual.defined() ? static_cast<const float*>(epilogue.residual.raw_data()) : nullptr;
    // activate_row's bits do not depend on where a run starts (see unary_eigen), so the
    // activation of a panel's columns equals the unfused pass's over whole rows.
    if (!fused.relu) fused.stored_activation = epilogue.activation;
    int threads = get_num_threads();
#ifdef _OPENMP
    if (omp_in_parallel()) threads = 1;
#endif
    const int64_t MT = (M + 15) / 16, KT = (K + 31) / 32;
    auto apack = HostBlockCache::instance().allocate(size_t(MT * a_planes * KT * kTileElems * 2));
    uint16_t* Ap = static_cast<uint16_t*>(apack->data());
    for (int64_t i = 0; i < Bt; ++i) {
      const bool pack_a = i == 0 || as[0] != 0;  // a broadcast A (a conv weight) is packed once
      fused.residual = residual ? residual + i * M * N : nullptr;  // the bias is the batch's
      gemm_x86(kernel, operand_a(i), operand_b(i), cp + i * M * N, N, M, N, K, prec, Ap, pack_a, threads, fused);
    }
    return;
  }
#endif
#if GA_X86_F32_KERNELS
  // An operand of one term (bf16) makes the reference's sum one product of exact f32 values
  // (that operand, and the other's leading terms). Where the packed f32 kernel takes a
  // product of this shape (a CPU without AMX or AVX512-BF16 but with AVX2), it computes that
  // product from the operands converted once per call, instead of Eigen's GEMM.
  const F32Kernel f32_path = f32_gemm_path(M, N, K);
  const SingleProduct single = single_product(a.dtype(), b.dtype(), prec);
  if (single && (f32_path == F32Kernel::Avx2 || f32_path == F32Kernel::Avx512)) {
    if (!epilogue.empty()) detail::check_epilogue("matmul", out, epilogue);
    gemm_reference_packed(f32_path, a, b, cp, Bt, a_planes, single.a_terms, b_planes, single.b_terms, epilogue);
    return;
  }
#endif
  for (int64_t i = 0; i < Bt; ++i) gemm_reference(operand_a(i), operand_b(i), cp + i * M * N, M, N, K, prec);
  apply_epilogue(out, epilogue);
}

/// The plain product: matmul with no epilogue.
inline void product(const Tensor& a, const Tensor& b, const Tensor& out) { matmul(a, b, out); }

}  // namespace ga::backend::cpu::bf16_gemm
#endif  // GA_EMIT_CPU_KERNELS
