// Engine tests for tensors: dtypes and the f16/bf16 conversions, factories, views and
// aliasing, copies and conversions, printing, broadcasting, threading, large strided
// inputs, and the error reported for each kind of bad input. Every expected value is
// computed independently of the library (hand values, naive loops, bit-level references).
#include <doctest/doctest.h>

#include "test_util.hpp"

#include <algorithm>
#include <cmath>
#include <cstdint>
#include <cstring>
#include <limits>
#include <memory>
#include <sstream>
#include <string>
#include <vector>

#include <ga/tensor.hpp>

using namespace ga;

namespace {

using test::expect_error;

float bits_to_float(uint32_t u) {
  float f;
  std::memcpy(&f, &u, 4);
  return f;
}
uint32_t float_to_bits(float f) {
  uint32_t u;
  std::memcpy(&u, &f, 4);
  return u;
}

/// The value of an IEEE binary16 bit pattern, from its fields (NaN for NaN patterns).
double half_ref_value(uint16_t h) {
  const int s = h >> 15, e = (h >> 10) & 31, m = h & 1023;
  double v;
  if (e == 0) v = std::ldexp(double(m), -24);
  else if (e == 31) v = m ? std::numeric_limits<double>::quiet_NaN() : std::numeric_limits<double>::infinity();
  else v = std::ldexp(double(1024 + m), e - 25);
  return s ? -v : v;
}

/// Round-to-nearest-even of a finite double to a binary format with `mbits` explicit
/// mantissa bits, minimum normal exponent `emin` and largest finite value `maxv`;
/// computed with ldexp/nearbyint only. Overflow gives +-inf.
double ref_round(double x, int mbits, int emin, double maxv) {
  if (x == 0) return x;
  const double a = std::fabs(x);
  int e;
  std::frexp(a, &e);  // a = m * 2^e, m in [0.5, 1): the leading bit has weight 2^(e-1)
  const int lead = std::max(e - 1, emin);
  const double ulp = std::ldexp(1.0, lead - mbits);
  double r = std::nearbyint(a / ulp) * ulp;  // default rounding mode: to nearest, ties to even
  // Overflow: values at or beyond max + ulp/2 round to inf (a tie at max + ulp/2 goes to the
  // even neighbour, which is the power of two just above max, i.e. inf).
  if (r > maxv) r = std::numeric_limits<double>::infinity();
  return x < 0 ? -r : r;
}
double half_ref_round(double x) { return ref_round(x, 10, -14, 65504.0); }
double bf16_ref_round(double x) {
  return ref_round(x, 7, -126, std::ldexp(255.0, 120));  // (2 - 2^-7) * 2^127
}


/// Restores the thread count when a test ends.
struct ThreadRestore {
  int prev = get_num_threads();
  ~ThreadRestore() { set_num_threads(prev); }
};

}  // namespace

// ---------------------------------------------------------------------------------------
// dtypes and conversions

TEST_CASE("tensor: dtype sizes, names and classes") {
  CHECK(dtype_size(f32) == 4);
  CHECK(dtype_size(f64) == 8);
  CHECK(dtype_size(f16) == 2);
  CHECK(dtype_size(bf16) == 2);
  CHECK(dtype_size(i32) == 4);
  CHECK(dtype_size(i64) == 8);
  CHECK(dtype_size(u8) == 1);
  CHECK(dtype_size(b8) == 1);
  CHECK(sizeof(half) == 2);
  CHECK(sizeof(bfloat16) == 2);
  CHECK(std::string(dtype_name(f32)) == "f32");
  CHECK(std::string(dtype_name(bf16)) == "bf16");
  CHECK(std::string(dtype_name(b8)) == "bool");
  CHECK(is_floating(f16));
  CHECK(is_floating(bf16));
  CHECK_FALSE(is_floating(i32));
  CHECK(is_integral(u8));
  CHECK_FALSE(is_integral(b8));
  CHECK_FALSE(is_integral(f64));
  for (DType dt : {f32, f64, f16, bf16, i32, i64, u8, b8}) {
    Tensor t = zeros({3, 5}, dt);
    CHECK(t.dtype() == dt);
    CHECK(t.storage()->nbytes() == 15 * dtype_size(dt));
    CHECK(t.numel() == 15);
    CHECK(t.dim() == 2);
  }
  // Storage is 64-byte aligned.
  CHECK(reinterpret_cast<uintptr_t>(zeros({7}).raw_data()) % 64 == 0);
}

TEST_CASE("tensor: f16 to_float is exact for all 65536 bit patterns") {
  for (uint32_t b = 0; b < 65536; ++b) {
    const uint16_t h = static_cast<uint16_t>(b);
    const double ref = half_ref_value(h);
    const float got = half::to_float(h);
    if (std::isnan(ref)) {
      CHECK(std::isnan(got));
      continue;
    }
    if (double(got) != ref) {
      INFO("half bits 0x", std::hex, b);
      CHECK(double(got) == ref);
    }
    CHECK(std::signbit(got) == bool(b & 0x8000));
    // Round trip back to the same bits.
    if (half::from_float(got) != h) {
      INFO("round trip of half bits 0x", std::hex, b);
      CHECK(half::from_float(got) == h);
    }
  }
}

TEST_CASE("tensor: f16 from_float rounds to nearest even, overflows to inf, handles subnormals") {
  // Every midpoint between consecutive finite positive halves (including the one above
  // the largest finite half, 65520) must round to the neighbour with an even mantissa,
  // and the floats just below/above it to the nearer neighbour.
  int bad = 0;
  for (uint32_t h = 0; h < 0x7c00; ++h) {
    const double lo = half_ref_value(static_cast<uint16_t>(h));
    const double hi = h + 1 == 0x7c00 ? 65536.0 : half_ref_value(static_cast<uint16_t>(h + 1));
    const float mid = static_cast<float>((lo + hi) / 2);
    REQUIRE(double(mid) == (lo + hi) / 2);  // exactly representable in f32
    const uint16_t even = (h & 1) ? static_cast<uint16_t>(h + 1) : static_cast<uint16_t>(h);
    const float below = std::nextafter(mid, 0.0f), above = std::nextafter(mid, INFINITY);
    for (float sgn : {1.0f, -1.0f}) {
      const uint16_t s = sgn < 0 ? 0x8000 : 0;
      if (half::from_float(sgn * mid) != (even | s)) ++bad;
      if (half::from_float(sgn * below) != (h | s)) ++bad;
      if (half::from_float(sgn * above) != ((h + 1) | s)) ++bad;
    }
  }
  CHECK(bad == 0);

  // A sweep over float bit patterns against the ldexp/nearbyint reference.
  bad = 0;
  for (uint64_t u = 0; u < 0x100000000ull; u += 7919) {
    const float x = bits_to_float(static_cast<uint32_t>(u));
    if (std::isnan(x)) continue;
    const double ref = std::isinf(x) ? double(x) : half_ref_round(x);
    const float got = half::to_float(half::from_float(x));
    if (double(got) != ref || std::signbit(got) != std::signbit(x)) {
      if (bad++ < 5) {
        INFO("float bits 0x", std::hex, u, std::dec, " value ", x, " got ", got, " want ", ref);
        CHECK(false);
      }
    }
  }
  CHECK(bad == 0);

  // Specials by bit pattern.
  CHECK(half::from_float(INFINITY) == 0x7c00);
  CHECK(half::from_float(-INFINITY) == 0xfc00);
  CHECK(half::from_float(1e10f) == 0x7c00);
  CHECK(half::from_float(-70000.0f) == 0xfc00);
  CHECK(half::from_float(65504.0f) == 0x7bff);
  CHECK(half::from_float(65519.996f) == 0x7bff);
  CHECK(half::from_float(65520.0f) == 0x7c00);
  const uint16_t qn = half::from_float(std::numeric_limits<float>::quiet_NaN());
  CHECK((qn & 0x7c00) == 0x7c00);
  CHECK((qn & 0x3ff) != 0);
  CHECK(half::from_float(1.0f) == 0x3c00);
  CHECK(half::from_float(-2.0f) == 0xc000);
  CHECK(half::from_float(std::ldexp(1.0f, -24)) == 0x0001);          // smallest subnormal
  CHECK(half::from_float(std::ldexp(1.0f, -25)) == 0x0000);          // tie to even: 0
  CHECK(half::from_float(std::ldexp(3.0f, -26)) == 0x0001);          // 0.75 ulp -> 1 ulp
  CHECK(half::from_float(std::ldexp(3.0f, -25)) == 0x0002);          // 1.5 ulp tie -> 2 (even)
  CHECK(half::from_float(std::ldexp(5.0f, -25)) == 0x0002);          // 2.5 ulp tie -> 2 (even)
  CHECK(half::from_float(std::ldexp(1023.0f, -24)) == 0x03ff);       // largest subnormal
  CHECK(half::from_float(std::ldexp(1.0f, -14)) == 0x0400);          // smallest normal
  CHECK(half::from_float(std::ldexp(2047.0f, -25)) == 0x0400);       // tie rounds up into normals
  CHECK(half::from_float(-std::ldexp(1.0f, -30)) == 0x8000);         // underflow keeps the sign
  CHECK(half::from_float(std::numeric_limits<float>::denorm_min()) == 0x0000);
  CHECK(half::to_float(0x7bff) == 65504.0f);
  CHECK(half::to_float(0x0001) == std::ldexp(1.0f, -24));
  CHECK(std::isinf(half::to_float(0x7c00)));
  CHECK(std::isnan(half::to_float(0x7e00)));
}

TEST_CASE("tensor: bf16 conversion matches a bit-level reference") {
  // All 65536 patterns: to_float is the top half of an f32, and round trips.
  for (uint32_t b = 0; b < 65536; ++b) {
    const float f = bfloat16::to_float(static_cast<uint16_t>(b));
    const uint32_t expect_bits = b << 16;
    if (float_to_bits(f) != expect_bits) {
      INFO("bf16 bits 0x", std::hex, b);
      CHECK(float_to_bits(f) == expect_bits);
    }
    if (std::isnan(f)) {
      const uint16_t back = bfloat16::from_float(f);
      CHECK(std::isnan(bfloat16::to_float(back)));
      continue;
    }
    if (bfloat16::from_float(f) != b) {
      INFO("round trip of bf16 bits 0x", std::hex, b);
      CHECK(bfloat16::from_float(f) == b);
    }
  }
  // Midpoints between consecutive finite bf16 values (bits b and b+1) go to the even one.
  int bad = 0;
  for (uint32_t b = 0; b < 0x7f80; ++b) {
    const uint32_t mid = (b << 16) | 0x8000u;
    const uint16_t even = (b & 1) ? static_cast<uint16_t>(b + 1) : static_cast<uint16_t>(b);
    if (bfloat16::from_float(bits_to_float(mid)) != even) ++bad;
    if (bfloat16::from_float(bits_to_float(mid - 1)) != b) ++bad;
    if (bfloat16::from_float(bits_to_float(mid + 1)) != b + 1) ++bad;
    if (bfloat16::from_float(bits_to_float(mid | 0x80000000u)) != (even | 0x8000u)) ++bad;
  }
  CHECK(bad == 0);
  // Sweep over f32 bit patterns against the ldexp/nearbyint reference.
  bad = 0;
  for (uint64_t u = 0; u < 0x100000000ull; u += 7919) {
    const float x = bits_to_float(static_cast<uint32_t>(u));
    if (std::isnan(x)) continue;
    const double ref = std::isinf(x) ? double(x) : bf16_ref_round(x);
    const float got = bfloat16::to_float(bfloat16::from_float(x));
    if (double(got) != ref || std::signbit(got) != std::signbit(x)) {
      if (bad++ < 5) {
        INFO("float bits 0x", std::hex, u, std::dec, " value ", x, " got ", got, " want ", ref);
        CHECK(false);
      }
    }
  }
  CHECK(bad == 0);
  CHECK(bfloat16::from_float(1.0f) == 0x3f80);
  CHECK(bfloat16::from_float(std::numeric_limits<float>::max()) == 0x7f80);  // rounds to inf
  CHECK(bfloat16::from_float(-INFINITY) == 0xff80);
  const uint16_t qn = bfloat16::from_float(std::numeric_limits<float>::quiet_NaN());
  CHECK((qn & 0x7f80) == 0x7f80);
  CHECK((qn & 0x7f) != 0);
  // A NaN whose payload lies only in the low 16 bits must stay NaN (not become inf).
  const uint16_t low_nan = bfloat16::from_float(bits_to_float(0x7f800001u));
  CHECK((low_nan & 0x7f) != 0);
}

TEST_CASE("tensor: f16/bf16 tensors convert through to() like the scalar reference") {
  // All 65536 half patterns wrapped as a tensor, converted to f32 and f64.
  std::vector<uint16_t> bits(65536);
  for (uint32_t b = 0; b < 65536; ++b) bits[b] = static_cast<uint16_t>(b);
  Tensor h = from_blob(bits.data(), {65536}, f16);
  const std::vector<float> as32 = h.to(f32).to_vector<float>();
  const std::vector<double> as64 = h.to(f64).to_vector<double>();
  int bad = 0;
  for (uint32_t b = 0; b < 65536; ++b) {
    const double ref = half_ref_value(static_cast<uint16_t>(b));
    if (std::isnan(ref)) {
      if (!std::isnan(as32[b]) || !std::isnan(as64[b])) ++bad;
    } else if (double(as32[b]) != ref || as64[b] != ref) {
      ++bad;
    }
  }
  CHECK(bad == 0);
  // f32 -> f16 tensor conversion of halfway values: ties to even.
  Tensor mids = tensor(std::vector<float>{1.0f + std::ldexp(1.0f, -11), 1.0f + 3 * std::ldexp(1.0f, -11),
                                          65520.0f, -65520.0f, std::ldexp(1.0f, -25)});
  Tensor m16 = mids.to(f16);
  const half* p = m16.data_ptr<half>();
  CHECK(p[0].bits == 0x3c00);  // 1 + 2^-11 -> 1
  CHECK(p[1].bits == 0x3c02);  // 1 + 3*2^-11 -> 1 + 2^-9
  CHECK(p[2].bits == 0x7c00);
  CHECK(p[3].bits == 0xfc00);
  CHECK(p[4].bits == 0x0000);
  // bf16 tensor conversion.
  Tensor b16 = tensor(std::vector<float>{1.0f + std::ldexp(1.0f, -8), 1.0f + 3 * std::ldexp(1.0f, -8)}).to(bf16);
  CHECK(b16.data_ptr<bfloat16>()[0].bits == 0x3f80);
  CHECK(b16.data_ptr<bfloat16>()[1].bits == 0x3f82);
}

TEST_CASE("tensor: f64 -> f16/bf16 conversion rounds once (no double rounding through f32)") {
  // 1 + 2^-11 + 2^-40 lies just above the midpoint between the halves 1 and 1 + 2^-10,
  // so it must round up; rounding to f32 first lands exactly on the midpoint, which
  // would then tie to even (down).
  const double v = 1.0 + std::ldexp(1.0, -11) + std::ldexp(1.0, -40);
  CHECK(half_ref_round(v) == 1.0 + std::ldexp(1.0, -10));
  Tensor t = tensor(std::vector<double>{v, -v}).to(f16);
  CHECK(t.data_ptr<half>()[0].bits == 0x3c01);
  CHECK(t.data_ptr<half>()[1].bits == 0xbc01);
  Tensor f = full({2}, v, f16);
  CHECK(f.data_ptr<half>()[0].bits == 0x3c01);
  const double w = 1.0 + std::ldexp(1.0, -8) + std::ldexp(1.0, -40);
  Tensor b = tensor(std::vector<double>{w}).to(bf16);
  CHECK(b.data_ptr<bfloat16>()[0].bits == 0x3f81);
  // Large doubles beyond f32's range become inf; just below the f16 overflow midpoint stay finite.
  Tensor big = tensor(std::vector<double>{1e300, 65519.99999, -1e300}).to(f16);
  CHECK(big.data_ptr<half>()[0].bits == 0x7c00);
  CHECK(big.data_ptr<half>()[1].bits == 0x7bff);
  CHECK(big.data_ptr<half>()[2].bits == 0xfc00);
  Tensor bbig = tensor(std::vector<double>{1e300}).to(bf16);
  CHECK(bbig.data_ptr<bfloat16>()[0].bits == 0x7f80);
  // Random doubles against the reference.
  Generator g(99);
  std::vector<double> xs(20000);
  for (auto& x : xs) x = std::ldexp(g.uniform(-1.0, 1.0), int(g.below(40)) - 28);
  const std::vector<float> got16 = tensor(xs).to(f16).to_vector<float>();
  const std::vector<float> gotb = tensor(xs).to(bf16).to_vector<float>();
  int bad = 0;
  for (size_t i = 0; i < xs.size(); ++i) {
    if (double(got16[i]) != half_ref_round(xs[i])) ++bad;
    if (double(gotb[i]) != bf16_ref_round(xs[i])) ++bad;
  }
  CHECK(bad == 0);
}

// ---------------------------------------------------------------------------------------
// factories

TEST_CASE("tensor: zeros, ones, full, scalar_tensor") {
  Tensor z = zeros({2, 3});
  CHECK(z.shape() == Shape{2, 3});
  CHECK(z.strides() == Shape{3, 1});
  CHECK(z.dtype() == f32);
  CHECK(z.to_vector<float>() == std::vector<float>(6, 0.0f));
  CHECK(ones({4}, f64).to_vector<double>() == std::vector<double>(4, 1.0));
  CHECK(full({2, 2}, 7.5, f64).to_vector<double>() == std::vector<double>(4, 7.5));
  CHECK(full({3}, 3.9, i32).to_vector<int32_t>() == std::vector<int32_t>(3, 3));     // truncates
  CHECK(full({3}, -3.9, i64).to_vector<int64_t>() == std::vector<int64_t>(3, -3));  // toward zero
  CHECK(full({2}, 0.5, b8).to_vector<int>() == std::vector<int>{1, 1});
  CHECK(full({2}, 200, u8).to_vector<int>() == std::vector<int>{200, 200});
  Tensor s = scalar_tensor(2.25);
  CHECK(s.dim() == 0);
  CHECK(s.numel() == 1);
  CHECK(s.item<float>() == 2.25f);
  Tensor e = zeros({0, 4});
  CHECK(e.numel() == 0);
  CHECK(e.to_vector<float>().empty());
  CHECK(zeros_like(full({2}, 3.0, f64)).dtype() == f64);
  CHECK(ones_like(e).shape() == Shape{0, 4});
  CHECK(full_like(ones({2}), 4.0).to_vector<float>() == std::vector<float>{4, 4});
}

TEST_CASE("tensor: arange including negative steps and empty ranges") {
  Tensor a = arange(5);
  CHECK(a.dtype() == i64);
  CHECK(a.to_vector<int64_t>() == std::vector<int64_t>{0, 1, 2, 3, 4});
  CHECK(arange(1.0, 2.0, 0.25, f32).to_vector<float>() == std::vector<float>{1, 1.25f, 1.5f, 1.75f});
  CHECK(arange(5.0, 0.0, -1.5, f64).to_vector<double>() == std::vector<double>{5, 3.5, 2, 0.5});
  CHECK(arange(3.0, -1.0, -1.0).to_vector<int64_t>() == std::vector<int64_t>{3, 2, 1, 0});
  CHECK(arange(-2.0, 2.0, 1.0).to_vector<int64_t>() == std::vector<int64_t>{-2, -1, 0, 1});
  struct Range {
    double start, end, step;
  };
  for (const Range& r : std::vector<Range>{{0, 0, 1}, {3, 1, 1}, {0, 5, -1}, {2, 2, -1}, {0, 0.5, -0.1}}) {
    Tensor t = arange(r.start, r.end, r.step);
    CHECK(t.shape() == Shape{0});
    CHECK(t.numel() == 0);
  }
  CHECK(arange(0).numel() == 0);
  expect_error<ValueError>("arange step 0", [] { arange(0.0, 1.0, 0.0); }, {"arange", "step"});
  // Element counts and strides that overflow int64 are refused, even with a zero dim.
  expect_error<ShapeError>("huge shape", [] { empty({int64_t(1) << 40, int64_t(1) << 40}, DType::f32); }, {"int64"});
  expect_error<ShapeError>("huge shape, zero dim", [] { empty({0, int64_t(1) << 40, int64_t(1) << 40}, DType::f32); },
                           {"int64"});
  CHECK(empty({0, int64_t(1) << 30, int64_t(1) << 30}, DType::f32).numel() == 0);
}

TEST_CASE("tensor: rand and randn statistics, determinism with a seeded Generator") {
  Generator g(42);
  const int64_t n = 200000;
  const std::vector<double> u = rand({n}, g, f64).to_vector<double>();
  double mean = 0, var = 0, lo = 1, hi = 0;
  for (double x : u) {
    mean += x;
    lo = std::min(lo, x);
    hi = std::max(hi, x);
  }
  mean /= n;
  for (double x : u) var += (x - mean) * (x - mean);
  var /= n;
  CHECK(lo >= 0.0);
  CHECK(hi < 1.0);
  CHECK(std::abs(mean - 0.5) < 0.005);
  CHECK(std::abs(var - 1.0 / 12) < 0.002);
  // Ranged uniform.
  const std::vector<float> r = rand({10000}, g, f32, -3.0, -1.0).to_vector<float>();
  for (float x : r) {
    CHECK(x >= -3.0f);
    CHECK(x <= -1.0f);
  }

  const std::vector<double> z = randn({n}, g, f64).to_vector<double>();
  double zm = 0, zv = 0, z4 = 0;
  for (double x : z) zm += x;
  zm /= n;
  for (double x : z) {
    zv += (x - zm) * (x - zm);
    z4 += std::pow(x - zm, 4);
  }
  zv /= n;
  z4 /= n;
  CHECK(std::abs(zm) < 0.01);
  CHECK(std::abs(zv - 1.0) < 0.02);
  CHECK(std::abs(z4 / (zv * zv) - 3.0) < 0.1);  // kurtosis of a normal
  const std::vector<double> z2 = randn({n}, g, f64, 3.0, 2.0).to_vector<double>();
  double m2 = 0, v2 = 0;
  for (double x : z2) m2 += x;
  m2 /= n;
  for (double x : z2) v2 += (x - m2) * (x - m2);
  v2 /= n;
  CHECK(std::abs(m2 - 3.0) < 0.02);
  CHECK(std::abs(std::sqrt(v2) - 2.0) < 0.02);

  // Same seed, same stream; different seed, different stream; reseeding restarts.
  Generator a(7), b(7), c(8);
  const auto va = randn({64}, a).to_vector<float>();
  CHECK(va == randn({64}, b).to_vector<float>());
  CHECK(va != randn({64}, c).to_vector<float>());
  a.manual_seed(7);
  CHECK(va == randn({64}, a).to_vector<float>());
  // Consecutive draws from one generator differ.
  CHECK(randn({64}, a).to_vector<float>() != va);
  // Row-major order: a [4, 8] draw equals a [32] draw from the same seed.
  Generator p(5), q(5);
  CHECK(rand({4, 8}, p).to_vector<float>() == rand({32}, q).to_vector<float>());
  // The default generator is seedable.
  manual_seed(123);
  const auto d1 = rand({16}).to_vector<float>();
  manual_seed(123);
  CHECK(rand({16}).to_vector<float>() == d1);
}

TEST_CASE("tensor: randint range and coverage") {
  Generator g(3);
  Tensor t = randint(-3, 4, {20000}, g);
  CHECK(t.dtype() == i64);
  std::vector<int> hist(7, 0);
  for (int64_t v : t.to_vector<int64_t>()) {
    REQUIRE(v >= -3);
    REQUIRE(v < 4);
    ++hist[static_cast<size_t>(v + 3)];
  }
  for (int c : hist) CHECK(std::abs(c - 20000 / 7) < 300);
  Tensor one = randint(5, 6, {10}, g, i32);
  CHECK(one.dtype() == i32);
  CHECK(one.to_vector<int>() == std::vector<int>(10, 5));
  expect_error<ValueError>("randint empty range", [&] { randint(2, 2, {3}, g); }, {"randint", "[2, 2)"});
}

TEST_CASE("tensor: from_blob wraps caller memory without copying") {
  std::vector<float> buf{0, 1, 2, 3, 4, 5};
  Tensor t = from_blob(buf.data(), {2, 3}, f32);
  CHECK(t.data_ptr<float>() == buf.data());
  CHECK(t.to_vector<float>() == buf);
  t.select(0, 1).fill_(9.0);
  CHECK(buf == std::vector<float>{0, 1, 2, 9, 9, 9});
  buf[0] = -1;
  CHECK(t.to_vector<float>()[0] == -1.0f);
  t.copy_(tensor({7.0f, 8.0f, 9.0f}));  // broadcast over rows
  CHECK(buf == std::vector<float>{7, 8, 9, 7, 8, 9});
  // Custom strides: a column-major view of the same buffer.
  Tensor c = from_blob(buf.data(), {3, 2}, f32, {1, 3});
  CHECK(c.to_vector<float>() == std::vector<float>{7, 7, 8, 8, 9, 9});
  CHECK_FALSE(c.is_contiguous());
  // keep_alive is released with the tensor.
  auto owner = std::make_shared<std::vector<double>>(4, 2.0);
  std::weak_ptr<std::vector<double>> watch = owner;
  {
    Tensor k = from_blob(owner->data(), {4}, f64, {}, owner);
    owner.reset();
    CHECK_FALSE(watch.expired());
    CHECK(k.to_vector<double>() == std::vector<double>(4, 2.0));
  }
  CHECK(watch.expired());
  expect_error<ShapeError>("from_blob stride rank", [&] { from_blob(buf.data(), {2, 3}, f32, {1}); },
                           {"from_blob", "[1]", "[2, 3]"});
  expect_error<ValueError>("from_blob negative shape", [&] { from_blob(buf.data(), {-2, 3}, f32); },
                           {"from_blob", "[-2, 3]"});
}

TEST_CASE("tensor: tensor(vector) shapes, dtypes and mismatch error") {
  Tensor a = tensor(std::vector<float>{1, 2, 3, 4, 5, 6}, {2, 3});
  CHECK(a.shape() == Shape{2, 3});
  CHECK(a.to_vector<float>() == std::vector<float>{1, 2, 3, 4, 5, 6});
  CHECK(tensor(std::vector<int64_t>{5, -6}).dtype() == i64);
  CHECK(tensor(std::vector<int64_t>{5, -6}).to_vector<int64_t>() == std::vector<int64_t>{5, -6});
  CHECK(tensor(std::vector<double>{1.5}).shape() == Shape{1});  // one value: 1-d, as torch.tensor([1.5])
  CHECK(tensor(std::vector<double>{1.5}, Shape{}).dim() == 0);  // 0-d only when asked for
  CHECK(tensor(std::vector<double>{}).shape() == Shape{0});
  CHECK(tensor({1.0f, 2.0f}).shape() == Shape{2});
  expect_error<ShapeError>("tensor mismatch", [] { tensor(std::vector<float>(5, 1.0f), {2, 3}); },
                           {"tensor", "5", "[2, 3]"});
}

// ---------------------------------------------------------------------------------------
// views and aliasing

namespace {
/// 0..n-1 as f32 in the given shape, built without the library's view code.
Tensor iota_f32(const Shape& s) {
  std::vector<float> v(static_cast<size_t>(numel_of(s)));
  for (size_t i = 0; i < v.size(); ++i) v[i] = float(i);
  return tensor(v, s);
}
}  // namespace

TEST_CASE("tensor: view geometry: permute, transpose, narrow, slice, select") {
  Tensor x = iota_f32({2, 3, 4});  // x[i][j][k] = 12i + 4j + k
  auto at = [](int i, int j, int k) { return float(12 * i + 4 * j + k); };

  Tensor p = x.permute({2, 0, 1});
  CHECK(p.shape() == Shape{4, 2, 3});
  CHECK(p.strides() == Shape{1, 12, 4});
  CHECK(p.offset() == 0);
  CHECK(p.shares_storage_with(x));
  CHECK_FALSE(p.is_contiguous());
  {
    const auto v = p.to_vector<float>();
    std::vector<float> ref;
    for (int k = 0; k < 4; ++k)
      for (int i = 0; i < 2; ++i)
        for (int j = 0; j < 3; ++j) ref.push_back(at(i, j, k));
    CHECK(v == ref);
  }

  Tensor t = x.transpose(0, -1);
  CHECK(t.shape() == Shape{4, 3, 2});
  CHECK(t.strides() == Shape{1, 4, 12});
  Tensor m = iota_f32({3, 5}).t();
  CHECK(m.shape() == Shape{5, 3});
  CHECK(m.strides() == Shape{1, 5});
  CHECK(m.to_vector<float>()[1] == 5.0f);

  Tensor n = x.narrow(1, 1, 2);
  CHECK(n.shape() == Shape{2, 2, 4});
  CHECK(n.strides() == Shape{12, 4, 1});
  CHECK(n.offset() == 4);
  CHECK(n.to_vector<float>()[0] == at(0, 1, 0));
  CHECK(n.to_vector<float>()[8] == at(1, 1, 0));
  CHECK(x.narrow(-1, -2, 2).offset() == 2);

  Tensor s = x.slice(2, 1, 4, 2);
  CHECK(s.shape() == Shape{2, 3, 2});
  CHECK(s.strides() == Shape{12, 4, 2});
  CHECK(s.offset() == 1);
  {
    const auto v = s.to_vector<float>();
    std::vector<float> ref;
    for (int i = 0; i < 2; ++i)
      for (int j = 0; j < 3; ++j)
        for (int k = 1; k < 4; k += 2) ref.push_back(at(i, j, k));
    CHECK(v == ref);
  }
  CHECK(x.slice(2, -3, 100).shape() == Shape{2, 3, 3});  // clamped end, negative start
  CHECK(x.slice(2, -3, 100).offset() == 1);
  CHECK(x.slice(1, 2, 1).shape() == Shape{2, 0, 4});     // empty
  CHECK(x.slice(2, 0, 4, 3).shape() == Shape{2, 3, 2});  // elements 0 and 3
  CHECK(x.slice(2, 0, 4, 3).to_vector<float>()[1] == at(0, 0, 3));

  Tensor sel = x.select(1, 2);
  CHECK(sel.shape() == Shape{2, 4});
  CHECK(sel.strides() == Shape{12, 1});
  CHECK(sel.offset() == 8);
  CHECK(sel.shares_storage_with(x));
  Tensor sel2 = x.select(-1, -1);
  CHECK(sel2.shape() == Shape{2, 3});
  CHECK(sel2.strides() == Shape{12, 4});
  CHECK(sel2.offset() == 3);
  CHECK(sel2.to_vector<float>() == std::vector<float>{3, 7, 11, 15, 19, 23});
  CHECK(x.select(0, 1).select(0, 2).select(0, 3).item<float>() == at(1, 2, 3));
}

TEST_CASE("tensor: select and squeeze of a non-contiguous tensor stay views") {
  Tensor x = iota_f32({3, 4});
  Tensor xt = x.t();  // [4, 3], strides [1, 4]
  Tensor col = xt.select(0, 2);  // x[:, 2]
  CHECK(col.shape() == Shape{3});
  CHECK(col.to_vector<float>() == std::vector<float>{2, 6, 10});
  CHECK(col.shares_storage_with(x));
  CHECK(col.strides() == Shape{4});
  col.fill_(-1.0);
  CHECK(x.to_vector<float>() == std::vector<float>{0, 1, -1, 3, 4, 5, -1, 7, 8, 9, -1, 11});

  Tensor nar = xt.narrow(0, 1, 1);  // [1, 3] with strides [1, 4]: non-contiguous
  CHECK_FALSE(nar.is_contiguous());
  Tensor sq = nar.squeeze(0);
  CHECK(sq.shape() == Shape{3});
  CHECK(sq.strides() == Shape{4});
  CHECK(sq.shares_storage_with(x));
  CHECK(sq.to_vector<float>() == std::vector<float>{1, 5, 9});
  Tensor sq_all = xt.unsqueeze(0).unsqueeze(2).squeeze();
  CHECK(sq_all.shape() == Shape{4, 3});
  CHECK(sq_all.shares_storage_with(x));
  CHECK(sq_all.strides() == Shape{1, 4});
  CHECK(x.slice(1, 0, 4, 2).select(1, 1).to_vector<float>() == std::vector<float>{-1, -1, -1});
}

TEST_CASE("tensor: expand, squeeze, unsqueeze, flatten geometry") {
  Tensor c = tensor(std::vector<float>{1, 2, 3}, {3, 1});
  Tensor e = c.expand({2, 3, 4});
  CHECK(e.shape() == Shape{2, 3, 4});
  CHECK(e.strides() == Shape{0, 1, 0});
  CHECK(e.shares_storage_with(c));
  {
    const auto v = e.to_vector<float>();
    for (int i = 0; i < 2; ++i)
      for (int j = 0; j < 3; ++j)
        for (int k = 0; k < 4; ++k) CHECK(v[size_t(12 * i + 4 * j + k)] == float(j + 1));
  }
  CHECK(c.expand({-1, 5}).shape() == Shape{3, 5});
  CHECK(scalar_tensor(4.0).expand({2, 2}).to_vector<float>() == std::vector<float>(4, 4.0f));

  Tensor x = iota_f32({2, 1, 3});
  CHECK(x.squeeze(1).shape() == Shape{2, 3});
  CHECK(x.squeeze(0).shape() == Shape{2, 1, 3});  // not size 1: unchanged
  CHECK(x.squeeze().shape() == Shape{2, 3});
  CHECK(x.squeeze().shares_storage_with(x));
  Tensor u = x.unsqueeze(0);
  CHECK(u.shape() == Shape{1, 2, 1, 3});
  CHECK(x.unsqueeze(-1).shape() == Shape{2, 1, 3, 1});
  CHECK(x.unsqueeze(3).shape() == Shape{2, 1, 3, 1});
  CHECK(x.unsqueeze(2).shape() == Shape{2, 1, 1, 3});
  Tensor ut = iota_f32({2, 3}).t().unsqueeze(1);  // non-contiguous: must stay a view
  CHECK(ut.shape() == Shape{3, 1, 2});
  CHECK(ut.to_vector<float>() == std::vector<float>{0, 3, 1, 4, 2, 5});
  CHECK(scalar_tensor(1.0).unsqueeze(0).shape() == Shape{1});

  Tensor y = iota_f32({2, 3, 4, 5});
  CHECK(y.flatten().shape() == Shape{120});
  CHECK(y.flatten(1, 2).shape() == Shape{2, 12, 5});
  CHECK(y.flatten(1, 2).shares_storage_with(y));
  CHECK(y.flatten(-2).shape() == Shape{2, 3, 20});
  Tensor yt = iota_f32({2, 3}).t();
  Tensor f = yt.flatten();  // needs a copy
  CHECK(f.to_vector<float>() == std::vector<float>{0, 3, 1, 4, 2, 5});
  CHECK(scalar_tensor(2.0).flatten().shape() == Shape{1});
}

TEST_CASE("tensor: writes through views are visible in the base") {
  Tensor base = zeros({3, 4});
  // copy_ into a slice.
  base.slice(1, 1, 3).copy_(tensor(std::vector<float>{1, 2, 3, 4, 5, 6}, {3, 2}));
  CHECK(base.to_vector<float>() == std::vector<float>{0, 1, 2, 0, 0, 3, 4, 0, 0, 5, 6, 0});
  // fill_ through a transposed view.
  base.t().select(0, 3).fill_(7.0);
  CHECK(base.to_vector<float>() == std::vector<float>{0, 1, 2, 7, 0, 3, 4, 7, 0, 5, 6, 7});
  // copy_ from an expanded source into a strided slice.
  base.slice(1, 0, 4, 2).copy_(tensor(std::vector<float>{-1, -2}).expand({3, 2}));
  CHECK(base.to_vector<float>() == std::vector<float>{-1, 1, -2, 7, -1, 3, -2, 7, -1, 5, -2, 7});
  // copy_ with dtype conversion and a broadcast source.
  Tensor row = base.select(0, 1);
  row.copy_(tensor(std::vector<int64_t>{9}).reshape({1}));
  CHECK(base.to_vector<float>() == std::vector<float>{-1, 1, -2, 7, 9, 9, 9, 9, -1, 5, -2, 7});
  // copy_ from a transposed source into the base.
  Tensor src = iota_f32({4, 3});
  base.copy_(src.t());
  CHECK(base.to_vector<float>() == std::vector<float>{0, 3, 6, 9, 1, 4, 7, 10, 2, 5, 8, 11});
  // Permuted view of a 3-d base.
  Tensor b3 = zeros({2, 2, 2}, f64);
  b3.permute({2, 0, 1}).select(0, 1).fill_(5.0);  // b3[:, :, 1] = 5
  CHECK(b3.to_vector<double>() == std::vector<double>{0, 5, 0, 5, 0, 5, 0, 5});
  expect_error<ShapeError>("copy_ bad shape", [&] { base.copy_(zeros({5})); }, {"copy_", "[5]", "[3, 4]"});
}

TEST_CASE("tensor: reshape copies only when it must; view() never copies") {
  Tensor x = iota_f32({2, 3, 4});
  Tensor r = x.reshape({4, -1});
  CHECK(r.shape() == Shape{4, 6});
  CHECK(r.shares_storage_with(x));
  CHECK(x.view({24}).shares_storage_with(x));
  CHECK(x.view({-1, 2, 2}).shape() == Shape{6, 2, 2});
  Tensor xt = x.transpose(0, 2);  // [4, 3, 2]
  Tensor rc = xt.reshape({4, 6});
  CHECK_FALSE(rc.shares_storage_with(x));
  CHECK(rc.is_contiguous());
  {
    std::vector<float> ref;
    for (int k = 0; k < 4; ++k)
      for (int j = 0; j < 3; ++j)
        for (int i = 0; i < 2; ++i) ref.push_back(float(12 * i + 4 * j + k));
    CHECK(rc.to_vector<float>() == ref);
  }
  expect_error<ShapeError>("view of non-contiguous", [&] { xt.view({24}); }, {"view", "[4, 3, 2]", "reshape"});
  expect_error<ShapeError>("reshape wrong numel", [&] { x.reshape({5, 5}); }, {"[2, 3, 4]", "[5, 5]"});
  expect_error<ShapeError>("reshape two -1", [&] { x.reshape({-1, -1}); }, {"-1"});
  expect_error<ShapeError>("reshape bad -1", [&] { x.reshape({5, -1}); }, {"[2, 3, 4]", "[5, -1]"});
  // A size-1 dim with an odd stride does not break contiguity.
  Tensor odd = x.narrow(0, 1, 1);
  CHECK(odd.is_contiguous());
  CHECK(odd.view({12}).to_vector<float>()[0] == 12.0f);

  // Non-contiguous tensors are viewed where each group of dims that lie back to back is
  // regrouped on its own, and copied otherwise; the values are those of the logical order.
  Tensor wide = iota_f32({2, 3, 12});
  Tensor heads = wide.narrow(2, 4, 4).reshape({2, 3, 2, 2});  // a q / k / v slice split into heads
  CHECK(heads.shares_storage_with(wide));
  {
    std::vector<float> ref;
    for (int i = 0; i < 2; ++i)
      for (int j = 0; j < 3; ++j)
        for (int c = 4; c < 8; ++c) ref.push_back(float(36 * i + 12 * j + c));
    CHECK(heads.to_vector<float>() == ref);
    CHECK(heads.view({6, 4}).to_vector<float>() == ref);  // the split is undone the same way
  }
  Tensor split = xt.reshape({2, 2, 3, 1, 2});  // splits xt's first dim (stride 1) and adds a 1
  CHECK(split.shares_storage_with(x));
  CHECK(split.to_vector<float>() == rc.to_vector<float>());
  Tensor cols = x.narrow(2, 0, 2);  // [2, 3, 2]: its last two dims are not back to back
  Tensor flat = cols.reshape({2, 6});
  CHECK_FALSE(flat.shares_storage_with(x));
  CHECK(flat.to_vector<float>() == std::vector<float>{0, 1, 4, 5, 8, 9, 12, 13, 16, 17, 20, 21});
  expect_error<ShapeError>("view of a non-viewable slice", [&] { cols.view({2, 6}); }, {"view", "[2, 3, 2]"});
}

TEST_CASE("tensor: contiguous, clone and detach") {
  Tensor x = iota_f32({3, 4});
  Tensor c = x.contiguous();
  CHECK(c.unsafe_impl() == x.unsafe_impl());
  CHECK(c.shares_storage_with(x));
  Tensor xt = x.t();
  Tensor ct = xt.contiguous();
  CHECK_FALSE(ct.shares_storage_with(x));
  CHECK(ct.is_contiguous());
  CHECK(ct.strides() == Shape{3, 1});
  CHECK(ct.to_vector<float>() == std::vector<float>{0, 4, 8, 1, 5, 9, 2, 6, 10, 3, 7, 11});

  Tensor k = x.clone();
  CHECK_FALSE(k.shares_storage_with(x));
  CHECK(k.to_vector<float>() == x.to_vector<float>());
  k.fill_(0.0);
  CHECK(x.to_vector<float>()[5] == 5.0f);
  Tensor kt = xt.clone();
  CHECK_FALSE(kt.shares_storage_with(x));
  CHECK(kt.shape() == Shape{4, 3});
  CHECK(kt.to_vector<float>() == ct.to_vector<float>());
  Tensor ke = tensor({1.0f, 2.0f}).expand({3, 2}).clone();
  CHECK(ke.strides() == Shape{2, 1});
  CHECK(ke.to_vector<float>() == std::vector<float>{1, 2, 1, 2, 1, 2});
  Tensor empty_clone = zeros({0, 3}).clone();
  CHECK(empty_clone.shape() == Shape{0, 3});

  Tensor d = x.detach();
  CHECK(d.shares_storage_with(x));
  CHECK(d.unsafe_impl() != x.unsafe_impl());
}

TEST_CASE("tensor: to(dtype) conversions") {
  Tensor f = tensor(std::vector<float>{1.7f, -1.7f, 2.5f, -0.2f, 0.0f, 100.9f});
  CHECK(f.to(i32).dtype() == i32);
  CHECK(f.to(i32).to_vector<int32_t>() == std::vector<int32_t>{1, -1, 2, 0, 0, 100});
  CHECK(f.to(i64).to_vector<int64_t>() == std::vector<int64_t>{1, -1, 2, 0, 0, 100});
  CHECK(f.to(b8).to_vector<int>() == std::vector<int>{1, 1, 1, 1, 0, 1});
  CHECK(tensor(std::vector<float>{0.9f, 255.5f, 3.0f}).to(u8).to_vector<int>() == std::vector<int>{0, 255, 3});
  CHECK(f.to(b8).to(f32).to_vector<float>() == std::vector<float>{1, 1, 1, 1, 0, 1});
  CHECK(f.to(f32).unsafe_impl() == f.unsafe_impl());  // same dtype: the same tensor
  // f32 -> f64 is exact; f64 -> f32 rounds to nearest.
  CHECK(f.to(f64).to_vector<double>()[0] == double(1.7f));
  const double third = 1.0 / 3.0;
  CHECK(tensor(std::vector<double>{third}).to(f32).item<float>() == float(third));
  // i64 -> f64 exact for large values; i64 -> i32 on small ones.
  const int64_t big = (int64_t(1) << 52) + 3;
  CHECK(tensor(std::vector<int64_t>{big}).to(f64).item<double>() == double(big));
  CHECK(tensor(std::vector<int64_t>{-7, 8}).to(i32).to_vector<int>() == std::vector<int>{-7, 8});
  // NaN converts to true.
  CHECK(tensor(std::vector<float>{NAN}).to(b8).item<bool>());
  // A non-contiguous source converts in logical order.
  CHECK(iota_f32({2, 3}).t().to(i32).to_vector<int>() == std::vector<int>{0, 3, 1, 4, 2, 5});
}

TEST_CASE("tensor: item and to_vector") {
  CHECK(scalar_tensor(3.5, f64).item<double>() == 3.5);
  CHECK(tensor(std::vector<int64_t>{42}).item<int64_t>() == 42);
  CHECK(ones({1, 1, 1}).item<float>() == 1.0f);
  CHECK(iota_f32({2, 3}).select(1, 2).to_vector<double>() == std::vector<double>{2, 5});
  CHECK(iota_f32({4}).slice(0, 1, 4, 2).to_vector<int>() == std::vector<int>{1, 3});
  expect_error<ShapeError>("item on 2 elements", [] { ones({2}).item<float>(); }, {"item", "[2]"});
  expect_error<ShapeError>("item on empty", [] { zeros({0}).item<float>(); }, {"item", "[0]"});
}

TEST_CASE("tensor: printing") {
  Tensor a = tensor(std::vector<float>{1, 2, 3, 4, 5, 6}, {2, 3});
  const std::string s = a.str();
  CHECK(s.find("[2, 3]") != std::string::npos);
  CHECK(s.find("f32") != std::string::npos);
  CHECK(s.find("6") != std::string::npos);
  CHECK(s.find("...") == std::string::npos);
  std::ostringstream os;
  os << a;
  CHECK(os.str() == s);

  const std::string l = arange(0.0, 100.0, 1.0, f64).str();
  CHECK(l.find("[100]") != std::string::npos);
  CHECK(l.find("f64") != std::string::npos);
  CHECK(l.find("...") != std::string::npos);
  CHECK(l.find("99") != std::string::npos);
  CHECK(l.find("50") == std::string::npos);  // middle elided

  const std::string z = scalar_tensor(2.5).str();
  CHECK(z.find("[]") != std::string::npos);
  CHECK(z.find("2.5") != std::string::npos);
  const std::string e = zeros({0, 3}, i64).str();
  CHECK(e.find("[0, 3]") != std::string::npos);
  CHECK(e.find("i64") != std::string::npos);
  const std::string g = ones({2}).requires_grad_().str();
  CHECK(g.find("requires_grad") != std::string::npos);
  CHECK(Tensor().str().find("undefined") != std::string::npos);
  // Large 2-d: both dims elided.
  const std::string big = zeros({50, 50}).str();
  CHECK(big.find("...") != std::string::npos);
  CHECK(big.size() < 400);
}

// ---------------------------------------------------------------------------------------
// broadcasting

TEST_CASE("tensor: broadcasting rules and errors") {
  CHECK(broadcast_shapes({3, 1, 5}, {4, 1}, "t") == Shape{3, 4, 5});
  CHECK(broadcast_shapes({}, {2, 3}, "t") == Shape{2, 3});
  CHECK(broadcast_shapes({2, 3}, {}, "t") == Shape{2, 3});
  CHECK(broadcast_shapes({0}, {1}, "t") == Shape{0});
  CHECK(broadcast_shapes({1, 0}, {3, 1}, "t") == Shape{3, 0});
  expect_error<ShapeError>("broadcast", [] { broadcast_shapes({3}, {4}, "myop"); }, {"myop", "[3]", "[4]"});
  expect_error<ShapeError>("broadcast 0 vs 2", [] { broadcast_shapes({0}, {2}, "myop"); }, {"[0]", "[2]"});

  // [3, 1] + [1, 4] against a naive loop.
  Tensor a = tensor(std::vector<double>{1, 2, 3}, {3, 1});
  Tensor b = tensor(std::vector<double>{10, 20, 30, 40}, {1, 4});
  const auto s = add(a, b).to_vector<double>();
  const auto p = mul(a, b).to_vector<double>();
  CHECK(add(a, b).shape() == Shape{3, 4});
  for (int i = 0; i < 3; ++i)
    for (int j = 0; j < 4; ++j) {
      CHECK(s[size_t(4 * i + j)] == (i + 1) + 10.0 * (j + 1));
      CHECK(p[size_t(4 * i + j)] == (i + 1) * 10.0 * (j + 1));
    }
  // Scalar and 0-d operands.
  CHECK((a * 2.0).to_vector<double>() == std::vector<double>{2, 4, 6});
  CHECK((1.0 - a).to_vector<double>() == std::vector<double>{0, -1, -2});
  CHECK(add(scalar_tensor(1, f64), scalar_tensor(2, f64)).dim() == 0);
  // Empty broadcast.
  CHECK(add(zeros({0, 3}), zeros({3})).shape() == Shape{0, 3});
  expect_error<ShapeError>("add [2,3] + [4]", [] { add(zeros({2, 3}), zeros({4})); }, {"add", "[2, 3]", "[4]"});
  expect_error<ShapeError>("mul [2,3] * [3,2]", [] { mul(zeros({2, 3}), zeros({3, 2})); },
                           {"mul", "[2, 3]", "[3, 2]"});
}

// ---------------------------------------------------------------------------------------
// threads and large inputs

TEST_CASE("tensor: set_num_threads round trip; results with 1 and 2 threads") {
  ThreadRestore restore;
  set_num_threads(2);
  CHECK(get_num_threads() == 2);
  set_num_threads(1);
  CHECK(get_num_threads() == 1);
  set_num_threads(3);
  CHECK(get_num_threads() == 3);

  Generator g(11);
  const int64_t n = 1000000;
  Tensor x = rand({n}, g, f32, -1.0, 1.0);
  Tensor y = rand({n}, g, f32, -1.0, 1.0);
  const std::vector<float> xv = x.to_vector<float>(), yv = y.to_vector<float>();
  double ref = 0, ref_abs = 0;
  for (float v : xv) {
    ref += v;
    ref_abs += std::abs(v);
  }
  std::vector<float> prod_ref(xv.size());
  for (size_t i = 0; i < xv.size(); ++i) prod_ref[i] = xv[i] * yv[i];

  set_num_threads(1);
  const float s1 = sum(x).item<float>();
  const float m1 = max(x).item<float>();
  const std::vector<float> p1 = mul(x, y).to_vector<float>();
  set_num_threads(2);
  const float s2 = sum(x).item<float>();
  const float m2 = max(x).item<float>();
  const std::vector<float> p2 = mul(x, y).to_vector<float>();
  const double tol = 1e-6 * ref_abs;
  CHECK(std::abs(s1 - ref) <= tol);
  CHECK(std::abs(s2 - ref) <= tol);
  CHECK(std::abs(double(s1) - double(s2)) <= tol);
  const float mref = *std::max_element(xv.begin(), xv.end());
  CHECK(m1 == mref);
  CHECK(m2 == mref);
  CHECK(p1 == prod_ref);  // elementwise: bit-identical
  CHECK(p2 == prod_ref);
  // Mean and logsumexp of one long row with 2 threads (split across threads).
  Tensor xd = x.to(f64);
  double lse_ref = 0;
  const double mx = double(mref);
  for (float v : xv) lse_ref += std::exp(double(v) - mx);
  lse_ref = mx + std::log(lse_ref);
  CHECK(std::abs(mean(xd).item<double>() - ref / double(n)) < 1e-12);
  CHECK(std::abs(logsumexp(xd).item<double>() - lse_ref) < 1e-9);
  set_num_threads(1);
  CHECK(std::abs(logsumexp(xd).item<double>() - lse_ref) < 1e-9);
}

TEST_CASE("tensor: approximated unary functions give the same bits wherever a value lies") {
  // Eigen's scalar and packet exp can differ in the last bit (QuickGELU below -9 hits it);
  // a value's result must not depend on its alignment, on the thread split, or on whether
  // the tensor is a strided view. The reference is each function over one aligned tensor of
  // whole packets (1024 values).
  ThreadRestore restore;
  Generator g(21);
  const int64_t n = 1024;
  const Tensor base = rand({n}, g, f32, -30.0, 30.0);
  using Fn = Tensor (*)(const Tensor&);
  const std::vector<std::pair<const char*, Fn>> fns{{"quick_gelu", quick_gelu}, {"sigmoid", sigmoid},
                                                    {"exp", exp},               {"tanh", tanh}};
  for (const auto& [name, fn] : fns) {
    CAPTURE(name);
    set_num_threads(1);
    const std::vector<float> ref = fn(base).to_vector<float>();
    for (int threads : {1, 2}) {
      set_num_threads(threads);
      // The same values at every offset within a packet, and runs of odd lengths.
      for (int64_t off : {1, 3, 7, 15}) {
        Tensor buf = zeros({n + 32});
        buf.narrow(0, off, n).copy_(base);
        const std::vector<float> y = fn(buf.narrow(0, off, n)).to_vector<float>();
        CHECK(std::memcmp(y.data(), ref.data(), size_t(n) * sizeof(float)) == 0);
        const std::vector<float> part = fn(buf.narrow(0, off, 37)).to_vector<float>();
        CHECK(std::memcmp(part.data(), ref.data(), 37 * sizeof(float)) == 0);
      }
      // A strided view: every other value of an interleaved copy.
      Tensor wide = zeros({n, 2});
      wide.select(1, 0).copy_(base);
      const std::vector<float> ys = fn(wide.select(1, 0)).to_vector<float>();
      CHECK(std::memcmp(ys.data(), ref.data(), size_t(n) * sizeof(float)) == 0);
    }
  }
}

TEST_CASE("tensor: relu keeps nan and -0 alike on contiguous and strided tensors") {
  // Contiguous tensors take Eigen's max(x, 0), strided views the scalar loop: the same bits,
  // nan propagated (as PyTorch's relu does), not turned into 0.
  const float nan = std::nanf(""), inf = std::numeric_limits<float>::infinity();
  const std::vector<float> v{nan, -0.0f, 0.0f, -1.5f, 2.5f, inf, -inf, -nan, 1e-40f, -1e-40f, 3.0f, -3.0f,
                             nan, 7.0f, -7.0f, 0.5f, -0.5f};
  const Tensor x = tensor(v, {int64_t(v.size())});
  Tensor wide = zeros({int64_t(v.size()), 2});
  wide.select(1, 0).copy_(x);
  const std::vector<float> a = relu(x).to_vector<float>(), b = relu(wide.select(1, 0)).to_vector<float>();
  CHECK(std::memcmp(a.data(), b.data(), v.size() * sizeof(float)) == 0);
  CHECK(std::isnan(a[0]));
  CHECK(std::isnan(b[0]));
  CHECK(b[3] == 0.0f);
  CHECK(b[4] == 2.5f);
}

TEST_CASE("tensor: large strided non-contiguous binary ops match a naive loop") {
  ThreadRestore restore;
  Generator g(5);
  const int64_t R = 1100, C = 1000;  // 1.1e6 elements
  Tensor A = rand({C, R}, g, f32, -2.0, 2.0);      // read transposed
  Tensor B = rand({R, 2 * C}, g, f32, 0.5, 2.0);   // read with a column step of 2
  Tensor v = rand({C}, g, f32, -1.0, 1.0);         // broadcast over rows
  const float* a = A.data_ptr<float>();
  const float* b = B.data_ptr<float>();
  const float* vp = v.data_ptr<float>();
  Tensor x = A.t();                     // [R, C], strides [1, R]
  Tensor y = B.slice(1, 0, 2 * C, 2);   // [R, C], strides [2C, 2]
  for (int threads : {1, 2}) {
    set_num_threads(threads);
    const std::vector<float> s = add(x, y).to_vector<float>();
    const std::vector<float> q = div(x, y).to_vector<float>();
    const std::vector<float> d = sub(x, v).to_vector<float>();
    const std::vector<float> e = mul(y, x.select(1, 3).unsqueeze(1)).to_vector<float>();
    const std::vector<bool> c = [&] {
      const auto t = gt(x, y).to_vector<int>();
      return std::vector<bool>(t.begin(), t.end());
    }();
    int64_t bad = 0;
    for (int64_t i = 0; i < R; ++i)
      for (int64_t j = 0; j < C; ++j) {
        const float xa = a[j * R + i], yb = b[i * 2 * C + 2 * j];
        const size_t k = static_cast<size_t>(i * C + j);
        if (s[k] != xa + yb) ++bad;
        if (q[k] != xa / yb) ++bad;
        if (d[k] != xa - vp[j]) ++bad;
        if (e[k] != yb * a[3 * R + i]) ++bad;
        if (c[k] != (xa > yb)) ++bad;
      }
    INFO("threads ", threads);
    CHECK(bad == 0);
  }
  // Unary on a strided view and a strided copy.
  set_num_threads(2);
  const std::vector<float> ex = exp(x).to_vector<float>();
  const std::vector<float> xc = x.contiguous().to_vector<float>();
  int64_t bad = 0;
  for (int64_t i = 0; i < R; ++i)
    for (int64_t j = 0; j < C; ++j) {
      const float xa = a[j * R + i];
      const size_t k = static_cast<size_t>(i * C + j);
      if (xc[k] != xa) ++bad;
      if (std::abs(double(ex[k]) - std::exp(double(xa))) > 1e-6 * std::exp(double(xa))) ++bad;
    }
  CHECK(bad == 0);
  // Reductions over a strided view: sum over dim 0 of x (= A's rows).
  const std::vector<double> cs = sum(x.to(f64), {0}).to_vector<double>();
  bad = 0;
  for (int64_t j = 0; j < C; ++j) {
    double r = 0;
    for (int64_t i = 0; i < R; ++i) r += double(a[j * R + i]);
    if (std::abs(cs[size_t(j)] - r) > 1e-9) ++bad;
  }
  CHECK(bad == 0);
}

TEST_CASE("tensor: matmul and linear against naive loops, including strided operands") {
  Generator g(2);
  Tensor a = randn({5, 7}, g, f64), b = randn({4, 7}, g, f64), bias = randn({4}, g, f64);
  const auto av = a.to_vector<double>(), bv = b.to_vector<double>(), cv = bias.to_vector<double>();
  const auto mm = matmul(a, b.t()).to_vector<double>();     // b.t() is [7, 4], column-major
  const auto ln = linear(a, b, bias).to_vector<double>();
  int bad = 0;
  for (int i = 0; i < 5; ++i)
    for (int j = 0; j < 4; ++j) {
      double r = 0;
      for (int k = 0; k < 7; ++k) r += av[size_t(7 * i + k)] * bv[size_t(7 * j + k)];
      if (std::abs(mm[size_t(4 * i + j)] - r) > 1e-12) ++bad;
      if (std::abs(ln[size_t(4 * i + j)] - (r + cv[size_t(j)])) > 1e-12) ++bad;
    }
  CHECK(bad == 0);
  // Step-2 slices in both dims (copied path) and a broadcast batch.
  Tensor big = randn({10, 14}, g, f64);
  Tensor as = big.slice(0, 0, 10, 2).slice(1, 0, 14, 2);  // [5, 7]
  const auto bigv = big.to_vector<double>();
  const auto r2 = matmul(as, b.t()).to_vector<double>();
  bad = 0;
  for (int i = 0; i < 5; ++i)
    for (int j = 0; j < 4; ++j) {
      double r = 0;
      for (int k = 0; k < 7; ++k) r += bigv[size_t(14 * 2 * i + 2 * k)] * bv[size_t(7 * j + k)];
      if (std::abs(r2[size_t(4 * i + j)] - r) > 1e-12) ++bad;
    }
  CHECK(bad == 0);
  Tensor batch = matmul(a.unsqueeze(0).expand({3, 5, 7}), b.t());
  CHECK(batch.shape() == Shape{3, 5, 4});
  CHECK(batch.select(0, 2).to_vector<double>() == mm);
  // 1-d operands.
  Tensor v = tensor(std::vector<double>{1, 2, 3});
  CHECK(matmul(v, v).dim() == 0);
  CHECK(matmul(v, v).item<double>() == 14.0);
  Tensor m = tensor(std::vector<double>{1, 0, 0, 1, 1, 1}, {2, 3});
  CHECK(matmul(m, v).to_vector<double>() == std::vector<double>{1, 6});
  CHECK(matmul(v, m.t()).to_vector<double>() == std::vector<double>{1, 6});
}

// ---------------------------------------------------------------------------------------
// bad input

TEST_CASE("tensor: shape errors name the op and the shapes") {
  expect_error<ShapeError>("matmul", [] { matmul(zeros({3, 4}), zeros({5, 6})); }, {"matmul", "[3, 4]", "[5, 6]"});
  expect_error<ShapeError>("matmul 1-d", [] { matmul(zeros({3}), zeros({4})); }, {"matmul", "[3]", "[4]"});
  expect_error<ShapeError>("matmul batch", [] { matmul(zeros({2, 3, 4}), zeros({3, 4, 5})); },
                           {"matmul", "[2, 3, 4]", "[3, 4, 5]"});
  expect_error<ShapeError>("matmul 0-d", [] { matmul(scalar_tensor(1), zeros({3})); }, {"matmul", "[]", "[3]"});
  expect_error<ShapeError>("linear", [] { linear(zeros({2, 3}), zeros({5, 4})); }, {"linear", "[2, 3]", "[5, 4]"});
  expect_error<ShapeError>("linear weight rank", [] { linear(zeros({2, 3}), zeros({3})); }, {"linear", "[3]"});
  expect_error<ShapeError>("linear bias", [] { linear(zeros({2, 4}), zeros({5, 4}), zeros({3})); },
                           {"linear", "[3]", "5"});
  expect_error<ShapeError>("add", [] { add(zeros({2, 3}), zeros({2, 4})); }, {"add", "[2, 3]", "[2, 4]"});
  expect_error<ShapeError>("expand", [] { zeros({3}).expand({2, 4}); }, {"expand", "[3]", "[2, 4]"});
  expect_error<ShapeError>("expand fewer dims", [] { zeros({2, 3}).expand({3}); }, {"expand", "[2, 3]", "[3]"});
  expect_error<ShapeError>("permute count", [] { zeros({2, 3}).permute({0}); }, {"permute", "[2, 3]"});
  expect_error<IndexError>("permute repeat", [] { zeros({2, 3}).permute({1, 1}); }, {"permute"});
  expect_error<ShapeError>("t of 1-d", [] { zeros({3}).t(); }, {"t", "[3]"});
}

TEST_CASE("tensor: dtype errors") {
  expect_error<DTypeError>("f32 + f64", [] { add(zeros({2}), zeros({2}, f64)); }, {"add", "f32", "f64"});
  expect_error<DTypeError>("matmul f32 @ f64", [] { matmul(zeros({2, 2}), zeros({2, 2}, f64)); },
                           {"matmul", "f32", "f64"});
  expect_error<DTypeError>("exp i64", [] { exp(zeros({2}, i64)); }, {"exp", "i64"});
  expect_error<DTypeError>("add f16", [] { add(zeros({2}, f16), zeros({2}, f16)); }, {"add", "f16"});
  expect_error<DTypeError>("sum bf16", [] { sum(zeros({2}, bf16)); }, {"sum", "bf16"});
  expect_error<DTypeError>("matmul i32", [] { matmul(zeros({2, 2}, i32), zeros({2, 2}, i32)); }, {"matmul", "i32"});
  expect_error<DTypeError>("data_ptr", [] { zeros({2}).data_ptr<double>(); }, {"data_ptr", "f32", "f64"});
  expect_error<DTypeError>("add_ f32 += f64", [] {
    Tensor a = zeros({2});
    add_(a, zeros({2}, f64));
  }, {"add_", "f32", "f64"});
}

TEST_CASE("tensor: index and value errors") {
  Tensor x = zeros({2, 3});
  expect_error<IndexError>("sum dim 2", [&] { sum(x, {2}); }, {"sum", "dim 2", "2-d"});
  expect_error<IndexError>("sum dim -3", [&] { sum(x, {-3}); }, {"sum", "-3"});
  expect_error<IndexError>("sum dim twice", [&] { sum(x, {1, -1}); }, {"sum", "twice"});
  expect_error<IndexError>("transpose", [&] { x.transpose(0, 2); }, {"transpose", "2"});
  expect_error<IndexError>("transpose 0-d", [] { scalar_tensor(1).transpose(0, 3); }, {"transpose", "3"});
  expect_error<IndexError>("narrow range", [&] { x.narrow(1, 2, 5); }, {"narrow", "[2, 3]"});
  expect_error<IndexError>("narrow dim", [&] { x.narrow(4, 0, 1); }, {"narrow", "4"});
  expect_error<IndexError>("narrow negative length", [&] { x.narrow(1, 0, -1); }, {"narrow"});
  expect_error<IndexError>("select index", [&] { x.select(0, 2); }, {"select", "2"});
  expect_error<IndexError>("select negative index", [&] { x.select(1, -4); }, {"select", "-4"});
  expect_error<IndexError>("select dim", [&] { x.select(3, 0); }, {"select", "3"});
  expect_error<IndexError>("size dim", [&] { x.size(2); }, {"size"});
  expect_error<IndexError>("size of 0-d", [] { scalar_tensor(1).size(0); }, {"size"});
  expect_error<IndexError>("stride of 0-d", [] { scalar_tensor(1).stride(-1); }, {"stride"});
  CHECK(x.size(-1) == 3);
  CHECK(x.stride(0) == 3);
  expect_error<IndexError>("squeeze dim", [&] { x.squeeze(5); }, {"squeeze", "5"});
  expect_error<IndexError>("unsqueeze dim", [&] { x.unsqueeze(4); }, {"unsqueeze", "4"});
  expect_error<IndexError>("flatten dims", [&] { x.flatten(1, 0); }, {"flatten"});
  expect_error<IndexError>("max dim", [&] { max(x, {7}); }, {"max", "7"});
  expect_error<ValueError>("slice step", [&] { x.slice(1, 0, 3, 0); }, {"slice", "step"});
  expect_error<ValueError>("max of empty", [] { max(zeros({0})); }, {"max", "[0]"});
  expect_error<ValueError>("negative shape zeros", [] { zeros({2, -1}); }, {"[2, -1]"});
  expect_error<ValueError>("negative shape randn", [] { randn({-3}); }, {"randn", "[-3]"});
  expect_error<ValueError>("negative shape empty", [] { empty({-1}); }, {"[-1]"});
  expect_error<ValueError>("clamp", [] { clamp(zeros({2}), 1.0, 0.0); }, {"clamp"});
}

TEST_CASE("tensor: device and undefined-tensor errors") {
#ifndef GA_WITH_CUDA
  expect_error<DeviceError>("zeros on cuda", [] { zeros({2}, f32, Device::cuda()); }, {"cuda:0"});
  expect_error<DeviceError>("to cuda:1", [] { ones({2}).to(Device::cuda(1)); }, {"cuda:1"});
  expect_error<DeviceError>("randn on cuda", [] {
    Generator g;
    randn({2}, g, f32, 0, 1, Device::cuda());
  }, {"cuda"});
#endif
  CHECK(Device::cpu().str() == "cpu");
  CHECK(Device::cuda(2).str() == "cuda:2");
  CHECK(ones({1}).device() == kCPU);

  Tensor u;
  CHECK_FALSE(u.defined());
  expect_error<ValueError>("add undefined", [&] { add(u, ones({2})); }, {"add", "undefined"});
  expect_error<ValueError>("matmul undefined", [&] { matmul(ones({2, 2}), u); }, {"matmul", "undefined"});
  expect_error<ValueError>("exp undefined", [&] { exp(u); }, {"exp", "undefined"});
  expect_error<ValueError>("copy_ undefined", [&] { ones({2}).copy_(u); }, {"copy_", "undefined"});
  expect_error<Error>("shape of undefined", [&] { (void)u.shape(); }, {"undefined"});
  expect_error<ValueError>("shape of undefined (ValueError)", [&] { (void)u.shape(); }, {"undefined"});
  expect_error<ValueError>("reshape undefined", [&] { u.reshape({2}); }, {"undefined"});
  expect_error<AutogradError>("backward undefined", [&] { u.backward(); }, {"backward", "undefined"});
}

TEST_CASE("tensor: empty tensors flow through ops") {
  Tensor e = zeros({0, 3});
  CHECK(sum(e).item<float>() == 0.0f);
  CHECK(sum(e, {0}).to_vector<float>() == std::vector<float>(3, 0.0f));
  CHECK(exp(e).shape() == Shape{0, 3});
  CHECK(mul(e, ones({3})).shape() == Shape{0, 3});
  CHECK(matmul(zeros({2, 0}), zeros({0, 3})).to_vector<float>() == std::vector<float>(6, 0.0f));
  CHECK(e.t().contiguous().shape() == Shape{3, 0});
  CHECK(e.reshape({3, 0, 5}).numel() == 0);
  CHECK(e.to(f64).dtype() == f64);
}

TEST_CASE("tensor: the CPU block cache reuses freed large blocks and respects its limit") {
  auto& cache = backend::cpu::HostBlockCache::instance();
  set_cpu_cache_limit(0);  // start empty: earlier tests may have filled it close to any limit
  CHECK(cache.cached_bytes() == 0);
  set_cpu_cache_limit(size_t(64) << 20);
  const void* first;
  {
    Tensor a = empty({1 << 18});  // 1 MiB: large enough to be cached
    first = a.raw_data();
  }
  CHECK(cache.cached_bytes() >= (size_t(1) << 20));
  Tensor b = empty({1 << 18});
  CHECK(b.raw_data() == first);  // the same block came back
  Tensor small = full({3}, 2.0);
  CHECK(small.to_vector<float>() == std::vector<float>{2, 2, 2});
  set_cpu_cache_limit(0);
  CHECK(cache.cached_bytes() == 0);
  { Tensor c = empty({1 << 18}); }
  CHECK(cache.cached_bytes() == 0);  // limit 0: freed blocks go straight back to the system
  set_cpu_cache_limit(size_t(1) << 30);  // the default again
}
