// The f32 matrix product on each CPU path this machine runs (our packed AVX-512 kernel, its
// dot-product form, our packed AVX2 kernel, Eigen's GEMM) against a naive double-precision
// loop: edge shapes around the packed kernels' register blocks (12 x 32 and 6 x 16) and their
// k blocks (384 and 256 deep), and the dot form's
// 4 x 6 tile and 1024-deep k chunks, transposed, strided and broadcast operands, the
// batched paths (one product per thread, a broadcast weight packed once), 1 and 2 threads.
// The bound is the f32 accumulation error: about sqrt(K) ulps of sum |a| |b|.
#include <doctest/doctest.h>

#include <array>
#include <cmath>
#include <cstring>
#include <initializer_list>
#include <limits>
#include <string>
#include <vector>

#include <ga/ga.hpp>

namespace {

using ga::Tensor;
using ga::backend::cpu::F32Kernel;

std::vector<F32Kernel> runnable_paths() {
  std::vector<F32Kernel> ks{F32Kernel::Eigen};
  if (ga::backend::cpu::f32_kernel_supported(F32Kernel::Avx512)) {
    ks.push_back(F32Kernel::Avx512);
    ks.push_back(F32Kernel::Avx512Dot);  // products whose operands both run along k; packed otherwise
  } else MESSAGE("f32 AVX-512 kernels not supported here: not tested");
  if (ga::backend::cpu::f32_kernel_supported(F32Kernel::Avx2)) ks.push_back(F32Kernel::Avx2);
  else MESSAGE("f32 AVX2 kernel not supported here: not tested");
  return ks;
}

/// Selects a path and a thread count for one scope; restores Auto and the old count after.
struct PathScope {
  int old_threads;
  PathScope(F32Kernel k, int threads) : old_threads(ga::get_num_threads()) {
    ga::backend::cpu::set_f32_gemm_kernel(k);
    ga::set_num_threads(threads);
  }
  ~PathScope() {
    ga::backend::cpu::set_f32_gemm_kernel(F32Kernel::Auto);
    ga::set_num_threads(old_threads);
  }
};

/// Element (i, j) of the 2-d view t, exactly as stored.
struct View2 {
  std::vector<float> v;  // row-major copy
  int64_t rows, cols;
  explicit View2(const Tensor& t) : v(t.contiguous().to_vector<float>()), rows(t.size(0)), cols(t.size(1)) {}
  double at(int64_t i, int64_t j) const { return v[size_t(i * cols + j)]; }
};

constexpr double kF32Eps = 1.1920929e-7;

/// The f32 accumulation bound of a K-term product whose terms sum to mag in magnitude:
/// 4 sqrt(K + 1) ulps (f32 eps) of mag.
double product_bound(double K, double mag) { return 4 * std::sqrt(K + 1) * kF32Eps * mag; }

/// Counts results outside their bound and reports the worst error / bound.
struct BoundTally {
  int64_t bad = 0, seen = 0;
  double worst = 0;

  void add(double got, double want, double tol) {
    const double err = std::abs(got - want);
    worst = std::max(worst, err / tol);
    if (!(err <= tol)) ++bad;  // also catches NaN
    ++seen;
  }
  void check(const std::string& what) const {
    INFO(what, ": ", bad, " of ", seen, " elements out of bound; worst error / bound = ", worst);
    CHECK(bad == 0);
  }
};

/// Checks c = a @ b (2-d views) element by element against a double loop; the bound is
/// product_bound, plus a tiny absolute floor.
void check_product(const Tensor& a, const Tensor& b, const Tensor& c, const std::string& what) {
  const View2 A(a), B(b), C(c);
  const int64_t M = A.rows, K = A.cols, N = B.cols;
  REQUIRE(C.rows == M);
  REQUIRE(C.cols == N);
  BoundTally tally;
  for (int64_t i = 0; i < M; ++i)
    for (int64_t j = 0; j < N; ++j) {
      double s = 0, mag = 0;
      for (int64_t k = 0; k < K; ++k) {
        s += A.at(i, k) * B.at(k, j);
        mag += std::abs(A.at(i, k) * B.at(k, j));
      }
      tally.add(C.at(i, j), s, product_bound(double(K), mag) + 1e-30);
    }
  tally.check(what);
}

std::string shape_name(const char* tag, int64_t M, int64_t K, int64_t N) {
  return std::string(tag) + " M=" + std::to_string(M) + " K=" + std::to_string(K) + " N=" + std::to_string(N);
}

}  // namespace

TEST_CASE("gemm f32: the paths and their selection") {
  using namespace ga::backend::cpu;
  {
    PathScope s(F32Kernel::Eigen, 2);
    CHECK(f32_gemm_path(800, 768, 768) == F32Kernel::Eigen);
    CHECK(f32_gemm_path(1, 1, 1) == F32Kernel::Eigen);
  }
  if (f32_kernel_supported(F32Kernel::Avx512)) {
    PathScope s(F32Kernel::Avx512, 2);
    CHECK(f32_gemm_path(1, 1, 1) == F32Kernel::Avx512);
    ga::backend::cpu::set_f32_gemm_kernel(F32Kernel::Auto);
    CHECK(f32_gemm_path(800, 768, 768) == F32Kernel::Avx512);
    CHECK(f32_gemm_path(2, 3, 4) == F32Kernel::Eigen);  // too small to pay for packing
    CHECK(f32_gemm_path(1, 768, 512) == F32Kernel::Eigen);  // a vector-matrix product
    CHECK(f32_gemm_path(512, 49, 4608) == F32Kernel::Eigen);  // too few columns
    // x @ w^T (both operands along k): the dot-product form up to 64 rows, 256 deep or more.
    CHECK(f32_gemm_path(50, 3072, 768, true) == F32Kernel::Avx512Dot);
    CHECK(f32_gemm_path(1, 768, 512, true) == F32Kernel::Avx512Dot);  // vector-matrix, on every thread
    CHECK(f32_gemm_path(64, 7, 256, true) == F32Kernel::Avx512Dot);
    CHECK(f32_gemm_path(65, 3072, 768, true) == F32Kernel::Avx512);
    CHECK(f32_gemm_path(50, 768, 255, true) == F32Kernel::Avx512);
    CHECK(f32_gemm_path(50, 3072, 768, false) == F32Kernel::Avx512);
    set_f32_gemm_kernel(F32Kernel::Avx512Dot);
    CHECK(f32_gemm_path(800, 768, 768, true) == F32Kernel::Avx512Dot);
    CHECK(f32_gemm_path(2, 3, 4, true) == F32Kernel::Avx512Dot);
    CHECK(f32_gemm_path(800, 768, 768, false) == F32Kernel::Avx512);
  } else {
    bool threw = false;
    try {
      set_f32_gemm_kernel(F32Kernel::Avx512);
    } catch (const ga::ValueError&) {
      threw = true;
    }
    CHECK(threw);
    // Auto: the AVX2 packed kernel for big products where the CPU has it (no dot form).
    const F32Kernel packed = f32_kernel_supported(F32Kernel::Avx2) ? F32Kernel::Avx2 : F32Kernel::Eigen;
    CHECK(f32_gemm_path(800, 768, 768) == packed);
    CHECK(f32_gemm_path(50, 3072, 768, true) == packed);
    CHECK(f32_gemm_path(2, 3, 4) == F32Kernel::Eigen);
    CHECK(f32_gemm_path(512, 49, 4608) == F32Kernel::Eigen);
  }
  if (f32_kernel_supported(F32Kernel::Avx2)) {
    PathScope s(F32Kernel::Avx2, 2);
    CHECK(f32_gemm_path(1, 1, 1) == F32Kernel::Avx2);
    CHECK(f32_gemm_path(50, 3072, 768, true) == F32Kernel::Avx2);
  }
}

TEST_CASE("gemm f32: edge shapes, row-major and transposed operands, 1 and 2 threads") {
  const std::vector<int64_t> sizes{1, 6, 7, 15, 17, 33, 65, 127, 1000};
  ga::Generator g(5);
  for (F32Kernel k : runnable_paths()) {
    for (int threads : {1, 2}) {
      PathScope s(k, threads);
      const std::string tag = std::string(ga::backend::cpu::f32_kernel_name(k)) + " " + std::to_string(threads) + "t";
      // Each dim in turn over the sizes, the other two moderate; all four layouts.
      for (int dim = 0; dim < 3; ++dim)
        for (int64_t v : sizes) {
          const int64_t M = dim == 0 ? v : 33, K = dim == 1 ? v : 65, N = dim == 2 ? v : 17;
          const Tensor a = ga::randn({M, K}, g), at = ga::randn({K, M}, g).t();
          const Tensor b = ga::randn({K, N}, g), bt = ga::randn({N, K}, g).t();
          check_product(a, b, ga::matmul(a, b), shape_name((tag + " A B").c_str(), M, K, N));
          check_product(a, bt, ga::matmul(a, bt), shape_name((tag + " A W^T").c_str(), M, K, N));
          check_product(at, b, ga::matmul(at, b), shape_name((tag + " A^T B").c_str(), M, K, N));
          check_product(at, bt, ga::matmul(at, bt), shape_name((tag + " A^T W^T").c_str(), M, K, N));
        }
      // Every size in every dim at once, for the sizes that keep the reference quick.
      for (int64_t M : {1, 15, 17, 33, 65})
        for (int64_t K : {1, 17, 127, 385, 1000})
          for (int64_t N : {1, 15, 33, 65, 127}) {
            const Tensor a = ga::randn({M, K}, g), bt = ga::randn({N, K}, g).t();
            check_product(a, bt, ga::linear(a, bt.t()), shape_name((tag + " linear").c_str(), M, K, N));
          }
    }
  }
}

TEST_CASE("gemm f32: the dot-product form's tiles, k chunks and threads") {
  // Rows and columns around the 4 x 6 tile, depths around the 1024-deep chunk (a chunk is
  // a multiple of 16 deep; the last is shorter) and the 16-wide step, a vector-matrix
  // product, x rows and w rows longer than K (a narrowed view), with and without a bias.
  if (!ga::backend::cpu::f32_kernel_supported(F32Kernel::Avx512Dot)) return;
  ga::Generator g(12);
  for (int threads : {1, 2}) {
    PathScope s(F32Kernel::Avx512Dot, threads);
    const std::string tag = "avx512dot " + std::to_string(threads) + "t";
    for (auto [M, K, N] : std::vector<std::array<int64_t, 3>>{{1, 2049, 13},
                                                               {5, 1025, 7},
                                                               {50, 3000, 50},
                                                               {64, 1024, 97},
                                                               {3, 16, 6},
                                                               {4, 17, 1},
                                                               {9, 4608, 12},
                                                               {2, 1040, 200},
                                                               {1, 768, 200},  // a vector-matrix product on 2 threads
                                                               {3, 40, 1000}}) {  // groups of 8 tiles, then shorter runs
      const Tensor x = ga::randn({M, K + 5}, g).narrow(1, 2, K);
      const Tensor w = ga::randn({N, K + 3}, g).narrow(1, 1, K);
      check_product(x, w.t(), ga::matmul(x, w.t()), shape_name((tag + " narrowed").c_str(), M, K, N));
      const Tensor b = ga::randn({N}, g);
      const Tensor y = ga::linear(x.contiguous(), w.contiguous(), b);
      check_product(x, w.t(), y - b, shape_name((tag + " linear, bias taken off").c_str(), M, K, N));
    }
  }
  // x rows a multiple of 4 KiB apart, which dot_gemm copies to a wider stride first: whole
  // rows (K = 3072, ViT's c_proj) and rows narrowed out of 1024-wide ones (K not a multiple
  // of 16), on 1 and 2 threads (each copies part of the rows).
  for (int threads : {1, 2}) {
    PathScope s(F32Kernel::Avx512Dot, threads);
    const std::string tag = "avx512dot " + std::to_string(threads) + "t, x rows 4 KiB apart";
    const Tensor x = ga::randn({50, 3072}, g), w = ga::randn({20, 3072}, g);
    check_product(x, w.t(), ga::linear(x, w), shape_name(tag.c_str(), 50, 3072, 20));
    for (int64_t M : {2, 7}) {
      const Tensor xn = ga::randn({M, 1024}, g).narrow(1, 3, 1000), wn = ga::randn({30, 1000}, g);
      check_product(xn, wn.t(), ga::matmul(xn, wn.t()), shape_name((tag + ", narrowed").c_str(), M, 1000, 30));
    }
  }
  // The thread count does not change a value: each is one chunked dot product. One row: a
  // vector-matrix product, threaded by its weight's size rather than its flops.
  for (int64_t M : {50, 1}) {
    const Tensor x = ga::randn({M, 3000}, g), w = ga::randn({130, 3000}, g);
    Tensor one, two;
    {
      PathScope s(F32Kernel::Avx512Dot, 1);
      one = ga::linear(x, w);
    }
    {
      PathScope s(F32Kernel::Avx512Dot, 2);
      two = ga::linear(x, w);
    }
    INFO("M = " << M);
    CHECK(ga::max(ga::abs(one - two)).item<float>() == 0.0f);
  }
}

TEST_CASE("gemm f32: strided operands (row strides past the row, column steps, zero strides)") {
  ga::Generator g(6);
  for (F32Kernel k : runnable_paths()) {
    PathScope s(k, 2);
    const std::string tag = ga::backend::cpu::f32_kernel_name(k);
    const int64_t M = 65, K = 127, N = 33;
    // Rows of a wider matrix (row stride > cols), every other column (column stride 2), a
    // column broadcast along a dim (stride 0), and a view with neither stride 1.
    const Tensor a_wide = ga::randn({M, K + 9}, g).narrow(1, 3, K);
    const Tensor b_step = ga::randn({K, 2 * N}, g).slice(1, 0, 2 * N, 2);
    const Tensor a_step_t = ga::randn({2 * K, M}, g).slice(0, 1, 2 * K, 2).t();
    const Tensor b_bcast = ga::randn({K, 1}, g).expand({K, N});
    const Tensor a_neither = ga::randn({2 * M, 3 * K}, g).slice(0, 0, 2 * M, 2).slice(1, 0, 3 * K, 3);
    check_product(a_wide, b_step, ga::matmul(a_wide, b_step), tag + " wide A, stepped B");
    check_product(a_step_t, b_bcast, ga::matmul(a_step_t, b_bcast), tag + " stepped A^T, broadcast B");
    check_product(a_neither, b_step, ga::matmul(a_neither, b_step), tag + " A with no unit stride");
    // Into the kernel's second k block and a second 640-column block of B.
    const Tensor a2 = ga::randn({17, 800}, g).slice(1, 0, 800, 2);
    const Tensor b2 = ga::randn({700, 400}, g).t().narrow(1, 0, 700);
    check_product(a2, b2, ga::matmul(a2, b2), tag + " K=400 stepped, N=700");
  }
}

TEST_CASE("gemm f32: batched products, broadcast batch operands, K = 0") {
  ga::Generator g(7);
  for (F32Kernel k : runnable_paths()) {
    for (int threads : {1, 2}) {
      PathScope s(k, threads);
      const std::string tag = std::string(ga::backend::cpu::f32_kernel_name(k)) + " " + std::to_string(threads) + "t";
      // Small products (one per thread) and large ones (each on every thread), with the
      // left operand broadcast as a convolution's weight is (batch stride 0) or not.
      for (auto [Bt, M, K, N] : std::vector<std::array<int64_t, 4>>{{6, 17, 33, 15}, {3, 130, 400, 70}}) {
        const Tensor w = ga::randn({M, K}, g);
        const Tensor wb = w.unsqueeze(0).expand({Bt, M, K});
        const Tensor x = ga::randn({Bt, K, N}, g), xt = ga::randn({Bt, N, K}, g).transpose(1, 2);
        const Tensor own = ga::randn({Bt, M, K}, g);
        const Tensor y1 = ga::matmul(wb, x), y2 = ga::matmul(own, xt), y3 = ga::matmul(x.transpose(1, 2), w.t());
        for (int64_t i = 0; i < Bt; ++i) {
          const std::string at = shape_name(tag.c_str(), M, K, N) + " batch item " + std::to_string(i);
          check_product(w, x.select(0, i), y1.select(0, i), at + " broadcast A");
          check_product(own.select(0, i), xt.select(0, i), y2.select(0, i), at + " transposed B");
          check_product(x.select(0, i).t(), w.t(), y3.select(0, i), at + " broadcast B");
        }
      }
      // K = 0: zeros, whatever the output held before.
      const Tensor z = ga::matmul(ga::randn({40, 0}, g), ga::randn({0, 50}, g));
      CHECK(ga::max(ga::abs(z)).item<float>() == 0.0f);
    }
  }
}

TEST_CASE("gemm f32: the kernels and Eigen agree on a conv2d and a linear layer") {
  ga::Generator g(8);
  const Tensor x = ga::randn({2, 8, 14, 14}, g), w = ga::randn({40, 8, 3, 3}, g);
  const Tensor xl = ga::randn({50, 96}, g), wl = ga::randn({130, 96}, g);
  Tensor ce, le;
  {
    PathScope s(F32Kernel::Eigen, 2);
    ce = ga::conv2d(x, w, Tensor(), {1, 1}, {1, 1});
    le = ga::linear(xl, wl);
  }
  for (F32Kernel k : {F32Kernel::Avx512, F32Kernel::Avx2}) {
    if (!ga::backend::cpu::f32_kernel_supported(k)) continue;
    PathScope s(k, 2);
    INFO(std::string(ga::backend::cpu::f32_kernel_name(k)));
    CHECK(ga::max(ga::abs(ga::conv2d(x, w, Tensor(), {1, 1}, {1, 1}) - ce)).item<float>() < 1e-4f);
    CHECK(ga::max(ga::abs(ga::linear(xl, wl) - le)).item<float>() < 1e-4f);
  }
}

namespace {

double activation_ref(ga::Activation a, double x) {
  switch (a) {
    case ga::Activation::Relu: return x > 0 ? x : 0;
    case ga::Activation::QuickGelu: return x / (1 + std::exp(-1.702 * x));
    case ga::Activation::Gelu: return 0.5 * x * (1 + std::erf(x / std::sqrt(2.0)));
    case ga::Activation::None: break;
  }
  return x;
}

const char* activation_label(ga::Activation a) {
  switch (a) {
    case ga::Activation::Relu: return "relu";
    case ga::Activation::QuickGelu: return "quick_gelu";
    case ga::Activation::Gelu: return "gelu";
    case ga::Activation::None: break;
  }
  return "none";
}

/// Counts the results of a product with an epilogue that miss the reference, act(s + extra):
/// the bound is the product's (check_product's, for K terms of total magnitude mag), grown by
/// the activation's slope (at most 1.13), plus a few ulps of the sums and of the activation's
/// own rounding.
struct EpilogueTally : BoundTally {
  void add(double got, double s, double extra, double mag, double K, ga::Activation act) {
    const double want = activation_ref(act, s + extra);
    const double tol = 1.2 * product_bound(K, mag) +
                       8 * kF32Eps * (std::abs(s) + std::abs(extra) + std::abs(want)) + 1e-30;
    BoundTally::add(got, want, tol);
  }
};

/// One epilogue case on out [Bt, M, N] = a [Bt or broadcast, M, K] @ b [Bt, K, N].
struct EpilogueCase {
  bool bias, per_row, residual;
  ga::Activation act;
};

/// Checks out = act(a @ b + bias + residual) element by element against a double loop, within
/// EpilogueTally's bound.
void check_epilogue(const Tensor& a3, const Tensor& b3, const Tensor& bias, bool per_row, const Tensor& res,
                    ga::Activation act, const Tensor& out, const std::string& what) {
  const int64_t Bt = out.size(0), M = out.size(1), N = out.size(2), K = a3.size(2);
  const std::vector<float> bv = bias.defined() ? bias.to_vector<float>() : std::vector<float>();
  EpilogueTally tally;
  for (int64_t t = 0; t < Bt; ++t) {
    const View2 A(a3.select(0, t)), B(b3.select(0, t)), C(out.select(0, t));
    const std::vector<float> rv = res.defined() ? res.select(0, t).contiguous().to_vector<float>() : std::vector<float>();
    for (int64_t i = 0; i < M; ++i)
      for (int64_t j = 0; j < N; ++j) {
        double s = 0, mag = 0;
        for (int64_t k = 0; k < K; ++k) {
          s += A.at(i, k) * B.at(k, j);
          mag += std::abs(A.at(i, k) * B.at(k, j));
        }
        double extra = 0;
        if (bias.defined()) extra += bv[size_t(per_row ? i : j)];
        if (res.defined()) extra += rv[size_t(i * N + j)];
        tally.add(C.at(i, j), s, extra, mag, double(K), act);
      }
  }
  tally.check(what);
}

}  // namespace

TEST_CASE("gemm f32: the fused epilogue (bias per row or column, residual, activation) on every path") {
  using ga::Activation;
  ga::Generator g(9);
  const std::vector<EpilogueCase> cases{
      {true, true, true, Activation::Relu},        // a bottleneck's last convolution
      {true, true, false, Activation::Relu},       // a convolution + ReLU
      {true, false, false, Activation::QuickGelu}, // an MLP's first layer
      {true, false, false, Activation::Gelu},
      {true, false, true, Activation::None},       // an MLP's last layer + the residual stream
      {false, false, true, Activation::Gelu},
      {true, true, false, Activation::None}};
  for (F32Kernel k : runnable_paths()) {
    for (int threads : {1, 2}) {
      PathScope s(k, threads);
      const std::string tag = std::string(ga::backend::cpu::f32_kernel_name(k)) + " " + std::to_string(threads) + "t";
      // Edge sizes around the 12 x 32 register block, two 384-deep k blocks (the epilogue
      // only on the last), two 640-column B blocks, a batch with a broadcast weight.
      for (auto [Bt, M, K, N] : std::vector<std::array<int64_t, 4>>{
               {1, 13, 5, 33}, {1, 37, 400, 15}, {3, 25, 70, 700}, {2, 1, 9, 65}, {1, 12, 385, 32},
               {1, 5, 1100, 50},    // the dot form: two k chunks, the epilogue after the last
               {1, 70, 300, 20},     // the dot form: 18 row tiles, the last of 2 rows
               {1, 9, 40, 1000}}) {  // the dot form: whole tile groups, then runs down to one tile
        const Tensor w = ga::randn({M, K}, g);
        const Tensor a3 = w.unsqueeze(0).expand({Bt, M, K});
        const Tensor b3 = ga::randn({Bt, N, K}, g).transpose(1, 2);
        for (const EpilogueCase& c : cases) {
          const std::string what = shape_name(tag.c_str(), M, K, N) + " Bt=" + std::to_string(Bt) +
                                   (c.bias ? (c.per_row ? " row bias" : " column bias") : "") +
                                   (c.residual ? " residual" : "") + " " + activation_label(c.act);
          ga::backend::MatmulEpilogue e;
          if (c.bias) e.bias = ga::randn({c.per_row ? M : N}, g);
          e.bias_per_row = c.per_row;
          if (c.residual) e.residual = ga::randn({Bt, M, N}, g);
          e.activation = c.act;
          Tensor out = ga::empty({Bt, M, N});
          ga::backend::of(out).matmul(a3, b3, out, e);
          check_epilogue(a3, b3, e.bias, c.per_row, e.residual, c.act, out, what);
          // Bias, residual and activation are the f32 operations a separate pass does, in the
          // same order: the fused result must equal the unfused ops' bits.
          {
            Tensor want = ga::matmul(a3, b3);
            if (c.bias) want = want + (c.per_row ? e.bias.reshape({1, M, 1}) : e.bias.reshape({1, 1, N}));
            if (c.residual) want = want + e.residual;
            want = ga::activate(want, c.act);
            INFO(what);
            CHECK(ga::max(ga::abs(out - want)).item<float>() == 0.0f);
          }
        }
      }
    }
  }
}

TEST_CASE("gemm f32: a malformed epilogue is refused, naming it") {
  const Tensor a = ga::randn({1, 4, 3}), b = ga::randn({1, 3, 5});
  Tensor out = ga::empty({1, 4, 5});
  ga::backend::MatmulEpilogue e;
  e.bias = ga::randn({4});  // per column would need 5
  bool threw = false;
  try {
    ga::backend::of(out).matmul(a, b, out, e);
  } catch (const ga::ShapeError& err) {
    threw = std::string(err.what()).find("bias") != std::string::npos;
  }
  CHECK(threw);
  e = {};
  e.residual = ga::randn({1, 5, 4});
  threw = false;
  try {
    ga::backend::of(out).matmul(a, b, out, e);
  } catch (const ga::ShapeError& err) {
    threw = std::string(err.what()).find("residual") != std::string::npos;
  }
  CHECK(threw);
}

namespace {

/// One convolution geometry: x [N, C, H, W], w [O, C, k, k'], stride, padding.
struct ConvCase {
  int64_t N, C, H, W, O, kh, kw, sh, sw, ph, pw;
};

/// Checks y = act(conv2d(x, w) + b + residual) element by element against a direct f64
/// convolution (loops over the window, zero padding by bounds checks), within EpilogueTally's
/// bound, with sum_k |w x| over the window as the magnitude.
void check_conv(const Tensor& x, const Tensor& w, const Tensor& b, const Tensor& res, ga::Activation act,
                const ConvCase& c, const Tensor& y, const std::string& what) {
  const int64_t OH = (c.H + 2 * c.ph - c.kh) / c.sh + 1, OW = (c.W + 2 * c.pw - c.kw) / c.sw + 1;
  REQUIRE(y.shape() == ga::Shape{c.N, c.O, OH, OW});
  const std::vector<float> xv = x.contiguous().to_vector<float>(), wv = w.contiguous().to_vector<float>();
  const std::vector<float> yv = y.contiguous().to_vector<float>();
  const std::vector<float> bv = b.defined() ? b.to_vector<float>() : std::vector<float>();
  const std::vector<float> rv = res.defined() ? res.contiguous().to_vector<float>() : std::vector<float>();
  const double K = double(c.C * c.kh * c.kw);
  EpilogueTally tally;
  for (int64_t n = 0; n < c.N; ++n)
    for (int64_t o = 0; o < c.O; ++o)
      for (int64_t oh = 0; oh < OH; ++oh)
        for (int64_t ow = 0; ow < OW; ++ow) {
          double s = 0, mag = 0;
          for (int64_t ci = 0; ci < c.C; ++ci)
            for (int64_t i = 0; i < c.kh; ++i)
              for (int64_t j = 0; j < c.kw; ++j) {
                const int64_t ih = oh * c.sh - c.ph + i, iw = ow * c.sw - c.pw + j;
                if (ih < 0 || ih >= c.H || iw < 0 || iw >= c.W) continue;
                const double p = double(wv[size_t(((o * c.C + ci) * c.kh + i) * c.kw + j)]) *
                                 double(xv[size_t(((n * c.C + ci) * c.H + ih) * c.W + iw)]);
                s += p;
                mag += std::abs(p);
              }
          const size_t at = size_t(((n * c.O + o) * OH + oh) * OW + ow);
          double extra = 0;
          if (b.defined()) extra += bv[size_t(o)];
          if (res.defined()) extra += rv[at];
          tally.add(double(yv[at]), s, extra, mag, K, act);
        }
  tally.check(what);
}

}  // namespace

TEST_CASE("gemm f32: conv2d (the implicit GEMM and the im2col path) against a direct convolution") {
  using ga::Activation;
  using ga::backend::cpu::ConvPath;
  using ga::backend::cpu::f32_kernel_supported;
  ga::Generator g(10);
  const std::vector<ConvCase> geometries{
      {2, 7, 13, 11, 13, 3, 3, 1, 1, 1, 1},   // 3x3 pad 1, odd channel count, 143 columns
      {3, 5, 17, 20, 14, 3, 3, 2, 2, 1, 1},   // 3x3 stride 2
      {2, 9, 16, 15, 6, 1, 1, 2, 2, 0, 0},    // 1x1 stride 2 (a strided read, no padding)
      {1, 3, 12, 9, 5, 5, 5, 1, 1, 2, 2},     // 5x5 pad 2
      {2, 3, 23, 21, 8, 7, 7, 2, 2, 3, 3},    // the 7x7 stride-2 stem
      {2, 45, 27, 27, 17, 3, 3, 1, 1, 1, 1},  // K = 405: two k blocks; 729 columns: two B blocks
      {2, 4, 6, 70, 5, 3, 3, 1, 1, 1, 1},     // output rows wider than a 32-column panel
      {2, 6, 9, 8, 4, 2, 3, 1, 2, 0, 1},      // unequal window and strides, one-sided reach
      {2, 6, 9, 8, 4, 3, 2, 2, 1, 1, 0},      // row stride 2, unit column stride, one-sided reach
      {1, 4, 5, 6, 3, 3, 3, 1, 1, 2, 2},      // padding past the window's reach: all-zero runs
      {2, 8, 10, 12, 7, 1, 1, 1, 1, 0, 0},    // pointwise: the images are the columns
      // One product spans the batch: register tiles (32 columns) that cross images.
      {16, 20, 7, 7, 14, 1, 1, 1, 1, 0, 0},   // pointwise 7x7 (49 columns an image), 16 images
      {5, 45, 5, 6, 13, 3, 3, 1, 1, 1, 1},    // 30 columns an image, two k blocks (accumulated)
      {3, 2, 3, 3, 5, 3, 3, 1, 1, 1, 1},      // 9 columns an image: one tile holds all three
      {1, 130, 6, 6, 9, 3, 3, 1, 1, 1, 1}};   // K = 1170 over 36 positions: Rows, two k chunks
  struct Parts {
    bool bias, residual;
    Activation act;
  };
  const std::vector<Parts> parts{{false, false, Activation::None},
                                 {true, false, Activation::None},
                                 {true, false, Activation::Relu},
                                 {true, true, Activation::Relu},
                                 {false, true, Activation::Gelu}};
  // A mixed product the reference kernel computes as one f32 product takes the f32 kernel.
  const ConvPath mixed_path = ga::backend::cpu::bf16_kernel() == ga::backend::cpu::Bf16Kernel::Reference
                                  ? ConvPath::Implicit
                                  : ConvPath::Columns;
  if (f32_kernel_supported(F32Kernel::Avx512)) {
    // Auto: the batch's columns count (one product spans it): a 7 x 7 output (49 columns)
    // takes the kernel from 2 images on; alone, its 49 rows take the dot form when the
    // window is 256 deep or more (and the weight runs along k); 14 x 14 always takes the
    // kernel; a bf16 weight does where the mixed product is the reference's single product
    // (no AMX or AVX512-BF16), an f16 one at Highest precision never; a lone shallow 7 x 7
    // pointwise conv multiplies the image in place.
    const ga::backend::Window2d w3{3, 3, 1, 1, 1, 1}, w1{1, 1, 1, 1, 0, 0};
    const Tensor w = ga::empty({512, 512 * 9}), wp = ga::empty({512, 512});
    CHECK(ga::backend::cpu::conv2d_path(ga::empty({16, 512, 7, 7}), w, w3) == ConvPath::Implicit);
    CHECK(ga::backend::cpu::conv2d_path(ga::empty({1, 512, 7, 7}), w, w3) == ConvPath::Rows);
    CHECK(ga::backend::cpu::conv2d_path(ga::empty({2, 512, 7, 7}), w, w3) == ConvPath::Implicit);
    CHECK(ga::backend::cpu::conv2d_path(ga::empty({1, 512, 14, 14}), w, w3) == ConvPath::Implicit);
    CHECK(ga::backend::cpu::conv2d_path(ga::empty({1, 512, 14, 14}), w.to(ga::DType::bf16), w3) == mixed_path);
    CHECK(ga::backend::cpu::conv2d_path(ga::empty({1, 512, 14, 14}), w.to(ga::DType::f16), w3) == ConvPath::Columns);
    CHECK(ga::backend::cpu::conv2d_path(ga::empty({1, 512, 7, 7}), wp, w1) == ConvPath::Rows);
    CHECK(ga::backend::cpu::conv2d_path(ga::empty({1, 64, 7, 7}), ga::empty({512, 64}), w1) == ConvPath::Pointwise);
    CHECK(ga::backend::cpu::conv2d_path(ga::empty({1, 512, 7, 7}), w.t().contiguous().t(), w3) == ConvPath::Columns);
    CHECK(ga::backend::cpu::conv2d_path(ga::empty({2, 512, 7, 7}), wp, w1) == ConvPath::Implicit);
  } else if (f32_kernel_supported(F32Kernel::Avx2)) {
    // Auto without AVX-512: the AVX2 kernel where a product has 64 columns or more (no dot
    // form, so a lone 7 x 7 output takes im2col and Eigen).
    const ga::backend::Window2d w3{3, 3, 1, 1, 1, 1};
    const Tensor w = ga::empty({512, 512 * 9});
    CHECK(ga::backend::cpu::conv2d_path(ga::empty({16, 512, 7, 7}), w, w3) == ConvPath::Implicit);
    CHECK(ga::backend::cpu::conv2d_path(ga::empty({1, 512, 7, 7}), w, w3) == ConvPath::Columns);
    CHECK(ga::backend::cpu::conv2d_path(ga::empty({1, 512, 14, 14}), w, w3) == ConvPath::Implicit);
    CHECK(ga::backend::cpu::conv2d_path(ga::empty({1, 512, 14, 14}), w.to(ga::DType::bf16), w3) == mixed_path);
    CHECK(ga::backend::cpu::conv2d_path(ga::empty({1, 512, 14, 14}), w.to(ga::DType::f16), w3) == ConvPath::Columns);
    ga::set_mixed_matmul_precision(ga::backend::MixedPrecision::Medium);  // f16 weights: one term then
    CHECK(ga::backend::cpu::conv2d_path(ga::empty({1, 512, 14, 14}), w.to(ga::DType::f16), w3) == mixed_path);
    ga::set_mixed_matmul_precision(ga::backend::MixedPrecision::Highest);
  }
  for (F32Kernel k : runnable_paths()) {
    for (int threads : {1, 2}) {
      PathScope s(k, threads);
      const std::string tag = std::string(ga::backend::cpu::f32_kernel_name(k)) + " " + std::to_string(threads) + "t";
      for (const ConvCase& c : geometries) {
        const Tensor x = ga::randn({c.N, c.C, c.H, c.W}, g), w = ga::randn({c.O, c.C, c.kh, c.kw}, g);
        const ga::backend::Window2d win{c.kh, c.kw, c.sh, c.sw, c.ph, c.pw};
        const ConvPath path = ga::backend::cpu::conv2d_path(x, w.reshape({c.O, -1}), win);
        const bool pointwise = c.kh == 1 && c.kw == 1 && c.sh == 1 && c.sw == 1 && c.ph == 0 && c.pw == 0;
        // The forced kernel computes every convolution without im2col, as one product.
        // The forced dot form computes every convolution as rows @ w^T, image by image.
        if (k == F32Kernel::Avx512 || k == F32Kernel::Avx2) CHECK(path == ConvPath::Implicit);
        else if (k == F32Kernel::Avx512Dot) CHECK(path == ConvPath::Rows);
        else CHECK(path == (pointwise ? ConvPath::Pointwise : ConvPath::Columns));
        for (const Parts& p : parts) {
          const Tensor b = p.bias ? ga::randn({c.O}, g) : Tensor();
          const Tensor y0 = ga::conv2d(x, w, Tensor(), {c.sh, c.sw}, {c.ph, c.pw});
          const Tensor res = p.residual ? ga::randn(y0.shape(), g) : Tensor();
          const Tensor y = ga::conv2d(x, w, b, {c.sh, c.sw}, {c.ph, c.pw}, ga::Epilogue{res, p.act});
          const std::string what = tag + " " + ga::backend::cpu::conv_path_name(path) + " x " +
                                   ga::shape_str(x.shape()) + " w " + ga::shape_str(w.shape()) + " stride " +
                                   std::to_string(c.sh) + "," + std::to_string(c.sw) + " pad " + std::to_string(c.ph) +
                                   "," + std::to_string(c.pw) + (p.bias ? " bias" : "") +
                                   (p.residual ? " residual" : "") + " " + activation_label(p.act);
          check_conv(x, w, b, res, p.act, c, y, what);
        }
      }
    }
  }
}

TEST_CASE("gemm f32: the fused ReLU keeps NaN as the unfused one does") {
  for (F32Kernel k : {F32Kernel::Avx512, F32Kernel::Avx512Dot, F32Kernel::Avx2}) {
    if (!ga::backend::cpu::f32_kernel_supported(k)) continue;
    PathScope s(k, 1);
    INFO(std::string(ga::backend::cpu::f32_kernel_name(k)));
    ga::Generator g(10);
    const int64_t M = 24, K = 40, N = 64;
    // b runs along k, so that the dot form (which applies the ReLU in its tiles) takes it.
    const Tensor a = ga::randn({1, M, K}, g), b = ga::randn({1, N, K}, g).transpose(1, 2);
    std::vector<float> r(size_t(M * N), 0.0f);
    r[5] = std::nanf("");
    r[100] = -std::numeric_limits<float>::infinity();
    ga::backend::MatmulEpilogue e;
    e.residual = ga::tensor(r, {1, M, N});
    e.activation = ga::Activation::Relu;
    Tensor out = ga::empty({1, M, N});
    ga::backend::of(out).matmul(a, b, out, e);
    const std::vector<float> o = out.to_vector<float>();
    CHECK(std::isnan(o[5]));
    CHECK(o[100] == 0.0f);
  }
}

#if GA_X86_F32_KERNELS
namespace {

using MapFn = void (*)(const float*, float*, int64_t);

/// The vector activations of one instruction set (activation_simd.hpp), each mapped over an
/// array one vector at a time (the last one partial: a masked tail).
struct SimdActivations {
  const char* name;
  MapFn quick_gelu, erf, gelu;
};

/// The sets this CPU runs (AVX-512, then AVX2); a message names each it does not.
std::vector<SimdActivations> runnable_simd_activations() {
  namespace a512 = ga::backend::cpu::activation_avx512;
  namespace a256 = ga::backend::cpu::activation_avx2;
  std::vector<SimdActivations> sets;
  if (ga::backend::cpu::detail::f32_avx512_supported())
    sets.push_back({"avx512", a512::map<a512::quick_gelu>, a512::map<a512::erf_approx>, a512::map<a512::gelu>});
  else
    MESSAGE("this CPU does not run avx512");
  if (ga::backend::cpu::detail::f32_avx2_supported())
    sets.push_back({"avx2", a256::map<a256::quick_gelu>, a256::map<a256::erf_approx>, a256::map<a256::gelu>});
  else
    MESSAGE("this CPU does not run avx2");
  return sets;
}

std::vector<float> map_each(MapFn f, const std::vector<float>& x) {
  std::vector<float> y(x.size());
  f(x.data(), y.data(), int64_t(x.size()));
  return y;
}

/// Values from -range to range, dense, and every float within 64 ulp of each point where a
/// piece of the approximation hands over to the next.
std::vector<float> erf_test_points(double range, double step, std::initializer_list<float> seams) {
  std::vector<float> x;
  for (double v = -range; v <= range; v += step) x.push_back(float(v));
  for (float seam : seams)
    for (float s : {seam, -seam}) {
      float v = s;
      for (int i = 0; i < 64; ++i) v = std::nextafter(v, 0.0f);
      for (int i = 0; i < 128; ++i, v = std::nextafter(v, 2 * s)) x.push_back(v);
    }
  return x;
}

const float kInf = std::numeric_limits<float>::infinity(), kNan = std::nanf("");

std::vector<float> quick_gelu_points() {
  std::vector<float> x;
  for (double v = -120; v <= 120; v += 0.00731) x.push_back(float(v));
  const std::vector<float> special{0.0f, -0.0f, 1e-30f, -1e-30f, 1e-40f, -1e-40f, 3e38f, -3e38f, kInf, -kInf, kNan,
                                   -9.0f, -52.1f, -52.2f, 87.3f / -1.702f, 51.3f};
  x.insert(x.end(), special.begin(), special.end());
  x.push_back(0.5f);  // 1 + 16 * k + 1 values: a masked tail of one lane
  return x;
}

}  // namespace

TEST_CASE("simd quick_gelu: within 3 ulp of x / (1 + e^t), t = -1.702 x in f32, and its special values") {
  for (const SimdActivations& s : runnable_simd_activations()) {
    INFO(s.name);
    const std::vector<float> x = quick_gelu_points(), y = map_each(s.quick_gelu, x);
    int64_t bad = 0;
    double worst_ulp = 0;
    for (size_t i = 0; i < x.size(); ++i) {
      // The reference rounds t to f32, as PyTorch's f32 QuickGELU (and ours) computes it.
      const float t = -1.702f * x[i];
      const double want = double(x[i]) / (1 + std::exp(double(t)));
      if (std::isnan(want) || std::isinf(want)) {
        bad += std::isnan(want) ? !std::isnan(y[i]) : double(y[i]) != want;
        continue;
      }
      const double err = std::abs(double(y[i]) - want);
      if (std::abs(want) < 2e-37) {
        bad += !(err <= 2e-37);
        continue;
      }
      const float wf = float(want);
      const double ulp = double(std::nextafter(std::abs(wf), kInf) - std::abs(wf));
      worst_ulp = std::max(worst_ulp, err / ulp);
      bad += !(err <= 3 * ulp);
    }
    INFO("worst error " << worst_ulp << " ulp");
    CHECK(bad == 0);
    // Sign and nan handling as PyTorch's x * sigmoid(1.702 x).
    auto f = [&](float v) { return map_each(s.quick_gelu, {v})[0]; };
    CHECK(std::isnan(f(kNan)));
    CHECK(std::isnan(f(-kInf)));
    CHECK(f(kInf) == kInf);
    CHECK(f(3e38f) == 3e38f);
    CHECK((f(-3e38f) == 0.0f && std::signbit(f(-3e38f))));
    CHECK((f(-0.0f) == 0.0f && std::signbit(f(-0.0f))));
    CHECK(f(1e-40f) == 0.5f * 1e-40f);
  }
}

TEST_CASE("simd erf and gelu: within their bounds of the exact functions, and their special values") {
  for (const SimdActivations& s : runnable_simd_activations()) {
    INFO(s.name);
    {  // erf: within 8e-8 of the exact value, odd, +-1 from 3.92 on (f32's erf rounds to +-1 there)
      std::vector<float> z = erf_test_points(6, 0.000613, {1.0f, 3.92f});
      z.push_back(0.25f);  // 16 k + 1 values: a masked tail
      const std::vector<float> e = map_each(s.erf, z);
      int64_t bad = 0;
      double worst = 0;
      for (size_t i = 0; i < z.size(); ++i) {
        const double err = std::abs(double(e[i]) - std::erf(double(z[i])));
        worst = std::max(worst, err);
        bad += !(err <= 8e-8);
        if (std::abs(z[i]) >= 3.92f) bad += e[i] != std::copysign(1.0f, z[i]);
      }
      INFO("erf: worst error " << worst);
      CHECK(bad == 0);
      const std::vector<float> es = map_each(s.erf, {0.0f, -0.0f, 1e-40f, kInf, -kInf, kNan});
      CHECK((es[0] == 0.0f && !std::signbit(es[0])));
      CHECK((es[1] == 0.0f && std::signbit(es[1])));
      CHECK(std::abs(double(es[2]) - 1.1283791670955126e-40) <= 2e-45);  // 2 / sqrt(pi) z, a subnormal
      CHECK(es[3] == 1.0f);
      CHECK(es[4] == -1.0f);
      CHECK(std::isnan(es[5]));
    }
    {  // GELU: within 0.6e-7 |x| + 2 ulp of x Phi(x) (erf's error, made absolute by 1 + erf)
      std::vector<float> x = erf_test_points(12, 0.000731, {1.41421356f, 5.5437212f});
      x.push_back(0.5f);
      const std::vector<float> y = map_each(s.gelu, x);
      int64_t bad = 0;
      double worst = 0;
      for (size_t i = 0; i < x.size(); ++i) {
        const double xd = x[i], want = 0.5 * xd * (1 + std::erf(xd / std::sqrt(2.0)));
        const float wf = float(want);
        const double ulp = std::max(double(std::nextafter(std::abs(wf), kInf) - std::abs(wf)), 1e-45);
        const double bound = 0.6e-7 * std::abs(xd) + 2 * ulp, err = std::abs(double(y[i]) - want);
        worst = std::max(worst, err / bound);
        bad += !(err <= bound);
      }
      INFO("gelu: worst error " << worst << " of the bound");
      CHECK(bad == 0);
      // Edge values as PyTorch's (x * 0.5) * (1 + erf(x / sqrt 2)) in f32.
      const std::vector<float> special{kInf, -kInf, kNan, -0.0f, -6.0f, -100.0f, -3e38f, 3e38f, 1e-40f};
      const std::vector<float> g = map_each(s.gelu, special);
      CHECK(g[0] == kInf);
      CHECK(std::isnan(g[1]));
      CHECK(std::isnan(g[2]));
      for (size_t i : {size_t(3), size_t(4), size_t(5), size_t(6)}) {
        INFO("gelu(" << special[i] << ") = " << g[i]);
        CHECK((g[i] == 0.0f && std::signbit(g[i])));
      }
      CHECK(g[7] == 3e38f);
      CHECK(g[8] == 0.5f * 1e-40f);
    }
  }
}

TEST_CASE("simd activations: the AVX-512 and AVX2 versions give the same bits") {
  const std::vector<SimdActivations> sets = runnable_simd_activations();
  if (sets.size() < 2) return;  // the message names the set this CPU does not run
  std::vector<float> x = quick_gelu_points();
  const std::vector<float> more = erf_test_points(12, 0.000731, {1.0f, 1.41421356f, 3.92f, 5.5437212f});
  x.insert(x.end(), more.begin(), more.end());
  for (float v : {1e-45f, -1e-45f, 1.17e-38f, -1.17e-38f}) x.push_back(v);  // subnormal and smallest normal
  auto same_bits = [](const std::vector<float>& a, const std::vector<float>& b) {
    return a.size() == b.size() && std::memcmp(a.data(), b.data(), a.size() * sizeof(float)) == 0;
  };
  CHECK(same_bits(map_each(sets[0].quick_gelu, x), map_each(sets[1].quick_gelu, x)));
  CHECK(same_bits(map_each(sets[0].erf, x), map_each(sets[1].erf, x)));
  CHECK(same_bits(map_each(sets[0].gelu, x), map_each(sets[1].gelu, x)));
}
#endif
