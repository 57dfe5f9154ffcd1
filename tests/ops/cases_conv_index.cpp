// Driver cases: convolution, pooling and indexing ops; and checks that bad arguments
// throw the right ga::Error subclass with a message naming the op and the culprit.
#include <doctest/doctest.h>

#include <algorithm>
#include <array>
#include <cmath>
#include <string>

#include "driver.hpp"

namespace ga::test {
namespace {

using I = InputSpec;
using A2 = std::array<int64_t, 2>;

I index32(Shape s, int64_t hi) {
  I r = I::index(std::move(s), hi);
  r.index_dtype = DType::i32;
  return r;
}

// ---- conv2d ----

/// Direct convolution: seven nested loops, zero padding by bounds checks.
Ref ref_conv2d(const Ref& x, const Ref& w, const Ref* b, A2 s, A2 p) {
  const int64_t N = x.shape[0], C = x.shape[1], H = x.shape[2], W = x.shape[3];
  const int64_t O = w.shape[0], kh = w.shape[2], kw = w.shape[3];
  const int64_t OH = (H + 2 * p[0] - kh) / s[0] + 1, OW = (W + 2 * p[1] - kw) / s[1] + 1;
  Ref y(Shape{N, O, OH, OW});
  for (int64_t n = 0; n < N; ++n)
    for (int64_t o = 0; o < O; ++o)
      for (int64_t oh = 0; oh < OH; ++oh)
        for (int64_t ow = 0; ow < OW; ++ow) {
          double acc = b ? b->v[o] : 0.0;
          for (int64_t c = 0; c < C; ++c)
            for (int64_t i = 0; i < kh; ++i)
              for (int64_t j = 0; j < kw; ++j) {
                const int64_t ih = oh * s[0] - p[0] + i, iw = ow * s[1] - p[1] + j;
                if (ih >= 0 && ih < H && iw >= 0 && iw < W) acc += x.at({n, c, ih, iw}) * w.at({o, c, i, j});
              }
          y.at({n, o, oh, ow}) = acc;
        }
  return y;
}

OpCase conv_case(const std::string& name, Shape xs, Shape ws, bool bias, A2 stride, A2 pad) {
  OpCase c;
  c.op = "conv2d";
  c.name = name;
  std::vector<I> in{I::f(xs), I::f(ws)};
  if (bias) in.push_back(I::f({ws[0]}));
  c.shapes = {in};
  c.fn = [bias, stride, pad](const std::vector<Tensor>& x) {
    return conv2d(x[0], x[1], bias ? x[2] : Tensor(), stride, pad);
  };
  c.reference = [bias, stride, pad](const std::vector<Ref>& x) {
    return ref_conv2d(x[0], x[1], bias ? &x[2] : nullptr, stride, pad);
  };
  return c;
}

GA_OP_CASE(conv_case("3x3, bias", {2, 3, 6, 5}, {4, 3, 3, 3}, true, {1, 1}, {0, 0}));
GA_OP_CASE(conv_case("non-square kernel, stride [2, 1], padding [1, 0]", {1, 2, 7, 7}, {3, 2, 3, 2}, false, {2, 1}, {1, 0}));
GA_OP_CASE(conv_case("5x5 kernel, stride 2, padding 2", {2, 2, 5, 6}, {2, 2, 5, 5}, true, {2, 2}, {2, 2}));
GA_OP_CASE(conv_case("1x1 pointwise (no im2col), bias", {2, 4, 3, 5}, {3, 4, 1, 1}, true, {1, 1}, {0, 0}));
GA_OP_CASE(conv_case("1x1 with stride 2 and padding 1", {1, 3, 5, 4}, {2, 3, 1, 1}, false, {2, 2}, {1, 1}));
GA_OP_CASE(conv_case("kernel the size of the input: 1x1 output", {3, 1, 4, 3}, {2, 1, 4, 3}, true, {1, 1}, {0, 0}));
GA_OP_CASE(conv_case("size-1 channels and output channels", {1, 1, 4, 4}, {1, 1, 2, 3}, true, {3, 2}, {0, 1}));
GA_OP_CASE(conv_case("empty batch", {0, 2, 4, 4}, {3, 2, 3, 3}, true, {1, 1}, {1, 1}));

// The fused epilogue: forward runs fused (nothing records), gradients through the unfused ops.
OpCase conv_epilogue_case(const std::string& name, Shape xs, Shape ws, Shape ys, A2 stride, A2 pad) {
  OpCase c;
  c.op = "conv2d";
  c.name = name;
  c.shapes = {{I::f(xs), I::f(ws), I::f({ws[0]}), I::f(ys)}};
  c.fn = [stride, pad](const std::vector<Tensor>& x) {
    // A bottleneck's last convolution (residual + ReLU), and a convolution + each activation.
    Tensor y = conv2d(x[0], x[1], x[2], stride, pad, {x[3], Activation::Relu});
    for (Activation a : {Activation::None, Activation::Relu, Activation::QuickGelu, Activation::Gelu})
      y = y + conv2d(x[0], x[1], x[2], stride, pad, {Tensor(), a}) * 0.5;
    return y;
  };
  c.reference = [stride, pad](const std::vector<Ref>& x) {
    const Ref p = ref_conv2d(x[0], x[1], &x[2], stride, pad);
    Ref y(p.shape);
    for (int64_t i = 0; i < y.numel(); ++i) {
      y.v[i] = ref_activation(Activation::Relu, p.v[i] + x[3].v[i]);
      for (Activation a : {Activation::None, Activation::Relu, Activation::QuickGelu, Activation::Gelu})
        y.v[i] += 0.5 * ref_activation(a, p.v[i]);
    }
    return y;
  };
  return c;
}

GA_OP_CASE(conv_epilogue_case("3x3 padding 1, fused residual and activations", {2, 3, 5, 4}, {4, 3, 3, 3}, {2, 4, 5, 4},
                              {1, 1}, {1, 1}));
GA_OP_CASE(conv_epilogue_case("1x1 pointwise, fused residual and activations", {2, 4, 3, 3}, {5, 4, 1, 1}, {2, 5, 3, 3},
                              {1, 1}, {0, 0}));

// ---- pooling ----

Ref ref_avg_pool2d(const Ref& x, A2 k, A2 s, A2 p, bool include_pad) {
  const int64_t N = x.shape[0], C = x.shape[1], H = x.shape[2], W = x.shape[3];
  const int64_t OH = (H + 2 * p[0] - k[0]) / s[0] + 1, OW = (W + 2 * p[1] - k[1]) / s[1] + 1;
  Ref y(Shape{N, C, OH, OW});
  for (int64_t n = 0; n < N; ++n)
    for (int64_t c = 0; c < C; ++c)
      for (int64_t oh = 0; oh < OH; ++oh)
        for (int64_t ow = 0; ow < OW; ++ow) {
          double acc = 0;
          int64_t inside = 0;
          for (int64_t i = 0; i < k[0]; ++i)
            for (int64_t j = 0; j < k[1]; ++j) {
              const int64_t ih = oh * s[0] - p[0] + i, iw = ow * s[1] - p[1] + j;
              if (ih >= 0 && ih < H && iw >= 0 && iw < W) {
                acc += x.at({n, c, ih, iw});
                ++inside;
              }
            }
          y.at({n, c, oh, ow}) = acc / double(include_pad ? k[0] * k[1] : inside);
        }
  return y;
}

OpCase pool_case(const std::string& name, Shape xs, A2 k, A2 s, A2 p, bool include_pad) {
  OpCase c;
  c.op = "avg_pool2d";
  c.name = name;
  c.shapes = {{I::f(xs)}};
  c.fn = [k, s, p, include_pad](const std::vector<Tensor>& x) { return avg_pool2d(x[0], k, s, p, include_pad); };
  const A2 rs = s[0] == 0 ? k : s;
  c.reference = [k, rs, p, include_pad](const std::vector<Ref>& x) { return ref_avg_pool2d(x[0], k, rs, p, include_pad); };
  return c;
}

GA_OP_CASE(pool_case("2x2, default stride", {2, 3, 6, 6}, {2, 2}, {0, 0}, {0, 0}, true));
GA_OP_CASE(pool_case("3x2, stride [2, 1], padding 1, pad counted", {1, 2, 7, 5}, {3, 2}, {2, 1}, {1, 1}, true));
GA_OP_CASE(pool_case("3x2, stride [2, 1], padding 1, pad not counted", {1, 2, 7, 5}, {3, 2}, {2, 1}, {1, 1}, false));
GA_OP_CASE(pool_case("3x3 stride 1 padding 1, pad not counted (overlapping)", {2, 1, 4, 5}, {3, 3}, {1, 1}, {1, 1}, false));
GA_OP_CASE(pool_case("global window", {1, 2, 5, 5}, {5, 5}, {0, 0}, {0, 0}, true));
GA_OP_CASE(pool_case("1x1 window with stride 2 (subsampling), odd size", {1, 2, 5, 3}, {1, 1}, {2, 2}, {0, 0}, true));
GA_OP_CASE(pool_case("2x2, default stride, odd size, rows wider than a vector", {1, 3, 7, 37}, {2, 2}, {0, 0}, {0, 0}, true));
GA_OP_CASE(pool_case("2x2, stride 2, padding 1, pad not counted", {1, 2, 5, 6}, {2, 2}, {2, 2}, {1, 1}, false));
GA_OP_CASE(pool_case("empty batch", {0, 2, 4, 4}, {2, 2}, {0, 0}, {0, 0}, true));

Ref ref_adaptive(const Ref& x, A2 os) {
  const int64_t N = x.shape[0], C = x.shape[1], H = x.shape[2], W = x.shape[3];
  Ref y(Shape{N, C, os[0], os[1]});
  for (int64_t n = 0; n < N; ++n)
    for (int64_t c = 0; c < C; ++c)
      for (int64_t i = 0; i < os[0]; ++i)
        for (int64_t j = 0; j < os[1]; ++j) {
          const int64_t h0 = int64_t(std::floor(double(i * H) / double(os[0])));
          const int64_t h1 = int64_t(std::ceil(double((i + 1) * H) / double(os[0])));
          const int64_t w0 = int64_t(std::floor(double(j * W) / double(os[1])));
          const int64_t w1 = int64_t(std::ceil(double((j + 1) * W) / double(os[1])));
          double acc = 0;
          for (int64_t h = h0; h < h1; ++h)
            for (int64_t w = w0; w < w1; ++w) acc += x.at({n, c, h, w});
          y.at({n, c, i, j}) = acc / double((h1 - h0) * (w1 - w0));
        }
  return y;
}

GA_OP_CASE([] {
  OpCase c;
  c.op = "adaptive_avg_pool2d";
  c.name = "7x5 -> 3x2 (overlapping bins), 4x4 -> 1x1 (global), 3x3 -> 5x4 (upsampling), empty batch";
  c.shapes = {{I::f({2, 3, 7, 5})}, {I::f({1, 2, 4, 4})}, {I::f({1, 1, 3, 3})}, {I::f({0, 2, 3, 3})}};
  auto out_size = [](const Shape& s) -> A2 {
    if (s[2] == 7) return {3, 2};
    if (s[2] == 4) return {1, 1};
    if (s[0] == 0) return {2, 2};
    return {5, 4};
  };
  c.fn = [out_size](const std::vector<Tensor>& x) { return adaptive_avg_pool2d(x[0], out_size(x[0].shape())); };
  c.reference = [out_size](const std::vector<Ref>& x) { return ref_adaptive(x[0], out_size(x[0].shape)); };
  return c;
}());

// ---- index_select, index_add, embedding ----

int64_t wrap(int64_t d, int64_t n) { return d < 0 ? d + n : d; }

Ref ref_index_select(const Ref& x, int64_t dim, const Ref& idx) {
  dim = wrap(dim, x.dim());
  Shape s = x.shape;
  s[dim] = idx.numel();
  Ref y(s);
  for (int64_t f = 0; f < y.numel(); ++f) {
    auto i = y.unflat(f);
    i[dim] = int64_t(idx.v[i[dim]]);
    y.v[f] = x.at(i);
  }
  return y;
}

OpCase index_select_case(const std::string& name, Shape xs, int64_t dim, I idx) {
  OpCase c;
  c.op = "index_select";
  c.name = name;
  c.shapes = {{I::f(xs), idx}};
  c.fn = [dim](const std::vector<Tensor>& x) { return index_select(x[0], dim, x[1]); };
  c.reference = [dim](const std::vector<Ref>& x) { return ref_index_select(x[0], dim, x[1]); };
  return c;
}

GA_OP_CASE(index_select_case("dim 0, repeated i64 indices", {5, 4}, 0, I::index({9}, 5)));
GA_OP_CASE(index_select_case("middle dim, i32 indices", {3, 6, 2}, 1, index32({4}, 6)));
GA_OP_CASE(index_select_case("last dim (negative), repeated", {3, 5}, -1, I::index({8}, 2)));
GA_OP_CASE(index_select_case("empty index", {3, 5}, 1, I::index({0}, 5)));
GA_OP_CASE(index_select_case("empty other dim", {4, 0}, 0, I::index({3}, 4)));
GA_OP_CASE(index_select_case("1-d input", {6}, 0, index32({6}, 6)));

Ref ref_index_add(const Ref& x, int64_t dim, const Ref& idx, const Ref& src) {
  dim = wrap(dim, x.dim());
  Ref y = x;
  for (int64_t f = 0; f < src.numel(); ++f) {
    auto i = src.unflat(f);
    i[dim] = int64_t(idx.v[i[dim]]);
    y.at(i) += src.v[f];
  }
  return y;
}

OpCase index_add_case(const std::string& name, Shape xs, int64_t dim, I idx) {
  OpCase c;
  c.op = "index_add";
  c.name = name;
  Shape ss = xs;
  ss[wrap(dim, int64_t(xs.size()))] = numel_of(idx.shape);
  c.shapes = {{I::f(xs), idx, I::f(ss)}};
  c.fn = [dim](const std::vector<Tensor>& x) { return index_add(x[0], dim, x[1], x[2]); };
  c.reference = [dim](const std::vector<Ref>& x) { return ref_index_add(x[0], dim, x[1], x[2]); };
  return c;
}

GA_OP_CASE(index_add_case("dim 0, repeated indices accumulate", {5, 3}, 0, I::index({9}, 5)));
GA_OP_CASE(index_add_case("middle dim, i32", {2, 4, 3}, 1, index32({6}, 4)));
GA_OP_CASE(index_add_case("last dim, every index the same", {3, 4}, -1, I::index({5}, 1)));
GA_OP_CASE(index_add_case("empty index", {3, 4}, 0, I::index({0}, 3)));

GA_OP_CASE([] {
  OpCase c;
  c.op = "embedding";
  c.name = "ids of rank 2, 1 (i32, many repeats), 0 and an empty list";
  c.shapes = {{I::f({6, 4}), I::index({2, 5}, 6)},
              {I::f({6, 3}), index32({9}, 3)},
              {I::f({4, 2}), I::index({}, 4)},
              {I::f({4, 2}), I::index({0}, 4)}};
  c.fn = [](const std::vector<Tensor>& x) { return embedding(x[0], x[1]); };
  c.reference = [](const std::vector<Ref>& x) {
    const int64_t D = x[0].shape[1];
    Shape s = x[1].shape;
    s.push_back(D);
    Ref y(s);
    for (int64_t i = 0; i < x[1].numel(); ++i)
      for (int64_t d = 0; d < D; ++d) y.v[i * D + d] = x[0].at({int64_t(x[1].v[i]), d});
    return y;
  };
  return c;
}());

// ---- gather, scatter_add ----

Ref ref_gather(const Ref& x, int64_t dim, const Ref& idx) {
  dim = wrap(dim, x.dim());
  Ref y(idx.shape);
  for (int64_t f = 0; f < y.numel(); ++f) {
    auto i = y.unflat(f);
    i[dim] = int64_t(idx.v[f]);
    y.v[f] = x.at(i);
  }
  return y;
}

OpCase gather_case(const std::string& name, Shape xs, int64_t dim, I idx) {
  OpCase c;
  c.op = "gather";
  c.name = name;
  c.shapes = {{I::f(xs), idx}};
  c.fn = [dim](const std::vector<Tensor>& x) { return gather(x[0], dim, x[1]); };
  c.reference = [dim](const std::vector<Ref>& x) { return ref_gather(x[0], dim, x[1]); };
  return c;
}

GA_OP_CASE(gather_case("last dim, index narrower", {3, 5}, 1, I::index({3, 4}, 5)));
GA_OP_CASE(gather_case("dim 0, index longer at dim and narrower elsewhere", {4, 3}, 0, I::index({6, 2}, 4)));
GA_OP_CASE(gather_case("middle dim of 3-d, i32, repeats", {2, 3, 4}, 1, index32({2, 5, 3}, 3)));
GA_OP_CASE(gather_case("negative dim, size-1 dims", {2, 1, 4}, -1, I::index({2, 1, 6}, 4)));
GA_OP_CASE(gather_case("empty index", {2, 3, 4}, -1, I::index({1, 2, 0}, 4)));

Ref ref_scatter_add(const Ref& x, int64_t dim, const Ref& idx, const Ref& src) {
  dim = wrap(dim, x.dim());
  Ref y = x;
  for (int64_t f = 0; f < idx.numel(); ++f) {
    auto i = idx.unflat(f);
    i[dim] = int64_t(idx.v[f]);
    y.at(i) += src.v[f];
  }
  return y;
}

OpCase scatter_case(const std::string& name, Shape xs, int64_t dim, I idx) {
  OpCase c;
  c.op = "scatter_add";
  c.name = name;
  c.shapes = {{I::f(xs), idx, I::f(idx.shape)}};
  c.fn = [dim](const std::vector<Tensor>& x) { return scatter_add(x[0], dim, x[1], x[2]); };
  c.reference = [dim](const std::vector<Ref>& x) { return ref_scatter_add(x[0], dim, x[1], x[2]); };
  return c;
}

GA_OP_CASE(scatter_case("last dim, collisions", {3, 5}, 1, I::index({3, 7}, 5)));
GA_OP_CASE(scatter_case("dim 0, index narrower elsewhere", {4, 3}, 0, I::index({6, 2}, 4)));
GA_OP_CASE(scatter_case("middle dim of 3-d, i32", {2, 3, 4}, 1, index32({2, 5, 3}, 3)));
GA_OP_CASE(scatter_case("empty index", {2, 3}, 0, I::index({0, 3}, 2)));

// ---- concat, stack ----

/// Joins refs along dim (all equal in shape elsewhere).
Ref ref_concat(const std::vector<Ref>& xs, int64_t dim) {
  dim = wrap(dim, xs[0].dim());
  Shape s = xs[0].shape;
  s[dim] = 0;
  for (const Ref& r : xs) s[dim] += r.shape[dim];
  Ref y(s);
  int64_t off = 0;
  for (const Ref& r : xs) {
    for (int64_t f = 0; f < r.numel(); ++f) {
      auto i = r.unflat(f);
      i[dim] += off;
      y.at(i) = r.v[f];
    }
    off += r.shape[dim];
  }
  return y;
}

OpCase concat_case(const std::string& name, std::vector<Shape> shapes, int64_t dim) {
  OpCase c;
  c.op = "concat";
  c.name = name;
  std::vector<I> in;
  for (Shape& s : shapes) in.push_back(I::f(s));
  c.shapes = {in};
  c.fn = [dim](const std::vector<Tensor>& x) { return concat(x, dim); };
  c.reference = [dim](const std::vector<Ref>& x) { return ref_concat(x, dim); };
  return c;
}

GA_OP_CASE(concat_case("dim 0, three pieces", {{2, 3}, {4, 3}, {1, 3}}, 0));
GA_OP_CASE(concat_case("last dim, with an empty piece", {{2, 3, 1}, {2, 3, 4}, {2, 3, 0}}, -1));
GA_OP_CASE(concat_case("middle dim", {{2, 1, 3}, {2, 2, 3}}, 1));
GA_OP_CASE(concat_case("1-d, single tensor", {{5}}, 0));

OpCase stack_case(const std::string& name, Shape s, int64_t n, int64_t dim) {
  OpCase c;
  c.op = "stack";
  c.name = name;
  c.shapes = {std::vector<I>(static_cast<size_t>(n), I::f(s))};
  c.fn = [dim](const std::vector<Tensor>& x) { return stack(x, dim); };
  c.reference = [dim](const std::vector<Ref>& x) {
    const int64_t d = wrap(dim, x[0].dim() + 1);
    std::vector<Ref> us;
    for (Ref r : x) {
      r.shape.insert(r.shape.begin() + d, 1);
      us.push_back(r);
    }
    return ref_concat(us, d);
  };
  return c;
}

GA_OP_CASE(stack_case("three 2x3 along dim 0", {2, 3}, 3, 0));
GA_OP_CASE(stack_case("two 2x3 along dim 1", {2, 3}, 2, 1));
GA_OP_CASE(stack_case("three 2x3 along the new last dim", {2, 3}, 3, -1));
GA_OP_CASE(stack_case("two 0-d", {}, 2, 0));

// ---- larger shapes: the multi-threaded and multi-chunk paths ----

/// The adjoint of the direct convolution: gx and gw for an output gradient gy.
void ref_conv2d_backward(const Ref& x, const Ref& w, const Ref& gy, A2 s, A2 p, Ref& gx, Ref& gw) {
  const int64_t N = x.shape[0], C = x.shape[1], H = x.shape[2], W = x.shape[3];
  const int64_t O = w.shape[0], kh = w.shape[2], kw = w.shape[3], OH = gy.shape[2], OW = gy.shape[3];
  gx = Ref(x.shape);
  gw = Ref(w.shape);
  for (int64_t n = 0; n < N; ++n)
    for (int64_t o = 0; o < O; ++o)
      for (int64_t oh = 0; oh < OH; ++oh)
        for (int64_t ow = 0; ow < OW; ++ow) {
          const double g = gy.at({n, o, oh, ow});
          for (int64_t c = 0; c < C; ++c)
            for (int64_t i = 0; i < kh; ++i)
              for (int64_t j = 0; j < kw; ++j) {
                const int64_t ih = oh * s[0] - p[0] + i, iw = ow * s[1] - p[1] + j;
                if (ih < 0 || ih >= H || iw < 0 || iw >= W) continue;
                gx.at({n, c, ih, iw}) += g * w.at({o, c, i, j});
                gw.at({o, c, i, j}) += g * x.at({n, c, ih, iw});
              }
        }
}

double max_rel_err(const Tensor& t, const Ref& r) {
  REQUIRE(t.shape() == r.shape);
  const std::vector<double> v = t.to_vector<double>();
  double e = 0;
  for (size_t i = 0; i < v.size(); ++i) e = std::max(e, std::abs(v[i] - r.v[i]) / (1 + std::abs(r.v[i])));
  return e;
}

std::vector<double> uniform(int64_t n, Generator& gen) {
  std::vector<double> v(static_cast<size_t>(n));
  for (double& x : v) x = gen.uniform(-1, 1);
  return v;
}

void check_large_conv(Shape xs, Shape ws, A2 stride, A2 pad) {
  Generator gen(42);
  const Ref xr(xs, uniform(numel_of(xs), gen)), wr(ws, uniform(numel_of(ws), gen)), br(Shape{ws[0]}, uniform(ws[0], gen));
  Tensor x = tensor(xr.v).reshape(xs).to(DType::f64).requires_grad_();
  Tensor w = tensor(wr.v).reshape(ws).to(DType::f64).requires_grad_();
  Tensor b = tensor(br.v).to(DType::f64).requires_grad_();
  Tensor y = conv2d(x, w, b, stride, pad);
  const Ref yr = ref_conv2d(xr, wr, &br, stride, pad);
  CHECK(max_rel_err(y, yr) < 1e-12);
  const Ref gyr(yr.shape, uniform(yr.numel(), gen));
  y.backward(tensor(gyr.v).reshape(yr.shape).to(DType::f64));
  Ref gxr, gwr;
  ref_conv2d_backward(xr, wr, gyr, stride, pad, gxr, gwr);
  CHECK(max_rel_err(x.grad(), gxr) < 1e-12);
  CHECK(max_rel_err(w.grad(), gwr) < 1e-12);
  Ref gbr(Shape{ws[0]});
  for (int64_t f = 0; f < gyr.numel(); ++f) gbr.v[gyr.unflat(f)[1]] += gyr.v[f];
  CHECK(max_rel_err(b.grad(), gbr) < 1e-12);
}

TEST_CASE("conv2d: large inputs (threaded im2col / col2im, several image chunks) match the direct loops") {
  // 5 images of 64 x 3x3 x 56x56 columns are more than one scratch chunk holds.
  check_large_conv({5, 64, 56, 56}, {4, 64, 3, 3}, {1, 1}, {1, 1});
  check_large_conv({3, 8, 33, 40}, {16, 8, 5, 3}, {2, 3}, {2, 1});
  check_large_conv({2, 32, 30, 30}, {24, 32, 1, 1}, {1, 1}, {0, 0});
}

TEST_CASE("conv2d: f32 inference with a fused bias + ReLU (the CPU's implicit GEMM) matches the direct loops") {
  // f32 products this size run on the AVX-512 kernel where the CPU has one, which then packs
  // the columns straight from the image; elsewhere they take the im2col path.
  struct Geometry {
    Shape xs, ws;
    A2 stride, pad;
  };
  for (const Geometry& c : {Geometry{{2, 16, 30, 31}, {12, 16, 3, 3}, {2, 2}, {1, 1}},
                            Geometry{{3, 40, 20, 20}, {8, 40, 3, 3}, {1, 1}, {1, 1}},
                            Geometry{{2, 3, 40, 36}, {16, 3, 7, 7}, {2, 2}, {3, 3}}}) {
    Generator gen(43);
    // Inputs rounded to f32 first, so that only the f32 accumulation differs.
    auto f32_values = [&](int64_t n) {
      std::vector<double> v = uniform(n, gen);
      for (double& e : v) e = double(float(e));
      return v;
    };
    const Ref xr(c.xs, f32_values(numel_of(c.xs))), wr(c.ws, f32_values(numel_of(c.ws)));
    const Ref br(Shape{c.ws[0]}, f32_values(c.ws[0]));
    const Tensor x = tensor(xr.v).reshape(c.xs).to(DType::f32), w = tensor(wr.v).reshape(c.ws).to(DType::f32);
    const Tensor b = tensor(br.v).to(DType::f32);
    const Tensor y = conv2d(x, w, b, c.stride, c.pad, Epilogue{Tensor(), Activation::Relu});
    Ref yr = ref_conv2d(xr, wr, &br, c.stride, c.pad);
    for (double& e : yr.v) e = std::max(e, 0.0);
    INFO("x ", shape_str(c.xs), " w ", shape_str(c.ws));
    CHECK(max_rel_err(y, yr) < 1e-5);
  }
}

TEST_CASE("index ops: large inputs (threaded kernels) match naive loops, repeated indices accumulate") {
  Generator gen(7);
  const int64_t V = 50, D = 3000, K = 400;
  const Ref wr(Shape{V, D}, uniform(V * D, gen));
  std::vector<int64_t> ids(K);
  Ref idr(Shape{K});
  for (int64_t i = 0; i < K; ++i) idr.v[i] = double(ids[i] = int64_t(gen.below(V)));
  Tensor w = tensor(wr.v).reshape({V, D}).to(DType::f64).requires_grad_();
  Tensor y = embedding(w, tensor(ids));
  CHECK(max_rel_err(y, ref_index_select(wr, 0, idr)) == 0);
  const Ref gr(Shape{K, D}, uniform(K * D, gen));
  y.backward(tensor(gr.v).reshape({K, D}).to(DType::f64));
  CHECK(max_rel_err(w.grad(), ref_index_add(Ref(Shape{V, D}), 0, idr, gr)) < 1e-12);

  // gather / scatter_add along dim 0 of a wide matrix (threads split the other dim).
  Tensor x = tensor(wr.v).reshape({V, D}).to(DType::f64).requires_grad_();
  Ref gidx(Shape{K, D});
  std::vector<int32_t> gi(static_cast<size_t>(K * D));
  for (size_t i = 0; i < gi.size(); ++i) gidx.v[i] = double(gi[i] = int32_t(gen.below(V)));
  Tensor g = gather(x, 0, tensor(gi).reshape({K, D}));
  CHECK(max_rel_err(g, ref_gather(wr, 0, gidx)) == 0);
  const Ref ggr(Shape{K, D}, uniform(K * D, gen));
  g.backward(tensor(ggr.v).reshape({K, D}).to(DType::f64));
  CHECK(max_rel_err(x.grad(), ref_scatter_add(Ref(Shape{V, D}), 0, gidx, ggr)) < 1e-12);
}

// ---- errors ----

template <class E, class F>
void check_throws(F&& f, std::initializer_list<const char*> needles) {
  bool thrown = false;
  try {
    f();
  } catch (const E& e) {
    thrown = true;
    const std::string msg = e.what();
    for (const char* n : needles) CHECK_MESSAGE(msg.find(n) != std::string::npos, "'", n, "' missing from: ", msg);
  } catch (const std::exception& e) {
    FAIL_CHECK("wrong exception type: ", e.what());
  }
  CHECK_MESSAGE(thrown, "nothing thrown");
}

TEST_CASE("index ops: bad indices and shapes throw the right ga::Error") {
  const Tensor x = zeros({5, 2});
  check_throws<IndexError>([&] { index_select(x, 0, tensor(std::vector<int64_t>{0, 7})); },
                           {"index_select", "7", "size 5"});
  check_throws<IndexError>([&] { index_select(x, 1, tensor(std::vector<int32_t>{-1}, {1})); }, {"index_select", "-1"});
  check_throws<IndexError>([&] { index_select(x, 2, tensor(std::vector<int64_t>{0}, {1})); }, {"index_select", "dim 2"});
  check_throws<DTypeError>([&] { index_select(x, 0, tensor({0.0f})); }, {"index_select", "f32"});
  check_throws<ShapeError>([&] { index_select(x, 0, zeros({2, 2}, DType::i64)); }, {"index_select", "[2, 2]"});
  check_throws<IndexError>([&] { embedding(x, tensor(std::vector<int64_t>{1, 5}, {1, 2})); },
                           {"embedding", "5", "size 5"});
  check_throws<ShapeError>([&] { embedding(zeros({5}), tensor(std::vector<int64_t>{1})); }, {"embedding", "[5]"});
  check_throws<IndexError>([&] { gather(x, 1, tensor(std::vector<int32_t>{0, 2}, {1, 2})); }, {"gather", "2", "size 2"});
  check_throws<ShapeError>([&] { gather(x, 1, tensor(std::vector<int64_t>{0, 1})); }, {"gather", "rank"});
  check_throws<ShapeError>([&] { gather(x, 1, zeros({6, 1}, DType::i64)); }, {"gather", "[6, 1]", "[5, 2]"});
  check_throws<IndexError>([&] { scatter_add(x, 0, tensor(std::vector<int64_t>{9}, {1, 1}), zeros({1, 1})); },
                           {"scatter_add", "9"});
  check_throws<ShapeError>([&] { scatter_add(x, 0, zeros({1, 1}, DType::i64), zeros({1, 2})); }, {"scatter_add"});
  check_throws<IndexError>([&] { index_add(x, 0, tensor(std::vector<int64_t>{5}, {1}), zeros({1, 2})); },
                           {"index_add", "5"});
  check_throws<ShapeError>([&] { index_add(x, 0, tensor(std::vector<int64_t>{1}, {1}), zeros({2, 2})); },
                           {"index_add", "[2, 2]"});
  // A rejected index leaves the input untouched (checked before any write).
  CHECK(sum(x).item<double>() == 0);
}

TEST_CASE("index ops: non-contiguous index tensors") {
  const Tensor x = tensor(std::vector<double>{0, 1, 2, 3, 4, 5}, {3, 2});
  const Tensor every_other = tensor(std::vector<int64_t>{2, 9, 0, 9, 2}).slice(0, 0, 5, 2);  // [2, 0, 2]
  CHECK(index_select(x, 0, every_other).to_vector<double>() == std::vector<double>{4, 5, 0, 1, 4, 5});
  const Tensor idx_t = tensor(std::vector<int32_t>{1, 1, 0, 1}, {2, 2}).t();  // [[1, 0], [1, 1]]
  CHECK(gather(x, 1, idx_t).to_vector<double>() == std::vector<double>{1, 0, 3, 3});
  CHECK(scatter_add(zeros({2, 2}, DType::f64), 0, idx_t, ones({2, 2}, DType::f64)).to_vector<double>() ==
        std::vector<double>{0, 1, 2, 1});
  CHECK(embedding(x, tensor(std::vector<int64_t>{0, 1, 2, 1}, {2, 2}).t()).to_vector<double>() ==
        std::vector<double>{0, 1, 4, 5, 2, 3, 2, 3});
}

TEST_CASE("concat and stack: mismatches name the op, the tensor and the shapes") {
  check_throws<ShapeError>([] { concat({zeros({2, 3}), zeros({2, 3}), zeros({2, 4})}, 0); },
                           {"concat", "tensor 2", "[2, 4]", "[2, 3]"});
  check_throws<ShapeError>([] { concat({zeros({2, 3}), zeros({2})}, 0); }, {"concat", "tensor 1", "[2]"});
  check_throws<DTypeError>([] { concat({zeros({2, 3}), zeros({2, 3}, DType::f64)}, 1); }, {"concat", "tensor 1", "f64"});
  check_throws<ValueError>([] { concat({}, 0); }, {"concat"});
  check_throws<IndexError>([] { concat({zeros({2, 3})}, 2); }, {"concat", "dim 2"});
  check_throws<ShapeError>([] { stack({zeros({2, 3}), zeros({3, 2})}); }, {"stack", "tensor 1", "[3, 2]", "[2, 3]"});
  check_throws<DTypeError>([] { stack({zeros({2}), zeros({2}, DType::i64)}); }, {"stack", "i64"});
  CHECK(concat({zeros({2, 3}), ones({2, 1})}, -1).shape() == Shape{2, 4});
  // Not differentiable, but index and mask tensors join too.
  CHECK(concat({tensor(std::vector<int64_t>{1, 2}), tensor(std::vector<int64_t>{3}, {1})}).to_vector<int64_t>() ==
        std::vector<int64_t>{1, 2, 3});
  CHECK(stack({tensor(std::vector<int32_t>{1, 2}), tensor(std::vector<int32_t>{3, 4})}, 1).to_vector<int32_t>() ==
        std::vector<int32_t>{1, 3, 2, 4});
  CHECK(stack({zeros({2, 3}), ones({2, 3})}, -1).shape() == Shape{2, 3, 2});
}

TEST_CASE("conv2d and pooling: bad arguments throw the right ga::Error") {
  const Tensor x = zeros({1, 3, 5, 5});
  check_throws<ShapeError>([&] { conv2d(x, zeros({4, 2, 3, 3})); }, {"conv2d", "3 channels", "[4, 2, 3, 3]"});
  check_throws<ShapeError>([&] { conv2d(zeros({3, 5, 5}), zeros({4, 3, 3, 3})); }, {"conv2d", "[3, 5, 5]"});
  check_throws<ShapeError>([&] { conv2d(x, zeros({4, 3, 6, 3})); }, {"conv2d", "[1, 3, 5, 5]", "6x3"});
  check_throws<ShapeError>([&] { conv2d(x, zeros({4, 3, 3, 3}), zeros({3})); }, {"conv2d", "bias", "[3]"});
  check_throws<ValueError>([&] { conv2d(x, zeros({4, 3, 3, 3}), Tensor(), {0, 1}); }, {"conv2d", "stride"});
  check_throws<ValueError>([&] { conv2d(x, zeros({4, 3, 3, 3}), Tensor(), {1, 1}, {-1, 0}); }, {"conv2d", "padding"});
  check_throws<DTypeError>([&] { conv2d(x, zeros({4, 3, 3, 3}, DType::f64)); }, {"conv2d", "f64"});
  check_throws<DTypeError>([&] { conv2d(zeros({1, 3, 5, 5}, DType::i32), zeros({4, 3, 3, 3})); }, {"conv2d", "i32"});
  CHECK(conv2d(x, zeros({4, 3, 7, 7}), Tensor(), {1, 1}, {1, 1}).shape() == Shape{1, 4, 1, 1});

  check_throws<ValueError>([&] { avg_pool2d(x, {2, 2}, {1, 1}, {2, 0}); }, {"avg_pool2d", "half"});
  check_throws<ValueError>([&] { avg_pool2d(x, {0, 2}); }, {"avg_pool2d", "kernel"});
  check_throws<ShapeError>([&] { avg_pool2d(x, {6, 2}); }, {"avg_pool2d", "[1, 3, 5, 5]"});
  check_throws<ShapeError>([&] { avg_pool2d(zeros({5, 5}), {2, 2}); }, {"avg_pool2d", "[5, 5]"});
  check_throws<ValueError>([&] { adaptive_avg_pool2d(x, {0, 2}); }, {"adaptive_avg_pool2d", "output size"});
  check_throws<ShapeError>([&] { adaptive_avg_pool2d(zeros({1, 3, 0, 5}), {1, 1}); }, {"adaptive_avg_pool2d", "[1, 3, 0, 5]"});
}

}  // namespace
}  // namespace ga::test
