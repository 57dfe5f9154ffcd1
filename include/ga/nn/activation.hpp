// Activation functions as modules, so that Sequential can chain them. Each is the op of
// the same name in ga:: (see ops/elementwise.hpp); they have no parameters.
#pragma once
#include "module.hpp"

namespace ga::nn {

class ReLU : public Module {
 public:
  Tensor forward(const Tensor& x) override { return relu(x); }
};

/// Exact GELU (the erf form, PyTorch's approximate="none").
class GELU : public Module {
 public:
  Tensor forward(const Tensor& x) override { return gelu(x); }
};

/// CLIP's x * sigmoid(1.702 x).
class QuickGELU : public Module {
 public:
  Tensor forward(const Tensor& x) override { return quick_gelu(x); }
};

class Tanh : public Module {
 public:
  Tensor forward(const Tensor& x) override { return tanh(x); }
};

class Sigmoid : public Module {
 public:
  Tensor forward(const Tensor& x) override { return sigmoid(x); }
};

}  // namespace ga::nn
