// libFuzzer target for image decoding: arbitrary bytes must decode to an RGB image of
// the size the header promised, or throw ga::IOError; never crash or read out of bounds.
// A small pixel limit keeps a hostile header from asking for gigabytes.
#include <cstddef>
#include <cstdint>
#include <cstdlib>

#include "ga/io/image.hpp"
#include "ga/io/preprocess.hpp"

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  try {
    const ga::io::Image img = ga::io::decode_image(data, size, "fuzz", int64_t(1) << 20);
    if (img.width <= 0 || img.height <= 0 || img.pixels.size() != size_t(img.width) * size_t(img.height) * 3)
      std::abort();
    if (size_t(img.width) * size_t(img.height) <= 4096) (void)ga::io::preprocess_clip(img, 8);
  } catch (const ga::IOError&) {
  }
  return 0;
}
