// The int8 products (quantize_int8, linear_int8, conv2d_int8) against naive double-precision
// loops that never call the library:
//   - on values that lie exactly on their quantization grid (so quantizing loses nothing),
//     the result must be the exact product up to f32 rounding: this checks the kernel, the
//     weight packing, the zero points and the convolution's windows and padding;
//   - on random values, the error must stay within the bound the documented quantization
//     rule gives (half a step of each factor), recomputed here from that rule;
//   - every kernel this machine runs (AVX512-VNNI, AVX2, the portable one) gives the same bits.
#include <doctest/doctest.h>

#include <cmath>
#include <cstdint>
#include <limits>
#include <random>
#include <string>
#include <vector>

#include <ga/ga.hpp>

namespace {

using ga::Shape;
using ga::Tensor;

Tensor from_values(const std::vector<double>& v, const Shape& shape) {
  std::vector<float> f(v.begin(), v.end());
  return ga::tensor(f, shape);
}

std::vector<double> values_of(const Tensor& t) {
  const Tensor c = t.contiguous();
  const float* p = static_cast<const float*>(c.raw_data());
  return std::vector<double>(p, p + c.numel());
}

/// A weight [N, per_row] whose rows are integers in [-63, 63] times a power of two, each row
/// reaching +-63 once: its quantization is exact. Returns the values.
std::vector<double> grid_weight(std::mt19937& rng, int64_t N, int64_t per_row) {
  std::uniform_int_distribution<int> q(-63, 63), e(-8, -3);
  std::vector<double> w(static_cast<size_t>(N * per_row));
  for (int64_t n = 0; n < N; ++n) {
    const double s = std::ldexp(1.0, e(rng));
    for (int64_t k = 0; k < per_row; ++k) w[static_cast<size_t>(n * per_row + k)] = q(rng) * s;
    w[static_cast<size_t>(n * per_row + n % per_row)] = (n % 2 ? -63 : 63) * s;
  }
  return w;
}

using ga::backend::Int8Inputs;
constexpr Int8Inputs kBothInputs[] = {Int8Inputs::Bits8, Int8Inputs::Bits7};

/// The largest quantized activation of the documented rule.
int top_of(Int8Inputs inputs) { return inputs == Int8Inputs::Bits7 ? 127 : 255; }

/// `count` activations on the grid of `inputs`: (q - z) * s with q in [0, top] reaching both
/// 0 and top, z in [1, top - 1], s a power of two: quantized exactly (scale s, zero point z).
std::vector<double> grid_activations(std::mt19937& rng, int64_t count, Int8Inputs inputs) {
  const int top = top_of(inputs);
  std::uniform_int_distribution<int> q(0, top), z(1, top - 1), e(-6, 0);
  const int zero = z(rng);
  const double s = std::ldexp(1.0, e(rng));
  std::vector<double> a(static_cast<size_t>(count));
  for (auto& v : a) v = (q(rng) - zero) * s;
  a[0] = -zero * s;
  if (count > 1) a[static_cast<size_t>(count - 1)] = (top - zero) * s;
  return a;
}

/// `count` rows (or images) of `size` activations each, every one on its own grid.
std::vector<double> grid_rows(std::mt19937& rng, int64_t count, int64_t size, Int8Inputs inputs) {
  std::vector<double> x;
  for (int64_t i = 0; i < count; ++i) {
    const std::vector<double> row = grid_activations(rng, size, inputs);
    x.insert(x.end(), row.begin(), row.end());
  }
  return x;
}

/// y[m, n] = sum_k x[m, k] w[n, k] (+ bias[n]), in double.
std::vector<double> ref_linear(const std::vector<double>& x, const std::vector<double>& w, const double* bias,
                               int64_t M, int64_t N, int64_t K) {
  std::vector<double> y(static_cast<size_t>(M * N));
  for (int64_t m = 0; m < M; ++m)
    for (int64_t n = 0; n < N; ++n) {
      double s = bias ? bias[n] : 0;
      for (int64_t k = 0; k < K; ++k) s += x[static_cast<size_t>(m * K + k)] * w[static_cast<size_t>(n * K + k)];
      y[static_cast<size_t>(m * N + n)] = s;
    }
  return y;
}

/// The convolution of x [B, C, H, W] with w [O, C, kh, kw], zero padding, in double.
std::vector<double> ref_conv(const std::vector<double>& x, const std::vector<double>& w, const double* bias,
                             int64_t B, int64_t C, int64_t H, int64_t W, int64_t O, int64_t kh, int64_t kw,
                             int64_t stride, int64_t pad, int64_t& OH, int64_t& OW, int64_t pad_w = -1) {
  if (pad_w < 0) pad_w = pad;
  OH = (H + 2 * pad - kh) / stride + 1;
  OW = (W + 2 * pad_w - kw) / stride + 1;
  std::vector<double> y(static_cast<size_t>(B * O * OH * OW));
  for (int64_t b = 0; b < B; ++b)
    for (int64_t o = 0; o < O; ++o)
      for (int64_t oy = 0; oy < OH; ++oy)
        for (int64_t ox = 0; ox < OW; ++ox) {
          double s = bias ? bias[o] : 0;
          for (int64_t c = 0; c < C; ++c)
            for (int64_t i = 0; i < kh; ++i)
              for (int64_t j = 0; j < kw; ++j) {
                const int64_t iy = oy * stride - pad + i, ix = ox * stride - pad_w + j;
                if (iy < 0 || iy >= H || ix < 0 || ix >= W) continue;
                s += x[static_cast<size_t>(((b * C + c) * H + iy) * W + ix)] *
                     w[static_cast<size_t>(((o * C + c) * kh + i) * kw + j)];
              }
          y[static_cast<size_t>(((b * O + o) * OH + oy) * OW + ox)] = s;
        }
  return y;
}

void check_close(const std::vector<double>& got, const std::vector<double>& want, double rel) {
  REQUIRE(got.size() == want.size());
  double scale = 0;
  for (double v : want) scale = std::max(scale, std::fabs(v));
  for (size_t i = 0; i < got.size(); ++i) {
    INFO("element ", i, ": ", got[i], " vs ", want[i]);
    REQUIRE(std::fabs(got[i] - want[i]) <= rel * (std::fabs(want[i]) + 1e-3 * scale));
  }
}

void check_same_bits(const Tensor& a, const Tensor& b) {
  const std::vector<double> x = values_of(a), y = values_of(b);
  REQUIRE(x.size() == y.size());
  for (size_t i = 0; i < x.size(); ++i) {
    INFO("element ", i);
    REQUIRE(x[i] == y[i]);
  }
}

/// Runs f on every int8 kernel this machine runs (AVX512-VNNI, AVX2, portable) and requires
/// each result to have the bits of `want` (computed with the automatic choice), then restores
/// the automatic choice.
template <class F>
void check_every_kernel(const Tensor& want, const F& f) {
  using ga::backend::cpu::Int8Kernel;
  for (Int8Kernel k : {Int8Kernel::Avx512Vnni, Int8Kernel::Avx2, Int8Kernel::Portable}) {
    if (!ga::backend::cpu::int8_kernel_supported(k)) continue;
    CAPTURE(ga::backend::cpu::int8_kernel_name(k));
    ga::backend::cpu::set_int8_kernel(k);
    const Tensor got = f();
    ga::backend::cpu::set_int8_kernel(Int8Kernel::Auto);
    check_same_bits(got, want);
  }
}

}  // namespace

TEST_CASE("int8: linear on grid values is the exact product, on every kernel") {
  ga::NoGradGuard no_grad;
  std::mt19937 rng(7);
  for (Int8Inputs inputs : kBothInputs)
    for (auto [M, N, K] : std::vector<std::array<int64_t, 3>>{
             {1, 1, 1}, {1, 16, 4}, {7, 5, 3}, {11, 18, 20}, {6, 33, 64}, {50, 40, 301}, {97, 130, 768}}) {
      CAPTURE(top_of(inputs));
      CAPTURE(M);
      CAPTURE(N);
      CAPTURE(K);
      const std::vector<double> x = grid_rows(rng, M, K, inputs);
      const std::vector<double> w = grid_weight(rng, N, K);
      std::vector<double> bias(static_cast<size_t>(N));
      for (auto& b : bias) b = std::uniform_real_distribution<double>(-1, 1)(rng);
      const Tensor xt = from_values(x, {M, K}), wt = from_values(w, {N, K}), bt = from_values(bias, {N});
      const ga::backend::Int8Weight q = ga::quantize_int8(wt, inputs);
      const Tensor y = ga::linear_int8(xt, q, bt);
      check_close(values_of(y), ref_linear(x, w, bias.data(), M, N, K), 1e-6);
      check_every_kernel(y, [&] { return ga::linear_int8(xt, q, bt); });
      // A batch of rows [2, M, K] gives [2, M, N], each row as alone.
      const Tensor y2 = ga::linear_int8(ga::stack({xt, xt}, 0), q, bt);
      CHECK(y2.shape() == Shape({2, M, N}));
      check_same_bits(y2.select(0, 1), y);
    }
}

TEST_CASE("int8: products at the largest magnitudes do not saturate") {
  // Every activation at the top of its grid times weights of magnitude 63 whose signs agree
  // over each run of 4, 8 and 16 k: the kernel's int16 sums reach +-2 * 255 * 63 = +-32130
  // (one pair of products, 8-bit inputs) and +-4 * 127 * 63 = +-32004 (two pairs, 7-bit
  // inputs), just inside int16.
  ga::NoGradGuard no_grad;
  for (Int8Inputs inputs : kBothInputs) {
    CAPTURE(top_of(inputs));
    const int64_t M = 9, N = 18, K = 72;
    const double c = top_of(inputs) / 8.0;  // scale 1/8 and zero point 0: exactly on the grid
    std::vector<double> x(static_cast<size_t>(M * K), c), w(static_cast<size_t>(N * K));
    for (int64_t n = 0; n < N; ++n)
      for (int64_t k = 0; k < K; ++k) w[static_cast<size_t>(n * K + k)] = ((n + k / 16) % 2 ? -63.0 : 63.0) / 4;
    const Tensor xt = from_values(x, {M, K});
    const ga::backend::Int8Weight q = ga::quantize_int8(from_values(w, {N, K}), inputs);
    const Tensor y = ga::linear_int8(xt, q);
    check_close(values_of(y), ref_linear(x, w, nullptr, M, N, K), 1e-6);
    check_every_kernel(y, [&] { return ga::linear_int8(xt, q); });
  }
}

TEST_CASE("int8: the fused epilogue (residual, activation) follows the product") {
  ga::NoGradGuard no_grad;
  std::mt19937 rng(11);
  const int64_t M = 13, N = 21, K = 40;
  const std::vector<double> x = grid_rows(rng, M, K, Int8Inputs::Bits8);
  const std::vector<double> w = grid_weight(rng, N, K);
  std::vector<double> res(static_cast<size_t>(M * N));
  for (auto& r : res) r = std::uniform_real_distribution<double>(-2, 2)(rng);
  const ga::backend::Int8Weight q = ga::quantize_int8(from_values(w, {N, K}));
  const Tensor y = ga::linear_int8(from_values(x, {M, K}), q, Tensor(),
                                   {from_values(res, {M, N}), ga::Activation::Gelu});
  std::vector<double> want = ref_linear(x, w, nullptr, M, N, K);
  for (size_t i = 0; i < want.size(); ++i) {
    const double v = want[i] + res[i];
    want[i] = 0.5 * v * (1 + std::erf(v / std::sqrt(2.0)));
  }
  check_close(values_of(y), want, 1e-5);
}

TEST_CASE("int8: conv2d on grid values is the exact convolution (windows, strides, padding, channels)") {
  ga::NoGradGuard no_grad;
  std::mt19937 rng(3);
  struct Geo { int64_t B, C, H, W, O, k, stride, pad; };
  for (Int8Inputs inputs : kBothInputs)
    for (const Geo& g :
         {Geo{1, 3, 9, 9, 5, 3, 1, 1}, Geo{2, 8, 7, 6, 17, 1, 1, 0}, Geo{2, 3, 15, 15, 8, 7, 2, 3},
          Geo{1, 5, 10, 10, 16, 3, 2, 1}, Geo{2, 3, 64, 64, 20, 32, 32, 0}, Geo{3, 33, 5, 5, 9, 3, 1, 1},
          // One image of 76140 values: its range found in pieces, its quantized pixels
          // transposed 16 x 16 bytes at a time, with a partial channel group (36 = 16 + 16 +
          // 4) and a partial pixel block (2115 pixels in two blocks) left over.
          Geo{1, 36, 47, 45, 24, 3, 1, 1}}) {
      CAPTURE(top_of(inputs));
      CAPTURE(g.C);
      CAPTURE(g.k);
      CAPTURE(g.stride);
      const std::vector<double> x = grid_rows(rng, g.B, g.C * g.H * g.W, inputs);
      const std::vector<double> w = grid_weight(rng, g.O, g.C * g.k * g.k);
      std::vector<double> bias(static_cast<size_t>(g.O));
      for (auto& b : bias) b = std::uniform_real_distribution<double>(-1, 1)(rng);
      int64_t OH = 0, OW = 0;
      const std::vector<double> want =
          ref_conv(x, w, bias.data(), g.B, g.C, g.H, g.W, g.O, g.k, g.k, g.stride, g.pad, OH, OW);
      const Tensor xt = from_values(x, {g.B, g.C, g.H, g.W}), bt = from_values(bias, {g.O});
      const ga::backend::Int8Weight q = ga::quantize_int8(from_values(w, {g.O, g.C, g.k, g.k}), inputs);
      const Tensor y = ga::conv2d_int8(xt, q, bt, {g.stride, g.stride}, {g.pad, g.pad});
      CHECK(y.shape() == Shape({g.B, g.O, OH, OW}));
      check_close(values_of(y), want, 1e-6);
      check_every_kernel(y, [&] { return ga::conv2d_int8(xt, q, bt, {g.stride, g.stride}, {g.pad, g.pad}); });
    }
}

/// conv2d_int8 without bias as the documented rule computes it, in the same f32 operations:
/// each image's range [min(x, 0), max(x, 0)] in `top` steps (scale = (hi - lo) / top, zero =
/// round(-lo / scale)), q = clamp(round(x * (1 / scale)) + zero, 0, top); each output
/// channel's weights by amax / 63, clamped to [-63, 63]; the exact integer sum over the
/// window's taps inside the image of (q - zero) * qw, converted to f32, times (scale *
/// weight scale). Rounding is to nearest, ties to even, as the library documents.
std::vector<float> emulated_conv_int8(const std::vector<float>& x, const std::vector<float>& w, int64_t B, int64_t C,
                                      int64_t H, int64_t W, int64_t O, int64_t k, int64_t stride, int64_t pad,
                                      int top) {
  const int64_t OH = (H + 2 * pad - k) / stride + 1, OW = (W + 2 * pad - k) / stride + 1, per = C * k * k;
  std::vector<float> wscale(static_cast<size_t>(O));
  std::vector<int> qw(w.size());
  for (int64_t o = 0; o < O; ++o) {
    float amax = 0;
    for (int64_t i = 0; i < per; ++i) amax = std::max(amax, std::fabs(w[static_cast<size_t>(o * per + i)]));
    const float sc = amax > 0 ? amax / 63 : 1.0f;
    wscale[static_cast<size_t>(o)] = sc;
    for (int64_t i = 0; i < per; ++i) {
      const float v = std::nearbyint(w[static_cast<size_t>(o * per + i)] / sc);
      qw[static_cast<size_t>(o * per + i)] = static_cast<int>(std::min(63.0f, std::max(-63.0f, v)));
    }
  }
  std::vector<float> y(static_cast<size_t>(B * O * OH * OW));
  for (int64_t b = 0; b < B; ++b) {
    const float* img = x.data() + b * C * H * W;
    float lo = 0, hi = 0;
    for (int64_t i = 0; i < C * H * W; ++i) {
      lo = std::min(lo, img[i]);
      hi = std::max(hi, img[i]);
    }
    const float scale = (hi - lo) / static_cast<float>(top);
    const int zero = static_cast<int>(std::min(static_cast<float>(top), std::max(0.0f, std::nearbyint(-lo / scale))));
    const float inv = 1.0f / scale;
    std::vector<int> q(static_cast<size_t>(C * H * W));
    for (int64_t i = 0; i < C * H * W; ++i) {
      const float v = std::nearbyint(img[i] * inv) + static_cast<float>(zero);
      q[static_cast<size_t>(i)] = static_cast<int>(std::min(static_cast<float>(top), std::max(0.0f, v)));
    }
    for (int64_t o = 0; o < O; ++o)
      for (int64_t oy = 0; oy < OH; ++oy)
        for (int64_t ox = 0; ox < OW; ++ox) {
          int64_t acc = 0;
          for (int64_t c = 0; c < C; ++c)
            for (int64_t i = 0; i < k; ++i)
              for (int64_t j = 0; j < k; ++j) {
                const int64_t iy = oy * stride - pad + i, ix = ox * stride - pad + j;
                if (iy < 0 || iy >= H || ix < 0 || ix >= W) continue;
                acc += int64_t(q[static_cast<size_t>((c * H + iy) * W + ix)] - zero) *
                       qw[static_cast<size_t>(((o * C + c) * k + i) * k + j)];
              }
          y[static_cast<size_t>(((b * O + o) * OH + oy) * OW + ox)] =
              static_cast<float>(acc) * (scale * wscale[static_cast<size_t>(o)]);
        }
  }
  return y;
}

/// How many elements of y (f32) differ from want's, bit for bit (want has y's element count).
size_t elements_differing(const Tensor& y, const std::vector<float>& want) {
  const Tensor yc = y.contiguous();
  const float* got = static_cast<const float*>(yc.raw_data());
  REQUIRE(static_cast<size_t>(yc.numel()) == want.size());
  size_t differing = 0;
  for (size_t i = 0; i < want.size(); ++i) differing += got[i] != want[i];
  return differing;
}

TEST_CASE("int8: conv2d on values off the grid is the documented quantization, bit for bit") {
  // Random values, whose quantization rounds (and, at the range's ends, clamps). Channel
  // counts that are whole groups of 16 (quantized and transposed in registers where the CPU
  // has AVX-512) and not (through a buffer), pixel counts with a partial block of 16.
  ga::NoGradGuard no_grad;
  std::mt19937 rng(23);
  struct Geo { int64_t B, C, H, W, O, k, stride, pad; };
  for (Int8Inputs inputs : kBothInputs)
    for (const Geo& g : {Geo{1, 32, 13, 11, 20, 3, 1, 1}, Geo{2, 16, 9, 7, 18, 1, 1, 0}, Geo{1, 20, 10, 9, 16, 3, 2, 1},
                         Geo{2, 48, 5, 5, 33, 1, 1, 0}}) {
      CAPTURE(top_of(inputs));
      CAPTURE(g.C);
      CAPTURE(g.k);
      std::normal_distribution<float> normal(0.3f, 1.0f);
      std::vector<float> x(static_cast<size_t>(g.B * g.C * g.H * g.W)), w(static_cast<size_t>(g.O * g.C * g.k * g.k));
      for (auto& v : x) v = normal(rng);
      for (auto& v : w) v = 0.1f * normal(rng);
      const std::vector<float> want = emulated_conv_int8(x, w, g.B, g.C, g.H, g.W, g.O, g.k, g.stride, g.pad,
                                                         top_of(inputs));
      const Tensor y = ga::conv2d_int8(ga::tensor(x, {g.B, g.C, g.H, g.W}),
                                       ga::quantize_int8(ga::tensor(w, {g.O, g.C, g.k, g.k}), inputs), Tensor(),
                                       {g.stride, g.stride}, {g.pad, g.pad});
      CHECK(elements_differing(y, want) == 0);
    }
}

TEST_CASE("int8: conv2d clamps a value whose two roundings reach top + 1") {
  // With these extremes (found by a search over random ranges), the documented rule's
  // round(hi / scale) + zero is top + 1, so the clamp to top matters: the image's maximum
  // must quantize to top, in every pixel position (16-pixel blocks and the partial one).
  ga::NoGradGuard no_grad;
  struct Case { Int8Inputs inputs; float lo, hi; };
  for (const Case& k :
       {Case{Int8Inputs::Bits7, -2.31911755f, 2.98769164f}, Case{Int8Inputs::Bits8, -1.70222712f, 1.54921794f}}) {
    const int top = top_of(k.inputs);
    CAPTURE(top);
    const float scale = (k.hi - k.lo) / static_cast<float>(top);
    const float zero = std::min(static_cast<float>(top), std::max(0.0f, std::nearbyint(-k.lo / scale)));
    REQUIRE(std::nearbyint(k.hi * (1.0f / scale)) + zero == static_cast<float>(top + 1));  // the premise
    const int64_t C = 16, H = 6, W = 6, O = 16;
    std::mt19937 rng(29);
    std::uniform_real_distribution<float> inside(k.lo, k.hi);
    std::vector<float> x(static_cast<size_t>(C * H * W)), w(static_cast<size_t>(O * C));
    for (auto& v : x) v = inside(rng);
    x[0] = k.lo;
    for (size_t i : {size_t(5), size_t(33), size_t(2 * H * W + 17), size_t(C * H * W - 1)}) x[i] = k.hi;
    std::normal_distribution<float> normal(0.0f, 0.1f);
    for (auto& v : w) v = normal(rng);
    const std::vector<float> want = emulated_conv_int8(x, w, 1, C, H, W, O, 1, 1, 0, top);
    const Tensor y =
        ga::conv2d_int8(ga::tensor(x, {1, C, H, W}), ga::quantize_int8(ga::tensor(w, {O, C, 1, 1}), k.inputs));
    CHECK(elements_differing(y, want) == 0);
  }
}

TEST_CASE("int8: conv2d with vertical padding only (whole window rows per kernel call)") {
  ga::NoGradGuard no_grad;
  std::mt19937 rng(17);
  const int64_t B = 2, C = 5, H = 9, W = 11, O = 7, k = 5;
  const std::vector<double> x = grid_rows(rng, B, C * H * W, Int8Inputs::Bits7);
  const std::vector<double> w = grid_weight(rng, O, C * k * k);
  for (int64_t stride : {1, 2}) {
    int64_t OH = 0, OW = 0;
    const std::vector<double> want = ref_conv(x, w, nullptr, B, C, H, W, O, k, k, stride, 2, OH, OW, /*pad_w=*/0);
    const Tensor y = ga::conv2d_int8(from_values(x, {B, C, H, W}),
                                     ga::quantize_int8(from_values(w, {O, C, k, k}), Int8Inputs::Bits7), Tensor(),
                                     {stride, stride}, {2, 0});
    CHECK(y.shape() == Shape({B, O, OH, OW}));
    check_close(values_of(y), want, 1e-6);
  }
}

TEST_CASE("int8: conv2d's fused epilogue (bias per channel, residual, relu)") {
  ga::NoGradGuard no_grad;
  std::mt19937 rng(13);
  const int64_t B = 2, C = 6, H = 7, W = 9, O = 19, k = 3;
  const std::vector<double> x = grid_rows(rng, B, C * H * W, Int8Inputs::Bits8);
  const std::vector<double> w = grid_weight(rng, O, C * k * k);
  std::vector<double> bias(static_cast<size_t>(O));
  for (auto& b : bias) b = std::uniform_real_distribution<double>(-1, 1)(rng);
  int64_t OH = 0, OW = 0;
  std::vector<double> want = ref_conv(x, w, bias.data(), B, C, H, W, O, k, k, 2, 1, OH, OW);
  std::vector<double> res(want.size());
  for (auto& r : res) r = std::uniform_real_distribution<double>(-3, 3)(rng);
  for (size_t i = 0; i < want.size(); ++i) want[i] = std::max(0.0, want[i] + res[i]);
  const Tensor y = ga::conv2d_int8(from_values(x, {B, C, H, W}), ga::quantize_int8(from_values(w, {O, C, k, k})),
                                   from_values(bias, {O}), {2, 2}, {1, 1},
                                   {from_values(res, {B, O, OH, OW}), ga::Activation::Relu});
  check_close(values_of(y), want, 1e-5);
}

TEST_CASE("int8: on random values the error stays within the quantization bound") {
  ga::NoGradGuard no_grad;
  std::mt19937 rng(5);
  const int64_t M = 37, N = 45, K = 200;
  std::normal_distribution<double> normal(0, 1);
  std::vector<double> x(static_cast<size_t>(M * K)), w(static_cast<size_t>(N * K));
  for (auto& v : x) v = static_cast<float>(normal(rng) + 0.3);
  for (auto& v : w) v = static_cast<float>(0.05 * normal(rng));
  for (Int8Inputs inputs : kBothInputs) {
    CAPTURE(top_of(inputs));
    const Tensor y = ga::linear_int8(from_values(x, {M, K}), ga::quantize_int8(from_values(w, {N, K}), inputs));
    const std::vector<double> got = values_of(y), exact = ref_linear(x, w, nullptr, M, N, K);
    double err2 = 0, ref2 = 0;
    for (int64_t m = 0; m < M; ++m) {
      // The documented rule: rows over [min(row, 0), max(row, 0)] in 255 (or 127) steps,
      // weights per output channel max|w| / 63.
      double lo = 0, hi = 0;
      for (int64_t k = 0; k < K; ++k) {
        lo = std::min(lo, x[static_cast<size_t>(m * K + k)]);
        hi = std::max(hi, x[static_cast<size_t>(m * K + k)]);
      }
      const double sa = (hi - lo) / top_of(inputs);
      for (int64_t n = 0; n < N; ++n) {
        double amax = 0;
        for (int64_t k = 0; k < K; ++k) amax = std::max(amax, std::fabs(w[static_cast<size_t>(n * K + k)]));
        const double sw = amax / 63;
        double bound = 0;
        for (int64_t k = 0; k < K; ++k)
          bound += sa / 2 * std::fabs(w[static_cast<size_t>(n * K + k)]) +
                   sw / 2 * std::fabs(x[static_cast<size_t>(m * K + k)]) + sa * sw / 4;
        const size_t i = static_cast<size_t>(m * N + n);
        INFO("row ", m, " column ", n);
        REQUIRE(std::fabs(got[i] - exact[i]) <= bound * (1 + 1e-5) + 1e-6);
        err2 += (got[i] - exact[i]) * (got[i] - exact[i]);
        ref2 += exact[i] * exact[i];
      }
    }
    // And typically far inside it: errors of random sign mostly cancel.
    MESSAGE("int8 linear, inputs to 0..", top_of(inputs), ": relative RMS error ", std::sqrt(err2 / ref2));
    CHECK(std::sqrt(err2 / ref2) < 0.02);
  }
}

TEST_CASE("int8: non-finite inputs give NaN rows; bad weights and gradients are refused") {
  ga::NoGradGuard no_grad;
  const ga::backend::Int8Weight q = ga::quantize_int8(ga::ones({3, 8}));
  Tensor x = ga::ones({2, 8});
  static_cast<float*>(x.raw_data())[3] = std::numeric_limits<float>::quiet_NaN();
  const std::vector<double> y = values_of(ga::linear_int8(x, q));
  for (int j = 0; j < 3; ++j) {
    CHECK(std::isnan(y[static_cast<size_t>(j)]));
    CHECK(y[static_cast<size_t>(3 + j)] == doctest::Approx(8.0).epsilon(1e-6));
  }
  Tensor bad = ga::ones({2, 4});
  static_cast<float*>(bad.raw_data())[5] = std::numeric_limits<float>::infinity();
  CHECK_THROWS_WITH_AS(ga::quantize_int8(bad), doctest::Contains("output channel 1"), ga::ValueError);
  CHECK_THROWS_AS(ga::linear_int8(ga::ones({2, 7}), q), ga::ShapeError);
  CHECK_THROWS_AS(ga::conv2d_int8(ga::ones({1, 5, 4, 4}), q), ga::ShapeError);

  // A convolution quantizes each image as a whole: one NaN anywhere in it (here near the
  // end of a large image, whose range is found in pieces) makes all its outputs NaN, and
  // leaves the other image's alone.
  const int64_t C = 16, H = 80, W = 80;
  Tensor images = ga::ones({2, C, H, W});
  static_cast<float*>(images.raw_data())[C * H * W - 7] = std::numeric_limits<float>::quiet_NaN();
  const std::vector<double> out =
      values_of(ga::conv2d_int8(images, ga::quantize_int8(ga::ones({2, C, 1, 1}))));
  size_t first_nan = 0, later_nan = 0;
  for (size_t i = 0; i < out.size(); ++i) {
    const bool first = i < out.size() / 2;
    if (std::isnan(out[i])) (first ? first_nan : later_nan)++;
    else if (!first) CHECK(out[i] == doctest::Approx(16.0).epsilon(1e-6));
  }
  CHECK(first_nan == out.size() / 2);
  CHECK(later_nan == 0);
}

TEST_CASE("int8: an input that requires a gradient is refused") {
  const ga::backend::Int8Weight q = ga::quantize_int8(ga::ones({3, 8}));
  Tensor x = ga::ones({2, 8});
  x.requires_grad_();
  CHECK_THROWS_WITH_AS(ga::linear_int8(x, q), doctest::Contains("inference"), ga::AutogradError);
}
