// CLIP's byte-pair-encoding tokenizer, id for id the same as OpenAI's simple_tokenizer
// (clip/simple_tokenizer.py + clip.tokenize): the same text cleaning (the ftfy.fix_text
// fixes, html.unescape twice, whitespace collapse, str.lower), the same split pattern and
// the same merges. It depends on nothing but the standard library, ga::Error and the gzip
// reader in ga/io/inflate.hpp.
#pragma once
#include <algorithm>
#include <cstdint>
#include <cstring>
#include <fstream>
#include <iterator>
#include <memory>
#include <mutex>
#include <queue>
#include <string>
#include <string_view>
#include <unordered_map>
#include <utility>
#include <vector>

#include "../core/error.hpp"
#include "../io/inflate.hpp"
#include "unicode_tables.hpp"

namespace ga::clip {

namespace detail {

using U32 = std::u32string;

// ---------------------------------------------------------------------------------------
// UTF-8

/// Decodes strict UTF-8 (no overlongs, no surrogates, nothing above U+10FFFF).
/// Throws ValueError naming the byte offset: the reference receives Python str, which
/// cannot hold invalid UTF-8, so there is no "right" answer to imitate and we refuse.
inline U32 utf8_decode_strict(const std::string& s) {
  U32 out;
  out.reserve(s.size());
  const auto* p = reinterpret_cast<const unsigned char*>(s.data());
  const size_t n = s.size();
  size_t i = 0;
  while (i < n) {
    unsigned b = p[i];
    if (b < 0x80) {
      out.push_back(b);
      ++i;
      continue;
    }
    int need;
    char32_t cp;
    unsigned lo = 0x80, hi = 0xBF;
    if (b >= 0xC2 && b <= 0xDF) {
      need = 1;
      cp = b & 0x1F;
    } else if (b >= 0xE0 && b <= 0xEF) {
      need = 2;
      cp = b & 0x0F;
      if (b == 0xE0) lo = 0xA0;
      if (b == 0xED) hi = 0x9F;
    } else if (b >= 0xF0 && b <= 0xF4) {
      need = 3;
      cp = b & 0x07;
      if (b == 0xF0) lo = 0x90;
      if (b == 0xF4) hi = 0x8F;
    } else {
      throw ValueError(cat("tokenizer: invalid UTF-8 in input text: byte 0x", std::hex, b,
                           std::dec, " at offset ", i));
    }
    if (i + need >= n) {
      throw ValueError(cat("tokenizer: invalid UTF-8 in input text: truncated sequence at offset ", i));
    }
    for (int k = 1; k <= need; ++k) {
      unsigned c = p[i + k];
      unsigned l = k == 1 ? lo : 0x80, h = k == 1 ? hi : 0xBF;
      if (c < l || c > h) {
        throw ValueError(cat("tokenizer: invalid UTF-8 in input text: bad continuation byte 0x",
                             std::hex, c, std::dec, " at offset ", i + k));
      }
      cp = (cp << 6) | (c & 0x3F);
    }
    out.push_back(cp);
    i += need + 1;
  }
  return out;
}

/// Encodes code points as UTF-8; lone surrogates (which only text fixing can create, and
/// which it replaces before the end) are written as their 3-byte form, like "surrogatepass".
inline void utf8_append(std::string& out, char32_t c) {
  if (c < 0x80) {
    out.push_back(static_cast<char>(c));
  } else if (c < 0x800) {
    out.push_back(static_cast<char>(0xC0 | (c >> 6)));
    out.push_back(static_cast<char>(0x80 | (c & 0x3F)));
  } else if (c < 0x10000) {
    out.push_back(static_cast<char>(0xE0 | (c >> 12)));
    out.push_back(static_cast<char>(0x80 | ((c >> 6) & 0x3F)));
    out.push_back(static_cast<char>(0x80 | (c & 0x3F)));
  } else {
    out.push_back(static_cast<char>(0xF0 | (c >> 18)));
    out.push_back(static_cast<char>(0x80 | ((c >> 12) & 0x3F)));
    out.push_back(static_cast<char>(0x80 | ((c >> 6) & 0x3F)));
    out.push_back(static_cast<char>(0x80 | (c & 0x3F)));
  }
}

inline std::string utf8_encode(const U32& s) {
  std::string out;
  out.reserve(s.size());
  for (char32_t c : s) utf8_append(out, c);
  return out;
}

/// Decodes UTF-8 the way Python's bytes.decode("utf-8", errors="replace") does: each
/// maximal invalid subsequence becomes one U+FFFD.
inline U32 utf8_decode_replace(const std::string& s) {
  U32 out;
  const auto* p = reinterpret_cast<const unsigned char*>(s.data());
  const size_t n = s.size();
  size_t i = 0;
  while (i < n) {
    unsigned b = p[i];
    if (b < 0x80) {
      out.push_back(b);
      ++i;
      continue;
    }
    int need = 0;
    char32_t cp = 0;
    unsigned lo = 0x80, hi = 0xBF;
    if (b >= 0xC2 && b <= 0xDF) {
      need = 1, cp = b & 0x1F;
    } else if (b >= 0xE0 && b <= 0xEF) {
      need = 2, cp = b & 0x0F;
      if (b == 0xE0) lo = 0xA0;
      if (b == 0xED) hi = 0x9F;
    } else if (b >= 0xF0 && b <= 0xF4) {
      need = 3, cp = b & 0x07;
      if (b == 0xF0) lo = 0x90;
      if (b == 0xF4) hi = 0x8F;
    } else {
      out.push_back(0xFFFD);
      ++i;
      continue;
    }
    int k = 1;
    for (; k <= need && i + k < n; ++k) {
      unsigned c = p[i + k];
      unsigned l = k == 1 ? lo : 0x80, h = k == 1 ? hi : 0xBF;
      if (c < l || c > h) break;
      cp = (cp << 6) | (c & 0x3F);
    }
    if (k == need + 1) {
      out.push_back(cp);
      i += need + 1;
    } else {
      out.push_back(0xFFFD);
      i += k;
    }
  }
  return out;
}

// ---------------------------------------------------------------------------------------
// Table look-ups (all tables are sorted; binary search).

template <size_t N>
bool in_ranges(const unicode::CodeRange (&t)[N], char32_t c) {
  size_t lo = 0, hi = N;
  while (lo < hi) {
    size_t mid = (lo + hi) / 2;
    if (t[mid].last < c) lo = mid + 1;
    else hi = mid;
  }
  return lo < N && t[lo].first <= c;
}

template <class T, size_t N>
const T* find_cp(const T (&t)[N], char32_t c) {
  auto it = std::lower_bound(std::begin(t), std::end(t), c,
                             [](const T& e, char32_t v) { return e.cp < v; });
  return (it != std::end(t) && it->cp == c) ? it : nullptr;
}

inline bool is_py_space(char32_t c) { return in_ranges(unicode::kPySpace, c); }
inline bool is_regex_space(char32_t c) { return in_ranges(unicode::kRegexSpace, c); }

inline uint32_t combining_class(char32_t c) {
  if (c < 0x300) return 0;
  const auto& t = unicode::kCombiningClass;
  auto it = std::lower_bound(std::begin(t), std::end(t), c,
                             [](const unicode::ValueRange& e, char32_t v) { return e.last < v; });
  return (it != std::end(t) && it->first <= c) ? it->value : 0;
}

inline uint32_t mojibake_mask(char32_t c) {
  const auto* e = find_cp(unicode::kMojibakeCategories, c);
  return e ? e->mask : 0;
}

// ---------------------------------------------------------------------------------------
// Python str.lower (full mappings, with the final-sigma rule CPython applies).

inline void lower_into(U32& out, const U32& s) {
  out.clear();
  out.reserve(s.size());
  for (size_t i = 0; i < s.size(); ++i) {
    char32_t c = s[i];
    if (c < 0x80) {
      out.push_back(c >= 'A' && c <= 'Z' ? c + 32 : c);
      continue;
    }
    if (c == 0x3A3) {  // capital sigma: final form after a cased letter, not before one
      size_t j = i;
      bool final_sigma = false;
      while (j > 0 && in_ranges(unicode::kCaseIgnorable, s[j - 1])) --j;
      if (j > 0 && in_ranges(unicode::kCased, s[j - 1])) {
        size_t k = i + 1;
        while (k < s.size() && in_ranges(unicode::kCaseIgnorable, s[k])) ++k;
        final_sigma = k == s.size() || !in_ranges(unicode::kCased, s[k]);
      }
      out.push_back(final_sigma ? 0x3C2 : 0x3C3);
      continue;
    }
    if (const auto* m = find_cp(unicode::kLowerMulti, c)) {
      U32 d = utf8_decode_strict(m->utf8);
      out += d;
      continue;
    }
    const auto& t = unicode::kLowerRuns;
    auto it = std::lower_bound(std::begin(t), std::end(t), c,
                               [](const unicode::LowerRun& e, char32_t v) { return e.last < v; });
    if (it != std::end(t) && it->first <= c && (c - it->first) % it->stride == 0) {
      out.push_back(static_cast<char32_t>(static_cast<int64_t>(c) + it->delta));
    } else {
      out.push_back(c);
    }
  }
}

// ---------------------------------------------------------------------------------------
// NFC (unicodedata.normalize("NFC")), as ftfy applies it at the end of every pass.

constexpr char32_t kSBase = 0xAC00, kLBase = 0x1100, kVBase = 0x1161, kTBase = 0x11A7;
constexpr int kLCount = 19, kVCount = 21, kTCount = 28, kNCount = kVCount * kTCount,
              kSCount = kLCount * kNCount;

inline void decompose_into(U32& out, char32_t c) {
  if (c >= kSBase && c < kSBase + kSCount) {
    int s = static_cast<int>(c - kSBase);
    out.push_back(kLBase + s / kNCount);
    out.push_back(kVBase + (s % kNCount) / kTCount);
    if (s % kTCount) out.push_back(kTBase + s % kTCount);
    return;
  }
  if (const auto* d = find_cp(unicode::kDecomposition, c)) {
    decompose_into(out, d->first);
    if (d->second) decompose_into(out, d->second);
    return;
  }
  out.push_back(c);
}

inline char32_t compose_pair(char32_t a, char32_t b) {
  if (a >= kLBase && a < kLBase + kLCount && b >= kVBase && b < kVBase + kVCount) {
    return kSBase + ((a - kLBase) * kVCount + (b - kVBase)) * kTCount;
  }
  if (a >= kSBase && a < kSBase + kSCount && (a - kSBase) % kTCount == 0 && b > kTBase &&
      b < kTBase + kTCount) {
    return a + (b - kTBase);
  }
  const auto& t = unicode::kComposition;
  auto it = std::lower_bound(std::begin(t), std::end(t), std::make_pair(a, b),
                             [](const unicode::Composition& e, std::pair<char32_t, char32_t> v) {
                               return e.first < v.first || (e.first == v.first && e.second < v.second);
                             });
  return (it != std::end(t) && it->first == a && it->second == b) ? it->composite : 0;
}

inline U32 nfc(const U32& s) {
  bool simple = true;  // ASCII and Latin-1 letters without marks are already NFC
  for (char32_t c : s) {
    if (c >= 0x300) { simple = false; break; }
  }
  if (simple) return s;
  U32 d;
  d.reserve(s.size() + 8);
  for (char32_t c : s) decompose_into(d, c);
  // Canonical ordering: stable sort of each run of non-starters by combining class.
  for (size_t i = 0; i < d.size();) {
    if (combining_class(d[i]) == 0) { ++i; continue; }
    size_t j = i;
    while (j < d.size() && combining_class(d[j]) != 0) ++j;
    std::stable_sort(d.begin() + i, d.begin() + j, [](char32_t x, char32_t y) {
      return combining_class(x) < combining_class(y);
    });
    i = j;
  }
  U32 out;
  out.reserve(d.size());
  long starter = -1;
  int last_cc = -1;  // class of the last character kept after the starter; -1: none
  for (char32_t c : d) {
    int cc = static_cast<int>(combining_class(c));
    if (starter >= 0 && (last_cc == -1 || (last_cc != 0 && last_cc < cc))) {
      if (char32_t comp = compose_pair(out[starter], c)) {
        out[starter] = comp;
        continue;
      }
    }
    if (cc == 0) {
      starter = static_cast<long>(out.size());
      last_cc = -1;
    } else {
      last_cc = cc;
    }
    out.push_back(c);
  }
  return out;
}

// ---------------------------------------------------------------------------------------
// HTML entities: Python's html.unescape, and ftfy's stricter unescape_html.

inline const char* find_entity(const std::string& name) {
  const auto& t = unicode::kEntities;
  auto it = std::lower_bound(std::begin(t), std::end(t), name,
                             [](const unicode::Entity& e, const std::string& v) { return v.compare(e.name) > 0; });
  return (it != std::end(t) && name == it->name) ? it->utf8 : nullptr;
}

inline bool entity_without_semicolon(const std::string& name) {
  const auto& t = unicode::kEntityNoSemicolon;
  auto it = std::lower_bound(std::begin(t), std::end(t), name,
                             [](const char* e, const std::string& v) { return v.compare(e) > 0; });
  return it != std::end(t) && name == *it;
}

inline bool is_ascii_digit(char32_t c) { return c >= '0' && c <= '9'; }
inline bool is_ascii_hex(char32_t c) {
  return is_ascii_digit(c) || (c >= 'a' && c <= 'f') || (c >= 'A' && c <= 'F');
}
inline bool is_ascii_alnum(char32_t c) {
  return is_ascii_digit(c) || (c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z');
}

/// Python's html.unescape (html5 named references, the longest-prefix rule for names
/// without ';', and numeric references with the HTML5 replacement rules).
inline U32 html_unescape(const U32& s) {
  if (s.find(U'&') == U32::npos) return s;
  U32 out;
  out.reserve(s.size());
  size_t i = 0;
  const size_t n = s.size();
  while (i < n) {
    if (s[i] != U'&') {
      out.push_back(s[i++]);
      continue;
    }
    size_t j = i + 1;
    if (j < n && s[j] == U'#') {
      bool hex = j + 1 < n && (s[j + 1] == U'x' || s[j + 1] == U'X');
      size_t k = j + (hex ? 2 : 1);
      size_t start = k;
      uint64_t num = 0;
      while (k < n && (hex ? is_ascii_hex(s[k]) : is_ascii_digit(s[k]))) {
        char32_t c = s[k];
        uint32_t v = is_ascii_digit(c) ? c - '0' : (c | 0x20) - 'a' + 10;
        num = num * (hex ? 16 : 10) + v;
        if (num > 0x110000) num = 0x110000;  // saturate: anything above is U+FFFD anyway
        ++k;
      }
      if (k == start) {  // "&#" without digits: not a reference
        out.push_back(s[i++]);
        continue;
      }
      if (k < n && s[k] == U';') ++k;
      if (const auto* r = find_cp(unicode::kInvalidCharrefs, static_cast<char32_t>(num))) {
        out += utf8_decode_strict(r->utf8);
      } else if ((num >= 0xD800 && num <= 0xDFFF) || num > 0x10FFFF) {
        out.push_back(0xFFFD);
      } else if (!in_ranges(unicode::kInvalidCodepoints, static_cast<char32_t>(num))) {
        out.push_back(static_cast<char32_t>(num));
      }
      i = k;
      continue;
    }
    size_t k = j;
    while (k < n && k - j < 32) {
      char32_t c = s[k];
      if (c == U'\t' || c == U'\n' || c == U'\f' || c == U' ' || c == U'<' || c == U'&' ||
          c == U'#' || c == U';')
        break;
      ++k;
    }
    if (k == j) {
      out.push_back(s[i++]);
      continue;
    }
    bool semi = k < n && s[k] == U';';
    size_t end = semi ? k + 1 : k;
    // Names are ASCII; a non-ASCII name can only match by an ASCII prefix.
    std::string name;
    for (size_t q = j; q < k; ++q) name.push_back(s[q] < 0x80 ? static_cast<char>(s[q]) : '\x01');
    const char* val = nullptr;
    if (semi) val = find_entity(name);
    else if (entity_without_semicolon(name)) val = find_entity(name);
    if (val) {
      out += utf8_decode_strict(val);
      i = end;
      continue;
    }
    // Longest prefix (at least 2 characters) that is a name accepted without ';'.
    bool done = false;
    for (size_t x = name.size() + (semi ? 1 : 0) - 1; x >= 2; --x) {
      if (x > name.size()) continue;
      std::string pre = name.substr(0, x);
      if (entity_without_semicolon(pre)) {
        out += utf8_decode_strict(find_entity(pre));
        out.append(s.begin() + j + x, s.begin() + end);
        done = true;
        break;
      }
    }
    if (!done) out.append(s.begin() + i, s.begin() + end);
    i = end;
  }
  return out;
}

/// ftfy.fixes.unescape_html: only "&name;" of html5 (plus ftfy's all-caps names) and
/// numeric references that html.unescape fully resolves.
inline U32 ftfy_unescape_html(const U32& s) {
  if (s.find(U'&') == U32::npos) return s;
  U32 out;
  size_t i = 0;
  const size_t n = s.size();
  while (i < n) {
    if (s[i] != U'&') {
      out.push_back(s[i++]);
      continue;
    }
    size_t j = i + 1;
    bool numeric = j < n && s[j] == U'#';
    if (numeric) ++j;
    size_t k = j;
    while (k < n && is_ascii_alnum(s[k])) ++k;
    if (k == j || k - j > 24 || k >= n || s[k] != U';') {
      out.push_back(s[i++]);
      continue;
    }
    U32 match(s.begin() + i, s.begin() + k + 1);
    if (!numeric) {
      std::string name(match.begin() + 1, match.end() - 1);
      const char* v = find_entity(name);
      if (!v) {
        const auto& t = unicode::kEntitiesUpper;
        auto it = std::lower_bound(std::begin(t), std::end(t), name,
                                   [](const unicode::Entity& e, const std::string& x) { return x.compare(e.name) > 0; });
        if (it != std::end(t) && name == it->name) v = it->utf8;
      }
      if (v) out += utf8_decode_strict(v);
      else out += match;
    } else {
      U32 u = html_unescape(match);
      out += (u.find(U';') != U32::npos) ? match : u;
    }
    i = k + 1;
  }
  return out;
}

// ---------------------------------------------------------------------------------------
// ftfy.fix_encoding: undo mojibake (UTF-8 decoded as a single-byte encoding).

enum MojibakeBit : uint32_t {
  kC1 = 1u << 0, kBad = 1u << 1, kLowerAcc = 1u << 2, kUpperAcc = 1u << 3, kBox = 1u << 4,
  kStartP = 1u << 5, kEndP = 1u << 6, kCurrency = 1u << 7, kNumeric = 1u << 8, kLaw = 1u << 9,
  kLowerCommon = 1u << 10, kUpperCommon = 1u << 11, kCommon = 1u << 12, kKaomoji = 1u << 13,
  kFirst2 = 1u << 16, kFirst3 = 1u << 17, kFirst4 = 1u << 18, kCont = 1u << 19,
  kContStrict = 1u << 20,
};

inline bool one_of(char32_t c, const char32_t* set) {
  for (; *set; ++set)
    if (*set == c) return true;
  return false;
}

/// ftfy.badness.is_bad: does any of BADNESS_RE's alternatives match somewhere?
inline bool is_bad(const U32& t) {
  const size_t n = t.size();
  std::vector<uint32_t> m(n + 3, 0);
  for (size_t i = 0; i < n; ++i) m[i] = mojibake_mask(t[i]);
  auto at = [&](size_t i) -> char32_t { return i < n ? t[i] : 0xFFFFFFFF; };
  auto lat = [](char32_t c) { return (c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z'); };
  auto low = [](char32_t c) { return c >= 'a' && c <= 'z'; };
  const uint32_t accbox_etc = kBad | kLowerAcc | kUpperAcc | kBox | kStartP | kEndP | kCurrency | kNumeric | kLaw;
  const uint32_t after_bad = kLowerAcc | kUpperAcc | kBox | kStartP | kEndP | kCurrency | kNumeric | kLaw;
  for (size_t i = 0; i < n; ++i) {
    const char32_t c0 = t[i], c1 = at(i + 1), c2 = at(i + 2);
    const uint32_t m0 = m[i], m1 = m[i + 1], m2 = m[i + 2];
    const bool h1 = i + 1 < n, h2 = i + 2 < n;
    if (m0 & kC1) return true;
    if (h1 && (m0 & accbox_etc) && (m1 & kBad)) return true;
    if (h2 && lat(c0) && (m1 & (kLowerCommon | kUpperCommon)) && (m2 & kBad)) return true;
    if (h1 && (m0 & kBad) && (m1 & after_bad)) return true;
    if (h1 && (m0 & (kLowerAcc | kLowerCommon | kBox | kEndP | kCurrency | kNumeric)) && (m1 & kUpperAcc)) return true;
    if (h1 && (m0 & (kBox | kEndP | kCurrency | kNumeric)) && (m1 & kLowerAcc)) return true;
    if (h1 && (m0 & (kLowerAcc | kBox | kEndP)) && (m1 & kCurrency)) return true;
    if (h2 && is_py_space(c0) && (m1 & kUpperAcc) && (m2 & kCurrency)) return true;
    if (h1 && (m0 & (kUpperAcc | kBox)) && (m1 & (kNumeric | kLaw))) return true;
    if (h2 && (m0 & (kLowerAcc | kUpperAcc | kBox | kCurrency | kEndP)) && (m1 & kStartP) && (m2 & kNumeric)) return true;
    if (h2 && (m0 & (kLowerAcc | kUpperAcc | kCurrency | kNumeric | kBox | kLaw)) && (m1 & kEndP) && (m2 & kStartP)) return true;
    if (h1 && (m0 & (kCurrency | kNumeric | kBox)) && (m1 & kStartP)) return true;
    if (h2 && low(c0) && (m1 & kUpperAcc) && (m2 & (kStartP | kCurrency))) return true;
    if (h1 && (m0 & kBox) && (m1 & kKaomoji)) return true;
    if (h1 && (m0 & (kLowerAcc | kUpperAcc | kCurrency | kNumeric | kStartP | kEndP | kLaw)) && (m1 & kBox)) return true;
    if (h1 && (m0 & kBox) && (m1 & kEndP)) return true;
    if (h2 && (m0 & (kLowerAcc | kUpperAcc)) && (m1 & (kStartP | kEndP)) &&
        (c2 == U'_' || in_ranges(unicode::kPyAlnum, c2))) return true;
    if (h1 && (c0 == 0x152 || c0 == 0x153) && !lat(c1)) return true;
    if (h1 && (m0 & kUpperAcc) && c1 == 0xB0) return true;
    static const char32_t k20[] = {0x20AC, 0x153, 0x160, 0x161, 0xA2, 0xA3, 0x178, 0x17E, 0xA0, 0xAD,
                                   0xAE, 0xA9, 0xB0, 0xB7, 0xBB, 0x2013, 0x2014, 0xB4, 0};
    if (h1 && (c0 == 0xC2 || c0 == 0xC3 || c0 == 0xCE || c0 == 0xD0) &&
        (one_of(c1, k20) || (m1 & (kStartP | kEndP)))) return true;
    if (h1 && c0 == 0xD7 && (c1 == 0xB2 || c1 == 0xB3)) return true;
    if (i + 3 < n) {
      static const char32_t k22[] = {0x178, 0x160, 0xAE, 0xB0, 0xB5, 0xBB, 0};
      auto arab = [](char32_t c) { return c == 0xD8 || c == 0xD9; };
      auto second = [&](size_t q) {
        return (m[q] & (kCommon | kCurrency | kBad | kNumeric | kStartP)) || one_of(t[q], k22);
      };
      if (arab(c0) && second(i + 1) && arab(c2) && second(i + 3)) return true;
    }
    static const char32_t k23[] = {0xB2, 0xB5, 0xB9, 0xBC, 0xBD, 0xBE, 0};
    if (h1 && c0 == 0xE0 && one_of(c1, k23)) return true;
    static const char32_t k24[] = {0xB1, 0x2202, 0x2020, 0x2260, 0xAE, 0x2122, 0xB4, 0x2264, 0x2265, 0xA5, 0xB5, 0xF8, 0};
    if (h1 && c0 == 0x221A && one_of(c1, k24)) return true;
    if (h1 && c0 == 0x2248 && (c1 == 0xB0 || c1 == 0xA2)) return true;
    static const char32_t k26[] = {0xEC, 0xEE, 0xEF, 0xF2, 0xF4, 0xFA, 0xF9, 0xFB, 0x2020, 0xB0, 0xA2, 0x3C0, 0};
    if (h2 && c0 == 0x201A && c1 == 0xC4 && one_of(c2, k26)) return true;
    static const char32_t k27[] = {0xE0, 0xE4, 0xB0, 0xEA, 0};
    if (h2 && c0 == 0x201A && (c1 == 0xE2 || c1 == 0xF3) && one_of(c2, k27)) return true;
    if (h1 && c0 == 0x432 && c1 == 0x402) return true;
    auto cyr = [](char32_t c) { return c == 0x412 || c == 0x413 || c == 0x420 || c == 0x421; };
    if (h2 && cyr(c0) && ((m1 & (kC1 | kBad | kStartP | kEndP | kCurrency)) || c1 == 0xB0 || c1 == 0xB5) && cyr(c2)) return true;
    if (i + 5 < n && c0 == 0x413 && c1 == 0x45E && c2 == 0x412 && t[i + 3] == 0x402 && t[i + 4] == 0x412 &&
        t[i + 5] != U'\n' && i + 6 < n && (lat(t[i + 6]) || t[i + 6] == U' ')) return true;
    if (h1 && c0 == 0xC3 && (c1 == 0xA0 || c1 == 0xA1)) return true;
    if (low(c0)) {
      size_t q = i + 1;
      if (q < n && is_py_space(t[q]) && q + 2 < n && (t[q + 1] == 0xC3 || t[q + 1] == 0xC2) && t[q + 2] == U' ') return true;
      if (q + 1 < n && (t[q] == 0xC3 || t[q] == 0xC2) && t[q + 1] == U' ') return true;
    }
    if (i == 0 && h1 && (c0 == 0xC3 || c0 == 0xC2) && c1 == U' ') return true;
    if (h2 && ((low(c0) || c0 == U'.' || c0 == U',' || c0 == U'?' || c0 == U'!') || (m0 & kEndP)) &&
        c1 == 0xC2 && (c2 == U' ' || (m2 & (kStartP | kEndP)))) return true;
    static const char32_t k35[] = {0x2122, 0xA0, 0x386, 0xAD, 0xAE, 0xB0, 0};
    if (h2 && c0 == 0x3B2 && c1 == 0x20AC && one_of(c2, k35)) return true;
    auto grk = [](char32_t c) { return c == 0x392 || c == 0x393 || c == 0x39E || c == 0x39F; };
    if (h2 && grk(c0) && ((m1 & (kC1 | kBad | kStartP | kEndP | kCurrency)) || c1 == 0xB0) && grk(c2)) return true;
    if (h1 && c0 == 0x101 && c1 == 0x20AC) return true;
  }
  return false;
}

/// Encodes t in single-byte charmap e if every character is representable (ftfy's
/// possible_encoding plus str.encode).
inline bool charmap_encode(const unicode::Charmap& e, const U32& t, std::string& out) {
  out.clear();
  for (char32_t c : t) {
    if (c < 0x80 && c != 0x1A) {
      out.push_back(static_cast<char>(c));
      continue;
    }
    if (c == e.sub) {
      out.push_back('\x1A');
      continue;
    }
    int b = -1;
    for (int k = 0; k < 128; ++k) {
      if (e.high[k] == c) { b = 0x80 + k; break; }
    }
    if (b < 0) return false;
    out.push_back(static_cast<char>(b));
  }
  return true;
}

inline bool in_byte(unsigned char c, unsigned lo, unsigned hi) { return c >= lo && c <= hi; }

/// Length of a match of ftfy's ALTERED_UTF8_RE at b[i] (UTF-8 with a space where 0xA0
/// belonged), or 0.
inline size_t altered_utf8_at(const std::string& b, size_t i) {
  const size_t n = b.size();
  auto u = [&](size_t k) { return k < n ? static_cast<unsigned char>(b[k]) : 0x100u; };
  auto cont = [&](size_t k) { unsigned c = u(k); return in_byte(c, 0x80, 0xBF) && c != 0x85 && c != 0xA0; };
  auto any = [&](size_t k) { return in_byte(u(k), 0x80, 0xBF); };
  unsigned c = u(i);
  if ((c == 0xC2 || c == 0xC3 || c == 0xC5 || c == 0xCE || c == 0xD0 || c == 0xD9) && u(i + 1) == ' ') return 2;
  if ((c == 0xE2 || c == 0xE3) && u(i + 1) == ' ' && cont(i + 2)) return 3;
  if (in_byte(c, 0xE0, 0xE3) && cont(i + 1) && u(i + 2) == ' ') return 3;
  if (c == 0xF0 && u(i + 1) == ' ' && any(i + 2) && any(i + 3)) return 4;
  if (c == 0xF0 && any(i + 1) && u(i + 2) == ' ' && any(i + 3)) return 4;
  if (c == 0xF0 && any(i + 1) && any(i + 2) && u(i + 3) == ' ') return 4;
  return 0;
}

/// ftfy.fixes.restore_byte_a0 (A_GRAVE_WORD_RE, then ALTERED_UTF8_RE with ' ' -> 0xA0).
inline std::string restore_byte_a0(const std::string& in) {
  std::string b;
  const size_t n0 = in.size();
  for (size_t i = 0; i < n0;) {
    if (static_cast<unsigned char>(in[i]) == 0xC3 && i + 1 < n0 && in[i + 1] == ' ') {
      auto rest = [&](const char* w) { return in.compare(i + 2, std::strlen(w), w) == 0; };
      if (!(rest(" ") || rest("quele") || rest("quela") || rest("quilo") || rest("s "))) {
        b += "\xC3\xA0 ";
        i += 2;
        continue;
      }
    }
    b.push_back(in[i++]);
  }
  std::string out;
  for (size_t i = 0; i < b.size();) {
    size_t len = altered_utf8_at(b, i);
    if (len) {
      for (size_t k = 0; k < len; ++k) out.push_back(b[i + k] == ' ' ? '\xA0' : b[i + k]);
      i += len;
    } else {
      out.push_back(b[i++]);
    }
  }
  return out;
}

inline bool altered_utf8_search(const std::string& b) {
  for (size_t i = 0; i < b.size(); ++i)
    if (altered_utf8_at(b, i)) return true;
  return false;
}

/// ftfy.fixes.replace_lossy_sequences (LOSSY_UTF8_RE -> U+FFFD's UTF-8).
inline std::string replace_lossy_sequences(const std::string& b) {
  std::string out;
  const size_t n = b.size();
  auto u = [&](size_t i) { return i < n ? static_cast<unsigned char>(b[i]) : 0x100u; };
  auto q1a = [](unsigned c) { return c == 0x1A || c == '?'; };
  auto sub_or_cont = [](unsigned c) { return c == 0x1A || in_byte(c, 0x80, 0xBF); };
  for (size_t i = 0; i < n;) {
    unsigned c = u(i);
    size_t len = 0;
    if (in_byte(c, 0xC2, 0xDF) && u(i + 1) == 0x1A) len = 2;
    else if (in_byte(c, 0xC2, 0xC3) && u(i + 1) == '?') len = 2;
    else if (c == 0xED && in_byte(u(i + 1), 0xA0, 0xAF) && q1a(u(i + 2)) && u(i + 3) == 0xED &&
             in_byte(u(i + 4), 0xB0, 0xBF) && (q1a(u(i + 5)) || in_byte(u(i + 5), 0x80, 0xBF))) len = 6;
    else if (c == 0xED && in_byte(u(i + 1), 0xA0, 0xAF) && (q1a(u(i + 2)) || in_byte(u(i + 2), 0x80, 0xBF)) &&
             u(i + 3) == 0xED && in_byte(u(i + 4), 0xB0, 0xBF) && q1a(u(i + 5))) len = 6;
    else if (in_byte(c, 0xE0, 0xEF) && q1a(u(i + 1)) && sub_or_cont(u(i + 2))) len = 3;
    else if (in_byte(c, 0xE0, 0xEF) && sub_or_cont(u(i + 1)) && q1a(u(i + 2))) len = 3;
    else if (in_byte(c, 0xF0, 0xF4) && q1a(u(i + 1)) && sub_or_cont(u(i + 2)) && sub_or_cont(u(i + 3))) len = 4;
    else if (in_byte(c, 0xF0, 0xF4) && sub_or_cont(u(i + 1)) && q1a(u(i + 2)) && sub_or_cont(u(i + 3))) len = 4;
    else if (in_byte(c, 0xF0, 0xF4) && sub_or_cont(u(i + 1)) && sub_or_cont(u(i + 2)) && q1a(u(i + 3))) len = 4;
    else if (c == 0x1A) len = 1;
    if (len) {
      out += "\xEF\xBF\xBD";
      i += len;
    } else {
      out.push_back(b[i++]);
    }
  }
  return out;
}

/// Strict UTF-8, or ftfy's "utf-8-variants" (also CESU-8 surrogate pairs and C0 80 for NUL).
/// False where Python's decoder would raise.
inline bool decode_utf8_variants(const std::string& b, bool variants, U32& out) {
  out.clear();
  const auto* p = reinterpret_cast<const unsigned char*>(b.data());
  const size_t n = b.size();
  size_t i = 0;
  while (i < n) {
    unsigned c = p[i];
    if (variants) {
      if (c == 0xC0 && i + 1 < n && p[i + 1] == 0x80) {
        out.push_back(0);
        i += 2;
        continue;
      }
      if (c == 0xED && i + 2 < n && in_byte(p[i + 1], 0xA0, 0xBF) && in_byte(p[i + 2], 0x80, 0xBF)) {
        char32_t hi = 0xD000 | ((p[i + 1] & 0x3F) << 6) | (p[i + 2] & 0x3F);
        if (hi <= 0xDBFF && i + 5 < n && p[i + 3] == 0xED && in_byte(p[i + 4], 0xB0, 0xBF) &&
            in_byte(p[i + 5], 0x80, 0xBF)) {
          char32_t lo = 0xD000 | ((p[i + 4] & 0x3F) << 6) | (p[i + 5] & 0x3F);
          out.push_back(0x10000 + ((hi - 0xD800) << 10) + (lo - 0xDC00));
          i += 6;
          continue;
        }
        return false;  // a lone surrogate: the codec raises, as Python's UTF-8 does
      }
    }
    size_t start = i;
    // Decode one strict character.
    if (c < 0x80) {
      out.push_back(c);
      ++i;
      continue;
    }
    int need;
    char32_t cp;
    unsigned lo = 0x80, hi = 0xBF;
    if (in_byte(c, 0xC2, 0xDF)) need = 1, cp = c & 0x1F;
    else if (in_byte(c, 0xE0, 0xEF)) {
      need = 2, cp = c & 0x0F;
      if (c == 0xE0) lo = 0xA0;
      if (c == 0xED) hi = 0x9F;
    } else if (in_byte(c, 0xF0, 0xF4)) {
      need = 3, cp = c & 0x07;
      if (c == 0xF0) lo = 0x90;
      if (c == 0xF4) hi = 0x8F;
    } else {
      return false;
    }
    if (start + need >= n) return false;
    for (int k = 1; k <= need; ++k) {
      unsigned d = p[i + k];
      if (d < (k == 1 ? lo : 0x80u) || d > (k == 1 ? hi : 0xBFu)) return false;
      cp = (cp << 6) | (d & 0x3F);
    }
    out.push_back(cp);
    i += need + 1;
  }
  return true;
}

inline U32 fix_encoding(U32 text);

/// ftfy.fixes.decode_inconsistent_utf8: fixes runs that look like UTF-8 mojibake inside
/// otherwise fine text.
inline U32 decode_inconsistent_utf8(const U32& t) {
  const size_t n = t.size();
  auto mk = [&](size_t i) { return i < n ? mojibake_mask(t[i]) : 0u; };
  U32 out;
  size_t i = 0;
  while (i < n) {
    bool lookbehind_ok = i == 0 || !(mojibake_mask(t[i - 1]) & kContStrict);
    size_t end = i;
    if (lookbehind_ok) {
      for (;;) {
        uint32_t m0 = mk(end);
        if ((m0 & kFirst2) && (mk(end + 1) & kCont)) { end += 2; continue; }
        if ((m0 & kFirst3) && (mk(end + 1) & kCont) && (mk(end + 2) & kCont)) { end += 3; continue; }
        if ((m0 & kFirst4) && (mk(end + 1) & kCont) && (mk(end + 2) & kCont) && (mk(end + 3) & kCont)) {
          end += 4;
          continue;
        }
        break;
      }
    }
    if (end == i) {
      out.push_back(t[i++]);
      continue;
    }
    U32 sub(t.begin() + i, t.begin() + end);
    if (sub.size() < n && is_bad(sub)) out += fix_encoding(sub);
    else out += sub;
    i = end;
  }
  return out;
}

/// One step of ftfy's fix_encoding_and_explain.
inline U32 fix_encoding_step(const U32& text) {
  if (text.empty()) return text;
  bool ascii = std::all_of(text.begin(), text.end(), [](char32_t c) { return c < 0x80; });
  if (ascii || !is_bad(text)) return text;
  bool latin1_possible = false;
  std::string bytes;
  for (const auto& e : unicode::kCharmaps) {
    if (!charmap_encode(e, text, bytes)) continue;
    const std::string name = e.name;
    if (name == "latin-1") latin1_possible = true;
    if (name != "macroman" && altered_utf8_search(bytes)) bytes = restore_byte_a0(bytes);
    if (name.rfind("sloppy", 0) == 0) bytes = replace_lossy_sequences(bytes);
    bool variants = bytes.find('\xED') != std::string::npos || bytes.find('\xC0') != std::string::npos;
    U32 fixed;
    if (decode_utf8_variants(bytes, variants, fixed)) return fixed;
  }
  {
    bool any = false;
    for (size_t i = 0; i < text.size() && !any; ++i) {
      uint32_t m = mojibake_mask(text[i]);
      any = (m & (kFirst2 | kFirst3 | kFirst4)) != 0;
    }
    if (any) {
      U32 fixed = decode_inconsistent_utf8(text);
      if (fixed != text) return fixed;
    }
  }
  if (latin1_possible) {
    // latin-1 bytes read as (strict) windows-1252; the five bytes it leaves undefined fail.
    const auto& w = unicode::kCharmaps[1];
    U32 fixed;
    bool ok = true;
    for (char32_t c : text) {
      if (c >= 0x80 && c <= 0x9F) {
        if (c == 0x81 || c == 0x8D || c == 0x8F || c == 0x90 || c == 0x9D) { ok = false; break; }
        fixed.push_back(w.high[c - 0x80]);
      } else {
        fixed.push_back(c);
      }
    }
    if (ok && fixed != text) return fixed;
  }
  bool c1 = std::any_of(text.begin(), text.end(), [](char32_t c) { return c >= 0x80 && c <= 0x9F; });
  if (c1) {
    U32 fixed = text;
    for (auto& c : fixed)
      if (c >= 0x80 && c <= 0x9F) c = unicode::kCharmaps[1].high[c - 0x80];
    return fixed;
  }
  return text;
}

inline U32 fix_encoding(U32 text) {
  for (;;) {
    U32 next = fix_encoding_step(text);
    if (next == text) return text;
    text = std::move(next);
  }
}

// ---------------------------------------------------------------------------------------
// ftfy.fix_text with its default configuration.

inline U32 fix_segment(U32 text, bool unescape) {
  for (;;) {
    const U32 orig = text;
    if (unescape) text = ftfy_unescape_html(text);
    text = fix_encoding(std::move(text));
    U32 t;
    t.reserve(text.size());
    // fix_c1_controls
    for (auto& c : text)
      if (c >= 0x80 && c <= 0x9F) c = unicode::kCharmaps[1].high[c - 0x80];
    // fix_latin_ligatures, fix_character_width
    for (char32_t c : text) {
      if (c >= 0x132 && c <= 0x1F3) {  // the span of ftfy's Latin ligature table
        if (const auto* l = find_cp(unicode::kLigatures, c)) { t += utf8_decode_strict(l->utf8); continue; }
      } else if (c >= 0xFB00 && c <= 0xFB06) {
        if (const auto* l = find_cp(unicode::kLigatures, c)) { t += utf8_decode_strict(l->utf8); continue; }
      } else if (c == 0x3000 || (c >= 0xFF01 && c <= 0xFFEF)) {
        if (const auto* w = find_cp(unicode::kWidth, c)) { t += utf8_decode_strict(w->utf8); continue; }
      }
      t.push_back(c);
    }
    // uncurl_quotes
    for (auto& c : t) {
      if (c == 0x2BC || (c >= 0x2018 && c <= 0x201B)) c = U'\'';
      else if (c >= 0x201C && c <= 0x201F) c = U'"';
    }
    // fix_line_breaks
    text.clear();
    for (size_t i = 0; i < t.size(); ++i) {
      char32_t c = t[i];
      if (c == U'\r') {
        if (i + 1 < t.size() && t[i + 1] == U'\n') ++i;
        text.push_back(U'\n');
      } else if (c == 0x2028 || c == 0x2029 || c == 0x85) {
        text.push_back(U'\n');
      } else {
        text.push_back(c);
      }
    }
    // fix_surrogates
    t.clear();
    for (size_t i = 0; i < text.size(); ++i) {
      char32_t c = text[i];
      if (c >= 0xD800 && c <= 0xDBFF && i + 1 < text.size() && text[i + 1] >= 0xDC00 && text[i + 1] <= 0xDFFF) {
        t.push_back(0x10000 + ((c - 0xD800) << 10) + (text[i + 1] - 0xDC00));
        ++i;
      } else if (c >= 0xD800 && c <= 0xDFFF) {
        t.push_back(0xFFFD);
      } else {
        t.push_back(c);
      }
    }
    // remove_terminal_escapes (ESC '[' [0-9;]* [A-Za-z]), remove_control_chars
    text.clear();
    for (size_t i = 0; i < t.size(); ++i) {
      if (t[i] == 0x1B && i + 1 < t.size() && t[i + 1] == U'[') {
        size_t k = i + 2;
        while (k < t.size() && (is_ascii_digit(t[k]) || t[k] == U';')) ++k;
        if (k < t.size() && ((t[k] >= 'a' && t[k] <= 'z') || (t[k] >= 'A' && t[k] <= 'Z'))) {
          i = k;
          continue;
        }
      }
      text.push_back(t[i]);
    }
    t.clear();
    for (char32_t c : text)
      if (!in_ranges(unicode::kControlChars, c)) t.push_back(c);
    text = nfc(t);
    if (text == orig) return text;
  }
}

inline U32 ftfy_fix_text(const U32& text) {
  U32 out;
  bool unescape = true;  // "auto": switched off for good by the first segment with a '<'
  size_t pos = 0;
  const size_t max_len = 1000000;
  while (pos < text.size()) {
    size_t brk = text.find(U'\n', pos);
    brk = brk == U32::npos ? text.size() : brk + 1;
    if (brk - pos > max_len) brk = pos + max_len;
    U32 seg(text.begin() + pos, text.begin() + brk);
    if (unescape && seg.find(U'<') != U32::npos) unescape = false;
    out += fix_segment(std::move(seg), unescape);
    pos = brk;
  }
  return out;
}

inline U32 strip_py(const U32& s) {
  size_t a = 0, b = s.size();
  while (a < b && is_py_space(s[a])) ++a;
  while (b > a && is_py_space(s[b - 1])) --b;
  return s.substr(a, b - a);
}

/// The reference's whitespace_clean(basic_clean(text)).lower().
inline U32 clean_text(const U32& raw) {
  U32 t = ftfy_fix_text(raw);
  t = strip_py(html_unescape(html_unescape(t)));
  U32 collapsed;
  collapsed.reserve(t.size());
  for (size_t i = 0; i < t.size();) {
    if (is_regex_space(t[i])) {
      while (i < t.size() && is_regex_space(t[i])) ++i;
      collapsed.push_back(U' ');
    } else {
      collapsed.push_back(t[i++]);
    }
  }
  U32 lowered;
  lower_into(lowered, strip_py(collapsed));
  return lowered;
}

// ---------------------------------------------------------------------------------------
// The split pattern, with the `regex` module's IGNORECASE semantics.

enum class CharClass { kLetter, kNumber, kOther, kNone };

inline CharClass char_class(char32_t c) {
  if (c < 0x80) {
    if ((c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z')) return CharClass::kLetter;
    if (c >= '0' && c <= '9') return CharClass::kNumber;
    if (c == ' ' || (c >= 0x09 && c <= 0x0D)) return CharClass::kNone;
    return CharClass::kOther;
  }
  if (in_ranges(unicode::kLetter, c)) return CharClass::kLetter;
  if (in_ranges(unicode::kNumber, c)) return CharClass::kNumber;
  if (in_ranges(unicode::kUnmatched, c)) return CharClass::kNone;
  return CharClass::kOther;
}

/// Does c match the pattern's lower-case ASCII letter `letter` case-insensitively?
inline bool folds_to(char32_t c, char letter) {
  if (c == static_cast<char32_t>(letter)) return true;
  const auto* f = find_cp(unicode::kFoldToAscii, c);
  return f && f->ascii == letter;
}

inline bool match_literal(const U32& s, size_t i, const char* lit) {
  for (size_t k = 0; lit[k]; ++k) {
    if (i + k >= s.size()) return false;
    char l = lit[k];
    if (l >= 'a' && l <= 'z') {
      if (!folds_to(s[i + k], l)) return false;
    } else if (s[i + k] != static_cast<char32_t>(static_cast<unsigned char>(l))) {
      return false;
    }
  }
  return true;
}

/// re.findall of the reference pattern over cleaned text: the pieces, in order.
inline std::vector<U32> split_pieces(const U32& s) {
  static const char* const kAlternatives[] = {"<|startoftext|>", "<|endoftext|>", "'s", "'t", "'re",
                                              "'ve", "'m", "'ll", "'d"};
  std::vector<U32> out;
  size_t i = 0;
  while (i < s.size()) {
    size_t len = 0;
    for (const char* alt : kAlternatives) {
      if (match_literal(s, i, alt)) { len = std::strlen(alt); break; }
    }
    if (!len) {
      CharClass c = char_class(s[i]);
      if (c == CharClass::kNone) { ++i; continue; }
      if (c == CharClass::kNumber) {
        len = 1;
      } else {
        size_t j = i + 1;
        while (j < s.size() && char_class(s[j]) == c) ++j;
        len = j - i;
      }
    }
    out.emplace_back(s.begin() + i, s.begin() + i + len);
    i += len;
  }
  return out;
}

}  // namespace detail

/// The tokenizer. Holds the merges; immutable after construction except for a
/// mutex-guarded cache of per-piece results, so one instance may be shared by threads.
class Tokenizer {
 public:
  static constexpr int32_t kStartOfText = 49406;
  static constexpr int32_t kEndOfText = 49407;
  /// The reference reads lines 2..48895 of bpe_simple_vocab_16e6.txt: 48894 merges.
  static constexpr size_t kMaxMerges = 49152 - 256 - 2;
  /// A gzipped vocabulary may not decompress to more than this (CLIP's is 1.36 MB).
  static constexpr size_t kMaxVocabBytes = size_t(256) << 20;

  /// Builds from the text of a merges file: the first line is a header (ignored), then one
  /// merge per line, two symbols separated by whitespace, at most kMaxMerges of them (any
  /// further lines are ignored, as by the reference). Each symbol must be written in the
  /// byte-to-unicode alphabet and be a byte or the result of an earlier merge. `origin`
  /// names the source in error messages. Throws IOError naming the line at fault.
  static Tokenizer from_merges_text(const std::string& text, const std::string& origin = "<merges>") {
    return Tokenizer(text, origin);
  }

  /// Reads bpe_simple_vocab_16e6.txt or its .gz (detected by content, not by name).
  static Tokenizer from_file(const std::string& path) {
    std::ifstream f(path, std::ios::binary);
    if (!f) throw IOError(cat("tokenizer: cannot open vocabulary file ", path));
    std::string data((std::istreambuf_iterator<char>(f)), std::istreambuf_iterator<char>());
    if (f.bad()) throw IOError(cat("tokenizer: cannot read vocabulary file ", path));
    if (data.size() >= 2 && static_cast<unsigned char>(data[0]) == 0x1F && static_cast<unsigned char>(data[1]) == 0x8B) {
      const std::vector<uint8_t> text =
          io::gunzip(reinterpret_cast<const uint8_t*>(data.data()), data.size(), cat("tokenizer: ", path),
                     kMaxVocabBytes);
      data.assign(text.begin(), text.end());
    }
    return Tokenizer(data, path);
  }

  /// 512 byte symbols + one per merge + the two special tokens (49408 for CLIP's file).
  size_t vocab_size() const { return vocab_bytes_.size(); }

  /// BPE ids of utf8 after the reference's cleaning, without start/end tokens.
  /// Throws ValueError if utf8 is not valid UTF-8.
  std::vector<int32_t> encode(const std::string& utf8) const {
    detail::U32 cleaned = detail::clean_text(detail::utf8_decode_strict(utf8));
    std::vector<int32_t> ids;
    for (const auto& piece : detail::split_pieces(cleaned)) {
      std::string bytes = detail::utf8_encode(piece);
      if (bytes == "<|startoftext|>") { ids.push_back(sot_); continue; }
      if (bytes == "<|endoftext|>") { ids.push_back(eot_); continue; }
      auto r = bpe_cached(bytes);
      ids.insert(ids.end(), r.begin(), r.end());
    }
    return ids;
  }

  /// clip.tokenize for one text: [SOT] + encode(text) + [EOT], zero-padded to
  /// context_length. Longer: ValueError naming the text and its token count, unless
  /// truncate, which keeps the first context_length tokens and makes the last one EOT.
  std::vector<int32_t> tokenize(const std::string& text, int context_length = 77, bool truncate = false) const {
    GA_CHECK(context_length >= 2, ValueError, "tokenizer: context_length must be at least 2, got ", context_length);
    std::vector<int32_t> ids;
    ids.push_back(sot_);
    auto body = encode(text);
    ids.insert(ids.end(), body.begin(), body.end());
    ids.push_back(eot_);
    const size_t ctx = static_cast<size_t>(context_length);
    if (ids.size() > ctx) {
      if (!truncate) {
        std::string shown = text.size() > 60 ? text.substr(0, 57) : text;
        if (text.size() > 60) {
          while (!shown.empty() && (static_cast<unsigned char>(shown.back()) & 0xC0) == 0x80) shown.pop_back();
          if (!shown.empty() && static_cast<unsigned char>(shown.back()) >= 0xC0) shown.pop_back();
          shown += "...";
        }
        throw ValueError(cat("tokenizer: text \"", shown, "\" is ", ids.size(),
                             " tokens with start and end, more than the context length ", context_length,
                             " (use truncation to cut it)"));
      }
      ids.resize(ctx);
      ids.back() = eot_;
    }
    ids.resize(ctx, 0);
    return ids;
  }

  /// The reference's decode: token strings joined, bytes decoded as UTF-8 with
  /// replacement, every "</w>" replaced by a space. Throws ValueError on an unknown id.
  std::string decode(const std::vector<int32_t>& ids) const {
    std::string bytes;
    for (int32_t id : ids) {
      GA_CHECK(id >= 0 && static_cast<size_t>(id) < vocab_bytes_.size(), ValueError,
               "tokenizer: decode: id ", id, " outside the vocabulary of ", vocab_bytes_.size());
      bytes += vocab_bytes_[id];
    }
    std::string text = detail::utf8_encode(detail::utf8_decode_replace(bytes));
    std::string out;
    for (size_t i = 0; i < text.size();) {
      if (text.compare(i, 4, "</w>") == 0) {
        out.push_back(' ');
        i += 4;
      } else {
        out.push_back(text[i++]);
      }
    }
    return out;
  }

 private:
  Tokenizer(const std::string& text, const std::string& origin) {
    // bytes_to_unicode: printable Latin-1 bytes keep their code point, the rest are moved
    // to U+0100.. in byte order; the vocabulary lists them in that (printable first) order.
    std::vector<int> order;
    std::vector<char32_t> byte_char(256, 0);
    auto printable = [](int b) { return (b >= 0x21 && b <= 0x7E) || (b >= 0xA1 && b <= 0xAC) || (b >= 0xAE && b <= 0xFF); };
    for (int b = 0; b < 256; ++b)
      if (printable(b)) order.push_back(b), byte_char[b] = static_cast<char32_t>(b);
    int extra = 0;
    for (int b = 0; b < 256; ++b)
      if (!printable(b)) order.push_back(b), byte_char[b] = static_cast<char32_t>(256 + extra++);

    std::vector<std::string> names;  // vocabulary entries in the byte-to-unicode alphabet
    for (int i = 0; i < 256; ++i) {
      int b = order[i];
      byte_id_[b] = i;
      names.push_back(detail::utf8_encode(detail::U32(1, byte_char[b])));
      vocab_bytes_.push_back(std::string(1, static_cast<char>(b)));
    }
    for (int i = 0; i < 256; ++i) {
      names.push_back(names[i] + "</w>");
      vocab_bytes_.push_back(vocab_bytes_[i] + "</w>");
    }
    // The reference's encoder dict (name -> id) as an open-addressed table of ids into
    // names: no node or key string per entry, which the 48894 lookups and inserts of a load
    // otherwise spend most of their time allocating and chasing. Every name is written in
    // the byte-to-unicode alphabet and vocab_bytes_[id] is its raw bytes, so a merge's
    // symbols, once found here, need no decoding.
    constexpr size_t slots = size_t(1) << 17;
    static_assert(slots >= 2 * (512 + kMaxMerges), "encoder table too small");
    std::vector<int32_t> encoder(slots, -1);
    auto slot_of = [&](std::string_view name) {
      size_t s = std::hash<std::string_view>{}(name) & (slots - 1);
      while (encoder[s] >= 0 && names[size_t(encoder[s])] != name) s = (s + 1) & (slots - 1);
      return s;  // name's slot, or the empty one where it would go
    };
    for (size_t i = 0; i < names.size(); ++i) encoder[slot_of(names[i])] = static_cast<int32_t>(i);

    auto is_blank = [](char c) { return c == ' ' || c == '\t' || c == '\v' || c == '\f'; };
    size_t line_no = 1, pos = text.find('\n');
    pos = pos == std::string::npos ? text.size() : pos + 1;
    size_t merges = 0;
    const size_t first_merge = names.size();  // merge r makes id first_merge + r
    std::vector<uint64_t> merge_keys;         // merge r's pair
    merge_keys.reserve(kMaxMerges);
    while (pos < text.size() && merges < kMaxMerges) {
      size_t end = text.find('\n', pos);
      if (end == std::string::npos) end = text.size();
      std::string_view line(text.data() + pos, end - pos);
      ++line_no;
      pos = end + 1;
      if (!line.empty() && line.back() == '\r') line.remove_suffix(1);
      std::string_view parts[3];
      size_t nparts = 0;
      for (size_t i = 0; i < line.size() && nparts < 3;) {
        while (i < line.size() && is_blank(line[i])) ++i;
        size_t j = i;
        while (j < line.size() && !is_blank(line[j])) ++j;
        if (j > i) parts[nparts++] = line.substr(i, j - i);
        i = j;
      }
      if (nparts == 0 && pos >= text.size()) break;  // the file's final newline
      if (nparts != 2) {
        throw IOError(cat("tokenizer: ", origin, ": line ", line_no, ": expected two symbols separated by a space, got \"",
                          line.substr(0, 80), "\""));
      }
      const int32_t a = encoder[slot_of(parts[0])], b = encoder[slot_of(parts[1])];
      if (a < 0 || b < 0) {
        throw IOError(cat("tokenizer: ", origin, ": line ", line_no, ": merge \"", line.substr(0, 80),
                          "\" uses a symbol that is neither a byte nor the result of an earlier merge"));
      }
      const std::string& bytes_a = vocab_bytes_[size_t(a)];
      if (bytes_a.size() >= 4 && bytes_a.compare(bytes_a.size() - 4, 4, "</w>") == 0) {
        throw IOError(cat("tokenizer: ", origin, ": line ", line_no, ": merge \"", line.substr(0, 80),
                          "\" has an end-of-word symbol on the left"));
      }
      const int32_t id = static_cast<int32_t>(names.size());
      vocab_bytes_.push_back(bytes_a + vocab_bytes_[size_t(b)]);
      const uint64_t key = pair_key(a, b);
      ranks_[key] = Merge{static_cast<int32_t>(merges), 0};
      names.emplace_back(parts[0]).append(parts[1]);
      encoder[slot_of(names.back())] = id;  // a later duplicate wins, as in the reference's dict
      merge_keys.push_back(key);
      ++merges;
    }
    if (merges == 0) throw IOError(cat("tokenizer: ", origin, ": no merges found"));
    // A pair's result is the id its name has in the final dict (a later duplicate's).
    for (size_t r = 0; r < merges; ++r) ranks_[merge_keys[r]].result = encoder[slot_of(names[first_merge + r])];
    sot_ = static_cast<int32_t>(names.size());
    vocab_bytes_.push_back("<|startoftext|>");
    eot_ = sot_ + 1;
    vocab_bytes_.push_back("<|endoftext|>");
  }

  struct Merge {
    int32_t rank;
    int32_t result;
  };

  static uint64_t pair_key(int32_t a, int32_t b) { return (uint64_t(uint32_t(a)) << 32) | uint32_t(b); }

  /// The reference's bpe_ranks (symbol pair -> rank, plus the id the merge makes): an
  /// open-addressed table with linear probing, sized once for kMaxMerges, so a load makes no
  /// allocation per merge and an encode's lookups touch one cache line each.
  class MergeTable {
   public:
    MergeTable() : keys_(kSlots, kEmpty), merges_(kSlots, Merge{0, 0}) {}
    /// The merge of pair `key`, or null if there is none.
    const Merge* find(uint64_t key) const {
      const size_t s = slot(key);
      return keys_[s] == kEmpty ? nullptr : &merges_[s];
    }
    /// The merge of pair `key`, inserted as {0, 0} if absent.
    Merge& operator[](uint64_t key) {
      const size_t s = slot(key);
      keys_[s] = key;
      return merges_[s];
    }

   private:
    static constexpr size_t kSlots = size_t(1) << 17;
    static_assert(kSlots >= 2 * kMaxMerges, "merge table too small");
    static constexpr uint64_t kEmpty = ~uint64_t(0);  // never a key: ids are below 2^31
    size_t slot(uint64_t key) const {
      size_t s = static_cast<size_t>((key * 0x9E3779B97F4A7C15ull) >> 47);  // Fibonacci hashing, 17 bits
      while (keys_[s] != kEmpty && keys_[s] != key) s = (s + 1) & (kSlots - 1);
      return s;
    }
    std::vector<uint64_t> keys_;
    std::vector<Merge> merges_;
  };

  std::vector<int32_t> bpe_cached(const std::string& bytes) const {
    {
      std::lock_guard<std::mutex> lock(cache_->mutex);
      auto it = cache_->map.find(bytes);
      if (it != cache_->map.end()) return it->second;
    }
    auto r = bpe(bytes);
    std::lock_guard<std::mutex> lock(cache_->mutex);
    if (cache_->map.size() >= kCacheLimit) cache_->map.clear();  // bounded, unlike the reference's
    cache_->map.emplace(bytes, r);
    return r;
  }

  /// The reference's bpe(): repeatedly take the pair of lowest rank and merge all its
  /// non-overlapping occurrences left to right. A heap of candidate pairs makes it
  /// O(n log n); every occurrence of one rank is merged before any pair it creates is
  /// considered, which is what keeps the result identical.
  std::vector<int32_t> bpe(const std::string& bytes) const {
    const size_t n = bytes.size();
    std::vector<int32_t> id(n);
    std::vector<int> prev(n), next(n);
    std::vector<char> alive(n, 1);
    for (size_t i = 0; i < n; ++i) {
      id[i] = byte_id_[static_cast<unsigned char>(bytes[i])];
      prev[i] = static_cast<int>(i) - 1;
      next[i] = i + 1 < n ? static_cast<int>(i + 1) : -1;
    }
    id[n - 1] += 256;  // the last symbol carries "</w>"
    struct Cand {
      int32_t rank;
      int pos;
      int32_t left, right, result;
      bool operator>(const Cand& o) const { return rank != o.rank ? rank > o.rank : pos > o.pos; }
    };
    std::priority_queue<Cand, std::vector<Cand>, std::greater<Cand>> heap;
    auto consider = [&](int pos, std::vector<Cand>* sink) {
      if (pos < 0 || next[pos] < 0) return;
      const Merge* m = ranks_.find(pair_key(id[pos], id[next[pos]]));
      if (!m) return;
      Cand c{m->rank, pos, id[pos], id[next[pos]], m->result};
      if (sink) sink->push_back(c);
      else heap.push(c);
    };
    for (size_t i = 0; i + 1 < n; ++i) consider(static_cast<int>(i), nullptr);
    std::vector<Cand> created;
    while (!heap.empty()) {
      const int32_t rank = heap.top().rank;
      created.clear();
      while (!heap.empty() && heap.top().rank == rank) {
        Cand c = heap.top();
        heap.pop();
        if (!alive[c.pos] || next[c.pos] < 0 || id[c.pos] != c.left || id[next[c.pos]] != c.right) continue;
        const int r = next[c.pos];
        id[c.pos] = c.result;
        alive[r] = 0;
        next[c.pos] = next[r];
        if (next[r] >= 0) prev[next[r]] = c.pos;
        consider(prev[c.pos], &created);
        consider(c.pos, &created);
      }
      for (const auto& c : created) heap.push(c);
    }
    std::vector<int32_t> out;
    for (int i = 0; i >= 0; i = next[i]) out.push_back(id[i]);
    return out;
  }

  static constexpr size_t kCacheLimit = 1 << 16;

  int32_t byte_id_[256] = {};
  MergeTable ranks_;
  std::vector<std::string> vocab_bytes_;  // raw bytes per id, "</w>" kept as text
  int32_t sot_ = kStartOfText, eot_ = kEndOfText;
  // Shared by copies of this tokenizer (they hold the same merges, so the same answers).
  struct Cache {
    std::mutex mutex;
    std::unordered_map<std::string, std::vector<int32_t>> map;
  };
  std::shared_ptr<Cache> cache_ = std::make_shared<Cache>();
};

}  // namespace ga::clip
