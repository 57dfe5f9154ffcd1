// 2-D convolution (a product with the im2col matrix; the backend's conv2d forms it, the
// backward uses im2col / col2im) and average pooling over NCHW tensors, the image layers of
// CLIP's ModifiedResNet. Each op's gradient rule sits right after its forward.
#pragma once
#include <array>

#include "linalg.hpp"

namespace ga {

namespace ops {
GA_REGISTER_OP(conv2d, "conv")
GA_REGISTER_OP(avg_pool2d, "conv")
GA_REGISTER_OP(adaptive_avg_pool2d, "conv")

/// The im2col matrix [B, C*kh*kw, OH*OW] of images [n0, n0 + B) of contiguous x. A 1x1
/// kernel with unit stride and no padding is x itself, viewed without a copy.
inline Tensor conv_columns(const Tensor& x, const backend::Window2d& g, int64_t n0, int64_t B) {
  const int64_t C = x.size(1), H = x.size(2), W = x.size(3);
  const int64_t P = g.out_h(H) * g.out_w(W), CKK = C * g.kh * g.kw;
  const Tensor xs = x.narrow(0, n0, B);
  if (g.pointwise()) return xs.view({B, C, P});
  Tensor cols = empty({B, CKK, P}, x.dtype(), x.device());
  backend::of(x).im2col(xs.view({B * C, H, W}), g, cols.view({B * CKK, P}));
  return cols;
}

/// Checks stride >= 1, padding >= 0 and that the (padded) input holds one window.
inline void check_window(const char* op, const Tensor& x, int64_t kh, int64_t kw, std::array<int64_t, 2> stride,
                         std::array<int64_t, 2> padding) {
  GA_CHECK(stride[0] >= 1 && stride[1] >= 1, ValueError, op, ": stride must be >= 1, got [", stride[0], ", ",
           stride[1], "]");
  GA_CHECK(padding[0] >= 0 && padding[1] >= 0, ValueError, op, ": padding must be >= 0, got [", padding[0], ", ",
           padding[1], "]");
  GA_CHECK(x.size(2) + 2 * padding[0] >= kh && x.size(3) + 2 * padding[1] >= kw, ShapeError, op, ": input ",
           shape_str(x.shape()), " with padding [", padding[0], ", ", padding[1], "] is smaller than the ", kh,
           "x", kw, " window");
}
}  // namespace ops

/// 2-D cross-correlation (PyTorch's conv2d, groups = 1) of x [N, C, H, W] with
/// w [O, C, kh, kw], plus b [O] when defined, then `then` (see Epilogue): y [N, O, OH, OW]
/// with OH = (H + 2 padding[0] - kh) / stride[0] + 1 (likewise OW). One float dtype, one
/// device; or x f32 with w (and b) bf16 or f16, computed as ops::product_dtype describes,
/// giving f32.
inline Tensor conv2d(const Tensor& x, const Tensor& w, const Tensor& b = Tensor(), std::array<int64_t, 2> stride = {1, 1},
                     std::array<int64_t, 2> padding = {0, 0}, const Epilogue& then = {}) {
  if (ops::needs_unfused({&x, &w, &b, &then.residual}, then))
    return ops::unfused([&] { return conv2d(x, w, b, stride, padding); }, then);
  ops::check_float("conv2d", x);
  const DType yt = ops::product_dtype("conv2d", x, w);
  ops::check_same_device("conv2d", x, w);
  GA_CHECK(x.dim() == 4, ShapeError, "conv2d: input must be 4-d [N, C, H, W], got ", shape_str(x.shape()));
  GA_CHECK(w.dim() == 4, ShapeError, "conv2d: weight must be 4-d [O, C, kh, kw], got ", shape_str(w.shape()));
  GA_CHECK(w.size(1) == x.size(1), ShapeError, "conv2d: input ", shape_str(x.shape()), " has ", x.size(1),
           " channels but weight ", shape_str(w.shape()), " expects ", w.size(1));
  GA_CHECK(w.size(2) >= 1 && w.size(3) >= 1, ShapeError, "conv2d: empty kernel in weight ", shape_str(w.shape()));
  const int64_t N = x.size(0), C = x.size(1), H = x.size(2), W = x.size(3);
  const int64_t O = w.size(0), kh = w.size(2), kw = w.size(3);
  if (b.defined()) {
    if (!ops::is_low_precision(b.dtype()) || b.dtype() != w.dtype()) ops::check_same_dtype("conv2d", x, b);
    ops::check_same_device("conv2d", x, b);
    GA_CHECK(b.dim() == 1 && b.size(0) == O, ShapeError, "conv2d: bias ", shape_str(b.shape()),
             " does not match the weight's ", O, " output channels (weight ", shape_str(w.shape()), ")");
  }
  ops::check_window("conv2d", x, kh, kw, stride, padding);
  const backend::Window2d g{kh, kw, stride[0], stride[1], padding[0], padding[1]};
  const int64_t OH = g.out_h(H), OW = g.out_w(W), P = OH * OW, CKK = C * kh * kw;

  const Tensor xc = x.detach().contiguous();
  const Tensor wm = w.detach().reshape({O, CKK});
  Tensor y = empty({N, O, OH, OW}, yt, x.device());
  backend::MatmulEpilogue e = ops::epilogue_for("conv2d", y, b, /*bias_per_row=*/true, then);
  if (e.residual.defined()) e.residual = e.residual.view({N, O, P});
  // y[n] = w [O, CKK] @ im2col(x[n]) [CKK, P] + b: the backend forms the columns its own way.
  if (y.numel() > 0) backend::of(x).conv2d(xc, wm, g, y.view({N, O, P}), e);

  return autograd::record("conv2d", {x, w, b}, y, [xc, wm, g, ws = w.shape()](const Tensor& gy, const ops::Needs& n) {
    const int64_t N = xc.size(0), C = xc.size(1), H = xc.size(2), W = xc.size(3);
    const int64_t O = wm.size(0), CKK = wm.size(1), P = gy.size(2) * gy.size(3);
    const Tensor g3 = gy.contiguous().view({N, O, P});
    const int64_t chunk = backend::im2col_chunk(N, CKK * P);
    const bool pointwise = g.pointwise();
    Tensor gx, gw, gb;
    if (n[0]) {
      // gx = col2im(w^T @ gy), per chunk of images; a pointwise conv needs no col2im.
      gx = pointwise ? empty(xc.shape(), xc.dtype(), xc.device()) : zeros(xc.shape(), xc.dtype(), xc.device());
      Tensor cols = pointwise ? Tensor() : empty({chunk, CKK, P}, xc.dtype(), xc.device());
      for (int64_t n0 = 0; n0 < N; n0 += chunk) {
        const int64_t B = std::min(chunk, N - n0);
        const Tensor gcols = pointwise ? gx.narrow(0, n0, B).view({B, C, P}) : cols.narrow(0, 0, B);
        backend::of(gy).matmul(wm.t().unsqueeze(0).expand({B, CKK, O}), g3.narrow(0, n0, B), gcols);
        if (!pointwise)
          backend::of(gy).col2im(gcols.view({B * CKK, P}), g, gx.narrow(0, n0, B).view({B * C, H, W}));
      }
    }
    if (n[1]) {
      // gw = sum over images of gy[n] @ cols[n]^T; columns are rebuilt rather than kept
      // from the forward, so inference-sized scratch is all a backward needs.
      Tensor acc = zeros({O, CKK}, xc.dtype(), xc.device());
      Tensor part = empty({chunk, O, CKK}, xc.dtype(), xc.device());
      for (int64_t n0 = 0; n0 < N; n0 += chunk) {
        const int64_t B = std::min(chunk, N - n0);
        const Tensor cols = ops::conv_columns(xc, g, n0, B);
        const Tensor pb = part.narrow(0, 0, B);
        backend::of(gy).matmul(g3.narrow(0, n0, B), cols.transpose(1, 2), pb);
        for (int64_t i = 0; i < B; ++i) backend::of(gy).binary(backend::BinaryOp::Add, acc, pb.select(0, i), acc);
      }
      gw = acc.view(ws);
    }
    if (n[2]) gb = sum(gy, {0, 2, 3});
    return ops::Grads{gx, gw, gb};
  });
}

/// Average pooling of x [N, C, H, W] with a kh x kw window (stride 0 means the kernel
/// size), zero padding of at most half the window; count_include_pad divides every
/// window by kh * kw, otherwise by the number of input elements it covers (PyTorch's rules).
inline Tensor avg_pool2d(const Tensor& x, std::array<int64_t, 2> kernel, std::array<int64_t, 2> stride = {0, 0},
                         std::array<int64_t, 2> padding = {0, 0}, bool count_include_pad = true) {
  ops::check_float("avg_pool2d", x);
  GA_CHECK(x.dim() == 4, ShapeError, "avg_pool2d: input must be 4-d [N, C, H, W], got ", shape_str(x.shape()));
  GA_CHECK(kernel[0] >= 1 && kernel[1] >= 1, ValueError, "avg_pool2d: kernel must be >= 1, got [", kernel[0], ", ",
           kernel[1], "]");
  if (stride[0] == 0 && stride[1] == 0) stride = kernel;
  ops::check_window("avg_pool2d", x, kernel[0], kernel[1], stride, padding);
  GA_CHECK(2 * padding[0] <= kernel[0] && 2 * padding[1] <= kernel[1], ValueError, "avg_pool2d: padding [",
           padding[0], ", ", padding[1], "] is more than half the kernel [", kernel[0], ", ", kernel[1], "]");
  const backend::Window2d g{kernel[0], kernel[1], stride[0], stride[1], padding[0], padding[1]};
  Tensor y = empty({x.size(0), x.size(1), g.out_h(x.size(2)), g.out_w(x.size(3))}, x.dtype(), x.device());
  backend::of(x).avg_pool2d(x.detach().contiguous(), g, count_include_pad, y);
  return autograd::record("avg_pool2d", {x}, y,
                          [g, count_include_pad, xs = x.shape(), dt = x.dtype()](const Tensor& gy, const ops::Needs&) {
                            Tensor gx = zeros(xs, dt, gy.device());
                            backend::of(gy).avg_pool2d_backward(gy.contiguous(), g, count_include_pad, gx);
                            return ops::Grads{gx};
                          });
}

/// PyTorch's adaptive average pooling of x [N, C, H, W] (H, W >= 1) to
/// [N, C, output_size[0], output_size[1]]: output bin i along H averages rows
/// [floor(i*H/OH), ceil((i+1)*H/OH)), and likewise along W.
inline Tensor adaptive_avg_pool2d(const Tensor& x, std::array<int64_t, 2> output_size) {
  ops::check_float("adaptive_avg_pool2d", x);
  GA_CHECK(x.dim() == 4, ShapeError, "adaptive_avg_pool2d: input must be 4-d [N, C, H, W], got ",
           shape_str(x.shape()));
  GA_CHECK(output_size[0] >= 1 && output_size[1] >= 1, ValueError, "adaptive_avg_pool2d: output size must be >= 1, got [",
           output_size[0], ", ", output_size[1], "]");
  GA_CHECK(x.size(2) >= 1 && x.size(3) >= 1, ShapeError, "adaptive_avg_pool2d: input ", shape_str(x.shape()),
           " has an empty spatial dim");
  Tensor y = empty({x.size(0), x.size(1), output_size[0], output_size[1]}, x.dtype(), x.device());
  backend::of(x).adaptive_avg_pool2d(x.detach().contiguous(), y);
  return autograd::record("adaptive_avg_pool2d", {x}, y,
                          [xs = x.shape(), dt = x.dtype()](const Tensor& gy, const ops::Needs&) {
                            Tensor gx = zeros(xs, dt, gy.device());
                            backend::of(gy).adaptive_avg_pool2d_backward(gy.contiguous(), gx);
                            return ops::Grads{gx};
                          });
}

}  // namespace ga
