// libFuzzer target for the tokenizer: arbitrary bytes as text (must give ids or a
// ga::ValueError, nothing else) and as a merges file (ids or ga::IOError).
#include <cstddef>
#include <cstdint>
#include <string>

#include "ga/clip/tokenizer.hpp"

namespace {
const ga::clip::Tokenizer& small_tokenizer() {
  static const ga::clip::Tokenizer tok =
      ga::clip::Tokenizer::from_merges_text("#v\nt h\nth e</w>\na b\nab c\n\xc3\x83 \xc2\xa9\n");
  return tok;
}
}  // namespace

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  const std::string input(reinterpret_cast<const char*>(data), size);
  try {
    auto ids = small_tokenizer().tokenize(input, 77, true);
    (void)small_tokenizer().decode(ids);
  } catch (const ga::ValueError&) {
  }
  try {
    auto tok = ga::clip::Tokenizer::from_merges_text(input, "fuzz");
    (void)tok.encode("the abc");
  } catch (const ga::IOError&) {
  }
  return 0;
}
