// Dropout as a module: active in training mode, the identity after eval().
#pragma once
#include "module.hpp"

namespace ga::nn {

/// In training mode zeroes each element with probability p and scales the rest by
/// 1 / (1 - p), drawing from `gen` when given (it must outlive the module), else from the
/// calling thread's default generator; in eval mode returns x. Requires 0 <= p < 1 (ValueError).
class Dropout : public Module {
 public:
  explicit Dropout(double p = 0.5) : p(p) {
    GA_CHECK(p >= 0.0 && p < 1.0, ValueError, "Dropout: p must be in [0, 1), got ", p);
  }
  Dropout(double p, Generator& gen) : Dropout(p) { gen_ = &gen; }

  Tensor forward(const Tensor& x) override {
    return dropout(x, p, is_training(), gen_ ? *gen_ : default_generator());
  }

  double p;

 private:
  Generator* gen_ = nullptr;
};

}  // namespace ga::nn
