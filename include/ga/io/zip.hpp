// A read-only zip archive over mmapped bytes: the container of PyTorch checkpoints. Reads the
// central directory (ZIP64 included), validates every local header against it, and gives
// stored entries zero-copy and deflated ones decompressed. Every archive is untrusted: each
// offset and size is bounds-checked, and anything malformed is an IOError naming the archive
// and the entry.
#pragma once
#include <algorithm>
#include <cstdint>
#include <cstring>
#include <map>
#include <memory>
#include <string>
#include <utility>
#include <vector>

#include "../core/error.hpp"
#include "inflate.hpp"
#include "mapped_file.hpp"

namespace ga::io {

/// One file in a zip archive, as its central directory describes it (sizes resolved through
/// the ZIP64 extra field when the 32-bit fields are saturated).
struct ZipEntry {
  std::string name;
  uint16_t method = 0;          // 0 stored, 8 deflate (nothing else is accepted)
  uint16_t flags = 0;           // general-purpose bit flags
  uint32_t crc32 = 0;           // of the uncompressed bytes
  uint64_t compressed_size = 0;
  uint64_t size = 0;            // uncompressed
  uint64_t header_offset = 0;   // of the local header, from the start of the archive
  uint64_t data_offset = 0;     // of the (compressed) bytes, from the start of the archive
};

/// Bounds on what an archive may ask of us.
struct ZipLimits {
  uint64_t max_entries = 1'000'000;
  /// A deflated entry may not decompress to more than this many bytes.
  uint64_t max_inflated_size = uint64_t(16) << 30;
};

class ZipArchive {
 public:
  /// Maps `path` and reads its directory. IOError naming the path when it cannot be read or
  /// is not a well-formed zip archive of stored / deflated entries.
  static ZipArchive open(const std::string& path, const ZipLimits& limits = {}) {
    return ZipArchive(map_file(path), path, limits);
  }
  /// The same over bytes in memory (`name` stands in for the path in messages). Entries read
  /// zero-copy alias `bytes` and keep it alive.
  static ZipArchive from_buffer(std::shared_ptr<std::vector<uint8_t>> bytes, std::string name = "<buffer>",
                                const ZipLimits& limits = {}) {
    GA_CHECK(bytes != nullptr, ValueError, "ZipArchive::from_buffer: null buffer for ", name);
    return ZipArchive(buffer_source(std::move(bytes)), std::move(name), limits);
  }

  /// The same over bytes already read or mapped (map_file, buffer_source).
  static ZipArchive from_source(ByteSource src, std::string name, const ZipLimits& limits = {}) {
    return ZipArchive(std::move(src), std::move(name), limits);
  }

  const std::string& path() const { return path_; }
  /// The whole archive's bytes.
  const ByteSource& bytes() const { return src_; }
  /// Entries in central-directory order.
  const std::vector<ZipEntry>& entries() const { return entries_; }
  /// The entry named `name`, or null.
  const ZipEntry* find(const std::string& name) const {
    auto it = index_.find(name);
    return it == index_.end() ? nullptr : &entries_[it->second];
  }
  /// The entry named `name`; KeyError naming the archive when absent.
  const ZipEntry& entry(const std::string& name) const {
    const ZipEntry* e = find(name);
    GA_CHECK(e != nullptr, KeyError, path_, ": no entry named \"", name, "\"");
    return *e;
  }

  /// The uncompressed bytes of `e` (which must come from this archive). Stored entries:
  /// a view of the archive's bytes (zero-copy, keeping them alive). Deflated entries: a
  /// decompressed copy, whose CRC-32 is always checked. `verify_crc` also checks stored
  /// entries (a pass over the bytes). IOError naming the archive and the entry on a CRC
  /// mismatch, a corrupt deflate stream or a size beyond the limits.
  ByteSource read(const ZipEntry& e, bool verify_crc = true) const {
    const uint8_t* p = src_.data + e.data_offset;
    ByteSource out;
    if (e.method == 0) {
      out.data = p;
      out.size = static_cast<size_t>(e.size);
      out.owner = src_.owner;
    } else {
      GA_CHECK(e.size <= limits_.max_inflated_size, IOError, path_, ": zip entry \"", e.name,
               "\" would decompress to ", e.size, " bytes, more than the limit of ", limits_.max_inflated_size);
      auto buf = std::make_shared<std::vector<uint8_t>>(inflate_exact(
          p, static_cast<size_t>(e.compressed_size), static_cast<size_t>(e.size), cat(path_, ": zip entry \"", e.name, "\"")));
      out = buffer_source(std::move(buf));
      verify_crc = true;
    }
    if (verify_crc) {
      const uint32_t crc = crc32(out.data, out.size);
      GA_CHECK(crc == e.crc32, IOError, path_, ": zip entry \"", e.name, "\" is corrupt: CRC-32 ", hex(crc),
               ", the directory says ", hex(e.crc32));
    }
    return out;
  }
  /// read(entry(name), verify_crc), but an absent entry is an IOError (a malformed archive).
  ByteSource read(const std::string& name, bool verify_crc = true) const {
    const ZipEntry* e = find(name);
    GA_CHECK(e != nullptr, IOError, path_, ": no entry named \"", name, "\"");
    return read(*e, verify_crc);
  }

  /// Whether the archive's bytes begin like a zip file (a local header or an empty archive's
  /// end record).
  static bool looks_like_zip(const uint8_t* p, size_t n) {
    return n >= 4 && p[0] == 'P' && p[1] == 'K' && ((p[2] == 3 && p[3] == 4) || (p[2] == 5 && p[3] == 6));
  }

 private:
  static constexpr uint32_t kLocalSig = 0x04034b50, kCentralSig = 0x02014b50, kEndSig = 0x06054b50;
  static constexpr uint32_t kZip64EndSig = 0x06064b50, kZip64LocatorSig = 0x07064b50;
  static constexpr uint32_t kDescriptorSig = 0x08074b50;

  ZipArchive(ByteSource src, std::string path, const ZipLimits& limits)
      : src_(std::move(src)), path_(std::move(path)), limits_(limits) {
    parse();
  }

  static std::string hex(uint32_t v) {
    static const char* d = "0123456789abcdef";
    std::string s = "0x";
    for (int i = 7; i >= 0; --i) s += d[(v >> (4 * i)) & 15];
    return s;
  }
  [[noreturn]] void bad(const std::string& msg) const { throw IOError(cat(path_, ": ", msg)); }
  [[noreturn]] void bad_entry(const std::string& name, const std::string& msg) const {
    throw IOError(cat(path_, ": zip entry \"", name, "\": ", msg));
  }
  uint16_t u16(uint64_t at) const { return uint16_t(src_.data[at] | (src_.data[at + 1] << 8)); }
  uint32_t u32(uint64_t at) const { return uint32_t(u16(at)) | (uint32_t(u16(at + 2)) << 16); }
  uint64_t u64(uint64_t at) const { return uint64_t(u32(at)) | (uint64_t(u32(at + 4)) << 32); }

  // The fields of the end records that the directory walk needs.
  struct End {
    uint64_t entries = 0, cd_size = 0, cd_offset = 0;
    uint64_t limit = 0;  // where the central directory must end (the first end record)
  };

  End find_end() const {
    const uint64_t n = src_.size;
    if (n < 22) {
      if (looks_like_zip(src_.data, n)) bad(cat("truncated zip archive (", n, " bytes, no end-of-central-directory record)"));
      bad(cat("not a zip archive (", n, " bytes, too short for one)"));
    }
    // The end record is the last 22 bytes plus a comment of up to 65535 bytes; the right one
    // is the last whose comment length reaches exactly to the end of the file.
    uint64_t pos = n - 22;
    const uint64_t lowest = n - 22 > 65535 ? n - 22 - 65535 : 0;
    bool found = false;
    for (;; --pos) {
      if (u32(pos) == kEndSig && pos + 22 + u16(pos + 20) == n) {
        found = true;
        break;
      }
      if (pos == lowest) break;
    }
    if (!found) {
      if (looks_like_zip(src_.data, n))
        bad("truncated or corrupt zip archive: no end-of-central-directory record at its end");
      bad("not a zip archive (no end-of-central-directory record)");
    }
    // End record: signature, disk, directory's disk, entries on this disk, entries in all,
    // directory size, directory offset, comment length.
    const uint16_t disk = u16(pos + 4), cd_disk = u16(pos + 6);
    const uint16_t entries_disk = u16(pos + 8), entries_total = u16(pos + 10);
    const uint32_t cd_size = u32(pos + 12), cd_offset = u32(pos + 16);
    End end;
    end.limit = pos;
    end.entries = entries_total;
    end.cd_size = cd_size;
    end.cd_offset = cd_offset;
    const bool saturated = disk == 0xFFFF || cd_disk == 0xFFFF || entries_disk == 0xFFFF ||
                           entries_total == 0xFFFF || cd_size == 0xFFFFFFFFu || cd_offset == 0xFFFFFFFFu;
    if ((disk != 0 && disk != 0xFFFF) || (cd_disk != 0 && cd_disk != 0xFFFF) ||
        (entries_disk != entries_total && entries_disk != 0xFFFF && entries_total != 0xFFFF))
      bad("multi-disk (split) zip archives are not supported");
    const bool has_locator = pos >= 20 && u32(pos - 20) == kZip64LocatorSig;
    if (has_locator) {
      const uint64_t loc = pos - 20;
      if (u32(loc + 4) != 0 || u32(loc + 16) > 1) bad("multi-disk (split) zip archives are not supported");
      const uint64_t z = u64(loc + 8);
      if (z > loc || loc - z < 56) bad(cat("ZIP64 end record offset ", z, " is out of bounds"));
      if (u32(z) != kZip64EndSig) bad(cat("no ZIP64 end record at offset ", z, " (corrupt archive)"));
      const uint64_t rec_size = u64(z + 4);
      if (rec_size < 44 || rec_size > loc - z - 12) bad(cat("ZIP64 end record size ", rec_size, " is out of bounds"));
      if (u32(z + 16) != 0 || u32(z + 20) != 0) bad("multi-disk (split) zip archives are not supported");
      const uint64_t e_disk = u64(z + 24), e_total = u64(z + 32), z_size = u64(z + 40), z_offset = u64(z + 48);
      if (e_disk != e_total) bad("multi-disk (split) zip archives are not supported");
      // A 32-bit field that is not saturated must agree with its 64-bit version.
      if ((entries_total != 0xFFFF && entries_total != e_total) ||
          (cd_size != 0xFFFFFFFFu && cd_size != z_size) || (cd_offset != 0xFFFFFFFFu && cd_offset != z_offset))
        bad("the end record and the ZIP64 end record disagree (corrupt archive)");
      end.entries = e_total;
      end.cd_size = z_size;
      end.cd_offset = z_offset;
      end.limit = z;
    } else {
      if (saturated) bad("the end record needs a ZIP64 end record, which is missing (corrupt archive)");
    }
    return end;
  }

  void parse() {
    const End end = find_end();
    if (end.cd_offset > end.limit || end.cd_size > end.limit - end.cd_offset)
      bad(cat("central directory [", end.cd_offset, ", +", end.cd_size, ") lies outside the archive (", src_.size,
              " bytes; truncated?)"));
    if (end.entries > limits_.max_entries)
      bad(cat("the archive says it has ", end.entries, " entries, more than the limit of ", limits_.max_entries));
    if (end.entries > end.cd_size / 46)
      bad(cat("the archive says it has ", end.entries, " entries, its ", end.cd_size,
              "-byte central directory cannot hold that many"));
    const uint64_t cd_end = end.cd_offset + end.cd_size;
    uint64_t at = end.cd_offset;
    entries_.reserve(static_cast<size_t>(end.entries));
    for (uint64_t k = 0; k < end.entries; ++k) {
      if (cd_end - at < 46 || u32(at) != kCentralSig)
        bad(cat("central directory entry ", k, " at offset ", at, " is malformed"));
      ZipEntry e;
      e.flags = u16(at + 8);
      e.method = u16(at + 10);
      e.crc32 = u32(at + 16);
      uint64_t csize = u32(at + 20), usize = u32(at + 24);
      const uint16_t name_len = u16(at + 28), extra_len = u16(at + 30), comment_len = u16(at + 32);
      const uint16_t disk_start = u16(at + 34);
      uint64_t offset = u32(at + 42);
      if (uint64_t(46) + name_len + extra_len + comment_len > cd_end - at)
        bad(cat("central directory entry ", k, " runs past the directory's end"));
      e.name.assign(reinterpret_cast<const char*>(src_.data + at + 46), name_len);
      if (e.name.empty()) bad(cat("central directory entry ", k, " has an empty name"));
      const uint64_t extra = at + 46 + name_len;
      // ZIP64 extra field: the 64-bit values of the saturated fields, in this order.
      if (usize == 0xFFFFFFFFu || csize == 0xFFFFFFFFu || offset == 0xFFFFFFFFu || disk_start == 0xFFFF) {
        uint64_t z = 0, zlen = 0;
        if (!find_extra(extra, extra_len, 0x0001, z, zlen)) bad_entry(e.name, "needs a ZIP64 extra field, which is missing");
        uint64_t used = 0;
        auto take64 = [&](uint64_t& v) {
          if (zlen - used < 8) bad_entry(e.name, "ZIP64 extra field is too short");
          v = u64(z + used);
          used += 8;
        };
        if (usize == 0xFFFFFFFFu) take64(usize);
        if (csize == 0xFFFFFFFFu) take64(csize);
        if (offset == 0xFFFFFFFFu) take64(offset);
        if (disk_start == 0xFFFF) {
          if (zlen - used < 4 || u32(z + used) != 0) bad_entry(e.name, "lies on another disk (split archives are not supported)");
        }
      } else if (disk_start != 0) {
        bad_entry(e.name, "lies on another disk (split archives are not supported)");
      }
      e.compressed_size = csize;
      e.size = usize;
      e.header_offset = offset;
      if (e.flags & 0x41) bad_entry(e.name, "is encrypted");
      if (e.method != 0 && e.method != 8)
        bad_entry(e.name, cat("uses compression method ", e.method, "; only stored (0) and deflate (8) are supported"));
      if (e.method == 0 && e.compressed_size != e.size)
        bad_entry(e.name, cat("is stored but its sizes differ (", e.compressed_size, " compressed, ", e.size, ")"));
      if (!index_.emplace(e.name, entries_.size()).second) bad_entry(e.name, "appears twice in the central directory");
      entries_.push_back(std::move(e));
      at += 46 + uint64_t(name_len) + extra_len + comment_len;
    }
    if (at != cd_end)
      bad(cat("central directory has ", cd_end - at, " bytes after its ", end.entries, " entries (corrupt archive)"));
    for (ZipEntry& e : entries_) check_local(e, end.cd_offset);
    check_no_overlap();
  }

  /// Finds the extra-field record `id` within [at, at + len); false when absent (a record
  /// that would run past the field ends the search: some writers pad with junk).
  bool find_extra(uint64_t at, uint64_t len, uint16_t id, uint64_t& data, uint64_t& data_len) const {
    uint64_t p = 0;
    while (len - p >= 4) {
      const uint16_t rid = u16(at + p), rlen = u16(at + p + 2);
      if (rlen > len - p - 4) return false;  // trailing junk (some writers pad): treat as absent
      if (rid == id) {
        data = at + p + 4;
        data_len = rlen;
        return true;
      }
      p += 4 + uint64_t(rlen);
    }
    return false;
  }

  /// The local header must sit inside the archive, before the central directory, and agree
  /// with the directory on name, method and (unless deferred to a data descriptor) sizes and
  /// CRC; the data must end before the central directory starts.
  void check_local(ZipEntry& e, uint64_t cd_offset) {
    const uint64_t h = e.header_offset;
    if (h > cd_offset || cd_offset - h < 30)
      bad_entry(e.name, cat("local header offset ", h, " is outside the archive's data (directory at ", cd_offset, ")"));
    if (u32(h) != kLocalSig) bad_entry(e.name, cat("no local header at offset ", h, " (corrupt archive)"));
    const uint16_t flags = u16(h + 6), method = u16(h + 8);
    const uint32_t crc = u32(h + 14);
    uint64_t csize = u32(h + 18), usize = u32(h + 22);
    const uint16_t name_len = u16(h + 26), extra_len = u16(h + 28);
    const uint64_t data = h + 30 + uint64_t(name_len) + extra_len;
    if (data > cd_offset) bad_entry(e.name, "local header runs into the central directory (corrupt archive)");
    if (name_len != e.name.size() || std::memcmp(src_.data + h + 30, e.name.data(), name_len) != 0)
      bad_entry(e.name, "local header names a different file (corrupt archive)");
    if (method != e.method) bad_entry(e.name, "local header and central directory disagree on the compression method");
    if ((flags & 0x41) != 0) bad_entry(e.name, "is encrypted");
    if (usize == 0xFFFFFFFFu || csize == 0xFFFFFFFFu) {
      uint64_t z = 0, zlen = 0;
      if (find_extra(h + 30 + name_len, extra_len, 0x0001, z, zlen) && zlen >= 16) {
        usize = u64(z);
        csize = u64(z + 8);
      }
    }
    const bool deferred = (flags & 8) != 0;  // sizes and CRC in a data descriptor after the data
    const bool zeros = crc == 0 && csize == 0 && usize == 0;
    if (!(deferred && zeros) && (crc != e.crc32 || csize != e.compressed_size || usize != e.size))
      bad_entry(e.name, cat("local header and central directory disagree (CRC ", hex(crc), " vs ", hex(e.crc32),
                            ", sizes ", csize, "/", usize, " vs ", e.compressed_size, "/", e.size, ")"));
    if (e.compressed_size > cd_offset - data)
      bad_entry(e.name, cat("its ", e.compressed_size, " bytes at offset ", data,
                            " run past the start of the central directory (truncated or corrupt archive)"));
    e.data_offset = data;
    uint64_t span_end = data + e.compressed_size;
    if (deferred) span_end += descriptor_size(e, span_end, cd_offset);
    spans_.push_back({e.header_offset, span_end});
  }

  /// Size of the data descriptor at `at` that repeats e's CRC and sizes (with or without its
  /// signature, with 32- or 64-bit sizes); IOError when there is none that agrees.
  uint64_t descriptor_size(const ZipEntry& e, uint64_t at, uint64_t limit) const {
    uint64_t p = at;
    if (limit - p >= 4 && u32(p) == kDescriptorSig) p += 4;
    const uint64_t room = limit - p;
    if (room >= 12 && u32(p) == e.crc32 && u32(p + 4) == e.compressed_size && u32(p + 8) == e.size)
      return p + 12 - at;
    if (room >= 20 && u32(p) == e.crc32 && u64(p + 4) == e.compressed_size && u64(p + 12) == e.size)
      return p + 20 - at;
    bad_entry(e.name, "its data descriptor is missing or disagrees with the central directory (corrupt archive)");
  }

  void check_no_overlap() {
    std::vector<std::pair<uint64_t, uint64_t>> s = spans_;
    std::sort(s.begin(), s.end());
    for (size_t i = 1; i < s.size(); ++i)
      if (s[i].first < s[i - 1].second) {
        std::string a, b;
        for (const ZipEntry& e : entries_) {
          if (e.header_offset == s[i - 1].first) a = e.name;
          if (e.header_offset == s[i].first) b = e.name;
        }
        bad(cat("zip entries \"", a, "\" and \"", b, "\" overlap (corrupt or malicious archive)"));
      }
  }

  ByteSource src_;
  std::string path_;
  ZipLimits limits_;
  std::vector<ZipEntry> entries_;
  std::map<std::string, size_t> index_;
  std::vector<std::pair<uint64_t, uint64_t>> spans_;  // [local header, end of data (+descriptor))
};

}  // namespace ga::io
