// Initialisers: fill a tensor in place with PyTorch's schemes (uniform, normal, Kaiming,
// Xavier), drawing from an explicit Generator so that a seed reproduces a model. Values
// are drawn in row-major order on the host, so they are the same on every device.
#pragma once
#include <cmath>
#include <string>

#include "../tensor.hpp"

namespace ga::nn::init {

/// Which fan Kaiming scales by: fan_in keeps the forward activations' variance,
/// fan_out the backward gradients'.
enum class FanMode { FanIn, FanOut };
/// The nonlinearity that follows the layer, for the recommended gain.
enum class Nonlinearity { Linear, Conv, Sigmoid, Tanh, ReLU, LeakyReLU, SELU };

/// torch.nn.init.calculate_gain: 1 for linear/conv/sigmoid, 5/3 for tanh, sqrt(2) for
/// ReLU, sqrt(2 / (1 + slope^2)) for leaky ReLU (`param` is the slope), 3/4 for SELU.
inline double calculate_gain(Nonlinearity nl, double param = 0.01) {
  switch (nl) {
    case Nonlinearity::Linear:
    case Nonlinearity::Conv:
    case Nonlinearity::Sigmoid: return 1.0;
    case Nonlinearity::Tanh: return 5.0 / 3.0;
    case Nonlinearity::ReLU: return std::sqrt(2.0);
    case Nonlinearity::LeakyReLU: return std::sqrt(2.0 / (1.0 + param * param));
    case Nonlinearity::SELU: return 0.75;
  }
  return 1.0;
}

/// (fan_in, fan_out) as PyTorch computes them: a weight [out, in, k...] has fan_in =
/// in * prod(k) and fan_out = out * prod(k). Requires at least 2 dims (ValueError).
inline std::pair<int64_t, int64_t> calculate_fan_in_and_fan_out(const Tensor& t) {
  GA_CHECK(t.dim() >= 2, ValueError, "init: fan in and fan out need a tensor with at least 2 dims, got ",
           shape_str(t.shape()));
  int64_t receptive = 1;
  for (int64_t d = 2; d < t.dim(); ++d) receptive *= t.size(d);
  return {t.size(1) * receptive, t.size(0) * receptive};
}

namespace detail {
/// Copies freshly drawn values into t without recording (t may be a parameter).
inline Tensor assign(Tensor t, const Tensor& values) {
  NoGradGuard no_grad;
  t.copy_(values);
  return t;
}
inline void check_target(const char* op, const Tensor& t) {
  GA_CHECK(t.defined(), ValueError, "init.", op, ": undefined tensor");
  GA_CHECK(is_floating(t.dtype()), DTypeError, "init.", op, ": tensor must be floating, got ", dtype_name(t.dtype()));
}
inline int64_t fan(const Tensor& t, FanMode mode) {
  const auto f = calculate_fan_in_and_fan_out(t);
  return mode == FanMode::FanIn ? f.first : f.second;
}
}  // namespace detail

/// Uniform in [a, b). Returns t (the same tensor, now filled).
inline Tensor uniform_(Tensor t, double a = 0.0, double b = 1.0, Generator& gen = default_generator()) {
  detail::check_target("uniform_", t);
  GA_CHECK(a <= b, ValueError, "init.uniform_: lower bound ", a, " above upper bound ", b);
  return detail::assign(t, rand(t.shape(), gen, DType::f64, a, b));
}

/// Normal(mean, std^2). Requires std >= 0.
inline Tensor normal_(Tensor t, double mean = 0.0, double std = 1.0, Generator& gen = default_generator()) {
  detail::check_target("normal_", t);
  GA_CHECK(std >= 0.0, ValueError, "init.normal_: std ", std, " is negative");
  return detail::assign(t, randn(t.shape(), gen, DType::f64, mean, std));
}

inline Tensor constant_(Tensor t, double value) {
  detail::check_target("constant_", t);
  NoGradGuard no_grad;
  t.fill_(value);
  return t;
}
inline Tensor zeros_(Tensor t) { return constant_(std::move(t), 0.0); }
inline Tensor ones_(Tensor t) { return constant_(std::move(t), 1.0); }

/// Kaiming (He) uniform: U(-bound, bound) with bound = gain * sqrt(3 / fan), gain from
/// `nonlinearity` with slope `a`. With a = sqrt(5) and LeakyReLU this is PyTorch's
/// default for Linear and Conv weights: bound = 1 / sqrt(fan_in).
inline Tensor kaiming_uniform_(Tensor t, double a = 0.0, FanMode mode = FanMode::FanIn,
                               Nonlinearity nonlinearity = Nonlinearity::LeakyReLU,
                               Generator& gen = default_generator()) {
  detail::check_target("kaiming_uniform_", t);
  const int64_t f = detail::fan(t, mode);
  GA_CHECK(f > 0, ValueError, "init.kaiming_uniform_: zero fan for shape ", shape_str(t.shape()));
  const double bound = calculate_gain(nonlinearity, a) * std::sqrt(3.0 / double(f));
  return uniform_(t, -bound, bound, gen);
}

/// Kaiming (He) normal: N(0, std^2) with std = gain / sqrt(fan).
inline Tensor kaiming_normal_(Tensor t, double a = 0.0, FanMode mode = FanMode::FanIn,
                              Nonlinearity nonlinearity = Nonlinearity::LeakyReLU,
                              Generator& gen = default_generator()) {
  detail::check_target("kaiming_normal_", t);
  const int64_t f = detail::fan(t, mode);
  GA_CHECK(f > 0, ValueError, "init.kaiming_normal_: zero fan for shape ", shape_str(t.shape()));
  return normal_(t, 0.0, calculate_gain(nonlinearity, a) / std::sqrt(double(f)), gen);
}

/// Xavier (Glorot) uniform: U(-a, a) with a = gain * sqrt(6 / (fan_in + fan_out)).
inline Tensor xavier_uniform_(Tensor t, double gain = 1.0, Generator& gen = default_generator()) {
  detail::check_target("xavier_uniform_", t);
  const auto f = calculate_fan_in_and_fan_out(t);
  GA_CHECK(f.first + f.second > 0, ValueError, "init.xavier_uniform_: zero fans for shape ", shape_str(t.shape()));
  const double a = gain * std::sqrt(6.0 / double(f.first + f.second));
  return uniform_(t, -a, a, gen);
}

/// Xavier (Glorot) normal: N(0, std^2) with std = gain * sqrt(2 / (fan_in + fan_out)).
inline Tensor xavier_normal_(Tensor t, double gain = 1.0, Generator& gen = default_generator()) {
  detail::check_target("xavier_normal_", t);
  const auto f = calculate_fan_in_and_fan_out(t);
  GA_CHECK(f.first + f.second > 0, ValueError, "init.xavier_normal_: zero fans for shape ", shape_str(t.shape()));
  return normal_(t, 0.0, gain * std::sqrt(2.0 / double(f.first + f.second)), gen);
}

}  // namespace ga::nn::init
