// The nn layer: module registry and state dicts, layers against naive double-precision
// loops, initialiser statistics, and a small MLP that must learn XOR.
#include <doctest/doctest.h>

#include <algorithm>
#include <cmath>
#include <string>
#include <vector>

#include <ga/ga.hpp>

using namespace ga;
namespace nn = ga::nn;

namespace {

std::vector<double> vec(const Tensor& t) { return t.to_vector<double>(); }

void check_near(const std::vector<double>& got, const std::vector<double>& want, double tol) {
  REQUIRE(got.size() == want.size());
  double worst = 0;
  for (size_t i = 0; i < got.size(); ++i) worst = std::max(worst, std::abs(got[i] - want[i]));
  CHECK(worst <= tol);
}

struct Moments {
  double mean, var, min, max;
};
Moments moments(const Tensor& t) {
  const std::vector<double> v = vec(t);
  double s = 0, mn = v[0], mx = v[0];
  for (double x : v) {
    s += x;
    mn = std::min(mn, x);
    mx = std::max(mx, x);
  }
  const double m = s / double(v.size());
  double q = 0;
  for (double x : v) q += (x - m) * (x - m);
  return {m, q / double(v.size()), mn, mx};
}

std::vector<std::string> names(const nn::Module::NamedTensors& named) {
  std::vector<std::string> n;
  for (const auto& p : named) n.push_back(p.first);
  return n;
}

bool contains(const std::string& s, const std::string& part) { return s.find(part) != std::string::npos; }

// A model with parameters, buffers and nested children, registered in a mixed order.
struct Net : nn::Module {
  Net() {
    fc1 = register_module("fc1", std::make_shared<nn::Linear>(2, 16));
    scale = register_parameter("scale", ones({1}));
    layers = register_module("layers", std::make_shared<nn::Sequential>(std::make_shared<nn::Linear>(16, 8),
                                                                        std::make_shared<nn::ReLU>(),
                                                                        std::make_shared<nn::Linear>(8, 2, false)));
    stat = register_buffer("stat", zeros({3}));
    bn = register_module("bn", std::make_shared<nn::BatchNorm2d>(4));
  }
  Tensor forward(const Tensor& x) override { return layers->forward(relu(fc1->forward(x)) * scale); }

  std::shared_ptr<nn::Linear> fc1;
  std::shared_ptr<nn::Sequential> layers;
  std::shared_ptr<nn::BatchNorm2d> bn;
  Tensor scale, stat;
};

}  // namespace

// ---- Module ----

TEST_CASE("nn: parameters, buffers and state dict are named with dots in registration order") {
  Net net;
  // A module's own tensors come before its children's, as in PyTorch.
  CHECK(names(net.named_parameters()) ==
        std::vector<std::string>{"scale", "fc1.weight", "fc1.bias", "layers.0.weight", "layers.0.bias",
                                 "layers.2.weight", "bn.weight", "bn.bias"});
  CHECK(names(net.named_parameters(false)) == std::vector<std::string>{"scale"});
  CHECK(names(net.named_buffers()) ==
        std::vector<std::string>{"stat", "bn.running_mean", "bn.running_var", "bn.num_batches_tracked"});
  CHECK(net.state_dict().keys() ==
        std::vector<std::string>{"scale", "stat", "fc1.weight", "fc1.bias", "layers.0.weight", "layers.0.bias",
                                 "layers.2.weight", "bn.weight", "bn.bias", "bn.running_mean", "bn.running_var",
                                 "bn.num_batches_tracked"});
  std::vector<std::string> mods;
  for (const auto& m : net.named_modules()) mods.push_back(m.first);
  CHECK(mods == std::vector<std::string>{"fc1", "layers", "layers.0", "layers.1", "layers.2", "bn"});
  CHECK(net.num_parameters() == 1 + 2 * 16 + 16 + 16 * 8 + 8 + 8 * 2 + 4 + 4);
  // The registry and the members hold the same tensors.
  CHECK(net.parameters()[1].unsafe_impl() == net.fc1->weight.unsafe_impl());
  for (const Tensor& p : net.parameters()) CHECK(p.requires_grad());
  for (const Tensor& b : net.buffers()) CHECK_FALSE(b.requires_grad());
  CHECK(net.type_name() == "(anonymous namespace)::Net");
  CHECK(net.fc1->type_name() == "Linear");
}

TEST_CASE("nn: state_dict round trip copies values by name into the same tensors") {
  manual_seed(1);
  Net a;
  manual_seed(2);
  Net b;
  {
    NoGradGuard ng;
    a.bn->running_mean.copy_(tensor({0.1f, 0.2f, 0.3f, 0.4f}));
    a.stat.fill_(7.0);
  }
  CHECK(vec(a.fc1->weight) != vec(b.fc1->weight));
  const Tensor b_weight = b.fc1->weight;  // a handle held elsewhere (as an optimizer would)
  const nn::LoadResult r = b.load_state_dict(a.state_dict());
  CHECK(r.missing_keys.empty());
  CHECK(r.unexpected_keys.empty());
  const nn::StateDict da = a.state_dict(), db = b.state_dict();
  REQUIRE(da.keys() == db.keys());
  for (const auto& e : da) CHECK(vec(e.second) == vec(db.at(e.first)));
  CHECK(b_weight.unsafe_impl() == b.fc1->weight.unsafe_impl());
  CHECK(vec(b_weight) == vec(a.fc1->weight));
  CHECK(b.fc1->weight.requires_grad());
  CHECK(vec(b.bn->running_mean) == std::vector<double>{0.1f, 0.2f, 0.3f, 0.4f});
  const Tensor x = randn({5, 2});
  const std::vector<double> ya = vec(a.forward(x));
  // Copies, not aliases: changing a afterwards leaves b alone.
  {
    NoGradGuard ng;
    a.fc1->weight.fill_(0.0);
  }
  CHECK(vec(b.fc1->weight) != vec(a.fc1->weight));
  CHECK(vec(b.forward(x)) == ya);
}

TEST_CASE("nn: load_state_dict reports every missing, unexpected and mis-shaped entry") {
  manual_seed(3);
  Net src;
  Net dst;
  const nn::StateDict before = dst.state_dict();
  std::vector<std::vector<double>> before_values;
  for (const auto& e : before) before_values.push_back(vec(e.second));
  auto unchanged = [&] {
    size_t i = 0;
    for (const auto& e : dst.state_dict()) CHECK(vec(e.second) == before_values[i++]);
  };

  nn::StateDict d = src.state_dict();
  d.erase("fc1.bias");
  d.erase("layers.0.weight");
  d.insert("extra.weight", zeros({2}));
  d.insert("fc9.bias", zeros({2}));
  d.set("layers.2.weight", zeros({3, 3}));
  d.set("bn.running_var", zeros({5}));

  SUBCASE("strict: KeyError listing all key problems and all shape problems") {
    std::string msg;
    try {
      dst.load_state_dict(d);
    } catch (const KeyError& e) {
      msg = e.what();
    }
    REQUIRE_FALSE(msg.empty());
    CHECK(contains(msg, "Net"));
    CHECK(contains(msg, "2 missing key(s): \"fc1.bias\", \"layers.0.weight\""));
    CHECK(contains(msg, "2 unexpected key(s): \"extra.weight\", \"fc9.bias\""));
    CHECK(contains(msg, "\"layers.2.weight\": model [2, 8], checkpoint [3, 3]"));
    CHECK(contains(msg, "\"bn.running_var\": model [4], checkpoint [5]"));
    unchanged();
  }
  SUBCASE("not strict: shapes are still checked (ShapeError), nothing is copied") {
    std::string msg;
    try {
      dst.load_state_dict(d, false);
    } catch (const ShapeError& e) {
      msg = e.what();
    }
    CHECK(contains(msg, "2 shape mismatch(es)"));
    CHECK(contains(msg, "\"layers.2.weight\": model [2, 8], checkpoint [3, 3]"));
    CHECK_FALSE(contains(msg, "missing"));
    unchanged();
  }
  SUBCASE("strict with only a shape problem: ShapeError") {
    nn::StateDict s = src.state_dict();
    s.set("fc1.weight", zeros({2, 16}));
    CHECK_THROWS_AS(dst.load_state_dict(s), ShapeError);
    unchanged();
  }
  SUBCASE("not strict with good shapes: loads what matches and returns what it skipped") {
    d.set("layers.2.weight", src.layers->at<nn::Linear>(2)->weight.detach());
    d.set("bn.running_var", src.bn->running_var.detach());
    const nn::LoadResult r = dst.load_state_dict(d, false);
    CHECK(r.missing_keys == std::vector<std::string>{"fc1.bias", "layers.0.weight"});
    CHECK(r.unexpected_keys == std::vector<std::string>{"extra.weight", "fc9.bias"});
    CHECK(vec(dst.fc1->weight) == vec(src.fc1->weight));
    CHECK(vec(dst.fc1->bias) == before_values[3]);  // missing: left as it was
  }
  SUBCASE("batch norm's num_batches_tracked may be absent; dtype converts on copy") {
    nn::StateDict s = src.state_dict();
    s.erase("bn.num_batches_tracked");
    s.set("fc1.weight", src.fc1->weight.detach().to(DType::f64));
    const nn::LoadResult r = dst.load_state_dict(s);
    CHECK(r.missing_keys.empty());
    CHECK(dst.fc1->weight.dtype() == DType::f32);
    CHECK(vec(dst.fc1->weight) == vec(src.fc1->weight));
  }
}

TEST_CASE("nn: train/eval reach every descendant; batch norm refuses training mode") {
  Net net;
  CHECK(net.is_training());
  net.eval();
  CHECK_FALSE(net.is_training());
  for (const auto& m : net.named_modules()) CHECK_FALSE(m.second->is_training());
  const Tensor x = randn({2, 4, 3, 3});
  CHECK(net.bn->forward(x).shape() == x.shape());
  net.train();
  for (const auto& m : net.named_modules()) CHECK(m.second->is_training());
  std::string msg;
  try {
    net.bn->forward(x);
  } catch (const Error& e) {
    msg = e.what();
  }
  CHECK(contains(msg, "BatchNorm2d"));
  CHECK(contains(msg, "training"));
  net.train(false);
  CHECK_FALSE(net.layers->at<nn::ReLU>(1)->is_training());
}

TEST_CASE("nn: registration rules, default forward, tied weights, zero_grad, freezing") {
  struct Bare : nn::Module {
    void add(const std::string& n) { register_parameter(n, zeros({1})); }
    void add_buffer(const std::string& n) { register_buffer(n, zeros({1})); }
  };
  Bare m;
  std::string msg;
  try {
    m.forward(zeros({1}));
  } catch (const Error& e) {
    msg = e.what();
  }
  CHECK(contains(msg, "Bare"));
  CHECK(contains(msg, "forward"));
  m.add("w");
  CHECK_THROWS_AS(m.add("w"), ValueError);
  CHECK_THROWS_AS(m.add_buffer("w"), ValueError);
  CHECK_THROWS_AS(m.add("a.b"), ValueError);
  CHECK_THROWS_AS(m.add(""), ValueError);

  // A tensor registered twice (tied weights) is one parameter but two state dict entries.
  struct Tied : nn::Module {
    Tied() {
      enc = register_module("enc", std::make_shared<nn::Linear>(3, 3, false));
      register_parameter("dec_weight", enc->weight);
    }
    std::shared_ptr<nn::Linear> enc;
  };
  Tied t;
  CHECK(names(t.named_parameters()) == std::vector<std::string>{"dec_weight"});
  CHECK(t.state_dict().size() == 2);

  Net net;
  sum(net.forward(randn({4, 2}))).backward();
  for (const auto& p : net.named_parameters())
    if (p.first.rfind("bn.", 0) != 0) CHECK(p.second.grad().defined());
  net.zero_grad();
  for (const Tensor& p : net.parameters()) CHECK_FALSE(p.grad().defined());
  net.requires_grad_(false);
  for (const Tensor& p : net.parameters()) CHECK_FALSE(p.requires_grad());
}

TEST_CASE("nn: Module::to(f64) converts parameters and buffers in place") {
  Net net;
  const std::vector<double> w = vec(net.fc1->weight);
  const Tensor handle = net.fc1->weight;
  net.to(DType::f64);
  CHECK(handle.dtype() == DType::f64);
  CHECK(net.fc1->weight.dtype() == DType::f64);
  CHECK(vec(handle) == w);
  CHECK(net.bn->running_var.dtype() == DType::f64);
  CHECK(net.bn->num_batches_tracked.dtype() == DType::i64);
  CHECK(net.forward(randn({3, 2}, default_generator(), DType::f64)).dtype() == DType::f64);
  CHECK(handle.requires_grad());
}

TEST_CASE("nn: StateDict keeps insertion order and rejects duplicates") {
  nn::StateDict d{{"b", zeros({1})}, {"a", ones({2})}};
  CHECK(d.keys() == std::vector<std::string>{"b", "a"});
  CHECK_THROWS_AS(d.insert("a", zeros({1})), KeyError);
  CHECK_THROWS_AS(d.at("zz"), KeyError);
  CHECK(d.find("zz") == nullptr);
  d.set("b", ones({3}));
  CHECK(d.at("b").numel() == 3);
  CHECK(d.erase("b"));
  CHECK_FALSE(d.contains("b"));
  CHECK(d.at("a").numel() == 2);
}

// ---- layers against naive loops ----

TEST_CASE("nn: Linear matches a naive loop and is initialised within 1/sqrt(in)") {
  Generator gen(11);
  nn::Linear lin(5, 3);
  lin.reset_parameters(gen);
  const double bound = 1.0 / std::sqrt(5.0);
  for (double w : vec(lin.weight)) CHECK(std::abs(w) <= bound + 1e-7);
  for (double b : vec(lin.bias)) CHECK(std::abs(b) <= bound + 1e-7);
  const Tensor x = randn({4, 5}, gen);
  const std::vector<double> xv = vec(x), W = vec(lin.weight), B = vec(lin.bias);
  std::vector<double> want(4 * 3);
  for (int n = 0; n < 4; ++n)
    for (int o = 0; o < 3; ++o) {
      double s = B[o];
      for (int i = 0; i < 5; ++i) s += xv[n * 5 + i] * W[o * 5 + i];
      want[n * 3 + o] = s;
    }
  check_near(vec(lin.forward(x)), want, 1e-5);
  nn::Linear nob(5, 3, false);
  CHECK_FALSE(nob.bias.defined());
  CHECK(names(nob.named_parameters()) == std::vector<std::string>{"weight"});
}

TEST_CASE("nn: Sequential names children 0, 1, ... and chains forward") {
  auto l0 = std::make_shared<nn::Linear>(3, 4);
  auto l2 = std::make_shared<nn::Linear>(4, 2);
  nn::Sequential seq(l0, std::make_shared<nn::Tanh>(), l2);
  CHECK(seq.size() == 3);
  CHECK(names(seq.named_parameters()) == std::vector<std::string>{"0.weight", "0.bias", "2.weight", "2.bias"});
  CHECK(seq.at<nn::Linear>(2) == l2);
  CHECK_THROWS_AS(seq.at<nn::Linear>(1), ValueError);
  CHECK_THROWS_AS(seq[3], IndexError);
  const Tensor x = randn({2, 3});
  CHECK(vec(seq.forward(x)) == vec(l2->forward(tanh(l0->forward(x)))));
  seq.push_back(std::make_shared<nn::Sigmoid>());
  CHECK(seq.named_children().back().first == "3");
  for (double v : vec(seq(x))) CHECK((v > 0 && v < 1));
  nn::Sequential empty_seq;
  CHECK(vec(empty_seq.forward(x)) == vec(x));
}

TEST_CASE("nn: activation modules are their ops") {
  const Tensor x = randn({7});
  const std::vector<double> xv = vec(x);
  std::vector<double> r, g, q;
  for (double v : xv) {
    r.push_back(std::max(v, 0.0));
    g.push_back(0.5 * v * (1 + std::erf(v / std::sqrt(2.0))));
    q.push_back(v / (1 + std::exp(-1.702 * v)));
  }
  check_near(vec(nn::ReLU()(x)), r, 0);
  check_near(vec(nn::GELU()(x)), g, 1e-6);
  check_near(vec(nn::QuickGELU()(x)), q, 1e-6);
  check_near(vec(nn::Identity()(x)), xv, 0);
}

TEST_CASE("nn: LayerNorm matches a naive loop, with and without affine") {
  Generator gen(5);
  nn::LayerNorm ln(6);
  CHECK(vec(ln.weight) == std::vector<double>(6, 1.0));
  CHECK(vec(ln.bias) == std::vector<double>(6, 0.0));
  nn::init::normal_(ln.weight, 1.0, 0.5, gen);
  nn::init::normal_(ln.bias, 0.0, 0.5, gen);
  const Tensor x = randn({2, 3, 6}, gen, DType::f32, 1.0, 3.0);
  const std::vector<double> xv = vec(x), w = vec(ln.weight), b = vec(ln.bias);
  std::vector<double> want(xv.size()), plain(xv.size());
  for (int r = 0; r < 6; ++r) {
    double m = 0, v = 0;
    for (int i = 0; i < 6; ++i) m += xv[r * 6 + i] / 6;
    for (int i = 0; i < 6; ++i) v += (xv[r * 6 + i] - m) * (xv[r * 6 + i] - m) / 6;
    for (int i = 0; i < 6; ++i) {
      plain[r * 6 + i] = (xv[r * 6 + i] - m) / std::sqrt(v + 1e-5);
      want[r * 6 + i] = plain[r * 6 + i] * w[i] + b[i];
    }
  }
  check_near(vec(ln(x)), want, 1e-5);
  nn::LayerNorm bare(Shape{6}, 1e-5, false);
  CHECK(bare.parameters().empty());
  check_near(vec(bare(x)), plain, 1e-5);
}

TEST_CASE("nn: Conv2d matches a naive loop (stride 2, padding 1) and its init bound") {
  Generator gen(9);
  nn::Conv2d conv(3, 4, 3, 2, 1);
  conv.reset_parameters(gen);
  CHECK(conv.weight.shape() == Shape{4, 3, 3, 3});
  const double bound = 1.0 / std::sqrt(27.0);
  for (double w : vec(conv.weight)) CHECK(std::abs(w) <= bound + 1e-7);
  for (double b : vec(conv.bias)) CHECK(std::abs(b) <= bound + 1e-7);
  const int N = 2, C = 3, H = 5, W = 6, O = 4, OH = 3, OW = 3;
  const Tensor x = randn({N, C, H, W}, gen);
  const std::vector<double> xv = vec(x), wv = vec(conv.weight), bv = vec(conv.bias);
  std::vector<double> want(N * O * OH * OW);
  for (int n = 0; n < N; ++n)
    for (int o = 0; o < O; ++o)
      for (int oh = 0; oh < OH; ++oh)
        for (int ow = 0; ow < OW; ++ow) {
          double s = bv[o];
          for (int c = 0; c < C; ++c)
            for (int i = 0; i < 3; ++i)
              for (int j = 0; j < 3; ++j) {
                const int h = oh * 2 - 1 + i, w = ow * 2 - 1 + j;
                if (h < 0 || h >= H || w < 0 || w >= W) continue;
                s += xv[((n * C + c) * H + h) * W + w] * wv[((o * C + c) * 3 + i) * 3 + j];
              }
          want[((n * O + o) * OH + oh) * OW + ow] = s;
        }
  const Tensor y = conv(x);
  CHECK(y.shape() == Shape{N, O, OH, OW});
  check_near(vec(y), want, 1e-5);
  nn::Conv2d rect(3, 2, {2, 3}, {1, 2}, {0, 1}, false);
  CHECK(rect.weight.shape() == Shape{2, 3, 2, 3});
  CHECK_FALSE(rect.bias.defined());
  CHECK(rect(x).shape() == Shape{N, 2, 4, 3});
}

TEST_CASE("nn: BatchNorm2d in eval uses the running statistics") {
  Generator gen(4);
  nn::BatchNorm2d bn(3, 1e-3);
  {
    NoGradGuard ng;
    bn.running_mean.copy_(tensor({0.5f, -1.0f, 2.0f}));
    bn.running_var.copy_(tensor({4.0f, 0.25f, 1.0f}));
    bn.weight.copy_(tensor({1.5f, -2.0f, 0.5f}));
    bn.bias.copy_(tensor({0.1f, 0.2f, 0.3f}));
  }
  bn.eval();
  const Tensor x = randn({2, 3, 2, 2}, gen);
  const std::vector<double> xv = vec(x), m{0.5, -1, 2}, v{4, 0.25, 1}, w{1.5, -2, 0.5}, b{0.1, 0.2, 0.3};
  std::vector<double> want(xv.size());
  for (size_t i = 0; i < xv.size(); ++i) {
    const size_t c = (i / 4) % 3;
    want[i] = (xv[i] - m[c]) / std::sqrt(v[c] + 1e-3) * w[c] + b[c];
  }
  check_near(vec(bn(x)), want, 1e-5);
  CHECK_THROWS_AS(bn(randn({3, 3})), ShapeError);
}

TEST_CASE("nn: Embedding looks up rows; N(0, 1) init") {
  manual_seed(21);
  nn::Embedding emb(1000, 64);
  const Moments mo = moments(emb.weight);
  CHECK(std::abs(mo.mean) < 0.02);
  CHECK(std::abs(std::sqrt(mo.var) - 1.0) < 0.02);
  const Tensor ids = tensor(std::vector<int64_t>{3, 999, 3, 0}, {2, 2});
  const Tensor y = emb(ids);
  CHECK(y.shape() == Shape{2, 2, 64});
  const std::vector<double> w = vec(emb.weight), yv = vec(y);
  const int64_t rows[] = {3, 999, 3, 0};
  for (int r = 0; r < 4; ++r)
    for (int d = 0; d < 64; ++d) CHECK(yv[r * 64 + d] == w[rows[r] * 64 + d]);
}

TEST_CASE("nn: Dropout drops about p in training and is the identity in eval") {
  Generator gen(13);
  nn::Dropout drop(0.25, gen);
  const Tensor x = ones({100, 100});
  int zeros_seen = 0;
  for (double v : vec(drop(x))) {
    if (v == 0.0) ++zeros_seen;
    else CHECK(std::abs(v - 1.0 / 0.75) < 1e-6);
  }
  CHECK(std::abs(zeros_seen / 10000.0 - 0.25) < 0.02);
  drop.eval();
  CHECK(vec(drop(x)) == vec(x));
  CHECK_THROWS_AS(nn::Dropout(1.0), ValueError);
  CHECK_THROWS_AS(nn::Dropout(-0.1), ValueError);
}

// ---- attention against a naive loop ----

namespace {
// out[b][l][:] of nn.MultiheadAttention, computed with plain loops from the weights.
// mask(b, h, l, s) is the additive mask.
template <class Mask>
std::vector<double> naive_mha(const std::vector<double>& q, const std::vector<double>& k, const std::vector<double>& v,
                              int B, int L, int S, int E, int H, const std::vector<double>& Win,
                              const std::vector<double>& bin, const std::vector<double>& Wo,
                              const std::vector<double>& bo, const Mask& mask) {
  const int D = E / H;
  auto proj = [&](const std::vector<double>& x, int len, int part) {
    std::vector<double> y(size_t(B) * len * E);
    for (int b = 0; b < B; ++b)
      for (int t = 0; t < len; ++t)
        for (int e = 0; e < E; ++e) {
          double s = bin[part * E + e];
          for (int j = 0; j < E; ++j) s += x[(size_t(b) * len + t) * E + j] * Win[size_t(part * E + e) * E + j];
          y[(size_t(b) * len + t) * E + e] = s;
        }
    return y;
  };
  const std::vector<double> Q = proj(q, L, 0), K = proj(k, S, 1), V = proj(v, S, 2);
  std::vector<double> ctx(size_t(B) * L * E, 0.0);
  for (int b = 0; b < B; ++b)
    for (int h = 0; h < H; ++h)
      for (int l = 0; l < L; ++l) {
        std::vector<double> sc(S);
        double mx = -INFINITY;
        for (int s = 0; s < S; ++s) {
          double dot = 0;
          for (int d = 0; d < D; ++d) dot += Q[(size_t(b) * L + l) * E + h * D + d] * K[(size_t(b) * S + s) * E + h * D + d];
          sc[s] = dot / std::sqrt(double(D)) + mask(b, h, l, s);
          mx = std::max(mx, sc[s]);
        }
        double z = 0;
        for (int s = 0; s < S; ++s) z += (sc[s] = std::exp(sc[s] - mx));
        for (int s = 0; s < S; ++s)
          for (int d = 0; d < D; ++d)
            ctx[(size_t(b) * L + l) * E + h * D + d] += sc[s] / z * V[(size_t(b) * S + s) * E + h * D + d];
      }
  std::vector<double> out(size_t(B) * L * E);
  for (size_t r = 0; r < size_t(B) * L; ++r)
    for (int o = 0; o < E; ++o) {
      double s = bo[o];
      for (int e = 0; e < E; ++e) s += ctx[r * E + e] * Wo[size_t(o) * E + e];
      out[r * E + o] = s;
    }
  return out;
}
}  // namespace

TEST_CASE("nn: MultiheadAttention has PyTorch's parameter names and initialisation") {
  nn::MultiheadAttention mha(8, 2);
  CHECK(names(mha.named_parameters()) ==
        std::vector<std::string>{"in_proj_weight", "in_proj_bias", "out_proj.weight", "out_proj.bias"});
  CHECK(mha.in_proj_weight.shape() == Shape{24, 8});
  CHECK(mha.in_proj_bias.shape() == Shape{24});
  CHECK(mha.out_proj->weight.shape() == Shape{8, 8});
  CHECK(vec(mha.in_proj_bias) == std::vector<double>(24, 0.0));
  CHECK(vec(mha.out_proj->bias) == std::vector<double>(8, 0.0));
  const double xavier = std::sqrt(6.0 / (8 + 24));
  for (double w : vec(mha.in_proj_weight)) CHECK(std::abs(w) <= xavier + 1e-7);
  CHECK_THROWS_AS(nn::MultiheadAttention(10, 3), ValueError);
  nn::MultiheadAttention nob(8, 2, false);
  CHECK(names(nob.named_parameters()) == std::vector<std::string>{"in_proj_weight", "out_proj.weight"});
}

TEST_CASE("nn: MultiheadAttention forward matches a naive f64 loop") {
  const int B = 2, L = 3, S = 4, E = 8, H = 2;
  Generator gen(17);
  nn::MultiheadAttention mha(E, H);
  mha.to(DType::f64);
  mha.reset_parameters(gen);
  nn::init::uniform_(mha.in_proj_bias, -0.5, 0.5, gen);  // nonzero biases, to test them
  nn::init::uniform_(mha.out_proj->bias, -0.5, 0.5, gen);
  const std::vector<double> Win = vec(mha.in_proj_weight), bin = vec(mha.in_proj_bias),
                            Wo = vec(mha.out_proj->weight), bo = vec(mha.out_proj->bias);
  const Tensor q = randn({B, L, E}, gen, DType::f64), k = randn({B, S, E}, gen, DType::f64),
               v = randn({B, S, E}, gen, DType::f64);
  const std::vector<double> qv = vec(q), kv = vec(k), vv = vec(v);
  auto none = [](int, int, int, int) { return 0.0; };

  SUBCASE("no mask") {
    check_near(vec(mha.forward(q, k, v)), naive_mha(qv, kv, vv, B, L, S, E, H, Win, bin, Wo, bo, none), 1e-12);
  }
  SUBCASE("float mask [L, S] is added to the scores") {
    const Tensor m = randn({L, S}, gen, DType::f64);
    const std::vector<double> mv = vec(m);
    auto add = [&](int, int, int l, int s) { return mv[l * S + s]; };
    check_near(vec(mha.forward(q, k, v, m)), naive_mha(qv, kv, vv, B, L, S, E, H, Win, bin, Wo, bo, add), 1e-12);
  }
  SUBCASE("bool mask: true blocks, per batch and head [B * H, L, S]") {
    std::vector<uint8_t> blocked(size_t(B) * H * L * S);
    for (size_t i = 0; i < blocked.size(); ++i) blocked[i] = (i * 7 + i / 5) % 3 == 0;
    for (size_t r = 0; r < blocked.size(); r += S) blocked[r + (r / S) % S] = 0;  // one key left per row
    Tensor m = tensor(blocked, {B * H, L, S}).to(DType::b8);
    auto add = [&](int b, int h, int l, int s) {
      return blocked[((size_t(b) * H + h) * L + l) * S + s] ? -INFINITY : 0.0;
    };
    check_near(vec(mha.forward(q, k, v, m)), naive_mha(qv, kv, vv, B, L, S, E, H, Win, bin, Wo, bo, add), 1e-12);
  }
  SUBCASE("is_causal on self-attention, alone and with a float mask") {
    const Tensor x = randn({B, S, E}, gen, DType::f64);
    const std::vector<double> xv = vec(x);
    auto causal = [](int, int, int l, int s) { return s > l ? -INFINITY : 0.0; };
    check_near(vec(mha.forward(x, x, x, Tensor(), true)),
               naive_mha(xv, xv, xv, B, S, S, E, H, Win, bin, Wo, bo, causal), 1e-12);
    const Tensor m = randn({S, S}, gen, DType::f64);
    const std::vector<double> mv = vec(m);
    auto both = [&](int, int, int l, int s) { return (s > l ? -INFINITY : 0.0) + mv[l * S + s]; };
    check_near(vec(mha.forward(x, x, x, m, true)), naive_mha(xv, xv, xv, B, S, S, E, H, Win, bin, Wo, bo, both),
               1e-12);
    // The one-input forward is self-attention.
    check_near(vec(mha.forward(x)), naive_mha(xv, xv, xv, B, S, S, E, H, Win, bin, Wo, bo, none), 1e-12);
  }
  SUBCASE("unbatched [L, E] input") {
    const Tensor q0 = q.select(0, 1), k0 = k.select(0, 1), v0 = v.select(0, 1);
    const Tensor y = mha.forward(q0, k0, v0);
    CHECK(y.shape() == Shape{L, E});
    check_near(vec(y), naive_mha(vec(q0), vec(k0), vec(v0), 1, L, S, E, H, Win, bin, Wo, bo, none), 1e-12);
  }
  SUBCASE("gradients reach every parameter") {
    sum(mha.forward(q, k, v)).backward();
    for (const auto& p : mha.named_parameters()) {
      REQUIRE(p.second.grad().defined());
      CHECK(p.second.grad().shape() == p.second.shape());
    }
  }
  CHECK_THROWS_AS(mha.forward(q, k.narrow(2, 0, 4), v), ShapeError);
}

// ---- initialisers ----

TEST_CASE("nn: initialisers draw the documented distributions, reproducibly") {
  namespace init = nn::init;
  Generator gen(123);
  SUBCASE("uniform_ and normal_") {
    Tensor t = empty({200, 300});
    init::uniform_(t, -0.5, 0.5, gen);
    Moments m = moments(t);
    CHECK(m.min >= -0.5);
    CHECK(m.max <= 0.5);
    CHECK(std::abs(m.mean) < 0.005);
    CHECK(std::abs(m.var - 1.0 / 12) < 0.002);
    init::normal_(t, 2.0, 3.0, gen);
    m = moments(t);
    CHECK(std::abs(m.mean - 2.0) < 0.05);
    CHECK(std::abs(std::sqrt(m.var) - 3.0) < 0.05);
  }
  SUBCASE("fans and gains as PyTorch") {
    CHECK(init::calculate_fan_in_and_fan_out(empty({8, 4, 3, 3})) == std::pair<int64_t, int64_t>{36, 72});
    CHECK(init::calculate_fan_in_and_fan_out(empty({5, 7})) == std::pair<int64_t, int64_t>{7, 5});
    CHECK_THROWS_AS(init::calculate_fan_in_and_fan_out(empty({5})), ValueError);
    CHECK(init::calculate_gain(init::Nonlinearity::ReLU) == doctest::Approx(std::sqrt(2.0)));
    CHECK(init::calculate_gain(init::Nonlinearity::Tanh) == doctest::Approx(5.0 / 3));
    CHECK(init::calculate_gain(init::Nonlinearity::LeakyReLU, std::sqrt(5.0)) == doctest::Approx(std::sqrt(1.0 / 3)));
  }
  SUBCASE("kaiming_uniform_ with a = sqrt(5): bound 1/sqrt(fan_in)") {
    Tensor w = empty({64, 100});
    init::kaiming_uniform_(w, std::sqrt(5.0), init::FanMode::FanIn, init::Nonlinearity::LeakyReLU, gen);
    const Moments m = moments(w);
    CHECK(std::max(-m.min, m.max) <= 0.1 + 1e-7);
    CHECK(std::max(-m.min, m.max) > 0.099);
    CHECK(std::abs(m.var - 0.01 / 3) < 0.0002);
  }
  SUBCASE("kaiming_normal_ fan_out, ReLU: std sqrt(2 / fan_out)") {
    Tensor w = empty({128, 64, 3, 3});
    init::kaiming_normal_(w, 0.0, init::FanMode::FanOut, init::Nonlinearity::ReLU, gen);
    const Moments m = moments(w);
    CHECK(std::abs(m.mean) < 0.001);
    CHECK(std::abs(std::sqrt(m.var) / std::sqrt(2.0 / (128 * 9)) - 1.0) < 0.02);
  }
  SUBCASE("xavier_uniform_ and xavier_normal_ with gain 2") {
    Tensor w = empty({100, 300});
    init::xavier_uniform_(w, 2.0, gen);
    const double a = 2.0 * std::sqrt(6.0 / 400);
    Moments m = moments(w);
    CHECK(std::max(-m.min, m.max) <= a + 1e-7);
    CHECK(std::abs(m.var / (a * a / 3) - 1.0) < 0.03);
    init::xavier_normal_(w, 2.0, gen);
    m = moments(w);
    CHECK(std::abs(std::sqrt(m.var) / (2.0 * std::sqrt(2.0 / 400)) - 1.0) < 0.02);
  }
  SUBCASE("constants, and seeds reproduce") {
    Tensor p = empty({3});
    p.requires_grad_();
    init::constant_(p, 0.25);
    CHECK(vec(p) == std::vector<double>(3, 0.25));
    init::ones_(p);
    CHECK(vec(p) == std::vector<double>(3, 1.0));
    init::zeros_(p);
    CHECK(vec(p) == std::vector<double>(3, 0.0));
    Generator g1(5), g2(5), g3(6);
    Tensor a = empty({10}), b = empty({10}), c = empty({10});
    init::normal_(a, 0, 1, g1);
    init::normal_(b, 0, 1, g2);
    init::normal_(c, 0, 1, g3);
    CHECK(vec(a) == vec(b));
    CHECK(vec(a) != vec(c));
    CHECK_THROWS_AS(init::uniform_(empty({2}, DType::i64)), DTypeError);
  }
}

// ---- training ----

namespace {
struct XorResult {
  double first_loss, last_loss, accuracy;
};

// XOR of the signs: label = (x0 * x1 > 0), points kept away from the axes so the classes
// are separated by a margin. Not linearly separable, so the hidden layer must do the work.
XorResult train_xor(uint64_t seed) {
  Generator gen(seed);
  const int n = 200;
  std::vector<float> xs;
  std::vector<int64_t> ys;
  while (int(ys.size()) < n) {
    const double a = gen.uniform(-1, 1), b = gen.uniform(-1, 1);
    if (std::abs(a) < 0.1 || std::abs(b) < 0.1) continue;
    xs.push_back(float(a));
    xs.push_back(float(b));
    ys.push_back(a * b > 0 ? 1 : 0);
  }
  const Tensor x = tensor(xs, {n, 2}), y = tensor(ys);
  manual_seed(seed);
  nn::Sequential mlp(std::make_shared<nn::Linear>(2, 16), std::make_shared<nn::Tanh>(),
                     std::make_shared<nn::Linear>(16, 2));
  nn::Adam opt(mlp.parameters(), 0.03);
  XorResult r{};
  for (int step = 0; step < 300; ++step) {
    opt.zero_grad();
    Tensor loss = cross_entropy(mlp(x), y);
    loss.backward();
    opt.step();
    if (step == 0) r.first_loss = loss.item<double>();
    r.last_loss = loss.item<double>();
  }
  NoGradGuard ng;
  const std::vector<double> pred = vec(argmax(mlp(x), 1));
  int right = 0;
  for (int i = 0; i < n; ++i) right += int(pred[i]) == ys[i];
  r.accuracy = double(right) / n;
  return r;
}
}  // namespace

TEST_CASE("nn: a 2-16-2 tanh MLP with Adam learns XOR, deterministically") {
  const XorResult r = train_xor(2024);
  MESSAGE("XOR: loss " << r.first_loss << " -> " << r.last_loss << ", accuracy " << r.accuracy);
  CHECK(r.first_loss > 0.5);
  CHECK(r.last_loss < r.first_loss / 20);
  CHECK(r.accuracy == 1.0);
  const XorResult again = train_xor(2024);
  CHECK(again.last_loss == r.last_loss);
}
