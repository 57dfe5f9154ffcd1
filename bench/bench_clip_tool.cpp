// The CLIP benchmarks' helper executable, one measurement per process:
//
//   bench_clip_tool make MODEL...                 write the random-weight model files (cache)
//   bench_clip_tool memory MODEL                  peak RSS of load + encode_image(1) + encode_text(64)
//   bench_clip_tool profile MODEL image|text|text_full BATCH [ITERS [bf16|int8]]
//                                                 where a forward pass spends its time, by CPU kernel
//                                                 (bf16, int8: the model loaded with WeightMode::Bf16,
//                                                 WeightMode::Int8)
//
// MODEL is an OpenAI name (ViT-B/32, RN50, RN50x4, ViT-L/14@336px, ...). Results are JSON
// lines on stdout ({"side": "ga", ...}); a readable table goes to stderr. Environment as
// bench_clip (GA_CLIP_BENCH_CACHE, GA_CLIP_VOCAB, GA_BENCH_THREADS).
//
// The profiler needs no hook in the library: every op reaches its kernels through the
// virtual ga::backend::Backend interface of the one CPU backend object, so this program
// (compiled with -fno-devirtualize, so that the calls really go through the object's vtable)
// points that object's vtable pointer at a forwarding backend that times each call and
// passes it on to a second, untouched CpuBackend. It checks that the interposition took
// (a kernel call must be seen) before reporting anything. Time between kernel calls (shape
// checks, views, allocation bookkeeping, single-threaded glue) is reported as "outside
// kernels". Kernels that call other kernels are timed as the outermost one.
#include <algorithm>
#include <chrono>
#include <cstdio>
#include <cstring>
#include <map>

#include <ga/clip/model.hpp>

#include "clip_bench_common.hpp"

namespace {

using namespace clipbench;
using Clock = std::chrono::steady_clock;

// ---------------------------------------------------------------------------------------
// Kernel profiler

struct Stat {
  double seconds = 0, flops = 0;
  int64_t calls = 0;
};

struct Profile {
  std::map<std::string, Stat> by_kernel;
  std::map<std::string, Stat> by_matmul_shape;
  int depth = 0;
  bool enabled = false;
  int64_t calls_seen = 0;
};

Profile& prof() {
  static Profile p;
  return p;
}

ga::backend::cpu::CpuBackend& real_backend() {
  static ga::backend::cpu::CpuBackend b;
  return b;
}

const char* unary_name(ga::backend::UnaryOp op) {
  using U = ga::backend::UnaryOp;
  switch (op) {
    case U::Neg: return "neg";
    case U::Exp: return "exp";
    case U::Log: return "log";
    case U::Sqrt: return "sqrt";
    case U::Rsqrt: return "rsqrt";
    case U::Abs: return "abs";
    case U::Sign: return "sign";
    case U::Tanh: return "tanh";
    case U::Sigmoid: return "sigmoid";
    case U::Relu: return "relu";
    case U::Gelu: return "gelu";
    case U::GeluGrad: return "gelu_grad";
    case U::QuickGelu: return "quick_gelu";
    case U::QuickGeluGrad: return "quick_gelu_grad";
    case U::PowScalar: return "pow_scalar";
    case U::Clamp: return "clamp";
    case U::Step: return "step";
    case U::AddScalar: return "add_scalar";
    case U::MulScalar: return "mul_scalar";
  }
  return "unary?";
}

const char* binary_name(ga::backend::BinaryOp op) {
  using B = ga::backend::BinaryOp;
  switch (op) {
    case B::Add: return "add";
    case B::Sub: return "sub";
    case B::Mul: return "mul";
    case B::Div: return "div";
    case B::Pow: return "pow";
    case B::Maximum: return "maximum";
    case B::Minimum: return "minimum";
    default: return "compare";
  }
}

/// Times one kernel call (the outermost, if kernels nest) under `key`.
template <class F>
void timed(const std::string& key, double flops, const std::string& shape_key, F&& f) {
  Profile& p = prof();
  ++p.calls_seen;
  if (!p.enabled || p.depth > 0) {
    ++p.depth;
    f();
    --p.depth;
    return;
  }
  ++p.depth;
  const auto t0 = Clock::now();
  f();
  const double s = std::chrono::duration<double>(Clock::now() - t0).count();
  --p.depth;
  Stat& st = p.by_kernel[key];
  st.seconds += s;
  st.flops += flops;
  ++st.calls;
  if (!shape_key.empty()) {
    Stat& ss = p.by_matmul_shape[shape_key];
    ss.seconds += s;
    ss.flops += flops;
    ++ss.calls;
  }
}

/// Same layout as CpuBackend (a vtable pointer, no data): its vtable replaces the CPU
/// backend's while profiling.
class ProfilingBackend final : public ga::backend::Backend {
  using Tensor = ga::Tensor;
  using W = ga::backend::Window2d;

 public:
  const char* name() const override { return "cpu"; }
  std::shared_ptr<ga::Storage> allocate(size_t n) override {
    std::shared_ptr<ga::Storage> out;
    timed("allocate", 0, "", [&] { out = real_backend().allocate(n); });
    return out;
  }
  void copy(const Tensor& s, const Tensor& d) override {
    timed(s.dtype() == d.dtype() ? "copy (contiguous / layout)" : "copy (dtype conversion)", 0, "",
          [&] { real_backend().copy(s, d); });
  }
  void fill(const Tensor& d, double v) override { timed("fill", 0, "", [&] { real_backend().fill(d, v); }); }
  void upload(const void* h, const Tensor& d) override {
    timed("upload", 0, "", [&] { real_backend().upload(h, d); });
  }
  void download(const Tensor& s, void* h) override {
    timed("download", 0, "", [&] { real_backend().download(s, h); });
  }
  void unary(ga::backend::UnaryOp op, const Tensor& x, const Tensor& o, double a, double b) override {
    timed(std::string("unary ") + unary_name(op), 0, "", [&] { real_backend().unary(op, x, o, a, b); });
  }
  void binary(ga::backend::BinaryOp op, const Tensor& a, const Tensor& b, const Tensor& o) override {
    timed(std::string("binary ") + binary_name(op), 0, "", [&] { real_backend().binary(op, a, b, o); });
  }
  void where(const Tensor& c, const Tensor& a, const Tensor& b, const Tensor& o) override {
    timed("where", 0, "", [&] { real_backend().where(c, a, b, o); });
  }
  void reduce_last(ga::backend::ReduceOp op, const Tensor& x, const Tensor& o) override {
    timed("reduce", 0, "", [&] { real_backend().reduce_last(op, x, o); });
  }
  void matmul(const Tensor& a, const Tensor& b, const Tensor& o, const ga::backend::MatmulEpilogue& e) override {
    // a [B, M, K], b [B, K, N]. Which layer issued it, from the operands' layout:
    // conv2d broadcasts its weight over the images (batch stride 0; a batch of one keeps
    // the weight's own stride); linear uses its weight transposed in place (K-stride 1);
    // attention multiplies per-head batches.
    const int64_t B = o.size(0), M = o.size(1), N = o.size(2), K = a.size(2);
    // A plain 2-d matmul (x @ proj) reaches here through as_batch3 with batch stride 0.
    const bool b_transposed = b.strides()[1] == 1 && K > 1;
    const bool a_broadcast = a.strides()[0] == 0;
    std::string kind;
    if (B > 1 && !a_broadcast) kind = "matmul attention (per head)";
    else if (b_transposed) kind = "matmul linear";
    else if (B > 1 || !a_broadcast) kind = "matmul conv (im2col GEMM)";
    else kind = "matmul 2-d (x @ proj)";
    const double flops = 2.0 * double(B) * double(M) * double(N) * double(K);
    // The fused epilogue's work (bias, residual, activation) is counted in the product.
    timed(kind, flops, ga::cat(kind.substr(7), " B=", B, " M=", M, " K=", K, " N=", N),
          [&] { real_backend().matmul(a, b, o, e); });
  }
  void softmax_last(const Tensor& x, const Tensor& o, bool log) override {
    timed("softmax", 0, "", [&] { real_backend().softmax_last(x, o, log); });
  }
  void attention(const Tensor& q, const Tensor& k, const Tensor& v, double scale, bool causal,
                 const Tensor& o) override {
    timed("attention (fused)", 0, "", [&] { real_backend().attention(q, k, v, scale, causal, o); });
  }
  void layer_norm_last(const Tensor& x, const Tensor& w, const Tensor& b, double eps, const Tensor& o,
                       const Tensor& mean, const Tensor& rstd) override {
    timed("layer_norm", 0, "", [&] { real_backend().layer_norm_last(x, w, b, eps, o, mean, rstd); });
  }
  void conv2d(const Tensor& x, const Tensor& w, const W& g, const Tensor& o,
              const ga::backend::MatmulEpilogue& e) override {
    // One entry per path (the Columns path's im2col and product are timed together).
    const std::string kind = ga::cat("conv2d (", ga::backend::cpu::conv_path_name(ga::backend::cpu::conv2d_path(x, w, g)), ")");
    const int64_t B = o.size(0), M = o.size(1), N = o.size(2), K = w.size(1);
    const double flops = 2.0 * double(B) * double(M) * double(N) * double(K);
    timed(kind, flops,
          ga::cat(kind.substr(7), " ", g.kh, "x", g.kw, "/", g.sh, " B=", B, " M=", M, " K=", K, " N=", N),
          [&] { real_backend().conv2d(x, w, g, o, e); });
  }
  ga::backend::Int8Weight int8_weight(const Tensor& w) override {
    ga::backend::Int8Weight out;
    timed("int8 weight quantization", 0, "", [&] { out = real_backend().int8_weight(w); });
    return out;
  }
  void int8_linear(const Tensor& x, const ga::backend::Int8Weight& w, const Tensor& o,
                   const ga::backend::MatmulEpilogue& e) override {
    const int64_t M = o.size(1), N = o.size(2), K = w.channels;
    timed("int8 linear", 2.0 * double(M) * double(N) * double(K), ga::cat("int8 linear M=", M, " K=", K, " N=", N),
          [&] { real_backend().int8_linear(x, w, o, e); });
  }
  void int8_conv2d(const Tensor& x, const ga::backend::Int8Weight& w, const W& g, const Tensor& o,
                   const ga::backend::MatmulEpilogue& e) override {
    const int64_t B = o.size(0), M = o.size(1), N = o.size(2), K = w.channels * w.kh * w.kw;
    timed("int8 conv2d", 2.0 * double(B) * double(M) * double(N) * double(K),
          ga::cat("int8 conv2d ", g.kh, "x", g.kw, "/", g.sh, " B=", B, " M=", M, " K=", K, " N=", N),
          [&] { real_backend().int8_conv2d(x, w, g, o, e); });
  }
  void im2col(const Tensor& x, const W& g, const Tensor& c) override {
    timed("im2col", 0, "", [&] { real_backend().im2col(x, g, c); });
  }
  void col2im(const Tensor& c, const W& g, const Tensor& x) override {
    timed("col2im", 0, "", [&] { real_backend().col2im(c, g, x); });
  }
  void avg_pool2d(const Tensor& x, const W& g, bool cip, const Tensor& o) override {
    timed("avg_pool2d", 0, "", [&] { real_backend().avg_pool2d(x, g, cip, o); });
  }
  void avg_pool2d_backward(const Tensor& go, const W& g, bool cip, const Tensor& gx) override {
    timed("avg_pool2d_backward", 0, "", [&] { real_backend().avg_pool2d_backward(go, g, cip, gx); });
  }
  void adaptive_avg_pool2d(const Tensor& x, const Tensor& o) override {
    timed("adaptive_avg_pool2d", 0, "", [&] { real_backend().adaptive_avg_pool2d(x, o); });
  }
  void adaptive_avg_pool2d_backward(const Tensor& go, const Tensor& gx) override {
    timed("adaptive_avg_pool2d_backward", 0, "", [&] { real_backend().adaptive_avg_pool2d_backward(go, gx); });
  }
  void index_select(const Tensor& x, int64_t d, const Tensor& i, const Tensor& o) override {
    timed("index_select", 0, "", [&] { real_backend().index_select(x, d, i, o); });
  }
  void index_add(const Tensor& o, int64_t d, const Tensor& i, const Tensor& s) override {
    timed("index_add", 0, "", [&] { real_backend().index_add(o, d, i, s); });
  }
  void gather(const Tensor& x, int64_t d, const Tensor& i, const Tensor& o) override {
    timed("gather", 0, "", [&] { real_backend().gather(x, d, i, o); });
  }
  void scatter_add(const Tensor& o, int64_t d, const Tensor& i, const Tensor& s) override {
    timed("scatter_add", 0, "", [&] { real_backend().scatter_add(o, d, i, s); });
  }
};

static_assert(sizeof(ProfilingBackend) == sizeof(ga::backend::cpu::CpuBackend),
              "the profiler relies on both backends being a bare vtable pointer");

/// Redirects the CPU backend's virtual calls to ProfilingBackend, then proves it took.
void install_profiler() {
  static ProfilingBackend pb;
  ga::backend::Backend& target = ga::backend::get(ga::Device::cpu());
  std::memcpy(static_cast<void*>(&target), static_cast<const void*>(&pb), sizeof(void*));
  const int64_t before = prof().calls_seen;
  ga::Tensor probe = ga::add(ga::ones({4}), ga::ones({4}));
  GA_CHECK(prof().calls_seen > before && probe.to_vector<float>()[0] == 2.0f, ga::ValueError,
           "profiler: the CPU backend's calls did not go through the interposed vtable (was this file compiled "
           "with -fno-devirtualize?)");
}

std::string json_escape(const std::string& s) {
  std::string o;
  for (char c : s) {
    if (c == '"' || c == '\\') o += '\\';
    o += c;
  }
  return o;
}

int cmd_profile(const std::string& name, const std::string& what, int64_t batch, int iters,
                ga::clip::WeightMode mode) {
  const ModelSpec& s = spec(name);
  const std::string path = ensure_model_file(s);
  install_profiler();
  const ga::clip::Model m =
      ga::clip::Model::load(path, ga::clip::LoadOptions{mode});
  ga::Generator g(7);
  const int64_t R = s.cfg.image_resolution;
  ga::Tensor input;
  if (what == "image") {
    input = ga::randn({batch, 3, R, R}, g);
  } else {
    GA_CHECK(what == "text" || what == "text_full", ga::ValueError, "profile: expected image, text or text_full, got ",
             what);
    input = m.tokenize(prompts(size_t(batch)));
  }
  auto forward = [&] {
    return what == "image" ? m.encode_image(input) : m.encode_text(input, nullptr, what == "text_full");
  };
  forward();  // warm-up (block cache, page faults on the mapped weights)
  prof().by_kernel.clear();
  prof().by_matmul_shape.clear();
  prof().enabled = true;
  const auto t0 = Clock::now();
  for (int i = 0; i < iters; ++i) forward();
  const double total = std::chrono::duration<double>(Clock::now() - t0).count() / iters;
  prof().enabled = false;

  std::vector<std::pair<std::string, Stat>> rows(prof().by_kernel.begin(), prof().by_kernel.end());
  double in_kernels = 0;
  for (auto& [k, st] : rows) {
    st.seconds /= iters;
    st.flops /= iters;
    st.calls /= iters;
    in_kernels += st.seconds;
  }
  rows.push_back({"outside kernels", Stat{total - in_kernels, 0, 0}});
  std::sort(rows.begin(), rows.end(), [](const auto& a, const auto& b) { return a.second.seconds > b.second.seconds; });
  std::fprintf(stderr, "\n%s %s batch %lld: %.2f ms per forward (%d timed)\n", name.c_str(), what.c_str(),
               (long long)batch, total * 1e3, iters);
  std::fprintf(stderr, "  %-34s %10s %7s %7s %9s\n", "kernel", "ms", "share", "calls", "GFLOP/s");
  for (const auto& [k, st] : rows) {
    const double rate = st.flops > 0 && st.seconds > 0 ? st.flops / st.seconds * 1e-9 : 0;
    std::fprintf(stderr, "  %-34s %10.2f %6.1f%% %7lld %9.1f\n", k.c_str(), st.seconds * 1e3,
                 100 * st.seconds / total, (long long)st.calls, rate);
    std::printf("{\"side\": \"ga\", \"metric\": \"profile\", \"model\": \"%s\", \"what\": \"%s\", \"batch\": %lld, "
                "\"kernel\": \"%s\", \"seconds\": %.6g, \"fraction\": %.4f, \"calls\": %lld, \"gflops\": %.4g, "
                "\"forward_seconds\": %.6g}\n",
                json_escape(name).c_str(), what.c_str(), (long long)batch, json_escape(k).c_str(), st.seconds,
                st.seconds / total, (long long)st.calls, st.flops * 1e-9, total);
  }
  // The matrix products by shape: where the GEMM time goes and at what rate.
  std::vector<std::pair<std::string, Stat>> shapes(prof().by_matmul_shape.begin(), prof().by_matmul_shape.end());
  std::sort(shapes.begin(), shapes.end(),
            [](const auto& a, const auto& b) { return a.second.seconds > b.second.seconds; });
  std::fprintf(stderr, "  matrix products by shape (per forward):\n");
  for (auto& [k, st] : shapes) {
    st.seconds /= iters;
    st.flops /= iters;
    st.calls /= iters;
    const double rate = st.seconds > 0 ? st.flops / st.seconds * 1e-9 : 0;
    std::fprintf(stderr, "    %-58s %8.2f ms %6.1f%% x%-4lld %7.1f GFLOP/s\n", k.c_str(), st.seconds * 1e3,
                 100 * st.seconds / total, (long long)st.calls, rate);
    std::printf("{\"side\": \"ga\", \"metric\": \"profile_gemm\", \"model\": \"%s\", \"what\": \"%s\", \"batch\": "
                "%lld, \"shape\": \"%s\", \"seconds\": %.6g, \"fraction\": %.4f, \"calls\": %lld, \"gflops\": %.4g}\n",
                json_escape(name).c_str(), what.c_str(), (long long)batch, k.c_str(), st.seconds, st.seconds / total,
                (long long)st.calls, st.flops * 1e-9);
  }
  return 0;
}

// ---------------------------------------------------------------------------------------

int cmd_memory(const std::string& name) {
  const ModelSpec& s = spec(name);
  const std::string path = cache_dir() + "/ga_" + file_tag(s.name) + "_f32.safetensors";
  GA_CHECK(file_exists(path), ga::IOError, path, ": missing; run `bench_clip_tool make ", name,
           "` first (writing it here would count towards the peak)");
  const long base = current_rss_bytes();
  const auto t0 = Clock::now();
  const ga::clip::Model m = ga::clip::Model::load(path);
  const double load_s = std::chrono::duration<double>(Clock::now() - t0).count();
  ga::Generator g(7);
  const int64_t R = s.cfg.image_resolution;
  m.encode_image(ga::randn({1, 3, R, R}, g));
  m.encode_text(m.tokenize(prompts(64)));
  const long peak = peak_rss_bytes();
  const double wb = weights_f32_bytes(s.cfg);
  std::printf("{\"side\": \"ga\", \"model\": \"%s\", \"metric\": \"peak_rss\", \"bytes\": %ld, \"baseline_bytes\": %ld, "
              "\"weights_f32_bytes\": %.0f, \"ratio\": %.3f, \"ratio_minus_baseline\": %.3f, \"load_seconds_cold\": "
              "%.4f, \"workload\": \"load + encode_image(1) + encode_text(64)\"}\n",
              json_escape(name).c_str(), peak, base, wb, double(peak) / wb, double(peak - base) / wb, load_s);
  return 0;
}

int cmd_make(const std::vector<std::string>& names) {
  for (const auto& n : names) {
    const auto t0 = Clock::now();
    const std::string p = ensure_model_file(spec(n));
    std::fprintf(stderr, "%s: %s (%.1f s)\n", n.c_str(), p.c_str(),
                 std::chrono::duration<double>(Clock::now() - t0).count());
  }
  return 0;
}

int usage() {
  std::fprintf(stderr,
               "usage: bench_clip_tool make MODEL...\n"
               "       bench_clip_tool memory MODEL\n"
               "       bench_clip_tool profile MODEL image|text|text_full BATCH [ITERS [bf16|int8]]\n");
  return 2;
}

}  // namespace

int main(int argc, char** argv) {
  if (argc < 3) return usage();
  ga::set_num_threads(bench_threads());
  const std::string cmd = argv[1];
  try {
    if (cmd == "make") return cmd_make(std::vector<std::string>(argv + 2, argv + argc));
    if (cmd == "memory" && argc == 3) return cmd_memory(argv[2]);
    const std::string precision = argc == 7 ? argv[6] : "";
    if (cmd == "profile" && (argc == 5 || argc == 6 || (argc == 7 && (precision == "bf16" || precision == "int8"))))
      return cmd_profile(argv[2], argv[3], std::atoll(argv[4]), argc >= 6 ? std::atoi(argv[5]) : 3,
                         precision == "bf16"   ? ga::clip::WeightMode::Bf16
                         : precision == "int8" ? ga::clip::WeightMode::Int8
                                               : ga::clip::WeightMode::AsStored);
  } catch (const std::exception& e) {
    std::fprintf(stderr, "bench_clip_tool: %s\n", e.what());
    return 1;
  }
  return usage();
}
