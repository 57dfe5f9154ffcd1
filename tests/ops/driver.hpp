// The op test driver's case format. Every op registered with GA_REGISTER_OP needs at
// least one OpCase (the driver fails otherwise). For every case the driver:
//   - draws random inputs (seeded) for each shape set,
//   - lays each float input out contiguously, transposed and strided (non-contiguous views),
//   - runs the op in f32 and f64 and compares with `reference`, a naive double-precision
//     loop over Ref values that never calls the library,
//   - checks every float input's gradient against central finite differences in f64,
//   - runs the case on every other backend present and compares with the CPU.
#pragma once
#include <cmath>
#include <functional>
#include <string>
#include <vector>

#include <ga/ga.hpp>

namespace ga::test {

/// A reference value: a row-major array of doubles with a shape. Independent of ga::Tensor.
struct Ref {
  Shape shape;
  std::vector<double> v;

  Ref() = default;
  Ref(Shape s, std::vector<double> values) : shape(std::move(s)), v(std::move(values)) {}
  explicit Ref(Shape s, double fill = 0.0) : shape(std::move(s)), v(static_cast<size_t>(numel_of(shape)), fill) {}
  int64_t numel() const { return static_cast<int64_t>(v.size()); }
  int64_t dim() const { return static_cast<int64_t>(shape.size()); }
  /// Flat index of a multi-index.
  int64_t flat(const std::vector<int64_t>& idx) const {
    int64_t f = 0;
    for (size_t i = 0; i < shape.size(); ++i) f = f * shape[i] + idx[i];
    return f;
  }
  double& at(const std::vector<int64_t>& idx) { return v[static_cast<size_t>(flat(idx))]; }
  double at(const std::vector<int64_t>& idx) const { return v[static_cast<size_t>(flat(idx))]; }
  /// Multi-index of a flat index.
  std::vector<int64_t> unflat(int64_t f) const {
    std::vector<int64_t> idx(shape.size());
    for (size_t i = shape.size(); i-- > 0;) {
      idx[i] = shape[i] ? f % shape[i] : 0;
      f = shape[i] ? f / shape[i] : 0;
    }
    return idx;
  }
};

/// Value at `idx` of `r` broadcast to a shape of rank idx.size() (NumPy rules).
inline double broadcast_at(const Ref& r, const std::vector<int64_t>& idx) {
  const size_t lead = idx.size() - r.shape.size();
  int64_t f = 0;
  for (size_t i = 0; i < r.shape.size(); ++i) f = f * r.shape[i] + (r.shape[i] == 1 ? 0 : idx[lead + i]);
  return r.v[static_cast<size_t>(f)];
}
/// NumPy broadcast shape (no error checking: references are only called on valid cases).
inline Shape ref_broadcast(const Shape& a, const Shape& b) {
  const size_t n = std::max(a.size(), b.size());
  Shape o(n);
  for (size_t i = 0; i < n; ++i) {
    const int64_t da = i < n - a.size() ? 1 : a[i - (n - a.size())];
    const int64_t db = i < n - b.size() ? 1 : b[i - (n - b.size())];
    o[i] = da == 1 ? db : da;
  }
  return o;
}
/// activation(x) in double, for the layers' fused epilogues.
inline double ref_activation(Activation a, double x) {
  switch (a) {
    case Activation::Relu: return x > 0 ? x : 0;
    case Activation::QuickGelu: return x / (1 + std::exp(-1.702 * x));
    case Activation::Gelu: return 0.5 * x * (1 + std::erf(x / std::sqrt(2.0)));
    case Activation::None: break;
  }
  return x;
}
/// out[i] = f(a[i]).
inline Ref ref_map(const Ref& a, const std::function<double(double)>& f) {
  Ref o(a.shape);
  for (size_t i = 0; i < a.v.size(); ++i) o.v[i] = f(a.v[i]);
  return o;
}
/// out[i] = f(a[i], b[i]) with broadcasting.
inline Ref ref_zip(const Ref& a, const Ref& b, const std::function<double(double, double)>& f) {
  Ref o(ref_broadcast(a.shape, b.shape));
  for (int64_t i = 0; i < o.numel(); ++i) {
    const auto idx = o.unflat(i);
    o.v[i] = f(broadcast_at(a, idx), broadcast_at(b, idx));
  }
  return o;
}

/// How an input is drawn.
struct InputSpec {
  enum class Kind { Float, Index, Bool };
  Shape shape;
  Kind kind = Kind::Float;
  double lo = -2.0, hi = 2.0;   // Float: uniform range; Index: integers in [lo, hi)
  bool grad = true;             // Float: check this input's gradient
  bool away_from_zero = false;  // Float: redraw |x| < 0.1 (for abs, div, ... near kinks)
  DType index_dtype = DType::i64;

  static InputSpec f(Shape s, double lo = -2.0, double hi = 2.0) { InputSpec r; r.shape = std::move(s); r.lo = lo; r.hi = hi; return r; }
  static InputSpec index(Shape s, int64_t hi, int64_t lo = 0) {
    InputSpec r; r.shape = std::move(s); r.kind = Kind::Index; r.lo = double(lo); r.hi = double(hi); r.grad = false; return r;
  }
  static InputSpec mask(Shape s) { InputSpec r; r.shape = std::move(s); r.kind = Kind::Bool; r.grad = false; return r; }
  InputSpec no_grad() const { InputSpec r = *this; r.grad = false; return r; }
  InputSpec nonzero() const { InputSpec r = *this; r.away_from_zero = true; return r; }
};

struct OpCase {
  std::string op;                             // the registered op name this case covers
  std::string name;                           // what this case is about
  std::vector<std::vector<InputSpec>> shapes; // one or more input sets
  std::function<Tensor(const std::vector<Tensor>&)> fn;  // the op (receives inputs in spec order)
  std::function<Ref(const std::vector<Ref>&)> reference; // naive f64 (index/bool inputs arrive as doubles)
  bool differentiable = true;
  double f32_tol = 1e-5;    // max |y - ref| / (1 + |ref|) in f32
  double f64_tol = 1e-10;   // the same in f64
  double grad_rtol = 1e-5, grad_atol = 1e-7;
  double fd_eps = 1e-6;
  bool layouts = true;      // also try transposed and strided float inputs
};

inline std::vector<OpCase>& cases() {
  static std::vector<OpCase> c;
  return c;
}
inline bool add_case(OpCase c) {
  cases().push_back(std::move(c));
  return true;
}

}  // namespace ga::test

#define GA_TEST_CONCAT2_(a, b) a##b
#define GA_TEST_CONCAT_(a, b) GA_TEST_CONCAT2_(a, b)
/// Registers an OpCase built by the expression that follows (a lambda returning OpCase).
#define GA_OP_CASE static const bool GA_TEST_CONCAT_(ga_op_case_, __COUNTER__) = ::ga::test::add_case
