// CPU kernels: copy, fill, unary, binary, where.
#pragma once
#include <algorithm>
#include <cmath>
#include <cstdint>
#include <cstring>
#include <limits>
#include <type_traits>

#include <Eigen/Core>

#include "activation_simd.hpp"
#include "cpu_backend.hpp"

#if GA_EMIT_CPU_KERNELS
namespace ga::backend::cpu {

namespace detail {

template <class T>
inline T sigmoid(T x) {
  return x >= T(0) ? T(1) / (T(1) + std::exp(-x)) : std::exp(x) / (T(1) + std::exp(x));
}

/// The scalar definition of each unary op: the reference the fast paths must agree with.
template <class T>
inline T unary_scalar(UnaryOp op, T x, T a, T b) {
  constexpr T kInvSqrt2 = T(0.70710678118654752440);
  constexpr T kInvSqrt2Pi = T(0.39894228040143267794);
  switch (op) {
    case UnaryOp::Neg: return -x;
    case UnaryOp::Exp: return std::exp(x);
    case UnaryOp::Log: return std::log(x);
    case UnaryOp::Sqrt: return std::sqrt(x);
    case UnaryOp::Rsqrt: return T(1) / std::sqrt(x);
    case UnaryOp::Abs: return std::abs(x);
    case UnaryOp::Sign: return x > T(0) ? T(1) : (x < T(0) ? T(-1) : T(0));
    case UnaryOp::Tanh: return std::tanh(x);
    case UnaryOp::Sigmoid: return sigmoid(x);
    case UnaryOp::Relu: return x < T(0) ? T(0) : x;  // nan and -0 as Eigen's max(x, 0) keeps them
    case UnaryOp::Gelu: return T(0.5) * x * (T(1) + std::erf(x * kInvSqrt2));
    case UnaryOp::GeluGrad:
      return T(0.5) * (T(1) + std::erf(x * kInvSqrt2)) + x * kInvSqrt2Pi * std::exp(T(-0.5) * x * x);
    case UnaryOp::QuickGelu: return x * sigmoid(T(1.702) * x);
    case UnaryOp::QuickGeluGrad: {
      const T s = sigmoid(T(1.702) * x);
      return s + T(1.702) * x * s * (T(1) - s);
    }
    case UnaryOp::PowScalar: return std::pow(x, a);
    case UnaryOp::Clamp: return std::min(std::max(x, a), b);
    case UnaryOp::Step: return (x > a && x < b) ? T(1) : T(0);
    case UnaryOp::AddScalar: return x + a;
    case UnaryOp::MulScalar: return x * a;
  }
  return x;
}

/// Y = op(X) through Eigen's array math, for Eigen array expressions X (read) and Y
/// (written) of one length. False (nothing written) where Eigen lacks the function.
template <class T, class In, class Out>
inline bool eigen_unary(UnaryOp op, const In& X, Out&& Y, T a, T b) {
  switch (op) {
    case UnaryOp::Neg: Y = -X; return true;
    case UnaryOp::Exp: Y = X.exp(); return true;
    case UnaryOp::Log: Y = X.log(); return true;
    case UnaryOp::Sqrt: Y = X.sqrt(); return true;
    case UnaryOp::Rsqrt: Y = X.rsqrt(); return true;
    case UnaryOp::Abs: Y = X.abs(); return true;
    case UnaryOp::Tanh: Y = X.tanh(); return true;
    case UnaryOp::Relu: Y = X.max(T(0)); return true;
    case UnaryOp::Clamp: Y = X.max(a).min(b); return true;
    case UnaryOp::AddScalar: Y = X + a; return true;
    case UnaryOp::MulScalar: Y = X * a; return true;
    case UnaryOp::QuickGelu: Y = X * (X * T(1.702)).logistic(); return true;
    case UnaryOp::Sigmoid: Y = X.logistic(); return true;
    default: return false;
  }
}

/// Whether Eigen's scalar and packet code for op can give different bits (approximated
/// functions); the others (negation, abs, max/min, +, *, IEEE sqrt) are exact in both.
inline bool eigen_unary_approximates(UnaryOp op) {
  return op == UnaryOp::Exp || op == UnaryOp::Log || op == UnaryOp::Rsqrt || op == UnaryOp::Tanh ||
         op == UnaryOp::QuickGelu || op == UnaryOp::Sigmoid;
}

/// y[i * ys] = op(x[i * xs]) for i < n, where x or y is strided: in blocks copied into an
/// aligned buffer, zero-padded to whole 64-byte vectors, on which apply(buf, padded) works in
/// place. False (nothing more written) when apply returns false.
template <class T, class Apply>
inline bool unary_through_buffer(const T* x, int64_t xs, T* y, int64_t ys, int64_t n, Apply&& apply) {
  constexpr int64_t kBlock = 256, kLanes = 64 / int64_t(sizeof(T));
  alignas(64) T buf[kBlock];
  for (int64_t i0 = 0; i0 < n; i0 += kBlock) {
    const int64_t len = std::min(kBlock, n - i0), padded = (len + kLanes - 1) / kLanes * kLanes;
    for (int64_t i = 0; i < len; ++i) buf[i] = x[(i0 + i) * xs];
    std::fill(buf + len, buf + padded, T(0));
    if (!apply(buf, padded)) return false;
    for (int64_t i = 0; i < len; ++i) y[(i0 + i) * ys] = buf[i];
  }
  return true;
}

/// y[i * ys] = op(x[i * xs]) for i < n through Eigen's array math; false (nothing written)
/// where Eigen lacks the function. Eigen computes an unaligned head and a partial tail in
/// scalar code, and for approximated functions that code can differ from the packet code in
/// the last bit (QuickGELU's exp below -9): a value's result would then depend on where it
/// lies, so on its alignment, on how threads split a tensor and on which tile of a fused
/// epilogue holds it. So those functions run only in whole packets: in place where x and y
/// are aligned whole packets, else over blocks copied into an aligned buffer padded to whole
/// packets. Every value then gets the packet code's bits, wherever it lies. (f32 QuickGELU
/// and GELU on a CPU that runs AVX-512 or AVX2 are activation_simd.hpp's instead, whose bits
/// do not depend on where a value lies either, nor on which of the two runs them.)
template <class T>
inline bool unary_eigen(UnaryOp op, const T* x, int64_t xs, T* y, int64_t ys, int64_t n, T a, T b) {
  using Arr = Eigen::Array<T, Eigen::Dynamic, 1>;
  constexpr int64_t kAlign = 64, kLanes = kAlign / int64_t(sizeof(T));  // a multiple of any packet's
  const bool contiguous = xs == 1 && ys == 1;
#if GA_X86_F32_KERNELS
  if constexpr (std::is_same_v<T, float>) {
    if ((op == UnaryOp::QuickGelu || op == UnaryOp::Gelu) && (f32_avx512_supported() || f32_avx2_supported())) {
      namespace a512 = activation_avx512;
      namespace a256 = activation_avx2;
      const bool wide = f32_avx512_supported(), quick = op == UnaryOp::QuickGelu;
      void (*const f)(const float*, float*, int64_t) =
          wide ? (quick ? a512::map<a512::quick_gelu> : a512::map<a512::gelu>)
               : (quick ? a256::map<a256::quick_gelu> : a256::map<a256::gelu>);
      if (contiguous) {
        f(x, y, n);
        return true;
      }
      return unary_through_buffer(x, xs, y, ys, n, [&](float* buf, int64_t len) {
        f(buf, buf, len);
        return true;
      });
    }
  }
#endif
  if (!eigen_unary_approximates(op)) {
    if (!contiguous) return false;  // exact in unary_scalar too
    return eigen_unary(op, Eigen::Map<const Arr>(x, n), Eigen::Map<Arr>(y, n), a, b);
  }
  auto aligned = [&](const T* p) { return reinterpret_cast<uintptr_t>(p) % kAlign == 0; };
  if (contiguous && n % kLanes == 0 && aligned(x) && aligned(y))
    return eigen_unary(op, Eigen::Map<const Arr, Eigen::Aligned64>(x, n), Eigen::Map<Arr, Eigen::Aligned64>(y, n), a,
                       b);
  return unary_through_buffer(x, xs, y, ys, n, [&](T* buf, int64_t len) {
    Eigen::Map<Arr, Eigen::Aligned64> block(buf, len);
    return eigen_unary(op, block, block, a, b);  // coefficient-wise: in place is safe
  });
}

template <class T>
inline T binary_scalar(BinaryOp op, T a, T b) {
  switch (op) {
    case BinaryOp::Add: return a + b;
    case BinaryOp::Sub: return a - b;
    case BinaryOp::Mul: return a * b;
    case BinaryOp::Div: return a / b;
    case BinaryOp::Pow: return std::pow(a, b);
    case BinaryOp::Maximum: return std::max(a, b);
    case BinaryOp::Minimum: return std::min(a, b);
    default: return T(0);
  }
}
template <class T>
inline bool compare_scalar(BinaryOp op, T a, T b) {
  switch (op) {
    case BinaryOp::Eq: return a == b;
    case BinaryOp::Ne: return a != b;
    case BinaryOp::Lt: return a < b;
    case BinaryOp::Le: return a <= b;
    case BinaryOp::Gt: return a > b;
    case BinaryOp::Ge: return a >= b;
    default: return false;
  }
}
inline bool is_comparison(BinaryOp op) { return op >= BinaryOp::Eq; }

template <class S, class D>
inline D convert(S v) {
  if constexpr (std::is_same_v<S, D>) return v;
  else return from_double<D>(to_double<S>(v));
}

}  // namespace detail

GA_CPU_KERNEL void CpuBackend::copy(const Tensor& src, const Tensor& dst) {
  GA_CHECK(src.shape() == dst.shape(), ShapeError, "copy: source ", shape_str(src.shape()),
           " and destination ", shape_str(dst.shape()), " differ");
  if (src.dtype() == dst.dtype() && src.is_contiguous() && dst.is_contiguous()) {
    // Large copies are split across threads: one thread does not saturate memory bandwidth.
    const size_t es = dtype_size(src.dtype());
    char* d = static_cast<char*>(dst.raw_data());
    const char* s = static_cast<const char*>(src.raw_data());
    parallel_for(0, src.numel(), 1 << 18, [&](int64_t lo, int64_t hi) {
      std::memcpy(d + lo * es, s + lo * es, static_cast<size_t>(hi - lo) * es);
    });
    return;
  }
  StridedLoop<2> loop(dst.shape(), {&dst.strides(), &src.strides()});
  GA_DISPATCH_ALL(src.dtype(), "copy", {
    using S = scalar_t;
    const S* s = static_cast<const S*>(src.raw_data());
    GA_DISPATCH_ALL(dst.dtype(), "copy", {
      scalar_t* d = static_cast<scalar_t*>(dst.raw_data());
      loop.run([&](const std::array<int64_t, 2>& off, int64_t n, const std::array<int64_t, 2>& st) {
        if (st[0] == 1 && st[1] == 1) {  // rows contiguous in both (a permuted copy's runs): vectorised
          for (int64_t i = 0; i < n; ++i) d[off[0] + i] = detail::convert<S, scalar_t>(s[off[1] + i]);
          return;
        }
        for (int64_t i = 0; i < n; ++i)
          d[off[0] + i * st[0]] = detail::convert<S, scalar_t>(s[off[1] + i * st[1]]);
      });
    });
  });
}

GA_CPU_KERNEL void CpuBackend::fill(const Tensor& dst, double v) {
  StridedLoop<1> loop(dst.shape(), {&dst.strides()});
  GA_DISPATCH_ALL(dst.dtype(), "fill", {
    scalar_t* d = static_cast<scalar_t*>(dst.raw_data());
    const scalar_t value = from_double<scalar_t>(v);
    loop.run([&](const std::array<int64_t, 1>& off, int64_t n, const std::array<int64_t, 1>& st) {
      for (int64_t i = 0; i < n; ++i) d[off[0] + i * st[0]] = value;
    });
  });
}

GA_CPU_KERNEL void CpuBackend::upload(const void* host, const Tensor& dst) {
  if (dst.numel() > 0) std::memcpy(dst.raw_data(), host, dst.numel() * dtype_size(dst.dtype()));
}
GA_CPU_KERNEL void CpuBackend::download(const Tensor& src, void* host) {
  if (src.numel() > 0) std::memcpy(host, src.raw_data(), src.numel() * dtype_size(src.dtype()));
}

GA_CPU_KERNEL void CpuBackend::unary(UnaryOp op, const Tensor& x, const Tensor& out, double a, double b) {
  GA_DISPATCH_FLOAT(x.dtype(), "unary", {
    using T = scalar_t;
    const T* xp = static_cast<const T*>(x.raw_data());
    T* yp = static_cast<T*>(out.raw_data());
    const T ta = static_cast<T>(a), tb = static_cast<T>(b);
    if (x.is_contiguous()) {
      parallel_for(0, x.numel(), 16384, [&](int64_t lo, int64_t hi) {
        if (!detail::unary_eigen<T>(op, xp + lo, 1, yp + lo, 1, hi - lo, ta, tb))
          for (int64_t i = lo; i < hi; ++i) yp[i] = detail::unary_scalar<T>(op, xp[i], ta, tb);
      });
      return;
    }
    StridedLoop<2> loop(out.shape(), {&out.strides(), &x.strides()});
    loop.run([&](const std::array<int64_t, 2>& off, int64_t n, const std::array<int64_t, 2>& st) {
      if (detail::unary_eigen<T>(op, xp + off[1], st[1], yp + off[0], st[0], n, ta, tb)) return;
      for (int64_t i = 0; i < n; ++i)
        yp[off[0] + i * st[0]] = detail::unary_scalar<T>(op, xp[off[1] + i * st[1]], ta, tb);
    });
  });
}

GA_CPU_KERNEL void CpuBackend::binary(BinaryOp op, const Tensor& a, const Tensor& b, const Tensor& out) {
  StridedLoop<3> loop(out.shape(), {&out.strides(), &a.strides(), &b.strides()});
  GA_DISPATCH_FLOAT(a.dtype(), "binary", {
    using T = scalar_t;
    const T* ap = static_cast<const T*>(a.raw_data());
    const T* bp = static_cast<const T*>(b.raw_data());
    if (detail::is_comparison(op)) {
      bool* op_ = static_cast<bool*>(out.raw_data());
      loop.run([&](const std::array<int64_t, 3>& o, int64_t n, const std::array<int64_t, 3>& s) {
        for (int64_t i = 0; i < n; ++i)
          op_[o[0] + i * s[0]] = detail::compare_scalar<T>(op, ap[o[1] + i * s[1]], bp[o[2] + i * s[2]]);
      });
      return;
    }
    T* yp = static_cast<T*>(out.raw_data());
    loop.run([&](const std::array<int64_t, 3>& o, int64_t n, const std::array<int64_t, 3>& s) {
      T* y = yp + o[0];
      const T* p = ap + o[1];
      const T* q = bp + o[2];
      // The common layouts get their own loops so the compiler vectorises them.
      if (s[0] == 1 && s[1] == 1 && s[2] == 1) {
        switch (op) {
          case BinaryOp::Add: for (int64_t i = 0; i < n; ++i) y[i] = p[i] + q[i]; return;
          case BinaryOp::Sub: for (int64_t i = 0; i < n; ++i) y[i] = p[i] - q[i]; return;
          case BinaryOp::Mul: for (int64_t i = 0; i < n; ++i) y[i] = p[i] * q[i]; return;
          case BinaryOp::Div: for (int64_t i = 0; i < n; ++i) y[i] = p[i] / q[i]; return;
          default: break;
        }
      } else if (s[0] == 1 && s[1] == 1 && s[2] == 0) {
        const T c = q[0];
        switch (op) {
          case BinaryOp::Add: for (int64_t i = 0; i < n; ++i) y[i] = p[i] + c; return;
          case BinaryOp::Sub: for (int64_t i = 0; i < n; ++i) y[i] = p[i] - c; return;
          case BinaryOp::Mul: for (int64_t i = 0; i < n; ++i) y[i] = p[i] * c; return;
          case BinaryOp::Div: for (int64_t i = 0; i < n; ++i) y[i] = p[i] / c; return;
          default: break;
        }
      }
      for (int64_t i = 0; i < n; ++i) y[i * s[0]] = detail::binary_scalar<T>(op, p[i * s[1]], q[i * s[2]]);
    });
  });
}

GA_CPU_KERNEL void CpuBackend::where(const Tensor& cond, const Tensor& a, const Tensor& b, const Tensor& out) {
  StridedLoop<4> loop(out.shape(), {&out.strides(), &cond.strides(), &a.strides(), &b.strides()});
  const bool* cp = static_cast<const bool*>(cond.raw_data());
  GA_DISPATCH_ALL(a.dtype(), "where", {
    const scalar_t* ap = static_cast<const scalar_t*>(a.raw_data());
    const scalar_t* bp = static_cast<const scalar_t*>(b.raw_data());
    scalar_t* yp = static_cast<scalar_t*>(out.raw_data());
    loop.run([&](const std::array<int64_t, 4>& o, int64_t n, const std::array<int64_t, 4>& s) {
      for (int64_t i = 0; i < n; ++i)
        yp[o[0] + i * s[0]] = cp[o[1] + i * s[1]] ? ap[o[2] + i * s[2]] : bp[o[3] + i * s[3]];
    });
  });
}

}  // namespace ga::backend::cpu
#endif  // GA_EMIT_CPU_KERNELS
