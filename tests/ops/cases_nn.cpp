// Driver cases for the nn ops (softmax, log_softmax, layer/batch norm, dropout, normalize,
// cosine similarity), attention and the losses; and checks that bad input throws the
// right ga::Error subclass naming the op, plus dropout's randomness contract.
#include <doctest/doctest.h>

#include <algorithm>
#include <cmath>
#include <limits>

#include "driver.hpp"

namespace ga::test {
namespace {

using S = std::vector<std::vector<InputSpec>>;
using I = InputSpec;
using Line = std::vector<double>;

int64_t wrap(int64_t d, int64_t nd) { return d < 0 ? d + std::max<int64_t>(nd, 1) : d; }

/// Calls f(line, where) on every 1-d line of shape s along dim d; where(j) is the flat
/// index of element j of the line. A 0-d shape is one line of one element.
void for_lines(const Shape& s, int64_t d, const std::function<void(int64_t n, const std::function<int64_t(int64_t)>&)>& f) {
  if (s.empty()) {
    f(1, [](int64_t) { return int64_t(0); });
    return;
  }
  int64_t outer = 1, inner = 1;
  for (int64_t i = 0; i < d; ++i) outer *= s[i];
  for (size_t i = static_cast<size_t>(d) + 1; i < s.size(); ++i) inner *= s[i];
  const int64_t n = s[d];
  for (int64_t o = 0; o < outer; ++o)
    for (int64_t in = 0; in < inner; ++in) f(n, [=](int64_t j) { return (o * n + j) * inner + in; });
}

/// y has x's shape; each line along d is f(line of x).
Ref ref_lines(const Ref& x, int64_t d, const std::function<Line(const Line&)>& f) {
  Ref o(x.shape);
  d = wrap(d, x.dim());
  for_lines(x.shape, d, [&](int64_t n, const std::function<int64_t(int64_t)>& at) {
    Line l(static_cast<size_t>(n));
    for (int64_t j = 0; j < n; ++j) l[j] = x.v[at(j)];
    const Line r = f(l);
    for (int64_t j = 0; j < n; ++j) o.v[at(j)] = r[j];
  });
  return o;
}

/// x broadcast to s.
Ref ref_expand(const Ref& x, const Shape& s) {
  Ref o(s);
  for (int64_t i = 0; i < o.numel(); ++i) o.v[i] = broadcast_at(x, o.unflat(i));
  return o;
}

Line softmax_line(const Line& x, bool log) {
  double m = -INFINITY;
  for (double v : x) m = std::max(m, v);
  double s = 0;
  for (double v : x) s += std::exp(v - m);
  Line y(x.size());
  for (size_t j = 0; j < x.size(); ++j) y[j] = log ? x[j] - m - std::log(s) : std::exp(x[j] - m) / s;
  return y;
}

double norm2(const Line& x) {
  double s = 0;
  for (double v : x) s += v * v;
  return std::sqrt(s);
}

// ---- softmax, log_softmax ----

OpCase softmax_case(const char* op, int64_t dim, S shapes, const std::string& what = "") {
  const bool log = std::string(op) == "log_softmax";
  OpCase c;
  c.op = op;
  c.name = cat(op, " along dim ", dim, what);
  c.shapes = std::move(shapes);
  c.fn = [log, dim](const std::vector<Tensor>& x) { return log ? log_softmax(x[0], dim) : softmax(x[0], dim); };
  c.reference = [log, dim](const std::vector<Ref>& x) {
    return ref_lines(x[0], dim, [log](const Line& l) { return softmax_line(l, log); });
  };
  return c;
}

S softmax_last_shapes() {
  // Rows of 16, 33 and 50 cover the CPU kernel's whole SIMD packets, the overlapping last
  // packet of a longer row, and a row of exactly one packet (f32 on AVX-512; two for f64).
  return {{I::f({5, 7})}, {I::f({2, 3, 4})}, {I::f({1})},     {I::f({})},     {I::f({0, 3})},
          {I::f({3, 0})}, {I::f({4, 1})},    {I::f({2, 16})}, {I::f({3, 33})}, {I::f({2, 50})}};
}

GA_OP_CASE(softmax_case("softmax", -1, softmax_last_shapes()));
GA_OP_CASE(softmax_case("softmax", 0, {{I::f({5, 7})}, {I::f({2, 3, 4})}, {I::f({1, 3})}}));
GA_OP_CASE(softmax_case("softmax", 1, {{I::f({2, 3, 4})}, {I::f({2, 1, 4})}, {I::f({2, 0, 4})}}));
// exp(100) overflows f32: passes only if the maximum is subtracted first.
GA_OP_CASE(softmax_case("softmax", -1, {{I::f({3, 6}, 80, 100)}}, ", large inputs"));
GA_OP_CASE(softmax_case("log_softmax", -1, softmax_last_shapes()));
GA_OP_CASE(softmax_case("log_softmax", 0, {{I::f({5, 7})}, {I::f({2, 3, 4})}, {I::f({1, 3})}}));
GA_OP_CASE(softmax_case("log_softmax", -2, {{I::f({2, 3, 4})}, {I::f({2, 1, 4})}}));
GA_OP_CASE(softmax_case("log_softmax", -1, {{I::f({3, 6}, 80, 100)}}, ", large inputs"));

// ---- layer_norm ----

/// Layer norm of x over the trailing dims of size n; w and b may be empty Refs.
Ref ref_layer_norm(const Ref& x, int64_t n, const Ref* w, const Ref* b, double eps) {
  Ref o(x.shape);
  const int64_t rows = n ? x.numel() / n : 0;
  for (int64_t r = 0; r < rows; ++r) {
    double mu = 0, var = 0;
    for (int64_t j = 0; j < n; ++j) mu += x.v[r * n + j];
    mu /= double(n);
    for (int64_t j = 0; j < n; ++j) var += (x.v[r * n + j] - mu) * (x.v[r * n + j] - mu);
    var /= double(n);
    for (int64_t j = 0; j < n; ++j) {
      double y = (x.v[r * n + j] - mu) / std::sqrt(var + eps);
      if (w) y *= w->v[j];
      if (b) y += b->v[j];
      o.v[r * n + j] = y;
    }
  }
  return o;
}

GA_OP_CASE([] {
  OpCase c;
  c.op = "layer_norm";
  c.name = "layer_norm with weight and bias (normalized_shape = weight's shape)";
  c.shapes = {{I::f({4, 6}), I::f({6}), I::f({6})},
              {I::f({2, 3, 4}), I::f({3, 4}), I::f({3, 4})},
              {I::f({2, 3, 4}), I::f({4}), I::f({4})},
              {I::f({5, 1}), I::f({1}), I::f({1})},
              {I::f({3, 40}), I::f({40}), I::f({40})},
              {I::f({0, 4}), I::f({4}), I::f({4})},
              {I::f({2, 0}), I::f({0}), I::f({0})}};
  c.fn = [](const std::vector<Tensor>& x) { return layer_norm(x[0], x[1].shape(), x[1], x[2]); };
  c.reference = [](const std::vector<Ref>& x) {
    return ref_layer_norm(x[0], x[1].numel(), &x[1], &x[2], 1e-5);
  };
  return c;
}());
GA_OP_CASE([] {
  OpCase c;
  c.op = "layer_norm";
  c.name = "layer_norm without weight and bias, eps 0.1";
  c.shapes = {{I::f({3, 5})}, {I::f({4})}, {I::f({2, 2, 3})}};
  c.fn = [](const std::vector<Tensor>& x) { return layer_norm(x[0], {x[0].size(-1)}, Tensor(), Tensor(), 0.1); };
  c.reference = [](const std::vector<Ref>& x) {
    return ref_layer_norm(x[0], x[0].shape.back(), nullptr, nullptr, 0.1);
  };
  return c;
}());
GA_OP_CASE([] {
  OpCase c;
  c.op = "layer_norm";
  c.name = "layer_norm with weight only, rows offset far from 0";
  c.shapes = {{I::f({3, 8}, 50, 52), I::f({8})}};
  c.fn = [](const std::vector<Tensor>& x) { return layer_norm(x[0], {8}, x[1]); };
  c.reference = [](const std::vector<Ref>& x) { return ref_layer_norm(x[0], 8, &x[1], nullptr, 1e-5); };
  return c;
}());
GA_OP_CASE([] {
  OpCase c;
  c.op = "layer_norm";
  c.name = "layer_norm with bias only";
  c.shapes = {{I::f({3, 6}), I::f({6})}, {I::f({2, 40}), I::f({40})}};
  c.fn = [](const std::vector<Tensor>& x) { return layer_norm(x[0], {x[0].size(-1)}, Tensor(), x[1]); };
  c.reference = [](const std::vector<Ref>& x) { return ref_layer_norm(x[0], x[0].shape.back(), nullptr, &x[1], 1e-5); };
  return c;
}());
GA_OP_CASE([] {
  OpCase c;
  c.op = "layer_norm";
  // The mean's rounding (half an ulp of 1001 is 3e-5) divided by the spread (0.6) would give
  // 5e-5 errors; the corrected two-pass mean removes it.
  c.name = "layer_norm, rows offset 1000 times their spread";
  c.shapes = {{I::f({4, 16}, 1000, 1002)}};
  c.fn = [](const std::vector<Tensor>& x) { return layer_norm(x[0], {16}); };
  c.reference = [](const std::vector<Ref>& x) { return ref_layer_norm(x[0], 16, nullptr, nullptr, 1e-5); };
  return c;
}());

// ---- batch_norm ----

Ref ref_batch_norm(const std::vector<Ref>& x, bool affine, double eps) {
  Ref o(x[0].shape);
  for (int64_t i = 0; i < o.numel(); ++i) {
    const int64_t ch = o.unflat(i)[1];
    double y = (x[0].v[i] - x[1].v[ch]) / std::sqrt(x[2].v[ch] + eps);
    if (affine) y = y * x[3].v[ch] + x[4].v[ch];
    o.v[i] = y;
  }
  return o;
}

std::vector<InputSpec> bn_inputs(Shape xs, bool affine) {
  const int64_t C = xs[1];
  std::vector<InputSpec> r{I::f(std::move(xs)), I::f({C}), I::f({C}, 0.5, 2.0)};
  if (affine) r.insert(r.end(), {I::f({C}), I::f({C})});
  return r;
}

GA_OP_CASE([] {
  OpCase c;
  c.op = "batch_norm";
  c.name = "batch_norm (inference) with weight and bias";
  c.shapes = {bn_inputs({4, 3}, true), bn_inputs({2, 3, 2, 2}, true), bn_inputs({2, 1, 3}, true),
              bn_inputs({0, 2, 3}, true)};
  c.fn = [](const std::vector<Tensor>& x) { return batch_norm(x[0], x[1], x[2], x[3], x[4]); };
  c.reference = [](const std::vector<Ref>& x) { return ref_batch_norm(x, true, 1e-5); };
  return c;
}());
GA_OP_CASE([] {
  OpCase c;
  c.op = "batch_norm";
  c.name = "batch_norm (inference) without weight and bias, eps 0.01";
  c.shapes = {bn_inputs({3, 4, 2}, false), bn_inputs({1, 2}, false)};
  c.fn = [](const std::vector<Tensor>& x) { return batch_norm(x[0], x[1], x[2], Tensor(), Tensor(), 0.01); };
  c.reference = [](const std::vector<Ref>& x) { return ref_batch_norm(x, false, 0.01); };
  return c;
}());

// ---- dropout (training mode is checked below: its mask is random) ----

GA_OP_CASE([] {
  OpCase c;
  c.op = "dropout";
  c.name = "dropout in eval mode is the identity";
  c.shapes = {{I::f({4, 5})}, {I::f({})}, {I::f({0, 3})}};
  c.fn = [](const std::vector<Tensor>& x) { return dropout(x[0], 0.5, false); };
  c.reference = [](const std::vector<Ref>& x) { return x[0]; };
  return c;
}());
GA_OP_CASE([] {
  OpCase c;
  c.op = "dropout";
  c.name = "dropout with p = 0 in training mode is the identity";
  c.shapes = {{I::f({3, 4})}, {I::f({2, 1, 3})}};
  c.fn = [](const std::vector<Tensor>& x) { return dropout(x[0], 0.0, true); };
  c.reference = [](const std::vector<Ref>& x) { return x[0]; };
  return c;
}());

// ---- normalize ----

OpCase normalize_case(int64_t dim, double eps, S shapes) {
  OpCase c;
  c.op = "normalize";
  c.name = cat("normalize along dim ", dim, ", eps ", eps);
  c.shapes = std::move(shapes);
  c.fn = [dim, eps](const std::vector<Tensor>& x) { return normalize(x[0], dim, eps); };
  c.reference = [dim, eps](const std::vector<Ref>& x) {
    return ref_lines(x[0], dim, [eps](const Line& l) {
      const double d = std::max(norm2(l), eps);
      Line y(l.size());
      for (size_t j = 0; j < l.size(); ++j) y[j] = l[j] / d;
      return y;
    });
  };
  return c;
}

GA_OP_CASE(normalize_case(-1, 1e-12,
                          {{I::f({4, 5})}, {I::f({2, 3, 4})}, {I::f({3, 1}).nonzero()}, {I::f({}).nonzero()},
                           {I::f({0, 3})}, {I::f({3, 0})}}));
GA_OP_CASE(normalize_case(0, 1e-12, {{I::f({4, 5})}, {I::f({1, 3}).nonzero()}}));
GA_OP_CASE(normalize_case(1, 1e-12, {{I::f({2, 3, 4})}}));
// Norms of 4 values in [-1, 1] fall on both sides of 1.2: both gradient branches run.
GA_OP_CASE(normalize_case(-1, 1.2, {{I::f({8, 4}, -1, 1)}}));

// ---- cosine_similarity ----

OpCase cosine_case(int64_t dim, double eps, S shapes) {
  OpCase c;
  c.op = "cosine_similarity";
  c.name = cat("cosine_similarity along dim ", dim, ", eps ", eps);
  c.shapes = std::move(shapes);
  c.fn = [dim, eps](const std::vector<Tensor>& x) { return cosine_similarity(x[0], x[1], dim, eps); };
  c.reference = [dim, eps](const std::vector<Ref>& x) {
    const Shape s = ref_broadcast(x[0].shape, x[1].shape);
    const Ref a = ref_expand(x[0], s), b = ref_expand(x[1], s);
    const int64_t d = wrap(dim, int64_t(s.size()));
    Shape os = s;
    if (!os.empty()) os.erase(os.begin() + d);
    Ref o(os);
    int64_t k = 0;
    // for_lines visits lines in row-major order of the remaining dims.
    for_lines(s, d, [&](int64_t n, const std::function<int64_t(int64_t)>& at) {
      Line la, lb;
      double dot = 0;
      for (int64_t j = 0; j < n; ++j) {
        la.push_back(a.v[at(j)]);
        lb.push_back(b.v[at(j)]);
        dot += a.v[at(j)] * b.v[at(j)];
      }
      o.v[k++] = dot / (std::max(norm2(la), eps) * std::max(norm2(lb), eps));
    });
    return o;
  };
  return c;
}

GA_OP_CASE(cosine_case(-1, 1e-8,
                       {{I::f({4, 5}), I::f({4, 5})},
                        {I::f({3, 1, 4}), I::f({1, 2, 4})},
                        {I::f({2, 3}), I::f({3})},
                        {I::f({1}).nonzero(), I::f({1}).nonzero()},
                        {I::f({3, 0}), I::f({3, 0})},
                        {I::f({0, 4}), I::f({1, 4})}}));
// dim 0 where one operand is broadcast along the reduced dim (its norm counts the copies).
GA_OP_CASE(cosine_case(0, 1e-8, {{I::f({1, 3}), I::f({4, 3})}, {I::f({5, 3}), I::f({5, 1})}, {I::f({3}), I::f({2, 3})}}));
// Norms of 3 values in [-1, 1] fall on both sides of 0.9: the clamp is live for some rows.
GA_OP_CASE(cosine_case(1, 0.9, {{I::f({8, 3}, -1, 1), I::f({8, 3}, -1, 1)}}));

// ---- scaled_dot_product_attention ----

/// Naive attention. mask: none, additive (float) or boolean (true = attend); rows with
/// every key masked give zeros. keep_row(i) further masks whole query rows (for cases
/// that build fully masked rows on purpose).
enum class MaskKind { None, Float, Bool };
Ref ref_attention(const std::vector<Ref>& x, MaskKind mk, bool causal, double scale,
                  const std::function<bool(int64_t)>& keep_row = nullptr) {
  const Ref &q = x[0], &k = x[1], &v = x[2];
  const int64_t L = q.shape[q.dim() - 2], E = q.shape[q.dim() - 1], Sk = k.shape[k.dim() - 2],
                Ev = v.shape[v.dim() - 1];
  Shape batch = ref_broadcast(ref_broadcast(Shape(q.shape.begin(), q.shape.end() - 2), Shape(k.shape.begin(), k.shape.end() - 2)),
                              Shape(v.shape.begin(), v.shape.end() - 2));
  if (mk != MaskKind::None) {
    Shape mb(x[3].shape.begin(), x[3].shape.end() - std::min<int64_t>(2, x[3].dim()));
    batch = ref_broadcast(batch, mb);
  }
  const double sc = std::isnan(scale) ? (E > 0 ? 1 / std::sqrt(double(E)) : 1.0) : scale;
  Shape os = batch;
  os.insert(os.end(), {L, Ev});
  Ref o(os);
  const Ref bshape(batch);
  for (int64_t bi = 0; bi < bshape.numel(); ++bi) {
    const std::vector<int64_t> b = bshape.unflat(bi);
    auto idx = [&](int64_t r, int64_t col) {
      std::vector<int64_t> i = b;
      i.push_back(r);
      i.push_back(col);
      return i;
    };
    for (int64_t i = 0; i < L; ++i) {
      Line s(static_cast<size_t>(Sk));
      bool any = false;
      for (int64_t j = 0; j < Sk; ++j) {
        double dot = 0;
        for (int64_t e = 0; e < E; ++e) dot += broadcast_at(q, idx(i, e)) * broadcast_at(k, idx(j, e));
        s[j] = dot * sc;
        bool live = !causal || j <= i;
        if (mk == MaskKind::Float) s[j] += broadcast_at(x[3], idx(i, j));
        if (mk == MaskKind::Bool) live = live && broadcast_at(x[3], idx(i, j)) != 0;
        if (keep_row && !keep_row(i)) live = false;
        if (!live) s[j] = -INFINITY;
        any = any || live;
      }
      const Line p = any ? softmax_line(s, false) : Line(static_cast<size_t>(Sk), 0.0);
      for (int64_t c = 0; c < Ev; ++c) {
        double acc = 0;
        for (int64_t j = 0; j < Sk; ++j) acc += p[j] * broadcast_at(v, idx(j, c));
        o.at(idx(i, c)) = acc;
      }
    }
  }
  return o;
}

std::vector<InputSpec> qkv(Shape q, Shape k, Shape v) { return {I::f(std::move(q)), I::f(std::move(k)), I::f(std::move(v))}; }
std::vector<InputSpec> qkvm(Shape q, Shape k, Shape v, InputSpec m) {
  auto r = qkv(std::move(q), std::move(k), std::move(v));
  r.push_back(std::move(m));
  return r;
}

OpCase sdpa_case(const std::string& name) {
  OpCase c;
  c.op = "scaled_dot_product_attention";
  c.name = name;
  return c;
}

GA_OP_CASE([] {
  OpCase c = sdpa_case("attention without a mask (batch, heads, broadcast batch, size-1 and empty dims)");
  c.shapes = {qkv({2, 3, 4}, {2, 5, 4}, {2, 5, 6}), qkv({3, 4}, {5, 4}, {5, 2}),
              qkv({2, 2, 3, 4}, {2, 2, 5, 4}, {2, 2, 5, 3}), qkv({2, 3, 4}, {5, 4}, {5, 2}),
              qkv({1, 1, 1}, {1, 1, 1}, {1, 1, 1}), qkv({2, 3, 4}, {2, 0, 4}, {2, 0, 3}),
              qkv({2, 0, 4}, {2, 5, 4}, {2, 5, 3}), qkv({2, 3, 0}, {2, 4, 0}, {2, 4, 2}),
              // Forward only: two 64-key panels of scores, two 64-column blocks of p @ v.
              {I::f({2, 9, 20}).no_grad(), I::f({2, 70, 20}).no_grad(), I::f({2, 70, 70}).no_grad()}};
  c.fn = [](const std::vector<Tensor>& x) { return scaled_dot_product_attention(x[0], x[1], x[2]); };
  c.reference = [](const std::vector<Ref>& x) { return ref_attention(x, MaskKind::None, false, NAN); };
  return c;
}());
GA_OP_CASE([] {
  OpCase c = sdpa_case("attention with an explicit scale 0.3");
  c.shapes = {qkv({2, 3, 4}, {2, 5, 4}, {2, 5, 3}), qkv({1, 2, 2, 3}, {1, 2, 2, 3}, {1, 2, 2, 1})};
  c.fn = [](const std::vector<Tensor>& x) {
    return scaled_dot_product_attention(x[0], x[1], x[2], Tensor(), false, 0.3);
  };
  c.reference = [](const std::vector<Ref>& x) { return ref_attention(x, MaskKind::None, false, 0.3); };
  return c;
}());
GA_OP_CASE([] {
  OpCase c = sdpa_case("attention with an additive float mask (gradient to the mask too)");
  c.shapes = {qkvm({2, 2, 3, 4}, {2, 2, 5, 4}, {2, 2, 5, 3}, I::f({3, 5})),
              qkvm({2, 3, 4}, {2, 5, 4}, {2, 5, 4}, I::f({2, 1, 5})),
              qkvm({1, 1, 2}, {1, 1, 2}, {1, 1, 2}, I::f({}))};
  c.fn = [](const std::vector<Tensor>& x) { return scaled_dot_product_attention(x[0], x[1], x[2], x[3]); };
  c.reference = [](const std::vector<Ref>& x) { return ref_attention(x, MaskKind::Float, false, NAN); };
  return c;
}());
GA_OP_CASE([] {
  OpCase c = sdpa_case("attention with a boolean mask whose query row 0 is fully masked");
  c.shapes = {qkvm({2, 3, 4}, {2, 5, 4}, {2, 5, 3}, I::mask({3, 5})),
              qkvm({2, 2, 3, 4}, {2, 2, 5, 4}, {2, 2, 5, 2}, I::mask({2, 1, 3, 5}))};
  c.fn = [](const std::vector<Tensor>& x) {
    Tensor m = x[3];
    const int64_t L = m.size(-2);
    std::vector<double> keep(static_cast<size_t>(L), 1.0);
    keep[0] = 0.0;
    Tensor rows = tensor(keep, {L, 1});
    m = gt(mul(m.to(DType::f64), rows), scalar_tensor(0.5, DType::f64));
    return scaled_dot_product_attention(x[0], x[1], x[2], m);
  };
  c.reference = [](const std::vector<Ref>& x) {
    return ref_attention(x, MaskKind::Bool, false, NAN, [](int64_t i) { return i != 0; });
  };
  return c;
}());
GA_OP_CASE([] {
  // A -inf row reaches the scores through add (unlike where with a bool mask), so this is
  // the case where a nan softmax backward would leak into every gradient.
  OpCase c = sdpa_case("attention with a float mask whose query row 0 is all -inf");
  c.shapes = {qkvm({2, 3, 4}, {2, 5, 4}, {2, 5, 3}, I::f({3, 5})),
              qkvm({2, 2, 2, 3}, {2, 2, 4, 3}, {2, 2, 4, 2}, I::f({2, 1, 2, 4}))};
  c.fn = [](const std::vector<Tensor>& x) {
    const int64_t L = x[3].size(-2);
    std::vector<double> row0(static_cast<size_t>(L), 0.0);
    row0[0] = -INFINITY;
    Tensor m = add(x[3], tensor(row0, {L, 1}).to(x[3].dtype()));
    return scaled_dot_product_attention(x[0], x[1], x[2], m);
  };
  c.reference = [](const std::vector<Ref>& x) {
    return ref_attention(x, MaskKind::Float, false, NAN, [](int64_t i) { return i != 0; });
  };
  return c;
}());
GA_OP_CASE([] {
  OpCase c = sdpa_case("causal attention (L = S, L < S, L > S)");
  c.shapes = {qkv({1, 4, 3}, {1, 4, 3}, {1, 4, 2}), qkv({2, 3, 2}, {2, 5, 2}, {2, 5, 2}),
              qkv({5, 2}, {3, 2}, {3, 3}), qkv({2, 2, 1, 4}, {2, 2, 1, 4}, {2, 2, 1, 4}),
              {I::f({1, 77, 17}).no_grad(), I::f({1, 77, 17}).no_grad(), I::f({1, 77, 66}).no_grad()}};
  c.fn = [](const std::vector<Tensor>& x) { return scaled_dot_product_attention(x[0], x[1], x[2], Tensor(), true); };
  c.reference = [](const std::vector<Ref>& x) { return ref_attention(x, MaskKind::None, true, NAN); };
  return c;
}());

// ---- losses ----

const char* reduction_name(Reduction r) {
  return r == Reduction::None ? "none" : r == Reduction::Mean ? "mean" : "sum";
}
Ref ref_reduce(const Ref& per, Reduction r) {
  if (r == Reduction::None) return per;
  double s = 0;
  for (double v : per.v) s += v;
  if (r == Reduction::Mean) s = per.numel() ? s / double(per.numel()) : NAN;
  return Ref(Shape{}, {s});
}
I target(Shape s, int64_t classes, DType dt = DType::i64) {
  I t = I::index(std::move(s), classes);
  t.index_dtype = dt;
  return t;
}
S class_shapes(double lo = -2, double hi = 2) {
  return {{I::f({5, 4}, lo, hi), target({5}, 4)},
          {I::f({6, 3}, lo, hi), target({6}, 3, DType::i32)},
          {I::f({1, 1}, lo, hi), target({1}, 1)},
          {I::f({3, 1}, lo, hi), target({3}, 1)},
          {I::f({0, 4}, lo, hi), target({0}, 4)}};
}

OpCase nll_case(Reduction r) {
  OpCase c;
  c.op = "nll_loss";
  c.name = cat("nll_loss, reduction ", reduction_name(r));
  c.shapes = class_shapes();
  c.fn = [r](const std::vector<Tensor>& x) { return nll_loss(x[0], x[1], r); };
  c.reference = [r](const std::vector<Ref>& x) {
    const int64_t N = x[0].shape[0];
    Ref per(Shape{N});
    for (int64_t i = 0; i < N; ++i) per.v[i] = -x[0].at({i, int64_t(x[1].v[i])});
    return ref_reduce(per, r);
  };
  return c;
}
GA_OP_CASE(nll_case(Reduction::Mean));
GA_OP_CASE(nll_case(Reduction::Sum));
GA_OP_CASE(nll_case(Reduction::None));

OpCase cross_entropy_case(double eps, Reduction r, double lo = -2, double hi = 2) {
  OpCase c;
  c.op = "cross_entropy";
  c.name = cat("cross_entropy, label_smoothing ", eps, ", reduction ", reduction_name(r), ", logits in [", lo, ", ", hi, ")");
  c.shapes = class_shapes(lo, hi);
  c.fn = [eps, r](const std::vector<Tensor>& x) { return cross_entropy(x[0], x[1], eps, r); };
  c.reference = [eps, r](const std::vector<Ref>& x) {
    const int64_t N = x[0].shape[0], C = x[0].shape[1];
    Ref per(Shape{N});
    for (int64_t i = 0; i < N; ++i) {
      Line row(x[0].v.begin() + i * C, x[0].v.begin() + (i + 1) * C);
      const Line lsm = softmax_line(row, true);
      double mean_neg = 0;
      for (double v : lsm) mean_neg -= v / double(C);
      per.v[i] = (1 - eps) * -lsm[static_cast<size_t>(x[1].v[i])] + eps * mean_neg;
    }
    return ref_reduce(per, r);
  };
  return c;
}
GA_OP_CASE(cross_entropy_case(0.0, Reduction::Mean));
GA_OP_CASE(cross_entropy_case(0.0, Reduction::None));
GA_OP_CASE(cross_entropy_case(0.1, Reduction::Mean));
GA_OP_CASE(cross_entropy_case(0.25, Reduction::Sum));
GA_OP_CASE(cross_entropy_case(0.3, Reduction::None));
GA_OP_CASE(cross_entropy_case(1.0, Reduction::Mean));
GA_OP_CASE(cross_entropy_case(0.1, Reduction::Mean, 60, 90));  // exp overflows f32 unless shifted

// ---- errors ----

/// Runs f and checks that it throws exactly an E (not another ga::Error) whose message names `op`.
template <class E, class F>
void check_throws(const char* op, F&& f) {
  try {
    f();
  } catch (const E& e) {
    CHECK_MESSAGE(std::string(e.what()).find(op) != std::string::npos, "message does not name ", op, ": ", e.what());
    return;
  } catch (const std::exception& e) {
    FAIL_CHECK("expected another exception type from ", op, ", got: ", e.what());
    return;
  }
  FAIL_CHECK("expected ", op, " to throw");
}

}  // namespace

TEST_CASE("softmax and attention: a nan anywhere in a row makes the whole row nan (as PyTorch)") {
  // The kernel reads a row in SIMD packets with an overlapping last one; a nan in any lane,
  // the first, one in the middle, or the last, must reach every weight of its row, and no
  // other row.
  for (int64_t n : {5, 16, 33, 50}) {
    for (int64_t at : {int64_t(0), n / 2, n - 1}) {
      for (DType dt : {DType::f32, DType::f64}) {
        CAPTURE(n);
        CAPTURE(at);
        std::vector<double> v(static_cast<size_t>(2 * n));
        for (size_t j = 0; j < v.size(); ++j) v[j] = std::sin(double(j));
        v[static_cast<size_t>(n + at)] = NAN;  // row 1
        const Tensor x = tensor(v, {2, n}).to(dt);
        for (bool log : {false, true}) {
          const std::vector<double> y = (log ? log_softmax(x, -1) : softmax(x, -1)).to(DType::f64).to_vector<double>();
          for (int64_t j = 0; j < n; ++j) {
            CHECK(!std::isnan(y[static_cast<size_t>(j)]));
            CHECK(std::isnan(y[static_cast<size_t>(n + j)]));
          }
        }
        // Attention scores q k^T with one nan in k: every query row attends to that key.
        const Tensor q = ones({1, 3, 4}, dt), k = x.reshape({1, 2 * n, 1}).expand({1, 2 * n, 4}).contiguous();
        const std::vector<double> o =
            scaled_dot_product_attention(q, k, ones({1, 2 * n, 2}, dt)).to(DType::f64).to_vector<double>();
        for (double e : o) CHECK(std::isnan(e));
      }
    }
  }
}

TEST_CASE("attention: the fused f32 kernel on our products and on Eigen's, against a double loop") {
  // Inference takes the fused kernel; in f32 on an AVX-512 CPU its products are our own
  // (4 rows x 64 columns a block, k^T by 16 x 16 transposes), else Eigen's. Sizes around
  // the block: keys and value columns past 64 (two and three blocks), rows not a multiple
  // of 4, causal with L > S, and q, k, v as strided views of one packed qkv (the CLIP towers').
  struct Case {
    int64_t B, H, L, S, E, Ev;
    bool causal, packed;
  };
  const std::vector<Case> cases{{1, 12, 50, 50, 64, 64, false, true}, {2, 3, 5, 37, 70, 33, false, false},
                                {1, 2, 77, 77, 17, 66, true, false},  {1, 2, 9, 130, 20, 130, false, false},
                                {2, 1, 7, 3, 16, 5, true, false},     {3, 8, 13, 13, 64, 64, true, true}};
  Generator g(21);
  NoGradGuard no_grad;
  for (const Case& c : cases) {
    Tensor q, k, v;
    if (c.packed) {  // [B, L, 3 H E] split into heads, as multi_head_attention does
      const Tensor qkv = randn({c.B, c.L, 3 * c.H * c.E}, g);
      auto head_view = [&](int64_t i) {
        return qkv.narrow(-1, i * c.H * c.E, c.H * c.E).reshape({c.B, c.L, c.H, c.E}).permute({0, 2, 1, 3});
      };
      q = head_view(0), k = head_view(1), v = head_view(2);
    } else {
      q = randn({c.B, c.H, c.L, c.E}, g), k = randn({c.B, c.H, c.S, c.E}, g), v = randn({c.B, c.H, c.S, c.Ev}, g);
    }
    const int64_t S = k.size(2), Ev = v.size(3);
    // The reference: every (b, h, i) in double, from the values as read through the views.
    const Tensor qd = q.to(DType::f64).contiguous(), kd = k.to(DType::f64).contiguous(),
                 vd = v.to(DType::f64).contiguous();
    const std::vector<double> qv = qd.to_vector<double>(), kv = kd.to_vector<double>(), vv = vd.to_vector<double>();
    std::vector<double> want(size_t(c.B * c.H * c.L * Ev));
    for (int64_t bh = 0; bh < c.B * c.H; ++bh)
      for (int64_t i = 0; i < c.L; ++i) {
        const int64_t n = c.causal ? std::min(i + 1, S) : S;
        std::vector<double> p(static_cast<size_t>(n));
        double mx = -INFINITY, sum = 0;
        for (int64_t j = 0; j < n; ++j) {
          double dot = 0;
          for (int64_t e = 0; e < c.E; ++e)
            dot += qv[size_t((bh * c.L + i) * c.E + e)] * kv[size_t((bh * S + j) * c.E + e)];
          p[size_t(j)] = dot / std::sqrt(double(c.E));
          mx = std::max(mx, p[size_t(j)]);
        }
        for (double& x : p) sum += (x = std::exp(x - mx));
        for (int64_t col = 0; col < Ev; ++col) {
          double acc = 0;
          for (int64_t j = 0; j < n; ++j) acc += p[size_t(j)] / sum * vv[size_t((bh * S + j) * Ev + col)];
          want[size_t((bh * c.L + i) * Ev + col)] = acc;
        }
      }
    for (auto kernel : {backend::cpu::F32Kernel::Auto, backend::cpu::F32Kernel::Eigen})
      for (int threads : {1, 2}) {
        backend::cpu::set_f32_gemm_kernel(kernel);
        const int old_threads = get_num_threads();
        set_num_threads(threads);
        const std::vector<double> got =
            scaled_dot_product_attention(q, k, v, Tensor(), c.causal).contiguous().to(DType::f64).to_vector<double>();
        set_num_threads(old_threads);
        backend::cpu::set_f32_gemm_kernel(backend::cpu::F32Kernel::Auto);
        double worst = 0;
        for (size_t i = 0; i < got.size(); ++i)
          worst = std::max(worst, std::abs(got[i] - want[i]) / (1 + std::abs(want[i])));
        INFO("L " << c.L << " S " << S << " E " << c.E << " Ev " << Ev << (c.causal ? " causal" : "")
                  << (c.packed ? " packed qkv" : "") << ", " << backend::cpu::f32_kernel_name(kernel) << ", "
                  << threads << " threads");
        CHECK(got.size() == want.size());
        CHECK(worst <= 1e-5);
      }
  }
}

TEST_CASE("nn ops: bad input throws the right error naming the op") {
  Tensor x = randn({2, 3});
  Tensor f16 = empty({2, 3}, DType::f16), i64 = zeros({2, 3}, DType::i64);
  check_throws<IndexError>("softmax", [&] { softmax(x, 2); });
  check_throws<IndexError>("log_softmax", [&] { log_softmax(x, -3); });
  check_throws<DTypeError>("softmax", [&] { softmax(f16, -1); });
  check_throws<DTypeError>("log_softmax", [&] { log_softmax(i64, -1); });

  check_throws<ShapeError>("layer_norm", [&] { layer_norm(x, {2}); });
  check_throws<ShapeError>("layer_norm", [&] { layer_norm(x, {}); });
  check_throws<ShapeError>("layer_norm", [&] { layer_norm(x, {3}, ones({4})); });
  check_throws<ShapeError>("layer_norm", [&] { layer_norm(x, {3}, ones({3}), ones({2})); });
  check_throws<DTypeError>("layer_norm", [&] { layer_norm(x, {3}, ones({3}, DType::f64)); });
  check_throws<DTypeError>("layer_norm", [&] { layer_norm(f16, {3}); });

  Tensor c3 = ones({3});
  CHECK_NOTHROW(batch_norm(x, c3, c3, c3, c3));
  check_throws<ShapeError>("batch_norm", [&] { batch_norm(randn({2, 4}), c3, c3, Tensor(), Tensor()); });
  check_throws<ShapeError>("batch_norm", [&] { batch_norm(randn({4}), ones({4}), ones({4}), Tensor(), Tensor()); });
  check_throws<ShapeError>("batch_norm", [&] { batch_norm(randn({2, 3, 5}), c3, c3, ones({2}), Tensor()); });
  check_throws<ValueError>("batch_norm", [&] { batch_norm(randn({2, 3}), Tensor(), c3, Tensor(), Tensor()); });
  check_throws<DTypeError>("batch_norm", [&] { batch_norm(i64, c3, c3, Tensor(), Tensor()); });

  check_throws<ValueError>("dropout", [&] { dropout(x, 1.0, true); });
  check_throws<ValueError>("dropout", [&] { dropout(x, -0.1, false); });
  check_throws<ValueError>("dropout", [&] { dropout(x, NAN, true); });
  check_throws<DTypeError>("dropout", [&] { dropout(i64, 0.5, true); });

  check_throws<IndexError>("normalize", [&] { normalize(x, 2); });
  check_throws<DTypeError>("normalize", [&] { normalize(f16); });
  check_throws<ShapeError>("cosine_similarity", [&] { cosine_similarity(x, randn({2, 4})); });
  check_throws<IndexError>("cosine_similarity", [&] { cosine_similarity(x, x, 2); });
  check_throws<DTypeError>("cosine_similarity", [&] { cosine_similarity(x, x.to(DType::f64)); });
}

TEST_CASE("attention: bad input throws the right error naming the op") {
  const char* op = "scaled_dot_product_attention";
  Tensor q = randn({2, 3, 4}), k = randn({2, 5, 4}), v = randn({2, 5, 6});
  check_throws<ShapeError>(op, [&] { scaled_dot_product_attention(q, randn({2, 5, 3}), v); });
  check_throws<ShapeError>(op, [&] { scaled_dot_product_attention(q, k, randn({2, 4, 6})); });
  check_throws<ShapeError>(op, [&] { scaled_dot_product_attention(randn({4}), k, v); });
  check_throws<ShapeError>(op, [&] { scaled_dot_product_attention(randn({3, 3, 4}), k, v); });
  check_throws<ShapeError>(op, [&] { scaled_dot_product_attention(q, k, v, zeros({3, 4})); });
  check_throws<ShapeError>(op, [&] { scaled_dot_product_attention(q, k, v, zeros({3, 2, 3, 5})); });
  check_throws<DTypeError>(op, [&] { scaled_dot_product_attention(q, k, v, zeros({3, 5}, DType::i64)); });
  check_throws<DTypeError>(op, [&] { scaled_dot_product_attention(q, k, v, zeros({3, 5}, DType::f64)); });
  check_throws<DTypeError>(op, [&] { scaled_dot_product_attention(q.to(DType::f64), k, v); });
  check_throws<DTypeError>(op, [&] { scaled_dot_product_attention(empty({2, 3, 4}, DType::f16), k, v); });
  check_throws<ValueError>(op, [&] { scaled_dot_product_attention(q, k, v, zeros({3, 5}), true); });
  check_throws<ValueError>("causal_mask", [&] { causal_mask(-1, 3); });
  check_throws<DTypeError>("causal_mask", [&] { causal_mask(2, 3, DType::i64); });
  // The batch-dim message lists all three shapes.
  try {
    scaled_dot_product_attention(randn({3, 3, 4}), k, v);
  } catch (const ShapeError& e) {
    CHECK(std::string(e.what()).find("[3, 3, 4]") != std::string::npos);
    CHECK(std::string(e.what()).find("[2, 5, 6]") != std::string::npos);
  }
}

TEST_CASE("losses: bad input throws the right error naming the op") {
  Tensor logits = randn({3, 4});
  Tensor t = tensor(std::vector<int64_t>{0, 3, 1});
  check_throws<ShapeError>("cross_entropy", [&] { cross_entropy(logits, tensor(std::vector<int64_t>{0, 1})); });
  check_throws<ShapeError>("cross_entropy", [&] { cross_entropy(logits, t.reshape({3, 1})); });
  check_throws<ShapeError>("cross_entropy", [&] { cross_entropy(randn({3, 4, 2}), t); });
  check_throws<DTypeError>("cross_entropy", [&] { cross_entropy(empty({3, 4}, DType::f16), t); });
  check_throws<DTypeError>("cross_entropy", [&] { cross_entropy(zeros({3, 4}, DType::i64), t); });
  check_throws<DTypeError>("cross_entropy", [&] { cross_entropy(logits, t.to(DType::f32)); });
  check_throws<ValueError>("cross_entropy", [&] { cross_entropy(logits, t, 1.5); });
  check_throws<ValueError>("cross_entropy", [&] { cross_entropy(logits, t, -0.1); });
  check_throws<ShapeError>("nll_loss", [&] { nll_loss(logits, tensor(std::vector<int64_t>{0, 1, 2, 3})); });
  check_throws<DTypeError>("nll_loss", [&] { nll_loss(logits, t.to(DType::u8)); });
  // Out-of-range targets: the message names the op, the value and the class count.
  for (int64_t bad : {int64_t(4), int64_t(-1), int64_t(100)}) {
    for (const char* op : {"nll_loss", "cross_entropy"}) {
      Tensor tb = tensor(std::vector<int32_t>{0, int32_t(bad), 1});
      try {
        if (std::string(op) == "nll_loss") nll_loss(logits, tb);
        else cross_entropy(logits, tb);
        FAIL_CHECK(op, " accepted target ", bad);
      } catch (const IndexError& e) {
        const std::string m = e.what();
        CHECK_MESSAGE(m.find(op) != std::string::npos, m);
        CHECK_MESSAGE(m.find(cat("target ", bad)) != std::string::npos, m);
        CHECK_MESSAGE(m.find("4 classes") != std::string::npos, m);
      }
    }
  }
}

TEST_CASE("dropout: training mode keeps about 1 - p, scales by 1 / (1 - p), gradient is the mask") {
  const double p = 0.3;
  Generator data(11);
  Tensor x = rand({100, 100}, data, DType::f64, 1.0, 2.0).requires_grad_(true);
  Generator g1(42);
  Tensor y = dropout(x, p, true, g1);
  REQUIRE(y.shape() == x.shape());
  const std::vector<double> xv = x.to_vector<double>(), yv = y.to_vector<double>();
  int64_t kept = 0;
  bool scaled = true;
  for (size_t i = 0; i < xv.size(); ++i) {
    if (yv[i] == 0) continue;
    ++kept;
    scaled = scaled && std::abs(yv[i] - xv[i] / (1 - p)) <= 1e-14 * std::abs(yv[i]);
  }
  CHECK(scaled);
  // Kept count ~ Binomial(10000, 0.7): mean 7000, sd ~46; 5 sd is far outside chance.
  CHECK(std::abs(double(kept) - 7000.0) < 5 * std::sqrt(10000 * p * (1 - p)));

  // The same seed gives the same mask; another seed another one.
  Generator g2(42), g3(43);
  CHECK(dropout(x, p, true, g2).to_vector<double>() == yv);
  CHECK(dropout(x, p, true, g3).to_vector<double>() != yv);

  // Gradient: 1 / (1 - p) where kept, 0 where dropped (x >= 1, so y == 0 means dropped).
  sum(y).backward();
  const std::vector<double> gx = x.grad().to_vector<double>();
  bool mask_ok = true;
  for (size_t i = 0; i < gx.size(); ++i) mask_ok = mask_ok && gx[i] == (yv[i] != 0 ? 1.0 / (1 - p) : 0.0);
  CHECK(mask_ok);

  // And against finite differences, with the mask fixed by reseeding inside fn.
  auto fn = [](const std::vector<Tensor>& in) {
    Generator g(5);
    return dropout(in[0], 0.4, true, g);
  };
  const GradcheckResult r = gradcheck(fn, {randn({6, 5}, data, DType::f64)});
  CHECK_MESSAGE(r.ok, r.message);

  // Eval mode hands back the input itself.
  Tensor z = dropout(x, 0.5, false);
  CHECK(z.shares_storage_with(x));
}

TEST_CASE("causal_mask: 0 on and below the diagonal, -inf above") {
  const std::vector<std::pair<int64_t, int64_t>> sizes{{3, 4}, {4, 2}, {1, 1}, {0, 3}};
  for (auto [rows, cols] : sizes) {
    Tensor m = causal_mask(rows, cols, DType::f64);
    REQUIRE(m.shape() == Shape{rows, cols});
    const std::vector<double> v = m.to_vector<double>();
    for (int64_t i = 0; i < rows; ++i)
      for (int64_t j = 0; j < cols; ++j) CHECK(v[i * cols + j] == (j <= i ? 0.0 : -INFINITY));
  }
}

TEST_CASE("attention: a fully masked query row gives zeros and finite gradients") {
  Generator g(3);
  Tensor q = randn({2, 3, 4}, g, DType::f64).requires_grad_(true);
  Tensor k = randn({2, 5, 4}, g, DType::f64).requires_grad_(true);
  Tensor v = randn({2, 5, 2}, g, DType::f64).requires_grad_(true);
  // Row 1 of the boolean mask is all false; row 1 of the float mask all -inf.
  std::vector<float> mb(15, 1.0f), mf(15, 0.0f);
  for (int j = 0; j < 5; ++j) {
    mb[5 + j] = 0.0f;
    mf[5 + j] = -INFINITY;
  }
  for (Tensor mask : {gt(tensor(mb, {3, 5}), scalar_tensor(0.5)), tensor(mf, {3, 5}).to(DType::f64)}) {
    q.zero_grad();
    k.zero_grad();
    v.zero_grad();
    Tensor y = scaled_dot_product_attention(q, k, v, mask);
    const std::vector<double> yv = y.to_vector<double>();
    for (int64_t b = 0; b < 2; ++b)
      for (int64_t c = 0; c < 2; ++c) CHECK(yv[static_cast<size_t>(b * 6 + 1 * 2 + c)] == 0.0);
    sum(y).backward();
    for (const Tensor* t : {&q, &k, &v}) {
      bool finite = true;
      for (double e : t->grad().to_vector<double>()) finite = finite && std::isfinite(e);
      CHECK(finite);
    }
    // The masked query row gets no gradient at all.
    const std::vector<double> gq = q.grad().to_vector<double>();
    for (int64_t b = 0; b < 2; ++b)
      for (int64_t e = 0; e < 4; ++e) CHECK(gq[static_cast<size_t>(b * 12 + 4 + e)] == 0.0);
  }
}

TEST_CASE("nll_loss: -inf at classes other than the target does not poison the loss") {
  Tensor lp = tensor({0.0f, -INFINITY, -1.0f, -INFINITY}, {2, 2});
  Tensor t = tensor(std::vector<int64_t>{0, 0});
  CHECK(nll_loss(lp, t).item<float>() == doctest::Approx(0.5));
  CHECK(nll_loss(lp, t, Reduction::Sum).item<float>() == doctest::Approx(1.0));
}

}  // namespace ga::test
