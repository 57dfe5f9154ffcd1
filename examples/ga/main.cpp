// The `ga` command-line tool. Until the CLIP and adaptation commands land, it
// describes itself and checks the engine end to end on a tiny training problem.
//
// Exit codes: 0 success, 1 a command ran and failed, 2 bad usage (one line on stderr).
#include <chrono>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <iostream>
#include <string>
#include <vector>

#include <ga/ga.hpp>

namespace {

struct Command {
  const char* name;
  const char* summary;
  bool available;
};

const std::vector<Command>& commands() {
  static const std::vector<Command> list = {
      {"selftest", "train a tiny MLP on a synthetic problem and check the engine", true},
      {"convert", "convert OpenAI CLIP checkpoints to safetensors", false},
      {"info", "print a weights file's model config and tensors", false},
      {"tokenize", "CLIP BPE tokenizer: text -> token ids", false},
      {"preprocess", "CLIP image preprocessing: image -> normalised tensor", false},
      {"encode-image", "CLIP image embeddings for image files", false},
      {"encode-text", "CLIP text embeddings for prompts", false},
      {"zeroshot", "zero-shot classification with CLIP", false},
      {"adapt", "few-shot adaptation (GraphAdapter, Tip-Adapter, CLIP-Adapter, ...)", false},
      {"demo", "the end-to-end demo on the embedded default", false},
  };
  return list;
}

int usage_error(const std::string& msg) {
  std::cerr << "ga: " << msg << " (see 'ga --help')\n";
  return 2;
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
               "on which CLIP inference and few-shot adaptation (GraphAdapter and baselines) are\n"
               "being built. Today the engine (tensors, ops, autograd, gradcheck) exists; the\n"
               "CLIP and adaptation commands are planned.\n"
               "\n"
               "usage: ga [--threads N] <command> [args]\n"
               "       ga --help | --version\n"
               "\n"
               "commands:\n";
  for (const Command& c : commands()) {
    std::string name = c.name;
    name.resize(14, ' ');
    std::cout << "  " << name << c.summary << (c.available ? "" : "  [not yet available]") << "\n";
  }
  std::cout << "\n"
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
  std::vector<std::string> positional;
  for (int i = 1; i < argc; ++i) {
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
    positional.emplace_back(a);
  }

  if (positional.empty()) {
    print_help();
    return 0;
  }
  const std::string& cmd = positional[0];
  try {
    if (cmd == "selftest") {
      if (positional.size() > 1) return usage_error("selftest takes no arguments");
      return selftest();
    }
    for (const Command& c : commands())
      if (cmd == c.name) {
        std::cerr << "ga: '" << cmd << "' is not yet available in this version (" << GA_VERSION_STRING << ")\n";
        return 1;
      }
    return usage_error("unknown command '" + cmd + "'");
  } catch (const ga::Error& e) {
    std::cerr << "ga " << cmd << ": " << e.what() << "\n";
    return 1;
  }
}
