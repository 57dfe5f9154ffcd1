// Learning-rate schedules, stepped once per epoch: cosine annealing, step decay, and a
// constant warm-up in front of another schedule (the CoOp / GraphAdapter recipe).
//
// Contract shared by all schedules: constructing one sets the optimizer's lr for epoch 0;
// each step() advances one epoch and sets the lr for it. So the loop is
//   for (epoch = 0; epoch < E; ++epoch) { train one epoch at opt.lr(); sched.step(); }
// Every schedule is a closed form of the epoch (no dependence on the lr it finds in the
// optimizer), so set_epoch() can resume anywhere.
#pragma once
#include <cmath>
#include <memory>

#include "optim.hpp"

namespace ga::nn {

/// Base of the schedules. Holds the optimizer by reference: it must outlive the schedule.
/// The base lr is the optimizer's lr when the schedule is constructed.
class LRScheduler {
 public:
  explicit LRScheduler(Optimizer& opt) : opt_(opt), base_lr_(opt.lr()) {}
  virtual ~LRScheduler() = default;

  /// The lr of `epoch` (>= 0).
  virtual double lr_at(int64_t epoch) const = 0;
  /// Moves to `epoch` and sets its lr.
  virtual void set_epoch(int64_t epoch) {
    GA_CHECK(epoch >= 0, ValueError, "LRScheduler: negative epoch ", epoch);
    epoch_ = epoch;
    opt_.set_lr(lr_at(epoch));
  }
  /// Advances one epoch. Call once at the end of each epoch.
  void step() { set_epoch(epoch_ + 1); }

  int64_t epoch() const { return epoch_; }
  double base_lr() const { return base_lr_; }
  double last_lr() const { return opt_.lr(); }
  Optimizer& optimizer() const { return opt_; }

 protected:
  Optimizer& opt_;
  double base_lr_;
  int64_t epoch_ = 0;
};

/// torch.optim.lr_scheduler.CosineAnnealingLR in its closed form:
///   lr(e) = eta_min + (base_lr - eta_min) * (1 + cos(pi * e / T_max)) / 2
/// (so lr(0) = base_lr, lr(T_max) = eta_min). Requires T_max > 0.
class CosineAnnealingLR : public LRScheduler {
 public:
  CosineAnnealingLR(Optimizer& opt, int64_t T_max, double eta_min = 0.0)
      : LRScheduler(opt), T_max_(T_max), eta_min_(eta_min) {
    GA_CHECK(T_max > 0, ValueError, "CosineAnnealingLR: T_max must be positive, got ", T_max);
    set_epoch(0);
  }
  double lr_at(int64_t epoch) const override {
    const double pi = 3.14159265358979323846;
    return eta_min_ + (base_lr_ - eta_min_) * (1.0 + std::cos(pi * double(epoch) / double(T_max_))) / 2.0;
  }

 private:
  int64_t T_max_;
  double eta_min_;
};

/// torch.optim.lr_scheduler.StepLR: lr(e) = base_lr * gamma^floor(e / step_size).
/// Requires step_size > 0.
class StepLR : public LRScheduler {
 public:
  StepLR(Optimizer& opt, int64_t step_size, double gamma = 0.1)
      : LRScheduler(opt), step_size_(step_size), gamma_(gamma) {
    GA_CHECK(step_size > 0, ValueError, "StepLR: step_size must be positive, got ", step_size);
    set_epoch(0);
  }
  double lr_at(int64_t epoch) const override {
    return base_lr_ * std::pow(gamma_, double(epoch / step_size_));
  }

 private:
  int64_t step_size_;
  double gamma_;
};

/// Constant warm-up (CoOp's ConstantWarmupScheduler): epochs 0 .. warmup_epochs-1 run at
/// warmup_lr; from then on the wrapped schedule runs from its own epoch 0:
///   lr(e) = e < W ? warmup_lr : successor.lr_at(e - W)
/// With W = 1, warmup_lr = 1e-5 and a CosineAnnealingLR(opt, E) successor built on an
/// optimizer at lr0: epoch 0 runs at 1e-5, epoch e >= 1 at lr0 (1 + cos(pi (e-1) / E)) / 2.
///
/// Build the successor first, on the same optimizer (it records lr0 as its base), then
/// the wrapper, and step only the wrapper: it keeps the successor's epoch in step.
class ConstantWarmupLR : public LRScheduler {
 public:
  ConstantWarmupLR(Optimizer& opt, std::shared_ptr<LRScheduler> successor, int64_t warmup_epochs,
                   double warmup_lr)
      : LRScheduler(opt), successor_(std::move(successor)), warmup_epochs_(warmup_epochs), warmup_lr_(warmup_lr) {
    GA_CHECK(successor_ != nullptr, ValueError, "ConstantWarmupLR: null successor schedule");
    GA_CHECK(&successor_->optimizer() == &opt, ValueError,
             "ConstantWarmupLR: the successor schedule drives a different optimizer");
    GA_CHECK(warmup_epochs >= 0, ValueError, "ConstantWarmupLR: negative warmup_epochs ", warmup_epochs);
    GA_CHECK(warmup_lr >= 0.0, ValueError, "ConstantWarmupLR: negative warmup_lr ", warmup_lr);
    set_epoch(0);
  }
  double lr_at(int64_t epoch) const override {
    return epoch < warmup_epochs_ ? warmup_lr_ : successor_->lr_at(epoch - warmup_epochs_);
  }
  void set_epoch(int64_t epoch) override {
    successor_->set_epoch(epoch < warmup_epochs_ ? 0 : epoch - warmup_epochs_);
    LRScheduler::set_epoch(epoch);  // last, so the warm-up lr wins during warm-up
  }
  const std::shared_ptr<LRScheduler>& successor() const { return successor_; }

 private:
  std::shared_ptr<LRScheduler> successor_;
  int64_t warmup_epochs_;
  double warmup_lr_;
};

}  // namespace ga::nn
