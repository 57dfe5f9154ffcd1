// The CPU backend's declaration. Its kernels are defined by family in the files
// beside this one (elementwise, reduce, matmul, nn_kernels, index_kernels):
// Eigen for matrix products and vectorised math, OpenMP for parallel loops.
#pragma once
#include "../backend.hpp"
#include "host_cache.hpp"
#include "parallel.hpp"
#include "strided.hpp"

// By default every kernel is an inline function compiled wherever the library is used
// (header-only). A program with many translation units can compile them once instead:
// define GA_SEPARATE_BACKEND everywhere and GA_BACKEND_IMPLEMENTATION in exactly one .cpp
// (this project's tests, tool and benchmarks do this; see cmake/cpu_kernels.cpp).
#if defined(GA_SEPARATE_BACKEND) && !defined(GA_BACKEND_IMPLEMENTATION)
#define GA_EMIT_CPU_KERNELS 0
#else
#define GA_EMIT_CPU_KERNELS 1
#endif
#ifdef GA_SEPARATE_BACKEND
#define GA_CPU_KERNEL
#else
#define GA_CPU_KERNEL inline
#endif

namespace ga::backend::cpu {

class CpuBackend final : public Backend {
 public:
  const char* name() const override { return "cpu"; }

  std::shared_ptr<Storage> allocate(size_t nbytes) override { return HostBlockCache::instance().allocate(nbytes); }
  void copy(const Tensor& src, const Tensor& dst) override;
  void fill(const Tensor& dst, double v) override;
  void upload(const void* host, const Tensor& dst) override;
  void download(const Tensor& src, void* host) override;

  void unary(UnaryOp op, const Tensor& x, const Tensor& out, double a, double b) override;
  void binary(BinaryOp op, const Tensor& a, const Tensor& b, const Tensor& out) override;
  void where(const Tensor& cond, const Tensor& a, const Tensor& b, const Tensor& out) override;

  void reduce_last(ReduceOp op, const Tensor& x, const Tensor& out) override;
  void matmul(const Tensor& a, const Tensor& b, const Tensor& out, const MatmulEpilogue& epilogue) override;

  void softmax_last(const Tensor& x, const Tensor& out, bool log) override;
  void attention(const Tensor& q, const Tensor& k, const Tensor& v, double scale, bool causal,
                 const Tensor& out) override;
  void layer_norm_last(const Tensor& x, const Tensor& w, const Tensor& b, double eps,
                       const Tensor& out, const Tensor& mean, const Tensor& rstd) override;
  void conv2d(const Tensor& x, const Tensor& w, const Window2d& g, const Tensor& out,
              const MatmulEpilogue& epilogue) override;
  void im2col(const Tensor& x, const Window2d& g, const Tensor& cols) override;
  Int8Weight int8_weight(const Tensor& w) override;
  void int8_linear(const Tensor& x, const Int8Weight& w, const Tensor& out, const MatmulEpilogue& epilogue) override;
  void int8_conv2d(const Tensor& x, const Int8Weight& w, const Window2d& g, const Tensor& out,
                   const MatmulEpilogue& epilogue) override;
  void col2im(const Tensor& cols, const Window2d& g, const Tensor& x) override;
  void avg_pool2d(const Tensor& x, const Window2d& g, bool count_include_pad,
                  const Tensor& out) override;
  void avg_pool2d_backward(const Tensor& gout, const Window2d& g, bool count_include_pad,
                           const Tensor& gx) override;
  void adaptive_avg_pool2d(const Tensor& x, const Tensor& out) override;
  void adaptive_avg_pool2d_backward(const Tensor& gout, const Tensor& gx) override;

  void index_select(const Tensor& x, int64_t dim, const Tensor& idx, const Tensor& out) override;
  void index_add(const Tensor& out, int64_t dim, const Tensor& idx, const Tensor& src) override;
  void gather(const Tensor& x, int64_t dim, const Tensor& idx, const Tensor& out) override;
  void scatter_add(const Tensor& out, int64_t dim, const Tensor& idx, const Tensor& src) override;
};

inline CpuBackend& instance() {
  static CpuBackend b;
  return b;
}

}  // namespace ga::backend::cpu
