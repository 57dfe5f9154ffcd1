// Element types. f32 is the compute type, f64 the reference type for gradient
// checks, f16/bf16 the storage types of published weights, i32/i64 indices and
// labels, u8 images, b8 masks.
#pragma once
#include <cmath>
#include <cstdint>
#include <cstring>
#include <string>

#include "error.hpp"

namespace ga {

enum class DType : uint8_t { f32, f64, f16, bf16, i32, i64, u8, b8 };

inline constexpr DType f32 = DType::f32;
inline constexpr DType f64 = DType::f64;
inline constexpr DType f16 = DType::f16;
inline constexpr DType bf16 = DType::bf16;
inline constexpr DType i32 = DType::i32;
inline constexpr DType i64 = DType::i64;
inline constexpr DType u8 = DType::u8;
inline constexpr DType b8 = DType::b8;

/// IEEE binary16, stored as bits. Conversions round to nearest even.
struct half {
  uint16_t bits = 0;
  half() = default;
  explicit half(float f) : bits(from_float(f)) {}
  explicit operator float() const { return to_float(bits); }

  static uint16_t from_float(float f) {
    uint32_t x;
    std::memcpy(&x, &f, 4);
    const uint32_t sign = (x >> 16) & 0x8000u;
    const uint32_t abs = x & 0x7fffffffu;
    if (abs >= 0x7f800000u)  // inf or nan
      return static_cast<uint16_t>(sign | 0x7c00u | (abs > 0x7f800000u ? 0x200u : 0u));
    if (abs >= 0x477ff000u) return static_cast<uint16_t>(sign | 0x7c00u);  // rounds to inf
    if (abs < 0x38800000u) {  // subnormal half (or zero)
      // value = abs_float; half subnormal unit is 2^-24.
      float af;
      std::memcpy(&af, &abs, 4);
      const float scaled = af * 16777216.0f;  // / 2^-24, exact
      // round half to even
      uint32_t q = static_cast<uint32_t>(scaled);
      const float rem = scaled - static_cast<float>(q);
      if (rem > 0.5f || (rem == 0.5f && (q & 1u))) ++q;
      return static_cast<uint16_t>(sign | q);
    }
    uint32_t e = ((abs >> 23) - 112u) << 10;
    uint32_t m = (abs >> 13) & 0x3ffu;
    uint32_t r = abs & 0x1fffu;
    uint32_t h = e | m;
    if (r > 0x1000u || (r == 0x1000u && (h & 1u))) ++h;
    return static_cast<uint16_t>(sign | h);
  }
  static float to_float(uint16_t h) {
    const uint32_t sign = (uint32_t(h) & 0x8000u) << 16;
    const uint32_t e = (h >> 10) & 0x1fu;
    const uint32_t m = h & 0x3ffu;
    uint32_t x;
    if (e == 0) {
      float f = static_cast<float>(m) * 5.9604644775390625e-08f;  // m * 2^-24
      std::memcpy(&x, &f, 4);
      x |= sign;
    } else if (e == 31) {
      x = sign | 0x7f800000u | (m << 13);
    } else {
      x = sign | ((e + 112u) << 23) | (m << 13);
    }
    float f;
    std::memcpy(&f, &x, 4);
    return f;
  }
};

/// bfloat16 (the top half of an f32), stored as bits. Conversion rounds to nearest even.
struct bfloat16 {
  uint16_t bits = 0;
  bfloat16() = default;
  explicit bfloat16(float f) : bits(from_float(f)) {}
  explicit operator float() const { return to_float(bits); }
  static uint16_t from_float(float f) {
    uint32_t x;
    std::memcpy(&x, &f, 4);
    if ((x & 0x7fffffffu) > 0x7f800000u) return static_cast<uint16_t>((x >> 16) | 0x40u);  // quiet nan
    x += 0x7fffu + ((x >> 16) & 1u);
    return static_cast<uint16_t>(x >> 16);
  }
  static float to_float(uint16_t b) {
    uint32_t x = uint32_t(b) << 16;
    float f;
    std::memcpy(&f, &x, 4);
    return f;
  }
};

/// Bytes per element.
inline size_t dtype_size(DType t) {
  switch (t) {
    case DType::f64: case DType::i64: return 8;
    case DType::f32: case DType::i32: return 4;
    case DType::f16: case DType::bf16: return 2;
    case DType::u8: case DType::b8: return 1;
  }
  return 0;
}

inline const char* dtype_name(DType t) {
  switch (t) {
    case DType::f32: return "f32";
    case DType::f64: return "f64";
    case DType::f16: return "f16";
    case DType::bf16: return "bf16";
    case DType::i32: return "i32";
    case DType::i64: return "i64";
    case DType::u8: return "u8";
    case DType::b8: return "bool";
  }
  return "?";
}
inline std::ostream& operator<<(std::ostream& os, DType t) { return os << dtype_name(t); }

inline bool is_floating(DType t) {
  return t == DType::f32 || t == DType::f64 || t == DType::f16 || t == DType::bf16;
}
inline bool is_integral(DType t) { return t == DType::i32 || t == DType::i64 || t == DType::u8; }

/// The C++ type stored for each dtype, and back.
template <DType D> struct dtype_traits;
template <> struct dtype_traits<DType::f32> { using type = float; };
template <> struct dtype_traits<DType::f64> { using type = double; };
template <> struct dtype_traits<DType::f16> { using type = half; };
template <> struct dtype_traits<DType::bf16> { using type = bfloat16; };
template <> struct dtype_traits<DType::i32> { using type = int32_t; };
template <> struct dtype_traits<DType::i64> { using type = int64_t; };
template <> struct dtype_traits<DType::u8> { using type = uint8_t; };
template <> struct dtype_traits<DType::b8> { using type = bool; };

template <class T> constexpr DType dtype_of();
template <> constexpr DType dtype_of<float>() { return DType::f32; }
template <> constexpr DType dtype_of<double>() { return DType::f64; }
template <> constexpr DType dtype_of<half>() { return DType::f16; }
template <> constexpr DType dtype_of<bfloat16>() { return DType::bf16; }
template <> constexpr DType dtype_of<int32_t>() { return DType::i32; }
template <> constexpr DType dtype_of<int64_t>() { return DType::i64; }
template <> constexpr DType dtype_of<uint8_t>() { return DType::u8; }
template <> constexpr DType dtype_of<bool>() { return DType::b8; }

/// Converts any stored element type to and from double (the widest common type).
template <class T> inline double to_double(T v) { return static_cast<double>(v); }
template <> inline double to_double<half>(half v) { return static_cast<float>(v); }
template <> inline double to_double<bfloat16>(bfloat16 v) { return static_cast<float>(v); }
namespace detail {
/// v narrowed to f32 with round-to-odd (truncate; set the lowest bit when inexact). Rounding
/// that f32 again to f16 or bf16 (at least two significand bits fewer) then gives the
/// correctly rounded result, where a plain double -> float -> half would round twice.
inline float float_round_to_odd(double v) {
  float f = static_cast<float>(v);
  if (!std::isfinite(v) || static_cast<double>(f) == v) return f;
  if (std::fabs(static_cast<double>(f)) > std::fabs(v)) f = std::nextafter(f, 0.0f);
  uint32_t u;
  std::memcpy(&u, &f, 4);
  u |= 1u;
  std::memcpy(&f, &u, 4);
  return f;
}
}  // namespace detail
template <class T> inline T from_double(double v) { return static_cast<T>(v); }
template <> inline half from_double<half>(double v) { return half(detail::float_round_to_odd(v)); }
template <> inline bfloat16 from_double<bfloat16>(double v) { return bfloat16(detail::float_round_to_odd(v)); }
template <> inline bool from_double<bool>(double v) { return v != 0.0; }

}  // namespace ga

/// Runs the statement with `scalar_t` bound to the C++ type of dtype `dt`.
#define GA_DISPATCH_CASE_(D, ...)                                   \
  case D: {                                                         \
    using scalar_t = typename ::ga::dtype_traits<D>::type;          \
    __VA_ARGS__;                                                    \
    break;                                                          \
  }
/// Every dtype.
#define GA_DISPATCH_ALL(dt, opname, ...)                                            \
  switch (dt) {                                                                     \
    GA_DISPATCH_CASE_(::ga::DType::f32, __VA_ARGS__)                                \
    GA_DISPATCH_CASE_(::ga::DType::f64, __VA_ARGS__)                                \
    GA_DISPATCH_CASE_(::ga::DType::f16, __VA_ARGS__)                                \
    GA_DISPATCH_CASE_(::ga::DType::bf16, __VA_ARGS__)                               \
    GA_DISPATCH_CASE_(::ga::DType::i32, __VA_ARGS__)                                \
    GA_DISPATCH_CASE_(::ga::DType::i64, __VA_ARGS__)                                \
    GA_DISPATCH_CASE_(::ga::DType::u8, __VA_ARGS__)                                 \
    GA_DISPATCH_CASE_(::ga::DType::b8, __VA_ARGS__)                                 \
  }
/// The compute types f32 and f64; anything else throws a DTypeError naming the op.
#define GA_DISPATCH_FLOAT(dt, opname, ...)                                          \
  switch (dt) {                                                                     \
    GA_DISPATCH_CASE_(::ga::DType::f32, __VA_ARGS__)                                \
    GA_DISPATCH_CASE_(::ga::DType::f64, __VA_ARGS__)                                \
    default:                                                                        \
      throw ::ga::DTypeError(::ga::cat(opname, ": dtype ", ::ga::dtype_name(dt),     \
                                       " not supported (expects f32 or f64)"));     \
  }
/// Index types i32 and i64.
#define GA_DISPATCH_INDEX(dt, opname, ...)                                          \
  switch (dt) {                                                                     \
    GA_DISPATCH_CASE_(::ga::DType::i32, __VA_ARGS__)                                \
    GA_DISPATCH_CASE_(::ga::DType::i64, __VA_ARGS__)                                \
    default:                                                                        \
      throw ::ga::DTypeError(::ga::cat(opname, ": index dtype ", ::ga::dtype_name(dt), \
                                       " not supported (expects i32 or i64)"));     \
  }
