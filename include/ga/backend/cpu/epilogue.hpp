// CPU: a matrix product's epilogue (bias, residual, activation; see backend::MatmulEpilogue)
// applied to rows of results, shared by the GEMM kernels that fuse it into their stores
// (activation on a just-stored tile) and, for the others, as one pass after the product.
#pragma once
#include <cmath>

#include <Eigen/Core>

#include "cpu_backend.hpp"
#include "elementwise.hpp"

#if GA_EMIT_CPU_KERNELS
namespace ga::backend::cpu {

namespace detail {

/// The unary op computing activation a (a != None).
inline UnaryOp activation_op(Activation a) {
  return a == Activation::Relu ? UnaryOp::Relu : a == Activation::QuickGelu ? UnaryOp::QuickGelu : UnaryOp::Gelu;
}

/// p[0, n) = a(p[0, n)) in place, with the same arithmetic as the unary kernel of that op
/// (so a fused layer gives the bits the unfused one did).
template <class T>
inline void activate_row(Activation a, T* p, int64_t n) {
  if (a == Activation::None || n <= 0) return;
  const UnaryOp op = activation_op(a);
  if (unary_eigen<T>(op, p, 1, p, 1, n, T(0), T(0))) return;
  for (int64_t i = 0; i < n; ++i) p[i] = unary_scalar<T>(op, p[i], T(0), T(0));
}

/// Checks that an epilogue fits out [B, M, N] (the ops layer builds them; a wrong one
/// would read out of bounds, so the kernels check too).
inline void check_epilogue(const char* op, const Tensor& out, const MatmulEpilogue& e) {
  const int64_t M = out.size(1), N = out.size(2);
  if (e.bias.defined()) {
    const int64_t want = e.bias_per_row ? M : N;
    GA_CHECK(e.bias.dtype() == out.dtype() && e.bias.is_contiguous() && e.bias.numel() == want, ShapeError, op,
             ": epilogue bias ", shape_str(e.bias.shape()), " ", dtype_name(e.bias.dtype()), " must be ", want,
             " contiguous ", dtype_name(out.dtype()), " values (one per ", e.bias_per_row ? "row" : "column",
             " of ", shape_str(out.shape()), ")");
  }
  if (e.residual.defined())
    GA_CHECK(e.residual.dtype() == out.dtype() && e.residual.is_contiguous() && e.residual.shape() == out.shape(),
             ShapeError, op, ": epilogue residual ", shape_str(e.residual.shape()), " ",
             dtype_name(e.residual.dtype()), " must be contiguous ", dtype_name(out.dtype()), " of out's shape ",
             shape_str(out.shape()));
}

}  // namespace detail

/// Applies e to out [B, M, N] (contiguous f32 or f64) after a product has written it: one
/// parallel pass over the rows.
inline void apply_epilogue(const Tensor& out, const MatmulEpilogue& e) {
  if (e.empty() || out.numel() == 0) return;
  detail::check_epilogue("matmul", out, e);
  const int64_t M = out.size(1), N = out.size(2), rows = out.size(0) * M;
  GA_DISPATCH_FLOAT(out.dtype(), "matmul epilogue", {
    using T = scalar_t;
    T* o = static_cast<T*>(out.raw_data());
    const T* bias = e.bias.defined() ? static_cast<const T*>(e.bias.raw_data()) : nullptr;
    const T* res = e.residual.defined() ? static_cast<const T*>(e.residual.raw_data()) : nullptr;
    parallel_for(0, rows, std::max<int64_t>(1, 16384 / std::max<int64_t>(N, 1)), [&](int64_t lo, int64_t hi) {
      for (int64_t r = lo; r < hi; ++r) {
        T* row = o + r * N;
        if (bias && e.bias_per_row) {
          const T b = bias[r % M];
          for (int64_t j = 0; j < N; ++j) row[j] += b;
        } else if (bias) {
          for (int64_t j = 0; j < N; ++j) row[j] += bias[j];
        }
        if (res)
          for (int64_t j = 0; j < N; ++j) row[j] += res[r * N + j];
        detail::activate_row<T>(e.activation, row, N);
      }
    });
  });
}

}  // namespace ga::backend::cpu
#endif  // GA_EMIT_CPU_KERNELS
