// CPU kernel: batched matrix product. f32 products go to our AVX-512 GEMMs where the CPU
// runs them (gemm_f32.hpp; few rows of x @ w^T in dot-product form, gemm_f32_dot.hpp); the
// rest (f64, other CPUs, tiny products, GA_GEMM_F32=eigen) to Eigen's GEMM, mapping our
// strided buffers in place (row- or column-major) so the common cases copy nothing.
// Products with a bf16 or f16 operand go to the reduced-precision kernels of gemm_bf16.hpp.
// The epilogue (bias, residual, activation) is fused into the stores where the kernel does
// that (the AVX-512 f32 GEMMs), else one pass after the product.
#pragma once
#include <Eigen/Core>

#include "cpu_backend.hpp"
#include "epilogue.hpp"
#include "gemm_bf16.hpp"
#include "gemm_f32.hpp"
#include "gemm_f32_dot.hpp"

#if GA_EMIT_CPU_KERNELS
namespace ga::backend::cpu {

namespace detail {

template <class T>
using MatRM = Eigen::Matrix<T, Eigen::Dynamic, Eigen::Dynamic, Eigen::RowMajor>;
template <class T>
using MatCM = Eigen::Matrix<T, Eigen::Dynamic, Eigen::Dynamic, Eigen::ColMajor>;
using Stride = Eigen::OuterStride<>;

/// Calls fn(eigen_matrix_expression) with a [rows, cols] operand whose element (i, j) is
/// at p[i * rs + j * cs]: mapped in place when either stride is 1, else copied.
template <class T, class F>
inline void with_matrix(const T* p, int64_t rows, int64_t cols, int64_t rs, int64_t cs, const F& fn) {
  if (cs == 1 && rs >= cols) {
    fn(Eigen::Map<const MatRM<T>, 0, Stride>(p, rows, cols, Stride(rs)));
  } else if (rs == 1 && cs >= rows) {
    fn(Eigen::Map<const MatCM<T>, 0, Stride>(p, rows, cols, Stride(cs)));
  } else {
    MatRM<T> m(rows, cols);
    for (int64_t i = 0; i < rows; ++i)
      for (int64_t j = 0; j < cols; ++j) m(i, j) = p[i * rs + j * cs];
    fn(m);
  }
}

template <class T>
inline void gemm_one(const T* a, const Shape& as, const T* b, const Shape& bs, T* c, int64_t M,
                     int64_t K, int64_t N) {
  Eigen::Map<MatRM<T>> C(c, M, N);
  if (K == 0) {
    C.setZero();
    return;
  }
  with_matrix(a, M, K, as[1], as[2], [&](const auto& A) {
    with_matrix(b, K, N, bs[1], bs[2], [&](const auto& B) { C.noalias() = A * B; });
  });
}

}  // namespace detail

GA_CPU_KERNEL void CpuBackend::matmul(const Tensor& a, const Tensor& b, const Tensor& out,
                                       const MatmulEpilogue& epilogue) {
  const int64_t B = out.size(0), M = out.size(1), N = out.size(2), K = a.size(2);
  if (a.dtype() != out.dtype() || b.dtype() != out.dtype()) {
    auto storable = [](DType t) { return t == DType::f32 || t == DType::bf16 || t == DType::f16; };
    GA_CHECK(out.dtype() == DType::f32 && storable(a.dtype()) && storable(b.dtype()), DTypeError,
             "matmul: no kernel for ", dtype_name(a.dtype()), " @ ", dtype_name(b.dtype()), " -> ",
             dtype_name(out.dtype()), " (mixed products take f32, bf16 or f16 operands into f32)");
    bf16_gemm::matmul(a, b, out, epilogue);
    return;
  }
#if GA_X86_F32_KERNELS
  if (a.dtype() == DType::f32) {
    const F32Kernel path = f32_gemm_path(M, N, K, a.strides()[2] == 1 && b.strides()[1] == 1);
    if (path == F32Kernel::Avx512Dot && K >= 1) {
      f32_gemm::matmul_dot(a, b, out, epilogue);
      return;
    }
    if (path == F32Kernel::Avx512 || path == F32Kernel::Avx2) {
      f32_gemm::packed_matmul(path, a, b, out, epilogue);
      return;
    }
  }
#endif
  GA_DISPATCH_FLOAT(a.dtype(), "matmul", {
    using T = scalar_t;
    const T* ap = static_cast<const T*>(a.raw_data());
    const T* bp = static_cast<const T*>(b.raw_data());
    T* cp = static_cast<T*>(out.raw_data());
    const Shape& as = a.strides();
    const Shape& bs = b.strides();
    auto one = [&](int64_t i) {
      detail::gemm_one<T>(ap + i * as[0], as, bp + i * bs[0], bs, cp + i * M * N, M, K, N);
    };
    // Large products: Eigen parallelises each GEMM itself. Many small ones: one per thread.
    const double flops = 2.0 * double(M) * double(N) * double(K);
    if (B > 1 && flops < 4e6) {
      parallel_for(0, B, 1, [&](int64_t lo, int64_t hi) {
        for (int64_t i = lo; i < hi; ++i) one(i);
      });
    } else {
      for (int64_t i = 0; i < B; ++i) one(i);
    }
  });
  apply_epilogue(out, epilogue);
}

}  // namespace ga::backend::cpu
#endif  // GA_EMIT_CPU_KERNELS
