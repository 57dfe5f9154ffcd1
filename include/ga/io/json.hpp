// JSON: a small value type and a strict parser (RFC 8259, nothing more) for the files we
// read from users: safetensors headers, __metadata__ values, config.json. Strict because
// these come from untrusted files: malformed text is an IOError naming the file and the
// byte offset, never a guess, a crash or a hang (depth is bounded, numbers are bounded).
#pragma once
#include <charconv>
#include <cstddef>
#include <cmath>
#include <cstdint>
#include <map>
#include <string>
#include <string_view>
#include <utility>
#include <vector>

#include "../core/error.hpp"

namespace ga::io {

/// One JSON value: null, boolean, number, string, array or object. Objects keep their keys
/// in file order (a safetensors header's order is meaningful to users) and reject duplicates.
/// Accessors of the wrong kind throw ValueError; callers that know the file wrap that in an
/// IOError naming it.
class Json {
 public:
  enum class Kind { null, boolean, number, string, array, object };

  Json() = default;  // null
  Json(std::nullptr_t) {}
  Json(bool b) : kind_(Kind::boolean), bool_(b) {}
  Json(double d) : kind_(Kind::number), number_(d) {
    GA_CHECK(std::isfinite(d), ValueError, "json: numbers must be finite, got ", d);
    exact_int_ = d >= -9223372036854775808.0 && d < 9223372036854775808.0 && d == std::floor(d);
    if (exact_int_) int_ = static_cast<int64_t>(d);
  }
  Json(int64_t i) : kind_(Kind::number), number_(static_cast<double>(i)), int_(i), exact_int_(true) {}
  Json(int i) : Json(static_cast<int64_t>(i)) {}
  Json(std::string s) : kind_(Kind::string), string_(std::move(s)) {}
  Json(const char* s) : Json(std::string(s)) {}
  static Json array() { Json j; j.kind_ = Kind::array; return j; }
  static Json object() { Json j; j.kind_ = Kind::object; return j; }

  Kind kind() const { return kind_; }
  bool is_null() const { return kind_ == Kind::null; }
  bool is_bool() const { return kind_ == Kind::boolean; }
  bool is_number() const { return kind_ == Kind::number; }
  /// A number whose value is an integer representable as int64 (1, -3, 2.0, 1e3).
  bool is_int() const { return kind_ == Kind::number && exact_int_; }
  bool is_string() const { return kind_ == Kind::string; }
  bool is_array() const { return kind_ == Kind::array; }
  bool is_object() const { return kind_ == Kind::object; }
  /// What this value is, for error messages ("a string", "an object", ...).
  const char* kind_name() const { return kind_name(kind_); }

  bool as_bool() const { expect(Kind::boolean); return bool_; }
  double as_number() const { expect(Kind::number); return number_; }
  /// The value as int64; requires is_int().
  int64_t as_int() const {
    expect(Kind::number);
    GA_CHECK(exact_int_, ValueError, "json: expected an integer, got ", number_);
    return int_;
  }
  const std::string& as_string() const { expect(Kind::string); return string_; }

  /// Elements of an array, or members of an object.
  size_t size() const {
    GA_CHECK(kind_ == Kind::array || kind_ == Kind::object, ValueError,
             "json: size() of ", kind_name(), ", expected an array or an object");
    return kind_ == Kind::array ? items_.size() : keys_.size();
  }
  /// Array element i (checked).
  const Json& operator[](size_t i) const {
    expect(Kind::array);
    GA_CHECK(i < items_.size(), IndexError, "json: index ", i, " out of range for an array of ",
             items_.size());
    return items_[i];
  }
  void push_back(Json v) { expect(Kind::array); items_.push_back(std::move(v)); }

  /// Object keys in insertion (file) order.
  const std::vector<std::string>& keys() const { expect(Kind::object); return keys_; }
  /// Object member values, parallel to keys().
  const std::vector<Json>& values() const {
    GA_CHECK(kind_ == Kind::array || kind_ == Kind::object, ValueError,
             "json: values() of ", kind_name(), ", expected an array or an object");
    return items_;
  }
  bool contains(const std::string& key) const { expect(Kind::object); return index_.count(key) != 0; }
  /// The member named `key`, or nullptr.
  const Json* find(const std::string& key) const {
    expect(Kind::object);
    auto it = index_.find(key);
    return it == index_.end() ? nullptr : &items_[it->second];
  }
  /// The member named `key`; KeyError when absent.
  const Json& at(const std::string& key) const {
    const Json* v = find(key);
    GA_CHECK(v != nullptr, KeyError, "json: no key \"", key, "\"");
    return *v;
  }
  /// Adds a member, or replaces it in place (keeping its position) when present.
  void set(const std::string& key, Json v) {
    expect(Kind::object);
    auto it = index_.find(key);
    if (it != index_.end()) {
      items_[it->second] = std::move(v);
      return;
    }
    index_.emplace(key, keys_.size());
    keys_.push_back(key);
    items_.push_back(std::move(v));
  }
  /// Adds a member; returns false (and changes nothing) when the key already exists.
  bool insert_new(std::string key, Json v) {
    expect(Kind::object);
    if (!index_.emplace(key, keys_.size()).second) return false;
    keys_.push_back(std::move(key));
    items_.push_back(std::move(v));
    return true;
  }

  /// Compact JSON text; strings are escaped so the output always parses back to this value
  /// (given valid UTF-8 strings; invalid bytes are written through unchanged).
  std::string dump() const {
    std::string out;
    dump_into(out);
    return out;
  }

  static const char* kind_name(Kind k) {
    switch (k) {
      case Kind::null: return "null";
      case Kind::boolean: return "a boolean";
      case Kind::number: return "a number";
      case Kind::string: return "a string";
      case Kind::array: return "an array";
      case Kind::object: return "an object";
    }
    return "?";
  }

 private:
  void expect(Kind k) const {
    GA_CHECK(kind_ == k, ValueError, "json: expected ", kind_name(k), ", got ", kind_name());
  }

  static void dump_string(std::string& out, const std::string& s) {
    out += '"';
    for (unsigned char c : s) {
      switch (c) {
        case '"': out += "\\\""; break;
        case '\\': out += "\\\\"; break;
        case '\n': out += "\\n"; break;
        case '\r': out += "\\r"; break;
        case '\t': out += "\\t"; break;
        case '\b': out += "\\b"; break;
        case '\f': out += "\\f"; break;
        default:
          if (c < 0x20) {
            static const char* hex = "0123456789abcdef";
            out += "\\u00";
            out += hex[c >> 4];
            out += hex[c & 15];
          } else {
            out += static_cast<char>(c);
          }
      }
    }
    out += '"';
  }

  void dump_into(std::string& out) const {
    switch (kind_) {
      case Kind::null: out += "null"; break;
      case Kind::boolean: out += bool_ ? "true" : "false"; break;
      case Kind::number: {
        char buf[32];
        // to_chars is locale-independent and gives the shortest text that reads back exactly.
        // An integer prints from int_, which is exact where number_ may be rounded (2^63 - 1);
        // -0.0 prints as a double to keep its sign.
        const bool negative_zero = number_ == 0.0 && std::signbit(number_);
        auto r = exact_int_ && !negative_zero ? std::to_chars(buf, buf + sizeof buf, int_)
                                              : std::to_chars(buf, buf + sizeof buf, number_);
        out.append(buf, r.ptr);
        break;
      }
      case Kind::string: dump_string(out, string_); break;
      case Kind::array:
        out += '[';
        for (size_t i = 0; i < items_.size(); ++i) {
          if (i) out += ',';
          items_[i].dump_into(out);
        }
        out += ']';
        break;
      case Kind::object:
        out += '{';
        for (size_t i = 0; i < keys_.size(); ++i) {
          if (i) out += ',';
          dump_string(out, keys_[i]);
          out += ':';
          items_[i].dump_into(out);
        }
        out += '}';
        break;
    }
  }

  Kind kind_ = Kind::null;
  bool bool_ = false;
  double number_ = 0.0;
  int64_t int_ = 0;
  bool exact_int_ = false;
  std::string string_;
  std::vector<Json> items_;             // array elements, or object values
  std::vector<std::string> keys_;       // object keys, parallel to items_
  std::map<std::string, size_t> index_; // object key -> position
};

/// Length of the well-formed UTF-8 sequence starting at p (Unicode Table 3-7: no overlong
/// forms, no surrogates, nothing above U+10FFFF), or 0 when there is none. Reads only [p, end).
inline size_t utf8_sequence_length(const char* p, const char* end) {
  if (p == end) return 0;
  const ptrdiff_t left = end - p;
  const auto b = [&](ptrdiff_t i) { return static_cast<unsigned char>(p[i]); };
  const auto cont = [&](ptrdiff_t i) { return i < left && (b(i) & 0xC0) == 0x80; };
  const unsigned char c = b(0);
  if (c < 0x80) return 1;
  if (c >= 0xC2 && c <= 0xDF) return cont(1) ? 2 : 0;
  if (c >= 0xE0 && c <= 0xEF) {
    if (left < 2) return 0;
    const unsigned char lo = c == 0xE0 ? 0xA0 : 0x80, hi = c == 0xED ? 0x9F : 0xBF;
    return b(1) >= lo && b(1) <= hi && cont(2) ? 3 : 0;
  }
  if (c >= 0xF0 && c <= 0xF4) {
    if (left < 2) return 0;
    const unsigned char lo = c == 0xF0 ? 0x90 : 0x80, hi = c == 0xF4 ? 0x8F : 0xBF;
    return b(1) >= lo && b(1) <= hi && cont(2) && cont(3) ? 4 : 0;
  }
  return 0;
}

/// Whether `s` is well-formed UTF-8 (what every JSON string must be).
inline bool is_valid_utf8(std::string_view s) {
  const char* p = s.data();
  const char* end = p + s.size();
  while (p != end) {
    const size_t n = utf8_sequence_length(p, end);
    if (n == 0) return false;
    p += n;
  }
  return true;
}

namespace detail {

/// Recursive-descent parser over a byte range. Every read is bounds-checked against `end_`.
class JsonParser {
 public:
  static constexpr int kMaxDepth = 64;
  static constexpr size_t kMaxNumberChars = 256;

  JsonParser(std::string_view text, const std::string& source, uint64_t base_offset)
      : begin_(text.data()), p_(text.data()), end_(text.data() + text.size()), source_(source),
        base_(base_offset) {}

  Json parse_document() {
    skip_ws();
    Json v = parse_value(0);
    skip_ws();
    if (p_ != end_) fail("unexpected trailing characters after the JSON value");
    return v;
  }

 private:
  [[noreturn]] void fail(const std::string& msg) const { fail_at(p_, msg); }
  [[noreturn]] void fail_at(const char* at, const std::string& msg) const {
    throw IOError(cat(source_, ": invalid JSON at byte ", base_ + static_cast<uint64_t>(at - begin_),
                      ": ", msg));
  }

  void skip_ws() {
    while (p_ != end_ && (*p_ == ' ' || *p_ == '\t' || *p_ == '\n' || *p_ == '\r')) ++p_;
  }

  static std::string describe(char c) {
    const unsigned char u = static_cast<unsigned char>(c);
    if (u >= 0x21 && u < 0x7f) return cat("'", c, "'");
    static const char* hex = "0123456789abcdef";
    return cat("byte 0x", hex[u >> 4], hex[u & 15]);
  }

  Json parse_value(int depth) {
    if (p_ == end_) fail("unexpected end of input, expected a value");
    switch (*p_) {
      case '{': return parse_object(depth + 1);
      case '[': return parse_array(depth + 1);
      case '"': return Json(parse_string());
      case 't': expect_word("true"); return Json(true);
      case 'f': expect_word("false"); return Json(false);
      case 'n': expect_word("null"); return Json();
      default:
        if (*p_ == '-' || (*p_ >= '0' && *p_ <= '9')) return parse_number();
        fail(cat("unexpected ", describe(*p_), ", expected a value"));
    }
  }

  void expect_word(std::string_view w) {
    if (static_cast<size_t>(end_ - p_) < w.size() || std::string_view(p_, w.size()) != w)
      fail(cat("invalid literal, expected '", w, "'"));
    p_ += w.size();
  }

  Json parse_object(int depth) {
    if (depth > kMaxDepth) fail(cat("nesting deeper than ", kMaxDepth, " levels"));
    ++p_;  // '{'
    Json obj = Json::object();
    skip_ws();
    if (p_ != end_ && *p_ == '}') {
      ++p_;
      return obj;
    }
    for (;;) {
      skip_ws();
      if (p_ == end_) fail("unexpected end of input inside an object");
      if (*p_ != '"') fail(cat("unexpected ", describe(*p_), ", expected a string key"));
      const char* key_at = p_;
      std::string key = parse_string();
      skip_ws();
      if (p_ == end_ || *p_ != ':') fail("expected ':' after an object key");
      ++p_;
      skip_ws();
      Json v = parse_value(depth);
      if (!obj.insert_new(key, std::move(v))) fail_at(key_at, cat("duplicate key \"", key, "\""));
      skip_ws();
      if (p_ == end_) fail("unexpected end of input inside an object");
      if (*p_ == ',') { ++p_; continue; }
      if (*p_ == '}') { ++p_; return obj; }
      fail(cat("unexpected ", describe(*p_), ", expected ',' or '}'"));
    }
  }

  Json parse_array(int depth) {
    if (depth > kMaxDepth) fail(cat("nesting deeper than ", kMaxDepth, " levels"));
    ++p_;  // '['
    Json arr = Json::array();
    skip_ws();
    if (p_ != end_ && *p_ == ']') {
      ++p_;
      return arr;
    }
    for (;;) {
      skip_ws();
      arr.push_back(parse_value(depth));
      skip_ws();
      if (p_ == end_) fail("unexpected end of input inside an array");
      if (*p_ == ',') { ++p_; continue; }
      if (*p_ == ']') { ++p_; return arr; }
      fail(cat("unexpected ", describe(*p_), ", expected ',' or ']'"));
    }
  }

  Json parse_number() {
    const char* start = p_;
    auto digits = [&] {
      const char* d = p_;
      while (p_ != end_ && *p_ >= '0' && *p_ <= '9') ++p_;
      return p_ - d;
    };
    bool integral = true;
    if (*p_ == '-') ++p_;
    if (p_ == end_ || !(*p_ >= '0' && *p_ <= '9')) fail("invalid number: expected a digit");
    if (*p_ == '0') {
      ++p_;
      if (p_ != end_ && *p_ >= '0' && *p_ <= '9') fail_at(start, "invalid number: leading zero");
    } else {
      digits();
    }
    if (p_ != end_ && *p_ == '.') {
      ++p_;
      integral = false;
      if (digits() == 0) fail("invalid number: expected a digit after '.'");
    }
    if (p_ != end_ && (*p_ == 'e' || *p_ == 'E')) {
      ++p_;
      integral = false;
      if (p_ != end_ && (*p_ == '+' || *p_ == '-')) ++p_;
      if (digits() == 0) fail("invalid number: expected a digit in the exponent");
    }
    const size_t len = static_cast<size_t>(p_ - start);
    if (len > kMaxNumberChars) fail_at(start, cat("number longer than ", kMaxNumberChars, " characters"));
    if (integral) {
      int64_t i = 0;
      auto r = std::from_chars(start, p_, i);
      // "-0" keeps its sign as the double -0.0 (still is_int(), as_int() == 0).
      if (r.ec == std::errc() && r.ptr == p_ && !(i == 0 && *start == '-')) return Json(i);
      // Too large for int64: fall through and keep it as a (finite) double.
    }
    double d = 0.0;
    auto r = std::from_chars(start, p_, d);
    // Out of range covers both overflow and underflow (1e-400): neither is a value a file of
    // ours means, and rejecting both keeps the check independent of how from_chars reports them.
    if (r.ec == std::errc::result_out_of_range) fail_at(start, "number out of the range of a double");
    if (r.ec != std::errc() || r.ptr != p_) fail_at(start, "invalid number");
    if (!std::isfinite(d)) fail_at(start, "number out of range");
    return Json(d);
  }

  static int hex_value(char c) {
    if (c >= '0' && c <= '9') return c - '0';
    if (c >= 'a' && c <= 'f') return c - 'a' + 10;
    if (c >= 'A' && c <= 'F') return c - 'A' + 10;
    return -1;
  }
  uint32_t read_hex4() {
    if (end_ - p_ < 4) fail("unexpected end of input in a \\u escape");
    uint32_t v = 0;
    for (int i = 0; i < 4; ++i) {
      const int h = hex_value(p_[i]);
      if (h < 0) fail_at(p_ + i, "invalid hex digit in a \\u escape");
      v = v * 16 + static_cast<uint32_t>(h);
    }
    p_ += 4;
    return v;
  }
  static void append_utf8(std::string& out, uint32_t cp) {
    if (cp < 0x80) {
      out += static_cast<char>(cp);
    } else if (cp < 0x800) {
      out += static_cast<char>(0xC0 | (cp >> 6));
      out += static_cast<char>(0x80 | (cp & 0x3F));
    } else if (cp < 0x10000) {
      out += static_cast<char>(0xE0 | (cp >> 12));
      out += static_cast<char>(0x80 | ((cp >> 6) & 0x3F));
      out += static_cast<char>(0x80 | (cp & 0x3F));
    } else {
      out += static_cast<char>(0xF0 | (cp >> 18));
      out += static_cast<char>(0x80 | ((cp >> 12) & 0x3F));
      out += static_cast<char>(0x80 | ((cp >> 6) & 0x3F));
      out += static_cast<char>(0x80 | (cp & 0x3F));
    }
  }

  std::string parse_string() {
    ++p_;  // opening quote
    std::string out;
    for (;;) {
      if (p_ == end_) fail("unexpected end of input inside a string");
      const unsigned char c = static_cast<unsigned char>(*p_);
      if (c == '"') {
        ++p_;
        return out;
      }
      if (c == '\\') {
        const char* esc_at = p_;
        ++p_;
        if (p_ == end_) fail("unexpected end of input in an escape");
        const char e = *p_++;
        switch (e) {
          case '"': out += '"'; break;
          case '\\': out += '\\'; break;
          case '/': out += '/'; break;
          case 'b': out += '\b'; break;
          case 'f': out += '\f'; break;
          case 'n': out += '\n'; break;
          case 'r': out += '\r'; break;
          case 't': out += '\t'; break;
          case 'u': {
            uint32_t cp = read_hex4();
            if (cp >= 0xDC00 && cp <= 0xDFFF) fail_at(esc_at, "unpaired low surrogate in a \\u escape");
            if (cp >= 0xD800 && cp <= 0xDBFF) {
              if (end_ - p_ < 2 || p_[0] != '\\' || p_[1] != 'u')
                fail_at(esc_at, "high surrogate not followed by a low surrogate escape");
              p_ += 2;
              const uint32_t lo = read_hex4();
              if (lo < 0xDC00 || lo > 0xDFFF)
                fail_at(esc_at, "high surrogate not followed by a low surrogate escape");
              cp = 0x10000 + ((cp - 0xD800) << 10) + (lo - 0xDC00);
            }
            append_utf8(out, cp);
            break;
          }
          default: fail_at(esc_at, cat("invalid escape \\", describe(e)));
        }
        continue;
      }
      if (c < 0x20) fail(cat("unescaped control character ", describe(*p_), " in a string"));
      if (c < 0x80) {
        out += static_cast<char>(c);
        ++p_;
        continue;
      }
      const size_t n = utf8_sequence_length(p_, end_);
      if (n == 0) fail(cat("invalid UTF-8 (", describe(*p_), ") in a string"));
      out.append(p_, n);
      p_ += n;
    }
  }

  const char* begin_;
  const char* p_;
  const char* end_;
  const std::string& source_;
  uint64_t base_;
};

}  // namespace detail

/// Parses one JSON document (surrounding whitespace allowed, nothing else). Malformed text,
/// nesting deeper than 64, numbers longer than 256 characters or outside double range, invalid
/// escapes or UTF-8, and duplicate object keys are IOErrors naming `source` (a file path) and
/// the byte offset, counted from `base_offset` (where `text` starts inside that file).
inline Json parse_json(std::string_view text, const std::string& source = "<json>",
                       uint64_t base_offset = 0) {
  return detail::JsonParser(text, source, base_offset).parse_document();
}

}  // namespace ga::io
