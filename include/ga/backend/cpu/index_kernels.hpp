// CPU kernels for indexing: index_select / index_add, gather / scatter_add.
//
// Every kernel checks all indices before touching memory, so a bad index throws
// (outside any parallel region) and leaves the output unchanged. The accumulating
// kernels split work only along dims where two indices can never hit the same element.
#pragma once
#include <algorithm>
#include <cstring>
#include <vector>

#include "cpu_backend.hpp"

#if GA_EMIT_CPU_KERNELS
namespace ga::backend::cpu {

namespace detail {

/// Throws IndexError naming `op` for the first index outside [0, size).
template <class I>
inline void check_indices(const char* op, const I* idx, int64_t n, int64_t size, int64_t dim) {
  for (int64_t i = 0; i < n; ++i) {
    const int64_t v = static_cast<int64_t>(idx[i]);
    GA_CHECK(v >= 0 && v < size, IndexError, op, ": index ", v, " out of range for dim ", dim, " of size ", size);
  }
}

/// Rows of `len` elements per thread so that each chunk moves at least ~32K elements.
inline int64_t grain_for_rows(int64_t len) { return std::max<int64_t>(1, 32768 / std::max<int64_t>(len, 1)); }

/// Sizes of t before, at, and after dim (t viewed as [outer, n, inner]).
inline void split_at(const Shape& s, int64_t dim, int64_t& outer, int64_t& n, int64_t& inner) {
  outer = 1;
  inner = 1;
  for (int64_t i = 0; i < dim; ++i) outer *= s[i];
  for (size_t i = dim + 1; i < s.size(); ++i) inner *= s[i];
  n = s[dim];
}

/// Runs fn(o_lo, o_hi, i_lo, i_hi) over a split of the [outer, inner] grid along whichever
/// of the two is larger; the dim between them is never split.
template <class F>
inline void split_outer_or_inner(int64_t outer, int64_t inner, int64_t per_cell, const F& fn) {
  if (outer >= inner) {
    parallel_for(0, outer, std::max<int64_t>(1, 32768 / std::max<int64_t>(per_cell * inner, 1)),
                 [&](int64_t lo, int64_t hi) { fn(lo, hi, int64_t(0), inner); });
  } else {
    parallel_for(0, inner, std::max<int64_t>(1, 32768 / std::max<int64_t>(per_cell * outer, 1)),
                 [&](int64_t lo, int64_t hi) { fn(int64_t(0), outer, lo, hi); });
  }
}

/// For idx of shape s and a target with contiguous strides `ts`: the target offset of
/// every outer position (dims before dim) and every inner position (dims after dim).
inline void gather_offsets(const Shape& s, const Shape& ts, int64_t dim, std::vector<int64_t>& outer_off,
                           std::vector<int64_t>& inner_off) {
  int64_t outer, n, inner;
  split_at(s, dim, outer, n, inner);
  auto offsets = [&](int64_t from, int64_t to, int64_t count, std::vector<int64_t>& out) {
    out.assign(static_cast<size_t>(count), 0);
    for (int64_t f = 0; f < count; ++f) {
      int64_t r = f, off = 0;
      for (int64_t d = to; d-- > from;) {
        off += (r % s[d]) * ts[d];
        r /= s[d];
      }
      out[static_cast<size_t>(f)] = off;
    }
  };
  offsets(0, dim, outer, outer_off);
  offsets(dim + 1, static_cast<int64_t>(s.size()), inner, inner_off);
}

}  // namespace detail

GA_CPU_KERNEL void CpuBackend::index_select(const Tensor& x, int64_t dim, const Tensor& idx, const Tensor& out) {
  int64_t outer, n, inner;
  detail::split_at(x.shape(), dim, outer, n, inner);
  const int64_t k = idx.numel();
  GA_DISPATCH_INDEX(idx.dtype(), "index_select", {
    using I = scalar_t;
    const I* ip = static_cast<const I*>(idx.raw_data());
    detail::check_indices("index_select", ip, k, n, dim);
    if (out.numel() == 0) return;  // empty buffers may be null: nothing to copy
    GA_DISPATCH_FLOAT(x.dtype(), "index_select", {
      using T = scalar_t;
      const T* xp = static_cast<const T*>(x.raw_data());
      T* yp = static_cast<T*>(out.raw_data());
      parallel_for(0, outer * k, detail::grain_for_rows(inner), [&](int64_t lo, int64_t hi) {
        for (int64_t r = lo; r < hi; ++r) {
          const int64_t o = r / k, j = r % k;
          std::memcpy(yp + r * inner, xp + (o * n + static_cast<int64_t>(ip[j])) * inner, sizeof(T) * inner);
        }
      });
    });
  });
}

GA_CPU_KERNEL void CpuBackend::index_add(const Tensor& out, int64_t dim, const Tensor& idx, const Tensor& src) {
  int64_t outer, n, inner;
  detail::split_at(out.shape(), dim, outer, n, inner);
  const int64_t k = idx.numel();
  GA_DISPATCH_INDEX(idx.dtype(), "index_add", {
    using I = scalar_t;
    const I* ip = static_cast<const I*>(idx.raw_data());
    detail::check_indices("index_add", ip, k, n, dim);
    GA_DISPATCH_FLOAT(out.dtype(), "index_add", {
      using T = scalar_t;
      const T* sp = static_cast<const T*>(src.raw_data());
      T* yp = static_cast<T*>(out.raw_data());
      // Repeated indices collide along dim only, so dim is walked serially by each thread.
      detail::split_outer_or_inner(outer, inner, k, [&](int64_t o_lo, int64_t o_hi, int64_t i_lo, int64_t i_hi) {
        for (int64_t o = o_lo; o < o_hi; ++o)
          for (int64_t j = 0; j < k; ++j) {
            T* dst = yp + (o * n + static_cast<int64_t>(ip[j])) * inner;
            const T* s = sp + (o * k + j) * inner;
            for (int64_t i = i_lo; i < i_hi; ++i) dst[i] += s[i];
          }
      });
    });
  });
}

GA_CPU_KERNEL void CpuBackend::gather(const Tensor& x, int64_t dim, const Tensor& idx, const Tensor& out) {
  int64_t outer, k, inner;
  detail::split_at(idx.shape(), dim, outer, k, inner);
  const int64_t n = x.size(dim), xs = contiguous_strides(x.shape())[dim];
  std::vector<int64_t> outer_off, inner_off;
  detail::gather_offsets(idx.shape(), contiguous_strides(x.shape()), dim, outer_off, inner_off);
  GA_DISPATCH_INDEX(idx.dtype(), "gather", {
    using I = scalar_t;
    const I* ip = static_cast<const I*>(idx.raw_data());
    detail::check_indices("gather", ip, idx.numel(), n, dim);
    GA_DISPATCH_FLOAT(x.dtype(), "gather", {
      using T = scalar_t;
      const T* xp = static_cast<const T*>(x.raw_data());
      T* yp = static_cast<T*>(out.raw_data());
      parallel_for(0, outer * k, detail::grain_for_rows(inner), [&](int64_t lo, int64_t hi) {
        for (int64_t r = lo; r < hi; ++r) {
          const int64_t base = outer_off[static_cast<size_t>(r / k)];
          for (int64_t i = 0; i < inner; ++i) {
            const int64_t f = r * inner + i;
            yp[f] = xp[base + static_cast<int64_t>(ip[f]) * xs + inner_off[static_cast<size_t>(i)]];
          }
        }
      });
    });
  });
}

GA_CPU_KERNEL void CpuBackend::scatter_add(const Tensor& out, int64_t dim, const Tensor& idx, const Tensor& src) {
  int64_t outer, k, inner;
  detail::split_at(idx.shape(), dim, outer, k, inner);
  const int64_t n = out.size(dim), ys = contiguous_strides(out.shape())[dim];
  std::vector<int64_t> outer_off, inner_off;
  detail::gather_offsets(idx.shape(), contiguous_strides(out.shape()), dim, outer_off, inner_off);
  GA_DISPATCH_INDEX(idx.dtype(), "scatter_add", {
    using I = scalar_t;
    const I* ip = static_cast<const I*>(idx.raw_data());
    detail::check_indices("scatter_add", ip, idx.numel(), n, dim);
    GA_DISPATCH_FLOAT(out.dtype(), "scatter_add", {
      using T = scalar_t;
      const T* sp = static_cast<const T*>(src.raw_data());
      T* yp = static_cast<T*>(out.raw_data());
      // Two elements of src can meet only when they agree outside dim: dim stays serial.
      detail::split_outer_or_inner(outer, inner, k, [&](int64_t o_lo, int64_t o_hi, int64_t i_lo, int64_t i_hi) {
        for (int64_t o = o_lo; o < o_hi; ++o) {
          const int64_t base = outer_off[static_cast<size_t>(o)];
          for (int64_t j = 0; j < k; ++j)
            for (int64_t i = i_lo; i < i_hi; ++i) {
              const int64_t f = (o * k + j) * inner + i;
              yp[base + static_cast<int64_t>(ip[f]) * ys + inner_off[static_cast<size_t>(i)]] += sp[f];
            }
        }
      });
    });
  });
}

}  // namespace ga::backend::cpu
#endif  // GA_EMIT_CPU_KERNELS
