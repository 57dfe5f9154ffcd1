// CLIP image preprocessing with the exact arithmetic of the Python pipeline
// (torchvision Resize(R, BICUBIC) -> CenterCrop(R) -> ToTensor -> Normalize on a PIL
// image): PIL's antialiased bicubic resize, torchvision's crop offsets, float32
// normalisation. Equal uint8 pixels in, equal uint8 / float32 values out.
#pragma once
#include <algorithm>
#include <array>
#include <cmath>
#include <cstdint>
#include <vector>

#include "ga/core/error.hpp"
#include "ga/io/image.hpp"
#include "ga/ops/factory.hpp"

namespace ga::io {

/// CLIP's normalisation constants (OpenAI's `clip` package, also open_clip's default).
inline constexpr std::array<float, 3> kClipMean{0.48145466f, 0.4578275f, 0.40821073f};
inline constexpr std::array<float, 3> kClipStd{0.26862954f, 0.26130258f, 0.27577711f};

namespace detail {

// PIL accumulates in 32-bit fixed point: 8 bits of pixel, 2 bits of headroom for the
// negative lobes and overshoot, the rest (22) for the weight's fraction. Rounding the
// weights to this grid is part of PIL's result, so it is reproduced, not improved on.
inline constexpr int kResamplePrecisionBits = 32 - 8 - 2;

/// Keys' cubic convolution kernel with a = -0.5 (PIL's BICUBIC), support [-2, 2].
inline double bicubic_kernel(double x) {
  constexpr double a = -0.5;
  x = std::fabs(x);
  if (x < 1.0) return ((a + 2.0) * x - (a + 3.0)) * x * x + 1.0;
  if (x < 2.0) return (((x - 5.0) * x + 8.0) * x - 4.0) * a;
  return 0.0;
}

/// For each output index along one axis: the first input index, the number of taps,
/// and the fixed-point weights (ksize per output, zero beyond the tap count).
struct ResampleTaps {
  int ksize = 0;
  std::vector<int> first;
  std::vector<int> count;
  std::vector<int32_t> weights;
};

/// PIL's antialiased resampling geometry for in_size -> out_size over the whole axis:
/// output pixel i is centred at (i + 0.5) * scale in input coordinates; when shrinking
/// the kernel is stretched by the scale (so every input pixel contributes: antialias);
/// taps are clipped to the image and the weights renormalised to sum to one, then
/// rounded half away from zero onto the fixed-point grid. The expressions keep PIL's
/// evaluation order, since the double weights are rounded to 22 bits afterwards.
inline ResampleTaps resample_taps(int in_size, int out_size) {
  ResampleTaps t;
  const double scale = double(in_size) / double(out_size);
  const double filter_scale = std::max(scale, 1.0);
  const double support = 2.0 * filter_scale;
  const double inv_filter_scale = 1.0 / filter_scale;
  t.ksize = int(std::ceil(support)) * 2 + 1;
  t.first.resize(size_t(out_size));
  t.count.resize(size_t(out_size));
  t.weights.assign(size_t(out_size) * size_t(t.ksize), 0);
  std::vector<double> w(size_t(t.ksize));
  for (int i = 0; i < out_size; ++i) {
    const double center = (i + 0.5) * scale;
    int lo = int(center - support + 0.5);  // truncation toward zero, as a C cast
    if (lo < 0) lo = 0;
    int hi = int(center + support + 0.5);
    if (hi > in_size) hi = in_size;
    const int n = hi - lo;
    double total = 0.0;
    for (int k = 0; k < n; ++k) {
      w[size_t(k)] = bicubic_kernel((k + lo - center + 0.5) * inv_filter_scale);
      total += w[size_t(k)];
    }
    int32_t* out = &t.weights[size_t(i) * size_t(t.ksize)];
    for (int k = 0; k < n; ++k) {
      const double v = total != 0.0 ? w[size_t(k)] / total : w[size_t(k)];
      const double f = v * double(1 << kResamplePrecisionBits);
      out[k] = int32_t(v < 0.0 ? -0.5 + f : 0.5 + f);
    }
    t.first[size_t(i)] = lo;
    t.count[size_t(i)] = n;
  }
  return t;
}

/// Fixed-point sum -> uint8: add one half, drop the fraction (floor), clamp to 0..255.
inline uint8_t clamp_fixed(int64_t acc) {
  const int64_t v = (acc + (int64_t(1) << (kResamplePrecisionBits - 1))) >> kResamplePrecisionBits;
  return uint8_t(std::clamp<int64_t>(v, 0, 255));
}

}  // namespace detail

/// PIL's `Image.resize((out_w, out_h), Image.BICUBIC)` on an 8-bit image: a horizontal
/// pass, rounded and clamped to uint8, then a vertical pass, rounded and clamped. An
/// axis whose size does not change is not resampled at all (PIL skips that pass).
/// Requires out_w, out_h >= 1 and a non-empty image (ValueError otherwise).
inline Image resize_bicubic(const Image& in, int out_w, int out_h) {
  GA_CHECK(out_w >= 1 && out_h >= 1, ValueError, "resize_bicubic: output size ", out_w, "x", out_h,
           " must be at least 1x1");
  GA_CHECK(in.width >= 1 && in.height >= 1 && in.channels >= 1, ValueError, "resize_bicubic: empty input image ",
           in.width, "x", in.height);
  const int ch = in.channels;
  Image cur = in;
  if (out_w != in.width) {
    const detail::ResampleTaps taps = detail::resample_taps(in.width, out_w);
    Image next;
    next.width = out_w;
    next.height = cur.height;
    next.channels = ch;
    next.pixels.resize(size_t(out_w) * size_t(cur.height) * size_t(ch));
#pragma omp parallel for schedule(static) if (int64_t(out_w) * cur.height > 65536)
    for (int y = 0; y < cur.height; ++y) {
      const uint8_t* row = &cur.pixels[size_t(y) * size_t(cur.width) * size_t(ch)];
      uint8_t* dst = &next.pixels[size_t(y) * size_t(out_w) * size_t(ch)];
      for (int x = 0; x < out_w; ++x) {
        const int32_t* w = &taps.weights[size_t(x) * size_t(taps.ksize)];
        const uint8_t* src = row + size_t(taps.first[size_t(x)]) * size_t(ch);
        for (int c = 0; c < ch; ++c) {
          int64_t acc = 0;
          for (int k = 0; k < taps.count[size_t(x)]; ++k) acc += int64_t(src[size_t(k) * size_t(ch) + size_t(c)]) * w[k];
          dst[size_t(x) * size_t(ch) + size_t(c)] = detail::clamp_fixed(acc);
        }
      }
    }
    cur = std::move(next);
  }
  if (out_h != in.height) {
    const detail::ResampleTaps taps = detail::resample_taps(in.height, out_h);
    Image next;
    next.width = cur.width;
    next.height = out_h;
    next.channels = ch;
    const size_t stride = size_t(cur.width) * size_t(ch);
    next.pixels.resize(size_t(out_h) * stride);
#pragma omp parallel for schedule(static) if (int64_t(out_h) * cur.width > 65536)
    for (int y = 0; y < out_h; ++y) {
      const int32_t* w = &taps.weights[size_t(y) * size_t(taps.ksize)];
      const uint8_t* src = &cur.pixels[size_t(taps.first[size_t(y)]) * stride];
      uint8_t* dst = &next.pixels[size_t(y) * stride];
      for (size_t i = 0; i < stride; ++i) {
        int64_t acc = 0;
        for (int k = 0; k < taps.count[size_t(y)]; ++k) acc += int64_t(src[size_t(k) * stride + i]) * w[k];
        dst[i] = detail::clamp_fixed(acc);
      }
    }
    cur = std::move(next);
  }
  return cur;
}

/// torchvision `Resize(size)` with an int size on a PIL image: the shorter side becomes
/// `size`, the longer `int(size * long / short)` (truncated), resampled with
/// resize_bicubic. Requires size >= 1 (ValueError).
inline Image resize_shorter_side(const Image& in, int size) {
  GA_CHECK(size >= 1, ValueError, "resize_shorter_side: size ", size, " must be at least 1");
  GA_CHECK(in.width >= 1 && in.height >= 1, ValueError, "resize_shorter_side: empty input image ", in.width, "x",
           in.height);
  const bool wide = in.width > in.height;
  const int shorter = wide ? in.height : in.width;
  const int longer = wide ? in.width : in.height;
  // Python's int * int / int is a correctly rounded true division: the same double
  // here, as both operands are exact in double.
  const double long_exact = double(int64_t(size) * int64_t(longer)) / double(shorter);
  GA_CHECK(long_exact < double(INT32_MAX), ValueError, "resize_shorter_side: ", in.width, "x", in.height,
           " to shorter side ", size, " is too large");
  const int new_long = int(long_exact);
  return wide ? resize_bicubic(in, new_long, size) : resize_bicubic(in, size, new_long);
}

/// Python's round(n / 2) for an integer n >= 0 (half to even).
inline int round_half_even_half(int n) {
  const int q = n / 2;
  return (n % 2 == 0) ? q : (q % 2 == 0 ? q : q + 1);
}

/// torchvision `CenterCrop(size)`: the size x size window at offsets
/// round((w - size) / 2), round((h - size) / 2), Python's round (half to even).
/// Requires 1 <= size <= min(width, height) (ValueError; torchvision would zero-pad, which
/// never happens after resize_shorter_side with the same size).
inline Image center_crop(const Image& in, int size) {
  GA_CHECK(size >= 1, ValueError, "center_crop: size ", size, " must be at least 1");
  GA_CHECK(size <= in.width && size <= in.height, ValueError, "center_crop: size ", size, " exceeds image ",
           in.width, "x", in.height);
  const int left = round_half_even_half(in.width - size);
  const int top = round_half_even_half(in.height - size);
  Image out;
  out.width = size;
  out.height = size;
  out.channels = in.channels;
  const size_t row = size_t(size) * size_t(in.channels);
  out.pixels.resize(row * size_t(size));
  for (int y = 0; y < size; ++y) {
    const uint8_t* src = &in.pixels[(size_t(top + y) * size_t(in.width) + size_t(left)) * size_t(in.channels)];
    std::copy_n(src, row, out.pixels.begin() + std::ptrdiff_t(size_t(y) * row));
  }
  return out;
}

/// ToTensor + Normalize in float32, as torchvision computes them: (u8 / 255 - mean) / std,
/// written planar (channel, row, column) to `out`, which must hold 3 * width * height
/// floats. Requires a 3-channel image (ValueError).
inline void to_normalized_chw(const Image& in, float* out, const std::array<float, 3>& mean = kClipMean,
                              const std::array<float, 3>& std = kClipStd) {
  GA_CHECK(in.channels == 3, ValueError, "to_normalized_chw: expected 3 channels, got ", in.channels);
  const size_t plane = size_t(in.width) * size_t(in.height);
  for (int c = 0; c < 3; ++c) {
    float* dst = out + size_t(c) * plane;
    for (size_t i = 0; i < plane; ++i) {
      // Two float32 roundings, like torch: the quotient by 255, then the normalisation.
      const float unit = float(in.pixels[i * 3 + size_t(c)]) / 255.0f;
      dst[i] = (unit - mean[size_t(c)]) / std[size_t(c)];
    }
  }
}

/// to_normalized_chw into a new f32 CPU tensor of shape [3, height, width].
inline Tensor to_normalized_tensor(const Image& in, const std::array<float, 3>& mean = kClipMean,
                                   const std::array<float, 3>& std = kClipStd) {
  GA_CHECK(in.channels == 3, ValueError, "to_normalized_tensor: expected 3 channels, got ", in.channels);
  Tensor t = empty({3, int64_t(in.height), int64_t(in.width)}, DType::f32, Device::cpu());
  to_normalized_chw(in, t.data_ptr<float>(), mean, std);
  return t;
}

/// CLIP's preprocessing of one decoded image: resize_shorter_side, center_crop,
/// normalise with CLIP's constants. Returns f32 [3, resolution, resolution].
/// Requires resolution >= 1 (ValueError).
inline Tensor preprocess_clip(const Image& in, int resolution) {
  GA_CHECK(resolution >= 1, ValueError, "preprocess_clip: resolution ", resolution, " must be at least 1");
  return to_normalized_tensor(center_crop(resize_shorter_side(in, resolution), resolution));
}

}  // namespace ga::io
