// Optimizers: SGD (momentum, Nesterov, weight decay), Adam (coupled L2) and AdamW
// (decoupled weight decay), each exactly PyTorch's update rule, so that recipes tuned in
// PyTorch (CoOp, GraphAdapter) reproduce. Updates run in place under NoGradGuard.
#pragma once
#include <cmath>
#include <unordered_set>
#include <utility>
#include <vector>

#include "../tensor.hpp"

namespace ga::nn {

/// Holds the parameters it updates (handles: the same tensors the model holds) and one
/// learning rate. step() reads each parameter's .grad() and updates the parameter in
/// place; parameters whose grad is undefined (frozen, or not reached by backward) are
/// skipped and their state (momentum, step count) does not advance.
class Optimizer {
 public:
  /// Requires every parameter to be a defined f32/f64 leaf, each listed once, and lr >= 0
  /// (ValueError otherwise).
  Optimizer(std::vector<Tensor> params, double lr) : params_(std::move(params)) {
    std::unordered_set<const TensorImpl*> seen;
    for (size_t i = 0; i < params_.size(); ++i) {
      const Tensor& p = params_[i];
      GA_CHECK(p.defined(), ValueError, "optimizer: parameter ", i, " is an undefined tensor");
      GA_CHECK(p.dtype() == DType::f32 || p.dtype() == DType::f64, DTypeError, "optimizer: parameter ", i,
               " has dtype ", dtype_name(p.dtype()), "; only f32 and f64 can be optimized");
      GA_CHECK(p.is_leaf(), ValueError, "optimizer: parameter ", i,
               " is not a leaf (it was computed by an op); optimize the tensor it came from");
      GA_CHECK(seen.insert(p.unsafe_impl()).second, ValueError, "optimizer: parameter ", i,
               " appears more than once; it would be updated twice per step");
    }
    set_lr(lr);
  }
  virtual ~Optimizer() = default;

  double lr() const { return lr_; }
  /// Changes the learning rate for the following steps (schedulers call this). lr >= 0.
  void set_lr(double lr) {
    GA_CHECK(lr >= 0.0, ValueError, "optimizer: invalid learning rate ", lr, " (must be >= 0)");
    lr_ = lr;
  }
  const std::vector<Tensor>& params() const { return params_; }
  /// Drops every parameter's gradient (PyTorch's set_to_none=True), before the next backward.
  void zero_grad() {
    for (Tensor& p : params_) p.zero_grad();
  }
  /// Applies one update from the current gradients.
  virtual void step() = 0;

 protected:
  std::vector<Tensor> params_;
  double lr_ = 0.0;
};

/// Stochastic gradient descent, torch.optim.SGD's rule. With g the gradient:
///   d = g + weight_decay * p
///   if momentum != 0: b = d on the first step, else b = momentum * b + (1 - dampening) * d;
///                     d = nesterov ? d + momentum * b : b
///   p = p - lr * d
class SGD : public Optimizer {
 public:
  /// Requires lr, momentum, weight_decay >= 0; nesterov needs momentum > 0 and
  /// dampening == 0 (ValueError otherwise).
  SGD(std::vector<Tensor> params, double lr, double momentum = 0.0, double dampening = 0.0,
      double weight_decay = 0.0, bool nesterov = false)
      : Optimizer(std::move(params), lr),
        momentum_(momentum),
        dampening_(dampening),
        weight_decay_(weight_decay),
        nesterov_(nesterov),
        buffers_(params_.size()) {
    GA_CHECK(momentum >= 0.0, ValueError, "SGD: invalid momentum ", momentum, " (must be >= 0)");
    GA_CHECK(weight_decay >= 0.0, ValueError, "SGD: invalid weight_decay ", weight_decay, " (must be >= 0)");
    GA_CHECK(!nesterov || (momentum > 0.0 && dampening == 0.0), ValueError,
             "SGD: Nesterov momentum requires momentum > 0 and dampening == 0 (got momentum ", momentum,
             ", dampening ", dampening, ")");
  }

  void step() override {
    NoGradGuard no_grad;
    for (size_t i = 0; i < params_.size(); ++i) {
      Tensor& p = params_[i];
      Tensor d = p.grad();
      if (!d.defined()) continue;
      if (weight_decay_ != 0.0) d = add(d, p.detach() * weight_decay_);
      if (momentum_ != 0.0) {
        Tensor& b = buffers_[i];
        if (!b.defined()) {
          b = d.clone();
        } else {
          mul_(b, momentum_);
          add_(b, d * (1.0 - dampening_));
        }
        d = nesterov_ ? add(d, b * momentum_) : b;
      }
      sub_(p, d * lr_);
    }
  }

  /// The momentum buffer of parameter i (undefined before its first step).
  const Tensor& momentum_buffer(size_t i) const { return buffers_.at(i); }

 private:
  double momentum_, dampening_, weight_decay_;
  bool nesterov_;
  std::vector<Tensor> buffers_;
};

/// Adam, torch.optim.Adam's rule (amsgrad off). Per parameter, at its step t = 1, 2, ...:
///   g = grad + weight_decay * p                      (coupled L2; AdamW differs here)
///   m = beta1 m + (1 - beta1) g;   v = beta2 v + (1 - beta2) g^2
///   p = p - lr / (1 - beta1^t) * m / (sqrt(v) / sqrt(1 - beta2^t) + eps)
class Adam : public Optimizer {
 public:
  /// Requires lr, eps, weight_decay >= 0 and both betas in [0, 1) (ValueError otherwise).
  Adam(std::vector<Tensor> params, double lr = 1e-3, std::pair<double, double> betas = {0.9, 0.999},
       double eps = 1e-8, double weight_decay = 0.0)
      : Adam(std::move(params), lr, betas, eps, weight_decay, false, "Adam") {}

  void step() override {
    NoGradGuard no_grad;
    const double b1 = betas_.first, b2 = betas_.second;
    for (size_t i = 0; i < params_.size(); ++i) {
      Tensor& p = params_[i];
      Tensor g = p.grad();
      if (!g.defined()) continue;
      State& s = state_[i];
      if (!s.exp_avg.defined()) {
        s.exp_avg = zeros_like(p);
        s.exp_avg_sq = zeros_like(p);
      }
      ++s.step;
      if (weight_decay_ != 0.0) {
        if (decoupled_) mul_(p, 1.0 - lr_ * weight_decay_);
        else g = add(g, p.detach() * weight_decay_);
      }
      mul_(s.exp_avg, b1);
      add_(s.exp_avg, g * (1.0 - b1));
      mul_(s.exp_avg_sq, b2);
      add_(s.exp_avg_sq, mul(g, g) * (1.0 - b2));
      const double bc1 = 1.0 - std::pow(b1, double(s.step));
      const double bc2 = 1.0 - std::pow(b2, double(s.step));
      Tensor denom = sqrt(s.exp_avg_sq) / std::sqrt(bc2) + eps_;
      sub_(p, div(s.exp_avg, denom) * (lr_ / bc1));
    }
  }

  /// How many updates parameter i has had (its t).
  int64_t step_count(size_t i) const { return state_.at(i).step; }

 protected:
  Adam(std::vector<Tensor> params, double lr, std::pair<double, double> betas, double eps, double weight_decay,
       bool decoupled, const char* name)
      : Optimizer(std::move(params), lr),
        betas_(betas),
        eps_(eps),
        weight_decay_(weight_decay),
        decoupled_(decoupled),
        state_(params_.size()) {
    GA_CHECK(betas.first >= 0.0 && betas.first < 1.0, ValueError, name, ": invalid beta1 ", betas.first,
             " (must be in [0, 1))");
    GA_CHECK(betas.second >= 0.0 && betas.second < 1.0, ValueError, name, ": invalid beta2 ", betas.second,
             " (must be in [0, 1))");
    GA_CHECK(eps >= 0.0, ValueError, name, ": invalid eps ", eps, " (must be >= 0)");
    GA_CHECK(weight_decay >= 0.0, ValueError, name, ": invalid weight_decay ", weight_decay, " (must be >= 0)");
  }

 private:
  struct State {
    int64_t step = 0;
    Tensor exp_avg, exp_avg_sq;
  };
  std::pair<double, double> betas_;
  double eps_, weight_decay_;
  bool decoupled_;
  std::vector<State> state_;
};

/// AdamW, torch.optim.AdamW's rule: Adam without the L2 term, and instead, before the
/// moment updates, p = p * (1 - lr * weight_decay) (decoupled weight decay).
class AdamW : public Adam {
 public:
  AdamW(std::vector<Tensor> params, double lr = 1e-3, std::pair<double, double> betas = {0.9, 0.999},
        double eps = 1e-8, double weight_decay = 1e-2)
      : Adam(std::move(params), lr, betas, eps, weight_decay, true, "AdamW") {}
};

}  // namespace ga::nn
