// Shapes and strides: plain vectors of int64, with the helpers every layer needs
// (element counts, contiguous strides, NumPy broadcasting, dim wrapping).
#pragma once
#include <cstdint>
#include <string>
#include <vector>

#include "error.hpp"

namespace ga {

using Shape = std::vector<int64_t>;

inline std::string shape_str(const Shape& s) {
  std::string r = "[";
  for (size_t i = 0; i < s.size(); ++i) r += (i ? ", " : "") + std::to_string(s[i]);
  return r + "]";
}

/// Requires the product of the non-zero dims to fit in int64 (ShapeError otherwise: a shape
/// read from a file may claim anything, and a wrapped count would size a buffer wrongly).
inline int64_t numel_of(const Shape& s) {
  int64_t n = 1;
  for (int64_t d : s)
    if (d == 0) return 0;
  for (int64_t d : s)
    GA_CHECK(!__builtin_mul_overflow(n, d, &n), ShapeError, "shape of ", s.size(),
             " dims has more elements than int64 can count");
  return n;
}

/// Row-major strides for a shape (in elements). ShapeError when they overflow int64 (zero
/// dims count as 1, as PyTorch does).
inline Shape contiguous_strides(const Shape& s) {
  Shape st(s.size());
  int64_t acc = 1;
  for (size_t i = s.size(); i-- > 0;) {
    st[i] = acc;
    GA_CHECK(!__builtin_mul_overflow(acc, s[i] > 0 ? s[i] : 1, &acc), ShapeError, "shape of ", s.size(),
             " dims: its strides overflow int64");
  }
  return st;
}

/// Maps a possibly negative dim into [0, ndim). Throws IndexError naming `op` otherwise.
inline int64_t wrap_dim(int64_t dim, int64_t ndim, const char* op) {
  const int64_t n = ndim == 0 ? 1 : ndim;  // a 0-d tensor accepts dim 0 / -1 like PyTorch
  GA_CHECK(dim >= -n && dim < n, IndexError, op, ": dim ", dim, " out of range for a ", ndim,
           "-d tensor");
  return dim < 0 ? dim + n : dim;
}

/// NumPy broadcasting of two shapes. Throws ShapeError naming `op` and both shapes.
inline Shape broadcast_shapes(const Shape& a, const Shape& b, const char* op) {
  const size_t n = std::max(a.size(), b.size());
  Shape out(n);
  for (size_t i = 0; i < n; ++i) {
    const int64_t da = i < n - a.size() ? 1 : a[i - (n - a.size())];
    const int64_t db = i < n - b.size() ? 1 : b[i - (n - b.size())];
    GA_CHECK(da == db || da == 1 || db == 1, ShapeError, op, ": shapes ", shape_str(a), " and ",
             shape_str(b), " cannot be broadcast together");
    out[i] = da == 1 ? db : da;
  }
  return out;
}

inline void check_shape_valid(const Shape& s, const char* op) {
  for (int64_t d : s)
    GA_CHECK(d >= 0, ValueError, op, ": negative size in shape ", shape_str(s));
}

}  // namespace ga
