// CPU kernels for neural-network layers: softmax, fused attention and layer norm.
#pragma once
#include <algorithm>
#include <cmath>
#include <limits>
#include <memory>
#include <type_traits>

#include <Eigen/Core>

#include "attention_f32.hpp"
#include "cpu_backend.hpp"

#if GA_EMIT_CPU_KERNELS
namespace ga::backend::cpu {

namespace detail {
/// Rows of softmax on whole SIMD packets (Eigen's packet math). Eigen's array expressions
/// sent a row's last n % W values through the scalar std::exp and made five passes over the
/// row; attention's rows are short (50 keys in ViT-B/32, up to 77 in the text tower). Here a
/// row of n >= W values ends with the packet x[n - W, n), which overlaps the one before it;
/// a lane mask keeps its overlapped lanes out of the sum. Rows shorter than a packet, and
/// builds without SIMD, take the scalar loops.
template <class T>
struct SoftmaxRow {
  using P = typename Eigen::internal::packet_traits<T>::type;
  static constexpr int64_t W = Eigen::internal::unpacket_traits<P>::size;
  static constexpr bool kPacked =
      Eigen::internal::packet_traits<T>::Vectorizable && Eigen::internal::packet_traits<T>::HasExp && W > 1;

  /// max_i x[i] * scale over n >= 1 values. A nan in the row may or may not show here; it
  /// reaches exp_shifted's sum either way.
  static T max_scaled(const T* x, T scale, int64_t n) {
    using namespace Eigen::internal;
    if constexpr (kPacked) {
      if (n >= W) {
        const P sc = pset1<P>(scale);
        P m = pmul(ploadu<P>(x + n - W), sc);
        for (int64_t i = 0; i + W < n; i += W) m = pmax(m, pmul(ploadu<P>(x + i), sc));
        return predux_max(m);
      }
    }
    T m = x[0] * scale;
    for (int64_t i = 1; i < n; ++i) m = std::max(m, x[i] * scale);
    return m;
  }

  /// y[i] = exp(x[i] * scale - m) for i < n (m: max_scaled's result); returns sum(y), nan if
  /// any x is. x and y may be the same row. Eigen's vectorised exp gives ~3e-39 (an f32
  /// subnormal), not 0, for inputs below -88.7, masked (-inf) scores included, and computing
  /// subnormals is slow. Inputs whose exp would be within e^2 of the smallest normal number
  /// give exactly 0 instead (as PyTorch gives for masked scores; the weights dropped are
  /// below 1e-37, the largest is 1), and the clamp keeps exp itself off subnormals. Otherwise
  /// attention's p @ v runs on subnormals, which made causal attention ~50x slower on x86.
  static T exp_shifted(const T* x, T scale, T m, int64_t n, T* y) {
    using namespace Eigen::internal;
    const T cut = std::log(std::numeric_limits<T>::min()) + T(2);
    if constexpr (kPacked) {
      if (n >= W) {
        const P sc = pset1<P>(scale), pm = pset1<P>(m), pcut = pset1<P>(cut), zero = pzero(pm);
        auto exp_of = [&](const P& xs) {  // pmax(t, cut) keeps a nan t
          const P t = psub(pmul(xs, sc), pm);
          return pselect(pcmp_lt(t, pcut), zero, pexp(pmax(t, pcut)));
        };
        const P last = ploadu<P>(x + n - W);  // read before y (maybe x) is written
        P sum = zero;
        int64_t i = 0;
        for (; i + W < n; i += W) {
          const P e = exp_of(ploadu<P>(x + i));
          pstoreu(y + i, e);
          sum = padd(sum, e);
        }
        // Lanes of the last packet at or past i are new: lane j holds x[n - W + j].
        const P e = exp_of(last);
        pstoreu(y + n - W, e);
        const P fresh = pcmp_le(pset1<P>(T(i - (n - W))), plset<P>(T(0)));
        return predux(padd(sum, pand(fresh, e)));
      }
    }
    T s = 0;
    for (int64_t i = 0; i < n; ++i) {
      const T t = x[i] * scale - m;
      y[i] = t < cut ? T(0) : std::exp(t);
      s += y[i];
    }
    return s;
  }
};
}  // namespace detail

GA_CPU_KERNEL void CpuBackend::softmax_last(const Tensor& x, const Tensor& out, bool log) {
  const int64_t rows = x.size(0), n = x.size(1);
  GA_DISPATCH_FLOAT(x.dtype(), "softmax", {
    using T = scalar_t;
    using Arr = Eigen::Array<T, Eigen::Dynamic, 1>;
    using Row = detail::SoftmaxRow<T>;
    const T* xp = static_cast<const T*>(x.raw_data());
    T* yp = static_cast<T*>(out.raw_data());
    parallel_for(0, rows, std::max<int64_t>(1, 8192 / std::max<int64_t>(n, 1)), [&](int64_t lo, int64_t hi) {
      for (int64_t r = lo; r < hi; ++r) {
        if (n == 0) continue;
        Eigen::Map<const Arr> xr(xp + r * n, n);
        Eigen::Map<Arr> yr(yp + r * n, n);
        const T m = Row::max_scaled(xr.data(), T(1), n);
        if (m == -std::numeric_limits<T>::infinity()) {  // fully masked row: PyTorch gives nan
          yr.setConstant(std::numeric_limits<T>::quiet_NaN());
          continue;
        }
        const T s = Row::exp_shifted(xr.data(), T(1), m, n, yr.data());
        if (log) yr = (xr - m) - std::log(s);
        else yr /= s;
      }
    });
  });
}

GA_CPU_KERNEL void CpuBackend::attention(const Tensor& q, const Tensor& k, const Tensor& v, double scale, bool causal,
                                         const Tensor& out) {
  const int64_t B1 = q.size(1), L = q.size(2), E = q.size(3), S = k.size(2), Ev = v.size(3);
  const int64_t batches = q.size(0) * B1;
  GA_DISPATCH_FLOAT(q.dtype(), "attention", {
    using T = scalar_t;
    using Mat = Eigen::Matrix<T, Eigen::Dynamic, Eigen::Dynamic, Eigen::RowMajor>;
    using In = Eigen::Map<const Mat, 0, Eigen::OuterStride<>>;
    using Out = Eigen::Map<Mat, 0, Eigen::OuterStride<>>;
    using Row = detail::SoftmaxRow<T>;
    const T* qp = static_cast<const T*>(q.raw_data());
    const T* kp = static_cast<const T*>(k.raw_data());
    const T* vp = static_cast<const T*>(v.raw_data());
    T* op = static_cast<T*>(out.raw_data());
    auto at = [B1](const Tensor& t, int64_t b) { return (b / B1) * t.stride(0) + (b % B1) * t.stride(1); };
    // softmax(p's row i * scale) over the keys it may see, in place; 0 past them.
    auto softmax_row = [&](T* row, int64_t i) {
      const int64_t n = causal ? std::min(i + 1, S) : S;  // keys row i may see
      const T m = Row::max_scaled(row, T(scale), n);
      const T s = Row::exp_shifted(row, T(scale), m, n, row);
      Eigen::Map<Eigen::Array<T, Eigen::Dynamic, 1>>(row, n) /= s;
      std::fill(row + n, row + S, T(0));
    };
    // One (b0, b1) per task: its scores [L, S] stay in cache from the product to the softmax
    // to p @ v, and the inputs are read where they lie (row strides 3D for a packed qkv).
    parallel_for(0, batches, std::max<int64_t>(1, 4096 / std::max<int64_t>(L * S, 1)), [&](int64_t lo, int64_t hi) {
#if GA_X86_F32_KERNELS
      // f32 on AVX-512: our own products (attention_f32.hpp), unless f32 products are sent
      // to Eigen (GA_GEMM_F32=eigen, set_f32_gemm_kernel).
      // (The casts are no-ops: this runs for T = float only; the f64 case compiles it.)
      if (std::is_same_v<T, float> && S > 0 && detail::f32_avx512_supported() &&
          f32_gemm_kernel() != F32Kernel::Eigen) {
        const auto* qf = reinterpret_cast<const float*>(qp);
        const auto* kf = reinterpret_cast<const float*>(kp);
        const auto* vf = reinterpret_cast<const float*>(vp);
        auto* of = reinterpret_cast<float*>(op);
        const int64_t ld = (S + 15) / 16 * 16;  // k^T's and p's rows, whole vectors apart
        const std::unique_ptr<float[]> scratch(new float[size_t((E + L) * ld)]);  // uninitialised
        float* const kt = scratch.get();  // k^T [E, S]
        float* const p = kt + E * ld;      // p [L, S]
        for (int64_t b = lo; b < hi; ++b) {
          f32_gemm::avx512::transpose_matrix(kf + at(k, b), S, E, k.stride(2), kt, ld);
          f32_gemm::rows_times_rows(L, S, E, qf + at(q, b), q.stride(2), kt, ld, p, ld);
          for (int64_t i = 0; i < L; ++i) softmax_row(reinterpret_cast<T*>(p + i * ld), i);
          f32_gemm::rows_times_rows(L, Ev, S, p, ld, vf + at(v, b), v.stride(2), of + at(out, b), out.stride(2));
        }
        return;
      }
#endif
      Mat p(L, S);
      for (int64_t b = lo; b < hi; ++b) {
        const In Q(qp + at(q, b), L, E, Eigen::OuterStride<>(q.stride(2)));
        const In K(kp + at(k, b), S, E, Eigen::OuterStride<>(k.stride(2)));
        const In V(vp + at(v, b), S, Ev, Eigen::OuterStride<>(v.stride(2)));
        Out O(op + at(out, b), L, Ev, Eigen::OuterStride<>(out.stride(2)));
        p.noalias() = Q * K.transpose();
        for (int64_t i = 0; i < L; ++i) softmax_row(p.row(i).data(), i);
        O.noalias() = p * V;
      }
    });
  });
}

GA_CPU_KERNEL void CpuBackend::layer_norm_last(const Tensor& x, const Tensor& w, const Tensor& b, double eps,
                                        const Tensor& out, const Tensor& mean, const Tensor& rstd) {
  const int64_t rows = x.size(0), n = x.size(1);
  GA_DISPATCH_FLOAT(x.dtype(), "layer_norm", {
    using T = scalar_t;
    using Arr = Eigen::Array<T, Eigen::Dynamic, 1>;
    const T* xp = static_cast<const T*>(x.raw_data());
    const T* wp = w.defined() ? static_cast<const T*>(w.raw_data()) : nullptr;
    const T* bp = b.defined() ? static_cast<const T*>(b.raw_data()) : nullptr;
    T* yp = static_cast<T*>(out.raw_data());
    T* mp = static_cast<T*>(mean.raw_data());
    T* rp = static_cast<T*>(rstd.raw_data());
    parallel_for(0, rows, std::max<int64_t>(1, 8192 / std::max<int64_t>(n, 1)), [&](int64_t lo, int64_t hi) {
      for (int64_t r = lo; r < hi; ++r) {
        Eigen::Map<const Arr> xr(xp + r * n, n);
        Eigen::Map<Arr> yr(yp + r * n, n);
        // Corrected two-pass (Chan, Golub and LeVeque): on a row offset far from 0, x - mu0 is
        // exact (x within a factor 2 of mu0) and its mean c is mu0's rounding error, which
        // would otherwise reach the output divided by the row's small spread (1e-5 at f32 on
        // values in [50, 52]).
        const T mu0 = xr.sum() / T(n);
        const T c = (xr - mu0).sum() / T(n);
        const T var = ((xr - mu0) - c).square().sum() / T(n);
        const T rs = T(1) / std::sqrt(var + T(eps));
        mp[r] = mu0 + c;
        rp[r] = rs;
        // One pass for the output (three separate statements made three).
        const auto z = ((xr - mu0) - c) * rs;
        const Eigen::Map<const Arr> wr(wp, wp ? n : 0), br(bp, bp ? n : 0);
        if (wp && bp) yr = z * wr + br;
        else if (wp) yr = z * wr;
        else if (bp) yr = z + br;
        else yr = z;
      }
    });
  });
}

}  // namespace ga::backend::cpu
#endif  // GA_EMIT_CPU_KERNELS
