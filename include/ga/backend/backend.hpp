// The backend interface: the ONE place that knows CPU from CUDA.
//
// A backend is a set of kernels over raw tensors: no autograd, no broadcasting
// rules, no shape inference. The ops layer checks arguments, allocates outputs,
// arranges inputs into the layouts documented on each kernel, and calls
// `backend::of(tensor)`. To add a device: implement this class (see README,
// "How to add a backend") and return it from `backend::get`.
//
// Common contract: every tensor passed to one call lives on this backend's device;
// `out` tensors are preallocated by the caller, contiguous, and never alias inputs
// unless a kernel says otherwise. Kernels validate data-dependent input themselves
// (index ranges) and throw ga::IndexError naming the op.
#pragma once
#include <algorithm>
#include <atomic>
#include <memory>

#include "../core/core.hpp"

namespace ga::backend {

enum class UnaryOp {
  Neg, Exp, Log, Sqrt, Rsqrt, Abs, Sign, Tanh, Sigmoid, Relu,
  Gelu,            // exact: x * Phi(x)
  GeluGrad,        // d gelu / dx
  QuickGelu,       // x * sigmoid(1.702 x)
  QuickGeluGrad,   // d quick_gelu / dx
  PowScalar,       // x ^ a
  Clamp,           // min(max(x, a), b)
  Step,            // 1 if a < x < b else 0 (clamp's and relu's derivative mask)
  AddScalar,       // x + a
  MulScalar,       // x * a
};

enum class BinaryOp {
  Add, Sub, Mul, Div, Pow, Maximum, Minimum,
  Eq, Ne, Lt, Le, Gt, Ge,  // comparisons write b8
};

enum class ReduceOp { Sum, Mean, Max, Min, ArgMax, ArgMin, LogSumExp };

/// Geometry of one 2-D convolution / pooling window sweep.
struct Window2d {
  int64_t kh = 1, kw = 1, sh = 1, sw = 1, ph = 0, pw = 0;
  int64_t out_h(int64_t h) const { return (h + 2 * ph - kh) / sh + 1; }
  int64_t out_w(int64_t w) const { return (w + 2 * pw - kw) / sw + 1; }
  /// 1x1, unit stride, no padding: the image's channels are its im2col matrix's rows.
  bool pointwise() const { return kh == 1 && kw == 1 && sh == 1 && sw == 1 && ph == 0 && pw == 0; }
};

/// Elements of im2col scratch per chunk of images (a backend's forward on its Columns path,
/// conv2d's backward): bounds the extra memory a large batch needs while keeping each
/// product big enough to use every thread.
inline constexpr int64_t kIm2colScratchElements = int64_t(1) << 23;

/// Images per chunk (at least 1, at most N) whose im2col matrices of per_image elements each
/// fit kIm2colScratchElements.
inline int64_t im2col_chunk(int64_t N, int64_t per_image) {
  return std::max<int64_t>(1, std::min<int64_t>(N, kIm2colScratchElements / std::max<int64_t>(per_image, 1)));
}

/// The activation a matrix product can apply to its results before storing them.
enum class Activation {
  None,
  Relu,       // max(x, 0)
  QuickGelu,  // x * sigmoid(1.702 x)
  Gelu,       // exact: x * Phi(x)
};

/// What a matrix product does to each result before storing it, so that a layer's bias,
/// activation and residual sum cost no extra pass over memory (inference):
///   out[i] = activation(a[i] @ b[i] + bias + residual[i]).
/// An empty epilogue (the default) is the plain product.
struct MatmulEpilogue {
  /// [M] with bias_per_row (a convolution's [O, P] output: one value per row), else [N] (a
  /// linear layer's: one per column); contiguous, out's dtype; shared by the whole batch.
  /// Undefined: no bias.
  Tensor bias;
  bool bias_per_row = false;
  /// out's shape [B, M, N], contiguous, out's dtype, not overlapping out. Undefined: none.
  Tensor residual;
  Activation activation = Activation::None;

  bool empty() const { return !bias.defined() && !residual.defined() && activation == Activation::None; }
};

/// How a mixed product (a bf16 or f16 operand; see Backend::matmul) treats its f32 and f16
/// operands. Each is split into bf16 terms, t0 = bf16(x), t1 = bf16(x - t0), ..., and the
/// partial products of terms i and j with i + j < n are summed in f32, where n is 1, 2 or 3
/// below. bf16 operands are one exact term. The same trade as PyTorch's
/// torch.set_float32_matmul_precision, named alike.
enum class MixedPrecision {
  Medium = 1,   // operands rounded to bf16 (relative error about 2^-9 each); one pass, fastest
  High = 2,     // two terms (about 2^-17); up to three passes
  Highest = 3,  // exact for |values| in [2^-100, 2^127] up to f32 accumulation: f32 = three
                // terms, f16 = two; up to five passes (the default)
};

namespace detail {
inline std::atomic<MixedPrecision>& mixed_precision_setting() {
  static std::atomic<MixedPrecision> p{MixedPrecision::Highest};
  return p;
}
/// The calling thread's override of the process-wide setting (0: none). Kernels read the
/// precision once, in the thread that calls them, so an override covers their workers too.
inline int& mixed_precision_override() {
  thread_local int p = 0;
  return p;
}
}  // namespace detail

/// How an int8 product quantizes its inputs (the activations) on the fly: to 8 bits
/// (0..255), or to 7 bits (0..127), which lets the CPU kernel add two byte products in int16
/// before widening them (about 1.2x the multiply-adds per second on AVX2; twice the
/// quantization step).
enum class Int8Inputs { Bits8, Bits7 };

/// A weight prepared for the int8 product (Backend::int8_linear, int8_conv2d): each output
/// channel n quantized symmetrically, w[n, ...] ~ scales[n] * q[n, ...] with q an integer in
/// [-63, 63] (7 bits: see cpu/gemm_int8.hpp for why), held in the backend's own layout.
/// Made by Backend::int8_weight; immutable; copies share the data.
struct Int8Weight {
  int64_t rows = 0;      // output features or channels (N)
  int64_t channels = 0;  // input features (a linear weight) or input channels (a convolution)
  int64_t kh = 1, kw = 1;
  Tensor packed;  // the quantized values, backend layout (bytes)
  Tensor scales;  // [rows] f32
  Tensor sums;    // [rows] i32: the sum of each row's quantized values
  Int8Inputs inputs = Int8Inputs::Bits8;  // how the products with it quantize their inputs
  bool defined() const { return packed.defined(); }
};

class Backend {
 public:
  virtual ~Backend() = default;
  virtual const char* name() const = 0;

  // ---- memory ----
  /// Uninitialised memory for nbytes on this device.
  virtual std::shared_ptr<Storage> allocate(size_t nbytes) = 0;
  /// dst[i] = cast(src[i]) for every index; same shape, any strides and dtypes. dst may
  /// be non-contiguous but must not overlap itself (no expanded dims).
  virtual void copy(const Tensor& src, const Tensor& dst) = 0;
  /// Every element of dst (any strides, no expanded dims) set to v.
  virtual void fill(const Tensor& dst, double v) = 0;
  /// Host bytes to/from a contiguous tensor of this device.
  virtual void upload(const void* host, const Tensor& dst) = 0;
  virtual void download(const Tensor& src, void* host) = 0;

  // ---- elementwise ----
  /// out = op(x; a, b). x has out's shape (any strides); float dtypes; out same dtype.
  virtual void unary(UnaryOp op, const Tensor& x, const Tensor& out, double a = 0, double b = 0) = 0;
  /// out = a op b. a and b have out's shape (any strides, 0 for broadcast dims) and one
  /// float dtype; out has that dtype, or b8 for comparisons.
  virtual void binary(BinaryOp op, const Tensor& a, const Tensor& b, const Tensor& out) = 0;
  /// out = cond ? a : b. All have out's shape (any strides); cond is b8.
  virtual void where(const Tensor& cond, const Tensor& a, const Tensor& b, const Tensor& out) = 0;

  // ---- reductions ----
  /// x contiguous [rows, n]; out contiguous [rows]: f-dtype of x, or i64 for ArgMax/ArgMin.
  /// Max/Min/ArgMax/ArgMin require n > 0; Sum of n = 0 is 0, Mean and LogSumExp of n = 0 are nan and -inf.
  virtual void reduce_last(ReduceOp op, const Tensor& x, const Tensor& out) = 0;

  // ---- linear algebra ----
  /// out[i] = a[i] @ b[i] for a [B, M, K], b [B, K, N], out [B, M, N]. a and b may have any
  /// strides (batch stride 0 for broadcast); out contiguous. Float dtypes, all the same; or
  /// the mixed product for weights kept in bf16/f16: out f32, a and b each f32, bf16 or f16
  /// (not both f32), computed in bf16 arithmetic with f32 accumulation to the precision
  /// mixed_matmul_precision() names at the time of the call (see MixedPrecision). Then
  /// applies `epilogue` (see MatmulEpilogue) to every result; the sums it adds are f32 (or
  /// f64) additions after the product's own accumulation, in the order bias, residual.
  virtual void matmul(const Tensor& a, const Tensor& b, const Tensor& out,
                      const MatmulEpilogue& epilogue = {}) = 0;

  // ---- neural-network kernels (inputs contiguous unless stated) ----
  /// Row-wise (log-)softmax of x [rows, n] into out [rows, n].
  virtual void softmax_last(const Tensor& x, const Tensor& out, bool log) = 0;
  /// Fused attention, for inference: for each (b0, b1), out[b0, b1, i, :] = sum_j p_ij
  /// v[b0, b1, j, :] with p_i = softmax_j(scale * q[b0, b1, i, :] . k[b0, b1, j, :]) over keys
  /// j < S, or j <= i when causal. q [B0, B1, L, E], k [B0, B1, S, E], v [B0, B1, S, Ev] and
  /// out [B0, B1, L, Ev], all float of one dtype, L, S, E >= 1, each with any strides but
  /// a last-dim stride of 1 (heads read in place from a packed q/k/v projection); out does
  /// not overlap itself or the inputs.
  virtual void attention(const Tensor& q, const Tensor& k, const Tensor& v, double scale, bool causal,
                         const Tensor& out) = 0;
  /// Row-wise layer norm of x [rows, n]; w and b are [n] or undefined; also writes the
  /// per-row mean and 1/sqrt(var + eps) (biased variance) into mean, rstd [rows].
  virtual void layer_norm_last(const Tensor& x, const Tensor& w, const Tensor& b, double eps,
                               const Tensor& out, const Tensor& mean, const Tensor& rstd) = 0;
  /// The convolution forward, as a product: out[i] = epilogue(w @ im2col(x[i])) for x
  /// [B, C, H, W] contiguous, w [O, C*kh*kw] (any strides; column c*kh*kw + ki*kw + kj
  /// weighs input channel c at window offset (ki, kj)), out [B, O, OH*OW] contiguous, zero
  /// padding; dtypes and epilogue as for matmul with a = w broadcast over the batch and b =
  /// the columns (bias per row: one per output channel). How the columns are formed is the
  /// backend's choice (an implicit GEMM reads them from x in place; im2col scratch is the
  /// backend's own, bounded by it).
  virtual void conv2d(const Tensor& x, const Tensor& w, const Window2d& g, const Tensor& out,
                      const MatmulEpilogue& epilogue) = 0;
  /// x [C, H, W] -> cols [C*kh*kw, OH*OW] (zero padding).
  virtual void im2col(const Tensor& x, const Window2d& g, const Tensor& cols) = 0;

  // ---- int8 products (inference; optional: the defaults throw DeviceError) ----
  /// Quantizes w, contiguous f32 [out, in] (a linear weight) or [out, channels, kh, kw] (a
  /// convolution's), per output channel to 7-bit integers (see Int8Weight). ValueError for a
  /// non-finite weight.
  virtual Int8Weight int8_weight(const Tensor& w) {
    (void)w;
    throw DeviceError(::ga::cat("int8_weight: the ", name(), " backend has no int8 products"));
  }
  /// out[0] = epilogue(dequant(x) @ dequant(w)^T) for x [M, in] contiguous f32, out [1, M,
  /// out] contiguous f32, a linear Int8Weight w. Each row of x is quantized on the fly to
  /// unsigned integers over [min(row, 0), max(row, 0)] (scale (max - min) / L with L = 255,
  /// or 127 where w.inputs is Bits7; a zero point that represents 0 exactly); the products
  /// of the integers are summed exactly and scaled back. Error per result: at most half a
  /// step of each factor times the other's magnitude, summed over the row (about 1% of the
  /// result's scale; cosine to the f32 product about 0.9999). A row holding a NaN or
  /// infinity gives NaN results.
  virtual void int8_linear(const Tensor& x, const Int8Weight& w, const Tensor& out, const MatmulEpilogue& epilogue) {
    (void)x, (void)w, (void)out, (void)epilogue;
    throw DeviceError(::ga::cat("int8_linear: the ", name(), " backend has no int8 products"));
  }
  /// The convolution of conv2d (x [B, C, H, W] contiguous f32, out [B, O, OH*OW], zero
  /// padding, epilogue with a bias per row) with an int8 weight made from [O, C, kh, kw]
  /// (g.kh, g.kw must match); each image is quantized as a whole, as int8_linear quantizes
  /// a row.
  virtual void int8_conv2d(const Tensor& x, const Int8Weight& w, const Window2d& g, const Tensor& out,
                           const MatmulEpilogue& epilogue) {
    (void)x, (void)w, (void)g, (void)out, (void)epilogue;
    throw DeviceError(::ga::cat("int8_conv2d: the ", name(), " backend has no int8 products"));
  }
  /// The adjoint of im2col: x [C, H, W] += scatter of cols [C*kh*kw, OH*OW].
  virtual void col2im(const Tensor& cols, const Window2d& g, const Tensor& x) = 0;
  /// Average pooling of x [N, C, H, W] into out [N, C, OH, OW]; padding counts as zeros
  /// in the divisor when count_include_pad.
  virtual void avg_pool2d(const Tensor& x, const Window2d& g, bool count_include_pad,
                          const Tensor& out) = 0;
  /// gx [N, C, H, W] (zeroed by the caller) += adjoint of avg_pool2d applied to gout.
  virtual void avg_pool2d_backward(const Tensor& gout, const Window2d& g, bool count_include_pad,
                                   const Tensor& gx) = 0;
  /// PyTorch's adaptive average pooling of x [N, C, H, W] into out [N, C, OH, OW]:
  /// bin i spans [floor(i*H/OH), ceil((i+1)*H/OH)).
  virtual void adaptive_avg_pool2d(const Tensor& x, const Tensor& out) = 0;
  /// gx [N, C, H, W] (zeroed by the caller) += adjoint of adaptive_avg_pool2d applied to gout.
  virtual void adaptive_avg_pool2d_backward(const Tensor& gout, const Tensor& gx) = 0;

  // ---- indexing (x, out, src contiguous; idx contiguous i32 or i64) ----
  /// out = x.index_select(dim, idx): idx 1-D, out's size at dim = idx.numel().
  virtual void index_select(const Tensor& x, int64_t dim, const Tensor& idx, const Tensor& out) = 0;
  /// out.index_select(dim, idx) += src (repeated indices accumulate).
  virtual void index_add(const Tensor& out, int64_t dim, const Tensor& idx, const Tensor& src) = 0;
  /// out[..i..] = x[..idx[..i..] at dim..]; idx and out have the same shape.
  virtual void gather(const Tensor& x, int64_t dim, const Tensor& idx, const Tensor& out) = 0;
  /// out[..idx[..i..] at dim..] += src[..i..]; idx and src have the same shape.
  virtual void scatter_add(const Tensor& out, int64_t dim, const Tensor& idx, const Tensor& src) = 0;
};

}  // namespace ga::backend

namespace ga {
/// Sets the precision of mixed products (f32 or f16 with bf16 weights; see
/// backend::MixedPrecision) for every thread, from now on.
inline void set_mixed_matmul_precision(backend::MixedPrecision p) { backend::detail::mixed_precision_setting() = p; }
/// The precision mixed products called from this thread use now: the innermost live
/// MixedPrecisionScope's, else the process-wide setting (Highest unless set).
inline backend::MixedPrecision mixed_matmul_precision() {
  const int o = backend::detail::mixed_precision_override();
  return o ? static_cast<backend::MixedPrecision>(o) : backend::detail::mixed_precision_setting().load();
}

/// Sets the precision of mixed products called from this thread while the scope lives (a
/// model that holds bf16 weights runs its forward pass under one); restores the previous
/// one on destruction. Other threads' products are unaffected.
class MixedPrecisionScope {
 public:
  explicit MixedPrecisionScope(backend::MixedPrecision p) : saved_(backend::detail::mixed_precision_override()) {
    backend::detail::mixed_precision_override() = static_cast<int>(p);
  }
  ~MixedPrecisionScope() { backend::detail::mixed_precision_override() = saved_; }
  MixedPrecisionScope(const MixedPrecisionScope&) = delete;
  MixedPrecisionScope& operator=(const MixedPrecisionScope&) = delete;

 private:
  int saved_;
};
}  // namespace ga

namespace ga::backend {

/// The backend for a device. Throws DeviceError when that device is not compiled in.
Backend& get(Device d);
/// The backend of a tensor's device.
inline Backend& of(const Tensor& t) { return get(t.device()); }

}  // namespace ga::backend
