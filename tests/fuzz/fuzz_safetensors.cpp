// libFuzzer target for the safetensors reader: arbitrary bytes as a whole file, parsed through
// the same path as SafetensorsFile::open. Must give a file whose every tensor reads (or is an
// IOError for a dtype ga lacks), or an IOError; never a crash, an out-of-bounds read or a hang.
#include <cstddef>
#include <cstdint>
#include <memory>
#include <vector>

#include "ga/io/safetensors.hpp"

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  auto bytes = std::make_shared<std::vector<uint8_t>>(data, data + size);
  try {
    const ga::io::SafetensorsFile f = ga::io::SafetensorsFile::from_buffer(bytes, "fuzz");
    (void)f.metadata();
    for (const std::string& name : f.keys()) {
      (void)f.info(name);
      try {
        const ga::Tensor t = f.get(name);
        // Touch every element so ASan sees any read outside the buffer.
        (void)t.to_vector<double>();
      } catch (const ga::IOError&) {
      }
    }
  } catch (const ga::IOError&) {
  }
  return 0;
}
