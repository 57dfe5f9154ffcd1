// The f32 activations on whole vectors, one text for each x86 instruction set:
// activation_simd.hpp includes it inside namespace activation_avx512 and again inside
// activation_avx2, each of which first defines GA_ACT_TARGET (its target attribute), the
// vector type V, kLanes and the primitives the text uses (set1, add, sub, mul, fmadd,
// fnmadd, vmin, vmax: x86's MINPS / MAXPS, the second operand where either is nan; round:
// to the nearest integer, ties to even; scale2(p, n) = p 2^n for integral n, as VSCALEFPS
// computes it; abs; with_sign_of(m, s): m with s's sign bit ORed in; where_ge(x, c, a, b): b
// where x >= c (false for nan), else a; load_first / store_first(p, v, n): the first n
// lanes). Every operation is the same IEEE operation in both sets, in the same order, so the
// two give the same bits. No include guard: it is meant to be included once per namespace.

/// x * sigmoid(1.702 x) = x / (1 + e^t), t = -1.702 x, in each lane: within 3 ulp of
/// x / (1 + e^t) for t rounded to f32 (as PyTorch's f32 computes t; e^t magnifies that
/// rounding, to some 80 ulp of the exact value at t = 87), or within 2e-37 of it where it is
/// that small. e^t = 2^n e^r with n the integer nearest t / ln 2 and r = t - n ln 2 in
/// [-ln 2 / 2, ln 2 / 2] (ln 2 in two parts), e^r by a degree-7 polynomial (Cephes' expf
/// coefficients), 2^n by scale2. t is clamped to [-87.3, 128]: below -87.3, e^t is under the
/// smallest normal f32 and 1 + e^t rounds to 1 (the clamp keeps the arithmetic off
/// subnormals); past 88.8 (x below -52.1), e^t is inf and the result -0, as PyTorch's
/// x * sigmoid(1.702 x) gives there (the clamp keeps a finite x off inf - inf). x = -inf
/// gives nan, as there; nan gives nan.
GA_ACT_TARGET inline V quick_gelu(V x) {
  const V t = vmin(vmax(mul(x, set1(-1.702f)), set1(-87.3f)), set1(128.0f));
  const V n = round(mul(t, set1(1.44269504088896341f)));
  V r = fnmadd(n, set1(0.693359375f), t);  // t - n * ln2_hi: exact
  r = fnmadd(n, set1(-2.12194440e-4f), r);  // - n * ln2_lo
  V p = set1(1.9875691500e-4f);
  p = fmadd(p, r, set1(1.3981999507e-3f));
  p = fmadd(p, r, set1(8.3334519073e-3f));
  p = fmadd(p, r, set1(4.1665795894e-2f));
  p = fmadd(p, r, set1(1.6666665459e-1f));
  p = fmadd(p, r, set1(5.0000001201e-1f));
  p = fmadd(p, mul(r, r), add(r, set1(1.0f)));  // e^r
  const V e = scale2(p, n);                     // 2^n e^r; inf past the f32 range
  return div(x, add(e, set1(1.0f)));
}

/// erf(z) in each lane, within 8e-8 of the exact value (1.3 ulp of the results near
/// |z| = 1; 0.5 ulp is the best an f32 can hold), odd in z, +-1 exactly from |z| = 3.92 on
/// (where erf rounds to +-1 in f32), nan for nan. Two polynomials, both evaluated and one
/// chosen per lane, with coefficients fitted by tests/fixtures/gen_erf_coefficients.py
/// (near-minimax, Lawson's reweighted least squares, then rounded to f32):
/// - |z| < 1: z + z P(z^2), P of degree 6. Written as a correction to z, so that the result's
///   rounding error is about that of one operation;
/// - 1 <= |z| < 3.92: sign(z) (1 - Q(s)), Q of degree 14 approximating erfc, in s = (|z| -
///   2.46) / 1.46, which maps the interval onto [-1, 1], where Horner's rule stays accurate.
GA_ACT_TARGET inline V erf_approx(V z) {
  static constexpr float kCore[] = {7.647007442e-05f,  -7.942323573e-04f, 5.179746076e-03f, -2.684859000e-02f,
                                    1.128342971e-01f,  -3.761260509e-01f, 1.283791512e-01f};
  static constexpr float kTail[] = {-2.181174350e-04f, -1.456019163e-05f, 1.623501652e-03f,  -1.582308090e-03f,
                                    -3.334041918e-03f, 9.024772793e-03f,  -7.349440828e-03f, -6.491458975e-03f,
                                    2.844818495e-02f,  -4.510812089e-02f, 4.504719004e-02f,  -3.059980646e-02f,
                                    1.392898709e-02f,  -3.878111020e-03f, 5.033535999e-04f};
  const V w = abs(z), u = mul(z, z);
  V p = set1(kCore[0]);
#pragma GCC unroll 8
  for (int i = 1; i < 7; ++i) p = fmadd(p, u, set1(kCore[i]));
  const V core = fmadd(z, p, z);
  const V s = fmadd(w, set1(6.849315166e-01f), set1(-1.684931517e+00f));
  V q = set1(kTail[0]);
#pragma GCC unroll 16
  for (int i = 1; i < 15; ++i) q = fmadd(q, s, set1(kTail[i]));
  const V tail = with_sign_of(where_ge(w, 3.92f, sub(set1(1.0f), q), set1(1.0f)), z);
  return where_ge(w, 1.0f, core, tail);
}

/// GELU, x Phi(x) = (x / 2) (1 + erf(x / sqrt 2)), in each lane, in PyTorch's order of f32
/// operations (x / sqrt 2 rounded, then (x * 0.5) * (1 + erf)): within 0.6e-7 |x| + 2 ulp of
/// the exact value (the first term is erf's error, which 1 + erf turns into an absolute
/// one, as PyTorch's f32 formula does). Edge values as PyTorch's: -0 for x below -5.55
/// (where erf rounds to -1), inf for inf, nan for -inf and nan.
GA_ACT_TARGET inline V gelu(V x) {
  const V e = erf_approx(mul(x, set1(0.70710678118654752f)));
  return mul(mul(x, set1(0.5f)), add(set1(1.0f), e));
}

/// y[i] = F(x[i]) for i < n, F one of the functions above (x and y may be the same array;
/// a partial last vector is read and written lane by lane, never past n).
template <V (*F)(V)>
GA_ACT_TARGET inline void map(const float* x, float* y, int64_t n) {
  int64_t i = 0;
  for (; i + kLanes <= n; i += kLanes) store(y + i, F(load(x + i)));
  if (i < n) store_first(y + i, F(load_first(x + i, n - i)), n - i);
}
