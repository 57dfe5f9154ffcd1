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
//
// The image towers against their ceiling, robust to the machine's drift (no Google Benchmark):
//
//   bench_clip ceiling [--models ViT-B/32,RN50] [--batches 1,16] [--rounds 9]
//                      [--pass-seconds 1.0] [--ceiling-weights cached,streamed] [--out FILE.json]
//
// times, per model and batch, a tower pass and the ceiling passes (every GEMM shape, ours and
// OpenBLAS) alternately, back to back (ceiling_case below); one line per round on stdout, the
// per-round times as JSON in FILE (else on stdout). Two kinds of ceiling pass, both by default:
// "cached" repeats each shape on one weight, which then sits in cache; "streamed" runs the
// tower's products in forward order, each on a distinct weight read once per pass, as a
// forward pass reads them (this holds one forward's weights twice: ours and OpenBLAS's).
// Normally run by bench/run_clip_bench.sh together with the PyTorch peer.
#include <benchmark/benchmark.h>
#include <cblas.h>

#include <algorithm>
#include <chrono>
#include <cstdio>
#include <fstream>
#include <memory>
#include <sstream>

#include <ga/clip/model.hpp>
#include <ga/io/json.hpp>

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
// separately). The files hold f32 weights: AsStored is the f32 path, Bf16 and Int8 the fast ones.
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

/// Images per second of encode_image at `batch`. In WeightMode::Bf16 and Int8 also the counter
/// cos_vs_f32: the smallest cosine between its embeddings and the f32 model's.
void bench_image(benchmark::State& st, std::string name, int64_t batch, WeightMode mode) {
  const ModelSpec& s = spec(name);
  const auto& m = model(name, mode);
  ga::Generator g(7);
  const int64_t R = s.cfg.image_resolution;
  const ga::Tensor x = ga::randn({batch, 3, R, R}, g);
  const ga::Tensor first = m.encode_image(x);  // also the warm-up
  require_finite(first, name + " encode_image");
  if (mode != WeightMode::AsStored) st.counters["cos_vs_f32"] = min_row_cosine(first, model(name).encode_image(x));
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
  if (mode != WeightMode::AsStored) st.counters["cos_vs_f32"] = min_row_cosine(first, model(name).encode_text(tokens));
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

/// The operands of one matrix product, made once, and the product computed by ours
/// (ga::linear / ga::matmul, as the towers call them) or by OpenBLAS's sgemm. With copies > 1
/// the weight operand (Linear: w [N, K]; Conv: w [M, K]) exists `copies` times, distinct
/// allocations, and the call names the copy; the activation operand is shared. Attn products
/// have no weight (both operands are activations) and keep one copy.
class GemmOperands {
 public:
  explicit GemmOperands(const Gemm& g, int64_t copies = 1) : g_(g) {
    if (g.kind == GemmKind::Attn) copies = 1;
    GA_CHECK(copies >= 1, ga::ValueError, "GemmOperands: copies >= 1, got ", copies);
    ga::Generator gen(11);
    if (g.kind == GemmKind::Linear) {  // as ga::linear calls it: the weight used transposed in place
      x_ = ga::randn({g.M, g.K}, gen);
      for (int64_t c = 0; c < copies; ++c) w_.push_back(ga::randn({g.N, g.K}, gen));
    } else if (g.kind == GemmKind::Conv) {
      for (int64_t c = 0; c < copies; ++c) w_.push_back(ga::randn({g.M, g.K}, gen));
      x_ = ga::randn({g.K, g.N}, gen);
    } else {  // per-head products, batched; b given as a transposed view like q @ k^T
      x_ = ga::randn({g.batch, g.M, g.K}, gen);
      w_.push_back(ga::randn({g.batch, g.N, g.K}, gen).transpose(1, 2));
    }
    const size_t a_size = size_t(g.batch * g.M * g.K), b_size = size_t(g.batch * g.K * g.N);
    const bool weight_is_a = g.kind == GemmKind::Conv;
    X_.assign(weight_is_a ? b_size : a_size, weight_is_a ? 0.25f : 0.5f);
    W_.resize(size_t(copies));
    for (auto& w : W_) w.assign(weight_is_a ? a_size : b_size, weight_is_a ? 0.5f : 0.25f);
    C_.assign(size_t(g.batch * g.M * g.N), 0.0f);
  }

  int64_t copies() const { return int64_t(w_.size()); }
  /// Bytes of one weight operand (0 for Attn, which has none).
  double weight_bytes() const {
    return g_.kind == GemmKind::Attn ? 0.0 : double(W_[0].size() * sizeof(float));
  }

  void ours(size_t copy = 0) const {
    ga::NoGradGuard ng;
    const ga::Tensor& w = w_[copy];
    if (g_.kind == GemmKind::Linear)
      benchmark::DoNotOptimize(ga::linear(x_, w).raw_data());
    else if (g_.kind == GemmKind::Conv)
      benchmark::DoNotOptimize(ga::matmul(w, x_).raw_data());
    else
      benchmark::DoNotOptimize(ga::matmul(x_, w).raw_data());
  }

  void openblas(size_t copy = 0) {
    const int M = int(g_.M), K = int(g_.K), N = int(g_.N);
    const float* W = W_[copy].data();
    if (g_.kind == GemmKind::Linear) {
      cblas_sgemm(CblasRowMajor, CblasNoTrans, CblasTrans, M, N, K, 1.0f, X_.data(), K, W, K, 0.0f, C_.data(), N);
    } else if (g_.kind == GemmKind::Conv) {
      cblas_sgemm(CblasRowMajor, CblasNoTrans, CblasNoTrans, M, N, K, 1.0f, W, K, X_.data(), N, 0.0f, C_.data(), N);
    } else {
      for (int64_t i = 0; i < g_.batch; ++i)
        cblas_sgemm(CblasRowMajor, CblasNoTrans, CblasTrans, M, N, K, 1.0f, X_.data() + i * M * K, K,
                    W + i * K * N, K, 0.0f, C_.data() + i * M * N, N);
    }
    benchmark::DoNotOptimize(C_.data());
  }

 private:
  Gemm g_;
  ga::Tensor x_;               // the activation operand (Attn: the left one)
  std::vector<ga::Tensor> w_;  // the weight copies (Attn: the right operand, one)
  std::vector<float> X_, C_;   // OpenBLAS's operands, constant-filled
  std::vector<std::vector<float>> W_;
};

void bench_gemm_ga(benchmark::State& st, Gemm g) {
  const GemmOperands op(g);
  for (auto _ : st) op.ours();
  set_gemm_counters(st, g);
}

void bench_gemm_openblas(benchmark::State& st, Gemm g) {
  GemmOperands op(g);
  for (auto _ : st) op.openblas();
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

// ---- the image towers against their GEMM ceiling, interleaved ----
//
// The machine's speed drifts by 5-45% over minutes, so a tower timed in one phase and its
// GEMMs timed in another give a fraction that moves with the drift. Here they are timed back
// to back, alternately: T0 C0 T1 C1 ... C(R-1) T(R), where T is a tower pass (encode_image,
// tower_reps forwards) and C the ceiling passes of a round: with weights cached (every GEMM
// shape of the tower, count x gemm_reps calls each on one weight, ours then OpenBLAS's), then
// with weights streamed (gemm_streamed_reps times the tower's products in forward order, each
// call on its own weight; all of ours, then all of OpenBLAS's). Round r pairs each of C(r)'s
// passes with the mean of T(r) and T(r+1), the tower passes just before and after it;
// bench/clip_report.py takes the fraction per round and reports the median, min and max.

using Clock = std::chrono::steady_clock;

double since(Clock::time_point t0) { return std::chrono::duration<double>(Clock::now() - t0).count(); }

const char* gemm_kind_name(GemmKind k) {
  return k == GemmKind::Linear ? "linear" : k == GemmKind::Conv ? "conv" : "attn";
}

struct CeilingOptions {
  std::vector<std::string> models = {"ViT-B/32", "RN50"};
  std::vector<int64_t> batches = {1, 16};
  int rounds = 9;
  double pass_seconds = 1.0;  // target length of one tower pass and of one ceiling pass
  bool cached = true;         // the ceiling pass with each shape's weight in cache
  bool streamed = true;       // the ceiling pass with distinct weights, in forward order
  std::string out;
};

std::vector<std::string> split_commas(const std::string& s) {
  std::vector<std::string> out;
  std::stringstream ss(s);
  for (std::string item; std::getline(ss, item, ',');)
    if (!item.empty()) out.push_back(item);
  return out;
}

CeilingOptions parse_ceiling_options(int argc, char** argv) {
  CeilingOptions o;
  for (int i = 2; i < argc; ++i) {
    std::string a = argv[i], v;
    const size_t eq = a.find('=');
    if (eq != std::string::npos) {
      v = a.substr(eq + 1);
      a = a.substr(0, eq);
    } else if (i + 1 < argc) {
      v = argv[++i];
    } else {
      throw ga::ValueError("bench_clip ceiling: " + a + " needs a value");
    }
    if (a == "--models") {
      o.models.clear();
      for (const auto& m : split_commas(v)) o.models.push_back(spec(m).name);
    } else if (a == "--batches") {
      o.batches.clear();
      for (const auto& b : split_commas(v)) o.batches.push_back(std::stoll(b));
    } else if (a == "--rounds") {
      o.rounds = std::stoi(v);
    } else if (a == "--pass-seconds") {
      o.pass_seconds = std::stod(v);
    } else if (a == "--ceiling-weights") {
      o.cached = o.streamed = false;
      for (const auto& w : split_commas(v)) {
        if (w == "cached")
          o.cached = true;
        else if (w == "streamed")
          o.streamed = true;
        else
          throw ga::ValueError("bench_clip ceiling: --ceiling-weights takes cached and/or streamed, got " + w);
      }
    } else if (a == "--out") {
      o.out = v;
    } else {
      throw ga::ValueError("bench_clip ceiling: unknown option " + a);
    }
  }
  GA_CHECK(o.rounds >= 1 && o.pass_seconds > 0, ga::ValueError, "bench_clip ceiling: --rounds >= 1, --pass-seconds > 0");
  GA_CHECK(o.cached || o.streamed, ga::ValueError, "bench_clip ceiling: --ceiling-weights names no pass");
  return o;
}

/// Seconds per forward of a tower's GEMMs from one ceiling pass's seconds per call: at the
/// ceiling (the faster of ours and OpenBLAS at each shape), ours only, OpenBLAS only.
struct CeilingSum {
  double best = 0, ours = 0, blas = 0;
};

CeilingSum sum_ceiling(const std::vector<Gemm>& gemms, const std::vector<double>& ours,
                       const std::vector<double>& blas) {
  CeilingSum c;
  for (size_t i = 0; i < gemms.size(); ++i) {
    const double n = double(gemms[i].count);
    c.best += n * std::min(ours[i], blas[i]);
    c.ours += n * ours[i];
    c.blas += n * blas[i];
  }
  return c;
}

ga::io::Json ceiling_case(const std::string& name, int64_t batch, const CeilingOptions& o) {
  const ModelSpec& s = spec(name);
  const auto& m = model(name);
  ga::Generator g(7);
  const int64_t R = s.cfg.image_resolution;
  const ga::Tensor x = ga::randn({batch, 3, R, R}, g);
  const std::vector<Gemm> gemms = image_gemms(s.cfg, batch);
  // With the streamed pass, each shape holds `count` distinct weights (one forward's worth,
  // for ours and again for OpenBLAS); the cached pass uses the first.
  std::vector<GemmOperands> ops;
  ops.reserve(gemms.size());
  double weight_bytes = 0;
  for (const Gemm& gm : gemms) {
    ops.emplace_back(gm, o.streamed ? gm.count : 1);
    weight_bytes += ops.back().weight_bytes() * double(gm.count);
  }

  // Seconds per forward over `reps` forwards.
  auto tower_pass = [&](int64_t reps) {
    const auto t0 = Clock::now();
    for (int64_t i = 0; i < reps; ++i) benchmark::DoNotOptimize(m.encode_image(x).raw_data());
    return since(t0) / double(reps);
  };
  // Weights in cache: seconds per call of each shape, ours and OpenBLAS, each shape run
  // count x reps times in a row on one weight, which then sits in cache.
  auto cached_pass = [&](int64_t reps, std::vector<double>& ours, std::vector<double>& blas) {
    ours.assign(gemms.size(), 0);
    blas.assign(gemms.size(), 0);
    for (size_t i = 0; i < gemms.size(); ++i) {
      const int64_t n = gemms[i].count * reps;
      auto t0 = Clock::now();
      for (int64_t k = 0; k < n; ++k) ops[i].ours();
      ours[i] = since(t0) / double(n);
      t0 = Clock::now();
      for (int64_t k = 0; k < n; ++k) ops[i].openblas();
      blas[i] = since(t0) / double(n);
    }
  };
  // Weights streamed: the tower's products in forward order (shape by shape, each shape's
  // count calls in a row), every call on its own weight, as a forward pass reads them: each
  // weight is touched once per pass. `reps` such passes of ours, then `reps` of OpenBLAS.
  auto streamed_pass = [&](int64_t reps, std::vector<double>& ours, std::vector<double>& blas) {
    ours.assign(gemms.size(), 0);
    blas.assign(gemms.size(), 0);
    for (int64_t r = 0; r < reps; ++r)
      for (size_t i = 0; i < gemms.size(); ++i) {
        const auto t0 = Clock::now();
        for (int64_t c = 0; c < gemms[i].count; ++c) ops[i].ours(size_t(std::min(c, ops[i].copies() - 1)));
        ours[i] += since(t0);
      }
    for (int64_t r = 0; r < reps; ++r)
      for (size_t i = 0; i < gemms.size(); ++i) {
        const auto t0 = Clock::now();
        for (int64_t c = 0; c < gemms[i].count; ++c) ops[i].openblas(size_t(std::min(c, ops[i].copies() - 1)));
        blas[i] += since(t0);
      }
    for (size_t i = 0; i < gemms.size(); ++i) {
      ours[i] /= double(gemms[i].count * reps);
      blas[i] /= double(gemms[i].count * reps);
    }
  };

  // Warm-up (untimed), then one pass of each to size the passes to about pass_seconds.
  require_finite(m.encode_image(x), name + " encode_image");
  std::vector<double> ours, blas, ours_st, blas_st;
  if (o.cached) cached_pass(1, ours, blas);
  if (o.streamed) streamed_pass(1, ours_st, blas_st);
  const double t_tower = tower_pass(1);
  auto time_pass = [&](auto&& pass, std::vector<double>& a, std::vector<double>& b) {
    const auto t0 = Clock::now();
    pass(1, a, b);
    return since(t0);
  };
  const int64_t tower_reps = std::max<int64_t>(1, std::llround(o.pass_seconds / t_tower));
  const int64_t gemm_reps =
      o.cached ? std::max<int64_t>(1, std::llround(o.pass_seconds / time_pass(cached_pass, ours, blas))) : 0;
  const int64_t streamed_reps =
      o.streamed ? std::max<int64_t>(1, std::llround(o.pass_seconds / time_pass(streamed_pass, ours_st, blas_st))) : 0;

  ga::io::Json shapes = ga::io::Json::array();
  double gemm_flop = 0;
  for (const Gemm& gm : gemms) {
    ga::io::Json j = ga::io::Json::object();
    j.set("label", gm.label);
    j.set("kind", gemm_kind_name(gm.kind));
    j.set("batch", gm.batch);
    j.set("M", gm.M);
    j.set("K", gm.K);
    j.set("N", gm.N);
    j.set("count", gm.count);
    j.set("flop", gm.flops());
    shapes.push_back(std::move(j));
    gemm_flop += gm.flops() * double(gm.count);
  }

  // "weights cached: GEMMs at the ceiling ... = x% of the ceiling" for one pass's times.
  auto describe = [&](const char* what, const std::vector<double>& so, const std::vector<double>& sb,
                      double tower_gflops) {
    const CeilingSum c = sum_ceiling(gemms, so, sb);
    const double ceil_gflops = gemm_flop * 1e-9 / c.best;
    char buf[256];
    std::snprintf(buf, sizeof buf,
                  "weights %s: GEMMs at the ceiling %.1f ms (ours %.1f, OpenBLAS %.1f): %.1f of %.1f GFLOP/s "
                  "= %.1f%% of the ceiling",
                  what, 1e3 * c.best, 1e3 * c.ours, 1e3 * c.blas, tower_gflops, ceil_gflops,
                  100 * tower_gflops / ceil_gflops);
    return std::string(buf);
  };
  auto json_array = [](const std::vector<double>& v) {
    ga::io::Json a = ga::io::Json::array();
    for (double d : v) a.push_back(d);
    return a;
  };

  const auto start = Clock::now();
  ga::io::Json tower_s = ga::io::Json::array(), tower_at = ga::io::Json::array(), rounds = ga::io::Json::array();
  double prev_tower = 0;
  for (int r = 0; r <= o.rounds; ++r) {
    tower_at.push_back(since(start));
    const double t = tower_pass(tower_reps);
    tower_s.push_back(t);
    if (r > 0) {  // round r-1: its ceiling passes between this tower pass and the previous one
      const double tower_gflops = double(batch) * s.image_gflops / (0.5 * (prev_tower + t));
      std::string line;
      if (o.cached) line += "; " + describe("cached", ours, blas, tower_gflops);
      if (o.streamed) line += "; " + describe("streamed", ours_st, blas_st, tower_gflops);
      std::printf("%s batch %lld round %d: tower %.1f ms (passes %.1f, %.1f)%s\n", name.c_str(),
                  static_cast<long long>(batch), r - 1, 500 * (prev_tower + t), 1e3 * prev_tower, 1e3 * t,
                  line.c_str());
      std::fflush(stdout);
    }
    prev_tower = t;
    if (r == o.rounds) break;
    ga::io::Json round = ga::io::Json::object();
    round.set("at", since(start));
    if (o.cached) {
      cached_pass(gemm_reps, ours, blas);
      round.set("ga_s", json_array(ours));
      round.set("openblas_s", json_array(blas));
    }
    if (o.streamed) {
      round.set("streamed_at", since(start));
      streamed_pass(streamed_reps, ours_st, blas_st);
      round.set("ga_streamed_s", json_array(ours_st));
      round.set("openblas_streamed_s", json_array(blas_st));
    }
    rounds.push_back(std::move(round));
  }

  ga::io::Json c = ga::io::Json::object();
  c.set("model", name);
  c.set("batch", batch);
  c.set("nominal_gflop_per_image", s.image_gflops);
  c.set("gemm_gflop_per_forward", gemm_flop * 1e-9);
  c.set("weight_mb_per_forward", weight_bytes * 1e-6);
  c.set("tower_reps", tower_reps);
  if (o.cached) c.set("gemm_reps", gemm_reps);
  if (o.streamed) c.set("gemm_streamed_reps", streamed_reps);
  c.set("shapes", std::move(shapes));
  c.set("tower_s", std::move(tower_s));
  c.set("tower_at", std::move(tower_at));
  c.set("rounds", std::move(rounds));
  c.set("wall_s", since(start));
  return c;
}

int run_ceiling(int argc, char** argv) {
  const CeilingOptions o = parse_ceiling_options(argc, argv);
  ga::io::Json cases = ga::io::Json::array();
  for (const std::string& name : o.models)
    for (int64_t b : o.batches) cases.push_back(ceiling_case(name, b, o));
  ga::io::Json j = ga::io::Json::object();
  j.set("kind", "interleaved_ceiling");
  j.set("threads", int64_t(bench_threads()));
  j.set("rounds", int64_t(o.rounds));
  j.set("pass_seconds", o.pass_seconds);
  ga::io::Json weights = ga::io::Json::array();
  if (o.cached) weights.push_back("cached");
  if (o.streamed) weights.push_back("streamed");
  j.set("ceiling_weights", std::move(weights));
  j.set("cases", std::move(cases));
  if (o.out.empty()) {
    std::printf("%s\n", j.dump().c_str());
  } else {
    std::ofstream f(o.out);
    f << j.dump() << "\n";
    GA_CHECK(f.good(), ga::IOError, o.out, ": cannot write");
  }
  return 0;
}

}  // namespace

int main(int argc, char** argv) {
  set_bench_threads_with_openblas();
  if (argc > 1 && std::string(argv[1]) == "ceiling") return run_ceiling(argc, argv);
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
    // f32 (clip_image, clip_text) and the reduced-precision paths (clip_image_bf16,
    // clip_text_bf16; clip_image_int8, clip_text_int8).
    for (WeightMode mode : {WeightMode::AsStored, WeightMode::Bf16, WeightMode::Int8}) {
      const std::string sfx = mode == WeightMode::Bf16 ? "_bf16" : mode == WeightMode::Int8 ? "_int8" : "";
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
