// CPU threading: the thread count (settable at run time) and a parallel_for that
// every CPU kernel uses, so no kernel silently runs single-threaded on large input.
#pragma once
#include <algorithm>
#include <cstdint>

#include <Eigen/Core>
#ifdef _OPENMP
#include <omp.h>
#endif

namespace ga {

namespace detail {
inline int& thread_count_setting() {
  static int n = 0;  // 0: OpenMP's default (OMP_NUM_THREADS or the core count)
  return n;
}
}  // namespace detail

/// Threads used by CPU kernels (and Eigen's matrix products) from now on. n >= 1.
inline void set_num_threads(int n) {
  if (n < 1) n = 1;
  detail::thread_count_setting() = n;
#ifdef _OPENMP
  omp_set_num_threads(n);
#endif
  Eigen::setNbThreads(n);
}

/// Threads CPU kernels will use (1 when built without OpenMP).
inline int get_num_threads() {
#ifdef _OPENMP
  return detail::thread_count_setting() > 0 ? detail::thread_count_setting() : omp_get_max_threads();
#else
  return 1;
#endif
}

namespace backend::cpu {

/// Calls fn(lo, hi) over a partition of [begin, end) into contiguous chunks, one per
/// thread, when the range holds at least 2 * grain items; otherwise runs inline. Nested
/// calls (already inside a parallel region) run inline.
template <class F>
void parallel_for(int64_t begin, int64_t end, int64_t grain, const F& fn) {
  const int64_t n = end - begin;
  if (n <= 0) return;
#ifdef _OPENMP
  const int64_t max_chunks = std::max<int64_t>(1, n / std::max<int64_t>(grain, 1));
  const int threads = static_cast<int>(std::min<int64_t>(get_num_threads(), max_chunks));
  if (threads > 1 && !omp_in_parallel()) {
#pragma omp parallel num_threads(threads)
    {
      const int64_t t = omp_get_thread_num(), nt = omp_get_num_threads();
      const int64_t lo = begin + n * t / nt, hi = begin + n * (t + 1) / nt;
      if (lo < hi) fn(lo, hi);
    }
    return;
  }
#endif
  fn(begin, end);
}

}  // namespace backend::cpu
}  // namespace ga
