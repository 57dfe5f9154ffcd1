// NumPy .npy files: the output format of the `ga` tool's preprocess / encode commands (what
// Python users load with numpy.load), and a strict reader for tests and tools. Writing is
// atomic (temporary file + rename) and never replaces an existing file unless asked; reading
// treats the file as untrusted: a malformed header or a size that does not add up is an
// IOError naming the file, never a crash or an over-read.
#pragma once
#include <fcntl.h>
#include <sys/stat.h>
#include <unistd.h>

#include <cerrno>
#include <cstdint>
#include <cstring>
#include <fstream>
#include <iterator>
#include <limits>
#include <string>
#include <vector>

#include "../tensor.hpp"
#include "atomic_file.hpp"

namespace ga::io {

#if defined(__BYTE_ORDER__) && __BYTE_ORDER__ != __ORDER_LITTLE_ENDIAN__
#error "ga/io/npy.hpp: writes little-endian .npy data; big-endian hosts are not supported"
#endif

namespace detail {

/// numpy's `descr` for our dtypes; nullptr for bf16, which numpy has no dtype for.
inline const char* npy_descr(DType t) {
  switch (t) {
    case DType::f32: return "<f4";
    case DType::f64: return "<f8";
    case DType::f16: return "<f2";
    case DType::i32: return "<i4";
    case DType::i64: return "<i8";
    case DType::u8: return "|u1";
    case DType::b8: return "|b1";
    case DType::bf16: return nullptr;
  }
  return nullptr;
}

/// The inverse of npy_descr; also accepts numpy's other spellings of the same little-endian
/// types ('<u1', '|i1' is not ours). False for anything else.
inline bool npy_dtype(const std::string& descr, DType& out) {
  static const std::pair<const char*, DType> table[] = {
      {"<f4", DType::f32}, {"<f8", DType::f64}, {"<f2", DType::f16}, {"<i4", DType::i32},
      {"<i8", DType::i64}, {"|u1", DType::u8},  {"<u1", DType::u8},  {"|b1", DType::b8},
      {"<b1", DType::b8}};
  for (const auto& [name, dt] : table)
    if (descr == name) {
      out = dt;
      return true;
    }
  return false;
}

/// The v1.0 header: magic, version, length, then the dict padded with spaces and a newline so
/// that the data starts on a 64-byte boundary (numpy's own layout since 1.23).
inline std::string npy_header(const char* descr, const Shape& shape) {
  std::string dict = std::string("{'descr': '") + descr + "', 'fortran_order': False, 'shape': (";
  for (size_t i = 0; i < shape.size(); ++i) dict += std::to_string(shape[i]) + (shape.size() == 1 || i + 1 < shape.size() ? ", " : "");
  if (shape.size() == 1) dict.pop_back();  // "(3,)" not "(3, )"
  dict += "), }";
  const size_t fixed = 10;  // magic (6) + version (2) + header length (2)
  size_t total = fixed + dict.size() + 1;
  total = (total + 63) / 64 * 64;
  dict.append(total - fixed - dict.size() - 1, ' ');
  dict += '\n';
  std::string out("\x93NUMPY\x01\x00", 8);
  out += static_cast<char>(dict.size() & 0xFF);
  out += static_cast<char>((dict.size() >> 8) & 0xFF);
  return out + dict;
}

/// A tiny reader for the header dict numpy writes: {'descr': '<f4', 'fortran_order': False,
/// 'shape': (2, 3), } in any key order, with optional spaces and trailing commas.
class NpyHeaderParser {
 public:
  NpyHeaderParser(const std::string& text, const std::string& path) : s_(text), path_(path) {}

  void parse(std::string& descr, bool& fortran, Shape& shape) {
    bool have_descr = false, have_fortran = false, have_shape = false;
    expect('{');
    while (true) {
      skip_space();
      if (peek() == '}') { ++i_; break; }
      const std::string key = quoted();
      expect(':');
      skip_space();
      if (key == "descr") {
        GA_CHECK(!have_descr, IOError, path_, ": .npy header repeats 'descr'");
        descr = quoted();
        have_descr = true;
      } else if (key == "fortran_order") {
        GA_CHECK(!have_fortran, IOError, path_, ": .npy header repeats 'fortran_order'");
        if (s_.compare(i_, 4, "True") == 0) { fortran = true; i_ += 4; }
        else if (s_.compare(i_, 5, "False") == 0) { fortran = false; i_ += 5; }
        else fail("'fortran_order' must be True or False");
        have_fortran = true;
      } else if (key == "shape") {
        GA_CHECK(!have_shape, IOError, path_, ": .npy header repeats 'shape'");
        shape = tuple();
        have_shape = true;
      } else {
        fail("unknown key '" + key + "'");
      }
      skip_space();
      if (peek() == ',') { ++i_; continue; }
      expect('}');
      break;
    }
    skip_space();
    GA_CHECK(i_ == s_.size(), IOError, path_, ": .npy header has text after its dictionary");
    GA_CHECK(have_descr && have_fortran && have_shape, IOError, path_,
             ": .npy header lacks one of 'descr', 'fortran_order', 'shape'");
  }

 private:
  [[noreturn]] void fail(const std::string& why) const {
    throw IOError(cat(path_, ": malformed .npy header at byte ", i_, ": ", why));
  }
  char peek() const { return i_ < s_.size() ? s_[i_] : '\0'; }
  void skip_space() {
    while (i_ < s_.size() && (s_[i_] == ' ' || s_[i_] == '\n' || s_[i_] == '\t')) ++i_;
  }
  void expect(char c) {
    skip_space();
    if (peek() != c) fail(std::string("expected '") + c + "'");
    ++i_;
  }
  std::string quoted() {
    skip_space();
    const char q = peek();
    if (q != '\'' && q != '"') fail("expected a quoted string");
    const size_t end = s_.find(q, i_ + 1);
    if (end == std::string::npos || end - i_ > 64) fail("unterminated or overlong string");
    std::string out = s_.substr(i_ + 1, end - i_ - 1);
    i_ = end + 1;
    return out;
  }
  Shape tuple() {
    expect('(');
    Shape out;
    while (true) {
      skip_space();
      if (peek() == ')') { ++i_; break; }
      if (peek() < '0' || peek() > '9') fail("expected a dimension");
      int64_t v = 0;
      while (peek() >= '0' && peek() <= '9') {
        if (v > (std::numeric_limits<int64_t>::max() - 9) / 10) fail("dimension too large");
        v = v * 10 + (s_[i_++] - '0');
      }
      // numpy may write 3L (Python 2); accept it.
      if (peek() == 'L') ++i_;
      out.push_back(v);
      if (out.size() > 32) fail("more than 32 dimensions");
      skip_space();
      if (peek() == ',') { ++i_; continue; }
      expect(')');
      break;
    }
    return out;
  }

  const std::string& s_;
  const std::string& path_;
  size_t i_ = 0;
};

}  // namespace detail

/// Writes `t` to `path` as a .npy v1.0 file (C order, little-endian; any layout of `t`).
/// Atomic: a temporary file in the same directory is renamed into place, so `path` never
/// holds a partial array. Refuses (IOError) to replace an existing `path` unless `overwrite`.
/// bf16 has no numpy dtype: a DTypeError (convert to f32 first).
inline void save_npy(const std::string& path, const Tensor& t, bool overwrite = false) {
  GA_CHECK(t.defined(), ValueError, "save_npy: ", path, ": undefined tensor");
  const char* descr = detail::npy_descr(t.dtype());
  GA_CHECK(descr != nullptr, DTypeError, "save_npy: ", path, ": numpy has no ", dtype_name(t.dtype()),
           " dtype; convert the tensor to f32 first");
  Tensor c = t.device().is_cpu() ? t : t.cpu();
  if (!c.is_contiguous()) c = c.contiguous();
  const std::string header = detail::npy_header(descr, c.shape());
  const size_t nbytes = static_cast<size_t>(c.numel()) * dtype_size(c.dtype());
  detail::write_file_atomically(path, {{header.data(), header.size(), "the header"}, {c.raw_data(), nbytes, "the data"}},
                                overwrite);
}

/// Parses .npy bytes (versions 1.0, 2.0 and 3.0) holding a C-order little-endian array of one
/// of our dtypes into a new CPU tensor; `path` is only used in messages. IOError naming
/// it when the bytes are not a .npy file, the header is malformed, the array is Fortran-ordered,
/// has a dtype we lack (e.g. '>f4', '<U8', objects), or the data is longer or shorter than its
/// shape needs. Reads only [data, data + size).
inline Tensor parse_npy(const uint8_t* data, size_t size, const std::string& path) {
  GA_CHECK(size >= 10 && std::memcmp(data, "\x93NUMPY", 6) == 0, IOError, path,
           ": not a .npy file (no \\x93NUMPY magic)");
  const unsigned major = data[6];
  GA_CHECK(major >= 1 && major <= 3, IOError, path, ": .npy version ", major, " is not supported (1, 2, 3 are)");
  size_t header_len = 0, header_at = 0;
  auto byte = [&](size_t i) { return static_cast<size_t>(data[i]); };
  if (major == 1) {
    header_len = byte(8) | (byte(9) << 8);
    header_at = 10;
  } else {
    GA_CHECK(size >= 12, IOError, path, ": truncated .npy header");
    header_len = byte(8) | (byte(9) << 8) | (byte(10) << 16) | (byte(11) << 24);
    header_at = 12;
  }
  GA_CHECK(header_len <= size - header_at, IOError, path, ": .npy header length ", header_len,
           " runs past the end of the file (", size, " bytes)");
  GA_CHECK(header_len <= 1'000'000, IOError, path, ": .npy header length ", header_len, " is implausibly large");
  const std::string header(reinterpret_cast<const char*>(data) + header_at, header_len);
  std::string descr;
  bool fortran = false;
  Shape shape;
  detail::NpyHeaderParser(header, path).parse(descr, fortran, shape);
  DType dt{};
  GA_CHECK(detail::npy_dtype(descr, dt), IOError, path, ": .npy dtype '", descr,
           "' is not supported (little-endian f4, f8, f2, i4, i8, u1, b1 are)");
  GA_CHECK(!fortran, IOError, path, ": Fortran-ordered .npy arrays are not supported");
  // The product of the non-zero dims must fit in int64 even when a zero dim makes the count 0:
  // the tensor's strides are built from it.
  uint64_t count = 1, nonzero = 1;
  const uint64_t limit = static_cast<uint64_t>(std::numeric_limits<int64_t>::max());
  for (int64_t d : shape) {
    const uint64_t u = static_cast<uint64_t>(d);
    GA_CHECK(d == 0 || nonzero <= limit / u, IOError, path, ": .npy shape overflows");
    if (d != 0) nonzero *= u;
    count *= u;
  }
  const uint64_t available = size - header_at - header_len;
  GA_CHECK(count <= available / dtype_size(dt) && count * dtype_size(dt) == available, IOError, path,
           ": .npy data is ", available, " bytes, the header's shape and dtype need ",
           count <= available ? std::to_string(count * dtype_size(dt)) : std::string("more"));
  Tensor t = empty(shape, dt);
  if (count == 0) return t;
  const uint8_t* src = data + header_at + header_len;
  if (dt == DType::b8) {
    bool* q = t.data_ptr<bool>();
    for (uint64_t i = 0; i < count; ++i) {
      GA_CHECK(src[i] <= 1, IOError, path, ": .npy bool element ", i, " is neither 0 nor 1");
      q[i] = src[i] != 0;
    }
  } else {
    std::memcpy(t.raw_data(), src, static_cast<size_t>(available));
  }
  return t;
}

/// Reads the .npy file at `path` (see parse_npy). IOError naming it when it cannot be read.
inline Tensor load_npy(const std::string& path) {
  std::ifstream in(path, std::ios::binary);
  GA_CHECK(in.good(), IOError, path, ": cannot open");
  const std::string bytes((std::istreambuf_iterator<char>(in)), std::istreambuf_iterator<char>());
  GA_CHECK(!in.bad(), IOError, path, ": cannot read");
  return parse_npy(reinterpret_cast<const uint8_t*>(bytes.data()), bytes.size(), path);
}

}  // namespace ga::io
