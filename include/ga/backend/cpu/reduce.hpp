// CPU kernel: reductions over the last dim of a [rows, n] matrix.
#pragma once
#include <cmath>
#include <limits>
#include <vector>

#include <Eigen/Core>

#include "cpu_backend.hpp"

#if GA_EMIT_CPU_KERNELS
namespace ga::backend::cpu {

namespace detail {
template <class T>
inline void reduce_row(ReduceOp op, const T* x, int64_t n, T* out_f, int64_t* out_i) {
  using Arr = Eigen::Array<T, Eigen::Dynamic, 1>;
  Eigen::Map<const Arr> r(x, n);
  switch (op) {
    case ReduceOp::Sum: *out_f = n ? r.sum() : T(0); return;
    case ReduceOp::Mean: *out_f = n ? r.sum() / T(n) : std::numeric_limits<T>::quiet_NaN(); return;
    case ReduceOp::Max: *out_f = r.maxCoeff(); return;
    case ReduceOp::Min: *out_f = r.minCoeff(); return;
    case ReduceOp::LogSumExp: {
      if (n == 0) { *out_f = -std::numeric_limits<T>::infinity(); return; }
      const T m = r.maxCoeff();
      if (!std::isfinite(m)) { *out_f = m; return; }
      *out_f = m + std::log((r - m).exp().sum());
      return;
    }
    case ReduceOp::ArgMax:
    case ReduceOp::ArgMin: {
      int64_t best = 0;  // first occurrence wins, as in PyTorch
      for (int64_t i = 1; i < n; ++i)
        if (op == ReduceOp::ArgMax ? x[i] > x[best] : x[i] < x[best]) best = i;
      *out_i = best;
      return;
    }
  }
}
}  // namespace detail

GA_CPU_KERNEL void CpuBackend::reduce_last(ReduceOp op, const Tensor& x, const Tensor& out) {
  const int64_t rows = x.size(0), n = x.size(1);
  GA_CHECK(n > 0 || op == ReduceOp::Sum || op == ReduceOp::Mean || op == ReduceOp::LogSumExp,
           ValueError, "reduce: cannot take max/min/argmax of an empty dim");
  const bool want_index = op == ReduceOp::ArgMax || op == ReduceOp::ArgMin;
  GA_DISPATCH_FLOAT(x.dtype(), "reduce", {
    using T = scalar_t;
    const T* xp = static_cast<const T*>(x.raw_data());
    T* of = want_index ? nullptr : static_cast<T*>(out.raw_data());
    int64_t* oi = want_index ? static_cast<int64_t*>(out.raw_data()) : nullptr;
    const int threads = get_num_threads();
    if (rows >= threads || n < 65536 || want_index) {
      parallel_for(0, rows, std::max<int64_t>(1, 32768 / std::max<int64_t>(n, 1)), [&](int64_t lo, int64_t hi) {
        for (int64_t r = lo; r < hi; ++r)
          detail::reduce_row<T>(op, xp + r * n, n, of ? of + r : nullptr, oi ? oi + r : nullptr);
      });
      return;
    }
    // Few long rows: split each row across threads, then combine the partial results.
    for (int64_t r = 0; r < rows; ++r) {
      const T* row = xp + r * n;
      const ReduceOp part_op = op == ReduceOp::Mean ? ReduceOp::Sum : op;
      std::vector<T> part(threads);
      parallel_for(0, threads, 1, [&](int64_t lo, int64_t hi) {
        for (int64_t t = lo; t < hi; ++t) {
          const int64_t a = n * t / threads, b = n * (t + 1) / threads;
          detail::reduce_row<T>(part_op, row + a, b - a, &part[t], nullptr);
        }
      });
      detail::reduce_row<T>(op == ReduceOp::Mean ? ReduceOp::Sum : op == ReduceOp::LogSumExp ? ReduceOp::LogSumExp : op,
                            part.data(), threads, &of[r], nullptr);
      if (op == ReduceOp::Mean) of[r] /= T(n);
    }
  });
}

}  // namespace ga::backend::cpu
#endif  // GA_EMIT_CPU_KERNELS
