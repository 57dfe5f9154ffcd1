// Conv2d: the 2-D convolution layer (groups = 1), PyTorch's parameter names and default
// initialisation, for CLIP's patch embedding and ModifiedResNet.
#pragma once
#include <array>
#include <cmath>

#include "init.hpp"
#include "module.hpp"

namespace ga::nn {

/// x [N, in, H, W] -> [N, out, OH, OW] with OH = (H + 2 pad_h - kh) / stride_h + 1.
/// Parameters weight [out, in, kh, kw] and, when `bias`, bias [out]; initialised as
/// torch.nn.Conv2d: weight Kaiming-uniform a = sqrt(5), bias uniform +-1/sqrt(in kh kw).
class Conv2d : public Module {
 public:
  Conv2d(int64_t in_channels, int64_t out_channels, std::array<int64_t, 2> kernel_size,
         std::array<int64_t, 2> stride = {1, 1}, std::array<int64_t, 2> padding = {0, 0}, bool bias = true)
      : in_channels(in_channels),
        out_channels(out_channels),
        kernel_size(kernel_size),
        stride(stride),
        padding(padding) {
    GA_CHECK(in_channels > 0 && out_channels > 0, ValueError, "Conv2d: channels must be positive (in ",
             in_channels, ", out ", out_channels, ")");
    GA_CHECK(kernel_size[0] > 0 && kernel_size[1] > 0, ValueError, "Conv2d: kernel size must be positive, got ",
             kernel_size[0], "x", kernel_size[1]);
    GA_CHECK(stride[0] > 0 && stride[1] > 0, ValueError, "Conv2d: stride must be positive, got ", stride[0], "x",
             stride[1]);
    GA_CHECK(padding[0] >= 0 && padding[1] >= 0, ValueError, "Conv2d: padding must be >= 0, got ", padding[0],
             "x", padding[1]);
    weight = register_parameter("weight", empty({out_channels, in_channels, kernel_size[0], kernel_size[1]}));
    if (bias) this->bias = register_parameter("bias", empty({out_channels}));
    reset_parameters();
  }
  /// Square kernel, stride and padding.
  Conv2d(int64_t in_channels, int64_t out_channels, int64_t kernel_size, int64_t stride = 1, int64_t padding = 0,
         bool bias = true)
      : Conv2d(in_channels, out_channels, {kernel_size, kernel_size}, {stride, stride}, {padding, padding}, bias) {}

  /// Redraws the parameters from `gen` (weight first, then bias).
  void reset_parameters(Generator& gen = default_generator()) {
    init::kaiming_uniform_(weight, std::sqrt(5.0), init::FanMode::FanIn, init::Nonlinearity::LeakyReLU, gen);
    if (bias.defined()) {
      const double bound = 1.0 / std::sqrt(double(init::calculate_fan_in_and_fan_out(weight).first));
      init::uniform_(bias, -bound, bound, gen);
    }
  }

  Tensor forward(const Tensor& x) override { return conv2d(x, weight, bias, stride, padding); }

  int64_t in_channels, out_channels;
  std::array<int64_t, 2> kernel_size, stride, padding;
  Tensor weight, bias;  // bias undefined when built without one
};

}  // namespace ga::nn
