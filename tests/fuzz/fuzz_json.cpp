// libFuzzer target for the JSON parser: arbitrary bytes must parse or be an IOError, and a
// parsed value must dump to text that parses back to the same text (dump is a fixed point).
#include <cstddef>
#include <cstdint>
#include <cstdlib>
#include <string>

#include "ga/io/json.hpp"

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  const std::string text(reinterpret_cast<const char*>(data), size);
  ga::io::Json value;
  try {
    value = ga::io::parse_json(text, "fuzz");
  } catch (const ga::IOError&) {
    return 0;
  }
  const std::string once = value.dump();
  const std::string twice = ga::io::parse_json(once, "fuzz-dump").dump();
  if (once != twice) std::abort();
  return 0;
}
