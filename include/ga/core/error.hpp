// Errors: one hierarchy, rooted at ga::Error. Every message names the op, the
// shapes, the file or the key at fault, so a user can act on it without a debugger.
#pragma once
#include <sstream>
#include <stdexcept>
#include <string>

namespace ga {

/// Base of every exception the library throws on bad input or misuse.
class Error : public std::runtime_error {
 public:
  explicit Error(const std::string& what) : std::runtime_error(what) {}
};
/// Shapes that do not fit together (broadcasting, matmul, reshape, ...).
class ShapeError : public Error { using Error::Error; };
/// A dtype an op does not support, or two dtypes that must agree and do not.
class DTypeError : public Error { using Error::Error; };
/// An index or a dimension out of range.
class IndexError : public Error { using Error::Error; };
/// A value out of its domain (negative size, probability outside [0, 1], ...).
class ValueError : public Error { using Error::Error; };
/// A name that is missing from, or not expected in, a keyed collection (state dicts, checkpoints).
class KeyError : public Error { using Error::Error; };
/// Misuse of autograd (backward on a freed graph, a non-scalar without a gradient, ...).
class AutogradError : public Error { using Error::Error; };
/// A device that is not compiled in or not present.
class DeviceError : public Error { using Error::Error; };
/// A file that cannot be read or written, or whose contents are malformed.
class IOError : public Error { using Error::Error; };

namespace detail {
inline void cat_into(std::ostringstream&) {}
template <class T, class... Rest>
void cat_into(std::ostringstream& os, const T& v, const Rest&... rest) {
  os << v;
  cat_into(os, rest...);
}
}  // namespace detail

/// Concatenates its arguments with operator<< into one string (for error messages).
template <class... Args>
std::string cat(const Args&... args) {
  std::ostringstream os;
  detail::cat_into(os, args...);
  return os.str();
}

}  // namespace ga

/// Throws ExcType with the concatenated message when cond is false. Used for every
/// check on user input: these are never compiled out.
#define GA_CHECK(cond, ExcType, ...)                 \
  do {                                               \
    if (!(cond)) throw ExcType(::ga::cat(__VA_ARGS__)); \
  } while (0)
