// gradcheck: compares the gradients autograd computes for a function with central
// finite differences in f64. Public, so users can check their own compositions.
#pragma once
#include <cmath>
#include <functional>
#include <string>
#include <vector>

#include "engine.hpp"

namespace ga {

struct GradcheckResult {
  bool ok = true;
  double max_abs_error = 0;  // largest |analytic - numeric| over all checked elements
  std::string message;       // the first mismatch: which input, which element, both values
};

/// Checks d/d inputs of <u, fn(inputs)> for a fixed random u against central differences
/// with step `eps`; an element passes when |a - n| <= atol + rtol * |n|.
/// Requires: inputs on the CPU; fn deterministic and differentiable at the inputs.
/// Floating inputs are converted to f64 copies (the caller's tensors are untouched); those
/// selected by `wrt` (default: all floating inputs) require grad and are checked. Other
/// inputs (indices, masks) are passed through as they are.
inline GradcheckResult gradcheck(const std::function<Tensor(const std::vector<Tensor>&)>& fn,
                                 const std::vector<Tensor>& inputs, double eps = 1e-6, double atol = 1e-6,
                                 double rtol = 1e-4, std::vector<bool> wrt = {}, uint64_t seed = 7) {
  std::vector<Tensor> xs;
  if (wrt.empty()) wrt.assign(inputs.size(), true);
  GA_CHECK(wrt.size() == inputs.size(), ValueError, "gradcheck: wrt has ", wrt.size(), " flags for ",
           inputs.size(), " inputs");
  for (size_t k = 0; k < inputs.size(); ++k) {
    const Tensor& t = inputs[k];
    GA_CHECK(t.device().is_cpu(), DeviceError, "gradcheck: inputs must be on the CPU");
    if (!is_floating(t.dtype())) {
      wrt[k] = false;
      xs.push_back(t);
      continue;
    }
    Tensor c = t.detach().to(DType::f64).clone();
    if (wrt[k]) c.requires_grad_(true);
    xs.push_back(c);
  }
  Tensor y = fn(xs);
  GA_CHECK(y.dtype() == DType::f64, DTypeError, "gradcheck: fn returned ", dtype_name(y.dtype()),
           "; it must keep its inputs' f64");
  Generator gen(seed);
  Tensor u = randn(y.shape(), gen, DType::f64);
  if (y.requires_grad()) y.backward(u);
  auto project = [&](const std::vector<Tensor>& in) {
    NoGradGuard ng;
    Tensor out = fn(in);
    const std::vector<double> a = out.to_vector<double>(), b = u.to_vector<double>();
    double s = 0;
    for (size_t i = 0; i < a.size(); ++i) s += a[i] * b[i];
    return s;
  };
  GradcheckResult r;
  for (size_t k = 0; k < xs.size(); ++k) {
    if (!wrt[k]) continue;
    const Tensor grad = xs[k].grad();
    const std::vector<double> analytic =
        grad.defined() ? grad.to_vector<double>() : std::vector<double>(static_cast<size_t>(xs[k].numel()), 0.0);
    double* p = xs[k].data_ptr<double>();
    for (int64_t j = 0; j < xs[k].numel(); ++j) {
      const double orig = p[j];
      p[j] = orig + eps;
      const double fp = project(xs);
      p[j] = orig - eps;
      const double fm = project(xs);
      p[j] = orig;
      const double numeric = (fp - fm) / (2 * eps);
      const double err = std::abs(analytic[j] - numeric);
      r.max_abs_error = std::max(r.max_abs_error, err);
      if (!(err <= atol + rtol * std::abs(numeric)) && r.ok) {
        r.ok = false;
        r.message = cat("input ", k, " ", shape_str(xs[k].shape()), " element ", j, ": autograd ", analytic[j],
                        ", finite differences ", numeric);
      }
    }
  }
  return r;
}

}  // namespace ga
