// Mixed products (f32 activations with bf16/f16 weights, f32 accumulation) at the CLIP
// towers' shapes, against our f32 product and OpenBLAS's sgemm in the same binary. Each
// bf16 kernel the machine runs is measured separately (AMX, AVX512-BF16, and the portable
// reference that converts to f32 for Eigen), at precision Medium (activations rounded to
// bf16; the last argument 1) and Highest (exact; 3). Threads: GA_BENCH_THREADS (default 2).
//
//   ./build/bench/bench_lowp --benchmark_counters_tabular=true
#include <benchmark/benchmark.h>
#include <cblas.h>
#if defined(__x86_64__)
#include <immintrin.h>
#endif

#include <array>
#include <cstdlib>
#include <initializer_list>
#include <string>
#include <vector>

#include <ga/ga.hpp>

#include "bench_common.hpp"

namespace {

using ga::backend::cpu::Bf16Kernel;

const bool kThreadsSet = [] {
  set_bench_threads_with_openblas();
  return true;
}();

// ---- linear layers: y [M, N] = x [M, K] @ w [N, K]^T ----
// Args {M, K, N}: ViT-B/32 at batch 16 (M = 16 * 50 tokens) and batch 1, and the text
// transformer at batch 64 (M = 64 * 77): attention in-projection, out-projection, MLP.

void shapes_at(benchmark::internal::Benchmark* b, std::initializer_list<int64_t> precisions) {
  for (int64_t p : precisions) {
    for (int64_t m : {800, 50})
      for (auto kn : {std::pair<int64_t, int64_t>{768, 2304}, {768, 768}, {768, 3072}, {3072, 768}})
        b->Args({m, kn.first, kn.second, p});
    for (auto kn : {std::pair<int64_t, int64_t>{512, 1536}, {512, 512}, {512, 2048}, {2048, 512}})
      b->Args({64 * 77, kn.first, kn.second, p});
  }
  b->Unit(benchmark::kMillisecond)->UseRealTime();
}
void linear_shapes(benchmark::internal::Benchmark* b) { shapes_at(b, {0}); }
void linear_shapes_fast(benchmark::internal::Benchmark* b) { shapes_at(b, {1}); }
void linear_shapes_both(benchmark::internal::Benchmark* b) { shapes_at(b, {1, 3}); }

void BM_linear_f32_ga(benchmark::State& st) {
  const int64_t M = st.range(0), K = st.range(1), N = st.range(2);
  ga::Generator g(1);
  const ga::Tensor x = ga::randn({M, K}, g), w = ga::randn({N, K}, g);
  ga::NoGradGuard ng;
  for (auto _ : st) benchmark::DoNotOptimize(ga::linear(x, w).raw_data());
  set_flops(st, 2.0 * M * N * K);
}

void BM_linear_f32_openblas(benchmark::State& st) {
  const int M = int(st.range(0)), K = int(st.range(1)), N = int(st.range(2));
  std::vector<float> x(size_t(M) * K, 0.5f), w(size_t(N) * K, 0.25f), y(size_t(M) * N);
  for (auto _ : st) {
    cblas_sgemm(CblasRowMajor, CblasNoTrans, CblasTrans, M, N, K, 1.0f, x.data(), K, w.data(), K, 0.0f, y.data(), N);
    benchmark::DoNotOptimize(y.data());
  }
  set_flops(st, 2.0 * M * N * K);
}

/// Runs `body` under bf16 kernel k at precision p (1, 2, 3), or skips the case when the
/// machine cannot run k; restores the defaults after.
template <class F>
void with_kernel(benchmark::State& st, Bf16Kernel k, int64_t p, const F& body) {
  if (!ga::backend::cpu::bf16_kernel_supported(k)) {
    st.SkipWithError((std::string(ga::backend::cpu::bf16_kernel_name(k)) + " not supported here").c_str());
    return;
  }
  ga::backend::cpu::set_bf16_kernel(k);
  ga::set_mixed_matmul_precision(static_cast<ga::backend::MixedPrecision>(p));
  body();
  ga::backend::cpu::set_bf16_kernel(Bf16Kernel::Auto);
  ga::set_mixed_matmul_precision(ga::backend::MixedPrecision::Highest);
}

void linear_mixed(benchmark::State& st, ga::DType wt, Bf16Kernel k) {
  const int64_t M = st.range(0), K = st.range(1), N = st.range(2);
  ga::Generator g(1);
  const ga::Tensor x = ga::randn({M, K}, g), w = ga::randn({N, K}, g).to(wt);
  ga::NoGradGuard ng;
  with_kernel(st, k, st.range(3), [&] {
    for (auto _ : st) benchmark::DoNotOptimize(ga::linear(x, w).raw_data());
  });
  set_flops(st, 2.0 * M * N * K);
}
void BM_linear_bf16_amx(benchmark::State& st) { linear_mixed(st, ga::bf16, Bf16Kernel::Amx); }
void BM_linear_f16_amx(benchmark::State& st) { linear_mixed(st, ga::f16, Bf16Kernel::Amx); }
void BM_linear_bf16_avx512bf16(benchmark::State& st) { linear_mixed(st, ga::bf16, Bf16Kernel::Avx512Bf16); }
void BM_linear_bf16_reference(benchmark::State& st) { linear_mixed(st, ga::bf16, Bf16Kernel::Reference); }

BENCHMARK(BM_linear_f32_ga)->Apply(linear_shapes);
BENCHMARK(BM_linear_f32_openblas)->Apply(linear_shapes);
BENCHMARK(BM_linear_bf16_amx)->Apply(linear_shapes_both);
BENCHMARK(BM_linear_f16_amx)->Apply(linear_shapes_both);
BENCHMARK(BM_linear_bf16_avx512bf16)->Apply(linear_shapes_fast);
BENCHMARK(BM_linear_bf16_reference)->Apply(linear_shapes_fast);

// ---- convolutions of CLIP's ResNet-50 at batch 16: f32 weights vs bf16 weights ----
// Args {C, HW, O, k}: the stem's 3x3 at 112x112, bottleneck 3x3 and 1x1 convs per stage.

void conv_shapes_at(benchmark::internal::Benchmark* b, std::initializer_list<int64_t> precisions) {
  for (int64_t p : precisions)
    for (auto a : {std::array<int64_t, 4>{32, 112, 32, 3}, {64, 56, 64, 3}, {256, 56, 64, 1}, {64, 56, 256, 1},
                   {128, 28, 128, 3}, {256, 14, 256, 3}, {512, 7, 512, 3}, {512, 7, 2048, 1}})
      b->Args({a[0], a[1], a[2], a[3], p});
  b->Unit(benchmark::kMillisecond)->UseRealTime();
}
void conv_shapes(benchmark::internal::Benchmark* b) { conv_shapes_at(b, {0}); }
void conv_shapes_fast(benchmark::internal::Benchmark* b) { conv_shapes_at(b, {1}); }
void conv_shapes_both(benchmark::internal::Benchmark* b) { conv_shapes_at(b, {1, 3}); }

void conv(benchmark::State& st, ga::DType wt, Bf16Kernel k) {
  const int64_t c = st.range(0), hw = st.range(1), o = st.range(2), ks = st.range(3), n = 16;
  ga::Generator g(6);
  const ga::Tensor x = ga::randn({n, c, hw, hw}, g), w = ga::randn({o, c, ks, ks}, g).to(wt);
  ga::NoGradGuard ng;
  auto body = [&] {
    for (auto _ : st) benchmark::DoNotOptimize(ga::conv2d(x, w, {}, {1, 1}, {ks / 2, ks / 2}).raw_data());
  };
  if (wt == ga::f32) body();
  else with_kernel(st, k, st.range(4), body);
  set_flops(st, 2.0 * n * o * c * ks * ks * hw * hw);
}
void BM_conv2d_f32_ga(benchmark::State& st) { conv(st, ga::f32, Bf16Kernel::Auto); }
void BM_conv2d_bf16_amx(benchmark::State& st) { conv(st, ga::bf16, Bf16Kernel::Amx); }
void BM_conv2d_bf16_avx512bf16(benchmark::State& st) { conv(st, ga::bf16, Bf16Kernel::Avx512Bf16); }
void BM_conv2d_bf16_reference(benchmark::State& st) { conv(st, ga::bf16, Bf16Kernel::Reference); }

BENCHMARK(BM_conv2d_f32_ga)->Apply(conv_shapes);
BENCHMARK(BM_conv2d_bf16_amx)->Apply(conv_shapes_both);
BENCHMARK(BM_conv2d_bf16_avx512bf16)->Apply(conv_shapes_fast);
BENCHMARK(BM_conv2d_bf16_reference)->Apply(conv_shapes_fast);

// ---- the product with an epilogue (Backend::matmul): fused into the x86 kernels' stores ----
// A ResNet-50 1x1 conv at batch 16 as the product it lowers to: out [16, 256, 3136] =
// W [256, 64] bf16 @ X [16, 64, 3136] f32, with a per-row bias and relu (Args {kernel: 0 AMX,
// 1 AVX512-BF16; epilogue: 0 none, 1 bias + relu; precision}). The difference between the
// two epilogue rows is what the epilogue costs.

void BM_matmul_bf16_epilogue(benchmark::State& st) {
  const Bf16Kernel k = st.range(0) == 0 ? Bf16Kernel::Amx : Bf16Kernel::Avx512Bf16;
  const int64_t B = 16, M = 256, K = 64, N = 3136;
  ga::Generator g(7);
  const ga::Tensor w = ga::randn({M, K}, g).to(ga::bf16), x = ga::randn({B, K, N}, g);
  const ga::Tensor a = w.as_strided({B, M, K}, {0, K, 1}, w.offset()), out = ga::empty({B, M, N});
  ga::backend::MatmulEpilogue e;
  if (st.range(1) == 1) {
    e.bias = ga::randn({M}, g);
    e.bias_per_row = true;
    e.activation = ga::backend::Activation::Relu;
  }
  with_kernel(st, k, st.range(2), [&] {
    for (auto _ : st) {
      ga::backend::of(out).matmul(a, x, out, e);
      benchmark::DoNotOptimize(out.raw_data());
    }
  });
  set_flops(st, 2.0 * B * M * N * K);
}
BENCHMARK(BM_matmul_bf16_epilogue)
    ->ArgsProduct({{0, 1}, {0, 1}, {1, 3}})
    ->Unit(benchmark::kMillisecond)
    ->UseRealTime();

// ---- what one core's vector units multiply-add per second, by instruction (AVX2) ----
// The bound on an integer path for CPUs without AVX512-BF16 or AVX512-VNNI: 12 independent
// accumulators (no latency chain), operands in registers, so only the instruction's
// throughput counts. f32 FMA: 8 multiply-adds per instruction. VPMADDWD (int16 pairs into
// int32) + VPADDD: 16. VPMADDUBSW (u8 x s8 pairs into saturating int16) + VPMADDWD (by 1s,
// into int32) + VPADDD, the AVX2 int8 product: 32. The GMAC/s counters, side by side, say
// how much faster than the f32 kernel an int16 or int8 kernel could at best be here.
#if defined(__x86_64__) && (defined(__clang__) || defined(__GNUC__))
// Each runs `steps` steps of 12 instructions (groups) and returns a value of the sums, so
// that none is optimised away; the empty asm says a and b may have changed (no hoisting).
__attribute__((target("avx2,fma"))) double fma_steps(int64_t steps) {
  __m256 acc[12];
  for (int i = 0; i < 12; ++i) acc[i] = _mm256_set1_ps(float(i));
  __m256 a = _mm256_set1_ps(1.0001f), b = _mm256_set1_ps(0.9999f);
  for (int64_t s = 0; s < steps; ++s) {
#pragma GCC unroll 12
    for (int i = 0; i < 12; ++i) acc[i] = _mm256_fmadd_ps(a, b, acc[i]);
    __asm__ volatile("" : "+x"(a), "+x"(b));
  }
  float v[8], sum = 0;
  for (int i = 0; i < 12; ++i) {
    _mm256_storeu_ps(v, acc[i]);
    sum += v[0];
  }
  return sum;
}

/// The sum of the first lanes of 12 int32 accumulators.
__attribute__((target("avx2,fma"))) double first_lanes_sum(const __m256i* acc) {
  double sum = 0;
  for (int i = 0; i < 12; ++i) sum += _mm256_extract_epi32(acc[i], 0);
  return sum;
}

__attribute__((target("avx2,fma"))) double vpmaddwd_steps(int64_t steps) {
  __m256i acc[12];
  for (int i = 0; i < 12; ++i) acc[i] = _mm256_set1_epi32(i);
  __m256i a = _mm256_set1_epi16(3), b = _mm256_set1_epi16(5);
  for (int64_t s = 0; s < steps; ++s) {
#pragma GCC unroll 12
    for (int i = 0; i < 12; ++i) acc[i] = _mm256_add_epi32(acc[i], _mm256_madd_epi16(a, b));
    __asm__ volatile("" : "+x"(a), "+x"(b));
  }
  return first_lanes_sum(acc);
}

__attribute__((target("avx2,fma"))) double vpmaddubsw_steps(int64_t steps) {
  __m256i acc[12];
  for (int i = 0; i < 12; ++i) acc[i] = _mm256_set1_epi32(i);
  __m256i a = _mm256_set1_epi8(3), b = _mm256_set1_epi8(5);
  const __m256i ones = _mm256_set1_epi16(1);
  for (int64_t s = 0; s < steps; ++s) {
#pragma GCC unroll 12
    for (int i = 0; i < 12; ++i) acc[i] = _mm256_add_epi32(acc[i], _mm256_madd_epi16(_mm256_maddubs_epi16(a, b), ones));
    __asm__ volatile("" : "+x"(a), "+x"(b));
  }
  return first_lanes_sum(acc);
}

void peak(benchmark::State& st, double macs_per_step, double (*steps_of)(int64_t)) {
  if (!__builtin_cpu_supports("avx2") || !__builtin_cpu_supports("fma")) {
    st.SkipWithError("needs AVX2 and FMA");
    return;
  }
  constexpr int64_t kSteps = 1 << 16;
  for (auto _ : st) benchmark::DoNotOptimize(steps_of(kSteps));
  st.counters["GMAC/s"] =
      benchmark::Counter(double(st.iterations()) * kSteps * macs_per_step / 1e9, benchmark::Counter::kIsRate);
}

void BM_peak_f32_fma(benchmark::State& st) { peak(st, 12 * 8, fma_steps); }
void BM_peak_int16_vpmaddwd(benchmark::State& st) { peak(st, 12 * 16, vpmaddwd_steps); }
void BM_peak_int8_vpmaddubsw(benchmark::State& st) { peak(st, 12 * 32, vpmaddubsw_steps); }

BENCHMARK(BM_peak_f32_fma)->UseRealTime();
BENCHMARK(BM_peak_int16_vpmaddwd)->UseRealTime();
BENCHMARK(BM_peak_int8_vpmaddubsw)->UseRealTime();
#endif

}  // namespace

BENCHMARK_MAIN();
