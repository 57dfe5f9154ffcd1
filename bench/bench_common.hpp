// What every benchmark binary shares: the thread count (GA_BENCH_THREADS, default 2), set
// the same for ga and for the OpenBLAS peer, and the GFLOP/s counter.
#pragma once
#include <benchmark/benchmark.h>

#include <ga/backend/cpu/parallel.hpp>

#include "bench_threads.hpp"

extern "C" void openblas_set_num_threads(int);

/// ga and OpenBLAS both use bench_threads() threads. Only for binaries that link OpenBLAS.
inline void set_bench_threads_with_openblas() {
  ga::set_num_threads(bench_threads());
  openblas_set_num_threads(bench_threads());
}

/// Reports flops_per_iter floating-point operations per iteration as a GFLOP/s rate.
inline void set_flops(benchmark::State& st, double flops_per_iter) {
  st.counters["GFLOP/s"] = benchmark::Counter(flops_per_iter * 1e-9, benchmark::Counter::kIsIterationInvariantRate);
}
