// Driver cases: reductions, matrix products, and views.
#include <algorithm>
#include <cmath>
#include <limits>

#include "driver.hpp"

namespace ga::test {
namespace {

using I = InputSpec;

/// Naive reduction: folds the values of each output slot in index order.
Ref ref_reduce(const Ref& x, std::vector<int64_t> dims, bool keepdim,
               const std::function<double(const std::vector<double>&)>& fold) {
  const int64_t nd = x.dim();
  std::vector<bool> red(nd, dims.empty());
  for (int64_t d : dims) red[d < 0 ? d + nd : d] = true;
  Shape keep, out;
  for (int64_t i = 0; i < nd; ++i) {
    keep.push_back(red[i] ? 1 : x.shape[i]);
    if (!red[i]) out.push_back(x.shape[i]);
  }
  Ref k(keep);
  std::vector<std::vector<double>> buckets(static_cast<size_t>(k.numel()));
  for (int64_t f = 0; f < x.numel(); ++f) {
    auto idx = x.unflat(f);
    for (int64_t i = 0; i < nd; ++i)
      if (red[i]) idx[i] = 0;
    buckets[static_cast<size_t>(k.flat(idx))].push_back(x.v[f]);
  }
  for (size_t i = 0; i < buckets.size(); ++i) k.v[i] = fold(buckets[i]);
  if (!keepdim) k.shape = out;
  return k;
}

double fsum(const std::vector<double>& v) { double s = 0; for (double x : v) s += x; return s; }
double fmax(const std::vector<double>& v) { return *std::max_element(v.begin(), v.end()); }
double fmin(const std::vector<double>& v) { return *std::min_element(v.begin(), v.end()); }

struct RedSpec { Shape shape; std::vector<int64_t> dims; bool keepdim; };
const std::vector<RedSpec> kReductions = {
    {{4, 5}, {}, false}, {{4, 5}, {1}, false}, {{4, 5}, {0}, true}, {{2, 3, 4}, {0, 2}, false},
    {{2, 3, 4}, {-1}, true}, {{3, 1, 2}, {1}, false}, {{5}, {0}, false}, {{}, {}, false}};

OpCase reduction(const char* op, const RedSpec& r, std::function<Tensor(const Tensor&, const std::vector<int64_t>&, bool)> f,
                 std::function<double(const std::vector<double>&)> fold) {
  OpCase c;
  c.op = op;
  c.name = cat(op, " of ", shape_str(r.shape), " over ", shape_str(r.dims), r.keepdim ? " keepdim" : "");
  c.shapes = {{I::f(r.shape)}};
  c.fn = [f, r](const std::vector<Tensor>& x) { return f(x[0], r.dims, r.keepdim); };
  c.reference = [r, fold](const std::vector<Ref>& x) { return ref_reduce(x[0], r.dims, r.keepdim, fold); };
  return c;
}

const bool kReductionCases = [] {
  for (const RedSpec& r : kReductions) {
    add_case(reduction("sum", r, [](auto& x, auto& d, bool k) { return sum(x, d, k); }, fsum));
    add_case(reduction("mean", r, [](auto& x, auto& d, bool k) { return mean(x, d, k); },
                       [](const std::vector<double>& v) { return fsum(v) / double(v.size()); }));
    add_case(reduction("max", r, [](auto& x, auto& d, bool k) { return max(x, d, k); }, fmax));
    add_case(reduction("min", r, [](auto& x, auto& d, bool k) { return min(x, d, k); }, fmin));
    add_case(reduction("logsumexp", r, [](auto& x, auto& d, bool k) { return logsumexp(x, d, k); },
                       [](const std::vector<double>& v) {
                         double s = 0;
                         for (double x : v) s += std::exp(x);
                         return std::log(s);
                       }));
  }
  // Sums over an empty dim are 0; empty inputs elsewhere.
  add_case(reduction("sum", {{3, 0}, {1}, false}, [](auto& x, auto& d, bool k) { return sum(x, d, k); }, fsum));
  return true;
}();

GA_OP_CASE([] {
  OpCase c;
  c.op = "argmax";
  c.name = "argmax along a dim and over all";
  c.differentiable = false;
  c.shapes = {{I::f({4, 6})}, {I::f({2, 3, 5})}};
  c.fn = [](const std::vector<Tensor>& x) {
    Tensor a = argmax(x[0], -1).to(DType::f64);
    Tensor b = argmin(x[0], 0, true).to(DType::f64).reshape({-1});
    Tensor all = argmax(x[0]).to(DType::f64).reshape({1});
    std::vector<double> v = a.to_vector<double>(), vb = b.to_vector<double>();
    v.insert(v.end(), vb.begin(), vb.end());
    v.push_back(all.item<double>());
    return tensor(v);
  };
  c.reference = [](const std::vector<Ref>& x) {
    const Ref& r = x[0];
    auto arg = [](const std::vector<double>& v, bool mx) {
      size_t best = 0;
      for (size_t i = 1; i < v.size(); ++i)
        if (mx ? v[i] > v[best] : v[i] < v[best]) best = i;
      return double(best);
    };
    // argmax over the last dim
    std::vector<double> out;
    const int64_t last = r.shape.back(), rows = r.numel() / last;
    for (int64_t i = 0; i < rows; ++i)
      out.push_back(arg(std::vector<double>(r.v.begin() + i * last, r.v.begin() + (i + 1) * last), true));
    // argmin over dim 0
    const int64_t d0 = r.shape[0], inner = r.numel() / d0;
    for (int64_t j = 0; j < inner; ++j) {
      std::vector<double> col;
      for (int64_t i = 0; i < d0; ++i) col.push_back(r.v[i * inner + j]);
      out.push_back(arg(col, false));
    }
    out.push_back(arg(r.v, true));
    return Ref({int64_t(out.size())}, out);
  };
  return c;
}());

// ---- matmul and linear ----

Ref ref_matmul(const Ref& a0, const Ref& b0) {
  // Promote 1-d operands as torch.matmul does, then broadcast batch dims.
  Ref a = a0, b = b0;
  const bool av = a.dim() == 1, bv = b.dim() == 1;
  if (av) a.shape.insert(a.shape.begin(), 1);
  if (bv) b.shape.push_back(1);
  const int64_t M = a.shape[a.dim() - 2], K = a.shape[a.dim() - 1], N = b.shape[b.dim() - 1];
  Shape ab(a.shape.begin(), a.shape.end() - 2), bb(b.shape.begin(), b.shape.end() - 2);
  Shape batch = ref_broadcast(ab, bb);
  Shape os = batch;
  os.push_back(M);
  os.push_back(N);
  Ref o(os);
  for (int64_t f = 0; f < o.numel(); ++f) {
    auto idx = o.unflat(f);
    const int64_t i = idx[idx.size() - 2], j = idx[idx.size() - 1];
    double s = 0;
    for (int64_t k = 0; k < K; ++k) {
      auto ia = idx, ib = idx;
      ia[ia.size() - 1] = k;
      ib[ib.size() - 2] = k;
      ia[ia.size() - 2] = i;
      ib[ib.size() - 1] = j;
      s += broadcast_at(a, ia) * broadcast_at(b, ib);
    }
    o.v[f] = s;
  }
  Shape final_shape = batch;
  if (!av) final_shape.push_back(M);
  if (!bv) final_shape.push_back(N);
  o.shape = final_shape;
  return o;
}

GA_OP_CASE([] {
  OpCase c;
  c.op = "matmul";
  c.name = "matmul: 2-d, batched, broadcast batch, 1-d operands, empty K";
  c.shapes = {{I::f({3, 4}), I::f({4, 5})},       {I::f({2, 3, 4}), I::f({2, 4, 2})},
              {I::f({2, 1, 3, 4}), I::f({3, 4, 2})}, {I::f({4}), I::f({4, 3})},
              {I::f({2, 3, 4}), I::f({4})},       {I::f({4}), I::f({4})},
              {I::f({3, 0}), I::f({0, 2})},       {I::f({1, 4}), I::f({4, 1})}};
  c.fn = [](const std::vector<Tensor>& x) { return matmul(x[0], x[1]); };
  c.reference = [](const std::vector<Ref>& x) { return ref_matmul(x[0], x[1]); };
  c.f32_tol = 1e-5;
  return c;
}());

GA_OP_CASE([] {
  OpCase c;
  c.op = "linear";
  c.name = "linear with and without bias, 1-3 leading dims";
  c.shapes = {{I::f({5, 4}), I::f({3, 4}), I::f({3})}, {I::f({2, 3, 4}), I::f({6, 4}), I::f({6})}, {I::f({4}), I::f({2, 4}), I::f({2})}};
  c.fn = [](const std::vector<Tensor>& x) { return linear(x[0], x[1], x[2]) + linear(x[0], x[1]) * 0.5; };
  c.reference = [](const std::vector<Ref>& x) {
    Ref wt(Shape{x[1].shape[1], x[1].shape[0]});
    for (int64_t i = 0; i < x[1].shape[0]; ++i)
      for (int64_t j = 0; j < x[1].shape[1]; ++j) wt.at({j, i}) = x[1].at({i, j});
    Ref y = ref_matmul(x[0], wt);
    Ref yb = ref_zip(y, x[2], [](double a, double b) { return a + b; });
    return ref_zip(yb, y, [](double a, double b) { return a + 0.5 * b; });
  };
  return c;
}());

// The fused epilogue: forward runs fused (nothing records), gradients through the unfused ops.
GA_OP_CASE([] {
  OpCase c;
  c.op = "linear";
  c.name = "linear with a fused residual and each activation";
  c.shapes = {{I::f({5, 4}), I::f({3, 4}), I::f({3}), I::f({5, 3})}, {I::f({2, 3, 4}), I::f({6, 4}), I::f({6}), I::f({2, 3, 6})}};
  c.fn = [](const std::vector<Tensor>& x) {
    Tensor y = linear(x[0], x[1], x[2], {x[3], Activation::None});
    for (Activation a : {Activation::Relu, Activation::QuickGelu, Activation::Gelu})
      y = y + linear(x[0], x[1], x[2], {x[3], a}) + linear(x[0], x[1], Tensor(), {Tensor(), a}) * 0.5;
    return y;
  };
  c.reference = [](const std::vector<Ref>& x) {
    Ref wt(Shape{x[1].shape[1], x[1].shape[0]});
    for (int64_t i = 0; i < x[1].shape[0]; ++i)
      for (int64_t j = 0; j < x[1].shape[1]; ++j) wt.at({j, i}) = x[1].at({i, j});
    const Ref p = ref_matmul(x[0], wt);
    const Ref pre = ref_zip(ref_zip(p, x[2], [](double a, double b) { return a + b; }), x[3],
                            [](double a, double b) { return a + b; });
    Ref y = pre;
    for (Activation a : {Activation::Relu, Activation::QuickGelu, Activation::Gelu})
      for (int64_t i = 0; i < y.numel(); ++i) y.v[i] += ref_activation(a, pre.v[i]) + 0.5 * ref_activation(a, p.v[i]);
    return y;
  };
  return c;
}());

// ---- views (each composed with a multiply so the gradient is not the identity) ----

OpCase view_case(const char* op, const char* name, std::vector<std::vector<InputSpec>> shapes,
                 std::function<Tensor(const Tensor&)> f, std::function<Ref(const Ref&)> r) {
  OpCase c;
  c.op = op;
  c.name = name;
  c.shapes = std::move(shapes);
  c.fn = [f](const std::vector<Tensor>& x) { return f(x[0]) * f(x[0]); };
  c.reference = [r](const std::vector<Ref>& x) {
    Ref y = r(x[0]);
    return ref_map(y, [](double v) { return v * v; });
  };
  return c;
}

Ref ref_permute(const Ref& x, const std::vector<int64_t>& p) {
  Shape s;
  for (int64_t d : p) s.push_back(x.shape[d]);
  Ref o(s);
  for (int64_t f = 0; f < o.numel(); ++f) {
    auto oi = o.unflat(f);
    std::vector<int64_t> xi(p.size());
    for (size_t i = 0; i < p.size(); ++i) xi[p[i]] = oi[i];
    o.v[f] = x.at(xi);
  }
  return o;
}

GA_OP_CASE(view_case("reshape", "reshape with -1, flatten, unsqueeze, squeeze", {{I::f({2, 3, 4})}, {I::f({6, 1})}},
                     [](const Tensor& x) { return x.reshape({-1, 2}).unsqueeze(1).flatten(1).squeeze(); },
                     [](const Ref& x) { return Ref({x.numel() / 2, 2}, x.v); }));
GA_OP_CASE(view_case("permute", "permute and transpose", {{I::f({2, 3, 4})}, {I::f({4, 1, 2})}},
                     [](const Tensor& x) { return x.permute({2, 0, 1}).transpose(0, 1); },
                     [](const Ref& x) { return ref_permute(x, {0, 2, 1}); }));
GA_OP_CASE(view_case("slice", "slice with a step, narrow, select", {{I::f({5, 6})}, {I::f({5, 9})}},
                     [](const Tensor& x) { return x.slice(1, 1, 6, 2).narrow(0, 1, 3).select(0, 1); },
                     [](const Ref& x) {
                       std::vector<double> v;
                       for (int64_t j = 1; j < 6; j += 2) v.push_back(x.at({2, j}));
                       return Ref({int64_t(v.size())}, v);
                     }));
GA_OP_CASE(view_case("expand", "expand size-1 and leading dims", {{I::f({3, 1})}, {I::f({1, 1})}},
                     [](const Tensor& x) { return x.expand({2, -1, 4}); },
                     [](const Ref& x) {
                       Ref o(Shape{2, x.shape[0], 4});
                       for (int64_t f = 0; f < o.numel(); ++f) o.v[f] = x.v[o.unflat(f)[1]];
                       return o;
                     }));
GA_OP_CASE(view_case("contiguous", "contiguous copy of a transposed view", {{I::f({3, 4})}},
                     [](const Tensor& x) { return x.t().contiguous(); }, [](const Ref& x) { return ref_permute(x, {1, 0}); }));
GA_OP_CASE([] {
  OpCase c = view_case("to_dtype", "f64 -> f32 -> f64 and back", {{I::f({3, 4})}},
                       [](const Tensor& x) { return x.to(x.dtype() == DType::f32 ? DType::f64 : DType::f32).to(x.dtype()); },
                       [](const Ref& x) { return ref_map(x, [](double v) { return double(float(v)); }); });
  // The round trip through f32 quantises x to ~6e-8, so finite differences need a wider
  // step and tolerance than exact f64 ops: error ~ 6e-8 / eps.
  c.fd_eps = 1e-3;
  c.grad_rtol = 1e-3;
  return c;
}());

}  // namespace
}  // namespace ga::test
