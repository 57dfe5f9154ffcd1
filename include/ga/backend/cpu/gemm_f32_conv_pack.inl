// The packing of a convolution's implicit B, shared by the packed f32 product's leaves
// (gemm_f32_avx512.hpp, gemm_f32_avx2.hpp): each includes this file inside its own
// namespace, with GA_F32_TARGET its target attribute, so that the one text is compiled for
// each instruction set and inlines that set's kNR, copy_run, zero_row and copy_row, and its
// row halves (RowHalf, LaneMask, kHalfLanes, lane_range, zero_half, merge_lanes, store_halves).
// No include guard: it is meant to be included once per leaf namespace.

/// Packs rows k in [k0, k0 + kc) and columns n in [n0, n0 + nc) of a convolution's
/// implicit B (src.images set) as pack_panels packs B^T: kNR-wide k-major panels, columns
/// past nc zero.
///
/// A pointwise window: B's row k is channel k of each image, so for each k (outermost, so
/// that each channel is read in order, as the hardware prefetcher expects) every panel is
/// copied from one image, or two where it spans an image's end.
///
/// Other windows: each panel's columns are cut once into runs that stay in one output row
/// of one image; then for each k every run is one strided read of an image row, clipped to
/// the columns whose input lies inside the image (the rest stays zero: the padding). Panel
/// by panel: a panel's rows k read the same few image rows again and again (3 x 3 windows
/// step along kj, then ki), which then stay in L1. With unit column stride (every 3 x 3
/// convolution of the towers) the clipped runs depend on the window offset (ki, kj) but not
/// on the channel, so pack_conv_panels_unit_stride works them out once per panel, as masked
/// loads into the row's two halves, and every channel reuses them: a row then costs a few
/// masked loads and two stores (about 3x faster than clipping each run again).
GA_F32_TARGET inline void pack_conv_panels(const BSource& src, int64_t k0, int64_t kc, int64_t n0, int64_t nc,
                                               float* out);

/// The largest window (kh * kw offsets) pack_conv_panels_unit_stride takes.
inline constexpr int64_t kUnitStrideMaxOffsets = 25;

/// pack_conv_panels for a window of unit column stride (g.sw == 1) and at most
/// kUnitStrideMaxOffsets offsets.
GA_F32_TARGET inline void pack_conv_panels_unit_stride(const BSource& src, int64_t k0, int64_t kc, int64_t n0,
                                                           int64_t nc, float* out) {
  const Window2d& g = src.window;
  const int64_t KK = g.kh * g.kw, plane = src.H * src.W;
  // One masked load into the half whose list holds it: its lanes `mask`, lane l read from
  // the channel's plane (in the first image's coordinates) at `offset` + l. The offset may
  // point before the run's first column (by the lanes in front of it, which are masked off
  // and never read).
  struct Load {
    LaneMask mask;
    int64_t offset;
  };
  // Per window offset o: loads[o][0, in_low[o]) fill the low half, [in_low[o], count[o]) the high.
  Load loads[kUnitStrideMaxOffsets][kNR + 2];
  int count[kUnitStrideMaxOffsets], in_low[kUnitStrideMaxOffsets];
  for (int64_t q = 0; q * kNR < nc; ++q) {
    const int64_t cols = std::min(kNR, nc - q * kNR);
    for (int64_t o = 0; o < KK; ++o) {
      const int64_t ki = o / g.kw, kj = o % g.kw;
      count[o] = 0;
      for (int half = 0; half < 2; ++half) {
        if (half == 1) in_low[o] = count[o];
        // The runs of this half's columns that stay in one output row of one image.
        for (int64_t slot = half * kHalfLanes; slot < std::min(cols, (half + 1) * kHalfLanes);) {
          const int64_t n = n0 + q * kNR + slot, p = n % src.P, oh = p / src.OW, ow = p % src.OW;
          const int64_t len = std::min(std::min(cols, (half + 1) * kHalfLanes) - slot, src.OW - ow);
          const int64_t ih = oh * g.sh - g.ph + ki, iw = ow - g.pw + kj;  // the run's first input
          // Its columns t in [t_lo, t_hi) read inside the image: 0 <= iw + t < W.
          const int64_t t_lo = std::max<int64_t>(0, -iw), t_hi = std::min(len, src.W - iw);
          if (ih >= 0 && ih < src.H && t_lo < t_hi) {
            const int64_t lane = slot - half * kHalfLanes;  // lane of the run's column t = 0
            loads[o][count[o]++] = Load{lane_range(lane + t_lo, lane + t_hi),
                                        n / src.P * src.image_size + ih * src.W + iw - lane};
          }
          slot += len;
        }
      }
    }
    float* o_panel = out + q * kNR * kc;
    int64_t c = k0 / KK, o = k0 % KK;
    for (int64_t k = 0; k < kc; ++k) {
      const float* channel = src.images + c * plane;
      const Load* l = loads[o];
      RowHalf lo = zero_half(), hi = zero_half();
      for (int i = 0; i < in_low[o]; ++i) lo = merge_lanes(lo, l[i].mask, channel + l[i].offset);
      for (int i = in_low[o]; i < count[o]; ++i) hi = merge_lanes(hi, l[i].mask, channel + l[i].offset);
      store_halves(o_panel + k * kNR, lo, hi);
      if (++o == KK) {
        o = 0;
        ++c;
      }
    }
  }
}

GA_F32_TARGET inline void pack_conv_panels(const BSource& src, int64_t k0, int64_t kc, int64_t n0, int64_t nc,
                                               float* out) {
  const Window2d& g = src.window;
  const int64_t KK = g.kh * g.kw, plane = src.H * src.W;
  if (g.sw == 1 && !g.pointwise() && KK <= kUnitStrideMaxOffsets) {
    pack_conv_panels_unit_stride(src, k0, kc, n0, nc, out);
    return;
  }
  if (g.pointwise()) {
    for (int64_t k = 0; k < kc; ++k) {
      const int64_t channel = (k0 + k) * plane;
      for (int64_t col = 0; col < nc; col += kNR) {
        float* dst = out + col * kc + k * kNR;
        const int64_t n = n0 + col, p = n % src.P, cols = std::min(kNR, nc - col);
        const float* s = src.images + n / src.P * src.image_size + channel + p;
        if (cols == kNR && p + kNR <= src.P) {  // the common case: kNR values in a row
          copy_row(dst, s);
          continue;
        }
        zero_row(dst);
        for_each_image_piece(src.P, src.image_size, n, cols,
                             [&](int64_t offset, int64_t pp, int64_t slot, int64_t len) {
                               copy_run(src.images + offset + channel + pp, 1, len, dst + slot);
                             });
      }
    }
    return;
  }
  struct Run {
    const float* image;         // the run's image
    int64_t slot, len, oh, ow;  // panel columns [slot, slot + len) are output (oh, ow .. ow + len)
  };
  for (int64_t q = 0; q * kNR < nc; ++q) {
    Run runs[kNR];
    int nruns = 0;
    const int64_t cols = std::min(kNR, nc - q * kNR);
    for (int64_t slot = 0; slot < cols;) {
      const int64_t n = n0 + q * kNR + slot, p = n % src.P, oh = p / src.OW, ow = p % src.OW;
      const int64_t len = std::min(cols - slot, src.OW - ow);
      runs[nruns++] = Run{src.images + n / src.P * src.image_size, slot, len, oh, ow};
      slot += len;
    }
    float* o = out + q * kNR * kc;
    int64_t c = k0 / KK, ki = k0 % KK / g.kw, kj = k0 % g.kw;
    for (int64_t k = 0; k < kc; ++k) {
      float* dst = o + k * kNR;
      zero_row(dst);
      // Output columns whose input column lies inside the image: [ow_lo, ow_hi).
      const int64_t ow_lo = std::max<int64_t>(0, (g.pw - kj + g.sw - 1) / g.sw);
      const int64_t ow_hi = (src.W + g.pw - kj + g.sw - 1) / g.sw;
      for (int r = 0; r < nruns; ++r) {
        const Run& run = runs[r];
        const int64_t ih = run.oh * g.sh - g.ph + ki;
        const int64_t a = std::max(run.ow, ow_lo), b = std::min(run.ow + run.len, ow_hi);
        if (ih < 0 || ih >= src.H || a >= b) continue;
        copy_run(run.image + c * plane + ih * src.W + a * g.sw - g.pw + kj, g.sw, b - a,
                 dst + run.slot + (a - run.ow));
      }
      if (++kj == g.kw) {
        kj = 0;
        if (++ki == g.kh) {
          ki = 0;
          ++c;
        }
      }
    }
  }
}
