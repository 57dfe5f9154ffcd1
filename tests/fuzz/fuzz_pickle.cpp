// libFuzzer target for the restricted unpickler: arbitrary bytes as a data.pkl, unpickled with
// and without the TorchScript allow-list, every value walked, then read as the data.pkl of a
// checkpoint archive (built here around it, with four small storages "0".."3") so that the
// tensor rebuilding and name flattening see the mutated pickle too. Must give values or an
// IOError; never a crash, a leak, unbounded memory or a hang. Seeds: tests/fuzz/seeds/pickle.
#include <cstddef>
#include <cstdint>
#include <memory>
#include <string>
#include <utility>
#include <vector>

#include "ga/io/pickle.hpp"
#include "ga/io/torch_checkpoint.hpp"

namespace {

void put16(std::vector<uint8_t>& s, uint32_t v) { s.push_back(uint8_t(v)), s.push_back(uint8_t(v >> 8)); }
void put32(std::vector<uint8_t>& s, uint32_t v) { put16(s, v & 0xFFFF), put16(s, v >> 16); }

/// A stored zip of `entries` (CRCs left 0: the reader is told not to check them).
std::vector<uint8_t> zip_of(const std::vector<std::pair<std::string, std::vector<uint8_t>>>& entries) {
  std::vector<uint8_t> out, cd;
  for (const auto& entry : entries) {
    const std::string& name = entry.first;
    const std::vector<uint8_t>& data = entry.second;
    const uint32_t offset = uint32_t(out.size());
    auto common = [&](std::vector<uint8_t>& s) {
      put16(s, 0), put16(s, 0), put16(s, 0x21), put32(s, 0);
      put32(s, uint32_t(data.size())), put32(s, uint32_t(data.size()));
      put16(s, uint32_t(name.size())), put16(s, 0);
    };
    put32(out, 0x04034b50), put16(out, 20), put16(out, 0);
    common(out);
    out.insert(out.end(), name.begin(), name.end());
    out.insert(out.end(), data.begin(), data.end());
    put32(cd, 0x02014b50), put16(cd, 20), put16(cd, 20), put16(cd, 0);
    common(cd);
    put16(cd, 0), put16(cd, 0), put16(cd, 0), put32(cd, 0), put32(cd, offset);
    cd.insert(cd.end(), name.begin(), name.end());
  }
  const uint32_t cd_offset = uint32_t(out.size());
  out.insert(out.end(), cd.begin(), cd.end());
  put32(out, 0x06054b50), put16(out, 0), put16(out, 0), put16(out, uint32_t(entries.size()));
  put16(out, uint32_t(entries.size())), put32(out, uint32_t(cd.size())), put32(out, cd_offset), put16(out, 0);
  return out;
}

/// Visits values reachable from v, depth first, at most `budget` of them and 200 deep (a fuzzed DAG can
/// have exponentially many paths; the arena makes cycles harmless).
size_t walk(const ga::io::PickleValue* v, size_t& budget, int depth = 0) {
  if (!v || budget == 0 || depth > 200) return 0;
  --budget;
  size_t n = 1 + v->text.size() + v->module.size() + v->name.size();
  for (const auto* c : v->items) n += walk(c, budget, depth + 1);
  for (const auto* c : v->keys) n += walk(c, budget, depth + 1);
  return n + walk(v->state, budget, depth + 1);
}

}  // namespace

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  ga::io::PickleOptions po;
  po.max_values = size_t(1) << 20;
  for (bool torchscript : {false, true}) {
    po.torchscript = torchscript;
    try {
      const ga::io::Pickle p = ga::io::unpickle(data, size, "fuzz.pkl", po);
      size_t budget = 100000;
      volatile size_t n = walk(&p.root(), budget);
      (void)n;
    } catch (const ga::IOError&) {
    }
  }
  std::vector<std::pair<std::string, std::vector<uint8_t>>> entries;
  entries.emplace_back("archive/data.pkl", std::vector<uint8_t>(data, data + size));
  for (int k = 0; k < 4; ++k) {
    std::vector<uint8_t> storage(64 << k);
    for (size_t i = 0; i < storage.size(); ++i) storage[i] = uint8_t(i * 37 + k);
    entries.emplace_back("archive/data/" + std::to_string(k), std::move(storage));
  }
  entries.emplace_back("archive/version", std::vector<uint8_t>{'3', '\n'});
  if (size && (data[0] & 1)) entries.emplace_back("archive/code/x.py", std::vector<uint8_t>{});  // TorchScript
  ga::io::TorchReadOptions opt;
  opt.verify_crc = false;
  opt.pickle = po;
  opt.max_visits = 1'000'000;
  opt.max_copied_bytes = uint64_t(64) << 20;
  try {
    auto bytes = std::make_shared<std::vector<uint8_t>>(zip_of(entries));
    const ga::io::TorchCheckpoint ck = ga::io::read_torch_checkpoint_buffer(bytes, "fuzz.pt", opt);
    for (const auto& [name, t] : ck.tensors) {
      (void)name;
      (void)t.to_vector<double>();
    }
  } catch (const ga::IOError&) {
  }
  return 0;
}
