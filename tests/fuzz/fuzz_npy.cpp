// libFuzzer target for the .npy reader (ga/io/npy.hpp): arbitrary bytes must parse or be an
// IOError, never crash or read out of bounds; a parsed array must write back (save_npy's
// header) and parse again to the same shape, dtype and bytes.
#include <cstddef>
#include <cstdint>
#include <cstdlib>
#include <cstring>
#include <string>

#include "ga/io/npy.hpp"

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  ga::Tensor t;
  try {
    t = ga::io::parse_npy(data, size, "fuzz");
  } catch (const ga::IOError&) {
    return 0;
  }
  if (t.numel() > (1 << 20)) return 0;
  const std::string header = ga::io::detail::npy_header(ga::io::detail::npy_descr(t.dtype()), t.shape());
  std::string bytes = header;
  const size_t n = static_cast<size_t>(t.numel()) * ga::dtype_size(t.dtype());
  if (n) bytes.append(static_cast<const char*>(t.raw_data()), n);
  const ga::Tensor u = ga::io::parse_npy(reinterpret_cast<const uint8_t*>(bytes.data()), bytes.size(), "fuzz-again");
  if (u.shape() != t.shape() || u.dtype() != t.dtype() || (n && std::memcmp(u.raw_data(), t.raw_data(), n) != 0))
    std::abort();
  return 0;
}
