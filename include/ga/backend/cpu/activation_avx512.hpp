// CPU: the f32 QuickGELU of CPUs that run AVX-512, on whole vectors. It is the only f32
// QuickGELU such a CPU computes: the unary op (unary_eigen) and every fused epilogue use it,
// and the dot-form GEMM applies it in registers before it stores a tile, so a fused layer
// gives the unfused op's bits. Each lane's result depends on that lane's input only, so a
// value's result does not depend on where it lies. Other CPUs use Eigen's (elementwise.hpp).
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

/// y[i] = quick_gelu(x[i]) for i < n (x and y may be the same array).
GA_TARGET_AVX512F inline void quick_gelu_avx512(const float* x, float* y, int64_t n) {
  int64_t i = 0;
  for (; i + 16 <= n; i += 16) _mm512_storeu_ps(y + i, quick_gelu_avx512(_mm512_loadu_ps(x + i)));
  if (i < n) {
    const __mmask16 m = __mmask16((1u << (n - i)) - 1);
    _mm512_mask_storeu_ps(y + i, m, quick_gelu_avx512(_mm512_maskz_loadu_ps(m, x + i)));
  }
}

GA_SIMD_WARNINGS_POP

}  // namespace ga::backend::cpu::detail
#endif  // GA_X86_F32_KERNELS
