// Gradient clipping by global norm (torch.nn.utils.clip_grad_norm_), for keeping a
// training step bounded when a batch produces an outsized gradient.
#pragma once
#include <algorithm>
#include <cmath>
#include <vector>

#include "../tensor.hpp"

namespace ga::nn {

/// Computes the norm of all gradients together, as if concatenated into one vector
/// (norm_type p > 0, or INFINITY for the largest magnitude), in double precision. When
/// max_norm / (total + 1e-6) < 1, scales every gradient in place by that factor.
/// Parameters without a gradient are skipped. Returns the total norm before clipping
/// (0 when no parameter has a gradient).
inline double clip_grad_norm_(const std::vector<Tensor>& params, double max_norm, double norm_type = 2.0) {
  GA_CHECK(norm_type > 0.0, ValueError, "clip_grad_norm_: norm_type must be positive or INFINITY, got ",
           norm_type);
  GA_CHECK(max_norm >= 0.0, ValueError, "clip_grad_norm_: max_norm must be >= 0, got ", max_norm);
  NoGradGuard no_grad;
  const bool inf = std::isinf(norm_type);
  double acc = 0.0;
  bool any = false;
  for (const Tensor& p : params) {
    const Tensor g = p.defined() ? p.grad() : Tensor();
    if (!g.defined() || g.numel() == 0) continue;
    any = true;
    const Tensor a = abs(g.to(DType::f64));
    if (inf) acc = std::max(acc, max(a).item<double>());
    else if (norm_type == 2.0) acc += sum(mul(a, a)).item<double>();
    else acc += sum(pow(a, norm_type)).item<double>();
  }
  if (!any) return 0.0;
  const double total = inf ? acc : std::pow(acc, 1.0 / norm_type);
  const double scale = max_norm / (total + 1e-6);
  if (scale < 1.0) {
    for (const Tensor& p : params) {
      if (!p.defined()) continue;
      Tensor g = p.grad();
      if (!g.defined()) continue;
      if (g.is_contiguous()) mul_(g, scale);
      else Tensor(p).set_grad(g * scale);
    }
  }
  return total;
}

}  // namespace ga::nn
