// PyTorch checkpoint reading: the zip reader, the restricted unpickler, the inflater and
// read_torch_checkpoint. Expected tensors come from PyTorch itself (tests/fixtures/checkpoints/
// *.json, written by tests/fixtures/gen_checkpoint_fixtures.py from the same objects it saved
// and loaded back), deflate streams from zlib; the corruption tests only ask for an IOError
// (never a crash: the sanitizer job runs them) and, where the cause is precise, its message.
#include <doctest/doctest.h>

#include <cstdint>
#include <cstring>
#include <fstream>
#include <functional>
#include <initializer_list>
#include <iterator>
#include <map>
#include <memory>
#include <string>
#include <utility>
#include <vector>

#include <ga/clip/tokenizer.hpp>
#include <ga/io/inflate.hpp>
#include <ga/io/json.hpp>
#include <ga/io/pickle.hpp>
#include <ga/io/torch_checkpoint.hpp>
#include <ga/io/zip.hpp>

#include "test_util.hpp"

#ifndef GA_SOURCE_DIR
#error "GA_SOURCE_DIR must name the repository root (tests/CMakeLists.txt defines it)"
#endif

using namespace ga;
using ga::io::Json;
using ga::test::expect_error;

namespace {

const std::string kDir = std::string(GA_SOURCE_DIR) + "/tests/fixtures/checkpoints/";

using Bytes = std::vector<uint8_t>;

Bytes read_file(const std::string& path) {
  std::ifstream f(path, std::ios::binary);
  REQUIRE_MESSAGE(f.good(), "cannot open fixture ", path);
  return Bytes((std::istreambuf_iterator<char>(f)), std::istreambuf_iterator<char>());
}
std::shared_ptr<Bytes> shared(Bytes b) { return std::make_shared<Bytes>(std::move(b)); }

// ---- independent helpers (not the code under test) -------------------------------------------

uint64_t fnv1a64(const uint8_t* p, size_t n) {
  uint64_t h = 0xCBF29CE484222325ull;
  for (size_t i = 0; i < n; ++i) h = (h ^ p[i]) * 0x100000001B3ull;
  return h;
}
std::string hex64(uint64_t v) {
  char buf[17];
  std::snprintf(buf, sizeof buf, "%016llx", static_cast<unsigned long long>(v));
  return buf;
}
/// Bitwise CRC-32 (the textbook loop), for the archives the tests build.
uint32_t crc32_bitwise(const std::string& s) {
  uint32_t c = 0xFFFFFFFFu;
  for (unsigned char ch : s) {
    c ^= ch;
    for (int k = 0; k < 8; ++k) c = (c & 1) ? 0xEDB88320u ^ (c >> 1) : c >> 1;
  }
  return ~c;
}
Bytes from_hex(const std::string& h) {
  Bytes out;
  for (size_t i = 0; i + 1 < h.size(); i += 2) out.push_back(static_cast<uint8_t>(std::stoi(h.substr(i, 2), nullptr, 16)));
  return out;
}
/// The generator's LCG (see deflate_vectors.json).
Bytes lcg_bytes(size_t n, uint32_t seed, bool alphabet) {
  uint64_t x = seed;
  Bytes out;
  for (size_t i = 0; i < n; ++i) {
    x = (1103515245ull * x + 12345ull) & 0x7FFFFFFFull;
    const uint8_t b = static_cast<uint8_t>((x >> 16) & 0xFF);
    out.push_back(alphabet ? static_cast<uint8_t>("abcd"[b & 3]) : b);
  }
  return out;
}

/// A minimal zip writer (stored entries, no data descriptors) for archives the tests craft.
void put16(std::string& s, uint32_t v) { s += char(v & 0xFF), s += char((v >> 8) & 0xFF); }
void put32(std::string& s, uint32_t v) { put16(s, v & 0xFFFF), put16(s, v >> 16); }
Bytes make_zip(const std::vector<std::pair<std::string, std::string>>& entries) {
  std::string out, cd;
  for (const auto& [name, data] : entries) {
    const uint32_t offset = static_cast<uint32_t>(out.size()), crc = crc32_bitwise(data);
    std::string common;
    put16(common, 0), put16(common, 0), put16(common, 0x21);  // method, time, date
    put32(common, crc), put32(common, uint32_t(data.size())), put32(common, uint32_t(data.size()));
    put16(common, uint32_t(name.size())), put16(common, 0);  // name and extra lengths
    put32(out, 0x04034b50), put16(out, 20), put16(out, 0);
    out += common + name + data;
    put32(cd, 0x02014b50), put16(cd, 20), put16(cd, 20), put16(cd, 0);
    cd += common;
    put16(cd, 0), put16(cd, 0), put16(cd, 0), put32(cd, 0), put32(cd, offset);
    cd += name;
  }
  const uint32_t cd_offset = static_cast<uint32_t>(out.size());
  out += cd;
  put32(out, 0x06054b50), put16(out, 0), put16(out, 0), put16(out, uint32_t(entries.size()));
  put16(out, uint32_t(entries.size())), put32(out, uint32_t(cd.size())), put32(out, cd_offset), put16(out, 0);
  return Bytes(out.begin(), out.end());
}

/// Protocol-2 pickle opcodes, spelled out.
struct Pkl {
  std::string s = "\x80\x02";
  Pkl& raw(const std::string& r) { s += r; return *this; }
  Pkl& op(char c) { s += c; return *this; }
  Pkl& str(const std::string& t) { s += 'X'; put32(s, uint32_t(t.size())); s += t; return *this; }
  Pkl& i(int64_t v) {
    if (v >= 0 && v < 256) { s += 'K'; s += char(v); }
    else { s += 'J'; put32(s, uint32_t(int32_t(v))); }
    return *this;
  }
  Pkl& global(const std::string& m, const std::string& n) { s += 'c' + m + '\n' + n + '\n'; return *this; }
  Pkl& put(uint8_t k) { s += 'q'; s += char(k); return *this; }       // BINPUT
  Pkl& get(uint8_t k) { s += 'h'; s += char(k); return *this; }       // BINGET
  Pkl& long_put(uint32_t k) { s += 'r'; put32(s, k); return *this; }  // LONG_BINPUT
  Pkl& ints(const std::vector<int64_t>& v) { op('('); for (int64_t x : v) i(x); return op('t'); }
  /// torch._utils._rebuild_tensor_v2(("storage", torch.<type>, key, "cpu", numel), offset, size, stride, False, OrderedDict())
  Pkl& tensor(const std::string& type, const std::string& key, int64_t numel, int64_t offset,
              const std::vector<int64_t>& size, const std::vector<int64_t>& stride) {
    global("torch._utils", "_rebuild_tensor_v2").op('(');
    op('(').str("storage").global("torch", type).str(key).str("cpu").i(numel).op('t').op('Q');
    i(offset).ints(size).ints(stride).op('\x89').global("collections", "OrderedDict").op(')').op('R');
    return op('t').op('R');
  }
  Bytes bytes() const { return Bytes(s.begin(), s.end()); }
};

std::string f32_bytes(const std::vector<float>& v) {
  return std::string(reinterpret_cast<const char*>(v.data()), v.size() * 4);
}

/// A torch.save-shaped archive: archive/data.pkl, archive/data/<key>..., archive/version.
Bytes make_checkpoint(const std::string& pkl, const std::vector<std::pair<std::string, std::string>>& storages = {},
                      const std::string& prefix = "archive") {
  std::vector<std::pair<std::string, std::string>> e = {{prefix + "/data.pkl", pkl}};
  for (const auto& [k, v] : storages) e.emplace_back(prefix + "/data/" + k, v);
  e.emplace_back(prefix + "/version", "3\n");
  return make_zip(e);
}

io::TorchCheckpoint read_buf(const Bytes& b, const io::TorchReadOptions& opt = {}) {
  return io::read_torch_checkpoint_buffer(shared(b), "test.pt", opt);
}

/// Runs f; passes if it returns or throws IOError; anything else fails the check.
template <class F>
bool io_error_or_ok(F&& f, std::string* msg = nullptr) {
  try {
    f();
    return true;
  } catch (const IOError& e) {
    if (msg) *msg = e.what();
    return true;
  } catch (const std::exception& e) {
    if (msg) *msg = std::string("wrong exception type: ") + e.what();
    return false;
  }
}

// ---- comparing with PyTorch's view of a fixture ------------------------------------------------

const char* dtype_tag(DType t) {
  switch (t) {
    case DType::f32: return "f32";
    case DType::f64: return "f64";
    case DType::f16: return "f16";
    case DType::bf16: return "bf16";
    case DType::i32: return "i32";
    case DType::i64: return "i64";
    case DType::u8: return "u8";
    case DType::b8: return "b8";
  }
  return "?";
}

void check_against_expected(const io::TorchCheckpoint& ck, const std::string& json_name) {
  const Bytes text = read_file(kDir + json_name);
  const Json doc = io::parse_json(std::string(text.begin(), text.end()), json_name);
  CHECK(ck.format == doc.at("format").as_string());
  const Json& want = doc.at("tensors");
  REQUIRE(ck.tensors.size() == want.size());
  for (size_t k = 0; k < want.size(); ++k) {
    const Json& w = want[k];
    const auto& [name, t] = ck.tensors[k];
    INFO(json_name, ": tensor ", k, " \"", w.at("name").as_string(), "\"");
    CHECK(name == w.at("name").as_string());
    CHECK(std::string(dtype_tag(t.dtype())) == w.at("dtype").as_string());
    Shape shape;
    for (const Json& d : w.at("shape").values()) shape.push_back(d.as_int());
    CHECK(t.shape() == shape);
    CHECK(t.is_contiguous());
    const Tensor c = t.contiguous();
    const auto* p = static_cast<const uint8_t*>(c.raw_data());
    CHECK(hex64(fnv1a64(p, static_cast<size_t>(c.numel()) * dtype_size(c.dtype()))) == w.at("fnv1a64").as_string());
    const Json& first = w.at("first");
    if (t.dtype() == DType::f32 || t.dtype() == DType::f64 || t.dtype() == DType::f16 || t.dtype() == DType::bf16) {
      const std::vector<double> v = t.to_vector<double>();
      for (size_t i = 0; i < first.size(); ++i) CHECK(v[i] == first[i].as_number());
    } else {
      const std::vector<int64_t> v = t.to_vector<int64_t>();
      for (size_t i = 0; i < first.size(); ++i) CHECK(v[i] == first[i].as_int());
    }
  }
}

struct Fixture {
  const char* file;
  const char* format;
};
const Fixture kReadable[] = {
    {"resnet_sd_f32.pt", "torch-zip"},   {"vit_sd_f16.pt", "torch-zip"},      {"openclip_resnet_bf16.pt", "torch-zip"},
    {"vit_jit_f16.pt", "torchscript"},   {"resnet_jit_f16.pt", "torchscript"}, {"script_containers.pt", "torchscript"},
    {"stress.pt", "torch-zip"},          {"stress_deflate.pt", "torch-zip"},  {"stress_zip64.pt", "torch-zip"}};

std::string json_of(const std::string& pt) { return pt.substr(0, pt.size() - 3) + ".json"; }

const io::PickleValue* dict_get(const io::PickleValue& d, const std::string& key) {
  for (size_t i = 0; i < d.keys.size(); ++i)
    if (d.keys[i]->is(io::PickleValue::Kind::string) && d.keys[i]->text == key) return d.items[i];
  return nullptr;
}

}  // namespace

// =============================================================================================
// Fixtures made by PyTorch

TEST_CASE("checkpoint: every fixture reads exactly as PyTorch sees it") {
  for (const Fixture& f : kReadable) {
    INFO("fixture ", f.file);
    const io::TorchCheckpoint ck = io::read_torch_checkpoint(kDir + f.file);
    CHECK(ck.format == f.format);
    check_against_expected(ck, json_of(f.file));
    // The same bytes from memory give the same answer.
    check_against_expected(read_buf(read_file(kDir + f.file)), json_of(f.file));
  }
}

TEST_CASE("checkpoint: OpenAI-style TorchScript archives give state-dict names, scalars included") {
  const io::TorchCheckpoint ck = io::read_torch_checkpoint(kDir + "vit_jit_f16.pt");
  std::map<std::string, Tensor> by_name(ck.tensors.begin(), ck.tensors.end());
  REQUIRE(by_name.count("visual.conv1.weight"));
  CHECK(by_name["visual.conv1.weight"].shape() == Shape{128, 3, 8, 8});
  CHECK(by_name["visual.conv1.weight"].dtype() == DType::f16);
  REQUIRE(by_name.count("logit_scale"));
  CHECK(by_name["logit_scale"].dim() == 0);
  for (const char* k : {"input_resolution", "context_length", "vocab_size"}) {
    REQUIRE(by_name.count(k));
    CHECK(by_name[k].dtype() == DType::i64);
  }
  CHECK(by_name["input_resolution"].item<int64_t>() == 32);
  CHECK(by_name["context_length"].item<int64_t>() == 77);
  CHECK(by_name["vocab_size"].item<int64_t>() == 1000);
  // The open_clip-style file keeps its wrapper and prefix: unwrapping is the converter's job.
  const io::TorchCheckpoint oc = io::read_torch_checkpoint(kDir + "openclip_resnet_bf16.pt");
  CHECK(oc.tensors.front().first == "state_dict.module.positional_embedding");
  bool optimizer = false;
  for (const auto& [n, t] : oc.tensors) optimizer = optimizer || n.rfind("optimizer.state.", 0) == 0;
  CHECK(optimizer);
}

TEST_CASE("checkpoint: stored, aligned, contiguous tensors alias the file's bytes and keep them alive") {
  auto buf = shared(read_file(kDir + "stress.pt"));
  const uint8_t* lo = buf->data();
  const uint8_t* hi = lo + buf->size();
  io::TorchCheckpoint ck = io::read_torch_checkpoint_buffer(buf, "stress.pt");
  std::weak_ptr<Bytes> watch = buf;
  buf.reset();
  CHECK_FALSE(watch.expired());  // the tensors hold the buffer
  std::map<std::string, Tensor> t(ck.tensors.begin(), ck.tensors.end());
  auto inside = [&](const Tensor& x) {
    const auto* p = static_cast<const uint8_t*>(x.raw_data());
    return p >= lo && p < hi;
  };
  CHECK(inside(t["contig"]));
  CHECK(inside(t["row"]));  // a view at an offset, still contiguous
  CHECK_FALSE(inside(t["transposed"]));  // copied into row-major order
  // Views of one storage see the same bytes: row 3 of contig.
  const std::vector<float> all = t["contig"].to_vector<float>(), row = t["row"].to_vector<float>();
  CHECK(std::vector<float>(all.begin() + 30, all.begin() + 40) == row);
  ck.tensors.clear();
  t.clear();
  CHECK(watch.expired());  // and let it go with them
}

TEST_CASE("checkpoint: the legacy format, dangerous globals and missing dtypes are clear IOErrors") {
  expect_error<IOError>("legacy", [] { io::read_torch_checkpoint(kDir + "legacy.pt"); },
                        {"legacy.pt", "legacy (pre-1.6)", "torch >= 1.6", "safetensors"});
  expect_error<IOError>("os.system", [] { io::read_torch_checkpoint(kDir + "malicious_system.pt"); },
                        {"malicious_system.pt", "unknown global posix.system"});
  expect_error<IOError>("eval", [] { io::read_torch_checkpoint(kDir + "malicious_eval.pt"); },
                        {"malicious_eval.pt", "unknown global __builtin__.eval"});
  expect_error<IOError>("int8", [] { io::read_torch_checkpoint(kDir + "unsupported_int8.pt"); },
                        {"unsupported_int8.pt", "tensor \"w\"", "CharStorage"});
  expect_error<IOError>("missing file", [] { io::read_torch_checkpoint(kDir + "no_such_file.pt"); },
                        {"no_such_file.pt"});
  expect_error<IOError>("a directory", [] { io::read_torch_checkpoint(kDir); }, {"not a regular file"});
}

// =============================================================================================
// Zip

TEST_CASE("zip: directory of a PyTorch archive, stored zero-copy, deflated and ZIP64 variants") {
  const io::ZipArchive z = io::ZipArchive::open(kDir + "stress.pt");
  REQUIRE(z.find("stress/data.pkl") != nullptr);
  REQUIRE(z.find("stress/version") != nullptr);
  CHECK(z.find("stress/nope") == nullptr);
  CHECK_THROWS_AS(z.entry("stress/nope"), KeyError);
  const io::ByteSource v = z.read("stress/version");
  CHECK(std::string(reinterpret_cast<const char*>(v.data), v.size) == "3\n");
  CHECK(v.data >= z.bytes().data);
  CHECK(v.data < z.bytes().data + z.bytes().size);  // zero-copy
  for (const io::ZipEntry& e : z.entries()) {
    CHECK(e.method == 0);
    CHECK(e.data_offset % 64 == 0);  // torch aligns every entry
  }
  // The deflated and ZIP64 re-zips hold the same bytes per entry.
  const io::ZipArchive d = io::ZipArchive::open(kDir + "stress_deflate.pt");
  REQUIRE(d.entries().size() == z.entries().size());
  for (const io::ZipEntry& e : d.entries()) {
    CHECK(e.method == 8);
    const io::ByteSource a = d.read(e), b = z.read(e.name);
    REQUIRE(a.size == b.size);
    CHECK((a.size == 0 || std::memcmp(a.data, b.data, a.size) == 0));
  }
  const io::ZipArchive z64 = io::ZipArchive::open(kDir + "stress_zip64.pt");
  CHECK(z64.entries().size() > 10);
  CHECK(z64.read("archive/version").size == 2);  // saved through a file object: "archive/"
}

namespace {
/// read_torch_checkpoint over the first `len` bytes of `full`, without copying them.
void read_prefix(const std::shared_ptr<Bytes>& full, size_t len, const char* name) {
  io::ByteSource src;
  src.data = full->data();
  src.size = len;
  src.owner = full;
  (void)io::read_torch_checkpoint(io::ZipArchive::from_source(src, name));
}
}  // namespace

TEST_CASE("zip: every truncation of a small archive is an IOError") {
  for (const char* name : {"stress.pt", "stress_deflate.pt", "stress_zip64.pt", "script_containers.pt"}) {
    const auto full = shared(read_file(kDir + name));
    int failures = 0;
    for (size_t len = 0; len < full->size(); ++len) {
      bool ok = false;
      try {
        read_prefix(full, len, name);
      } catch (const IOError&) {
        ok = true;
      } catch (...) {
      }
      failures += !ok;
    }
    INFO(name, ": ", failures, " truncations did not give an IOError");
    CHECK(failures == 0);
  }
}

TEST_CASE("zip: a dense sample of truncations of a model-sized archive is an IOError") {
  const auto full = shared(read_file(kDir + "vit_jit_f16.pt"));
  const size_t n = full->size();
  int failures = 0;
  auto check = [&](size_t len) {
    try {
      read_prefix(full, len, "vit_jit_f16.pt");
      ++failures;
    } catch (const IOError&) {
    }
  };
  for (size_t len = 0; len < n; len += 1 + len / 40 + (len % 7919)) check(len);
  // The tail matters most: the end records and the central directory (about 14 kB here).
  for (size_t cut_by = 1; cut_by < 16000 && cut_by < n; cut_by += 7) check(n - cut_by);
  CHECK(failures == 0);
}

TEST_CASE("zip: flipped bytes anywhere give an IOError or a clean read, never a crash") {
  for (const char* name : {"stress.pt", "stress_deflate.pt", "stress_zip64.pt"}) {
    const Bytes full = read_file(kDir + name);
    // One flip per byte, the bit cycling with the position (the fuzz targets do the rest).
    // Inside data.pkl and deflate streams a flip is caught by the CRC, so there it is also read
    // with CRC checks off, to reach the pickle reader and the inflater. A flip inside a stored
    // storage only changes values or fails the CRC: every 4th such byte is enough.
    enum Region : uint8_t { kStructure, kStorage, kParsed };
    std::vector<Region> region(full.size(), kStructure);
    const io::ZipArchive z = io::ZipArchive::from_buffer(shared(full), name);
    for (const io::ZipEntry& e : z.entries()) {
      const bool storage = e.method == 0 && e.name.find("/data/") != std::string::npos;
      for (uint64_t i = e.data_offset; i < e.data_offset + e.compressed_size; ++i) region[i] = storage ? kStorage : kParsed;
    }
    const uint8_t masks[] = {0xFF, 0x01, 0x80, 0x10, 0x04};
    int wrong = 0, detected = 0;
    for (size_t at = 0; at < full.size(); ++at) {
      if (region[at] == kStorage && at % 4) continue;
      Bytes b = full;
      b[at] ^= masks[at % 5];
      for (bool crc : {true, false}) {
        if (!crc && region[at] != kParsed) continue;
        io::TorchReadOptions opt;
        opt.verify_crc = crc;
        std::string msg;
        bool threw = false;
        const bool fine = io_error_or_ok(
            [&] {
              try {
                (void)io::read_torch_checkpoint_buffer(shared(b), name, opt);
              } catch (const IOError&) {
                threw = true;
                throw;
              }
            },
            &msg);
        if (!fine) {
          ++wrong;
          INFO(name, " byte ", at, " ^ ", int(masks[at % 5]), ": ", msg);
          CHECK(fine);
        }
        detected += threw;
      }
    }
    CHECK(wrong == 0);
    CHECK(detected > 0);
  }
}

TEST_CASE("zip: a stored entry's CRC catches a flipped data byte unless checking is off") {
  Bytes b = read_file(kDir + "stress.pt");
  const io::ZipArchive z = io::ZipArchive::from_buffer(shared(b), "stress.pt");
  const io::ZipEntry& e = z.entry("stress/data/0");
  b[e.data_offset + 3] ^= 0x40;
  expect_error<IOError>("crc", [&] { (void)read_buf(b); }, {"stress/data/0", "CRC-32"});
  io::TorchReadOptions off;
  off.verify_crc = false;
  CHECK(read_buf(b, off).tensors.size() == 31);
}

namespace {

/// Offsets of the structures of an archive written by make_zip or torch (read here the simple
/// way: the end record is the last 22 bytes, no comment; torch also writes a ZIP64 end record
/// and locator before it, whose fields a mutation must change too).
struct Layout {
  size_t eocd = 0, cd = 0;
  size_t z64 = 0;               // ZIP64 end record, or 0
  std::vector<size_t> central;  // each central header
  std::vector<size_t> local;    // each local header
};
uint32_t rd32(const Bytes& b, size_t at) {
  return uint32_t(b[at]) | uint32_t(b[at + 1]) << 8 | uint32_t(b[at + 2]) << 16 | uint32_t(b[at + 3]) << 24;
}
uint16_t rd16(const Bytes& b, size_t at) { return uint16_t(b[at] | b[at + 1] << 8); }
void wr32(Bytes& b, size_t at, uint32_t v) {
  for (int i = 0; i < 4; ++i) b[at + i] = uint8_t(v >> (8 * i));
}
void wr16(Bytes& b, size_t at, uint16_t v) { b[at] = uint8_t(v), b[at + 1] = uint8_t(v >> 8); }
void wr64(Bytes& b, size_t at, uint64_t v) { wr32(b, at, uint32_t(v)), wr32(b, at + 4, uint32_t(v >> 32)); }
Layout layout(const Bytes& b) {
  Layout l;
  l.eocd = b.size() - 22;
  REQUIRE(rd32(b, l.eocd) == 0x06054b50u);
  if (l.eocd >= 20 && rd32(b, l.eocd - 20) == 0x07064b50u) l.z64 = rd32(b, l.eocd - 12);
  l.cd = rd32(b, l.eocd + 16);
  size_t at = l.cd;
  for (int k = 0; k < rd16(b, l.eocd + 10); ++k) {
    l.central.push_back(at);
    l.local.push_back(rd32(b, at + 42));
    at += 46 + rd16(b, at + 28) + rd16(b, at + 30) + rd16(b, at + 32);
  }
  return l;
}
enum class EndField { entries, cd_size, cd_offset };
/// Sets a field of the end record, and of the ZIP64 end record when there is one.
void set_end(Bytes& b, const Layout& l, EndField f, uint32_t v) {
  switch (f) {
    case EndField::entries:
      wr16(b, l.eocd + 8, uint16_t(v)), wr16(b, l.eocd + 10, uint16_t(v));
      if (l.z64) wr64(b, l.z64 + 24, v), wr64(b, l.z64 + 32, v);
      break;
    case EndField::cd_size:
      wr32(b, l.eocd + 12, v);
      if (l.z64) wr64(b, l.z64 + 40, v);
      break;
    case EndField::cd_offset:
      wr32(b, l.eocd + 16, v);
      if (l.z64) wr64(b, l.z64 + 48, v);
      break;
  }
}

}  // namespace

TEST_CASE("zip: lying sizes, offsets and counts are IOErrors naming what is wrong") {
  const Bytes good = read_file(kDir + "stress.pt");
  const Layout L = layout(good);
  REQUIRE(L.central.size() >= 4);
  const size_t c1 = L.central[1];  // stress/data/0 (after data.pkl)
  auto expect = [&](const char* what, const std::function<void(Bytes&)>& mutate,
                    std::initializer_list<const char*> parts) {
    Bytes b = good;
    mutate(b);
    expect_error<IOError>(what, [&] { (void)read_buf(b); }, parts);
  };
  REQUIRE(L.z64 != 0);  // torch writes a ZIP64 end record even for small files
  expect("cd offset past the end", [&](Bytes& b) { set_end(b, L, EndField::cd_offset, uint32_t(good.size())); },
         {"central directory", "outside"});
  expect("cd size too large", [&](Bytes& b) { set_end(b, L, EndField::cd_size, rd32(b, L.eocd + 12) + 100); },
         {"central directory"});
  expect("entry count too large", [&](Bytes& b) { set_end(b, L, EndField::entries, 60000); }, {"entries"});
  expect("entry count too small", [&](Bytes& b) { set_end(b, L, EndField::entries, 2); }, {"after its 2 entries"});
  expect("end records disagree", [&](Bytes& b) { wr16(b, L.eocd + 8, 3), wr16(b, L.eocd + 10, 3); }, {"disagree"});
  expect("ZIP64 record moved", [&](Bytes& b) { wr32(b, L.eocd - 12, uint32_t(L.z64 + 1)); }, {"ZIP64 end record"});
  expect("ZIP64 record past the locator", [&](Bytes& b) { wr32(b, L.eocd - 12, uint32_t(L.eocd)); }, {"ZIP64"});
  expect("ZIP64 record size", [&](Bytes& b) { wr64(b, L.z64 + 4, 1 << 20); }, {"ZIP64 end record size"});
  expect("split archive", [&](Bytes& b) { wr16(b, L.eocd + 4, 1); }, {"multi-disk"});
  expect("split archive (ZIP64)", [&](Bytes& b) { wr32(b, L.z64 + 16, 1); }, {"multi-disk"});
  expect("compressed size larger", [&](Bytes& b) { wr32(b, c1 + 20, rd32(b, c1 + 20) + 1); },
         {"stress/data/0", "sizes differ"});
  expect("both sizes huge", [&](Bytes& b) { wr32(b, c1 + 20, 0x7FFFFFF0), wr32(b, c1 + 24, 0x7FFFFFF0); },
         {"stress/data/0", "central directory"});
  expect("sizes saturated without ZIP64", [&](Bytes& b) { wr32(b, c1 + 20, 0xFFFFFFFF), wr32(b, c1 + 24, 0xFFFFFFFF); },
         {"stress/data/0", "ZIP64 extra field"});
  expect("local offset past the directory", [&](Bytes& b) { wr32(b, c1 + 42, uint32_t(L.cd + 5)); },
         {"stress/data/0", "local header offset"});
  expect("local offset at another entry", [&](Bytes& b) { wr32(b, c1 + 42, uint32_t(L.local[2])); },
         {"stress/data/0", "local header names a different file"});
  expect("local offset off by one", [&](Bytes& b) { wr32(b, c1 + 42, uint32_t(L.local[1] + 1)); },
         {"stress/data/0", "no local header"});
  expect("method 12 (bzip2)", [&](Bytes& b) { wr16(b, c1 + 10, 12); }, {"stress/data/0", "compression method 12"});
  expect("encrypted", [&](Bytes& b) { wr16(b, c1 + 8, rd16(b, c1 + 8) | 1); }, {"stress/data/0", "encrypted"});
  expect("duplicate name", [&](Bytes& b) {
    // Rename entry 2 to entry 1's name (same length: "stress/data/1" vs "stress/data/0").
    const size_t c2 = L.central[2];
    std::memcpy(&b[c2 + 46], &b[c1 + 46], rd16(b, c1 + 28));
  }, {"appears twice"});
  expect("CRC in the directory", [&](Bytes& b) { wr32(b, c1 + 16, rd32(b, c1 + 16) ^ 1); },
         {"stress/data/0"});
  expect("name length past the directory", [&](Bytes& b) { wr16(b, L.central.back() + 28, 0xFFFF); },
         {"runs past the directory"});
  expect("local name length", [&](Bytes& b) { wr16(b, L.local[1] + 26, 0xFFFF); }, {"stress/data/0"});
  expect("local extra length", [&](Bytes& b) { wr16(b, L.local[1] + 28, 0xFFF0); }, {"stress/data/0"});
  expect("not a zip at all", [&](Bytes& b) { b.assign(100, 'x'); }, {"not a zip archive"});
  expect("empty", [&](Bytes& b) { b.clear(); }, {"not a zip archive"});
  expect("end record only", [&](Bytes& b) { b = Bytes(good.end() - 22, good.end()); }, {"central directory"});
}

TEST_CASE("zip: overlapping entries and hand-made archives") {
  // Two directory entries pointing at one local header of the same name cannot both be valid
  // (duplicate names); an entry whose data runs into the next entry's header overlaps.
  Bytes z = make_zip({{"a/data.pkl", "12345678"}, {"a/version", "3\n"}});
  const Layout L = layout(z);
  Bytes over = z;
  wr32(over, L.central[0] + 20, 40), wr32(over, L.central[0] + 24, 40);  // runs over a/version's header
  wr32(over, L.local[0] + 18, 40), wr32(over, L.local[0] + 22, 40);
  expect_error<IOError>("overlap", [&] { (void)io::ZipArchive::from_buffer(shared(over), "o.zip"); }, {"overlap"});
  // A comment after the end record is allowed; a wrong comment length is not.
  Bytes commented = z;
  wr16(commented, commented.size() - 2, 5);
  for (char c : std::string("hello")) commented.push_back(uint8_t(c));
  CHECK(io::ZipArchive::from_buffer(shared(commented), "c.zip").entries().size() == 2);
  commented.push_back('!');
  CHECK_THROWS_AS(io::ZipArchive::from_buffer(shared(commented), "c.zip"), IOError);
  // Reading a stored entry whose CRC lies.
  Bytes badcrc = z;
  wr32(badcrc, L.central[0] + 16, 1), wr32(badcrc, L.local[0] + 14, 1);
  const io::ZipArchive a = io::ZipArchive::from_buffer(shared(badcrc), "b.zip");
  CHECK_THROWS_AS(a.read("a/data.pkl"), IOError);
  CHECK(a.read("a/data.pkl", false).size == 8);
}

// =============================================================================================
// Checkpoint layout and tensors from crafted pickles

TEST_CASE("checkpoint: crafted tensors: views, shared storages, names, prefixes") {
  const std::string st = f32_bytes({0, 1, 2, 3, 4, 5, 6, 7, 8, 9, 10, 11});
  // {"m": 3x4 view, "t": its transpose at offset 1, 5: [0-d view, "skip"], "nested": {"x": ()}}
  Pkl q;
  q.op('}').op('(');
  q.str("m").tensor("FloatStorage", "0", 12, 0, {3, 4}, {4, 1});
  q.str("t").tensor("FloatStorage", "0", 12, 1, {3, 2}, {1, 4});
  q.i(5).op(']').op('(').tensor("FloatStorage", "0", 12, 11, {}, {}).str("skip").op('e');
  q.str("nested").op('}').str("x").op(')').op('s');  // a dict with an empty tuple: no tensors
  q.op('u').op('.');
  for (const char* prefix : {"archive", "ViT-B-32", "my model"}) {
    const io::TorchCheckpoint ck = read_buf(make_checkpoint(q.s, {{"0", st}}, prefix));
    CHECK(ck.format == "torch-zip");
    REQUIRE(ck.tensors.size() == 3);
    CHECK(ck.tensors[0].first == "m");
    CHECK(ck.tensors[1].first == "t");
    CHECK(ck.tensors[2].first == "5.0");
    CHECK(ck.tensors[1].second.to_vector<float>() == std::vector<float>{1, 5, 2, 6, 3, 7});
    CHECK(ck.tensors[2].second.dim() == 0);
    CHECK(ck.tensors[2].second.item<float>() == 11.0f);
  }
  // The LIST opcode ('l') is not one torch writes.
  const std::string list_op = Pkl().op('}').op('(').op('l').s;
  expect_error<IOError>("LIST", [&] { (void)read_buf(make_checkpoint(list_op, {{"0", st}})); },
                        {"unsupported pickle opcode LIST", "archive/data.pkl", "byte 4"});
}

TEST_CASE("checkpoint: storages that are missing, short, of unknown type, or views out of bounds") {
  const std::string st = f32_bytes({1, 2, 3, 4});
  auto one = [](const std::string& type, const std::string& key, int64_t numel, int64_t offset,
                std::vector<int64_t> size, std::vector<int64_t> stride) {
    Pkl p;
    p.op('}').str("w").tensor(type, key, numel, offset, size, stride).op('s').op('.');
    return p.s;
  };
  auto expect = [&](const char* what, const std::string& pkl, std::initializer_list<const char*> parts) {
    expect_error<IOError>(what, [&] { (void)read_buf(make_checkpoint(pkl, {{"0", st}})); }, parts);
  };
  CHECK(read_buf(make_checkpoint(one("FloatStorage", "0", 4, 0, {4}, {1}), {{"0", st}})).tensors.size() == 1);
  expect("missing entry", one("FloatStorage", "7", 4, 0, {4}, {1}), {"tensor \"w\"", "archive/data/7", "missing"});
  expect("storage longer than its entry", one("FloatStorage", "0", 5, 0, {5}, {1}), {"tensor \"w\"", "archive/data/0"});
  expect("f64 storage on 16 bytes", one("DoubleStorage", "0", 4, 0, {4}, {1}), {"tensor \"w\""});
  expect("view past the storage", one("FloatStorage", "0", 4, 1, {4}, {1}), {"tensor \"w\"", "reaches element 4"});
  expect("strided past the storage", one("FloatStorage", "0", 4, 0, {2, 2}, {3, 1}), {"tensor \"w\""});
  expect("negative stride", one("FloatStorage", "0", 4, 3, {4}, {-1}), {"tensor \"w\"", "negative"});
  expect("negative size", one("FloatStorage", "0", 4, 0, {-1}, {1}), {"tensor \"w\"", "negative"});
  expect("negative offset", one("FloatStorage", "0", 4, -1, {1}, {1}), {"tensor \"w\"", "offset"});
  expect("rank mismatch", one("FloatStorage", "0", 4, 0, {2, 2}, {1}), {"tensor \"w\""});
  expect("overflowing size", one("FloatStorage", "0", 4, 0, {1 << 30, 1 << 30, 1 << 30}, {0, 0, 0}),
         {"tensor \"w\"", "overflows"});
  expect("unknown storage type", one("FancyStorage", "0", 4, 0, {4}, {1}), {"tensor \"w\"", "torch.FancyStorage"});
  expect("quantized storage", one("QInt8Storage", "0", 4, 0, {4}, {1}), {"tensor \"w\"", "QInt8Storage"});
  // Stride 0 over a small storage is fine (an expanded tensor) but its copy is bounded.
  const std::string expanded = one("FloatStorage", "0", 4, 0, {1 << 20, 1 << 20}, {0, 0});
  io::TorchReadOptions small;
  small.max_copied_bytes = 1 << 20;
  expect_error<IOError>("copy limit", [&] { (void)read_buf(make_checkpoint(expanded, {{"0", st}}), small); },
                        {"tensor \"w\"", "limit"});
  const io::TorchCheckpoint ok = read_buf(make_checkpoint(one("FloatStorage", "0", 4, 2, {3, 2}, {0, 1}), {{"0", st}}));
  CHECK(ok.tensors[0].second.to_vector<float>() == std::vector<float>{3, 4, 3, 4, 3, 4});
  // A bool storage with bytes other than 0 and 1 reads as true/false.
  Pkl b;
  b.op('}').str("b").tensor("BoolStorage", "0", 3, 0, {3}, {1}).op('s').op('.');
  const io::TorchCheckpoint bc = read_buf(make_checkpoint(b.s, {{"0", std::string("\x00\x02\x01", 3)}}));
  CHECK(bc.tensors[0].second.to_vector<int64_t>() == std::vector<int64_t>{0, 1, 1});
}

TEST_CASE("checkpoint: archive layouts that are not a checkpoint") {
  const std::string pkl = Pkl().op('}').op('.').s;
  CHECK(read_buf(make_checkpoint(pkl)).tensors.empty());
  expect_error<IOError>("no data.pkl", [&] { (void)read_buf(make_zip({{"a/version", "3"}})); }, {"data.pkl"});
  expect_error<IOError>("data.pkl at the top", [&] { (void)read_buf(make_zip({{"data.pkl", pkl}, {"version", "3"}})); },
                        {"data.pkl"});
  expect_error<IOError>("two checkpoints",
                        [&] { (void)read_buf(make_zip({{"a/data.pkl", pkl}, {"a/version", "3"}, {"b/data.pkl", pkl}})); },
                        {"more than one"});
  expect_error<IOError>("no version", [&] { (void)read_buf(make_zip({{"a/data.pkl", pkl}})); }, {"a/version"});
  expect_error<IOError>("bad version", [&] { (void)read_buf(make_zip({{"a/data.pkl", pkl}, {"a/version", "x"}})); },
                        {"version"});
  CHECK(read_buf(make_zip({{"a/data.pkl", pkl}, {"a/.data/version", "3\n"}})).tensors.empty());
  expect_error<IOError>("big-endian", [&] {
    (void)read_buf(make_zip({{"a/data.pkl", pkl}, {"a/version", "3"}, {"a/byteorder", "big"}}));
  }, {"byte order"});
  CHECK(read_buf(make_zip({{"a/data.pkl", pkl}, {"a/version", "3"}, {"a/byteorder", "little"}})).tensors.empty());
  expect_error<IOError>("old TorchScript",
                        [&] { (void)read_buf(make_zip({{"m/model.json", "{}"}, {"m/version", "1"}})); }, {"model.json"});
  // A TorchScript layout allows __torch__ classes; torch.save's does not.
  const std::string obj = Pkl().global("__torch__.M", "M").op(')').op('\x81').op('}').op('b').op('.').s;
  CHECK(read_buf(make_zip({{"a/data.pkl", obj}, {"a/version", "3"}, {"a/code/__torch__.py", ""}})).format ==
        "torchscript");
  expect_error<IOError>("__torch__ outside TorchScript", [&] { (void)read_buf(make_checkpoint(obj)); },
                        {"unknown global __torch__.M.M"});
  // Bare pickles and legacy files on disk are named as such.
  const Bytes legacy = read_file(kDir + "legacy.pt");
  expect_error<IOError>("legacy buffer", [&] { (void)read_buf(legacy); }, {"legacy"});
}

TEST_CASE("checkpoint: deep, cyclic and exponentially shared structures are bounded") {
  // 100000 nested lists: unpickling is iterative; flattening stops at max_depth.
  Pkl deep;
  for (int i = 0; i < 100000; ++i) deep.op(']');
  for (int i = 0; i < 99999; ++i) deep.op('a');
  deep.op('.');
  expect_error<IOError>("deep", [&] { (void)read_buf(make_checkpoint(deep.s)); }, {"nested deeper than 256"});
  // A list that contains itself.
  const std::string cyc = Pkl().op(']').put(1).get(1).op('a').op('.').s;
  expect_error<IOError>("cycle", [&] { (void)read_buf(make_checkpoint(cyc)); }, {"cyclic"});
  // t1 = (l0, l0), t2 = (t1, t1), ...: 2^60 paths to the one tensor.
  Pkl dag3;
  dag3.op(']').op('(').tensor("FloatStorage", "0", 1, 0, {}, {}).op('e');
  for (int i = 0; i < 60; ++i) dag3.put(0).get(0).op('\x86');
  dag3.op('.');
  io::TorchReadOptions opt;
  opt.max_visits = 100000;
  expect_error<IOError>("shared", [&] { (void)read_buf(make_checkpoint(dag3.s, {{"0", f32_bytes({1})}}), opt); },
                        {"more than 100000 values"});
  // 70000 open MARKs exceed the mark limit.
  Pkl marks;
  for (int i = 0; i < 70000; ++i) marks.op('(');
  expect_error<IOError>("marks", [&] { (void)read_buf(make_checkpoint(marks.s)); }, {"MARK"});
}

// =============================================================================================
// The unpickler on its own

namespace {
io::Pickle unpickle(const std::string& s, bool torchscript = false) {
  io::PickleOptions o;
  o.torchscript = torchscript;
  return io::unpickle(reinterpret_cast<const uint8_t*>(s.data()), s.size(), "t.pkl", o);
}
void expect_pickle_error(const char* what, const std::string& s, std::initializer_list<const char*> parts,
                         bool torchscript = false) {
  expect_error<IOError>(what, [&] { (void)unpickle(s, torchscript); }, parts);
}
}  // namespace

TEST_CASE("pickle: values of every supported kind") {
  using K = io::PickleValue::Kind;
  Pkl p;
  p.op('}').op('(');
  p.str("none").op('N');
  p.str("t").op('\x88').str("f").op('\x89');
  p.str("k1").i(200).str("k2").raw("M\x34\x12").str("neg").i(-5);
  p.str("long").raw(std::string("\x8a\x08\x00\x00\x00\x00\x00\x00\x00\x80", 10));  // INT64_MIN
  p.str("long3").raw(std::string("\x8a\x03\xff\xff\x7f", 5));                      // 0x7fffff
  p.str("longneg").raw(std::string("\x8a\x01\xff", 3));                              // -1
  p.str("long0").raw(std::string("\x8a\x00", 2));
  p.str("float").raw(std::string("G\x3f\xf8\x00\x00\x00\x00\x00\x00", 9));         // 1.5
  p.str("bytes").global("_codecs", "encode").str("a\xc3\xbf").str("latin1").op('\x86').op('R');
  p.str("nobytes").global("__builtin__", "bytes").op(')').op('R');
  p.str("tuple").i(1).i(2).i(3).op('\x87');
  p.str("list").op(']').i(9).op('a');
  p.i(7).str("int key");
  p.str("od").global("collections", "OrderedDict").op(')').op('R');
  p.op('u').op('.');
  const io::Pickle pk = unpickle(p.s);
  const io::PickleValue& r = pk.root();
  REQUIRE(r.is(K::dict));
  CHECK(dict_get(r, "none")->is(K::none));
  CHECK(dict_get(r, "t")->boolean);
  CHECK_FALSE(dict_get(r, "f")->boolean);
  CHECK(dict_get(r, "k1")->integer == 200);
  CHECK(dict_get(r, "k2")->integer == 0x1234);
  CHECK(dict_get(r, "neg")->integer == -5);
  CHECK(dict_get(r, "long")->integer == INT64_MIN);
  CHECK(dict_get(r, "long3")->integer == 0x7fffff);
  CHECK(dict_get(r, "longneg")->integer == -1);
  CHECK(dict_get(r, "long0")->integer == 0);
  CHECK(dict_get(r, "float")->floating == 1.5);
  CHECK(dict_get(r, "bytes")->is(K::bytes));
  CHECK(dict_get(r, "bytes")->text == std::string("a\xff"));
  CHECK(dict_get(r, "nobytes")->is(K::bytes));
  CHECK(dict_get(r, "nobytes")->text.empty());
  CHECK(dict_get(r, "tuple")->items.size() == 3);
  CHECK(dict_get(r, "list")->items.at(0)->integer == 9);
  CHECK(dict_get(r, "od")->is(K::dict));
  CHECK(r.keys.back()->is(K::string));  // "od" is last: the int key came before it
  CHECK(r.keys[r.keys.size() - 2]->integer == 7);
}

TEST_CASE("pickle: memo, shared references and dict key replacement follow Python") {
  // d = {}; d["a"] = 1; d["a"] = 2 keeps one key in place; the memo shares the list.
  const std::string s = Pkl().op(']').put(5).op('}').str("a").i(1).op('s').str("b").get(5).op('s')
                            .str("a").i(2).op('s').long_put(5).op('\x86').op('.').s;
  const io::Pickle pk = unpickle(s);
  const io::PickleValue& t = pk.root();
  REQUIRE(t.items.size() == 2);
  const io::PickleValue& d = *t.items[1];
  REQUIRE(d.keys.size() == 2);
  CHECK(d.keys[0]->text == "a");
  CHECK(d.items[0]->integer == 2);
  CHECK(d.items[1] == t.items[0]);  // the same list object
  CHECK(d.state == nullptr);
}

TEST_CASE("pickle: real data.pkl and constants.pkl of the fixtures parse") {
  for (const char* f : {"vit_jit_f16.pt", "script_containers.pt", "resnet_sd_f32.pt", "openclip_resnet_bf16.pt"}) {
    const io::ZipArchive z = io::ZipArchive::open(kDir + f);
    for (const io::ZipEntry& e : z.entries()) {
      if (e.name.find(".pkl") == std::string::npos || e.name.find("/code/") != std::string::npos) continue;
      const io::ByteSource b = z.read(e);
      io::PickleOptions o;
      o.torchscript = std::string(f).find("jit") != std::string::npos || std::string(f).find("script") != std::string::npos;
      INFO(f, ": ", e.name);
      CHECK_NOTHROW((void)io::unpickle(b.data, b.size, e.name, o));
    }
  }
  // The state dict's OrderedDict carries torch's _metadata as its state, not as items.
  const io::ZipArchive z = io::ZipArchive::open(kDir + "resnet_sd_f32.pt");
  const io::ByteSource b = z.read("resnet_sd_f32/data.pkl");
  const io::Pickle pk = io::unpickle(b.data, b.size, "data.pkl");
  REQUIRE(pk.root().state != nullptr);
  CHECK(dict_get(*pk.root().state, "_metadata") != nullptr);
  CHECK(dict_get(pk.root(), "_metadata") == nullptr);
}

TEST_CASE("pickle: unknown opcodes, unknown globals and bad input are IOErrors with the byte offset") {
  expect_pickle_error("FRAME", "\x80\x02\x95", {"t.pkl", "byte 2", "FRAME"});
  expect_pickle_error("STRING", "\x80\x02S'a'\n.", {"STRING"});
  expect_pickle_error("LONG4", std::string("\x80\x02\x8b\x01\x00\x00\x00\x01.", 9), {"LONG4"});
  expect_pickle_error("DUP", "\x80\x02N2.", {"DUP"});
  expect_pickle_error("0xff", "\x80\x02\xff", {"0xff", "byte 2"});
  expect_pickle_error("protocol 4", "\x80\x04N.", {"protocol 4"});
  expect_pickle_error("os.system", Pkl().global("os", "system").str("ls").op('\x85').op('R').op('.').s,
                      {"unknown global os.system", "t.pkl"});
  expect_pickle_error("builtins.eval", Pkl().global("builtins", "eval").s, {"unknown global builtins.eval"});
  expect_pickle_error("getattr", Pkl().global("__builtin__", "getattr").s, {"unknown global __builtin__.getattr"});
  expect_pickle_error("torch.load", Pkl().global("torch", "load").s, {"unknown global torch.load"});
  expect_pickle_error("_rebuild_qtensor", Pkl().global("torch._utils", "_rebuild_qtensor").s, {"unknown global"});
  expect_pickle_error("jit helper outside TorchScript", Pkl().global("torch.jit._pickle", "build_intlist").s,
                      {"unknown global torch.jit._pickle.build_intlist"});
  expect_pickle_error("build_tensor_from_id", Pkl().global("torch.jit._pickle", "build_tensor_from_id").s,
                      {"unknown global"}, true);
  expect_pickle_error("calling a storage type", Pkl().global("torch", "FloatStorage").op(')').op('R').op('.').s,
                      {"cannot be called"});
  expect_pickle_error("OrderedDict with items", Pkl().global("collections", "OrderedDict").op(']').op('\x85').op('R').s,
                      {"OrderedDict"});
  expect_pickle_error("codecs not latin1", Pkl().global("_codecs", "encode").str("a").str("utf-8").op('\x86').op('R').s,
                      {"latin1"});
  expect_pickle_error("codecs above U+00FF", Pkl().global("_codecs", "encode").str("\xe2\x82\xac").str("latin1").op('\x86').op('R').s,
                      {"latin-1"});
  expect_pickle_error("NEWOBJ of a function", Pkl().global("torch._utils", "_rebuild_tensor_v2").op(')').op('\x81').s,
                      {"NEWOBJ"});
  expect_pickle_error("BUILD on a list", Pkl().op(']').op('}').op('b').op('.').s, {"BUILD on a list"});
  expect_pickle_error("BUILD twice", Pkl().op('}').op('}').op('b').op('}').op('b').op('.').s, {"BUILD twice"});
  expect_pickle_error("huge LONG1", std::string("\x80\x02\x8a\x09") + std::string(9, '\1') + ".", {"64 bits"});
  expect_pickle_error("huge BINUNICODE", std::string("\x80\x02X\xf0\xff\xff\x7f", 7) + "abc", {"limit"});
  expect_pickle_error("BINUNICODE past the end", std::string("\x80\x02X\x10\x00\x00\x00", 7) + "abc",
                      {"truncated"});
  expect_pickle_error("GLOBAL without newline", "\x80\x02" "ctorch", {"GLOBAL"});
  expect_pickle_error("no STOP", "\x80\x02N", {"STOP"});
  expect_pickle_error("empty", "", {"STOP"});
  expect_pickle_error("two values at STOP", "\x80\x02NN.", {"unbalanced"});
  expect_pickle_error("open mark at STOP", "\x80\x02(N.", {"unbalanced"});
  expect_pickle_error("trailing bytes", "\x80\x02N.N", {"after the STOP"});
  expect_pickle_error("pop empty", "\x80\x02\x85", {"tuple"});
  expect_pickle_error("pop below mark", "\x80\x02N(a", {"empty stack"});
  expect_pickle_error("TUPLE without mark", "\x80\x02Nt", {"MARK"});
  expect_pickle_error("append to dict", "\x80\x02}Na", {"not a list"});
  expect_pickle_error("setitem on list", "\x80\x02]NNs", {"not a dict"});
  expect_pickle_error("odd SETITEMS", "\x80\x02}(Nu", {"odd"});
  expect_pickle_error("tuple key", "\x80\x02})Ns", {"dict key of type tuple"});
  expect_pickle_error("float key", std::string("\x80\x02}G\0\0\0\0\0\0\0\0Ns", 15), {"dict key of type float"});
  expect_pickle_error("memo read before write", "\x80\x02h\x03", {"memo entry 3"});
  expect_pickle_error("put on empty stack", std::string("\x80\x02q\x00", 4), {"empty stack"});
  expect_pickle_error("REDUCE of a non-global", "\x80\x02N)R", {"REDUCE"});
  expect_pickle_error("REDUCE with a list", Pkl().global("collections", "OrderedDict").op(']').op('R').s, {"non-tuple"});
  expect_pickle_error("BININT truncated", "\x80\x02J\x01", {"truncated"});
  expect_pickle_error("BINFLOAT truncated", "\x80\x02G\x01\x02", {"truncated"});
}

TEST_CASE("pickle: limits on memo, stack and containers") {
  io::PickleOptions o;
  o.max_memo = 10;
  Pkl memo;
  memo.op('N');
  for (int i = 0; i < 11; ++i) memo.put(uint8_t(i));
  memo.op('.');
  expect_error<IOError>("memo", [&] { (void)io::unpickle(memo.bytes().data(), memo.s.size(), "m", o); }, {"memo"});
  o = {};
  o.max_stack = 100;
  const std::string stack = "\x80\x02" + std::string(101, 'N');
  expect_error<IOError>("stack", [&] { (void)io::unpickle(reinterpret_cast<const uint8_t*>(stack.data()), stack.size(), "s", o); },
                        {"stack deeper than 100"});
  o = {};
  o.max_container = 50;
  const std::string big = "\x80\x02](" + std::string(51, 'N') + "e.";
  expect_error<IOError>("container", [&] { (void)io::unpickle(reinterpret_cast<const uint8_t*>(big.data()), big.size(), "c", o); },
                        {"limit of 50"});
  o = {};
  o.max_values = 20;
  const std::string many = "\x80\x02](" + std::string(30, 'N') + "e.";
  expect_error<IOError>("values", [&] { (void)io::unpickle(reinterpret_cast<const uint8_t*>(many.data()), many.size(), "v", o); },
                        {"more than 20 values"});
}

TEST_CASE("pickle: every mutation of a real data.pkl is an IOError or a clean parse") {
  const io::ZipArchive z = io::ZipArchive::open(kDir + "script_containers.pt");
  const io::ByteSource src = z.read("script_containers/data.pkl");
  const Bytes good(src.data, src.data + src.size);
  int wrong = 0;
  for (size_t at = 0; at < good.size(); ++at) {
    for (uint8_t v : {uint8_t(0x00), uint8_t(0xFF), uint8_t(good[at] ^ 0x01), uint8_t('('), uint8_t('h')}) {
      Bytes b = good;
      b[at] = v;
      for (bool ts : {true, false}) {
        io::PickleOptions o;
        o.torchscript = ts;
        std::string msg;
        if (!io_error_or_ok([&] { (void)io::unpickle(b.data(), b.size(), "m", o); }, &msg)) {
          ++wrong;
          INFO("byte ", at, " = ", int(v), ": ", msg);
          CHECK(false);
        }
      }
    }
    // Every truncation too.
    if (!io_error_or_ok([&] { (void)io::unpickle(good.data(), at, "m"); })) ++wrong;
    CHECK_THROWS_AS(io::unpickle(good.data(), at, "m", io::PickleOptions{true}), IOError);
  }
  CHECK(wrong == 0);
}

// =============================================================================================
// Inflate

TEST_CASE("inflate: zlib's streams decode exactly") {
  const Bytes text = read_file(kDir + "deflate_vectors.json");
  const Json doc = io::parse_json(std::string(text.begin(), text.end()), "deflate_vectors.json");
  for (const Json& v : doc.at("deflate").values()) {
    const std::string name = v.at("name").as_string();
    INFO("vector ", name);
    const Bytes raw = from_hex(v.at("raw").as_string());
    const size_t size = static_cast<size_t>(v.at("size").as_int());
    const std::vector<uint8_t> out = io::inflate_exact(raw.data(), raw.size(), size, name);
    CHECK(out.size() == size);
    CHECK(hex64(fnv1a64(out.data(), out.size())) == v.at("fnv1a64").as_string());
    if (const Json* seed = v.find("seed")) {
      CHECK(out == lcg_bytes(size, static_cast<uint32_t>(seed->as_int()), v.at("alphabet").as_bool()));
    }
    if (const Json* plain = v.find("plain")) CHECK(std::string(out.begin(), out.end()) == plain->as_string());
    // Wrong expectations and every truncation are errors.
    CHECK_THROWS_AS(io::inflate_exact(raw.data(), raw.size(), size + 1, name), IOError);
    if (size > 0) CHECK_THROWS_AS(io::inflate_exact(raw.data(), raw.size(), size - 1, name), IOError);
    for (size_t cut = 0; cut < raw.size(); cut += 1 + cut / 16)
      CHECK_THROWS_AS(io::inflate_exact(raw.data(), cut, size, name), IOError);
    Bytes longer = raw;
    longer.push_back(0);
    CHECK_THROWS_AS(io::inflate_exact(longer.data(), longer.size(), size, name), IOError);
  }
  for (const Json& v : doc.at("gzip").values()) {
    INFO("gzip ", v.at("name").as_string());
    const Bytes raw = from_hex(v.at("raw").as_string());
    const std::vector<uint8_t> out = io::gunzip(raw.data(), raw.size(), "g");
    CHECK(std::string(out.begin(), out.end()) == v.at("plain").as_string());
    expect_error<IOError>("limit", [&] { (void)io::gunzip(raw.data(), raw.size(), "g.gz", 10); }, {"g.gz", "limit"});
    Bytes crc = raw;
    crc[crc.size() - 6] ^= 1;  // inside the last member's CRC
    CHECK_THROWS_AS(io::gunzip(crc.data(), crc.size(), "g"), IOError);
  }
}

TEST_CASE("inflate: corrupt streams are IOErrors, never out-of-bounds") {
  const Bytes text = read_file(kDir + "deflate_vectors.json");
  const Json doc = io::parse_json(std::string(text.begin(), text.end()), "deflate_vectors.json");
  int wrong = 0;
  for (const Json& v : doc.at("deflate").values()) {
    const Bytes raw = from_hex(v.at("raw").as_string());
    const size_t size = static_cast<size_t>(v.at("size").as_int());
    for (size_t at = 0; at < raw.size(); at += 1 + at / 64) {
      for (uint8_t mask : {uint8_t(0x01), uint8_t(0x10), uint8_t(0xFF)}) {
        Bytes b = raw;
        b[at] ^= mask;
        if (!io_error_or_ok([&] { (void)io::inflate_exact(b.data(), b.size(), size, "x"); })) ++wrong;
      }
    }
  }
  CHECK(wrong == 0);
  // Hand-made: block type 3, a stored block whose length check fails, a distance too far back.
  const uint8_t type3[] = {0x07};
  expect_error<IOError>("type 3", [&] { (void)io::inflate_exact(type3, 1, 0, "t3"); }, {"t3", "block type"});
  const uint8_t stored[] = {0x01, 0x05, 0x00, 0xFA, 0xFE, 'a'};
  expect_error<IOError>("stored nlen", [&] { (void)io::inflate_exact(stored, sizeof stored, 5, "s"); }, {"length check"});
  // Fixed Huffman: a match of length 3 at distance 1 with nothing before it.
  const uint8_t far[] = {0x03, 0x02, 0x00};
  expect_error<IOError>("distance", [&] { (void)io::inflate_exact(far, sizeof far, 3, "f"); }, {"f:"});
}

TEST_CASE("inflate: the tokenizer's gzip path still reads a gzipped vocabulary") {
  // A two-line merges file, gzipped by Python (gzip.compress(b"#v\nh e\n", mtime=0)).
  const Bytes gz = from_hex("1f8b0800000000000203532ee3ca5048e50200f2e572ca07000000");
  const std::vector<uint8_t> out = io::gunzip(gz.data(), gz.size(), "v.gz");
  CHECK(std::string(out.begin(), out.end()) == "#v\nh e\n");
  const std::string path = "/tmp/ga_test_ckpt_vocab.txt.gz";
  {
    std::ofstream f(path, std::ios::binary);
    f.write(reinterpret_cast<const char*>(gz.data()), static_cast<std::streamsize>(gz.size()));
  }
  const clip::Tokenizer tok = clip::Tokenizer::from_file(path);
  CHECK(tok.vocab_size() == 512 + 1 + 2);
  std::remove(path.c_str());
}
