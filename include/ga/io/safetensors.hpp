// safetensors: read (mmapped, zero-copy where alignment allows) and write (atomic, never
// clobbering without being asked). The format: 8 bytes little-endian header length N, N bytes
// of JSON header {name: {dtype, shape, data_offsets: [begin, end)}, "__metadata__": {..}},
// then the data section, which the tensors must cover exactly (no holes, no overlaps).
// Every file is untrusted: each violation is an IOError naming the file and the tensor.
#pragma once
#include <fcntl.h>
#include <sys/mman.h>
#include <sys/stat.h>
#include <unistd.h>

#include <algorithm>
#include <cerrno>
#include <cstdint>
#include <cstring>
#include <map>
#include <memory>
#include <optional>
#include <set>
#include <string>
#include <string_view>
#include <utility>
#include <vector>

#include "../tensor.hpp"
#include "json.hpp"
#include "atomic_file.hpp"
#include "mapped_file.hpp"

namespace ga::io {

#if defined(__BYTE_ORDER__) && __BYTE_ORDER__ != __ORDER_LITTLE_ENDIAN__
#error "ga/io/safetensors.hpp: safetensors data is little-endian; big-endian hosts are not supported"
#endif

/// Where one tensor lives in a safetensors file, as its header describes it.
struct TensorInfo {
  std::string name;
  std::string dtype_name;     // as spelled in the file: "F32", "BF16", "I8", ...
  std::optional<DType> dtype; // empty for dtypes the format has but ga does not (I8, U16, F8_*, ...)
  size_t element_size = 0;    // bytes per element of dtype_name
  Shape shape;
  uint64_t begin = 0, end = 0;  // byte range [begin, end) within the data section
  uint64_t data_start = 0;      // file offset of the data section (8 + header length)
};

namespace detail {

/// The safetensors dtype spellings with a whole number of bytes per element, and ours.
inline bool safetensors_dtype(const std::string& s, size_t& size, std::optional<DType>& dt) {
  static const std::map<std::string, std::pair<size_t, std::optional<DType>>> table = {
      {"BOOL", {1, DType::b8}}, {"U8", {1, DType::u8}},    {"I8", {1, std::nullopt}},
      {"F8_E5M2", {1, std::nullopt}}, {"F8_E4M3", {1, std::nullopt}}, {"F8_E8M0", {1, std::nullopt}},
      {"I16", {2, std::nullopt}}, {"U16", {2, std::nullopt}}, {"F16", {2, DType::f16}},
      {"BF16", {2, DType::bf16}}, {"I32", {4, DType::i32}}, {"U32", {4, std::nullopt}},
      {"F32", {4, DType::f32}},   {"F64", {8, DType::f64}}, {"I64", {8, DType::i64}},
      {"U64", {8, std::nullopt}}, {"C64", {8, std::nullopt}}};
  auto it = table.find(s);
  if (it == table.end()) return false;
  size = it->second.first;
  dt = it->second.second;
  return true;
}

inline const char* safetensors_dtype_name(DType t) {
  switch (t) {
    case DType::f32: return "F32";
    case DType::f64: return "F64";
    case DType::f16: return "F16";
    case DType::bf16: return "BF16";
    case DType::i32: return "I32";
    case DType::i64: return "I64";
    case DType::u8: return "U8";
    case DType::b8: return "BOOL";
  }
  return "?";
}

using ga::io::ByteSource;  // the reader's bytes (mapped_file.hpp)

}  // namespace detail

/// A parsed safetensors file. Cheap to copy (the bytes are shared). Tensors returned by
/// get() may alias the file's bytes and keep them alive on their own, so they outlive this
/// object. A file changed or truncated by someone else while mapped is outside the contract
/// (POSIX delivers SIGBUS on reads past a truncated end).
class SafetensorsFile {
 public:
  static constexpr uint64_t kMaxHeaderBytes = 100'000'000;  // the reference's limit

  /// Maps `path` and validates its header and layout. IOError (naming the path) when the
  /// file cannot be opened or is not a well-formed safetensors file.
  static SafetensorsFile open(const std::string& path) {
    ByteSource src = map_file(path);
    if (src.size < 8)
      throw IOError(cat(path, ": not a safetensors file: ", src.size,
                        " bytes, shorter than the 8-byte header length"));
    return SafetensorsFile(std::move(src), path);
  }

  /// Parses safetensors bytes held in memory (the same checks as open(); `name` stands in for
  /// the path in messages). Returned tensors alias `bytes` where aligned and keep it alive:
  /// writing to them writes to the vector.
  static SafetensorsFile from_buffer(std::shared_ptr<std::vector<uint8_t>> bytes,
                                     std::string name = "<buffer>") {
    GA_CHECK(bytes != nullptr, ValueError, "SafetensorsFile::from_buffer: null buffer for ", name);
    return SafetensorsFile(buffer_source(std::move(bytes)), std::move(name));
  }

  const std::string& path() const { return path_; }
  /// Tensor names in header order (metadata excluded).
  const std::vector<std::string>& keys() const { return keys_; }
  bool contains(const std::string& name) const { return index_.count(name) != 0; }
  size_t size() const { return keys_.size(); }

  /// The header entry of `name`; KeyError naming the file when absent.
  const TensorInfo& info(const std::string& name) const {
    auto it = index_.find(name);
    GA_CHECK(it != index_.end(), KeyError, path_, ": no tensor named \"", name, "\"");
    return infos_[it->second];
  }

  /// The tensor `name`, on the CPU. Zero-copy (a view of the file's bytes, keeping them
  /// alive) when its data is aligned for its dtype, else a copy. IOError for a dtype the
  /// format has but ga lacks; KeyError when absent.
  Tensor get(const std::string& name) const {
    const TensorInfo& ti = info(name);
    GA_CHECK(ti.dtype.has_value(), IOError, path_, ": tensor \"", name, "\" has dtype ", ti.dtype_name,
             ", which ga does not support (supported: F32, F64, F16, BF16, I32, I64, U8, BOOL)");
    const DType dt = *ti.dtype;
    const uint8_t* p = src_.data + ti.data_start + ti.begin;
    const size_t nbytes = static_cast<size_t>(ti.end - ti.begin);
    bool bool_ok = true;
    if (dt == DType::b8)  // a byte other than 0 or 1 is not a valid C++ bool: normalise by copying
      for (size_t i = 0; i < nbytes && bool_ok; ++i) bool_ok = p[i] <= 1;
    const bool aligned = reinterpret_cast<uintptr_t>(p) % dtype_size(dt) == 0;
    if (aligned && bool_ok && nbytes > 0)
      return from_blob(const_cast<uint8_t*>(p), ti.shape, dt, {}, src_.owner);
    Tensor t = empty(ti.shape, dt);
    if (nbytes == 0) return t;
    if (dt == DType::b8) {
      bool* q = t.data_ptr<bool>();
      for (size_t i = 0; i < nbytes; ++i) q[i] = p[i] != 0;
    } else {
      std::memcpy(t.raw_data(), p, nbytes);
    }
    return t;
  }

  /// The "__metadata__" map (empty when the file has none).
  const std::map<std::string, std::string>& metadata() const { return metadata_; }
  /// Whether get(name) would return a view of the file's bytes rather than a copy.
  bool is_zero_copy(const std::string& name) const {
    const TensorInfo& ti = info(name);
    if (!ti.dtype || ti.end == ti.begin) return false;
    const uint8_t* p = src_.data + ti.data_start + ti.begin;
    if (*ti.dtype == DType::b8)
      for (const uint8_t* q = p; q != p + (ti.end - ti.begin); ++q)
        if (*q > 1) return false;
    return reinterpret_cast<uintptr_t>(p) % ti.element_size == 0;
  }
  /// Tells the system this process is done with `t`, a tensor get() returned: the pages
  /// holding only its bytes leave the resident set (re-read from the file if touched again).
  /// A no-op for copies and in-memory buffers. For a loader that replaces a weight with a
  /// converted copy, so that peak memory holds one of the two, not both.
  void release(const Tensor& t) const {
    if (t.defined() && t.is_contiguous()) release_pages(src_, t.raw_data(), size_t(t.numel()) * dtype_size(t.dtype()));
  }
  /// The bytes the tensors point into: [data, data + size) is the whole file.
  const uint8_t* bytes() const { return src_.data; }
  size_t byte_size() const { return src_.size; }

 private:
  SafetensorsFile(detail::ByteSource src, std::string path) : src_(std::move(src)), path_(std::move(path)) {
    parse();
  }

  [[noreturn]] void bad(const std::string& msg) const { throw IOError(cat(path_, ": ", msg)); }

  void parse() {
    const uint64_t file_size = src_.size;
    if (file_size < 8)
      bad(cat("not a safetensors file: ", file_size, " bytes, shorter than the 8-byte header length"));
    uint64_t n = 0;
    for (int i = 7; i >= 0; --i) n = (n << 8) | src_.data[i];
    if (n > kMaxHeaderBytes)
      bad(cat("header says its JSON is ", n, " bytes, more than the ", kMaxHeaderBytes,
              "-byte limit (corrupt or not a safetensors file)"));
    if (n > file_size - 8)
      bad(cat("header says its JSON is ", n, " bytes, file has ", file_size - 8,
              " bytes after the length (truncated?)"));
    if (n == 0 || src_.data[8] != '{')
      bad("header JSON does not start with '{' (not a safetensors file?)");
    const std::string_view text(reinterpret_cast<const char*>(src_.data + 8), static_cast<size_t>(n));
    const Json header = parse_json(text, path_, 8);
    if (!header.is_object()) bad("header JSON is not an object");

    const uint64_t data_start = 8 + n;
    const uint64_t data_size = file_size - data_start;
    const auto& keys = header.keys();
    const auto& values = header.values();
    infos_.reserve(keys.size());
    for (size_t k = 0; k < keys.size(); ++k) {
      const std::string& name = keys[k];
      const Json& v = values[k];
      if (name == "__metadata__") {
        if (!v.is_object()) bad(cat("__metadata__ is ", v.kind_name(), ", expected an object of strings"));
        for (size_t i = 0; i < v.keys().size(); ++i) {
          const Json& m = v.values()[i];
          if (!m.is_string())
            bad(cat("__metadata__ entry \"", v.keys()[i], "\" is ", m.kind_name(), ", expected a string"));
          metadata_.emplace(v.keys()[i], m.as_string());
        }
        continue;
      }
      infos_.push_back(parse_entry(name, v, data_start, data_size));
      index_.emplace(name, infos_.size() - 1);
      keys_.push_back(name);
    }
    check_layout(data_size);
  }

  TensorInfo parse_entry(const std::string& name, const Json& v, uint64_t data_start,
                         uint64_t data_size) const {
    const std::string who = cat("tensor \"", name, "\"");
    if (!v.is_object()) bad(cat(who, ": header entry is ", v.kind_name(), ", expected an object"));
    for (const std::string& field : v.keys())
      if (field != "dtype" && field != "shape" && field != "data_offsets")
        bad(cat(who, ": unexpected field \"", field, "\" in its header entry"));
    const Json* dtype = v.find("dtype");
    const Json* shape = v.find("shape");
    const Json* offsets = v.find("data_offsets");
    if (!dtype || !shape || !offsets) bad(cat(who, ": header entry needs dtype, shape and data_offsets"));

    TensorInfo ti;
    ti.name = name;
    ti.data_start = data_start;
    if (!dtype->is_string()) bad(cat(who, ": dtype is ", dtype->kind_name(), ", expected a string"));
    ti.dtype_name = dtype->as_string();
    if (!detail::safetensors_dtype(ti.dtype_name, ti.element_size, ti.dtype))
      bad(cat(who, ": unknown dtype \"", ti.dtype_name, "\""));

    if (!shape->is_array()) bad(cat(who, ": shape is ", shape->kind_name(), ", expected an array"));
    // numel must fit the byte count below; the product of the nonzero dims must also fit an
    // int64, because row-major strides are computed from it even for an empty tensor.
    uint64_t numel = 1, nonzero_product = 1;
    for (const Json& d : shape->values()) {
      if (!d.is_int() || d.as_int() < 0)
        bad(cat(who, ": shape entries must be non-negative integers, got ", d.dump()));
      const uint64_t dim = static_cast<uint64_t>(d.as_int());
      ti.shape.push_back(d.as_int());
      if (dim == 0) {
        numel = 0;
        continue;
      }
      if (__builtin_mul_overflow(nonzero_product, dim, &nonzero_product) ||
          nonzero_product > static_cast<uint64_t>(INT64_MAX))
        bad(cat(who, ": shape ", shape->dump(), " has more elements than fit in 64 bits"));
      if (numel) numel = nonzero_product;
    }
    uint64_t expect_bytes = 0;
    if (__builtin_mul_overflow(numel, static_cast<uint64_t>(ti.element_size), &expect_bytes))
      bad(cat(who, ": shape ", shape->dump(), " of ", ti.dtype_name, " needs more bytes than fit in 64 bits"));

    if (!offsets->is_array() || offsets->size() != 2)
      bad(cat(who, ": data_offsets must be an array [begin, end], got ", offsets->dump()));
    for (const Json& o : offsets->values())
      if (!o.is_int() || o.as_int() < 0)
        bad(cat(who, ": data_offsets must be non-negative integers, got ", offsets->dump()));
    ti.begin = static_cast<uint64_t>((*offsets)[0].as_int());
    ti.end = static_cast<uint64_t>((*offsets)[1].as_int());
    if (ti.end < ti.begin)
      bad(cat(who, ": data_offsets [", ti.begin, ", ", ti.end, "] end before they begin"));
    if (ti.end > data_size)
      bad(cat(who, ": header says its data ends at byte ", ti.end, " of the data section, file has ",
              data_size, " data bytes (truncated?)"));
    if (ti.end - ti.begin != expect_bytes)
      bad(cat(who, ": header says ", ti.dtype_name, " ", shape_str(ti.shape), " (", expect_bytes,
              " bytes), data_offsets hold ", ti.end - ti.begin, " bytes"));
    return ti;
  }

  /// The tensors must tile the data section: no overlaps, no holes (the spec forbids holes so
  /// that no other content can hide in a file), nothing after the last tensor.
  void check_layout(uint64_t data_size) const {
    std::vector<const TensorInfo*> order;
    order.reserve(infos_.size());
    for (const TensorInfo& t : infos_) order.push_back(&t);
    std::sort(order.begin(), order.end(), [](const TensorInfo* a, const TensorInfo* b) {
      return a->begin != b->begin ? a->begin < b->begin : a->end < b->end;
    });
    uint64_t covered = 0;
    const TensorInfo* prev = nullptr;
    for (const TensorInfo* t : order) {
      if (t->begin < covered)
        bad(cat("tensor \"", t->name, "\": data_offsets [", t->begin, ", ", t->end, "] overlap tensor \"",
                prev->name, "\" [", prev->begin, ", ", prev->end, "]"));
      if (t->begin > covered)
        bad(cat("tensor \"", t->name, "\": data starts at byte ", t->begin, " of the data section, but ",
                prev ? cat("tensor \"", prev->name, "\" ends at ", covered) : std::string("the section starts at 0"),
                " (the spec forbids holes)"));
      covered = t->end;
      if (t->end > t->begin || !prev) prev = t;
    }
    if (covered != data_size)
      bad(cat("header says the data section has ", covered, " bytes, file has ", data_size,
              " (trailing bytes or a lying header)"));
  }

  detail::ByteSource src_;
  std::string path_;
  std::vector<TensorInfo> infos_;
  std::vector<std::string> keys_;
  std::map<std::string, size_t> index_;
  std::map<std::string, std::string> metadata_;
};

namespace detail {

/// Where save_safetensors starts the data section and its larger tensors: a cache line.
inline constexpr uint64_t kDataAlignment = 64;

/// The header object and its padding, built so that the data section starts kDataAlignment-
/// byte aligned in the file.
inline std::string safetensors_header(const std::vector<std::pair<std::string, Tensor>>& tensors,
                                      const std::vector<uint64_t>& begins,
                                      const std::map<std::string, std::string>& metadata) {
  Json header = Json::object();
  if (!metadata.empty()) {
    Json m = Json::object();
    for (const auto& [k, v] : metadata) m.set(k, Json(v));
    header.set("__metadata__", std::move(m));
  }
  for (size_t i = 0; i < tensors.size(); ++i) {
    const Tensor& t = tensors[i].second;
    Json entry = Json::object();
    entry.set("dtype", Json(safetensors_dtype_name(t.dtype())));
    Json shape = Json::array();
    for (int64_t d : t.shape()) shape.push_back(Json(d));
    entry.set("shape", std::move(shape));
    Json offs = Json::array();
    const uint64_t nbytes = static_cast<uint64_t>(t.numel()) * dtype_size(t.dtype());
    offs.push_back(Json(static_cast<int64_t>(begins[i])));
    offs.push_back(Json(static_cast<int64_t>(begins[i] + nbytes)));
    entry.set("data_offsets", std::move(offs));
    header.set(tensors[i].first, std::move(entry));
  }
  std::string text = header.dump();
  // The spec allows trailing spaces; they start the data section on a 64-byte boundary.
  while ((8 + text.size()) % kDataAlignment != 0) text += ' ';
  return text;
}

}  // namespace detail

/// Writes `tensors` (any CPU-reachable dtype ga has, any layout) and `metadata` to `path` as
/// safetensors. The header lists the tensors in the given order. The header is padded so that
/// the data section starts at a multiple of 64 bytes in the file, and the data is laid out
/// with the tensors whose size is a multiple of 64 bytes first (every weight matrix of a CLIP
/// model), so each of them starts on a 64-byte boundary, a cache line, when the file is
/// mapped; then the others, 8-byte elements first, then 4, 2, 1, so that every tensor is
/// aligned at least for its type, for zero-copy reading. Why 64: a kernel streaming a weight
/// whose rows straddle cache lines ran about a quarter slower (bench/RESULTS.md).
/// Atomic: writes a temporary file in the same directory, then renames it into place.
/// Refuses (IOError) to replace an existing `path` unless `overwrite`. Duplicate, reserved or
/// non-UTF-8 names, non-UTF-8 metadata and undefined tensors are ValueErrors.
inline void save_safetensors(const std::string& path,
                             const std::vector<std::pair<std::string, Tensor>>& tensors,
                             const std::map<std::string, std::string>& metadata = {},
                             bool overwrite = false) {
  std::set<std::string> seen;
  std::vector<std::pair<std::string, Tensor>> ready;
  ready.reserve(tensors.size());
  for (const auto& [name, t] : tensors) {
    GA_CHECK(t.defined(), ValueError, "save_safetensors: ", path, ": tensor \"", name, "\" is undefined");
    GA_CHECK(name != "__metadata__", ValueError, "save_safetensors: ", path,
             ": \"__metadata__\" is reserved and cannot name a tensor");
    GA_CHECK(seen.insert(name).second, ValueError, "save_safetensors: ", path, ": tensor name \"", name,
             "\" given twice");
    GA_CHECK(is_valid_utf8(name), ValueError, "save_safetensors: ", path, ": tensor name \"", name,
             "\" is not valid UTF-8");
    Tensor c = t.device().is_cpu() ? t : t.cpu();
    ready.emplace_back(name, c.is_contiguous() ? c : c.contiguous());
  }

  for (const auto& [k, v] : metadata)
    GA_CHECK(is_valid_utf8(k) && is_valid_utf8(v), ValueError, "save_safetensors: ", path,
             ": metadata entry \"", k, "\" is not valid UTF-8");

  // Data order: whole multiples of 64 bytes first (each then starts 64-aligned, as the section
  // does), then larger elements first: after the first group the offset is still 64-aligned,
  // and every tensor's byte count is a multiple of its element size, so each later tensor
  // starts aligned for its type.
  auto nbytes = [&](size_t i) {
    return static_cast<uint64_t>(ready[i].second.numel()) * dtype_size(ready[i].second.dtype());
  };
  auto rank = [&](size_t i) {  // 0 for whole cache lines, then 8 .. 15 for 8- .. 1-byte elements
    return nbytes(i) % detail::kDataAlignment == 0 ? size_t(0) : 16 - dtype_size(ready[i].second.dtype());
  };
  std::vector<size_t> order(ready.size());
  for (size_t i = 0; i < order.size(); ++i) order[i] = i;
  std::stable_sort(order.begin(), order.end(), [&](size_t a, size_t b) { return rank(a) < rank(b); });
  std::vector<uint64_t> begins(ready.size());
  uint64_t at = 0;
  for (size_t i : order) {
    begins[i] = at;
    at += nbytes(i);
  }
  const std::string header = detail::safetensors_header(ready, begins, metadata);

  uint8_t len[8];
  for (int i = 0; i < 8; ++i) len[i] = static_cast<uint8_t>(static_cast<uint64_t>(header.size()) >> (8 * i));
  std::vector<detail::FileChunk> chunks{{len, 8, "the header"}, {header.data(), header.size(), "the header"}};
  for (size_t i : order) {
    const Tensor& t = ready[i].second;
    chunks.push_back({t.raw_data(), static_cast<size_t>(t.numel()) * dtype_size(t.dtype()),
                      cat("tensor \"", ready[i].first, "\"")});
  }
  detail::write_file_atomically(path, chunks, overwrite);
}

}  // namespace ga::io
