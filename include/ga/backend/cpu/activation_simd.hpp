// CPU: the f32 QuickGELU and GELU of x86 CPUs that run AVX-512 or AVX2 with FMA, on whole
// vectors. On such a CPU each is the only f32 version computed: the unary op (unary_eigen)
// and every fused epilogue use it, and the dot-form GEMM applies it in registers before it
// stores a tile, so a fused layer gives the unfused op's bits. Each lane's result depends on
// that lane's input only, so a value's result does not depend on where it lies; and the
// AVX-512 and AVX2 versions are one text (activation.inl) over primitives that are the same
// IEEE operations, so they give the same bits. Other CPUs use Eigen's QuickGELU and the
// scalar std::erf GELU (elementwise.hpp).
#pragma once
#include <cstdint>

#include "cpu_features.hpp"

#if GA_X86_F32_KERNELS
namespace ga::backend::cpu {

GA_SIMD_WARNINGS_PUSH  // see cpu_features.hpp

namespace activation_avx512 {

#define GA_ACT_TARGET GA_TARGET_AVX512F
using V = __m512;
inline constexpr int64_t kLanes = 16;

GA_ACT_TARGET inline V set1(float v) { return _mm512_set1_ps(v); }
GA_ACT_TARGET inline V add(V a, V b) { return _mm512_add_ps(a, b); }
GA_ACT_TARGET inline V sub(V a, V b) { return _mm512_sub_ps(a, b); }
GA_ACT_TARGET inline V mul(V a, V b) { return _mm512_mul_ps(a, b); }
GA_ACT_TARGET inline V div(V a, V b) { return _mm512_div_ps(a, b); }
GA_ACT_TARGET inline V fmadd(V a, V b, V c) { return _mm512_fmadd_ps(a, b, c); }
GA_ACT_TARGET inline V fnmadd(V a, V b, V c) { return _mm512_fnmadd_ps(a, b, c); }
GA_ACT_TARGET inline V vmin(V a, V b) { return _mm512_min_ps(a, b); }
GA_ACT_TARGET inline V vmax(V a, V b) { return _mm512_max_ps(a, b); }
GA_ACT_TARGET inline V round(V v) { return _mm512_roundscale_ps(v, _MM_FROUND_TO_NEAREST_INT | _MM_FROUND_NO_EXC); }
GA_ACT_TARGET inline V scale2(V p, V n) { return _mm512_scalef_ps(p, n); }
GA_ACT_TARGET inline V abs(V v) { return _mm512_abs_ps(v); }
GA_ACT_TARGET inline V with_sign_of(V m, V s) {
  const __m512i sign = _mm512_and_si512(_mm512_castps_si512(s), _mm512_set1_epi32(int(0x80000000u)));
  return _mm512_castsi512_ps(_mm512_or_si512(_mm512_castps_si512(m), sign));
}
GA_ACT_TARGET inline V where_ge(V x, float c, V a, V b) {
  return _mm512_mask_blend_ps(_mm512_cmp_ps_mask(x, _mm512_set1_ps(c), _CMP_GE_OQ), a, b);
}
GA_ACT_TARGET inline V load(const float* p) { return _mm512_loadu_ps(p); }
GA_ACT_TARGET inline void store(float* p, V v) { _mm512_storeu_ps(p, v); }
GA_ACT_TARGET inline V load_first(const float* p, int64_t n) {
  return _mm512_maskz_loadu_ps(__mmask16((1u << n) - 1), p);
}
GA_ACT_TARGET inline void store_first(float* p, V v, int64_t n) { _mm512_mask_storeu_ps(p, __mmask16((1u << n) - 1), v); }

#include "activation.inl"
#undef GA_ACT_TARGET

}  // namespace activation_avx512

namespace activation_avx2 {

#define GA_ACT_TARGET GA_TARGET_AVX2
using V = __m256;
inline constexpr int64_t kLanes = 8;

GA_ACT_TARGET inline V set1(float v) { return _mm256_set1_ps(v); }
GA_ACT_TARGET inline V add(V a, V b) { return _mm256_add_ps(a, b); }
GA_ACT_TARGET inline V sub(V a, V b) { return _mm256_sub_ps(a, b); }
GA_ACT_TARGET inline V mul(V a, V b) { return _mm256_mul_ps(a, b); }
GA_ACT_TARGET inline V div(V a, V b) { return _mm256_div_ps(a, b); }
GA_ACT_TARGET inline V fmadd(V a, V b, V c) { return _mm256_fmadd_ps(a, b, c); }
GA_ACT_TARGET inline V fnmadd(V a, V b, V c) { return _mm256_fnmadd_ps(a, b, c); }
GA_ACT_TARGET inline V vmin(V a, V b) { return _mm256_min_ps(a, b); }
GA_ACT_TARGET inline V vmax(V a, V b) { return _mm256_max_ps(a, b); }
GA_ACT_TARGET inline V round(V v) { return _mm256_round_ps(v, _MM_FROUND_TO_NEAREST_INT | _MM_FROUND_NO_EXC); }
/// p 2^n for integral n in [-252, 254], as VSCALEFPS gives it: 2^n as two powers of two
/// that are normal f32 (n = k1 + k2, each in [-126, 127]), so that the first product is
/// exact and the second rounds once (to a subnormal, or to inf past the range).
GA_ACT_TARGET inline V scale2(V p, V n) {
  const __m256i k = _mm256_cvtps_epi32(n), k1 = _mm256_srai_epi32(k, 1), k2 = _mm256_sub_epi32(k, k1);
  const __m256i bias = _mm256_set1_epi32(127);
  const V p1 = _mm256_castsi256_ps(_mm256_slli_epi32(_mm256_add_epi32(k1, bias), 23));
  const V p2 = _mm256_castsi256_ps(_mm256_slli_epi32(_mm256_add_epi32(k2, bias), 23));
  return _mm256_mul_ps(_mm256_mul_ps(p, p1), p2);
}
GA_ACT_TARGET inline V abs(V v) { return _mm256_and_ps(v, _mm256_castsi256_ps(_mm256_set1_epi32(0x7fffffff))); }
GA_ACT_TARGET inline V with_sign_of(V m, V s) {
  return _mm256_or_ps(m, _mm256_and_ps(s, _mm256_castsi256_ps(_mm256_set1_epi32(int(0x80000000u)))));
}
GA_ACT_TARGET inline V where_ge(V x, float c, V a, V b) {
  return _mm256_blendv_ps(a, b, _mm256_cmp_ps(x, _mm256_set1_ps(c), _CMP_GE_OQ));
}
GA_ACT_TARGET inline V load(const float* p) { return _mm256_loadu_ps(p); }
GA_ACT_TARGET inline void store(float* p, V v) { _mm256_storeu_ps(p, v); }
/// Lanes below n set (their sign bit): what VMASKMOVPS reads and writes.
GA_ACT_TARGET inline __m256i first_lanes(int64_t n) {
  return _mm256_cmpgt_epi32(_mm256_set1_epi32(int(n)), _mm256_setr_epi32(0, 1, 2, 3, 4, 5, 6, 7));
}
GA_ACT_TARGET inline V load_first(const float* p, int64_t n) { return _mm256_maskload_ps(p, first_lanes(n)); }
GA_ACT_TARGET inline void store_first(float* p, V v, int64_t n) { _mm256_maskstore_ps(p, first_lanes(n), v); }

#include "activation.inl"
#undef GA_ACT_TARGET

}  // namespace activation_avx2

GA_SIMD_WARNINGS_POP

}  // namespace ga::backend::cpu
#endif  // GA_X86_F32_KERNELS
