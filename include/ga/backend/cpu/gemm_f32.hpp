// The CPU backend's own f32 matrix product for x86-64 CPUs: a packed, blocked GEMM
// (Goto/BLIS structure) whose register micro-kernel and packing (the "leaves") come in two
// instruction sets: AVX-512F (a 12 x 32 tile of zmm FMAs, gemm_f32_avx512.hpp) and AVX2 with
// FMA (6 x 16 of ymm, gemm_f32_avx2.hpp). The blocking, threading, epilogue and the
// convolution's implicit im2col (this file) are one template over the leaves. Eigen's GEMM
// stays the fallback (other CPUs, f64, tiny products, and on request). The kernels are
// compiled with per-function target attributes, so a portable build still carries them and
// uses the best one the CPU (and the OS) allow.
#pragma once
#include <algorithm>
#include <cstdint>
#include <cstdlib>
#include <cstring>
#include <memory>
#include <string>

#include "cpu_backend.hpp"
#include "cpu_features.hpp"

namespace ga::backend::cpu {

/// Who computes f32 matrix products. Auto: where the CPU runs AVX-512, its kernels where the
/// product gains from them (the dot-product form, gemm_f32_dot.hpp, for few rows whose
/// operands both run along k; the packed kernel for other big enough products); else, where
/// it runs AVX2 and FMA, the AVX2 packed kernel for big enough products; Eigen otherwise.
/// Avx512: the AVX-512 packed kernel for every product (tests). Avx512Dot: the dot-product
/// form for every product whose operands both run along k, the AVX-512 packed kernel for the
/// rest (tests). Avx2: the AVX2 packed kernel for every product (tests; AVX-512 CPUs run it
/// too). Eigen: Eigen's GEMM for every product.
enum class F32Kernel { Auto, Avx512, Avx512Dot, Avx2, Eigen };

inline const char* f32_kernel_name(F32Kernel k) {
  switch (k) {
    case F32Kernel::Auto: return "auto";
    case F32Kernel::Avx512: return "avx512";
    case F32Kernel::Avx512Dot: return "avx512dot";
    case F32Kernel::Avx2: return "avx2";
    case F32Kernel::Eigen: return "eigen";
  }
  return "?";
}

namespace detail {

/// The initial setting: Auto, unless the environment variable GA_GEMM_F32 says eigen, or
/// avx512, avx512dot or avx2 on a machine that runs them. Read once, at the first f32
/// product.
inline F32Kernel initial_f32_kernel() {
  const char* env = std::getenv("GA_GEMM_F32");
  if (!env) return F32Kernel::Auto;
  const std::string v = env;
  if (v == "eigen") return F32Kernel::Eigen;
  if (v == "avx512" && f32_avx512_supported()) return F32Kernel::Avx512;
  if (v == "avx512dot" && f32_avx512_supported()) return F32Kernel::Avx512Dot;
  if (v == "avx2" && f32_avx2_supported()) return F32Kernel::Avx2;
  return F32Kernel::Auto;
}

inline F32Kernel& f32_kernel_setting() {
  static F32Kernel k = initial_f32_kernel();
  return k;
}

}  // namespace detail

/// Whether this machine (CPU, OS, and this build's compiler) can run kernel k. Auto and
/// Eigen always can.
inline bool f32_kernel_supported(F32Kernel k) {
  if (k == F32Kernel::Avx512 || k == F32Kernel::Avx512Dot) return detail::f32_avx512_supported();
  if (k == F32Kernel::Avx2) return detail::f32_avx2_supported();
  return true;
}

/// Selects who computes every later f32 product (overrides GA_GEMM_F32). Not thread-safe
/// against products running concurrently; meant for tests, benchmarks and start-up. Throws
/// ValueError when the machine cannot run k.
inline void set_f32_gemm_kernel(F32Kernel k) {
  GA_CHECK(f32_kernel_supported(k), ValueError, "set_f32_gemm_kernel: the ", f32_kernel_name(k),
           " kernel is not supported on this machine (CPU, OS or compiler)");
  detail::f32_kernel_setting() = k;
}

/// The current setting (Auto, Avx512, Avx512Dot or Eigen).
inline F32Kernel f32_gemm_kernel() { return detail::f32_kernel_setting(); }

/// Who computes an f32 product [M, K] @ [K, N] under the current setting: Avx512 or Avx2
/// (a packed kernel), Avx512Dot (the dot-product form; only when k_contiguous: A's rows and
/// B's columns both run along k, as in x @ w^T) or Eigen.
inline F32Kernel f32_gemm_path(int64_t M, int64_t N, int64_t K, bool k_contiguous = false) {
  const F32Kernel k = f32_gemm_kernel();  // set only to what this machine runs
  if (k == F32Kernel::Eigen || k == F32Kernel::Avx2 || k == F32Kernel::Avx512) return k;
  if (k == F32Kernel::Avx512Dot) return k_contiguous ? k : F32Kernel::Avx512;
  // Auto. Smaller or thinner products (a vector-matrix product, 40^3) spend more on packing
  // than a kernel saves, and with N < 64 (a 7 x 7 convolution) a 32-column block wastes too
  // much and A, packed whole, is used too few times: there Eigen is faster (measured on the
  // development machine).
  const bool big = M >= 4 && N >= 64 && double(M) * double(N) * double(K) >= double(1 << 17);
  if (!detail::f32_avx512_supported()) return big && detail::f32_avx2_supported() ? F32Kernel::Avx2 : F32Kernel::Eigen;
  // Up to 64 rows the dot-product form beats the packed kernel once each dot product is
  // 256 deep or more (with the weight read from memory, as in a forward pass; measured on
  // the development machine, bench/RESULTS.md); shallower, its final sums across lanes cost
  // too much.
  if (k_contiguous && M <= 64 && K >= 256) return F32Kernel::Avx512Dot;
  return big ? F32Kernel::Avx512 : F32Kernel::Eigen;
}

}  // namespace ga::backend::cpu

#if GA_EMIT_CPU_KERNELS && GA_X86_F32_KERNELS
#include "epilogue.hpp"
#include "host_cache.hpp"
#include "parallel.hpp"

namespace ga::backend::cpu::f32_gemm {

// ---- what the leaves and the blocked product share ----

/// One matrix operand [rows, cols]: element (i, j) is at p[i * rs + j * cs].
struct Operand {
  const float* p;
  int64_t rs, cs;
};

/// B [K, N] of one product where it lies. Either a strided matrix (`matrix`), or, when
/// `images` is set, the im2col matrices of a batch of images [C, H, W] (contiguous, one
/// after the other) under `window`, side by side: column n is output position p = n % P
/// = (oh, ow) of image i = n / P, and B(k, n) for k = (c, ki, kj) is
/// image_i[c, oh*sh - ph + ki, ow*sw - pw + kj], zero outside the image. The second is read
/// by the packing directly, never materialised (an implicit GEMM): each packed value is
/// loaded from the image once, where im2col would write it to memory and the packing read
/// it back; and one product covers the whole batch, so that a tile of C may span two images
/// (a 7 x 7 output has 49 columns: alone, two 32-column panels hold it at 77% use).
struct BSource {
  Operand matrix{nullptr, 0, 0};
  const float* images = nullptr;
  int64_t image_size = 0;        // C * H * W: from one image to the next
  int64_t H = 0, W = 0, OW = 0;  // the image's height and width; the output's width
  int64_t P = 0;                 // output positions (columns) per image
  Window2d window;

  static BSource strided(const Operand& m) {
    BSource b;
    b.matrix = m;
    return b;
  }
  static BSource conv(const float* images, int64_t C, int64_t H, int64_t W, const Window2d& g) {
    BSource b;
    b.images = images;
    b.image_size = C * H * W;
    b.window = g;
    b.P = g.out_h(H) * g.out_w(W);
    b.H = H;
    b.W = W;
    b.OW = g.out_w(W);
    return b;
  }
};

/// Calls f(offset, p, slot, len) for each piece of the batch columns [col, col + cols) (images
/// of per_image columns side by side, image_stride floats apart) that lies in one image:
/// columns [col + slot, col + slot + len) are that image's columns [p, p + len), the image at
/// `offset` floats from the first.
template <class F>
inline void for_each_image_piece(int64_t per_image, int64_t image_stride, int64_t col, int64_t cols, const F& f) {
  for (int64_t slot = 0; slot < cols;) {
    const int64_t n = col + slot, p = n % per_image, len = std::min(cols - slot, per_image - p);
    f(n / per_image * image_stride, p, slot, len);
    slot += len;
  }
}

/// A product's epilogue (backend::MatmulEpilogue) for one C [M, N]: what is added to the
/// results and how they are activated, as raw pointers. Null pointers add nothing.
struct Epilogue {
  const float* row_bias = nullptr;  // [M]
  const float* col_bias = nullptr;  // [N]
  const float* residual = nullptr;  // [M, N], row stride ldr
  int64_t ldr = 0;
  Activation activation = Activation::None;

  bool empty() const { return !row_bias && !col_bias && !residual && activation == Activation::None; }

  /// Item i's part of e for a batch of [M, N] results stored one after another (row stride
  /// N): the bias is shared by the batch, the residual is the item's own.
  static Epilogue for_item(const MatmulEpilogue& e, int64_t M, int64_t N, int64_t i) {
    const float* bias = e.bias.defined() ? static_cast<const float*>(e.bias.raw_data()) : nullptr;
    const float* residual =
        e.residual.defined() ? static_cast<const float*>(e.residual.raw_data()) + i * M * N : nullptr;
    return Epilogue{e.bias_per_row ? bias : nullptr, e.bias_per_row ? nullptr : bias, residual, N, e.activation};
  }
};

/// The part of an Epilogue the micro-kernel applies in registers, for one register tile:
/// every pointer at the tile's first row / column.
struct TileEpilogue {
  const float* row_bias;
  const float* col_bias;
  const float* residual;
  int64_t ldr;
  bool relu;
};

using MicroKernel = void (*)(int64_t, const float*, const float*, int64_t, float*, int64_t, int64_t, bool,
                            const TileEpilogue*);

/// Asks for part `part` of `parts` of the cache lines of X's rows [r0, r1) x depth [k0, k0 +
/// kc) (X(i, k) at p[i * rs + k], rows along k) to be brought into L2.
inline void prefetch_part(const Operand& X, int64_t r0, int64_t r1, int64_t k0, int64_t kc, int64_t part,
                          int64_t parts) {
  const int64_t per_row = (kc + 15) / 16, lines = (r1 - r0) * per_row;
  for (int64_t l = lines * part / parts; l < lines * (part + 1) / parts; ++l)
    _mm_prefetch(reinterpret_cast<const char*>(X.p + (r0 + l / per_row) * X.rs + k0 + l % per_row * 16), _MM_HINT_T1);
}

}  // namespace ga::backend::cpu::f32_gemm

#include "gemm_f32_avx2.hpp"
#include "gemm_f32_avx512.hpp"

namespace ga::backend::cpu::f32_gemm {

// ---- the blocked product, on the leaves of one instruction set (Leaves: Avx512Leaves or
// Avx2Leaves; their kMR x kNR register tile, kKC-deep k blocks and kNC-wide B blocks) ----

/// Packs B's block k in [k0, k0 + kc), n in [n0, n0 + nc) as kNR-wide panels of B^T.
template <class Leaves>
inline void pack_b(const BSource& B, int64_t k0, int64_t kc, int64_t n0, int64_t nc, float* out) {
  if (B.images) {
    Leaves::pack_conv_panels(B, k0, kc, n0, nc, out);
    return;
  }
  // B^T's block: rows n (stride B.cs), depth k (stride B.rs).
  const Operand& m = B.matrix;
  Leaves::pack_panels(Operand{m.p + k0 * m.rs + n0 * m.cs, m.cs, m.rs}, nc, kc, Leaves::kNR, out);
}

/// The packed A: for each k block kb (kKC deep, the last shorter), panels of kMR rows; panel
/// mp of block kb at kb * kKC * Mpad + mp * kMR * kc(kb).
template <class Leaves>
struct PackedA {
  static constexpr int64_t kMR = Leaves::kMR, kKC = Leaves::kKC;
  float* p;
  int64_t M, K, Mpad;
  const float* panel(int64_t kb, int64_t mp) const {
    return p + kb * kKC * Mpad + mp * kMR * std::min(kKC, K - kb * kKC);
  }
};

template <class Leaves>
inline size_t packed_a_floats(int64_t M, int64_t K) {
  return size_t((M + Leaves::kMR - 1) / Leaves::kMR * Leaves::kMR * K);
}

/// Packs A's row panels [mp0, mp1) for every k block.
template <class Leaves>
inline void pack_a(const Operand& A, const PackedA<Leaves>& pa, int64_t mp0, int64_t mp1) {
  constexpr int64_t kMR = Leaves::kMR, kKC = Leaves::kKC;
  if (mp0 >= mp1) return;
  for (int64_t k0 = 0; k0 < pa.K; k0 += kKC) {
    const int64_t kc = std::min(kKC, pa.K - k0);
    const Operand src{A.p + mp0 * kMR * A.rs + k0 * A.cs, A.rs, A.cs};
    Leaves::pack_panels(src, std::min(pa.M, mp1 * kMR) - mp0 * kMR, kc, kMR,
                        const_cast<float*>(pa.panel(k0 / kKC, mp0)));
  }
}

/// Where C [M, N] lies: column n is column n % per_image of image n / per_image, whose
/// [M, per_image] block (row stride ldc) starts image_stride floats after the previous
/// image's. A plain matrix is one image (per_image = N). The epilogue's residual is laid out
/// as C (its row stride Epilogue::ldr, the same image_stride).
struct CLayout {
  float* p;
  int64_t ldc, per_image, image_stride;

  static CLayout matrix(float* p, int64_t ldc, int64_t N) { return CLayout{p, ldc, N, 0}; }
};

/// A register tile whose columns span two or more images (C.per_image < N): computed into a
/// contiguous copy (what is there gathered first when accumulating; the residual gathered
/// too) with the same kernel and epilogue, so every value gets the same operations as in an
/// unsplit tile, then scattered back.
template <class Leaves>
inline void run_split_tile(MicroKernel kernel, int64_t kc, const float* a, const float* b, const CLayout& C,
                           int64_t m, int64_t rows, int64_t col, int64_t cols, bool accumulate, const Epilogue* e) {
  constexpr int64_t kMR = Leaves::kMR, kNR = Leaves::kNR;
  alignas(64) float tile[kMR * kNR];
  alignas(64) float residual[kMR * kNR];
  auto gather = [&](const float* src, int64_t ld, float* dst) {
    for_each_image_piece(C.per_image, C.image_stride, col, cols,
                         [&](int64_t offset, int64_t p, int64_t slot, int64_t len) {
                           for (int64_t r = 0; r < rows; ++r)
                             std::memcpy(dst + r * kNR + slot, src + offset + (m + r) * ld + p,
                                         size_t(len) * sizeof(float));
                         });
  };
  if (accumulate) gather(C.p, C.ldc, tile);
  TileEpilogue tile_epilogue{};
  if (e) {
    if (e->residual) gather(e->residual, e->ldr, residual);
    tile_epilogue = TileEpilogue{e->row_bias ? e->row_bias + m : nullptr, e->col_bias ? e->col_bias + col : nullptr,
                                 e->residual ? residual : nullptr, kNR, e->activation == Activation::Relu};
  }
  kernel(kc, a, b, kNR, tile, kNR, cols, accumulate, e ? &tile_epilogue : nullptr);
  if (e && e->activation != Activation::None && e->activation != Activation::Relu)
    for (int64_t r = 0; r < rows; ++r) detail::activate_row<float>(e->activation, tile + r * kNR, cols);
  for_each_image_piece(C.per_image, C.image_stride, col, cols,
                       [&](int64_t offset, int64_t p, int64_t slot, int64_t len) {
                         for (int64_t r = 0; r < rows; ++r)
                           std::memcpy(C.p + offset + (m + r) * C.ldc + p, tile + r * kNR + slot,
                                       size_t(len) * sizeof(float));
                       });
}


/// C rows [m0, m1) x columns [n0, n1) (m0 a multiple of kMR, n0 of kNR) on this thread, the
/// epilogue applied as each tile gets its last k block; bbuf has room for a kKC x kNC block
/// of B. With `own_a` (A [M, K] where it lies), this thread packs A's panels itself, each
/// just before its first use, and while a panel is multiplied the next one's rows are
/// prefetched: the weight of a convolution on few positions is read from memory under the
/// arithmetic instead of in a burst before it (its packing then cost about 6% of RN50 at
/// batch 1, the time of reading the weights).
template <class Leaves>
inline void run_block(const PackedA<Leaves>& pa, const BSource& B, const CLayout& C, int64_t m0, int64_t m1, int64_t n0,
                      int64_t n1, float* bbuf, const Epilogue& e, const Operand* own_a = nullptr) {
  constexpr int64_t kMR = Leaves::kMR, kNR = Leaves::kNR, kKC = Leaves::kKC, kNC = Leaves::kNC;
  if (m0 >= m1 || n0 >= n1) return;
  const int64_t K = pa.K;
  // A shallow product takes wider B blocks (as many bytes), so that C is written in long runs.
  const int64_t block_cols = std::max(kNC, kKC * kNC / std::min(K, kKC) / kNR * kNR);
  for (int64_t nb = n0; nb < n1; nb += block_cols) {
    const int64_t nc = std::min(block_cols, n1 - nb);
    for (int64_t k0 = 0; k0 < K; k0 += kKC) {
      const int64_t kc = std::min(kKC, K - k0);
      pack_b<Leaves>(B, k0, kc, nb, nc, bbuf);
      for (int64_t m = m0; m < m1; m += kMR) {
        const int64_t rows = std::min(kMR, m1 - m);
        const float* a = pa.panel(k0 / kKC, m / kMR);
        const bool packing = own_a && nb == n0;  // A's panels are packed during the first column block
        if (packing)
          Leaves::pack_panels(Operand{own_a->p + m * own_a->rs + k0 * own_a->cs, own_a->rs, own_a->cs}, rows, kc,
                              kMR, const_cast<float*>(a));
        // The next panel to pack: the next rows of this k block, else the first of the next.
        const int64_t next_m = m + kMR < m1 ? m + kMR : m0, next_k = m + kMR < m1 ? k0 : k0 + kKC;
        const bool prefetching = packing && own_a->cs == 1 && next_k < K;
        const int64_t tiles = (nc + kNR - 1) / kNR;
        const MicroKernel full = Leaves::kernel(rows, kNR), partial = Leaves::kernel(rows, kNR / 2);
        const bool last = k0 + kc == K && !e.empty();
        for (int64_t n = 0; n < nc; n += kNR) {
          if (prefetching)
            prefetch_part(*own_a, next_m, std::min(m1, next_m + kMR), next_k, std::min(kKC, K - next_k), n / kNR,
                          tiles);
          const int64_t cols = std::min(kNR, nc - n), col = nb + n;
          const MicroKernel kernel = cols > kNR / 2 ? full : partial;
          const float* b = bbuf + n * kc;
          const int64_t p = col % C.per_image, image_offset = col / C.per_image * C.image_stride;
          if (p + cols <= C.per_image) {  // the tile lies in one image
            float* c = C.p + image_offset + m * C.ldc + p;
            const TileEpilogue tile{e.row_bias ? e.row_bias + m : nullptr, e.col_bias ? e.col_bias + col : nullptr,
                                    e.residual ? e.residual + image_offset + m * e.ldr + p : nullptr, e.ldr,
                                    e.activation == Activation::Relu};
            kernel(kc, a, b, kNR, c, C.ldc, cols, k0 > 0, last ? &tile : nullptr);
            // Other activations on the tile just stored, while it is in L1.
            if (last && e.activation != Activation::None && e.activation != Activation::Relu)
              for (int64_t r = 0; r < rows; ++r) detail::activate_row<float>(e.activation, c + r * C.ldc, cols);
          } else {
            run_split_tile<Leaves>(kernel, kc, a, b, C, m, rows, col, cols, k0 > 0, last ? &e : nullptr);
          }
        }
      }
    }
  }
}

/// How `threads` threads share the product: a tm x tn grid over row panels and column
/// panels, chosen to minimise the busiest thread's multiply work plus its B packing (each
/// thread packs the B columns it uses; a B element costs about as much as 24 flops).
template <class Leaves>
inline void choose_grid(int64_t M, int64_t N, int threads, int& tm, int& tn) {
  constexpr int64_t kMR = Leaves::kMR, kNR = Leaves::kNR;
  const int64_t MP = (M + kMR - 1) / kMR, NP = (N + kNR - 1) / kNR;
  double best = 0;
  tm = 1;
  tn = 1;
  for (int m = 1; m <= threads; ++m) {
    if (threads % m) continue;
    const int n = threads / m;
    if (m > MP || n > NP) continue;
    const double rows = double(std::min(M, (MP + m - 1) / m * kMR));
    const double cols = double((NP + n - 1) / n * kNR);
    const double cost = rows * cols * 2 + cols * 24;
    if (best == 0 || cost < best) {
      best = cost;
      tm = m;
      tn = n;
    }
  }
}

/// C [M, N] (laid out as `C` says) = epilogue(A [M, K] @ B [K, N]) on `threads` threads,
/// K = pa.K >= 1. pa has room for A packed; pack false means A is already there (a weight
/// shared by a batch).
template <class Leaves>
inline void gemm(const Operand& A, const BSource& B, const CLayout& C, int64_t M, int64_t N, const PackedA<Leaves>& pa,
                 bool pack, int threads, const Epilogue& e) {
  constexpr int64_t kMR = Leaves::kMR, kNR = Leaves::kNR;
  constexpr int kMaxThreads = 256;
  threads = std::max(1, std::min(threads, kMaxThreads));
  int tm = 1, tn = 1;
  choose_grid<Leaves>(M, N, threads, tm, tn);
  threads = tm * tn;
  const int64_t MP = (M + kMR - 1) / kMR, NP = (N + kNR - 1) / kNR;
  // Threads that split the rows only (tn == 1) each use only their own rows of A: each packs
  // them itself as it goes (run_block's own_a). Otherwise the team packs A first.
  const bool own_a = pack && tn == 1;
  auto work = [&](int tid, float* bbuf) {
    const int64_t im = tid / tn, in = tid % tn;
    run_block<Leaves>(pa, B, C, MP * im / tm * kMR, std::min(M, MP * (im + 1) / tm * kMR), NP * in / tn * kNR,
              std::min(N, NP * (in + 1) / tn * kNR), bbuf, e, own_a ? &A : nullptr);
  };
  const size_t bbytes = size_t(Leaves::kKC * Leaves::kNC) * sizeof(float);
#ifdef _OPENMP
  if (threads > 1) {
    std::shared_ptr<Storage> bufs[kMaxThreads];
    for (int t = 0; t < threads; ++t) bufs[t] = HostBlockCache::instance().allocate(bbytes);
#pragma omp parallel num_threads(threads)
    {
      const int tid = omp_get_thread_num(), nth = omp_get_num_threads();
      if (pack && !own_a) {
        pack_a(A, pa, MP * tid / nth, MP * (tid + 1) / nth);
#pragma omp barrier
      }
      if (nth == threads) {
        work(tid, static_cast<float*>(bufs[tid]->data()));
      } else if (tid == 0) {  // fewer threads than asked for: do it all here
        for (int t = 0; t < threads; ++t) work(t, static_cast<float*>(bufs[0]->data()));
      }
    }
    return;
  }
#endif
  auto buf = HostBlockCache::instance().allocate(bbytes);
  if (pack && !own_a) pack_a(A, pa, 0, MP);
  for (int t = 0; t < threads; ++t) work(t, static_cast<float*>(buf->data()));
}


/// Runs run_range(lo, hi, threads) over the Bt products of a batch, each of `flops`: many
/// small products [lo, hi) per thread, one thread each; larger ones all in one call, each
/// product on every thread.
template <class F>
inline void for_each_product_range(int64_t Bt, double flops, const F& run_range) {
  int threads = get_num_threads();
#ifdef _OPENMP
  if (omp_in_parallel()) threads = 1;
#endif
  if (Bt > 1 && flops < 4e6 && threads > 1) {
    parallel_for(0, Bt, 1, [&](int64_t lo, int64_t hi) { run_range(lo, hi, 1); });
    return;
  }
  // Small products gain nothing from a second thread.
  run_range(0, Bt, flops < 2e6 ? 1 : threads);
}

/// out[i] = epilogue(A_i @ B_i) for i < Bt, out [Bt, M, N] contiguous f32, K >= 1, where
/// a_of(i) is the Operand A_i [M, K] and b_of(i) the BSource B_i [K, N]; a_shared says every
/// A_i is the same (a broadcast weight, packed once). Threads as for_each_product_range.
template <class Leaves, class AOf, class BOf>
inline void batched_gemm(int64_t Bt, int64_t M, int64_t N, int64_t K, const AOf& a_of, bool a_shared, const BOf& b_of,
                         float* cp, const MatmulEpilogue& epilogue) {
  auto run = [&](int64_t i, const PackedA<Leaves>& pa, bool pack, int threads) {
    gemm<Leaves>(a_of(i), b_of(i), CLayout::matrix(cp + i * M * N, N, N), M, N, pa, pack, threads,
         Epilogue::for_item(epilogue, M, N, i));
  };
  const size_t abytes = packed_a_floats<Leaves>(M, K) * sizeof(float);
  for_each_product_range(Bt, 2.0 * double(M) * double(N) * double(K), [&](int64_t lo, int64_t hi, int threads) {
    auto apack = HostBlockCache::instance().allocate(abytes);
    const PackedA<Leaves> pa{static_cast<float*>(apack->data()), M, K, (M + Leaves::kMR - 1) / Leaves::kMR * Leaves::kMR};
    for (int64_t i = lo; i < hi; ++i) run(i, pa, i == lo || !a_shared, threads);
  });
}

/// out[i] = epilogue(a[i] @ b[i]) for a [Bt, M, K], b [Bt, K, N] (f32, any strides, batch
/// stride 0 for a broadcast operand), out [Bt, M, N] contiguous f32 (see
/// backend::MatmulEpilogue).
template <class Leaves>
inline void matmul(const Tensor& a, const Tensor& b, const Tensor& out, const MatmulEpilogue& epilogue = {}) {
  const int64_t Bt = out.size(0), M = out.size(1), N = out.size(2), K = a.size(2);
  float* cp = static_cast<float*>(out.raw_data());
  if (out.numel() == 0) return;
  if (K == 0) {
    std::memset(cp, 0, size_t(out.numel()) * sizeof(float));
    apply_epilogue(out, epilogue);
    return;
  }
  detail::check_epilogue("matmul", out, epilogue);
  const Shape& as = a.strides();
  const Shape& bs = b.strides();
  const float* ap = static_cast<const float*>(a.raw_data());
  const float* bp = static_cast<const float*>(b.raw_data());
  batched_gemm<Leaves>(
      Bt, M, N, K, [&](int64_t i) { return Operand{ap + i * as[0], as[1], as[2]}; }, as[0] == 0 || Bt == 1,
      [&](int64_t i) { return BSource::strided(Operand{bp + i * bs[0], bs[1], bs[2]}); }, cp, epilogue);
}

/// The implicit-GEMM convolution: out[i] = epilogue(w @ im2col(x[i])) for x [Bt, C, H, W]
/// contiguous f32, w [O, C*kh*kw] f32 (any strides), out [Bt, O, OH*OW] contiguous f32
/// (window g; see backend::Backend::conv2d; a bias is one per output channel), as one
/// product w @ [im2col(x[0]) ... im2col(x[Bt-1])] whose columns are packed straight from the
/// images: the weight is packed once and a tile may span two images.
template <class Leaves>
inline void conv2d(const Tensor& x, const Tensor& w, const Window2d& g, const Tensor& out,
                   const MatmulEpilogue& epilogue = {}) {
  const int64_t Bt = x.size(0), C = x.size(1), H = x.size(2), W = x.size(3);
  const int64_t O = w.size(0), K = w.size(1), P = out.size(2);
  if (out.numel() == 0) return;
  GA_CHECK(K == C * g.kh * g.kw && K >= 1, ShapeError, "conv2d: weight ", shape_str(w.shape()), " does not hold ", C,
           " channels of a ", g.kh, "x", g.kw, " window");
  GA_CHECK(!epilogue.bias.defined() || epilogue.bias_per_row, ShapeError,
           "conv2d: the epilogue bias must be one per output channel (bias_per_row)");
  detail::check_epilogue("conv2d", out, epilogue);
  const float* bias = epilogue.bias.defined() ? static_cast<const float*>(epilogue.bias.raw_data()) : nullptr;
  const float* residual =
      epilogue.residual.defined() ? static_cast<const float*>(epilogue.residual.raw_data()) : nullptr;
  const Epilogue e{bias, nullptr, residual, P, epilogue.activation};
  int threads = get_num_threads();
#ifdef _OPENMP
  if (omp_in_parallel()) threads = 1;
#endif
  const int64_t N = Bt * P;
  // Small products gain nothing from a second thread.
  if (2.0 * double(O) * double(N) * double(K) < 2e6) threads = 1;
  auto apack = HostBlockCache::instance().allocate(packed_a_floats<Leaves>(O, K) * sizeof(float));
  const PackedA<Leaves> pa{static_cast<float*>(apack->data()), O, K, (O + Leaves::kMR - 1) / Leaves::kMR * Leaves::kMR};
  const Operand A{static_cast<const float*>(w.raw_data()), w.strides()[0], w.strides()[1]};
  gemm<Leaves>(A, BSource::conv(static_cast<const float*>(x.raw_data()), C, H, W, g),
       CLayout{static_cast<float*>(out.raw_data()), P, P, O * P}, O, N, pa, true, threads, e);
}

/// matmul above on the packed kernel `path` names (F32Kernel::Avx512 or Avx2).
inline void packed_matmul(F32Kernel path, const Tensor& a, const Tensor& b, const Tensor& out,
                          const MatmulEpilogue& epilogue) {
  if (path == F32Kernel::Avx2) matmul<Avx2Leaves>(a, b, out, epilogue);
  else matmul<Avx512Leaves>(a, b, out, epilogue);
}

/// conv2d above on the packed kernel `path` names (F32Kernel::Avx512 or Avx2).
inline void packed_conv2d(F32Kernel path, const Tensor& x, const Tensor& w, const Window2d& g, const Tensor& out,
                          const MatmulEpilogue& epilogue) {
  if (path == F32Kernel::Avx2) conv2d<Avx2Leaves>(x, w, g, out, epilogue);
  else conv2d<Avx512Leaves>(x, w, g, out, epilogue);
}

}  // namespace ga::backend::cpu::f32_gemm
#endif  // GA_EMIT_CPU_KERNELS && GA_X86_F32_KERNELS
