// Optimizers, schedulers and gradient clipping, checked against updates worked out in
// plain double arithmetic (literal numbers where the arithmetic is short, a scalar
// re-derivation of PyTorch's documented rule otherwise).
#include <doctest/doctest.h>

#include <cmath>
#include <vector>

#include <ga/ga.hpp>

using namespace ga;
namespace nn = ga::nn;

namespace {

Tensor param64(const std::vector<double>& v) {
  Tensor p = tensor(v);
  p.requires_grad_();
  return p;
}

void set_grad(Tensor& p, const std::vector<double>& g) { p.set_grad(tensor(g)); }

void check_abs(const Tensor& t, const std::vector<double>& want, double tol) {
  const std::vector<double> got = t.to_vector<double>();
  REQUIRE(got.size() == want.size());
  for (size_t i = 0; i < got.size(); ++i) CHECK(std::abs(got[i] - want[i]) <= tol);
}

// Gradients fed in at steps 1..3 for a 3-element parameter.
const std::vector<std::vector<double>> kGrads = {{0.5, -1.0, 0.25}, {-0.2, 0.7, 0.0}, {1.5, 0.1, -0.3}};
const std::vector<double> kP0 = {1.0, -2.0, 0.5};

}  // namespace

TEST_CASE("optim: SGD plain steps are p -= lr * g") {
  Tensor p = param64({1.0, -2.0});
  nn::SGD opt({p}, 0.1);
  set_grad(p, {0.5, -1.0});
  opt.step();
  check_abs(p, {0.95, -1.9}, 1e-15);
  set_grad(p, {2.0, 0.0});
  opt.step();
  check_abs(p, {0.75, -1.9}, 1e-15);
}

TEST_CASE("optim: SGD momentum and Nesterov, literal three steps") {
  // p0 = 1, g = 1 every step, lr = 0.1, momentum = 0.9.
  SUBCASE("heavy ball: b = 1, 1.9, 2.71; p = 0.9, 0.71, 0.439") {
    Tensor p = param64({1.0});
    nn::SGD opt({p}, 0.1, 0.9);
    const double want[] = {0.9, 0.71, 0.439};
    for (double w : want) {
      set_grad(p, {1.0});
      opt.step();
      CHECK(std::abs(p.item<double>() - w) < 1e-14);
    }
    CHECK(std::abs(opt.momentum_buffer(0).item<double>() - 2.71) < 1e-14);
  }
  SUBCASE("nesterov: d = 1.9, 2.71, 3.439; p = 0.81, 0.539, 0.1951") {
    Tensor p = param64({1.0});
    nn::SGD opt({p}, 0.1, 0.9, 0.0, 0.0, true);
    const double want[] = {0.81, 0.539, 0.1951};
    for (double w : want) {
      set_grad(p, {1.0});
      opt.step();
      CHECK(std::abs(p.item<double>() - w) < 1e-14);
    }
  }
  SUBCASE("dampening 0.5: b = 1, 1.4, 1.76 (first step undamped)") {
    Tensor p = param64({1.0});
    nn::SGD opt({p}, 0.1, 0.9, 0.5);
    const double want[] = {0.9, 0.76, 0.584};
    for (double w : want) {
      set_grad(p, {1.0});
      opt.step();
      CHECK(std::abs(p.item<double>() - w) < 1e-14);
    }
  }
  SUBCASE("weight decay 0.5, no momentum: d = g + 0.5 p") {
    // p: 1 -> 1 - 0.1 (1 + 0.5) = 0.85 -> 0.85 - 0.1 (1 + 0.425) = 0.7075
    Tensor p = param64({1.0});
    nn::SGD opt({p}, 0.1, 0.0, 0.0, 0.5);
    set_grad(p, {1.0});
    opt.step();
    CHECK(std::abs(p.item<double>() - 0.85) < 1e-14);
    set_grad(p, {1.0});
    opt.step();
    CHECK(std::abs(p.item<double>() - 0.7075) < 1e-14);
  }
}

TEST_CASE("optim: SGD with everything on matches the scalar rule per element") {
  const double lr = 0.05, mom = 0.8, damp = 0.0, wd = 0.01;
  for (bool nesterov : {false, true}) {
    Tensor p = param64(kP0);
    nn::SGD opt({p}, lr, mom, damp, wd, nesterov);
    std::vector<double> ref = kP0, buf(3, 0.0);
    for (size_t t = 0; t < kGrads.size(); ++t) {
      set_grad(p, kGrads[t]);
      opt.step();
      for (size_t i = 0; i < 3; ++i) {
        const double d = kGrads[t][i] + wd * ref[i];
        buf[i] = t == 0 ? d : mom * buf[i] + (1 - damp) * d;
        ref[i] -= lr * (nesterov ? d + mom * buf[i] : buf[i]);
      }
      check_abs(p, ref, 1e-14);
    }
  }
}

TEST_CASE("optim: Adam with a constant gradient moves by lr per step (bias correction)") {
  // m_hat = g and v_hat = g^2 exactly for a constant g, so each step is lr * g/(|g| + eps').
  Tensor p = param64({1.0, -1.0});
  nn::Adam opt({p}, 0.1);
  for (int t = 1; t <= 3; ++t) {
    set_grad(p, {0.5, -2.0});
    opt.step();
    check_abs(p, {1.0 - 0.1 * t, -1.0 + 0.1 * t}, 1e-7);
    CHECK(opt.step_count(0) == t);
  }
}

TEST_CASE("optim: Adam literal first step and the scalar rule with L2 weight decay") {
  SUBCASE("step 1 by hand") {
    // g = 0.5 + 0.1 * 1 = 0.6; m = 0.06, v = 0.00036; m/(1-0.9) = 0.6, sqrt(v/(1-0.999)) = 0.6
    // p = 1 - 0.01 * 0.6 / (0.6 + 1e-8)
    Tensor p = param64({1.0});
    nn::Adam opt({p}, 0.01, {0.9, 0.999}, 1e-8, 0.1);
    set_grad(p, {0.5});
    opt.step();
    CHECK(std::abs(p.item<double>() - (1.0 - 0.01 * 0.6 / (0.6 + 1e-8))) < 1e-15);
  }
  SUBCASE("three steps, varying gradients") {
    const double lr = 0.02, b1 = 0.8, b2 = 0.95, eps = 1e-3, wd = 0.1;
    Tensor p = param64(kP0);
    nn::Adam opt({p}, lr, {b1, b2}, eps, wd);
    std::vector<double> ref = kP0, m(3, 0.0), v(3, 0.0);
    for (size_t t = 0; t < kGrads.size(); ++t) {
      set_grad(p, kGrads[t]);
      opt.step();
      const double step = double(t + 1);
      for (size_t i = 0; i < 3; ++i) {
        const double g = kGrads[t][i] + wd * ref[i];
        m[i] = b1 * m[i] + (1 - b1) * g;
        v[i] = b2 * v[i] + (1 - b2) * g * g;
        const double mhat = m[i] / (1 - std::pow(b1, step));
        const double denom = std::sqrt(v[i]) / std::sqrt(1 - std::pow(b2, step)) + eps;
        ref[i] -= lr * mhat / denom;
      }
      check_abs(p, ref, 1e-14);
    }
  }
}

TEST_CASE("optim: AdamW decays the weights before the Adam step") {
  SUBCASE("literal: constant gradient, p = 0.99 p - 0.1 each step") {
    Tensor p = param64({1.0});
    nn::AdamW opt({p}, 0.1, {0.9, 0.999}, 1e-8, 0.1);
    const double want[] = {0.89, 0.7811, 0.673289};
    for (double w : want) {
      set_grad(p, {0.5});
      opt.step();
      CHECK(std::abs(p.item<double>() - w) < 1e-7);
    }
  }
  SUBCASE("three steps, varying gradients: the decay does not enter the moments") {
    const double lr = 0.02, b1 = 0.8, b2 = 0.95, eps = 1e-3, wd = 0.3;
    Tensor p = param64(kP0);
    nn::AdamW opt({p}, lr, {b1, b2}, eps, wd);
    std::vector<double> ref = kP0, m(3, 0.0), v(3, 0.0);
    for (size_t t = 0; t < kGrads.size(); ++t) {
      set_grad(p, kGrads[t]);
      opt.step();
      const double step = double(t + 1);
      for (size_t i = 0; i < 3; ++i) {
        const double g = kGrads[t][i];
        ref[i] *= 1 - lr * wd;
        m[i] = b1 * m[i] + (1 - b1) * g;
        v[i] = b2 * v[i] + (1 - b2) * g * g;
        ref[i] -= lr / (1 - std::pow(b1, step)) * m[i] / (std::sqrt(v[i]) / std::sqrt(1 - std::pow(b2, step)) + eps);
      }
      check_abs(p, ref, 1e-14);
    }
  }
}

TEST_CASE("optim: parameters without a gradient are skipped and keep their own step count") {
  Tensor a = param64({1.0}), b = param64({2.0});
  nn::Adam opt({a, b}, 0.1);
  set_grad(a, {1.0});
  opt.step();
  CHECK(b.item<double>() == 2.0);
  CHECK(opt.step_count(0) == 1);
  CHECK(opt.step_count(1) == 0);
  set_grad(b, {-3.0});
  opt.step();  // b's first step: bias-corrected, so it moves by lr
  CHECK(std::abs(b.item<double>() - 2.1) < 1e-7);
  CHECK(opt.step_count(1) == 1);
  CHECK(opt.step_count(0) == 2);

  Tensor c = param64({5.0});
  nn::SGD sgd({c}, 0.1, 0.9);
  sgd.step();  // no grad at all: nothing happens, and no momentum buffer appears
  CHECK(c.item<double>() == 5.0);
  CHECK_FALSE(sgd.momentum_buffer(0).defined());
}

TEST_CASE("optim: zero_grad, set_lr and the gradients of a real backward") {
  // loss = sum((w - t)^2) has gradient 2 (w - t); SGD lr 0.25 halves the distance each step.
  Tensor w = param64({0.0, 4.0});
  Tensor target = tensor(std::vector<double>{1.0, 2.0});
  nn::SGD opt({w}, 0.25);
  for (int i = 0; i < 3; ++i) {
    opt.zero_grad();
    Tensor d = w - target;
    sum(d * d).backward();
    opt.step();
  }
  check_abs(w, {1.0 - 0.125, 2.0 + 0.25}, 1e-14);
  opt.zero_grad();
  CHECK_FALSE(w.grad().defined());
  opt.set_lr(0.5);
  CHECK(opt.lr() == 0.5);
  CHECK_THROWS_AS(opt.set_lr(-1.0), ValueError);
}

TEST_CASE("optim: invalid hyperparameters are ValueErrors") {
  Tensor p = param64({1.0});
  CHECK_THROWS_AS(nn::SGD({p}, -0.1), ValueError);
  CHECK_THROWS_AS(nn::SGD({p}, 0.1, -0.5), ValueError);
  CHECK_THROWS_AS(nn::SGD({p}, 0.1, 0.0, 0.0, 0.0, true), ValueError);  // nesterov without momentum
  CHECK_THROWS_AS(nn::SGD({p}, 0.1, 0.9, 0.1, 0.0, true), ValueError);  // nesterov with dampening
  CHECK_THROWS_AS(nn::SGD({p}, 0.1, 0.0, 0.0, -1.0), ValueError);
  CHECK_THROWS_AS(nn::Adam({p}, -1e-3), ValueError);
  CHECK_THROWS_AS(nn::Adam({p}, 1e-3, {1.0, 0.999}), ValueError);
  CHECK_THROWS_AS(nn::Adam({p}, 1e-3, {0.9, -0.1}), ValueError);
  CHECK_THROWS_AS(nn::Adam({p}, 1e-3, {0.9, 0.999}, -1e-8), ValueError);
  CHECK_THROWS_AS(nn::AdamW({p}, 1e-3, {0.9, 1.5}), ValueError);
  CHECK_THROWS_AS(nn::AdamW({p}, 1e-3, {0.9, 0.999}, 1e-8, -0.1), ValueError);
  CHECK_THROWS_AS(nn::SGD({p, p}, 0.1), ValueError);  // listed twice
  CHECK_THROWS_AS(nn::SGD({Tensor()}, 0.1), ValueError);
  CHECK_THROWS_AS(nn::SGD({p * 2.0}, 0.1), ValueError);  // not a leaf
}

TEST_CASE("optim: f32 parameters are updated in place (same tensor, new values)") {
  Tensor p = tensor({1.0f, 2.0f});
  p.requires_grad_();
  Tensor alias = p;
  nn::Adam opt({p}, 0.5);
  p.set_grad(tensor({1.0f, 1.0f}));
  opt.step();
  check_abs(alias, {0.5, 1.5}, 1e-6);
}

// ---- schedulers ----

TEST_CASE("optim: CosineAnnealingLR follows the closed form") {
  Tensor p = param64({1.0});
  nn::SGD opt({p}, 0.002);
  const double pi = 3.14159265358979323846, eta_min = 1e-4;
  nn::CosineAnnealingLR sched(opt, 10, eta_min);
  for (int e = 0; e <= 12; ++e) {
    const double want = eta_min + (0.002 - eta_min) * (1 + std::cos(pi * e / 10.0)) / 2;
    CHECK(std::abs(opt.lr() - want) < 1e-15);
    CHECK(sched.epoch() == e);
    sched.step();
  }
  sched.set_epoch(5);  // resume: halfway is the midpoint of base and eta_min
  CHECK(std::abs(opt.lr() - (0.002 + eta_min) / 2) < 1e-15);
  CHECK_THROWS_AS(nn::CosineAnnealingLR(opt, 0), ValueError);
}

TEST_CASE("optim: StepLR multiplies by gamma every step_size epochs") {
  Tensor p = param64({1.0});
  nn::SGD opt({p}, 1.0);
  nn::StepLR sched(opt, 3, 0.5);
  const double want[] = {1, 1, 1, 0.5, 0.5, 0.5, 0.25, 0.25, 0.25, 0.125};
  for (double w : want) {
    CHECK(opt.lr() == w);
    sched.step();
  }
}

TEST_CASE("optim: constant warm-up then cosine (the CoOp / GraphAdapter recipe)") {
  Tensor p = param64({1.0});
  nn::SGD opt({p}, 1.0);
  auto cosine = std::make_shared<nn::CosineAnnealingLR>(opt, 4);
  nn::ConstantWarmupLR sched(opt, cosine, 1, 1e-5);
  // epoch 0: 1e-5; epoch e >= 1: (1 + cos(pi (e - 1) / 4)) / 2
  const double want[] = {1e-5, 1.0, 0.85355339059327373, 0.5, 0.14644660940672624, 0.0};
  for (int e = 0; e < 6; ++e) {
    CHECK(std::abs(opt.lr() - want[e]) < 1e-15);
    CHECK(cosine->epoch() == (e == 0 ? 0 : e - 1));
    sched.step();
  }
  SUBCASE("longer warm-up and a different base") {
    nn::SGD opt2({p}, 0.002);
    auto cos2 = std::make_shared<nn::CosineAnnealingLR>(opt2, 10);
    nn::ConstantWarmupLR warm(opt2, cos2, 3, 1e-5);
    const double pi = 3.14159265358979323846;
    for (int e = 0; e < 14; ++e) {
      const double w = e < 3 ? 1e-5 : 0.002 * (1 + std::cos(pi * (e - 3) / 10.0)) / 2;
      CHECK(std::abs(opt2.lr() - w) < 1e-15);
      warm.step();
    }
  }
  CHECK_THROWS_AS(nn::ConstantWarmupLR(opt, nullptr, 1, 1e-5), ValueError);
  nn::SGD other({p}, 1.0);
  CHECK_THROWS_AS(nn::ConstantWarmupLR(other, cosine, 1, 1e-5), ValueError);
}

// ---- gradient clipping ----

TEST_CASE("optim: clip_grad_norm_ scales by max_norm / (total + 1e-6) only when that is < 1") {
  Tensor a = param64({3.0, 0.0}), b = param64({0.0}), c = param64({7.0});
  SUBCASE("L2: total 13, clipped to 6.5") {
    set_grad(a, {3.0, -4.0});
    set_grad(b, {12.0});  // c has no gradient and is skipped
    const double total = nn::clip_grad_norm_({a, b, c}, 6.5);
    CHECK(std::abs(total - 13.0) < 1e-12);
    const double s = 6.5 / (13.0 + 1e-6);
    check_abs(a.grad(), {3.0 * s, -4.0 * s}, 1e-14);
    check_abs(b.grad(), {12.0 * s}, 1e-14);
    CHECK_FALSE(c.grad().defined());
  }
  SUBCASE("below the limit nothing changes") {
    set_grad(a, {3.0, -4.0});
    set_grad(b, {12.0});
    CHECK(std::abs(nn::clip_grad_norm_({a, b}, 100.0) - 13.0) < 1e-12);
    check_abs(a.grad(), {3.0, -4.0}, 0.0);
    check_abs(b.grad(), {12.0}, 0.0);
  }
  SUBCASE("L1 and infinity norms") {
    set_grad(a, {3.0, -4.0});
    set_grad(b, {12.0});
    CHECK(std::abs(nn::clip_grad_norm_({a, b}, 100.0, 1.0) - 19.0) < 1e-12);
    const double inf = nn::clip_grad_norm_({a, b}, 6.0, INFINITY);
    CHECK(inf == 12.0);
    const double s = 6.0 / (12.0 + 1e-6);
    check_abs(a.grad(), {3.0 * s, -4.0 * s}, 1e-14);
    check_abs(b.grad(), {12.0 * s}, 1e-14);
  }
  SUBCASE("p = 3") {
    set_grad(a, {1.0, -2.0});
    set_grad(b, {2.0});
    CHECK(std::abs(nn::clip_grad_norm_({a, b}, 100.0, 3.0) - std::cbrt(17.0)) < 1e-12);
  }
  CHECK(nn::clip_grad_norm_({c}, 1.0) == 0.0);
}
