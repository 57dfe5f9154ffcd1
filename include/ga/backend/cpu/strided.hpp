// Strided iteration shared by the CPU elementwise kernels: dims that are laid out
// back to back in every operand are merged, then the innermost dim is swept as a
// row, with the fast contiguous case left to the caller's row function.
#pragma once
#include <array>
#include <vector>

#include "../../core/core.hpp"
#include "parallel.hpp"

namespace ga::backend::cpu {

template <size_t N>
struct StridedLoop {
  Shape shape;                    // merged shape (at least 1-d)
  std::array<Shape, N> strides;   // per operand, in elements

  /// Builds the loop for N operands viewed with `shape` and their own strides.
  StridedLoop(const Shape& s, const std::array<const Shape*, N>& st) {
    for (size_t i = 0; i < s.size(); ++i) {
      if (s[i] == 1) continue;  // size-1 dims never move
      const bool merge = !shape.empty() && [&] {
        for (size_t k = 0; k < N; ++k)
          if (strides[k].back() != (*st[k])[i] * s[i]) return false;
        return true;
      }();
      if (merge) {
        shape.back() *= s[i];
        for (size_t k = 0; k < N; ++k) strides[k].back() = (*st[k])[i];
      } else {
        shape.push_back(s[i]);
        for (size_t k = 0; k < N; ++k) strides[k].push_back((*st[k])[i]);
      }
    }
    if (shape.empty()) {
      shape.push_back(1);
      for (size_t k = 0; k < N; ++k) strides[k].push_back(1);
    }
  }

  /// Calls row(offsets, n, inner_strides) for every innermost row, in parallel when large.
  /// offsets are element offsets of the row's first element in each operand. A row may be
  /// cut into pieces (each its own call) so that a few long rows, or the single row that
  /// contiguous operands merge into, still use every thread.
  template <class RowFn>
  void run(const RowFn& row) const {
    constexpr int64_t kGrain = 32768;  // elements below which a thread is not worth starting
    const int64_t inner = shape.back();
    int64_t rows = 1;
    for (size_t i = 0; i + 1 < shape.size(); ++i) rows *= shape[i];
    if (rows * inner == 0) return;
    std::array<int64_t, N> inner_st;
    for (size_t k = 0; k < N; ++k) inner_st[k] = strides[k].back();
    const size_t nd = shape.size() - 1;
    const int64_t threads = get_num_threads();
    if (rows < threads && inner >= 2 * kGrain) {
      const int64_t pieces = std::min<int64_t>(inner / kGrain, (threads + rows - 1) / rows);
      const int64_t piece = (inner + pieces - 1) / pieces;
      parallel_for(0, rows * pieces, 1, [&](int64_t lo, int64_t hi) {
        for (int64_t item = lo; item < hi; ++item) {
          const int64_t begin = (item % pieces) * piece, len = std::min(piece, inner - begin);
          std::array<int64_t, N> off{};
          int64_t r = item / pieces;
          for (size_t d = nd; d-- > 0;) {
            const int64_t i = r % shape[d];
            r /= shape[d];
            for (size_t k = 0; k < N; ++k) off[k] += i * strides[k][d];
          }
          for (size_t k = 0; k < N; ++k) off[k] += begin * inner_st[k];
          if (len > 0) row(off, len, inner_st);
        }
      });
      return;
    }
    const int64_t grain = std::max<int64_t>(1, kGrain / inner);
    parallel_for(0, rows, grain, [&](int64_t lo, int64_t hi) {
      std::vector<int64_t> idx(nd);
      std::array<int64_t, N> off{};
      int64_t r = lo;
      for (size_t d = nd; d-- > 0;) {  // decompose lo into outer indices
        idx[d] = r % shape[d];
        r /= shape[d];
        for (size_t k = 0; k < N; ++k) off[k] += idx[d] * strides[k][d];
      }
      for (int64_t i = lo; i < hi; ++i) {
        row(off, inner, inner_st);
        for (size_t d = nd; d-- > 0;) {  // odometer step
          ++idx[d];
          for (size_t k = 0; k < N; ++k) off[k] += strides[k][d];
          if (idx[d] < shape[d]) break;
          for (size_t k = 0; k < N; ++k) off[k] -= shape[d] * strides[k][d];
          idx[d] = 0;
        }
      }
    });
  }
};

}  // namespace ga::backend::cpu
