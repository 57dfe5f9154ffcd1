// Normalisation layers: LayerNorm (transformers) and BatchNorm2d in its inference form
// (CLIP's ModifiedResNet ships with frozen running statistics).
#pragma once
#include <initializer_list>

#include "init.hpp"
#include "module.hpp"

namespace ga::nn {

/// Normalises over the trailing `normalized_shape` dims (biased variance, eps inside the
/// square root), then, when `elementwise_affine`, multiplies by weight and adds bias
/// (both of normalized_shape, initialised to ones and zeros).
class LayerNorm : public Module {
 public:
  explicit LayerNorm(Shape normalized_shape, double eps = 1e-5, bool elementwise_affine = true)
      : normalized_shape(std::move(normalized_shape)), eps(eps) {
    GA_CHECK(!this->normalized_shape.empty(), ValueError, "LayerNorm: normalized_shape must have at least one dim");
    check_shape_valid(this->normalized_shape, "LayerNorm");
    if (elementwise_affine) {
      weight = register_parameter("weight", ones(this->normalized_shape));
      bias = register_parameter("bias", zeros(this->normalized_shape));
    }
  }
  explicit LayerNorm(int64_t normalized_size, double eps = 1e-5, bool elementwise_affine = true)
      : LayerNorm(Shape{normalized_size}, eps, elementwise_affine) {}

  Tensor forward(const Tensor& x) override { return layer_norm(x, normalized_shape, weight, bias, eps); }

  Shape normalized_shape;
  double eps;
  Tensor weight, bias;  // undefined without elementwise_affine
};

/// Batch norm over the channels of x [N, C, H, W] with the running statistics: the
/// inference form only. Parameters weight (ones) and bias (zeros) [C]; buffers
/// running_mean (zeros), running_var (ones) [C] and num_batches_tracked (i64 scalar), the
/// names PyTorch checkpoints use. num_batches_tracked may be absent from a checkpoint.
///
/// forward in training mode throws Error: batch statistics are not implemented, so call
/// eval() (on the whole model) before using it.
class BatchNorm2d : public Module {
 public:
  explicit BatchNorm2d(int64_t num_features, double eps = 1e-5) : num_features(num_features), eps(eps) {
    GA_CHECK(num_features > 0, ValueError, "BatchNorm2d: num_features must be positive, got ", num_features);
    weight = register_parameter("weight", ones({num_features}));
    bias = register_parameter("bias", zeros({num_features}));
    running_mean = register_buffer("running_mean", zeros({num_features}));
    running_var = register_buffer("running_var", ones({num_features}));
    num_batches_tracked = register_buffer("num_batches_tracked", zeros({}, DType::i64));
  }

  Tensor forward(const Tensor& x) override {
    GA_CHECK(!is_training(), Error,
             "BatchNorm2d: training-mode batch norm (batch statistics) is not supported; call eval() on the "
             "model to use the running statistics");
    GA_CHECK(x.dim() == 4, ShapeError, "BatchNorm2d: expects a 4-d input [N, C, H, W], got ", shape_str(x.shape()));
    return batch_norm(x, running_mean, running_var, weight, bias, eps);
  }

  int64_t num_features;
  double eps;
  Tensor weight, bias, running_mean, running_var, num_batches_tracked;

 protected:
  bool is_optional_state(const std::string& local_name) const override {
    return local_name == "num_batches_tracked";
  }
};

}  // namespace ga::nn
