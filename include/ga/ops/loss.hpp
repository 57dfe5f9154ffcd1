// Classification losses: negative log-likelihood and cross-entropy with PyTorch's
// label smoothing. Compositions of log_softmax, gather and reductions, so their
// gradients come from those ops.
#pragma once
#include <vector>

#include "index.hpp"
#include "nn_ops.hpp"

namespace ga {

/// How a per-sample loss is folded: kept [N], averaged, or summed.
enum class Reduction { None, Mean, Sum };

namespace ops {
GA_REGISTER_OP(nll_loss, "loss")
GA_REGISTER_OP(cross_entropy, "loss")

/// Checks input [N, C] (f32/f64) and target [N] (i32/i64, every value in [0, C)) for `op`.
/// Targets are read on the host: they are few, and gather's own check would name gather
/// rather than the loss and its class count.
inline void check_class_target(const char* op, const Tensor& input, const Tensor& target) {
  check_float(op, input);
  check_index(op, target);
  GA_CHECK(input.dim() == 2, ShapeError, op, ": input must be [N, C], got ", shape_str(input.shape()));
  const int64_t N = input.size(0), C = input.size(1);
  GA_CHECK(target.dim() == 1 && target.size(0) == N, ShapeError, op, ": target ", shape_str(target.shape()),
           " does not match input ", shape_str(input.shape()), " (expects [", N, "])");
  check_same_device(op, input, target);
  const std::vector<int64_t> t = target.to_vector<int64_t>();
  for (int64_t i = 0; i < N; ++i)
    GA_CHECK(t[i] >= 0 && t[i] < C, IndexError, op, ": target ", t[i], " at position ", i,
             " is out of range for ", C, " classes");
}

/// -input[i, target[i]] per sample (targets already checked). Picks with gather, so other
/// classes are never read: -inf there cannot turn into nan.
inline Tensor nll_per_sample(const Tensor& input, const Tensor& target) {
  const int64_t N = input.size(0);
  return neg(gather(input, 1, target.reshape({N, 1}))).reshape({N});
}

inline Tensor reduce_loss(const Tensor& per_sample, Reduction r) {
  switch (r) {
    case Reduction::None: return per_sample;
    case Reduction::Sum: return sum(per_sample);
    case Reduction::Mean: break;
  }
  return mean(per_sample);
}
}  // namespace ops

/// -log_probs[i, target[i]] per sample, then reduced. Requires log_probs [N, C] f32/f64 and
/// target [N] i32/i64 with values in [0, C) (IndexError naming the value and C otherwise).
/// Mean of an empty batch is nan, as in PyTorch. Differentiable in log_probs.
inline Tensor nll_loss(const Tensor& log_probs, const Tensor& target, Reduction reduction = Reduction::Mean) {
  ops::check_class_target("nll_loss", log_probs, target);
  return ops::reduce_loss(ops::nll_per_sample(log_probs, target), reduction);
}

/// Cross-entropy of logits [N, C] against class targets [N], with PyTorch's label
/// smoothing eps in [0, 1] (ValueError otherwise): per sample
/// (1 - eps) * nll(log_softmax) + eps * mean over classes of -log_softmax, then reduced.
/// Same requirements as nll_loss; differentiable in logits.
inline Tensor cross_entropy(const Tensor& logits, const Tensor& target, double label_smoothing = 0.0,
                            Reduction reduction = Reduction::Mean) {
  const char* op = "cross_entropy";
  GA_CHECK(label_smoothing >= 0.0 && label_smoothing <= 1.0, ValueError, op,
           ": label_smoothing must be in [0, 1], got ", label_smoothing);
  ops::check_class_target(op, logits, target);
  Tensor lsm = log_softmax(logits, 1);
  Tensor per = ops::nll_per_sample(lsm, target);
  if (label_smoothing > 0.0) per = add(per * (1.0 - label_smoothing), neg(mean(lsm, {1})) * label_smoothing);
  return ops::reduce_loss(per, reduction);
}

}  // namespace ga
