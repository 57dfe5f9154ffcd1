// libFuzzer target for PyTorch checkpoints as whole files: the zip reader (every entry read,
// deflated ones decompressed, CRCs checked) and read_torch_checkpoint over the same bytes with
// CRC checks off, so that mutations inside stored entries reach the pickle reader and the
// tensor rebuilding. Must give tensors or an IOError; never a crash, an out-of-bounds read, a
// leak or a hang. Inputs that start like gzip also go through ga::io::gunzip (the tokenizer's
// path to a gzipped vocabulary). Seeds: tests/fixtures/checkpoints/ (see run_fuzzers.sh).
#include <cstddef>
#include <cstdint>
#include <memory>
#include <vector>

#include "ga/io/torch_checkpoint.hpp"

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  if (size >= 2 && data[0] == 0x1F && data[1] == 0x8B) {
    try {
      (void)ga::io::gunzip(data, size, "fuzz.gz", size_t(64) << 20);
    } catch (const ga::IOError&) {
    }
  }
  auto bytes = std::make_shared<std::vector<uint8_t>>(data, data + size);
  ga::io::ZipLimits zl;
  zl.max_entries = 10000;
  zl.max_inflated_size = uint64_t(64) << 20;
  try {
    const ga::io::ZipArchive zip = ga::io::ZipArchive::from_buffer(bytes, "fuzz.zip", zl);
    for (const ga::io::ZipEntry& e : zip.entries()) {
      try {
        const ga::io::ByteSource b = zip.read(e, true);
        volatile uint8_t sink = 0;
        for (size_t i = 0; i < b.size; i += 4096) sink ^= b.data[i];
        if (b.size) sink ^= b.data[b.size - 1];
      } catch (const ga::IOError&) {
      }
    }
  } catch (const ga::IOError&) {
  }
  ga::io::TorchReadOptions opt;
  opt.verify_crc = false;
  opt.zip = zl;
  opt.pickle.max_values = size_t(1) << 20;
  opt.max_visits = 1'000'000;
  opt.max_copied_bytes = uint64_t(64) << 20;
  try {
    const ga::io::TorchCheckpoint ck = ga::io::read_torch_checkpoint_buffer(bytes, "fuzz.pt", opt);
    for (const auto& [name, t] : ck.tensors) {
      (void)name;
      (void)t.to_vector<double>();  // touch every element so ASan sees any read outside the buffer
    }
  } catch (const ga::IOError&) {
  }
  return 0;
}
