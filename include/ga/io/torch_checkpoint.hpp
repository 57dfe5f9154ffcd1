// PyTorch checkpoints without PyTorch: the zip files torch.save (>= 1.6) and torch.jit.save
// write, read through the restricted zip and pickle readers (nothing is executed). Every tensor
// reachable from the pickled root comes back under a dotted name (nested dict keys, list
// indices, TorchScript module attributes), in the pickle's order, as a contiguous CPU tensor.
// What the names mean (a `module.` prefix, a `state_dict` wrapper) is the caller's business.
#pragma once
#include <cstdint>
#include <cstring>
#include <map>
#include <memory>
#include <set>
#include <string>
#include <unordered_map>
#include <unordered_set>
#include <utility>
#include <vector>

#include "../tensor.hpp"
#include "mapped_file.hpp"
#include "pickle.hpp"
#include "zip.hpp"

namespace ga::io {

#if defined(__BYTE_ORDER__) && __BYTE_ORDER__ != __ORDER_LITTLE_ENDIAN__
#error "ga/io/torch_checkpoint.hpp: PyTorch storages are read as little-endian; big-endian hosts are not supported"
#endif

/// The tensors of a PyTorch checkpoint.
struct TorchCheckpoint {
  std::string format;  // "torch-zip" (torch.save) or "torchscript" (torch.jit.save)
  std::vector<std::pair<std::string, Tensor>> tensors;  // dotted names, in the pickle's order
};

/// Bounds and checks for reading a checkpoint (the defaults suit any real checkpoint).
struct TorchReadOptions {
  /// Check the CRC-32 of every entry read (storages too: one pass over their bytes).
  bool verify_crc = true;
  ZipLimits zip;
  PickleOptions pickle;           // `torchscript` is set by the reader from the layout
  size_t max_depth = 256;         // nesting of dicts / lists / objects below the root
  size_t max_visits = 10'000'000; // values visited while flattening (shared subtrees count again)
  uint64_t max_copied_bytes = uint64_t(64) << 30;  // tensors that cannot alias the file, in total
};

namespace detail {

/// ga's dtype for a torch storage class; false for a class ga has no dtype for.
inline bool torch_storage_dtype(const std::string& name, DType& dt) {
  static const std::map<std::string, DType> table = {
      {"FloatStorage", DType::f32}, {"DoubleStorage", DType::f64}, {"HalfStorage", DType::f16},
      {"BFloat16Storage", DType::bf16}, {"LongStorage", DType::i64}, {"IntStorage", DType::i32},
      {"ByteStorage", DType::u8},     {"BoolStorage", DType::b8}};
  auto it = table.find(name);
  if (it == table.end()) return false;
  dt = it->second;
  return true;
}

/// Walks the unpickled root and rebuilds the tensors.
class TorchCheckpointBuilder {
 public:
  TorchCheckpointBuilder(const ZipArchive& zip, std::string prefix, const TorchReadOptions& opt)
      : zip_(zip), prefix_(std::move(prefix)), opt_(opt) {}

  std::vector<std::pair<std::string, Tensor>> flatten(const PickleValue& root) {
    std::string name;
    visit(&root, name, 0);
    return std::move(out_);
  }

 private:
  using Kind = PickleValue::Kind;

  [[noreturn]] void bad(const std::string& msg) const { throw IOError(cat(zip_.path(), ": ", msg)); }
  [[noreturn]] void bad_tensor(const std::string& name, const std::string& msg) const {
    throw IOError(cat(zip_.path(), ": tensor \"", name, "\": ", msg));
  }

  static bool is_rebuild(const PickleValue* v) {
    return v->is(Kind::object) && v->module == "torch._utils" &&
           (v->name == "_rebuild_tensor_v2" || v->name == "_rebuild_parameter" ||
            v->name == "_rebuild_parameter_with_state");
  }
  static std::string key_text(const PickleValue* k) {
    return k->is(Kind::string) ? k->text : std::to_string(k->integer);
  }

  void visit(const PickleValue* v, std::string& name, size_t depth) {
    if (++visits_ > opt_.max_visits)
      bad(cat("the pickle reaches more than ", opt_.max_visits, " values (shared many times over?)"));
    if (is_rebuild(v)) {
      emit(name, tensor_of(v, name));
      return;
    }
    const bool container = v->is(Kind::dict) || v->is(Kind::list) || v->is(Kind::tuple) ||
                           (v->is(Kind::object) && v->state != nullptr);
    if (!container) return;  // None, numbers, strings, storage ids, ...: not tensors
    if (depth >= opt_.max_depth)
      bad(cat("values nested deeper than ", opt_.max_depth, " levels (at \"", name, "\")"));
    if (!on_path_.insert(v).second) bad(cat("the pickle is cyclic (at \"", name, "\")"));
    const size_t len = name.size();
    auto child = [&](const std::string& part, const PickleValue* c) {
      if (len) name += '.';
      name += part;
      visit(c, name, depth + 1);
      name.resize(len);
    };
    if (v->is(Kind::dict)) {
      for (size_t i = 0; i < v->items.size(); ++i) child(key_text(v->keys[i]), v->items[i]);
    } else if (v->is(Kind::list) || v->is(Kind::tuple)) {
      for (size_t i = 0; i < v->items.size(); ++i) child(std::to_string(i), v->items[i]);
    } else {
      // A TorchScript module: its attributes, by name, in the order they were pickled.
      visit(v->state, name, depth + 1);
    }
    on_path_.erase(v);
  }

  void emit(const std::string& name, const Tensor& t) {
    if (!names_.insert(name).second)
      bad(cat("two tensors flatten to the same name \"", name, "\""));
    out_.emplace_back(name, t);
  }

  const Tensor& tensor_of(const PickleValue* v, const std::string& name) {
    auto it = built_.find(v);
    if (it != built_.end()) return it->second;
    Tensor t;
    if (v->name == "_rebuild_tensor_v2") {
      t = rebuild_tensor(v, name);
    } else {
      // _rebuild_parameter(data, requires_grad, backward_hooks[, state]): data is the tensor.
      const size_t want = v->name == "_rebuild_parameter" ? 3 : 4;
      if (v->items.size() != want || !v->items[0]->is(Kind::object) || v->items[0]->name != "_rebuild_tensor_v2" ||
          v->items[0]->module != "torch._utils")
        bad_tensor(name, cat("torch._utils.", v->name, " with unexpected arguments"));
      t = rebuild_tensor(v->items[0], name);
    }
    return built_.emplace(v, std::move(t)).first->second;
  }

  /// The entry bytes of storage `key` (decompressed once, shared by every tensor viewing it).
  const ByteSource& storage_bytes(const std::string& key, const std::string& name) {
    auto it = storages_.find(key);
    if (it != storages_.end()) return it->second;
    const std::string entry = prefix_ + "/data/" + key;
    const ZipEntry* e = zip_.find(entry);
    if (!e) bad_tensor(name, cat("its storage entry \"", entry, "\" is missing from the archive"));
    return storages_.emplace(key, zip_.read(*e, opt_.verify_crc)).first->second;
  }

  static bool int_tuple(const PickleValue* v, std::vector<int64_t>& out) {
    if (!v->is(Kind::tuple)) return false;
    out.clear();
    for (const PickleValue* x : v->items) {
      if (!x->is(Kind::integer)) return false;
      out.push_back(x->integer);
    }
    return true;
  }

  /// torch._utils._rebuild_tensor_v2(storage, storage_offset, size, stride, requires_grad,
  /// backward_hooks[, metadata]), storage = persistent id ("storage", <torch.XStorage>, key,
  /// location, numel).
  Tensor rebuild_tensor(const PickleValue* v, const std::string& name) {
    const auto& a = v->items;
    if (a.size() != 6 && a.size() != 7) bad_tensor(name, cat("_rebuild_tensor_v2 with ", a.size(), " arguments (6 or 7 expected)"));
    const PickleValue* sid = a[0];
    if (!sid->is(Kind::persistent_id) || !sid->state->is(Kind::tuple) || sid->state->items.size() != 5)
      bad_tensor(name, "its storage is not a persistent id (\"storage\", type, key, location, numel)");
    const auto& s = sid->state->items;
    if (!s[0]->is(Kind::string) || s[0]->text != "storage" || !s[1]->is(Kind::global) || !s[2]->is(Kind::string) ||
        !s[3]->is(Kind::string) || !s[4]->is(Kind::integer))
      bad_tensor(name, "its storage id is malformed (expected (\"storage\", type, key, location, numel))");
    const std::string& storage_type = s[1]->name;
    const std::string& key = s[2]->text;
    const int64_t storage_numel = s[4]->integer;
    DType dt;
    if (!torch_storage_dtype(storage_type, dt))
      bad_tensor(name, cat("storage type ", s[1]->qualified_name(),
                           " is not supported (supported: Float, Double, Half, BFloat16, Long, Int, Byte and Bool)"));
    const uint64_t es = dtype_size(dt);
    if (storage_numel < 0) bad_tensor(name, cat("storage \"", key, "\" has negative size ", storage_numel));
    std::vector<int64_t> size, stride;
    if (!a[1]->is(Kind::integer) || a[1]->integer < 0) bad_tensor(name, "storage offset is not a non-negative integer");
    const int64_t offset = a[1]->integer;
    if (!int_tuple(a[2], size) || !int_tuple(a[3], stride) || size.size() != stride.size())
      bad_tensor(name, "size and stride must be tuples of integers of the same length");
    if (size.size() > 64) bad_tensor(name, cat("has ", size.size(), " dimensions (64 at most)"));
    // Elements and the furthest element, overflow-checked.
    uint64_t numel = 1, last = static_cast<uint64_t>(offset);
    bool is_empty = false;
    for (size_t d = 0; d < size.size(); ++d) {
      if (size[d] < 0 || stride[d] < 0)
        bad_tensor(name, cat("negative size or stride (size ", shape_str(size), ", stride ", shape_str(stride), ")"));
      if (size[d] == 0) is_empty = true;
    }
    for (size_t d = 0; d < size.size() && !is_empty; ++d) {
      uint64_t span;
      if (__builtin_mul_overflow(numel, static_cast<uint64_t>(size[d]), &numel) || numel > uint64_t(INT64_MAX) ||
          __builtin_mul_overflow(static_cast<uint64_t>(size[d] - 1), static_cast<uint64_t>(stride[d]), &span) ||
          __builtin_add_overflow(last, span, &last))
        bad_tensor(name, cat("size ", shape_str(size), " with stride ", shape_str(stride), " overflows"));
    }
    if (is_empty) numel = 0;
    uint64_t storage_bytes_needed;
    if (__builtin_mul_overflow(static_cast<uint64_t>(storage_numel), es, &storage_bytes_needed))
      bad_tensor(name, cat("storage \"", key, "\" of ", storage_numel, " elements overflows"));
    if (numel > 0 && last >= static_cast<uint64_t>(storage_numel))
      bad_tensor(name, cat("size ", shape_str(size), ", stride ", shape_str(stride), " at offset ", offset,
                           " reaches element ", last, " of a storage of ", storage_numel, " elements"));
    const ByteSource& bytes = storage_bytes(key, name);
    if (bytes.size < storage_bytes_needed)
      bad_tensor(name, cat("storage entry \"", prefix_, "/data/", key, "\" has ", bytes.size, " bytes, its ",
                           storage_numel, " ", dtype_name(dt), " elements need ", storage_bytes_needed,
                           " (truncated or corrupt archive)"));
    if (numel == 0) return empty(Shape(size.begin(), size.end()), dt);
    const uint8_t* base = bytes.data + static_cast<uint64_t>(offset) * es;

    bool contiguous = true;
    int64_t expect = 1;
    for (size_t d = size.size(); d-- > 0;) {
      if (size[d] != 1 && stride[d] != expect) contiguous = false;
      expect *= size[d];
    }
    bool bool_ok = true;
    if (dt == DType::b8 && contiguous)
      for (uint64_t i = 0; i < numel && bool_ok; ++i) bool_ok = base[i] <= 1;
    if (contiguous && bool_ok && reinterpret_cast<uintptr_t>(base) % es == 0)
      return from_blob(const_cast<uint8_t*>(base), Shape(size.begin(), size.end()), dt, {}, bytes.owner);

    const uint64_t nbytes = numel * es;  // numel <= storage_numel * (something) was bounded above
    if (nbytes / es != numel || nbytes > opt_.max_copied_bytes - copied_)
      bad_tensor(name, cat("copying it would exceed the limit of ", opt_.max_copied_bytes, " bytes"));
    copied_ += nbytes;
    Tensor t = empty(Shape(size.begin(), size.end()), dt);
    copy_strided(static_cast<uint8_t*>(t.raw_data()), base, size, stride, es);
    if (dt == DType::b8) {
      uint8_t* q = static_cast<uint8_t*>(t.raw_data());
      for (uint64_t i = 0; i < numel; ++i) q[i] = q[i] != 0;
    }
    return t;
  }

  /// Gathers the strided elements at src into row-major dst (es bytes each).
  static void copy_strided(uint8_t* dst, const uint8_t* src, const std::vector<int64_t>& size,
                           const std::vector<int64_t>& stride, uint64_t es) {
    const size_t nd = size.size();
    if (nd == 0) {
      std::memcpy(dst, src, es);
      return;
    }
    std::vector<int64_t> idx(nd, 0);
    const int64_t inner = size[nd - 1];
    const uint64_t inner_step = static_cast<uint64_t>(stride[nd - 1]) * es;
    for (;;) {
      uint64_t at = 0;
      for (size_t d = 0; d + 1 < nd; ++d) at += static_cast<uint64_t>(idx[d]) * static_cast<uint64_t>(stride[d]);
      const uint8_t* s = src + at * es;
      if (inner_step == es) {
        std::memcpy(dst, s, static_cast<size_t>(inner) * es);
        dst += inner * es;
      } else {
        for (int64_t i = 0; i < inner; ++i, dst += es, s += inner_step) std::memcpy(dst, s, es);
      }
      size_t d = nd - 1;
      for (;;) {
        if (d == 0) return;
        --d;
        if (++idx[d] < size[d]) break;
        idx[d] = 0;
      }
    }
  }

  const ZipArchive& zip_;
  std::string prefix_;
  const TorchReadOptions& opt_;
  std::vector<std::pair<std::string, Tensor>> out_;
  std::set<std::string> names_;
  std::unordered_set<const PickleValue*> on_path_;
  std::unordered_map<const PickleValue*, Tensor> built_;
  std::map<std::string, ByteSource> storages_;
  size_t visits_ = 0;
  uint64_t copied_ = 0;
};

/// torch.save's pre-1.6 format begins with a pickled magic number (LONG1 0x1950a86a20f9469cfc6c).
inline bool is_legacy_torch_save(const uint8_t* p, size_t n) {
  static const uint8_t magic[] = {0x80, 0x02, 0x8a, 0x0a, 0x6c, 0xfc, 0x9c, 0x46, 0xf9, 0x20, 0x6a, 0xa8, 0x50, 0x19};
  return n >= sizeof(magic) && std::memcmp(p, magic, sizeof(magic)) == 0;
}

}  // namespace detail

/// Reads the checkpoint in `zip` (see read_torch_checkpoint(path)).
inline TorchCheckpoint read_torch_checkpoint(const ZipArchive& zip, const TorchReadOptions& options = {}) {
  const std::string& path = zip.path();
  // The layout: <prefix>/data.pkl, <prefix>/data/<key>, <prefix>/version (or .data/version);
  // TorchScript adds <prefix>/code/... and <prefix>/constants.pkl.
  std::string prefix;
  int found = 0;
  for (const ZipEntry& e : zip.entries()) {
    const size_t slash = e.name.find('/');
    if (slash == std::string::npos || slash == 0 || e.name.compare(slash, std::string::npos, "/data.pkl") != 0) continue;
    if (found++ == 0) prefix = e.name.substr(0, slash);
  }
  if (found > 1) throw IOError(cat(path, ": more than one <dir>/data.pkl entry; not a single PyTorch checkpoint"));
  if (found == 0) {
    bool old_script = false;
    for (const ZipEntry& e : zip.entries())
      if (e.name.size() >= 11 && e.name.compare(e.name.size() - 11, 11, "/model.json") == 0) old_script = true;
    if (old_script)
      throw IOError(cat(path, ": a TorchScript archive of the pre-1.4 format (model.json), which ga does not read; "
                              "re-save it with torch.jit.save from a recent torch"));
    throw IOError(cat(path, ": a zip archive without a <dir>/data.pkl entry: not a PyTorch checkpoint "
                            "(torch.save >= 1.6 or torch.jit.save)"));
  }
  const ZipEntry* version = zip.find(prefix + "/version");
  if (!version) version = zip.find(prefix + "/.data/version");
  if (!version) throw IOError(cat(path, ": no \"", prefix, "/version\" entry: not a PyTorch checkpoint (or truncated)"));
  {
    const ByteSource v = zip.read(*version, true);
    std::string text(reinterpret_cast<const char*>(v.data), v.size);
    while (!text.empty() && (text.back() == '\n' || text.back() == '\r' || text.back() == ' ')) text.pop_back();
    bool digits = !text.empty() && text.size() <= 9;
    for (char c : text) digits = digits && c >= '0' && c <= '9';
    if (!digits || std::stoll(text) < 1)
      throw IOError(cat(path, ": entry \"", version->name, "\" should hold a format version number"));
  }
  if (const ZipEntry* order = zip.find(prefix + "/byteorder")) {
    const ByteSource b = zip.read(*order, true);
    const std::string text(reinterpret_cast<const char*>(b.data), b.size);
    if (text != "little")
      throw IOError(cat(path, ": storages are in \"", text, "\" byte order; ga reads little-endian checkpoints only"));
  }
  bool torchscript = zip.find(prefix + "/constants.pkl") != nullptr;
  const std::string code_dir = prefix + "/code/";
  for (const ZipEntry& e : zip.entries())
    if (e.name.compare(0, code_dir.size(), code_dir) == 0) torchscript = true;

  const std::string pkl_name = prefix + "/data.pkl";
  const ByteSource pkl = zip.read(pkl_name, true);
  PickleOptions popt = options.pickle;
  popt.torchscript = torchscript;
  const Pickle pickle = unpickle(pkl.data, pkl.size, cat(path, ": ", pkl_name), popt);

  TorchCheckpoint out;
  out.format = torchscript ? "torchscript" : "torch-zip";
  out.tensors = detail::TorchCheckpointBuilder(zip, prefix, options).flatten(pickle.root());
  return out;
}

/// Reads a PyTorch checkpoint: a torch.save (>= 1.6) zip file or a torch.jit.save archive.
/// Guarantees: every tensor reachable from the pickled root object, named by its path from
/// the root (dict keys joined with '.', int keys and list indices in decimal, TorchScript
/// module attributes by name; a root that is itself a tensor is named ""), in the pickle's
/// order; each a contiguous CPU tensor of the storage's dtype, aliasing the mapped file where
/// the stored layout allows (keeping it alive), else a copy. Non-tensor values are skipped.
/// IOError naming the file (and the entry or tensor) on anything else: not a zip, the legacy
/// pre-1.6 format, a truncated or corrupt archive, an unknown pickle opcode or global, a
/// storage that is missing or too short, a dtype ga lacks.
inline TorchCheckpoint read_torch_checkpoint(const std::string& path, const TorchReadOptions& options = {}) {
  ByteSource src = map_file(path);
  if (detail::is_legacy_torch_save(src.data, src.size))
    throw IOError(cat(path, ": a checkpoint in PyTorch's legacy (pre-1.6) torch.save format, which ga does not "
                            "read; re-save it with torch >= 1.6 (torch.save(torch.load(f), f2)) or export it "
                            "to safetensors"));
  if (!ZipArchive::looks_like_zip(src.data, src.size) && src.size >= 2 && src.data[0] == 0x80)
    throw IOError(cat(path, ": a bare pickle, not a PyTorch zip checkpoint; ga reads only torch.save (>= 1.6) "
                            "and torch.jit.save files"));
  return read_torch_checkpoint(ZipArchive::from_source(std::move(src), path, options.zip), options);
}

/// The same over bytes in memory (`name` stands in for the path in messages).
inline TorchCheckpoint read_torch_checkpoint_buffer(std::shared_ptr<std::vector<uint8_t>> bytes,
                                                    const std::string& name, const TorchReadOptions& options = {}) {
  GA_CHECK(bytes != nullptr, ValueError, "read_torch_checkpoint_buffer: null buffer for ", name);
  if (detail::is_legacy_torch_save(bytes->data(), bytes->size()))
    throw IOError(cat(name, ": a checkpoint in PyTorch's legacy (pre-1.6) torch.save format, which ga does not "
                            "read; re-save it with torch >= 1.6 or export it to safetensors"));
  return read_torch_checkpoint(ZipArchive::from_buffer(std::move(bytes), name, options.zip), options);
}

}  // namespace ga::io
