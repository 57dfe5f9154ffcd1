// Engine tests for autograd: accumulation, shared and diamond graphs, broadcasting,
// detach and no-grad, every misuse error, graph release, deep graphs, and the public
// gradcheck utility (including a deliberately wrong op it must catch). Expected
// gradients are worked out by hand.
#include <doctest/doctest.h>

#include "test_util.hpp"

#include <cmath>
#include <memory>
#include <string>
#include <thread>
#include <vector>

#include <ga/tensor.hpp>

using namespace ga;

namespace {

using test::expect_error;


/// A leaf requiring grad: 1-d of v's length unless a shape is given.
Tensor leaf(std::vector<double> v, Shape s = {}) {
  Tensor t = s.empty() ? tensor(v) : tensor(v, s);
  t.requires_grad_();
  return t;
}

std::vector<double> grad_of(const Tensor& t) {
  REQUIRE(t.grad().defined());
  return t.grad().to_vector<double>();
}

void check_close(const std::vector<double>& got, const std::vector<double>& want, double tol = 1e-12) {
  REQUIRE(got.size() == want.size());
  for (size_t i = 0; i < got.size(); ++i) {
    INFO("element ", i, ": got ", got[i], ", want ", want[i]);
    CHECK(std::abs(got[i] - want[i]) <= tol * (1 + std::abs(want[i])));
  }
}

/// x^2 with a deliberately wrong gradient rule (g x instead of 2 g x).
Tensor bad_square(const Tensor& x) {
  Tensor y = mul(x.detach(), x.detach());
  return autograd::record("bad_square", {x}, y, [x = x.detach()](const Tensor& g, const std::vector<bool>&) {
    return std::vector<Tensor>{mul(g, x)};
  });
}

/// a * b whose gradient for b is wrong at element 2 only (scaled by 1.5).
Tensor bad_mul(const Tensor& a, const Tensor& b) {
  Tensor y = mul(a.detach(), b.detach());
  return autograd::record("bad_mul", {a, b}, y,
                          [a = a.detach(), b = b.detach()](const Tensor& g, const std::vector<bool>& n) {
                            Tensor skew = tensor(std::vector<double>{1, 1, 1.5, 1});
                            return std::vector<Tensor>{n[0] ? mul(g, b) : Tensor(),
                                                       n[1] ? mul(mul(g, a), skew) : Tensor()};
                          });
}

/// The identity whose rule returns no gradient (a stop-gradient).
Tensor stop_gradient(const Tensor& x) {
  Tensor y = x.detach().clone();
  return autograd::record("stop_gradient", {x}, y, [](const Tensor&, const std::vector<bool>&) {
    return std::vector<Tensor>{Tensor()};
  });
}

}  // namespace

TEST_CASE("autograd: recording marks results; leaves and non-leaves") {
  Tensor x = leaf({1, 2, 3});
  Tensor c = tensor(std::vector<double>{4, 5, 6});
  CHECK(x.is_leaf());
  CHECK(x.requires_grad());
  CHECK_FALSE(x.grad().defined());
  Tensor y = x * c;
  CHECK(y.requires_grad());
  CHECK_FALSE(y.is_leaf());
  REQUIRE(y.grad_fn());
  CHECK(y.grad_fn()->op == "mul");
  Tensor z = c * 2.0;
  CHECK_FALSE(z.requires_grad());
  CHECK_FALSE(z.grad_fn());
  expect_error<AutogradError>("requires_grad_(false) on a non-leaf", [&] { y.requires_grad_(false); },
                              {"requires_grad_", "detach"});
  x.requires_grad_(false);
  CHECK_FALSE((x * c).requires_grad());
}

TEST_CASE("autograd: gradients accumulate across two backward calls") {
  Tensor x = leaf({1, 2, 3});
  sum(x * x).backward();
  check_close(grad_of(x), {2, 4, 6});
  sum(x * x).backward();
  check_close(grad_of(x), {4, 8, 12});
  sum(x * 3.0).backward();
  check_close(grad_of(x), {7, 11, 15});
}

TEST_CASE("autograd: a tensor used several times gets the summed gradient") {
  Tensor x = leaf({1, -2, 0.5});
  sum(x * x + x).backward();
  check_close(grad_of(x), {3, -3, 2});  // 2x + 1
  // Both operands of one op at once, with broadcasting: outer product x_i x_j.
  Tensor v = leaf({1, 2, 3});
  sum(v.unsqueeze(1) * v.unsqueeze(0)).backward();
  check_close(grad_of(v), {12, 12, 12});  // d/dv_k sum_ij v_i v_j = 2 sum v
  // x / x: gradient 0 (through both inputs of div).
  Tensor w = leaf({2, 5});
  sum(w / w).backward();
  check_close(grad_of(w), {0, 0});
}

TEST_CASE("autograd: diamond graphs") {
  Tensor x = leaf({0.1, -0.3});
  Tensor a = x * 2.0;
  Tensor b = exp(a);
  Tensor c = a * 3.0;
  Tensor d = b * c;  // (e^{2x})(6x): d' = 2 e^{2x} 6x + e^{2x} 6
  sum(b + c + d).backward();
  std::vector<double> want;
  for (double xv : {0.1, -0.3}) {
    const double e = std::exp(2 * xv);
    want.push_back(2 * e + 6 + 12 * xv * e + 6 * e);
  }
  check_close(grad_of(x), want);
  // Wide diamond: one intermediate feeding many consumers that merge again.
  Tensor y = leaf({1.5});
  Tensor t = y * y;  // y^2
  Tensor acc = t;
  for (int i = 0; i < 9; ++i) acc = acc + t;  // 10 y^2
  sum(acc * t).backward();                    // 10 y^4 -> 40 y^3
  check_close(grad_of(y), {40 * 1.5 * 1.5 * 1.5});
}

TEST_CASE("autograd: broadcast gradients sum down to the input shape") {
  Tensor a = leaf({1, 2, 3}, {3, 1});
  Tensor b = leaf({10, 20, 30, 40}, {1, 4});
  sum(a * b).backward();
  check_close(grad_of(a), {100, 100, 100});  // sum_j b_j
  check_close(grad_of(b), {6, 6, 6, 6});     // sum_i a_i
  CHECK(a.grad().shape() == Shape{3, 1});
  CHECK(b.grad().shape() == Shape{1, 4});

  Tensor r = leaf({1, 2, 3, 4});                // [4] broadcast over [2, 3, 4]
  Tensor big = ones({2, 3, 4}, f64);
  sum((r + big) * (r + big)).backward();       // 2 (r + 1) per element, 6 copies
  check_close(grad_of(r), {24, 36, 48, 60});
  CHECK(r.grad().shape() == Shape{4});

  Tensor s = tensor(std::vector<double>{2.0}, Shape{}).requires_grad_();  // 0-d
  CHECK(s.dim() == 0);
  sum(s * tensor(std::vector<double>{1, 2, 3, 4}, {2, 2})).backward();
  CHECK(s.grad().dim() == 0);
  check_close(grad_of(s), {10});

  Tensor e = leaf({1, 2, 3});  // through an explicit expand
  sum(e.expand({5, 3}) * 2.0).backward();
  check_close(grad_of(e), {10, 10, 10});
}

TEST_CASE("autograd: explicit gradient for a non-scalar output, and for a leaf root") {
  Tensor x = leaf({1, 2, 3});
  (x * 3.0).backward(tensor(std::vector<double>{1, 2, 3}));
  check_close(grad_of(x), {3, 6, 9});
  Tensor y = leaf({1, 2});
  y.backward(tensor(std::vector<double>{5, 7}));
  check_close(grad_of(y), {5, 7});
  Tensor z = leaf({4});
  z.backward();
  check_close(grad_of(z), {1});
}

TEST_CASE("autograd: gradients through views and dtype conversion") {
  Tensor x = leaf({1, 2, 3, 4, 5, 6}, {2, 3});
  Tensor w = tensor(std::vector<double>{1, 10, 100, 1000, 10000, 100000});
  // x.t() is [3, 2]; flattened row-major it reads x[0][0], x[1][0], x[0][1], x[1][1], ...
  sum(x.t().reshape({-1}) * w).backward();
  check_close(grad_of(x), {1, 100, 10000, 10, 1000, 100000});
  x.zero_grad();
  sum(x.slice(1, 0, 3, 2) * 2.0 + x.select(0, 1).narrow(0, 0, 2)).backward();
  check_close(grad_of(x), {2, 0, 2, 4, 2, 2});

  // select / squeeze of a transposed (non-contiguous) tensor are views with gradients.
  Tensor m = leaf({1, 2, 3, 4, 5, 6}, {2, 3});
  Tensor col = m.t().select(0, 2);  // m[:, 2]
  CHECK(col.shares_storage_with(m));
  sum(col * tensor(std::vector<double>{10, 20}) + m.t().unsqueeze(1).squeeze() * 1.0).backward();
  check_close(grad_of(m), {1, 1, 31, 1, 1, 61});  // col broadcasts over 3 rows: 1 + 3 * [10, 20]

  Tensor f = tensor(std::vector<float>{1.5f, -2.0f});
  f.requires_grad_();
  Tensor d = f.to(f64);
  CHECK(d.requires_grad());
  sum(d * d).backward();
  REQUIRE(f.grad().defined());
  CHECK(f.grad().dtype() == f32);
  CHECK(f.grad().to_vector<float>() == std::vector<float>{3.0f, -4.0f});
}

TEST_CASE("autograd: detach cuts the graph") {
  Tensor x = leaf({2, 3});
  sum(x * x.detach()).backward();  // only one path: d/dx = x
  check_close(grad_of(x), {2, 3});
  Tensor d = x.detach();
  CHECK_FALSE(d.requires_grad());
  CHECK_FALSE(d.grad_fn());
  CHECK(d.shares_storage_with(x));
  Tensor y = sum(d * 2.0);
  CHECK_FALSE(y.requires_grad());
  expect_error<AutogradError>("backward through detach", [&] { y.backward(); }, {"backward", "require"});
  Tensor h = x * 2.0;
  Tensor hd = h.detach();
  CHECK(hd.is_leaf());
  CHECK_FALSE(hd.requires_grad());
}

TEST_CASE("autograd: NoGradGuard records nothing and restores the previous mode") {
  Tensor x = leaf({1, 2});
  CHECK(grad_enabled());
  {
    NoGradGuard g;
    CHECK_FALSE(grad_enabled());
    Tensor y = exp(x * 2.0) + x;
    CHECK_FALSE(y.requires_grad());
    CHECK_FALSE(y.grad_fn());
    CHECK(sum(y).grad_fn() == nullptr);
    CHECK_FALSE(x.reshape({2, 1}).grad_fn());
    {
      NoGradGuard inner;
      CHECK_FALSE(grad_enabled());
    }
    CHECK_FALSE(grad_enabled());  // the inner guard restores "off", not "on"
  }
  CHECK(grad_enabled());
  Tensor z = x * 2.0;
  CHECK(z.requires_grad());
  REQUIRE(z.grad_fn());
  // backward works inside a guard on a graph recorded outside it.
  Tensor zs = sum(z);
  {
    NoGradGuard g;
    zs.backward();
  }
  check_close(grad_of(x), {2, 2});
  CHECK(grad_enabled());
}

TEST_CASE("autograd: grad mode is per thread") {
  NoGradGuard g;
  bool other = false;
  std::thread t([&] { other = grad_enabled(); });
  t.join();
  CHECK(other);
  CHECK_FALSE(grad_enabled());
}

TEST_CASE("autograd: backward misuse errors") {
  Tensor x = leaf({1, 2, 3});
  expect_error<AutogradError>("non-scalar without gradient", [&] { (x * 2.0).backward(); }, {"backward", "[3]"});
  expect_error<AutogradError>("non-scalar 2-d", [&] { (x.reshape({3, 1}) * x).backward(); },
                              {"backward", "[3, 3]"});
  expect_error<AutogradError>("non-scalar leaf", [&] { x.backward(); }, {"backward", "[3]"});
  expect_error<AutogradError>("wrong gradient shape", [&] { (x * 2.0).backward(ones({2}, f64)); },
                              {"backward", "[2]", "[3]"});
  expect_error<AutogradError>("wrong gradient dtype", [&] { (x * 2.0).backward(ones({3}, f32)); },
                              {"backward", "f32", "f64"});
  Tensor c = tensor(std::vector<double>{1, 2});
  expect_error<AutogradError>("no grad required", [&] { sum(c).backward(); }, {"backward", "require"});
  expect_error<DTypeError>("requires_grad_ on i64", [] { zeros({2}, i64).requires_grad_(); },
                           {"requires_grad_", "i64"});
  expect_error<DTypeError>("requires_grad_ on f16", [] { zeros({2}, f16).requires_grad_(); },
                           {"requires_grad_", "f16"});
  CHECK_FALSE(x.grad().defined());  // none of the failed calls left a gradient
}

TEST_CASE("autograd: backward twice needs retain_graph") {
  Tensor x = leaf({1, 2});
  Tensor y = sum(x * x);
  y.backward();
  check_close(grad_of(x), {2, 4});
  expect_error<AutogradError>("second backward", [&] { y.backward(); }, {"retain_graph"});
  check_close(grad_of(x), {2, 4});  // unchanged by the failed call

  Tensor w = leaf({1, 2});
  Tensor z = sum(exp(w) * w);
  z.backward(Tensor(), true);
  const std::vector<double> once = grad_of(w);
  check_close(once, {std::exp(1.0) * 2, std::exp(2.0) * 3});
  z.backward(Tensor(), true);
  check_close(grad_of(w), {2 * once[0], 2 * once[1]});
  z.backward();  // the last one may free
  check_close(grad_of(w), {3 * once[0], 3 * once[1]});
  expect_error<AutogradError>("after the freeing backward", [&] { z.backward(); }, {"retain_graph"});

  // A second root sharing a freed part of the graph.
  Tensor v = leaf({3});
  Tensor a = exp(v);
  Tensor r1 = sum(a);
  Tensor r2 = sum(a * 2.0);
  r1.backward();
  expect_error<AutogradError>("shared freed graph", [&] { r2.backward(); }, {"exp", "retain_graph"});
}

TEST_CASE("autograd: in-place update of a tensor requiring grad is refused outside NoGradGuard") {
  Tensor w = leaf({1, 2});
  expect_error<AutogradError>("add_ on a leaf", [&] { add_(w, ones({2}, f64)); }, {"add_", "NoGradGuard"});
  expect_error<AutogradError>("mul_ on a leaf", [&] { mul_(w, 2.0); }, {"mul_"});
  Tensor h = w * 2.0;
  expect_error<AutogradError>("add_ on a non-leaf", [&] { add_(h, 1.0); }, {"add_"});
  CHECK(w.to_vector<double>() == std::vector<double>{1, 2});
  {
    NoGradGuard g;
    add_(w, tensor(std::vector<double>{10, 20}));
    mul_(w, 0.5);
  }
  CHECK(w.to_vector<double>() == std::vector<double>{5.5, 11});
  CHECK(w.requires_grad());
  CHECK(w.is_leaf());
}

TEST_CASE("autograd: zero_grad drops the gradient") {
  Tensor x = leaf({1, 2});
  sum(x * 5.0).backward();
  check_close(grad_of(x), {5, 5});
  x.zero_grad();
  CHECK_FALSE(x.grad().defined());
  sum(x * x).backward();
  check_close(grad_of(x), {2, 4});
}

TEST_CASE("autograd: gradients never alias the user's grad_output") {
  Tensor x = leaf({1, 2, 3});
  Tensor go = tensor(std::vector<double>{1, 1, 1});
  x.reshape({3}).backward(go);  // a view: the rule hands the gradient straight through
  REQUIRE(x.grad().defined());
  CHECK_FALSE(x.grad().shares_storage_with(go));
  go.fill_(100.0);
  check_close(grad_of(x), {1, 1, 1});

  Tensor y = leaf({1, 2});
  Tensor g2 = tensor(std::vector<double>{3, 4});
  y.backward(g2);  // the root is the leaf itself
  CHECK_FALSE(y.grad().shares_storage_with(g2));
  g2.fill_(0.0);
  check_close(grad_of(y), {3, 4});

  Tensor z = leaf({1, 2});
  Tensor g3 = tensor(std::vector<double>{5, 6});
  (z.clone() + scalar_tensor(0.0, f64)).backward(g3);
  CHECK_FALSE(z.grad().shares_storage_with(g3));
  // Modifying the gradient in place does not touch the graph's other leaves.
  Tensor p = leaf({1}), q = leaf({1});
  (p + q).backward(tensor(std::vector<double>{2}));
  CHECK_FALSE(p.grad().shares_storage_with(q.grad()));
  {
    NoGradGuard g;
    Tensor pg = p.grad();
    add_(pg, 5.0);
  }
  check_close(grad_of(q), {2});
}

TEST_CASE("autograd: a deep chain backward does not overflow the stack") {
  Tensor x = leaf({1.0});
  Tensor y = x;
  const int n = 10000;
  for (int i = 0; i < n; ++i) y = y * 1.0001 + 0.5;
  sum(y).backward();
  check_close(grad_of(x), {std::pow(1.0001, n)}, 1e-9);

  // Releasing a long retained graph (by dropping the root) must not recurse either.
  Tensor w = leaf({2.0});
  Tensor r = w;
  for (int i = 0; i < 200000; ++i) r = r + 1.0;
  r.backward(Tensor(), true);
  check_close(grad_of(w), {1});
  r = Tensor();  // frees 200000 nodes
  Tensor s = w;
  for (int i = 0; i < 200000; ++i) s = s * 1.0;
  s = Tensor();  // never back-propagated
  Tensor t = w;
  for (int i = 0; i < 100000; ++i) t = t * t;  // every node holds two edges to the previous one
  t = Tensor();
  CHECK(w.requires_grad());
}

TEST_CASE("autograd: backward releases saved tensors unless retain_graph") {
  Tensor x = leaf({0.5, 1.5});
  std::weak_ptr<Storage> saved;
  Tensor z;
  {
    Tensor h = exp(x);  // exp saves its output; mul saves both operands
    saved = h.storage();
    z = sum(h * h);
  }
  CHECK_FALSE(saved.expired());  // held by the graph only
  std::shared_ptr<autograd::Node> root = z.grad_fn();
  CHECK_FALSE(root->released);
  z.backward();
  CHECK(saved.expired());
  CHECK(root->released);
  CHECK(root->inputs.empty());
  check_close(grad_of(x), {2 * std::exp(1.0), 2 * std::exp(3.0)});

  Tensor y = leaf({1.0});
  std::weak_ptr<Storage> kept;
  Tensor r;
  {
    Tensor h = exp(y);
    kept = h.storage();
    r = sum(h * h);
  }
  r.backward(Tensor(), true);
  CHECK_FALSE(kept.expired());
  CHECK_FALSE(r.grad_fn()->released);
  r = Tensor();
  CHECK(kept.expired());  // dropping the root frees the retained graph
}

TEST_CASE("autograd: a rule that returns no gradient counts as zero and does not stall other paths") {
  Tensor x = leaf({1, 2});
  Tensor a = x * 2.0;
  Tensor b = a * 3.0;
  Tensor k = stop_gradient(b);  // b's node gets no gradient at all
  sum(a + k).backward();
  check_close(grad_of(x), {2, 2});
  // The only path stopped: the leaf gets no gradient.
  Tensor y = leaf({1});
  sum(stop_gradient(y * 2.0)).backward();
  CHECK_FALSE(y.grad().defined());
}

TEST_CASE("autograd: a rule returning a gradient of the wrong shape or count is an AutogradError") {
  Tensor x = leaf({1, 2, 3});
  Tensor y = autograd::record("bad_shape", {x}, x.detach().clone(), [](const Tensor&, const std::vector<bool>&) {
    return std::vector<Tensor>{ones({4}, f64)};
  });
  expect_error<AutogradError>("rule gradient shape", [&] { sum(y).backward(); }, {"bad_shape", "[4]", "[3]"});
  Tensor x2 = leaf({1, 2, 3}, {3, 1});
  Tensor y2 = autograd::record("bad_shape2", {x2}, x2.detach().clone(), [](const Tensor&, const std::vector<bool>&) {
    return std::vector<Tensor>{ones({2, 1}, f64)};
  });
  expect_error<AutogradError>("rule gradient wrong dim", [&] { sum(y2).backward(); }, {"bad_shape2", "[2, 1]", "[3, 1]"});
  Tensor x3 = leaf({1});
  Tensor y3 = autograd::record("bad_count", {x3}, x3.detach().clone(), [](const Tensor& g, const std::vector<bool>&) {
    return std::vector<Tensor>{g, g};
  });
  expect_error<AutogradError>("rule gradient count", [&] { sum(y3).backward(); }, {"bad_count", "2"});
  Tensor x4 = leaf({1});
  Tensor y4 = autograd::record("bad_dtype", {x4}, x4.detach().clone(), [](const Tensor& g, const std::vector<bool>&) {
    return std::vector<Tensor>{g.to(f32)};
  });
  expect_error<AutogradError>("rule gradient dtype", [&] { sum(y4).backward(); }, {"bad_dtype", "f32", "f64"});
}

TEST_CASE("autograd: unused inputs get no gradient") {
  Tensor x = leaf({1, 2});
  Tensor w = leaf({3, 4});
  Tensor unused = w * 2.0;
  sum(x * 2.0).backward();
  check_close(grad_of(x), {2, 2});
  CHECK_FALSE(w.grad().defined());
  (void)unused;
}

TEST_CASE("autograd: gradcheck passes on a correct composite") {
  Generator g(1);
  Tensor a = randn({3, 4}, g);  // f32: gradcheck works on f64 copies
  Tensor b = randn({4, 2}, g);
  Tensor c = rand({2}, g, f32, 0.5, 1.5);
  const std::vector<float> a_before = a.to_vector<float>();
  auto fn = [](const std::vector<Tensor>& xs) {
    Tensor h = tanh(matmul(xs[0], xs[1])) * xs[2];
    return sum(exp(h) / (h * h + 1.0), {0}) + mean(xs[0].slice(1, 0, 2), {0});
  };
  GradcheckResult r = gradcheck(fn, {a, b, c});
  INFO(r.message);
  CHECK(r.ok);
  CHECK(r.max_abs_error < 1e-6);
  CHECK(r.message.empty());
  // The caller's tensors are untouched.
  CHECK(a.to_vector<float>() == a_before);
  CHECK(a.dtype() == f32);
  CHECK_FALSE(a.requires_grad());
  CHECK_FALSE(a.grad().defined());
}

TEST_CASE("autograd: gradcheck fails on a wrong gradient and names the input and element") {
  Tensor x = tensor(std::vector<double>{0.5, -1.0, 2.0});
  GradcheckResult r = gradcheck([](const std::vector<Tensor>& xs) { return bad_square(xs[0]); }, {x});
  CHECK_FALSE(r.ok);
  CHECK(r.message.find("input 0") != std::string::npos);
  CHECK(r.message.find("element 0") != std::string::npos);
  CHECK(r.max_abs_error > 0.1);

  Tensor a = tensor(std::vector<double>{1, 2, 3, 4});
  Tensor b = tensor(std::vector<double>{-1, 0.5, 2, 3});
  GradcheckResult r2 = gradcheck([](const std::vector<Tensor>& xs) { return bad_mul(xs[0], xs[1]); }, {a, b});
  INFO(r2.message);
  CHECK_FALSE(r2.ok);
  CHECK(r2.message.find("input 1") != std::string::npos);
  CHECK(r2.message.find("element 2") != std::string::npos);
  CHECK(r2.message.find("[4]") != std::string::npos);
  // With input 1 excluded, the remaining (correct) gradient passes.
  GradcheckResult r3 =
      gradcheck([](const std::vector<Tensor>& xs) { return bad_mul(xs[0], xs[1]); }, {a, b}, 1e-6, 1e-6, 1e-4,
                {true, false});
  CHECK(r3.ok);
  // A function whose output does not depend on an input: analytic 0 matches numeric 0.
  GradcheckResult r4 = gradcheck([](const std::vector<Tensor>& xs) { return xs[0] * 2.0; }, {a, b});
  CHECK(r4.ok);
  expect_error<ValueError>("wrt size", [&] { gradcheck([](const std::vector<Tensor>& xs) { return xs[0]; }, {a, b},
                                                     1e-6, 1e-6, 1e-4, {true}); }, {"gradcheck", "wrt"});
  // gradcheck insists on an f64 output.
  expect_error<DTypeError>("f32 output",
                           [&] { gradcheck([](const std::vector<Tensor>& xs) { return xs[0].to(f32); }, {a}); },
                           {"gradcheck", "f32"});
}

TEST_CASE("autograd: gradcheck passes index inputs through") {
  Tensor x = tensor(std::vector<float>{1, 2, 3, 4, 5, 6}, {3, 2});
  Tensor idx = tensor(std::vector<int64_t>{2, 0});
  const TensorImpl* idx_impl = idx.unsafe_impl();
  bool index_ok = true;
  auto fn = [&](const std::vector<Tensor>& xs) {
    index_ok = index_ok && xs[1].dtype() == i64 && xs[1].unsafe_impl() == idx_impl && !xs[1].requires_grad();
    const std::vector<int64_t> id = xs[1].to_vector<int64_t>();
    return xs[0].select(0, id[0]) * xs[0].select(0, id[1]) * xs[0].select(0, id[0]);
  };
  GradcheckResult r = gradcheck(fn, {x, idx});
  INFO(r.message);
  CHECK(r.ok);
  CHECK(index_ok);
  // The same function with the wrong-gradient op inside still fails (the check is live).
  auto bad = [&](const std::vector<Tensor>& xs) {
    const std::vector<int64_t> id = xs[1].to_vector<int64_t>();
    return bad_square(xs[0].select(0, id[0]));
  };
  GradcheckResult rb = gradcheck(bad, {x, idx});
  CHECK_FALSE(rb.ok);
  CHECK(rb.message.find("input 0") != std::string::npos);
  CHECK(rb.message.find("element 4") != std::string::npos);  // x[2][0] is flat element 4
}

TEST_CASE("autograd: in-place ops update non-contiguous views and refuse expanded ones") {
  Tensor base = tensor(std::vector<double>{1, 2, 3, 4, 5, 6}, {2, 3});
  Tensor col = base.t();  // [3, 2], strides [1, 3]
  add_(col, tensor(std::vector<double>{10, 20}));  // adds 10 to row 0 of base, 20 to row 1
  CHECK(base.to_vector<double>() == std::vector<double>{11, 12, 13, 24, 25, 26});
  Tensor every_other = base.slice(1, 0, 3, 2);  // columns 0 and 2
  mul_(every_other, 2.0);
  CHECK(base.to_vector<double>() == std::vector<double>{22, 12, 26, 48, 25, 52});
  Tensor wide = tensor(std::vector<double>{1, 2}).unsqueeze(0).expand({3, 2});
  expect_error<ValueError>("add_ on an expanded view", [&] { add_(wide, 1.0); }, {"add_", "expanded"});
}
