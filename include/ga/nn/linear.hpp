// Linear (fully connected) layer: y = x W^T + b, with PyTorch's parameter names and
// default initialisation, so checkpoints load by name.
#pragma once
#include <cmath>

#include "init.hpp"
#include "module.hpp"

namespace ga::nn {

/// x [..., in_features] -> [..., out_features]. Parameters: weight [out, in] and, when
/// `bias`, bias [out]. Initialised as torch.nn.Linear: weight Kaiming-uniform with
/// a = sqrt(5) (bound 1/sqrt(in)), bias uniform in +-1/sqrt(in).
class Linear : public Module {
 public:
  Linear(int64_t in_features, int64_t out_features, bool bias = true)
      : in_features(in_features), out_features(out_features) {
    GA_CHECK(in_features >= 0 && out_features >= 0, ValueError, "Linear: negative size (in ", in_features,
             ", out ", out_features, ")");
    weight = register_parameter("weight", empty({out_features, in_features}));
    if (bias) this->bias = register_parameter("bias", empty({out_features}));
    reset_parameters();
  }

  /// Redraws the parameters from `gen` (weight first, then bias).
  void reset_parameters(Generator& gen = default_generator()) {
    if (in_features > 0) init::kaiming_uniform_(weight, std::sqrt(5.0), init::FanMode::FanIn,
                                                init::Nonlinearity::LeakyReLU, gen);
    if (bias.defined()) {
      const double bound = in_features > 0 ? 1.0 / std::sqrt(double(in_features)) : 0.0;
      init::uniform_(bias, -bound, bound, gen);
    }
  }

  Tensor forward(const Tensor& x) override { return linear(x, weight, bias); }

  int64_t in_features, out_features;
  Tensor weight, bias;  // bias undefined when built without one
};

/// Returns its input: a placeholder where an architecture has an optional layer.
class Identity : public Module {
 public:
  Tensor forward(const Tensor& x) override { return x; }
};

}  // namespace ga::nn
