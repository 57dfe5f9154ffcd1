// The benchmarks' thread count: GA_BENCH_THREADS, default 2 (the development machine's
// cores). Kept apart from bench_common.hpp so tools that don't link Google Benchmark can use it.
#pragma once
#include <cstdlib>

inline int bench_threads() {
  const char* s = std::getenv("GA_BENCH_THREADS");
  return s ? std::atoi(s) : 2;
}
