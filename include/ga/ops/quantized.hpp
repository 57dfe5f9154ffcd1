// The int8 products: linear and conv2d with a weight quantized once to 7-bit integers per
// output channel (backend::Int8Weight) and activations quantized on the fly to 8 bits (or 7:
// backend::Int8Inputs), summed exactly in int32. Inference only: they record nothing for
// backward and refuse inputs that require a gradient. Approximate by design (see
// Backend::int8_linear for the error), so the op driver's exact references do not apply;
// tests/test_int8.cpp checks them against double-precision loops over the quantized values
// and against the error bound.
#pragma once
#include <array>

#include "conv.hpp"
#include "linalg.hpp"

namespace ga {

namespace ops {
inline void check_int8_inputs(const char* op, const Tensor& x, const Tensor& b, const Epilogue& then) {
  GA_CHECK(x.dtype() == DType::f32, DTypeError, op, ": the input must be f32, got ", dtype_name(x.dtype()));
  GA_CHECK(!autograd::needs_record({&x, &b, &then.residual}), AutogradError, op,
           ": int8 products are for inference; an input requires a gradient (use no_grad, or the f32 layer)");
  if (b.defined())
    GA_CHECK(b.dtype() == DType::f32 && b.dim() == 1, DTypeError, op, ": the bias must be f32 and 1-d, got ",
             dtype_name(b.dtype()), " ", shape_str(b.shape()));
}
}  // namespace ops

/// w quantized for linear_int8 / conv2d_int8: w is f32 [out, in] or [out, C, kh, kw], on
/// the device that will run the products; `inputs` says how those products quantize their
/// inputs (Bits7: faster on AVX2, coarser). ValueError when w holds a non-finite value.
inline backend::Int8Weight quantize_int8(const Tensor& w, backend::Int8Inputs inputs = backend::Int8Inputs::Bits8) {
  GA_CHECK(w.dtype() == DType::f32 && (w.dim() == 2 || w.dim() == 4), ShapeError,
           "quantize_int8: the weight must be f32 [out, in] or [out, C, kh, kw], got ", dtype_name(w.dtype()), " ",
           shape_str(w.shape()));
  backend::Int8Weight q = backend::of(w).int8_weight(w.detach().contiguous());
  q.inputs = inputs;
  return q;
}

/// linear(x, w, b, then) with an int8 weight from quantize_int8 of an [out, in] weight: x
/// [..., in] f32, each row quantized to 8 bits or 7 (w.inputs; see Backend::int8_linear). Requires that
/// nothing needs a gradient.
inline Tensor linear_int8(const Tensor& x, const backend::Int8Weight& w, const Tensor& b = Tensor(),
                          const Epilogue& then = {}) {
  ops::check_int8_inputs("linear_int8", x, b, then);
  GA_CHECK(w.defined() && w.kh == 1 && w.kw == 1, ValueError,
           "linear_int8: the weight is not a quantized linear weight (quantize_int8 of an [out, in] tensor)");
  GA_CHECK(x.dim() >= 1 && x.size(-1) == w.channels, ShapeError, "linear_int8: input ", shape_str(x.shape()),
           " does not end in the weight's in-features ", w.channels);
  GA_CHECK(!b.defined() || b.size(0) == w.rows, ShapeError, "linear_int8: bias ", shape_str(b.shape()),
           " does not match out-features ", w.rows);
  Shape os = x.shape();
  os.back() = w.rows;
  const Tensor x2 = x.detach().contiguous().reshape({-1, w.channels});
  Tensor y = empty(os, DType::f32, x.device());
  backend::MatmulEpilogue e = ops::epilogue_for("linear_int8", y, b, /*bias_per_row=*/false, then);
  if (e.residual.defined()) e.residual = e.residual.view({1, x2.size(0), w.rows});
  backend::of(x).int8_linear(x2, w, y.view({1, x2.size(0), w.rows}), e);
  return y;
}

/// conv2d(x, w, b, stride, padding, then) with an int8 weight from quantize_int8 of an [O, C,
/// kh, kw] weight: x [N, C, H, W] f32, each image quantized to 8 bits as a whole. Requires
/// that nothing needs a gradient.
inline Tensor conv2d_int8(const Tensor& x, const backend::Int8Weight& w, const Tensor& b = Tensor(),
                          std::array<int64_t, 2> stride = {1, 1}, std::array<int64_t, 2> padding = {0, 0},
                          const Epilogue& then = {}) {
  ops::check_int8_inputs("conv2d_int8", x, b, then);
  GA_CHECK(w.defined(), ValueError, "conv2d_int8: the weight is not quantized (use quantize_int8)");
  GA_CHECK(x.dim() == 4 && x.size(1) == w.channels, ShapeError, "conv2d_int8: input ", shape_str(x.shape()),
           " does not have the weight's ", w.channels, " channels");
  GA_CHECK(!b.defined() || b.size(0) == w.rows, ShapeError, "conv2d_int8: bias ", shape_str(b.shape()),
           " does not match the weight's ", w.rows, " output channels");
  ops::check_window("conv2d_int8", x, w.kh, w.kw, stride, padding);
  const backend::Window2d g{w.kh, w.kw, stride[0], stride[1], padding[0], padding[1]};
  const int64_t N = x.size(0), OH = g.out_h(x.size(2)), OW = g.out_w(x.size(3));
  Tensor y = empty({N, w.rows, OH, OW}, DType::f32, x.device());
  backend::MatmulEpilogue e = ops::epilogue_for("conv2d_int8", y, b, /*bias_per_row=*/true, then);
  if (e.residual.defined()) e.residual = e.residual.view({N, w.rows, OH * OW});
  if (y.numel() > 0) backend::of(x).int8_conv2d(x.detach().contiguous(), w, g, y.view({N, w.rows, OH * OW}), e);
  return y;
}

}  // namespace ga
