// CPU: which x86 instruction sets the kernels may use, probed at run time. The kernels are
// compiled with per-function target attributes (GA_TARGET_AVX512F, GA_TARGET_AVX2), so a portable build
// carries them and runs them only where the CPU (and the OS) allow.
#pragma once

#if defined(__x86_64__) && (defined(__clang__) || (defined(__GNUC__) && __GNUC__ >= 9))
#define GA_X86_F32_KERNELS 1
#include <immintrin.h>
#define GA_TARGET_AVX512F __attribute__((target("avx512f,fma")))
#define GA_TARGET_AVX2 __attribute__((target("avx2,fma")))
#else
#define GA_X86_F32_KERNELS 0
#endif

// Around intrinsics code: GCC 12's AVX-512 (and AVX2) headers build some results from a
// self-initialised "undefined" vector, which -Wall reports as uninitialised wherever they
// are used; the values are all written.
#if defined(__GNUC__) && !defined(__clang__)
#define GA_SIMD_WARNINGS_PUSH                                   \
  _Pragma("GCC diagnostic push") _Pragma("GCC diagnostic ignored \"-Wuninitialized\"") \
      _Pragma("GCC diagnostic ignored \"-Wmaybe-uninitialized\"")
#define GA_SIMD_WARNINGS_POP _Pragma("GCC diagnostic pop")
#else
#define GA_SIMD_WARNINGS_PUSH
#define GA_SIMD_WARNINGS_POP
#endif

namespace ga::backend::cpu::detail {

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

/// AVX2 and FMA with the OS saving the ymm state.
inline bool probe_f32_avx2() {
#if GA_X86_F32_KERNELS
  __builtin_cpu_init();
  return __builtin_cpu_supports("avx2") && __builtin_cpu_supports("fma");
#else
  return false;
#endif
}

inline bool f32_avx2_supported() {
  static const bool s = probe_f32_avx2();
  return s;
}

}  // namespace ga::backend::cpu::detail
