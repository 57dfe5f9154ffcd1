// Engine benchmarks: our ops against plain Eigen and OpenBLAS in the same binary, so
// the ratios are measured under identical conditions. Threads: GA_BENCH_THREADS
// (default 2) for ga, Eigen and OpenBLAS alike.
//
//   ./build/bench/ga_bench --benchmark_counters_tabular=true
#include <benchmark/benchmark.h>
#include <cblas.h>

#include <cstdlib>
#include <cstring>
#include <vector>

#include <ga/ga.hpp>

#include "bench_common.hpp"

namespace {

const bool kThreadsSet = [] {
  set_bench_threads_with_openblas();
  return true;
}();

// ---- matrix product: ga vs Eigen vs OpenBLAS, square f32 ----

void BM_matmul_ga(benchmark::State& st) {
  const int64_t n = st.range(0);
  ga::Generator g(1);
  ga::Tensor a = ga::randn({n, n}, g), b = ga::randn({n, n}, g);
  ga::NoGradGuard ng;
  for (auto _ : st) benchmark::DoNotOptimize(ga::matmul(a, b).raw_data());
  set_flops(st, 2.0 * n * n * n);
}
void BM_matmul_eigen(benchmark::State& st) {
  const int64_t n = st.range(0);
  using M = Eigen::Matrix<float, Eigen::Dynamic, Eigen::Dynamic, Eigen::RowMajor>;
  M a = M::Random(n, n), b = M::Random(n, n), c(n, n);
  for (auto _ : st) {
    c.noalias() = a * b;
    benchmark::DoNotOptimize(c.data());
  }
  set_flops(st, 2.0 * n * n * n);
}
void BM_matmul_openblas(benchmark::State& st) {
  const int n = static_cast<int>(st.range(0));
  std::vector<float> a(size_t(n) * n, 0.5f), b(size_t(n) * n, 0.25f), c(size_t(n) * n);
  for (auto _ : st) {
    cblas_sgemm(CblasRowMajor, CblasNoTrans, CblasNoTrans, n, n, n, 1.0f, a.data(), n, b.data(), n, 0.0f, c.data(), n);
    benchmark::DoNotOptimize(c.data());
  }
  set_flops(st, 2.0 * n * n * n);
}
BENCHMARK(BM_matmul_ga)->Arg(256)->Arg(512)->Arg(1024)->Arg(2048)->Unit(benchmark::kMillisecond)->UseRealTime();
BENCHMARK(BM_matmul_eigen)->Arg(256)->Arg(512)->Arg(1024)->Arg(2048)->Unit(benchmark::kMillisecond)->UseRealTime();
BENCHMARK(BM_matmul_openblas)->Arg(256)->Arg(512)->Arg(1024)->Arg(2048)->Unit(benchmark::kMillisecond)->UseRealTime();

// ---- elementwise: bandwidth against a plain loop doing the same work ----

void BM_add_ga(benchmark::State& st) {
  const int64_t n = st.range(0);
  ga::Tensor a = ga::ones({n}), b = ga::ones({n});
  ga::NoGradGuard ng;
  for (auto _ : st) benchmark::DoNotOptimize(ga::add(a, b).raw_data());
  st.counters["GB/s"] = benchmark::Counter(3.0 * 4 * n * 1e-9, benchmark::Counter::kIsIterationInvariantRate);
}
void BM_add_eigen(benchmark::State& st) {
  const int64_t n = st.range(0);
  Eigen::ArrayXf a = Eigen::ArrayXf::Ones(n), b = Eigen::ArrayXf::Ones(n);
  for (auto _ : st) {
    Eigen::ArrayXf c = a + b;  // allocates its output, as ga::add does
    benchmark::DoNotOptimize(c.data());
  }
  st.counters["GB/s"] = benchmark::Counter(3.0 * 4 * n * 1e-9, benchmark::Counter::kIsIterationInvariantRate);
}
// The memory-bandwidth reference for the two above: a plain copy split across the same
// threads (reads n, writes n), into a buffer allocated once.
void BM_copy_reference(benchmark::State& st) {
  const int64_t n = st.range(0);
  std::vector<float> a(static_cast<size_t>(n), 1.0f), c(static_cast<size_t>(n));
  for (auto _ : st) {
    ga::backend::cpu::parallel_for(0, n, 1 << 16, [&](int64_t lo, int64_t hi) {
      std::memcpy(c.data() + lo, a.data() + lo, sizeof(float) * static_cast<size_t>(hi - lo));
    });
    benchmark::DoNotOptimize(c.data());
  }
  st.counters["GB/s"] = benchmark::Counter(2.0 * 4 * n * 1e-9, benchmark::Counter::kIsIterationInvariantRate);
}
BENCHMARK(BM_copy_reference)->Arg(1 << 24)->Unit(benchmark::kMicrosecond)->UseRealTime();
BENCHMARK(BM_add_ga)->Arg(1 << 16)->Arg(1 << 24)->Unit(benchmark::kMicrosecond)->UseRealTime();
BENCHMARK(BM_add_eigen)->Arg(1 << 16)->Arg(1 << 24)->Unit(benchmark::kMicrosecond)->UseRealTime();

void BM_gelu_ga(benchmark::State& st) {
  const int64_t n = st.range(0);
  ga::Generator g(2);
  ga::Tensor a = ga::randn({n}, g);
  ga::NoGradGuard ng;
  for (auto _ : st) benchmark::DoNotOptimize(ga::quick_gelu(a).raw_data());
  st.counters["GB/s"] = benchmark::Counter(2.0 * 4 * n * 1e-9, benchmark::Counter::kIsIterationInvariantRate);
}
BENCHMARK(BM_gelu_ga)->Arg(1 << 24)->Unit(benchmark::kMicrosecond)->UseRealTime();

// ---- transformer pieces at CLIP's shapes ----

void BM_softmax_ga(benchmark::State& st) {  // attention scores: [B*heads*L, L]
  const int64_t rows = st.range(0), n = st.range(1);
  ga::Generator g(3);
  ga::Tensor x = ga::randn({rows, n}, g);
  ga::NoGradGuard ng;
  for (auto _ : st) benchmark::DoNotOptimize(ga::softmax(x, -1).raw_data());
  st.counters["GB/s"] = benchmark::Counter(2.0 * 4 * rows * n * 1e-9, benchmark::Counter::kIsIterationInvariantRate);
}
BENCHMARK(BM_softmax_ga)->Args({64 * 8 * 77, 77})->Args({16 * 12 * 50, 50})->Unit(benchmark::kMicrosecond)->UseRealTime();

void BM_layer_norm_ga(benchmark::State& st) {
  const int64_t rows = st.range(0), n = st.range(1);
  ga::Generator g(4);
  ga::Tensor x = ga::randn({rows, n}, g), w = ga::ones({n}), b = ga::zeros({n});
  ga::NoGradGuard ng;
  for (auto _ : st) benchmark::DoNotOptimize(ga::layer_norm(x, {n}, w, b).raw_data());
  st.counters["GB/s"] = benchmark::Counter(2.0 * 4 * rows * n * 1e-9, benchmark::Counter::kIsIterationInvariantRate);
}
BENCHMARK(BM_layer_norm_ga)->Args({64 * 77, 512})->Args({16 * 50, 768})->Args({50, 768})->Unit(benchmark::kMicrosecond)->UseRealTime();

void BM_attention_ga(benchmark::State& st) {  // [B, heads, L, 64], causal for the text tower
  const int64_t B = st.range(0), H = st.range(1), L = st.range(2), causal = st.range(3);
  ga::Generator g(5);
  ga::Tensor q = ga::randn({B, H, L, 64}, g), k = ga::randn({B, H, L, 64}, g), v = ga::randn({B, H, L, 64}, g);
  ga::NoGradGuard ng;
  for (auto _ : st) benchmark::DoNotOptimize(ga::scaled_dot_product_attention(q, k, v, {}, causal != 0).raw_data());
  set_flops(st, 4.0 * B * H * L * L * 64);
}
BENCHMARK(BM_attention_ga)->Args({64, 8, 77, 1})->Args({16, 12, 50, 0})->Args({1, 12, 50, 0})->Unit(benchmark::kMillisecond)->UseRealTime();

// ---- convolution at ResNet-50 shapes (batch 1) ----

void BM_conv2d_ga(benchmark::State& st) {
  const int64_t c = st.range(0), hw = st.range(1), o = st.range(2), k = st.range(3);
  ga::Generator g(6);
  ga::Tensor x = ga::randn({1, c, hw, hw}, g), w = ga::randn({o, c, k, k}, g);
  ga::NoGradGuard ng;
  for (auto _ : st) benchmark::DoNotOptimize(ga::conv2d(x, w, {}, {1, 1}, {k / 2, k / 2}).raw_data());
  set_flops(st, 2.0 * o * c * k * k * hw * hw);
}
BENCHMARK(BM_conv2d_ga)->Args({64, 56, 64, 3})->Args({256, 56, 64, 1})->Args({512, 7, 512, 3})
    ->Unit(benchmark::kMillisecond)->UseRealTime();

}  // namespace

BENCHMARK_MAIN();
