// CLIP image preprocessing with the exact arithmetic of OpenAI's pipeline (clip.py's
// _transform: torchvision Resize(R, BICUBIC) -> CenterCrop(R) -> convert("RGB") ->
// ToTensor -> Normalize on a PIL image): PIL's resize for each image mode, torchvision's
// crop offsets, PIL's RGB conversion, float32 normalisation. Equal decoded images in,
// equal uint8 / float32 values out.
//
// Why resize before converting to RGB: that is clip.py's order, and PIL resizes each mode
// its own way: P and "1" with nearest neighbour whatever filter is asked, RGBA and LA
// premultiplied by alpha (so the colour of transparent pixels does not bleed), I in
// 32-bit integers. The project's CLIP notes (clip.md section 5) convert first, a
// simplification: the two orders agree for RGB and L images only, and differ by up to ~4
// after normalisation on palette and alpha images. We follow clip.py: open_image keeps
// PIL's mode, preprocess_clip(PilImage) resizes and crops in it, then converts. The Image
// (RGB) overloads below are the convert-first pipeline, exact for images PIL opens as RGB
// or L.
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
/// the normalised double weights (ksize per output, zero beyond the tap count; PIL's
/// weights for 32-bit modes) and the same rounded to fixed point (for 8-bit modes).
struct ResampleTaps {
  int ksize = 0;
  std::vector<int> first;
  std::vector<int> count;
  std::vector<double> coeffs;
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
  t.coeffs.assign(size_t(out_size) * size_t(t.ksize), 0.0);
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
    double* coeff = &t.coeffs[size_t(i) * size_t(t.ksize)];
    int32_t* out = &t.weights[size_t(i) * size_t(t.ksize)];
    for (int k = 0; k < n; ++k) {
      const double v = total != 0.0 ? w[size_t(k)] / total : w[size_t(k)];
      coeff[k] = v;
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

/// PIL's bicubic resampling of 8-bit samples (`ch` interleaved bands, each resampled on
/// its own): a horizontal pass, rounded and clamped to uint8, then a vertical pass,
/// rounded and clamped. An axis whose size does not change is not resampled at all (PIL
/// skips that pass). Requires w, h, out_w, out_h >= 1.
inline std::vector<uint8_t> resample_u8(const uint8_t* src, int w, int h, int ch, int out_w, int out_h) {
  if (out_w == w && out_h == h) return std::vector<uint8_t>(src, src + size_t(w) * size_t(h) * size_t(ch));
  std::vector<uint8_t> horizontal;
  const uint8_t* cur = src;  // the input of the vertical pass
  if (out_w != w) {
    const ResampleTaps taps = resample_taps(w, out_w);
    std::vector<uint8_t> next(size_t(out_w) * size_t(h) * size_t(ch));
#pragma omp parallel for schedule(static) if (int64_t(out_w) * h > 65536)
    for (int y = 0; y < h; ++y) {
      const uint8_t* row = src + size_t(y) * size_t(w) * size_t(ch);
      uint8_t* dst = &next[size_t(y) * size_t(out_w) * size_t(ch)];
      for (int x = 0; x < out_w; ++x) {
        const int32_t* wt = &taps.weights[size_t(x) * size_t(taps.ksize)];
        const uint8_t* in = row + size_t(taps.first[size_t(x)]) * size_t(ch);
        for (int c = 0; c < ch; ++c) {
          int64_t acc = 0;
          for (int k = 0; k < taps.count[size_t(x)]; ++k)
            acc += int64_t(in[size_t(k) * size_t(ch) + size_t(c)]) * wt[k];
          dst[size_t(x) * size_t(ch) + size_t(c)] = clamp_fixed(acc);
        }
      }
    }
    if (out_h == h) return next;
    horizontal = std::move(next);
    cur = horizontal.data();
  }
  {
    const ResampleTaps taps = resample_taps(h, out_h);
    const size_t stride = size_t(out_w) * size_t(ch);
    std::vector<uint8_t> next(size_t(out_h) * stride);
#pragma omp parallel for schedule(static) if (int64_t(out_h) * out_w > 65536)
    for (int y = 0; y < out_h; ++y) {
      const int32_t* wt = &taps.weights[size_t(y) * size_t(taps.ksize)];
      const uint8_t* in = cur + size_t(taps.first[size_t(y)]) * stride;
      uint8_t* dst = &next[size_t(y) * stride];
      for (size_t i = 0; i < stride; ++i) {
        int64_t acc = 0;
        for (int k = 0; k < taps.count[size_t(y)]; ++k) acc += int64_t(in[size_t(k) * stride + i]) * wt[k];
        dst[i] = clamp_fixed(acc);
      }
    }
    return next;
  }
}

/// PIL's rounding of a double sum to a 32-bit sample: half away from zero, by adding or
/// subtracting one half and truncating (C's cast).
inline int32_t round_half_away(double v) { return int32_t(v >= 0.0 ? v + 0.5 : v - 0.5); }

/// PIL's bicubic resampling of mode I (32-bit integer) samples: as resample_u8, but the
/// sums use the double weights and each pass rounds to an integer without clamping.
inline std::vector<int32_t> resample_i32(const int32_t* src, int w, int h, int out_w, int out_h) {
  if (out_w == w && out_h == h) return std::vector<int32_t>(src, src + size_t(w) * size_t(h));
  std::vector<int32_t> horizontal;
  const int32_t* cur = src;  // the input of the vertical pass
  if (out_w != w) {
    const ResampleTaps taps = resample_taps(w, out_w);
    std::vector<int32_t> next(size_t(out_w) * size_t(h));
    for (int y = 0; y < h; ++y) {
      const int32_t* row = src + size_t(y) * size_t(w);
      for (int x = 0; x < out_w; ++x) {
        const double* wt = &taps.coeffs[size_t(x) * size_t(taps.ksize)];
        const int32_t* in = row + taps.first[size_t(x)];
        double ss = 0.0;
        for (int k = 0; k < taps.count[size_t(x)]; ++k) ss += double(in[k]) * wt[k];
        next[size_t(y) * size_t(out_w) + size_t(x)] = round_half_away(ss);
      }
    }
    if (out_h == h) return next;
    horizontal = std::move(next);
    cur = horizontal.data();
  }
  {
    const ResampleTaps taps = resample_taps(h, out_h);
    std::vector<int32_t> next(size_t(out_h) * size_t(out_w));
    for (int y = 0; y < out_h; ++y) {
      const double* wt = &taps.coeffs[size_t(y) * size_t(taps.ksize)];
      const int32_t* in = cur + size_t(taps.first[size_t(y)]) * size_t(out_w);
      for (int x = 0; x < out_w; ++x) {
        double ss = 0.0;
        for (int k = 0; k < taps.count[size_t(y)]; ++k) ss += double(in[size_t(k) * size_t(out_w) + size_t(x)]) * wt[k];
        next[size_t(y) * size_t(out_w) + size_t(x)] = round_half_away(ss);
      }
    }
    return next;
  }
}

/// The source index of each output index along one axis under PIL's nearest-neighbour
/// scaling: the source position starts at scale / 2 and advances by scale per output
/// pixel, accumulated in double (not (i + 0.5) * scale, which can round differently), then
/// truncated. PIL leaves an output pixel whose position falls past the image at 0; with
/// double accumulation that needs an axis of ~10^7 pixels, so the index is clamped instead.
inline std::vector<int> nearest_indices(int in_size, int out_size) {
  const double scale = double(in_size) / double(out_size);
  std::vector<int> idx(static_cast<size_t>(out_size));
  double pos = scale * 0.5;
  for (int i = 0; i < out_size; ++i) {
    idx[size_t(i)] = std::min(int(pos), in_size - 1);
    pos += scale;
  }
  return idx;
}

/// PIL's nearest-neighbour resize of `ch`-byte pixels (modes P and 1).
inline std::vector<uint8_t> resize_nearest(const uint8_t* src, int w, int h, int ch, int out_w, int out_h) {
  const std::vector<int> xs = nearest_indices(w, out_w), ys = nearest_indices(h, out_h);
  std::vector<uint8_t> out(size_t(out_w) * size_t(out_h) * size_t(ch));
  for (int y = 0; y < out_h; ++y) {
    const uint8_t* row = src + size_t(ys[size_t(y)]) * size_t(w) * size_t(ch);
    uint8_t* dst = &out[size_t(y) * size_t(out_w) * size_t(ch)];
    for (int x = 0; x < out_w; ++x)
      std::copy_n(row + size_t(xs[size_t(x)]) * size_t(ch), ch, dst + size_t(x) * size_t(ch));
  }
  return out;
}

/// PIL's RGBA -> RGBa / LA -> La: each colour band c becomes c * alpha / 255, rounded by
/// PIL's exact integer formula ((t >> 8) + t) >> 8 with t = c * alpha + 128. Alpha is
/// the last of `bands` bands and is kept.
inline void premultiply(std::vector<uint8_t>& px, int bands) {
  for (size_t i = 0; i + size_t(bands) <= px.size(); i += size_t(bands)) {
    const uint32_t alpha = px[i + size_t(bands) - 1];
    for (int c = 0; c + 1 < bands; ++c) {
      const uint32_t t = uint32_t(px[i + size_t(c)]) * alpha + 128;
      px[i + size_t(c)] = uint8_t(((t >> 8) + t) >> 8);
    }
  }
}

/// PIL's RGBa -> RGBA / La -> LA: colour bands become min(255, 255 * c / alpha) with
/// integer (truncating) division; alpha 0 and 255 leave the colour as it is.
inline void unpremultiply(std::vector<uint8_t>& px, int bands) {
  for (size_t i = 0; i + size_t(bands) <= px.size(); i += size_t(bands)) {
    const uint32_t alpha = px[i + size_t(bands) - 1];
    if (alpha == 0 || alpha == 255) continue;
    for (int c = 0; c + 1 < bands; ++c)
      px[i + size_t(c)] = uint8_t(std::min<uint32_t>(255, 255 * uint32_t(px[i + size_t(c)]) / alpha));
  }
}

/// torchvision's `Resize(size)` output size for an int size: the shorter side becomes
/// `size`, the longer `int(size * long / short)` (truncated). Returns {width, height}.
inline std::array<int, 2> shorter_side_size(int width, int height, int size, const char* who) {
  GA_CHECK(size >= 1, ValueError, who, ": size ", size, " must be at least 1");
  GA_CHECK(width >= 1 && height >= 1, ValueError, who, ": empty input image ", width, "x", height);
  const bool wide = width > height;
  const int shorter = wide ? height : width;
  const int longer = wide ? width : height;
  // Python's int * int / int is a correctly rounded true division: the same double
  // here, as both operands are exact in double.
  const double long_exact = double(int64_t(size) * int64_t(longer)) / double(shorter);
  GA_CHECK(long_exact < double(INT32_MAX), ValueError, who, ": ", width, "x", height, " to shorter side ", size,
           " is too large");
  const int new_long = int(long_exact);
  return wide ? std::array<int, 2>{new_long, size} : std::array<int, 2>{size, new_long};
}

/// Python's round(n / 2) for an integer n >= 0 (half to even).
inline int round_half_even_half(int n) {
  const int q = n / 2;
  return (n % 2 == 0) ? q : (q % 2 == 0 ? q : q + 1);
}

/// torchvision CenterCrop's window origin {left, top}, checking 1 <= size <= both sides.
inline std::array<int, 2> center_crop_origin(int width, int height, int size, const char* who) {
  GA_CHECK(size >= 1, ValueError, who, ": size ", size, " must be at least 1");
  GA_CHECK(size <= width && size <= height, ValueError, who, ": size ", size, " exceeds image ", width, "x", height);
  return {round_half_even_half(width - size), round_half_even_half(height - size)};
}

/// The size x size window at (left, top) of a row-major image of `ch`-sample pixels.
template <typename T>
std::vector<T> crop_window(const std::vector<T>& src, int width, int ch, int left, int top, int size) {
  const size_t row = size_t(size) * size_t(ch);
  std::vector<T> out(row * size_t(size));
  for (int y = 0; y < size; ++y) {
    const T* from = &src[(size_t(top + y) * size_t(width) + size_t(left)) * size_t(ch)];
    std::copy_n(from, row, out.begin() + std::ptrdiff_t(size_t(y) * row));
  }
  return out;
}

}  // namespace detail

/// PIL's `Image.resize((out_w, out_h), Image.BICUBIC)` on an 8-bit image in mode RGB or L
/// (any channel count is accepted; each band is resampled on its own): a horizontal pass,
/// rounded and clamped to uint8, then a vertical pass, rounded and clamped. An axis whose
/// size does not change is not resampled at all (PIL skips that pass).
/// Requires out_w, out_h >= 1 and a non-empty image (ValueError otherwise).
inline Image resize_bicubic(const Image& in, int out_w, int out_h) {
  GA_CHECK(out_w >= 1 && out_h >= 1, ValueError, "resize_bicubic: output size ", out_w, "x", out_h,
           " must be at least 1x1");
  GA_CHECK(in.width >= 1 && in.height >= 1 && in.channels >= 1, ValueError, "resize_bicubic: empty input image ",
           in.width, "x", in.height);
  Image out;
  out.width = out_w;
  out.height = out_h;
  out.channels = in.channels;
  out.pixels = detail::resample_u8(in.pixels.data(), in.width, in.height, in.channels, out_w, out_h);
  return out;
}

/// PIL's `Image.resize((out_w, out_h), Image.BICUBIC)` in the image's own mode, with the
/// rules PIL applies per mode:
///  - the same size: an unchanged copy (no premultiplication round trip either);
///  - P and 1: nearest neighbour (PIL ignores the filter for them; detail::nearest_indices);
///  - L and RGB: bicubic on uint8 (resize_bicubic);
///  - LA and RGBA: premultiplied: converted to La / RGBa, resized bicubically, converted
///    back (detail::premultiply, detail::unpremultiply), so the colour under fully
///    transparent pixels contributes nothing;
///  - I: bicubic on 32-bit integers with double weights, no clamping (detail::resample_i32).
/// We follow Debian's Pillow 9.4. Newer Pillow (12.3 and 13.0 checked) opens 16-bit grey
/// PNG as "I;16" and resamples it in 16 bits, storing each pass's result v as low byte
/// clamp(v % 256) and high byte clamp(v >> 8), so a first pass that overshoots below 0 or
/// above 65535 feeds the second pass other values than I does; the results differ near
/// dark pixels beside bright ones (tests/fixtures/gen_image_fixtures.py measures it).
/// Requires out_w, out_h >= 1 and a non-empty image (ValueError otherwise).
inline PilImage resize_bicubic(const PilImage& in, int out_w, int out_h) {
  GA_CHECK(out_w >= 1 && out_h >= 1, ValueError, "resize_bicubic: output size ", out_w, "x", out_h,
           " must be at least 1x1");
  GA_CHECK(in.width >= 1 && in.height >= 1, ValueError, "resize_bicubic: empty input image ", in.width, "x", in.height);
  if (out_w == in.width && out_h == in.height) return in;
  PilImage out;
  out.mode = in.mode;
  out.width = out_w;
  out.height = out_h;
  const int bands = pil_bands(in.mode);
  switch (in.mode) {
    case PilMode::P:
    case PilMode::bilevel:
      out.pixels = detail::resize_nearest(in.pixels.data(), in.width, in.height, bands, out_w, out_h);
      break;
    case PilMode::I:
      out.values = detail::resample_i32(in.values.data(), in.width, in.height, out_w, out_h);
      break;
    case PilMode::LA:
    case PilMode::RGBA: {
      std::vector<uint8_t> premultiplied = in.pixels;
      detail::premultiply(premultiplied, bands);
      out.pixels = detail::resample_u8(premultiplied.data(), in.width, in.height, bands, out_w, out_h);
      detail::unpremultiply(out.pixels, bands);
      break;
    }
    case PilMode::L:
    case PilMode::RGB:
      out.pixels = detail::resample_u8(in.pixels.data(), in.width, in.height, bands, out_w, out_h);
      break;
  }
  return out;
}

/// torchvision `Resize(size)` with an int size on a PIL image: the shorter side becomes
/// `size`, the longer `int(size * long / short)` (truncated), resampled with
/// resize_bicubic. Requires size >= 1 and a non-empty image (ValueError).
inline Image resize_shorter_side(const Image& in, int size) {
  const auto [w, h] = detail::shorter_side_size(in.width, in.height, size, "resize_shorter_side");
  return resize_bicubic(in, w, h);
}

/// resize_shorter_side in the image's own mode (resize_bicubic(PilImage), so P and 1 are
/// resized with nearest neighbour, LA and RGBA premultiplied). Same requirements.
inline PilImage resize_shorter_side(const PilImage& in, int size) {
  const auto [w, h] = detail::shorter_side_size(in.width, in.height, size, "resize_shorter_side");
  return resize_bicubic(in, w, h);
}

/// torchvision `CenterCrop(size)`: the size x size window at offsets
/// round((w - size) / 2), round((h - size) / 2), Python's round (half to even).
/// Requires 1 <= size <= min(width, height) (ValueError; torchvision would zero-pad, which
/// never happens after resize_shorter_side with the same size).
inline Image center_crop(const Image& in, int size) {
  const auto [left, top] = detail::center_crop_origin(in.width, in.height, size, "center_crop");
  Image out;
  out.width = size;
  out.height = size;
  out.channels = in.channels;
  out.pixels = detail::crop_window(in.pixels, in.width, in.channels, left, top, size);
  return out;
}

/// center_crop in the image's own mode (the same window; the mode is kept).
inline PilImage center_crop(const PilImage& in, int size) {
  const auto [left, top] = detail::center_crop_origin(in.width, in.height, size, "center_crop");
  PilImage out;
  out.mode = in.mode;
  out.width = size;
  out.height = size;
  if (in.mode == PilMode::I)
    out.values = detail::crop_window(in.values, in.width, 1, left, top, size);
  else
    out.pixels = detail::crop_window(in.pixels, in.width, pil_bands(in.mode), left, top, size);
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

/// CLIP's preprocessing of one decoded RGB image: resize_shorter_side, center_crop,
/// normalise with CLIP's constants. Returns f32 [3, resolution, resolution]. Exact
/// for images PIL opens as RGB or L; for other modes use the PilImage overload.
/// Requires resolution >= 1 (ValueError).
inline Tensor preprocess_clip(const Image& in, int resolution) {
  GA_CHECK(resolution >= 1, ValueError, "preprocess_clip: resolution ", resolution, " must be at least 1");
  return to_normalized_tensor(center_crop(resize_shorter_side(in, resolution), resolution));
}

/// OpenAI's `_transform(resolution)` on an image opened by open_image, written planar to
/// `out` (3 * resolution * resolution floats): resize_shorter_side and center_crop in the
/// image's own mode, then to_rgb (convert("RGB")), then ToTensor + Normalize with
/// `mean` / `std`. Requires resolution >= 1 and a non-empty image (ValueError).
inline void preprocess_clip_into(const PilImage& in, int resolution, float* out,
                                 const std::array<float, 3>& mean = kClipMean,
                                 const std::array<float, 3>& std = kClipStd) {
  GA_CHECK(resolution >= 1, ValueError, "preprocess_clip: resolution ", resolution, " must be at least 1");
  to_normalized_chw(to_rgb(center_crop(resize_shorter_side(in, resolution), resolution)), out, mean, std);
}

/// preprocess_clip_into a new f32 CPU tensor of shape [3, resolution, resolution].
inline Tensor preprocess_clip(const PilImage& in, int resolution, const std::array<float, 3>& mean = kClipMean,
                              const std::array<float, 3>& std = kClipStd) {
  GA_CHECK(resolution >= 1, ValueError, "preprocess_clip: resolution ", resolution, " must be at least 1");
  Tensor t = empty({3, int64_t(resolution), int64_t(resolution)}, DType::f32, Device::cpu());
  preprocess_clip_into(in, resolution, t.data_ptr<float>(), mean, std);
  return t;
}

}  // namespace ga::io
