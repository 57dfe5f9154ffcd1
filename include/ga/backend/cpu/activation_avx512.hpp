// CPU: the f32 activations of CPUs that run AVX-512, on whole vectors: QuickGELU and GELU.
// Each is the only f32 version such a CPU computes: the unary op (unary_eigen) and every
// fused epilogue use it, and the dot-form GEMM applies it in registers before it stores a
// tile, so a fused layer gives the unfused op's bits. Each lane's result depends on that
// lane's input only, so a value's result does not depend on where it lies. Other CPUs use
// Eigen's QuickGELU and the scalar std::erf GELU (elementwise.hpp).
#pragma once
#include <cstdint>

#include "cpu_features.hpp"

#if GA_X86_F32_KERNELS
namespace ga::backend::cpu::detail {

GA_SIMD_WARNINGS_PUSH  // see cpu_features.hpp

/// x * sigmoid(1.702 x) = x / (1 + e^t), t = -1.702 x, in each lane: within 3 ulp of
/// x / (1 + e^t) for t rounded to f32 (as PyTorch's f32 computes t; e^t magnifies that
/// rounding, to some 80 ulp of the exact value at t = 87), or within 2e-37 of it where it is
/// that small. e^t = 2^n e^r with n the
/// integer nearest t / ln 2 and r = t - n ln 2 in [-ln 2 / 2, ln 2 / 2] (ln 2 in two parts),
/// e^r by a degree-7 polynomial (Cephes' expf coefficients), 2^n by scalef. t is clamped to
/// [-87.3, 128]: below -87.3, e^t is under the smallest normal f32 and 1 + e^t rounds to 1
/// (the clamp keeps the arithmetic off subnormals); past 88.8 (x below -52.1), e^t is inf
/// and the result -0, as PyTorch's x * sigmoid(1.702 x) gives there (the clamp keeps a
/// finite x off inf - inf). x = -inf gives nan, as there; nan gives nan.
GA_TARGET_AVX512F inline __m512 quick_gelu_avx512(__m512 x) {
  const __m512 t = _mm512_min_ps(_mm512_max_ps(_mm512_mul_ps(x, _mm512_set1_ps(-1.702f)), _mm512_set1_ps(-87.3f)),
                                 _mm512_set1_ps(128.0f));
  const __m512 n = _mm512_roundscale_ps(_mm512_mul_ps(t, _mm512_set1_ps(1.44269504088896341f)),
                                        _MM_FROUND_TO_NEAREST_INT | _MM_FROUND_NO_EXC);
  __m512 r = _mm512_fnmadd_ps(n, _mm512_set1_ps(0.693359375f), t);  // t - n * ln2_hi: exact
  r = _mm512_fnmadd_ps(n, _mm512_set1_ps(-2.12194440e-4f), r);      // - n * ln2_lo
  __m512 p = _mm512_set1_ps(1.9875691500e-4f);
  p = _mm512_fmadd_ps(p, r, _mm512_set1_ps(1.3981999507e-3f));
  p = _mm512_fmadd_ps(p, r, _mm512_set1_ps(8.3334519073e-3f));
  p = _mm512_fmadd_ps(p, r, _mm512_set1_ps(4.1665795894e-2f));
  p = _mm512_fmadd_ps(p, r, _mm512_set1_ps(1.6666665459e-1f));
  p = _mm512_fmadd_ps(p, r, _mm512_set1_ps(5.0000001201e-1f));
  p = _mm512_fmadd_ps(p, _mm512_mul_ps(r, r), _mm512_add_ps(r, _mm512_set1_ps(1.0f)));  // e^r
  const __m512 e = _mm512_scalef_ps(p, n);  // 2^n e^r; inf past the f32 range, nan for t = inf
  return _mm512_div_ps(x, _mm512_add_ps(e, _mm512_set1_ps(1.0f)));
}

/// erf(z) in each lane, within 8e-8 of the exact value (1.3 ulp of the results near
/// |z| = 1; 0.5 ulp is the best an f32 can hold), odd in z, +-1 exactly from |z| = 3.92 on
/// (where erf rounds to +-1 in f32), nan for nan. Two polynomials, both evaluated and one
/// chosen per lane, with coefficients fitted by tests/fixtures/gen_erf_coefficients.py
/// (near-minimax, Lawson's reweighted least squares, then rounded to f32):
/// - |z| < 1: z + z P(z^2), P of degree 6. Written as a correction to z, so that the result's
///   rounding error is about that of one operation;
/// - 1 <= |z| < 3.92: sign(z) (1 - Q(s)), Q of degree 14 approximating erfc, in s = (|z| -
///   2.46) / 1.46, which maps the interval onto [-1, 1], where Horner's rule stays accurate.
GA_TARGET_AVX512F inline __m512 erf_avx512(__m512 z) {
  const __m512 w = _mm512_abs_ps(z);
  const __m512 u = _mm512_mul_ps(z, z);
  static constexpr float kCore[] = {7.647007442e-05f,  -7.942323573e-04f, 5.179746076e-03f, -2.684859000e-02f,
                                    1.128342971e-01f,  -3.761260509e-01f, 1.283791512e-01f};
  static constexpr float kTail[] = {-2.181174350e-04f, -1.456019163e-05f, 1.623501652e-03f,  -1.582308090e-03f,
                                    -3.334041918e-03f, 9.024772793e-03f,  -7.349440828e-03f, -6.491458975e-03f,
                                    2.844818495e-02f,  -4.510812089e-02f, 4.504719004e-02f,  -3.059980646e-02f,
                                    1.392898709e-02f,  -3.878111020e-03f, 5.033535999e-04f};
  __m512 p = _mm512_set1_ps(kCore[0]);
#pragma GCC unroll 8
  for (int i = 1; i < 7; ++i) p = _mm512_fmadd_ps(p, u, _mm512_set1_ps(kCore[i]));
  const __m512 core = _mm512_fmadd_ps(z, p, z);
  const __m512 s = _mm512_fmadd_ps(w, _mm512_set1_ps(6.849315166e-01f), _mm512_set1_ps(-1.684931517e+00f));
  __m512 q = _mm512_set1_ps(kTail[0]);
#pragma GCC unroll 16
  for (int i = 1; i < 15; ++i) q = _mm512_fmadd_ps(q, s, _mm512_set1_ps(kTail[i]));
  __m512 tail = _mm512_sub_ps(_mm512_set1_ps(1.0f), q);
  tail = _mm512_mask_blend_ps(_mm512_cmp_ps_mask(w, _mm512_set1_ps(3.92f), _CMP_GE_OQ), tail, _mm512_set1_ps(1.0f));
  const __m512i sign = _mm512_and_si512(_mm512_castps_si512(z), _mm512_set1_epi32(int(0x80000000u)));
  tail = _mm512_castsi512_ps(_mm512_or_si512(_mm512_castps_si512(tail), sign));
  return _mm512_mask_blend_ps(_mm512_cmp_ps_mask(w, _mm512_set1_ps(1.0f), _CMP_GE_OQ), core, tail);
}

/// GELU, x Phi(x) = (x / 2) (1 + erf(x / sqrt 2)), in each lane, in PyTorch's order of f32
/// operations (x / sqrt 2 rounded, then (x * 0.5) * (1 + erf)): within 0.6e-7 |x| + 2 ulp of
/// the exact value (the first term is erf's error, which 1 + erf turns into an absolute
/// one, as PyTorch's f32 formula does). Edge values as PyTorch's: -0 for x below -5.55
/// (where erf rounds to -1), inf for inf, nan for -inf and nan.
GA_TARGET_AVX512F inline __m512 gelu_avx512(__m512 x) {
  const __m512 e = erf_avx512(_mm512_mul_ps(x, _mm512_set1_ps(0.70710678118654752f)));
  return _mm512_mul_ps(_mm512_mul_ps(x, _mm512_set1_ps(0.5f)), _mm512_add_ps(_mm512_set1_ps(1.0f), e));
}

/// y[i] = f(x[i]) for i < n, f one of the vector functions above (x and y may be the same
/// array; a partial last vector is loaded and stored with a mask).
template <__m512 (*F)(__m512)>
GA_TARGET_AVX512F inline void map_avx512(const float* x, float* y, int64_t n) {
  int64_t i = 0;
  for (; i + 16 <= n; i += 16) _mm512_storeu_ps(y + i, F(_mm512_loadu_ps(x + i)));
  if (i < n) {
    const __mmask16 m = __mmask16((1u << (n - i)) - 1);
    _mm512_mask_storeu_ps(y + i, m, F(_mm512_maskz_loadu_ps(m, x + i)));
  }
}

/// y[i] = quick_gelu(x[i]) for i < n (x and y may be the same array).
GA_TARGET_AVX512F inline void quick_gelu_avx512(const float* x, float* y, int64_t n) {
  map_avx512<quick_gelu_avx512>(x, y, n);
}

/// y[i] = gelu(x[i]) for i < n (x and y may be the same array).
GA_TARGET_AVX512F inline void gelu_avx512(const float* x, float* y, int64_t n) { map_avx512<gelu_avx512>(x, y, n); }

GA_SIMD_WARNINGS_POP

}  // namespace ga::backend::cpu::detail
#endif  // GA_X86_F32_KERNELS
