// The mixed product (f32 with bf16/f16 weights: bf16 arithmetic, f32 accumulation) through
// matmul, linear and conv2d, on every CPU kernel this machine can run (AMX, AVX512-BF16,
// the portable reference) and at every precision, against naive double-precision loops
// over the operands' bf16 terms: what remains is only the f32 accumulation error.
#include <doctest/doctest.h>

#include <array>
#include <cmath>
#include <cstdint>
#include <cstring>
#include <limits>
#include <string>
#include <vector>

#include <ga/ga.hpp>

#include "test_util.hpp"

namespace {

using ga::Shape;
using ga::Tensor;
using ga::backend::cpu::Bf16Kernel;

/// Every kernel this machine runs; the others are reported as skipped.
std::vector<Bf16Kernel> runnable_kernels() {
  std::vector<Bf16Kernel> ks;
  for (Bf16Kernel k : {Bf16Kernel::Reference, Bf16Kernel::Avx512Bf16, Bf16Kernel::Amx}) {
    if (ga::backend::cpu::bf16_kernel_supported(k)) ks.push_back(k);
    else MESSAGE((std::string("bf16 kernel ") + ga::backend::cpu::bf16_kernel_name(k) + " not supported here: skipped"));
  }
  return ks;
}

/// Selects a kernel for one scope and restores the automatic choice after.
struct KernelScope {
  explicit KernelScope(Bf16Kernel k) { ga::backend::cpu::set_bf16_kernel(k); }
  ~KernelScope() { ga::backend::cpu::set_bf16_kernel(Bf16Kernel::Auto); }
};

/// The bf16 terms of each element of t (2-d, any dtype and strides), row-major, as the
/// contract defines them: t0 = bf16(x), t1 = bf16(x - t0), t2 = bf16(x - t0 - t1), each
/// rounded to nearest even; an f32 element has `n` terms, an f16 one min(n, 2), a bf16 one 1.
struct Terms {
  int count = 0;
  std::vector<std::array<double, 3>> v;
};
Terms terms_of(const Tensor& t, int n) {
  Terms r;
  r.count = t.dtype() == ga::bf16 ? 1 : t.dtype() == ga::f16 ? std::min(n, 2) : n;
  const std::vector<float> x = t.to(ga::f32).contiguous().to_vector<float>();
  r.v.resize(x.size());
  for (size_t i = 0; i < x.size(); ++i) {
    double rest = x[i];
    for (int p = 0; p < 3; ++p) {
      const float term = p < r.count ? ga::bfloat16::to_float(ga::bfloat16::from_float(float(rest))) : 0.0f;
      r.v[i][size_t(p)] = term;
      rest -= term;
    }
  }
  return r;
}

/// The f64 reference of a mixed product a [M, K] @ b [K, N] (2-d, any dtypes and strides) at
/// the current precision: the sum, over term pairs i + j < n (n from the precision), of the
/// products of a's and b's terms, and the sum of their magnitudes, row-major. Tolerance of the
/// f32 result: the accumulation error, (4 + 2 sqrt(K * pairs)) * 2^-24 * magnitude; the next
/// term (or an unrounded operand) is off by far more (2^-9, 2^-17 relative per product).
struct ReferenceProduct {
  std::vector<double> sum, magnitude;
  double tolerance_factor = 0;  // times magnitude
};
ReferenceProduct reference_product(const Tensor& a, const Tensor& b) {
  const int64_t M = a.size(0), K = a.size(1), N = b.size(1);
  const int n = static_cast<int>(ga::mixed_matmul_precision());
  const Terms at = terms_of(a, n), bt = terms_of(b, n);
  int pairs = 0;
  for (int i = 0; i < at.count; ++i)
    for (int j = 0; j < bt.count; ++j) pairs += i + j < n;
  ReferenceProduct r;
  r.sum.assign(size_t(M * N), 0.0);
  r.magnitude.assign(size_t(M * N), 0.0);
  r.tolerance_factor = (4 + 2 * std::sqrt(double(K * pairs))) * std::ldexp(1.0, -24);
  for (int64_t i = 0; i < M; ++i)
    for (int64_t j = 0; j < N; ++j) {
      double s = 0, sa = 0;
      for (int64_t k = 0; k < K; ++k) {
        const auto& x = at.v[size_t(i * K + k)];
        const auto& y = bt.v[size_t(k * N + j)];
        for (int p = 0; p < at.count; ++p)
          for (int q = 0; q < bt.count && p + q < n; ++q) {
            const double prod = x[size_t(p)] * y[size_t(q)];
            s += prod;
            sa += std::fabs(prod);
          }
      }
      r.sum[size_t(i * N + j)] = s;
      r.magnitude[size_t(i * N + j)] = sa;
    }
  return r;
}

/// Checks c [M, N] (f32) against reference_product(a, b) within its tolerance.
void check_product(const Tensor& a, const Tensor& b, const Tensor& c, const std::string& what) {
  REQUIRE(c.dtype() == ga::f32);
  const int64_t M = a.size(0), N = b.size(1);
  REQUIRE(c.shape() == Shape{M, N});
  const ReferenceProduct ref = reference_product(a, b);
  const std::vector<float> cv = c.contiguous().to_vector<float>();
  int64_t bad = 0;
  double worst = 0;
  for (size_t e = 0; e < cv.size(); ++e) {
    const double err = std::fabs(double(cv[e]) - ref.sum[e]), tol = ref.tolerance_factor * ref.magnitude[e] + 1e-30;
    worst = std::max(worst, err / tol);
    if (!(err <= tol)) ++bad;
  }
  INFO(what, " (precision ", int(ga::mixed_matmul_precision()), "): ", bad, " of ", M * N,
       " elements outside tolerance (worst error / tolerance ", worst, ")");
  CHECK(bad == 0);
}

/// Runs body once per precision, restoring the default after.
template <class F>
void for_each_precision(const F& body) {
  for (auto p : {ga::backend::MixedPrecision::Medium, ga::backend::MixedPrecision::High,
                 ga::backend::MixedPrecision::Highest}) {
    ga::set_mixed_matmul_precision(p);
    body();
  }
  ga::set_mixed_matmul_precision(ga::backend::MixedPrecision::Highest);
}

std::string dims(int64_t M, int64_t K, int64_t N) {
  return std::to_string(M) + "x" + std::to_string(K) + "x" + std::to_string(N);
}

using ga::backend::Activation;
using ga::backend::MatmulEpilogue;

/// The activation in f64, as backend::Activation defines it.
double activate(Activation act, double x) {
  switch (act) {
    case Activation::Relu: return x > 0 ? x : 0;
    case Activation::QuickGelu: return x / (1 + std::exp(-1.702 * x));
    case Activation::Gelu: return 0.5 * x * (1 + std::erf(x / std::sqrt(2.0)));
    default: return x;
  }
}

std::string activation_name(Activation act) {
  switch (act) {
    case Activation::Relu: return "relu";
    case Activation::QuickGelu: return "quick_gelu";
    case Activation::Gelu: return "gelu";
    default: return "none";
  }
}

/// e applied to the plain product `plain` [B, M, N] unfused, with apply_epilogue's arithmetic
/// (which a fused epilogue must give bit for bit): f32 sums (p + bias) + residual, then the
/// activation by the unary kernel over one row at a time (whose bits do not depend on where
/// a run starts: the tensor tests check that).
Tensor unfused_epilogue(const Tensor& plain, const MatmulEpilogue& e) {
  const int64_t B = plain.size(0), M = plain.size(1), N = plain.size(2);
  const Tensor y = plain.clone();
  float* yp = y.data_ptr<float>();
  const std::vector<float> bias = e.bias.defined() ? e.bias.to_vector<float>() : std::vector<float>();
  const std::vector<float> res = e.residual.defined() ? e.residual.to_vector<float>() : std::vector<float>();
  for (int64_t i = 0; i < B * M * N; ++i) {
    const int64_t r = (i / N) % M, j = i % N;
    if (!bias.empty()) yp[i] += bias[size_t(e.bias_per_row ? r : j)];
    if (!res.empty()) yp[i] += res[size_t(i)];
  }
  if (e.activation != Activation::None) {
    const ga::backend::UnaryOp op = e.activation == Activation::Relu        ? ga::backend::UnaryOp::Relu
                                    : e.activation == Activation::QuickGelu ? ga::backend::UnaryOp::QuickGelu
                                                                            : ga::backend::UnaryOp::Gelu;
    const Tensor rows = y.reshape({B * M, N});
    for (int64_t r = 0; r < B * M; ++r) ga::backend::of(y).unary(op, rows.select(0, r), rows.select(0, r));
  }
  return y;
}

/// How many elements of a and b (f32, same shape) differ in their bits.
int64_t bits_differing(const Tensor& a, const Tensor& b) {
  const std::vector<float> av = a.to_vector<float>(), bv = b.to_vector<float>();
  int64_t n = 0;
  for (size_t i = 0; i < av.size(); ++i) n += std::memcmp(&av[i], &bv[i], 4) != 0;
  return n;
}

}  // namespace

TEST_CASE("matmul_lowp: linear with bf16 and f16 weights at odd sizes, every kernel") {
  ga::Generator g(11);
  const std::vector<std::array<int64_t, 3>> sizes = {{1, 1, 1},   {7, 63, 65},   {65, 33, 17}, {1000, 65, 7},
                                                     {7, 1000, 63}, {63, 7, 1000}, {1, 65, 1000}, {50, 768, 40}};
  for (Bf16Kernel k : runnable_kernels()) {
    KernelScope scope(k);
    const std::string kn = ga::backend::cpu::bf16_kernel_name(k);
    for (const auto& s : sizes) {
      const int64_t M = s[0], K = s[1], N = s[2];
      const Tensor x = ga::randn({M, K}, g), w32 = ga::randn({N, K}, g);
      for (ga::DType wt : {ga::bf16, ga::f16}) {
        const Tensor w = w32.to(wt);
        for_each_precision([&] {
          check_product(x, w.t(), ga::linear(x, w), kn + " linear " + ga::dtype_name(wt) + " " + dims(M, K, N));
        });
      }
    }
  }
}

TEST_CASE("matmul_lowp: operand layouts (transposed, strided, weight on the left) and batches") {
  ga::Generator g(12);
  for (Bf16Kernel k : runnable_kernels()) {
    KernelScope scope(k);
    const std::string kn = ga::backend::cpu::bf16_kernel_name(k);
    for_each_precision([&] {
      for (const auto& s : std::vector<std::array<int64_t, 3>>{{7, 63, 65}, {65, 100, 33}, {1, 40, 1}}) {
        const int64_t M = s[0], K = s[1], N = s[2];
        const std::string d = dims(M, K, N);
        // f32 A transposed (column-major view) @ bf16 B row-major.
        const Tensor at = ga::randn({K, M}, g).t(), b = ga::randn({K, N}, g).to(ga::bf16);
        check_product(at, b, ga::matmul(at, b), kn + " A^T @ B " + d);
        // f32 A with both strides > 1 (every other column) @ bf16 B with both strides > 1.
        const Tensor as = ga::randn({M, 2 * K}, g).narrow(1, 0, K);
        const Tensor a_sparse = as.as_strided({M, K}, {2 * K, 2}, as.offset());
        const Tensor b_sparse =
            ga::randn({K, 2 * N}, g).to(ga::bf16).as_strided({K, N}, {2 * N, 2}, 0);
        check_product(a_sparse, b_sparse, ga::matmul(a_sparse, b_sparse), kn + " strided @ strided " + d);
        // The weight on the left (conv2d's form): bf16 A row-major @ f32 B, row-major and transposed.
        const Tensor wa = ga::randn({M, K}, g).to(ga::bf16), xb = ga::randn({K, N}, g);
        check_product(wa, xb, ga::matmul(wa, xb), kn + " bf16 @ f32 " + d);
        const Tensor xbt = ga::randn({N, K}, g).t();
        check_product(wa, xbt, ga::matmul(wa, xbt), kn + " bf16 @ f32^T " + d);
        // f16 weight transposed on the left.
        const Tensor wh = ga::randn({K, M}, g).to(ga::f16).t();
        check_product(wh, xb, ga::matmul(wh, xb), kn + " f16^T @ f32 " + d);
      }
    });
    // Batched, with the bf16 weight broadcast over the batch (packed once) and not.
    const int64_t B = 3, M = 20, K = 70, N = 37;
    const Tensor w = ga::randn({M, K}, g).to(ga::bf16), x = ga::randn({B, K, N}, g);
    const Tensor y = ga::matmul(w, x);
    REQUIRE(y.shape() == Shape{B, M, N});
    for (int64_t i = 0; i < B; ++i)
      check_product(w, x.select(0, i), y.select(0, i), kn + " broadcast weight, item " + std::to_string(i));
    const Tensor ws = ga::randn({B, M, K}, g).to(ga::bf16);
    const Tensor ys = ga::matmul(ws, x);
    for (int64_t i = 0; i < B; ++i)
      check_product(ws.select(0, i), x.select(0, i), ys.select(0, i), kn + " batched weights, item " + std::to_string(i));
    // 1-d operands follow torch.matmul's rules.
    const Tensor v = ga::randn({K}, g);
    const Tensor wv = ga::matmul(w, v);
    REQUIRE(wv.shape() == Shape{M});
    check_product(w, v.unsqueeze(1), wv.unsqueeze(1), kn + " matrix @ vector");
  }
}

TEST_CASE("matmul_lowp: linear and conv2d with bf16 bias, and conv2d at odd shapes") {
  ga::Generator g(13);
  for (Bf16Kernel k : runnable_kernels()) {
    KernelScope scope(k);
    const std::string kn = ga::backend::cpu::bf16_kernel_name(k);
    // linear with a bf16 bias: y - bias is the product; the bias is added exactly in f32.
    const Tensor x = ga::randn({2, 5, 33}, g), w = ga::randn({19, 33}, g).to(ga::bf16);
    const Tensor b = ga::randn({19}, g).to(ga::bf16);
    const Tensor y = ga::linear(x, w, b);
    REQUIRE(y.shape() == Shape{2, 5, 19});
    REQUIRE(y.dtype() == ga::f32);
    const Tensor y_nb = ga::sub(y, b.to(ga::f32));
    check_product(x.reshape({10, 33}), w.t(), y_nb.reshape({10, 19}), kn + " linear with bf16 bias");
    // conv2d: 3x3, stride 2, padding 1, bf16 or f16 weight and bias, against direct
    // convolution over the term pairs. The small geometry takes im2col and the mixed product;
    // the larger one, on a CPU with a packed f32 kernel and the reference mixed kernel, the
    // implicit GEMM wherever the sum is one product (conv2d_path).
    struct Geometry {
      int64_t N, C, H, W, O;
    };
    for (const Geometry& geo : {Geometry{2, 5, 9, 7, 17}, Geometry{3, 6, 17, 15, 20}}) {
      for (ga::DType wdt : {ga::bf16, ga::f16}) {
        const int64_t N = geo.N, C = geo.C, H = geo.H, W = geo.W, O = geo.O, kh = 3, kw = 3;
        const Tensor xi = ga::randn({N, C, H, W}, g), wc = ga::randn({O, C, kh, kw}, g).to(wdt);
        const Tensor bc = ga::randn({O}, g).to(wdt);
        const int64_t OH = (H + 2 - kh) / 2 + 1, OW = (W + 2 - kw) / 2 + 1;
        REQUIRE(ga::conv2d(xi, wc, bc, {2, 2}, {1, 1}).shape() == Shape{N, O, OH, OW});
        for_each_precision([&] {
          const Tensor yc = ga::conv2d(xi, wc, bc, {2, 2}, {1, 1});
          const int n = static_cast<int>(ga::mixed_matmul_precision());
          const Terms xt = terms_of(xi.reshape({N * C, H * W}), n), wt = terms_of(wc.reshape({O, C * kh * kw}), n);
          int pairs = 0;
          for (int p = 0; p < xt.count; ++p)
            for (int q = 0; q < wt.count; ++q) pairs += p + q < n;
          const std::vector<float> bv = bc.to(ga::f32).to_vector<float>(), yv = yc.to_vector<float>();
          int64_t bad = 0;
          for (int64_t im = 0; im < N; ++im)
            for (int64_t o = 0; o < O; ++o)
              for (int64_t oh = 0; oh < OH; ++oh)
                for (int64_t ow = 0; ow < OW; ++ow) {
                  double s = bv[size_t(o)], sa = std::fabs(s);
                  for (int64_t c = 0; c < C; ++c)
                    for (int64_t i = 0; i < kh; ++i)
                      for (int64_t j = 0; j < kw; ++j) {
                        const int64_t ih = oh * 2 - 1 + i, iw = ow * 2 - 1 + j;
                        if (ih < 0 || ih >= H || iw < 0 || iw >= W) continue;
                        const auto& xe = xt.v[size_t((im * C + c) * H * W + ih * W + iw)];
                        const auto& we = wt.v[size_t(o * C * kh * kw + (c * kh + i) * kw + j)];
                        for (int p = 0; p < xt.count; ++p)
                          for (int q = 0; q < wt.count && p + q < n; ++q) {
                            s += xe[size_t(p)] * we[size_t(q)];
                            sa += std::fabs(xe[size_t(p)] * we[size_t(q)]);
                          }
                      }
                  const double got = yv[size_t(((im * O + o) * OH + oh) * OW + ow)];
                  const double tol = (4 + 2 * std::sqrt(double(C * kh * kw * pairs))) * std::ldexp(1.0, -24);
                  if (!(std::fabs(got - s) <= tol * sa + 1e-30)) ++bad;
                }
          const auto path = ga::backend::cpu::conv2d_path(xi, wc.reshape({O, -1}), ga::backend::Window2d{3, 3, 2, 2, 1, 1});
          // The implicit GEMM must be what the larger geometry exercises where it applies.
          const bool packed = ga::backend::cpu::f32_kernel_supported(ga::backend::cpu::F32Kernel::Avx2) ||
                              ga::backend::cpu::f32_kernel_supported(ga::backend::cpu::F32Kernel::Avx512);
          if (packed && k == Bf16Kernel::Reference && geo.N == 3 && (wdt == ga::bf16 || n == 1))
            CHECK(path == ga::backend::cpu::ConvPath::Implicit);
          if (k != Bf16Kernel::Reference || (wdt == ga::f16 && n > 1))
            CHECK(path != ga::backend::cpu::ConvPath::Implicit);
          INFO(kn, " conv2d ", ga::shape_str(xi.shape()), " weight ", std::string(ga::dtype_name(wdt)), ", precision ", n, ", ",
               std::string(ga::backend::cpu::conv_path_name(path)), ": ", bad, " elements outside tolerance");
          CHECK(bad == 0);
        });
      }
    }
  }
}

TEST_CASE("matmul_lowp: fused epilogue (bias, residual, activation) at edge sizes, every kernel") {
  // out[i] = activation(a[i] @ b[i] + bias + residual[i]) through Backend::matmul, against
  // (1) the f64 reference of the product, then the epilogue in f64, within the product's
  // tolerance plus the epilogue's f32 roundings; (2) the kernel's own plain product with the
  // epilogue applied unfused, bit for bit. Shapes: M and N off the tiles (16 rows and
  // columns; blocks of 32 x 32 for AMX, 8 x 48 for AVX512-BF16), K over several 32-deep k
  // tiles, N a multiple of 16 (QuickGelu and Gelu fused too), more columns than one B panel
  // (K = 300 at Highest), one column block (the threads split rows), batches.
  ga::Generator g(16);
  const std::vector<std::array<int64_t, 4>> sizes = {{1, 1, 1, 1},      {3, 37, 70, 45},   {2, 65, 100, 33},
                                                     {2, 40, 64, 96},   {1, 33, 300, 700}, {1, 17, 300, 704},
                                                     {2, 200, 50, 16}};
  const double u = std::ldexp(1.0, -24);
  for (const auto& s : sizes) {
    const int64_t B = s[0], M = s[1], K = s[2], N = s[3];
    const Tensor w = ga::randn({M, K}, g).to(ga::bf16), x = ga::randn({B, K, N}, g);  // conv: weight on the left
    const Tensor xl = ga::randn({B, M, K}, g), wl = ga::randn({N, K}, g).to(ga::bf16);  // linear: on the right
    struct Form {
      std::string name;
      Tensor a, b;  // [B, M, K], [B, K, N]; the weight broadcast (batch stride 0)
    };
    const std::vector<Form> forms = {{"bf16 W @ f32 X", w.as_strided({B, M, K}, {0, K, 1}, w.offset()), x},
                                     {"f32 X @ bf16 W^T", xl, wl.as_strided({B, K, N}, {0, 1, K}, wl.offset())}};
    const Tensor bias_row = ga::randn({M}, g), bias_col = ga::randn({N}, g), residual = ga::randn({B, M, N}, g);
    const std::vector<float> brv = bias_row.to_vector<float>(), bcv = bias_col.to_vector<float>(),
                             rv = residual.to_vector<float>();
    for (const Form& f : forms) {
      for (auto prec : {ga::backend::MixedPrecision::Medium, ga::backend::MixedPrecision::Highest}) {
        ga::set_mixed_matmul_precision(prec);
        std::vector<ReferenceProduct> ref;
        for (int64_t i = 0; i < B; ++i) ref.push_back(reference_product(f.a.select(0, i), f.b.select(0, i)));
        for (Bf16Kernel k : runnable_kernels()) {
          KernelScope scope(k);
          const Tensor plain = ga::empty({B, M, N});
          ga::backend::of(plain).matmul(f.a, f.b, plain);
          for (int bias_mode = 0; bias_mode < 3; ++bias_mode)  // none, per row, per column
            for (bool with_residual : {false, true})
              for (Activation act : {Activation::None, Activation::Relu, Activation::QuickGelu, Activation::Gelu}) {
                MatmulEpilogue e;
                if (bias_mode > 0) e.bias = bias_mode == 1 ? bias_row : bias_col;
                e.bias_per_row = bias_mode == 1;
                if (with_residual) e.residual = residual;
                e.activation = act;
                const Tensor out = ga::empty({B, M, N});
                ga::backend::of(out).matmul(f.a, f.b, out, e);
                const std::vector<float> ov = out.to_vector<float>();
                int64_t bad = 0;
                double worst = 0;
                for (int64_t i = 0; i < B * M * N; ++i) {
                  const ReferenceProduct& rp = ref[size_t(i / (M * N))];
                  const size_t at = size_t(i % (M * N));
                  const int64_t r = (i / N) % M, j = i % N;
                  const double p = rp.sum[at];
                  const double b = bias_mode == 0 ? 0.0 : bias_mode == 1 ? brv[size_t(r)] : bcv[size_t(j)];
                  const double res = with_residual ? rv[size_t(i)] : 0.0;
                  const double pre = p + b + res, want = activate(act, pre);
                  // The product's tolerance, two f32 additions, then the activation: its slope
                  // is at most 1.2, its own f32 error a few units of |f(x)| + |x| (erf near -1
                  // cancels).
                  const double tol_pre = rp.tolerance_factor * rp.magnitude[at] +
                                         2 * u * (std::fabs(p) + std::fabs(b) + std::fabs(res));
                  const double tol = 1.2 * tol_pre + 8 * u * (std::fabs(want) + std::fabs(pre)) + 1e-30;
                  const double err = std::fabs(double(ov[size_t(i)]) - want);
                  worst = std::max(worst, err / tol);
                  if (!(err <= tol)) ++bad;
                }
                const int64_t differing = bits_differing(out, unfused_epilogue(plain, e));
                const std::string what = std::string(ga::backend::cpu::bf16_kernel_name(k)) + " " + f.name + " " +
                                         std::to_string(B) + "x" + dims(M, K, N) + " precision " +
                                         std::to_string(int(prec)) + ", bias " +
                                         (bias_mode == 0 ? "none" : bias_mode == 1 ? "per row" : "per column") +
                                         (with_residual ? ", residual, " : ", ") + activation_name(act);
                INFO(what, ": ", bad, " of ", B * M * N,
                     " outside tolerance (worst error / tolerance ", worst, "), ", differing,
                     " differing in bits from the unfused epilogue");
                CHECK(bad == 0);
                CHECK(differing == 0);
              }
        }
      }
    }
  }
  ga::set_mixed_matmul_precision(ga::backend::MixedPrecision::Highest);
}

TEST_CASE("matmul_lowp: a fused epilogue passes non-finite values on as the unfused one does") {
  ga::Generator g(17);
  const int64_t M = 20, K = 40, N = 37;
  const Tensor w = ga::randn({M, K}, g).to(ga::bf16), x = ga::randn({1, K, N}, g);
  const Tensor a = w.as_strided({1, M, K}, {0, K, 1}, w.offset());
  std::vector<float> rv = ga::randn({1, M, N}, g).to_vector<float>();
  rv[3] = std::nanf("");
  rv[N + 17] = std::numeric_limits<float>::infinity();
  rv[5 * N + 36] = -std::numeric_limits<float>::infinity();
  rv[19 * N + 1] = std::nanf("");
  const Tensor residual = ga::tensor(rv, {1, M, N});
  for (Bf16Kernel k : runnable_kernels()) {
    KernelScope scope(k);
    const Tensor plain = ga::empty({1, M, N});
    ga::backend::of(plain).matmul(a, x, plain);
    for (Activation act : {Activation::None, Activation::Relu, Activation::QuickGelu, Activation::Gelu}) {
      MatmulEpilogue e;
      e.bias = ga::randn({M}, g);
      e.bias_per_row = true;
      e.residual = residual;
      e.activation = act;
      const Tensor out = ga::empty({1, M, N});
      ga::backend::of(out).matmul(a, x, out, e);
      INFO(std::string(ga::backend::cpu::bf16_kernel_name(k)), " ", activation_name(act));
      CHECK(bits_differing(out, unfused_epilogue(plain, e)) == 0);
      const std::vector<float> ov = out.to_vector<float>();
      CHECK(std::isnan(ov[3]));
      CHECK(std::isnan(ov[19 * N + 1]));
      CHECK(ov[N + 17] == std::numeric_limits<float>::infinity());
      if (act == Activation::None) CHECK(ov[5 * N + 36] == -std::numeric_limits<float>::infinity());
      if (act == Activation::Relu) CHECK(ov[5 * N + 36] == 0.0f);
    }
  }
}

TEST_CASE("matmul_lowp: gradients reach the f32 operand through reduced-precision products") {
  ga::Generator g(14);
  for (Bf16Kernel k : runnable_kernels()) {
    KernelScope scope(k);
    const std::string kn = ga::backend::cpu::bf16_kernel_name(k);
    // L = sum(linear(x, w) * r): dL/dx = r @ w, computed as a reduced-precision product.
    const int64_t M = 9, K = 70, N = 33;
    Tensor x = ga::randn({M, K}, g);
    x.requires_grad_();
    const Tensor w = ga::randn({N, K}, g).to(ga::bf16), r = ga::randn({M, N}, g);
    ga::sum(ga::mul(ga::linear(x, w), r)).backward();
    REQUIRE(x.grad().defined());
    check_product(r, w, x.grad(), kn + " linear grad x");
    // The same through conv2d: 1x1 convolution is a product per pixel.
    Tensor xc = ga::randn({1, K, 3, 3}, g);
    xc.requires_grad_();
    const Tensor wc = w.reshape({N, K, 1, 1}), rc = ga::randn({1, N, 3, 3}, g);
    ga::sum(ga::mul(ga::conv2d(xc, wc), rc)).backward();
    // dL/dx [K, 9] = w^T [K, N] @ r [N, 9].
    check_product(w.t(), rc.reshape({N, 9}), xc.grad().reshape({K, 9}), kn + " conv2d grad x");
  }
}

TEST_CASE("matmul_lowp: non-finite values propagate") {
  for (Bf16Kernel k : runnable_kernels()) {
    KernelScope scope(k);
    Tensor x = ga::ones({3, 40});
    const Tensor w = ga::ones({20, 40}).to(ga::bf16);
    const float inf = std::numeric_limits<float>::infinity();
    std::vector<float> xv = x.to_vector<float>();
    xv[1 * 40 + 5] = inf;
    xv[2 * 40 + 7] = std::nanf("");
    for_each_precision([&] {
      const std::vector<float> y = ga::linear(ga::tensor(xv, {3, 40}), w).to_vector<float>();
      const std::string kn = ga::backend::cpu::bf16_kernel_name(k);
      INFO(kn, ", precision ", int(ga::mixed_matmul_precision()));
      for (int64_t j = 0; j < 20; ++j) {
        CHECK(y[size_t(j)] == 40.0f);
        CHECK(std::isinf(y[size_t(20 + j)]));
        CHECK(std::isnan(y[size_t(40 + j)]));
      }
    });
  }
}

TEST_CASE("matmul_lowp: at Highest precision the product is the f32 product of the values given") {
  // The contract in plain terms, against an f64 product of the unsplit values: f32 and f16
  // operands lose nothing, so the error is f32 accumulation only. (At Medium it would be
  // about 2^-9 of each product.)
  ga::Generator g(15);
  REQUIRE(ga::mixed_matmul_precision() == ga::backend::MixedPrecision::Highest);  // the default
  const int64_t M = 37, K = 300, N = 45;
  const Tensor x = ga::randn({M, K}, g);
  for (ga::DType wt : {ga::bf16, ga::f16}) {
    const Tensor w = ga::randn({N, K}, g).to(wt);
    const std::vector<double> xv = x.to_vector<double>(), wv = w.to(ga::f64).to_vector<double>();
    for (Bf16Kernel k : runnable_kernels()) {
      KernelScope scope(k);
      const std::vector<float> y = ga::linear(x, w).to_vector<float>();
      int64_t bad = 0;
      for (int64_t i = 0; i < M; ++i)
        for (int64_t j = 0; j < N; ++j) {
          double s = 0, sa = 0;
          for (int64_t q = 0; q < K; ++q) {
            s += xv[size_t(i * K + q)] * wv[size_t(j * K + q)];
            sa += std::fabs(xv[size_t(i * K + q)] * wv[size_t(j * K + q)]);
          }
          if (!(std::fabs(y[size_t(i * N + j)] - s) <= 2 * std::sqrt(5.0 * K) * std::ldexp(1.0, -24) * sa)) ++bad;
        }
      const std::string what = std::string(ga::backend::cpu::bf16_kernel_name(k)) + " " + ga::dtype_name(wt);
      INFO(what, ": ", bad, " elements off");
      CHECK(bad == 0);
    }
  }
}

TEST_CASE("matmul_lowp: dtype errors name the op and the dtypes") {
  using ga::test::expect_error;
  const Tensor xf = ga::ones({4, 8}), xd = ga::ones({4, 8}, ga::f64), wb = ga::ones({3, 8}).to(ga::bf16);
  const Tensor wh = ga::ones({3, 8}).to(ga::f16);
  expect_error<ga::DTypeError>("f64 @ bf16", [&] { ga::matmul(xd, wb.t()); }, {"matmul", "bf16", "f64"});
  expect_error<ga::DTypeError>("bf16 @ bf16", [&] { ga::matmul(wb, wb.t()); }, {"matmul", "bf16"});
  expect_error<ga::DTypeError>("bf16 @ f16", [&] { ga::matmul(wb, wh.t()); }, {"matmul", "f16"});
  expect_error<ga::DTypeError>("linear f64 x, bf16 w", [&] { ga::linear(xd, wb); }, {"linear", "f64"});
  expect_error<ga::DTypeError>("linear bf16 x", [&] { ga::linear(wb, wb); }, {"linear", "bf16"});
  expect_error<ga::DTypeError>("linear bf16 bias with f32 weight",
                               [&] { ga::linear(xf, ga::ones({3, 8}), ga::ones({3}).to(ga::bf16)); }, {"linear"});
  expect_error<ga::DTypeError>("linear f16 bias with bf16 weight",
                               [&] { ga::linear(xf, wb, ga::ones({3}).to(ga::f16)); }, {"linear"});
  expect_error<ga::ShapeError>("linear bf16 shape mismatch", [&] { ga::linear(ga::ones({4, 7}), wb); },
                               {"linear", "[3, 8]"});
  const Tensor img = ga::ones({1, 2, 5, 5}), cw = ga::ones({3, 2, 3, 3}).to(ga::bf16);
  expect_error<ga::DTypeError>("conv2d f64 with bf16 weight", [&] { ga::conv2d(img.to(ga::f64), cw); },
                               {"conv2d", "f64"});
  expect_error<ga::ShapeError>("conv2d bf16 channel mismatch", [&] { ga::conv2d(ga::ones({1, 4, 5, 5}), cw); },
                               {"conv2d", "channels"});
  // The backend refuses output dtypes it has no kernel for.
  const Tensor out64 = ga::empty({1, 4, 3}, ga::f64);
  expect_error<ga::DTypeError>("backend bf16 -> f64", [&] {
    ga::backend::of(xf).matmul(xf.unsqueeze(0), wb.t().unsqueeze(0), out64);
  }, {"matmul", "f64"});
}

TEST_CASE("matmul_lowp: kernel selection") {
  using ga::backend::cpu::bf16_kernel;
  using ga::backend::cpu::set_bf16_kernel;
  const Bf16Kernel before = bf16_kernel();
  CHECK(before != Bf16Kernel::Auto);
  set_bf16_kernel(Bf16Kernel::Reference);
  CHECK(bf16_kernel() == Bf16Kernel::Reference);
  set_bf16_kernel(Bf16Kernel::Auto);
  CHECK(bf16_kernel() != Bf16Kernel::Auto);
  for (Bf16Kernel k : {Bf16Kernel::Amx, Bf16Kernel::Avx512Bf16})
    if (!ga::backend::cpu::bf16_kernel_supported(k))
      ga::test::expect_error<ga::ValueError>("unsupported kernel", [&] { set_bf16_kernel(k); },
                                             {ga::backend::cpu::bf16_kernel_name(k), "not supported"});
  set_bf16_kernel(before);
}
