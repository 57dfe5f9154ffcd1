// The `ga` command-line tool: CLIP conversion and inference (convert_commands.cpp,
// clip_commands.cpp) and a self-test of the engine on a tiny training problem (here).
// This file dispatches: global options, the command table, help, errors -> exit codes.
//
// Exit codes: 0 success, 1 a command ran and failed, 2 bad usage (one line on stderr).
#include <chrono>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <iostream>
#include <new>
#include <string>
#include <vector>

#include <ga/ga.hpp>

#include "cli.hpp"

namespace {

int selftest_command(const std::vector<std::string>& argv);

struct Command {
  const char* name;
  const char* summary;
  int (*run)(const std::vector<std::string>& argv);  // nullptr: not available yet
};

const std::vector<Command>& commands() {
  static const std::vector<Command> list = {
      {"convert", "convert a CLIP checkpoint (OpenAI, open_clip, Hugging Face) to one model file", ga_cli::run_convert},
      {"info", "print a model file's config, preprocessing, tokenizer and tensors", ga_cli::run_info},
      {"tokenize", "CLIP BPE tokenizer: text -> token ids", ga_cli::run_tokenize},
      {"preprocess", "CLIP image preprocessing: images -> normalised N x 3 x R x R .npy", ga_cli::run_preprocess},
      {"encode-image", "CLIP image embeddings of image files -> N x D .npy", ga_cli::run_encode_image},
      {"encode-text", "CLIP text embeddings of texts -> N x D .npy", ga_cli::run_encode_text},
      {"zeroshot", "zero-shot classification of images over a list of class names", ga_cli::run_zeroshot},
      {"selftest", "train a tiny MLP on a synthetic problem and check the engine", selftest_command},
      {"adapt", "few-shot adaptation (GraphAdapter, Tip-Adapter, CLIP-Adapter, ...)", nullptr},
      {"demo", "the end-to-end demo on the embedded default", nullptr},
  };
  return list;
}

int usage_error(const std::string& msg) {
  std::cerr << "ga: " << msg << " (see 'ga --help')\n";
  return 2;
}

/// An error message on one line (messages name the file at fault; some span lines).
std::string one_line(std::string s) {
  for (char& c : s)
    if (c == '\n' || c == '\r') c = ' ';
  return s;
}

void print_build_config(std::ostream& os) {
#ifdef _OPENMP
  os << "  OpenMP:  on, " << ga::get_num_threads() << " thread(s)\n";
#else
  os << "  OpenMP:  off (CPU kernels run single-threaded)\n";
#endif
  os << "  CUDA:    " << (ga::backend::cuda_compiled_in() ? "compiled in (backend not implemented yet)" : "not compiled in")
     << "\n";
  os << "  Eigen:   " << EIGEN_WORLD_VERSION << "." << EIGEN_MAJOR_VERSION << "." << EIGEN_MINOR_VERSION << "\n";
  // Which kernels this CPU runs: whether --bf16 and --int8 are fast here (see the README).
  using namespace ga::backend::cpu;
  const F32Kernel f32 = f32_gemm_kernel() != F32Kernel::Auto      ? f32_gemm_kernel()
                        : f32_kernel_supported(F32Kernel::Avx512) ? F32Kernel::Avx512
                        : f32_kernel_supported(F32Kernel::Avx2)   ? F32Kernel::Avx2
                                                                  : F32Kernel::Eigen;
  os << "  kernels: f32 " << f32_kernel_name(f32) << ", bf16 " << bf16_kernel_name(bf16_kernel()) << ", int8 "
     << int8_kernel_name(int8_kernel()) << "\n";
#ifdef NDEBUG
  os << "  build:   optimised (NDEBUG)\n";
#else
  os << "  build:   debug (assertions on)\n";
#endif
}

void print_help() {
  std::cout << "ga " << GA_VERSION_STRING
            << ": graphadapter.cpp's command-line tool.\n"
               "\n"
               "graphadapter.cpp is a header-only C++17 tensor + autograd library (Eigen, OpenMP)\n"
               "with CLIP inference; few-shot adaptation (GraphAdapter and baselines) is planned.\n"
               "\n"
               "usage: ga [--threads N] <command> [args]\n"
               "       ga <command> --help\n"
               "       ga --help | --version\n"
               "\n"
               "commands:\n";
  for (const Command& c : commands()) {
    std::string name = c.name;
    name.resize(14, ' ');
    std::cout << "  " << name << c.summary << (c.run ? "" : "  [not yet available]") << "\n";
  }
  std::cout << "\n"
               "Every command takes --help and --threads N, exits 0 on success, 1 when its input\n"
               "is bad (one line on stderr naming the file), 2 on bad usage.\n"
               "\n"
               "options:\n"
               "  --threads N   threads for CPU kernels (1..1024; default: OMP_NUM_THREADS or all cores)\n"
               "  --help, -h    this text\n"
               "  --version     the version\n"
               "\n"
               "build:\n";
  print_build_config(std::cout);
}

// ---- selftest: a 2-layer MLP learns XOR of four Gaussian blobs ----

struct Data {
  ga::Tensor x;       // [n, 2] f32
  ga::Tensor onehot;  // [n, 2] f32
  std::vector<int> label;
};

/// Four blobs at (+-1.5, +-1.5); the class is 1 where the coordinates' signs differ.
/// Not linearly separable, so learning it needs the hidden layer.
Data make_xor_blobs(int n, ga::Generator& gen) {
  std::vector<float> x(static_cast<size_t>(n) * 2), oh(static_cast<size_t>(n) * 2, 0.0f);
  std::vector<int> label(static_cast<size_t>(n));
  for (int i = 0; i < n; ++i) {
    const float sx = (i & 1) ? 1.5f : -1.5f, sy = (i & 2) ? 1.5f : -1.5f;
    x[2 * i] = sx + 0.6f * static_cast<float>(gen.normal());
    x[2 * i + 1] = sy + 0.6f * static_cast<float>(gen.normal());
    label[i] = (sx > 0) != (sy > 0) ? 1 : 0;
    oh[2 * i + label[i]] = 1.0f;
  }
  return {ga::tensor(x, {n, 2}), ga::tensor(oh, {n, 2}), label};
}

struct Mlp {
  ga::Tensor w1, b1, w2, b2;
  std::vector<ga::Tensor*> params() { return {&w1, &b1, &w2, &b2}; }
};

ga::Tensor mlp_logits(const ga::Tensor& x, const ga::Tensor& w1, const ga::Tensor& b1, const ga::Tensor& w2,
                      const ga::Tensor& b2) {
  return ga::matmul(ga::tanh(ga::matmul(x, w1) + b1), w2) + b2;
}

/// Mean softmax cross-entropy, written from primitives: logsumexp(z) - <z, onehot>.
ga::Tensor cross_entropy_from_primitives(const ga::Tensor& logits, const ga::Tensor& onehot) {
  return ga::mean(ga::logsumexp(logits, {1}) - ga::sum(logits * onehot, {1}));
}

double accuracy(const ga::Tensor& logits, const std::vector<int>& label) {
  const std::vector<int64_t> pred = ga::argmax(logits, 1).to_vector<int64_t>();
  int right = 0;
  for (size_t i = 0; i < pred.size(); ++i) right += pred[i] == label[i];
  return double(right) / double(pred.size());
}

int selftest() {
  using clock = std::chrono::steady_clock;
  const auto t0 = clock::now();
  std::cout << "ga selftest: a 2-16-2 tanh MLP learns XOR of four Gaussian blobs with SGD\n";

  // 1. The gradients autograd computes for this model match finite differences.
  ga::Generator gen(42);
  {
    Data small = make_xor_blobs(8, gen);
    std::vector<ga::Tensor> in = {ga::randn({2, 3}, gen), ga::randn({3}, gen), ga::randn({3, 2}, gen),
                                  ga::randn({2}, gen)};
    const ga::Tensor x = small.x.to(ga::f64), oh = small.onehot.to(ga::f64);
    ga::GradcheckResult r = ga::gradcheck(
        [&](const std::vector<ga::Tensor>& p) {
          return cross_entropy_from_primitives(mlp_logits(x, p[0], p[1], p[2], p[3]), oh);
        },
        in);
    std::cout << "  gradcheck of the model's loss (f64): " << (r.ok ? "ok" : "FAILED")
              << ", max abs error " << r.max_abs_error << "\n";
    if (!r.ok) {
      std::cout << "  " << r.message << "\n";
      return 1;
    }
  }

  // 2. Training.
  Data train = make_xor_blobs(512, gen), test = make_xor_blobs(256, gen);
  const int hidden = 16;
  Mlp m{ga::randn({2, hidden}, gen, ga::f32, 0.0, 0.7), ga::zeros({hidden}), ga::randn({hidden, 2}, gen, ga::f32, 0.0, 0.3),
        ga::zeros({2})};
  for (ga::Tensor* p : m.params()) p->requires_grad_(true);

  const double lr = 0.5;
  const int steps = 300;
  double first_loss = 0, loss_value = 0;
  for (int step = 0; step <= steps; ++step) {
    ga::Tensor logits = mlp_logits(train.x, m.w1, m.b1, m.w2, m.b2);
    ga::Tensor loss = cross_entropy_from_primitives(logits, train.onehot);
    loss_value = loss.item<double>();
    if (step == 0) first_loss = loss_value;
    if (step % 50 == 0) {
      std::printf("  step %3d  loss %.4f  train accuracy %.3f\n", step, loss_value, accuracy(logits, train.label));
      std::fflush(stdout);
    }
    if (step == steps) break;
    for (ga::Tensor* p : m.params()) p->zero_grad();
    loss.backward();
    ga::NoGradGuard no_grad;
    for (ga::Tensor* p : m.params()) ga::sub_(*p, p->grad() * lr);
  }

  double test_acc = 0;
  {
    ga::NoGradGuard no_grad;
    test_acc = accuracy(mlp_logits(test.x, m.w1, m.b1, m.w2, m.b2), test.label);
  }
  const double secs = std::chrono::duration<double>(clock::now() - t0).count();
  const bool ok = test_acc >= 0.9 && loss_value < 0.5 * first_loss;
  std::printf("  final loss %.4f (from %.4f), held-out accuracy %.3f, %.2f s on %d thread(s)\n", loss_value,
              first_loss, test_acc, secs, ga::get_num_threads());
  std::cout << "selftest " << (ok ? "passed" : "FAILED (expected accuracy >= 0.9 and the loss to halve)") << "\n";
  return ok ? 0 : 1;
}

const char* const kSelftestUsage =
    "usage: ga selftest [--threads N]\n"
    "\n"
    "Checks the engine end to end: the gradients autograd computes for a 2-16-2 tanh MLP\n"
    "against finite differences, then trains it with SGD on XOR of four Gaussian blobs and\n"
    "requires held-out accuracy >= 0.9. Exits 1 if either check fails.\n";

int selftest_command(const std::vector<std::string>& argv) {
  ga_cli::Args args;
  if (ga_cli::parse_common("selftest", argv, {}, kSelftestUsage, args)) return 0;
  if (!args.positional.empty()) throw ga_cli::UsageError("selftest takes no arguments");
  return selftest();
}

/// Parses a thread count; false when s is not an integer in [1, 1024].
bool parse_threads(const char* s, int& n) {
  if (!s || !*s) return false;
  char* end = nullptr;
  const long v = std::strtol(s, &end, 10);
  if (*end != '\0' || v < 1 || v > 1024) return false;
  n = static_cast<int>(v);
  return true;
}

}  // namespace

int main(int argc, char** argv) {
  // Global options come before the command; everything after it is the command's.
  int i = 1;
  for (; i < argc; ++i) {
    const char* a = argv[i];
    if (!std::strcmp(a, "--help") || !std::strcmp(a, "-h")) {
      print_help();
      return 0;
    }
    if (!std::strcmp(a, "--version")) {
      std::cout << "ga " << GA_VERSION_STRING << "\n";
      return 0;
    }
    if (!std::strcmp(a, "--threads") || !std::strncmp(a, "--threads=", 10)) {
      const char* v = a[9] == '=' ? a + 10 : (i + 1 < argc ? argv[++i] : nullptr);
      int n = 0;
      if (!parse_threads(v, n))
        return usage_error(std::string("--threads needs an integer from 1 to 1024, got '") + (v ? v : "") + "'");
      ga::set_num_threads(n);
      continue;
    }
    if (a[0] == '-' && a[1] != '\0') return usage_error(std::string("unknown option '") + a + "'");
    break;
  }
  if (i >= argc) {
    print_help();
    return 0;
  }
  const std::string cmd = argv[i];
  const std::vector<std::string> rest(argv + i + 1, argv + argc);
  const Command* command = nullptr;
  for (const Command& c : commands())
    if (cmd == c.name) command = &c;
  if (!command) return usage_error("unknown command '" + cmd + "'");
  if (!command->run) {
    std::cerr << "ga: '" << cmd << "' is not yet available in this version (" << GA_VERSION_STRING << ")\n";
    return 1;
  }
  try {
    return command->run(rest);
  } catch (const ga_cli::UsageError& e) {
    std::cerr << "ga " << cmd << ": " << one_line(e.what()) << " (see 'ga " << cmd << " --help')\n";
    return 2;
  } catch (const ga::Error& e) {
    std::cerr << "ga " << cmd << ": " << one_line(e.what()) << "\n";
    return 1;
  } catch (const std::bad_alloc&) {
    std::cerr << "ga " << cmd << ": out of memory\n";
    return 1;
  } catch (const std::exception& e) {
    std::cerr << "ga " << cmd << ": " << one_line(e.what()) << "\n";
    return 1;
  }
}
