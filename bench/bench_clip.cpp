// CLIP towers on random weights of the real size (issue 3, points 5 and 8): Model::load from
// a warm page cache, encode_image at batch 1 and 16 (ViT-B/32, RN50; batch 1 for the big
// models), encode_text at batch 64 on real prompts, and the f32 matrix product at every
// shape the towers use, ours (ga::matmul / ga::linear) and OpenBLAS's sgemm in the same run:
// the faster of the two at each shape makes the ceiling (bench/clip_report.py sums it up).
//
//   GA_CLIP_BENCH_CACHE=build/clip_bench_cache ./build/bench/bench_clip --benchmark_format=json
//
// Environment: GA_BENCH_THREADS (2), GA_CLIP_BENCH_MODELS (default
// "ViT-B/32,RN50,RN50x4,ViT-L/14@336px"), GA_CLIP_BENCH_CACHE (where model files are written
// once), GA_CLIP_VOCAB (default ../shared/clip/bpe_simple_vocab_16e6.txt.gz),
// GA_CLIP_BENCH_MIN_TIME (seconds per tower figure, 3), GA_CLIP_GEMM_MIN_TIME (0.3),
// GA_CLIP_BENCH_GEMM (0 skips the GEMM ceiling benchmarks).
// Normally run by bench/run_clip_bench.sh together with the PyTorch peer.
#include <benchmark/benchmark.h>
#include <cblas.h>

#include <algorithm>
#include <chrono>
#include <cstdio>
#include <memory>

#include <ga/clip/model.hpp>

#include "bench_common.hpp"
#include "clip_bench_common.hpp"


namespace {

using namespace clipbench;

double env_double(const char* name, double dflt) {
  const char* s = std::getenv(name);
  return s && *s ? std::atof(s) : dflt;
}

using ga::clip::WeightMode;

// One loaded model per name and weight mode, shared by the benchmarks (loading is measured
// separately). The files hold f32 weights: AsStored is the f32 path, Bf16 the fast one.
const ga::clip::Model& model(const std::string& name, WeightMode mode = WeightMode::AsStored) {
  static std::map<std::pair<std::string, WeightMode>, std::shared_ptr<ga::clip::Model>> models;
  auto& m = models[{name, mode}];
  if (!m) m = std::make_shared<ga::clip::Model>(ga::clip::Model::load(ensure_model_file(spec(name)), {mode}));
  return *m;
}

/// The smallest cosine similarity between matching rows of a and b ([N, D] f32).
double min_row_cosine(const ga::Tensor& a, const ga::Tensor& b) {
  const std::vector<float> x = a.contiguous().to_vector<float>(), y = b.contiguous().to_vector<float>();
  const size_t D = size_t(a.size(1));
  double worst = 1;
  for (size_t r = 0; r * D < x.size(); ++r) {
    double xy = 0, xx = 0, yy = 0;
    for (size_t j = r * D; j < (r + 1) * D; ++j) {
      xy += double(x[j]) * y[j];
      xx += double(x[j]) * x[j];
      yy += double(y[j]) * y[j];
    }
    worst = std::min(worst, xy / std::sqrt(xx * yy));
  }
  return worst;
}

void require_finite(const ga::Tensor& t, const std::string& what) {
  for (float v : t.contiguous().to_vector<float>())
    GA_CHECK(std::isfinite(v), ga::ValueError, what, ": non-finite output; the timing would mean nothing");
}

// ---- towers ----

void bench_load(benchmark::State& st, std::string name) {
  const std::string path = ensure_model_file(spec(name));
  { auto warm = ga::clip::Model::load(path); }  // page cache and block cache warm
  for (auto _ : st) {
    auto m = ga::clip::Model::load(path);
    benchmark::DoNotOptimize(&m);
  }
}

/// Images per second of encode_image at `batch`. In WeightMode::Bf16 also the counter
/// cos_vs_f32: the smallest cosine between its embeddings and the f32 model's.
void bench_image(benchmark::State& st, std::string name, int64_t batch, WeightMode mode) {
  const ModelSpec& s = spec(name);
  const auto& m = model(name, mode);
  ga::Generator g(7);
  const int64_t R = s.cfg.image_resolution;
  const ga::Tensor x = ga::randn({batch, 3, R, R}, g);
  const ga::Tensor first = m.encode_image(x);  // also the warm-up
  require_finite(first, name + " encode_image");
  if (mode == WeightMode::Bf16) st.counters["cos_vs_f32"] = min_row_cosine(first, model(name).encode_image(x));
  for (auto _ : st) benchmark::DoNotOptimize(m.encode_image(x).raw_data());
  st.counters["images/s"] = benchmark::Counter(double(batch), benchmark::Counter::kIsIterationInvariantRate);
  st.counters["GFLOP/s"] =
      benchmark::Counter(double(batch) * s.image_gflops, benchmark::Counter::kIsIterationInvariantRate);
}

void bench_text(benchmark::State& st, std::string name, bool full_length, WeightMode mode) {
  const auto& m = model(name, mode);
  const ga::Tensor tokens = m.tokenize(prompts(64));
  const ga::Tensor first = m.encode_text(tokens, nullptr, full_length);
  require_finite(first, name + " encode_text");
  if (mode == WeightMode::Bf16) st.counters["cos_vs_f32"] = min_row_cosine(first, model(name).encode_text(tokens));
  for (auto _ : st) benchmark::DoNotOptimize(m.encode_text(tokens, nullptr, full_length).raw_data());
  st.counters["texts/s"] = benchmark::Counter(64.0, benchmark::Counter::kIsIterationInvariantRate);
}

// ---- matrix products at the towers' shapes ----

/// Positions the text tower needs for the 64 prompts: the last EOT (largest id) + 1.
int64_t prompts_length(const ga::clip::Model& m) {
  const ga::Tensor t = m.tokenize(prompts(64));
  const std::vector<int64_t> ids = t.to_vector<int64_t>();
  const int64_t L = t.size(1);
  int64_t len = 0;
  for (int64_t n = 0; n < t.size(0); ++n) {
    int64_t best = 0;
    for (int64_t i = 0; i < L; ++i)
      if (ids[size_t(n * L + i)] > ids[size_t(n * L + best)]) best = i;
    len = std::max(len, best + 1);
  }
  return len;
}

void set_gemm_counters(benchmark::State& st, const Gemm& g) {
  st.counters["GFLOP/s"] = benchmark::Counter(g.flops() * 1e-9, benchmark::Counter::kIsIterationInvariantRate);
  st.counters["flop"] = g.flops();
  st.counters["count"] = double(g.count);
  st.SetLabel(ga::cat("batch=", g.batch, " M=", g.M, " K=", g.K, " N=", g.N));
}

void bench_gemm_ga(benchmark::State& st, Gemm g) {
  ga::Generator gen(11);
  ga::NoGradGuard ng;
  if (g.kind == GemmKind::Linear) {  // as ga::linear calls it: the weight used transposed in place
    const ga::Tensor x = ga::randn({g.M, g.K}, gen), w = ga::randn({g.N, g.K}, gen);
    for (auto _ : st) benchmark::DoNotOptimize(ga::linear(x, w).raw_data());
  } else if (g.kind == GemmKind::Conv) {
    const ga::Tensor w = ga::randn({g.M, g.K}, gen), cols = ga::randn({g.K, g.N}, gen);
    for (auto _ : st) benchmark::DoNotOptimize(ga::matmul(w, cols).raw_data());
  } else {  // per-head products, batched; b given as a transposed view like q @ k^T
    const ga::Tensor a = ga::randn({g.batch, g.M, g.K}, gen), b = ga::randn({g.batch, g.N, g.K}, gen);
    const ga::Tensor bt = b.transpose(1, 2);
    for (auto _ : st) benchmark::DoNotOptimize(ga::matmul(a, bt).raw_data());
  }
  set_gemm_counters(st, g);
}

void bench_gemm_openblas(benchmark::State& st, Gemm g) {
  const int M = int(g.M), K = int(g.K), N = int(g.N);
  std::vector<float> a(size_t(g.batch) * M * K, 0.5f), b(size_t(g.batch) * K * N, 0.25f), c(size_t(g.batch) * M * N);
  for (auto _ : st) {
    if (g.kind == GemmKind::Linear) {
      cblas_sgemm(CblasRowMajor, CblasNoTrans, CblasTrans, M, N, K, 1.0f, a.data(), K, b.data(), K, 0.0f, c.data(), N);
    } else if (g.kind == GemmKind::Conv) {
      cblas_sgemm(CblasRowMajor, CblasNoTrans, CblasNoTrans, M, N, K, 1.0f, a.data(), K, b.data(), N, 0.0f, c.data(),
                  N);
    } else {
      for (int64_t i = 0; i < g.batch; ++i)
        cblas_sgemm(CblasRowMajor, CblasNoTrans, CblasTrans, M, N, K, 1.0f, a.data() + i * M * K, K,
                    b.data() + i * K * N, K, 0.0f, c.data() + i * M * N, N);
    }
    benchmark::DoNotOptimize(c.data());
  }
  set_gemm_counters(st, g);
}

void register_gemms(const std::string& tower, const std::vector<Gemm>& gemms, double min_time) {
  for (size_t i = 0; i < gemms.size(); ++i) {
    const Gemm& g = gemms[i];
    const std::string base = "gemm/" + tower + "/" + std::to_string(i) + ":" + g.label + "/";
    benchmark::RegisterBenchmark((base + "ga").c_str(), bench_gemm_ga, g)
        ->Unit(benchmark::kMillisecond)->UseRealTime()->MinTime(min_time);
    benchmark::RegisterBenchmark((base + "openblas").c_str(), bench_gemm_openblas, g)
        ->Unit(benchmark::kMillisecond)->UseRealTime()->MinTime(min_time);
  }
}

}  // namespace

int main(int argc, char** argv) {
  set_bench_threads_with_openblas();
  benchmark::Initialize(&argc, argv);

  const double tmin = env_double("GA_CLIP_BENCH_MIN_TIME", 3.0);
  const double gmin = env_double("GA_CLIP_GEMM_MIN_TIME", 0.3);
  const std::vector<std::string> names = selected_models();
  for (const std::string& name : names) {
    const auto t0 = std::chrono::steady_clock::now();
    ensure_model_file(spec(name));
    std::fprintf(stderr, "clip bench: %s model file ready (%.1f s)\n", name.c_str(),
                 std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count());
  }
  for (const std::string& name : names) {
    const ModelSpec& s = spec(name);
    const std::string tag = file_tag(name);
    benchmark::RegisterBenchmark(("clip_load/" + tag).c_str(), bench_load, name)
        ->Unit(benchmark::kMillisecond)->UseRealTime()->MinTime(1.0);
    // f32 (clip_image, clip_text) and the reduced-precision path (clip_image_bf16, clip_text_bf16).
    for (WeightMode mode : {WeightMode::AsStored, WeightMode::Bf16}) {
      const std::string sfx = mode == WeightMode::Bf16 ? "_bf16" : "";
      for (int64_t b : s.full ? std::vector<int64_t>{1, 16} : std::vector<int64_t>{1})
        benchmark::RegisterBenchmark(("clip_image" + sfx + "/" + tag + "/" + std::to_string(b)).c_str(), bench_image,
                                     name, b, mode)
            ->Unit(benchmark::kMillisecond)->UseRealTime()->MinTime(tmin);
      if (s.full)
        benchmark::RegisterBenchmark(("clip_text" + sfx + "/" + tag + "/64").c_str(), bench_text, name, false, mode)
            ->Unit(benchmark::kMillisecond)->UseRealTime()->MinTime(tmin);
    }
    if (s.full)
      benchmark::RegisterBenchmark(("clip_text_full/" + tag + "/64").c_str(), bench_text, name, true,
                                   WeightMode::AsStored)
          ->Unit(benchmark::kMillisecond)->UseRealTime()->MinTime(tmin);
  }
  if (env_double("GA_CLIP_BENCH_GEMM", 1) != 0) {
    std::vector<int64_t> text_widths_done;  // RN50's and ViT-B/32's text towers are the same
    for (const std::string& name : names) {
      const ModelSpec& s = spec(name);
      if (!s.full) continue;
      const std::string tag = file_tag(name);
      for (int64_t b : {1, 16}) register_gemms(tag + ".image.b" + std::to_string(b), image_gemms(s.cfg, b), gmin);
      const int64_t w = s.cfg.transformer_width;
      if (std::find(text_widths_done.begin(), text_widths_done.end(), w) != text_widths_done.end()) continue;
      text_widths_done.push_back(w);
      // The text tower at full length and at the prompts' length (last EOT position + 1).
      const int64_t L = prompts_length(model(name));
      register_gemms(tag + ".text.L77", text_gemms(s.cfg, 64, 77), gmin);
      register_gemms(tag + ".text.L" + std::to_string(L), text_gemms(s.cfg, 64, L), gmin);
    }
  }
  benchmark::RunSpecifiedBenchmarks();
  benchmark::Shutdown();
  return 0;
}
