// Driver cases: elementwise ops.
#include <cmath>

#include "driver.hpp"

namespace ga::test {
namespace {

using S = std::vector<std::vector<InputSpec>>;
using I = InputSpec;

// Shape sets for binary ops: same shape, broadcast both ways, scalar, size-1 and empty dims.
S binary_shapes(bool nonzero_b = false, double lo = -2, double hi = 2) {
  auto b = [&](Shape s) { I r = I::f(std::move(s), lo, hi); return nonzero_b ? r.nonzero() : r; };
  return {{I::f({3, 4}, lo, hi), b({3, 4})},
          {I::f({2, 3, 4}, lo, hi), b({3, 1})},
          {I::f({4, 1}, lo, hi), b({1, 5})},
          {I::f({2, 3}, lo, hi), b({})},
          {I::f({1, 3}, lo, hi), b({2, 0, 3})}};
}
S unary_shapes(double lo = -2, double hi = 2, bool nonzero = false) {
  auto f = [&](Shape s) { I r = I::f(std::move(s), lo, hi); return nonzero ? r.nonzero() : r; };
  return {{f({5, 7})}, {f({2, 3, 4})}, {f({1})}, {f({})}, {f({0, 3})}};
}

OpCase binary(const char* op, std::function<Tensor(const Tensor&, const Tensor&)> f, std::function<double(double, double)> r,
              S shapes) {
  OpCase c;
  c.op = op;
  c.name = std::string(op) + " with broadcasting";
  c.shapes = std::move(shapes);
  c.fn = [f](const std::vector<Tensor>& x) { return f(x[0], x[1]); };
  c.reference = [r](const std::vector<Ref>& x) { return ref_zip(x[0], x[1], r); };
  return c;
}
OpCase unary(const char* op, std::function<Tensor(const Tensor&)> f, std::function<double(double)> r, S shapes) {
  OpCase c;
  c.op = op;
  c.name = op;
  c.shapes = std::move(shapes);
  c.fn = [f](const std::vector<Tensor>& x) { return f(x[0]); };
  c.reference = [r](const std::vector<Ref>& x) { return ref_map(x[0], r); };
  return c;
}

double sig(double x) { return 1 / (1 + std::exp(-x)); }

GA_OP_CASE(binary("add", [](auto& a, auto& b) { return a + b; }, [](double a, double b) { return a + b; }, binary_shapes()));
GA_OP_CASE(binary("sub", [](auto& a, auto& b) { return a - b; }, [](double a, double b) { return a - b; }, binary_shapes()));
GA_OP_CASE(binary("mul", [](auto& a, auto& b) { return a * b; }, [](double a, double b) { return a * b; }, binary_shapes()));
GA_OP_CASE(binary("div", [](auto& a, auto& b) { return a / b; }, [](double a, double b) { return a / b; },
                  binary_shapes(true)));
GA_OP_CASE(binary("pow", [](auto& a, auto& b) { return pow(a, b); }, [](double a, double b) { return std::pow(a, b); },
                  binary_shapes(false, 0.5, 2.0)));
GA_OP_CASE(unary("pow_scalar", [](auto& x) { return pow(x, 2.5); }, [](double x) { return std::pow(x, 2.5); },
                 unary_shapes(0.2, 2)));
GA_OP_CASE(unary("neg", [](auto& x) { return -x; }, [](double x) { return -x; }, unary_shapes()));
GA_OP_CASE(unary("exp", [](auto& x) { return exp(x); }, [](double x) { return std::exp(x); }, unary_shapes()));
GA_OP_CASE(unary("log", [](auto& x) { return log(x); }, [](double x) { return std::log(x); }, unary_shapes(0.1, 3)));
GA_OP_CASE(unary("sqrt", [](auto& x) { return sqrt(x); }, [](double x) { return std::sqrt(x); }, unary_shapes(0.1, 3)));
GA_OP_CASE(unary("rsqrt", [](auto& x) { return rsqrt(x); }, [](double x) { return 1 / std::sqrt(x); }, unary_shapes(0.1, 3)));
GA_OP_CASE(unary("abs", [](auto& x) { return abs(x); }, [](double x) { return std::fabs(x); }, unary_shapes(-2, 2, true)));
GA_OP_CASE(unary("tanh", [](auto& x) { return tanh(x); }, [](double x) { return std::tanh(x); }, unary_shapes()));
GA_OP_CASE(unary("sigmoid", [](auto& x) { return sigmoid(x); }, sig, unary_shapes(-6, 6)));
GA_OP_CASE(unary("relu", [](auto& x) { return relu(x); }, [](double x) { return x > 0 ? x : 0; }, unary_shapes(-2, 2, true)));
GA_OP_CASE(unary("gelu", [](auto& x) { return gelu(x); },
                 [](double x) { return 0.5 * x * (1 + std::erf(x / std::sqrt(2.0))); }, unary_shapes(-4, 4)));
GA_OP_CASE(unary("quick_gelu", [](auto& x) { return quick_gelu(x); }, [](double x) { return x * sig(1.702 * x); },
                 unary_shapes(-4, 4)));
GA_OP_CASE([] {
  // Bounds at +-0.5 with inputs kept 0.05 away from them (the derivative jumps there).
  OpCase c = unary("clamp", [](auto& x) { return clamp(x, -0.5, 0.5); },
                   [](double x) { return std::min(std::max(x, -0.5), 0.5); }, unary_shapes(-2, 2));
  c.fn = [](const std::vector<Tensor>& x) { return clamp(x[0] * 1.0, -0.5, 0.5); };
  c.shapes = {{I::f({6, 5}, 0.55, 2)}, {I::f({4, 4}, -0.45, 0.45)}, {I::f({3, 3}, -2, -0.55)}};
  return c;
}());
GA_OP_CASE([] {
  OpCase c;
  c.op = "compare";
  c.name = "eq ne lt le gt ge, stacked as 0/1";
  c.differentiable = false;
  c.shapes = {{I::f({3, 4}), I::f({4})}, {I::f({2, 1}), I::f({1, 3})}};
  c.fn = [](const std::vector<Tensor>& x) {
    // Round so that equality actually happens.
    Tensor a = x[0].detach() * 2.0, b = x[1].detach() * 2.0;
    NoGradGuard ng;
    Tensor ra = a.to(DType::i32).to(a.dtype()), rb = b.to(DType::i32).to(b.dtype());
    std::vector<Tensor> outs{eq(ra, rb), ne(ra, rb), lt(ra, rb), le(ra, rb), gt(ra, rb), ge(ra, rb)};
    Tensor acc = zeros(outs[0].shape(), DType::f64);
    for (size_t i = 0; i < outs.size(); ++i) acc = acc + outs[i].to(DType::f64) * double(1 << i);
    return acc;
  };
  c.reference = [](const std::vector<Ref>& x) {
    return ref_zip(x[0], x[1], [](double a, double b) {
      const double ra = std::trunc(a * 2), rb = std::trunc(b * 2);
      return double((ra == rb) * 1 + (ra != rb) * 2 + (ra < rb) * 4 + (ra <= rb) * 8 + (ra > rb) * 16 + (ra >= rb) * 32);
    });
  };
  return c;
}());
GA_OP_CASE([] {
  OpCase c;
  c.op = "where";
  c.name = "where(cond, a, b) with three-way broadcasting";
  c.shapes = {{I::mask({3, 4}), I::f({3, 4}), I::f({3, 4})},
              {I::mask({2, 1, 4}), I::f({3, 1}), I::f({4})},
              {I::mask({4}), I::f({2, 4}), I::f({})}};
  c.fn = [](const std::vector<Tensor>& x) { return where(x[0], x[1], x[2]); };
  c.reference = [](const std::vector<Ref>& x) {
    Ref o(ref_broadcast(ref_broadcast(x[0].shape, x[1].shape), x[2].shape));
    for (int64_t i = 0; i < o.numel(); ++i) {
      auto idx = o.unflat(i);
      o.v[i] = broadcast_at(x[0], idx) != 0 ? broadcast_at(x[1], idx) : broadcast_at(x[2], idx);
    }
    return o;
  };
  return c;
}());
GA_OP_CASE([] {
  OpCase c;
  c.op = "masked_fill";
  c.name = "masked_fill with a broadcast mask";
  c.shapes = {{I::f({3, 4}), I::mask({3, 4})}, {I::f({2, 3, 4}), I::mask({1, 4})}};
  c.fn = [](const std::vector<Tensor>& x) { return masked_fill(x[0], x[1], -7.5); };
  c.reference = [](const std::vector<Ref>& x) {
    return ref_zip(x[0], x[1], [](double a, double m) { return m != 0 ? -7.5 : a; });
  };
  return c;
}());

}  // namespace
}  // namespace ga::test
