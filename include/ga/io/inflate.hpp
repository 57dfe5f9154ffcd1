// DEFLATE (RFC 1951) and gzip (RFC 1952) decompression: enough to read a gzipped vocabulary
// and the deflated entries of a zip archive, with no dependency beyond the standard library.
// Every input is untrusted: output is capped, every read is bounds-checked, and a corrupt
// stream is an IOError naming where the bytes came from.
#pragma once
#include <cstddef>
#include <cstdint>
#include <string>
#include <vector>

#include "../core/error.hpp"

namespace ga::io {

/// CRC-32 (the zip / gzip polynomial) of [data, data + size), continuing from `crc` (0 to start).
inline uint32_t crc32(const uint8_t* data, size_t size, uint32_t crc = 0) {
  // Slicing-by-8: eight table lookups per 8 bytes, so checking a large storage costs about
  // as much as reading it.
  static const auto tables = [] {
    std::vector<uint32_t> t(8 * 256);
    for (uint32_t i = 0; i < 256; ++i) {
      uint32_t c = i;
      for (int k = 0; k < 8; ++k) c = (c & 1) ? 0xEDB88320u ^ (c >> 1) : c >> 1;
      t[i] = c;
    }
    for (uint32_t i = 0; i < 256; ++i)
      for (int s = 1; s < 8; ++s) t[s * 256 + i] = (t[(s - 1) * 256 + i] >> 8) ^ t[t[(s - 1) * 256 + i] & 0xFF];
    return t;
  }();
  const uint32_t* T = tables.data();
  uint32_t c = ~crc;
  while (size >= 8) {
    const uint32_t lo = c ^ (uint32_t(data[0]) | uint32_t(data[1]) << 8 | uint32_t(data[2]) << 16 |
                             uint32_t(data[3]) << 24);
    c = T[7 * 256 + (lo & 0xFF)] ^ T[6 * 256 + ((lo >> 8) & 0xFF)] ^ T[5 * 256 + ((lo >> 16) & 0xFF)] ^
        T[4 * 256 + (lo >> 24)] ^ T[3 * 256 + data[4]] ^ T[2 * 256 + data[5]] ^ T[1 * 256 + data[6]] ^
        T[data[7]];
    data += 8;
    size -= 8;
  }
  while (size--) c = T[(c ^ *data++) & 0xFF] ^ (c >> 8);
  return ~c;
}

/// A DEFLATE decoder over one input buffer. Not thread-safe; cheap to construct.
/// `origin` names the source in error messages (a path, or "archive.zip: entry").
class Inflater {
 public:
  Inflater(const uint8_t* data, size_t size, std::string origin)
      : p_(data), n_(size), origin_(std::move(origin)) {}

  /// Decodes one raw DEFLATE stream starting at the current position, appending to `out`.
  /// Requires: nothing. Guarantees: on return the position is just after the stream (whole
  /// bytes), and `out` grew by the decoded bytes. IOError when the stream is corrupt, ends
  /// early, or would make `out` longer than `max_output` bytes in total.
  void inflate_raw(std::vector<uint8_t>& out, size_t max_output) {
    max_output_ = max_output;
    bitbuf_ = 0, bitcnt_ = 0, padbits_ = 0;
    const size_t stream_start = out.size();
    bool last = false;
    while (!last) {
      last = bits(1) != 0;
      const unsigned type = bits(2);
      if (type == 0) {
        stored_block(out);
      } else if (type == 1) {
        fixed_tables();
        codes(out, stream_start, fixed_lit_, fixed_dist_);
      } else if (type == 2) {
        Huffman lit, dist;
        dynamic_tables(lit, dist);
        codes(out, stream_start, lit, dist);
      } else {
        fail("invalid block type 3");
      }
    }
    rewind_to_byte();
  }

  /// Decodes a whole gzip file (one or more members, as `gzip -c a b` writes), checking each
  /// member's CRC-32 and length. IOError on anything malformed or beyond `max_output` bytes.
  std::vector<uint8_t> gunzip(size_t max_output) {
    std::vector<uint8_t> out;
    pos_ = 0;
    while (pos_ < n_) {
      const size_t member_start = out.size();
      need(10);
      if (p_[pos_] != 0x1F || p_[pos_ + 1] != 0x8B) fail("not a gzip stream (bad magic)");
      if (p_[pos_ + 2] != 8) fail("gzip compression method is not deflate");
      const unsigned flags = p_[pos_ + 3];
      if (flags & 0xE0) fail("reserved gzip header flags set");
      pos_ += 10;
      if (flags & 4) {  // FEXTRA
        need(2);
        const size_t xlen = p_[pos_] | (size_t(p_[pos_ + 1]) << 8);
        pos_ += 2;
        need(xlen);
        pos_ += xlen;
      }
      for (unsigned f : {8u, 16u}) {  // FNAME, FCOMMENT: zero-terminated
        if (!(flags & f)) continue;
        while (true) {
          need(1);
          if (p_[pos_++] == 0) break;
        }
      }
      if (flags & 2) {  // FHCRC
        need(2);
        pos_ += 2;
      }
      inflate_raw(out, max_output);
      need(8);
      const uint32_t crc = le32(pos_), isize = le32(pos_ + 4);
      pos_ += 8;
      if (crc32(out.data() + member_start, out.size() - member_start) != crc) fail("CRC mismatch");
      if (static_cast<uint32_t>(out.size() - member_start) != isize) fail("length mismatch");
      while (pos_ < n_ && p_[pos_] == 0) ++pos_;  // zero padding some tools leave after a member
    }
    if (out.empty() && n_ == 0) fail("empty file");
    return out;
  }

  /// Bytes of input consumed so far.
  size_t position() const { return pos_; }

 private:
  // Canonical Huffman code: `fast` maps the next kFastBits input bits (LSB first) to
  // (symbol << 4 | length) for codes of at most kFastBits bits; longer codes are decoded
  // bit by bit from `count` / `symbol` (the textbook canonical walk).
  static constexpr int kFastBits = 10;
  struct Huffman {
    uint16_t count[16] = {0};
    std::vector<uint16_t> symbol;
    std::vector<uint16_t> fast;  // 0 = not in the fast table
  };

  [[noreturn]] void fail(const std::string& why) const {
    throw IOError(cat(origin_, ": corrupt deflate data (", why, ")"));
  }
  void need(size_t k) const {
    if (k > n_ - pos_) fail("unexpected end of data");
  }
  uint32_t le32(size_t at) const {
    return uint32_t(p_[at]) | (uint32_t(p_[at + 1]) << 8) | (uint32_t(p_[at + 2]) << 16) |
           (uint32_t(p_[at + 3]) << 24);
  }

  // Bit reader: bytes past the end of the input are loaded as zeros and counted in padbits_,
  // so decoding may look ahead freely; consuming any of those bits is an "unexpected end".
  void refill() {
    while (bitcnt_ <= 56) {
      uint64_t byte = 0;
      if (pos_ < n_) {
        byte = p_[pos_++];
      } else {
        padbits_ += 8;
      }
      bitbuf_ |= byte << bitcnt_;
      bitcnt_ += 8;
    }
  }
  void consume(int k) {
    if (k > bitcnt_ - padbits_) fail("unexpected end of data");
    bitbuf_ >>= k;
    bitcnt_ -= k;
  }
  unsigned bits(int k) {
    if (k == 0) return 0;
    if (bitcnt_ < k) refill();
    const unsigned v = static_cast<unsigned>(bitbuf_ & ((uint64_t(1) << k) - 1));
    consume(k);
    return v;
  }
  /// Drops the bits left of the current byte and gives the unread whole bytes back to the
  /// byte position (stored blocks and the gzip trailer are byte-aligned).
  void rewind_to_byte() {
    const int real = bitcnt_ - padbits_;
    const int drop = real % 8;
    pos_ -= static_cast<size_t>((real - drop) / 8);
    bitbuf_ = 0, bitcnt_ = 0, padbits_ = 0;
  }

  void stored_block(std::vector<uint8_t>& out) {
    rewind_to_byte();
    need(4);
    const unsigned len = p_[pos_] | (p_[pos_ + 1] << 8), nlen = p_[pos_ + 2] | (p_[pos_ + 3] << 8);
    pos_ += 4;
    if ((len ^ 0xFFFFu) != nlen) fail("stored block length check");
    need(len);
    grow_check(out, len);
    out.insert(out.end(), p_ + pos_, p_ + pos_ + len);
    pos_ += len;
  }

  void grow_check(const std::vector<uint8_t>& out, size_t add) const {
    if (add > max_output_ || out.size() > max_output_ - add)
      throw IOError(cat(origin_, ": decompressed data is larger than the limit of ", max_output_, " bytes"));
  }

  void build(Huffman& h, const uint8_t* lengths, int n) {
    for (int i = 0; i < 16; ++i) h.count[i] = 0;
    for (int i = 0; i < n; ++i) h.count[lengths[i]]++;
    h.count[0] = 0;
    int left = 1;
    for (int len = 1; len < 16; ++len) {
      left = left * 2 - h.count[len];
      if (left < 0) fail("over-subscribed Huffman code");
    }
    uint16_t offs[16] = {0};
    for (int len = 1; len < 15; ++len) offs[len + 1] = static_cast<uint16_t>(offs[len] + h.count[len]);
    h.symbol.assign(static_cast<size_t>(n), 0);
    for (int i = 0; i < n; ++i)
      if (lengths[i]) h.symbol[offs[lengths[i]]++] = static_cast<uint16_t>(i);
    // Fast table: walk the canonical codes of length <= kFastBits in order.
    h.fast.assign(size_t(1) << kFastBits, 0);
    int code = 0, index = 0;
    for (int len = 1; len <= kFastBits; ++len) {
      for (int k = 0; k < h.count[len]; ++k, ++code, ++index) {
        // The code is read MSB-first from an LSB-first stream: reverse its bits.
        int rev = 0;
        for (int b = 0; b < len; ++b) rev |= ((code >> b) & 1) << (len - 1 - b);
        const uint16_t entry = static_cast<uint16_t>((h.symbol[index] << 4) | len);
        for (int fill = rev; fill < (1 << kFastBits); fill += 1 << len) h.fast[fill] = entry;
      }
      code <<= 1;
    }
  }

  int decode(const Huffman& h) {
    if (bitcnt_ < 15) refill();
    const uint16_t e = h.fast[bitbuf_ & ((1u << kFastBits) - 1)];
    if (e) {
      consume(e & 15);
      return e >> 4;
    }
    // Slow path: codes longer than kFastBits (or no code at all).
    int code = 0, first = 0, index = 0;
    for (int len = 1; len < 16; ++len) {
      code |= static_cast<int>(bits(1));
      const int count = h.count[len];
      if (code - first < count) return h.symbol[index + (code - first)];
      index += count;
      first = (first + count) << 1;
      code <<= 1;
    }
    fail("invalid Huffman code");
  }

  void fixed_tables() {
    if (!fixed_lit_.symbol.empty()) return;
    uint8_t lengths[288];
    for (int i = 0; i < 288; ++i) lengths[i] = i < 144 ? 8 : i < 256 ? 9 : i < 280 ? 7 : 8;
    build(fixed_lit_, lengths, 288);
    for (int i = 0; i < 30; ++i) lengths[i] = 5;
    build(fixed_dist_, lengths, 30);
  }

  void dynamic_tables(Huffman& lit, Huffman& dist) {
    const int nlen = static_cast<int>(bits(5)) + 257, ndist = static_cast<int>(bits(5)) + 1;
    const int ncode = static_cast<int>(bits(4)) + 4;
    if (nlen > 286 || ndist > 30) fail("bad code counts");
    static const uint8_t kOrder[19] = {16, 17, 18, 0, 8, 7, 9, 6, 10, 5, 11, 4, 12, 3, 13, 2, 14, 1, 15};
    uint8_t cl[19] = {0};
    for (int i = 0; i < ncode; ++i) cl[kOrder[i]] = static_cast<uint8_t>(bits(3));
    Huffman clh;
    build(clh, cl, 19);
    uint8_t lengths[286 + 30] = {0};
    int i = 0;
    while (i < nlen + ndist) {
      const int sym = decode(clh);
      if (sym < 16) {
        lengths[i++] = static_cast<uint8_t>(sym);
        continue;
      }
      int rep;
      uint8_t val = 0;
      if (sym == 16) {
        if (i == 0) fail("repeat with no previous length");
        val = lengths[i - 1];
        rep = 3 + static_cast<int>(bits(2));
      } else if (sym == 17) {
        rep = 3 + static_cast<int>(bits(3));
      } else {
        rep = 11 + static_cast<int>(bits(7));
      }
      if (i + rep > nlen + ndist) fail("too many code lengths");
      while (rep--) lengths[i++] = val;
    }
    if (lengths[256] == 0) fail("no end-of-block code");
    build(lit, lengths, nlen);
    build(dist, lengths + nlen, ndist);
  }

  void codes(std::vector<uint8_t>& out, size_t stream_start, const Huffman& lit, const Huffman& dist) {
    static const uint16_t kLenBase[] = {3, 4, 5, 6, 7, 8, 9, 10, 11, 13, 15, 17, 19, 23, 27, 31,
                                        35, 43, 51, 59, 67, 83, 99, 115, 131, 163, 195, 227, 258};
    static const uint8_t kLenExtra[] = {0, 0, 0, 0, 0, 0, 0, 0, 1, 1, 1, 1, 2, 2, 2, 2,
                                        3, 3, 3, 3, 4, 4, 4, 4, 5, 5, 5, 5, 0};
    static const uint16_t kDistBase[] = {1, 2, 3, 4, 5, 7, 9, 13, 17, 25, 33, 49, 65, 97, 129,
                                         193, 257, 385, 513, 769, 1025, 1537, 2049, 3073, 4097,
                                         6145, 8193, 12289, 16385, 24577};
    static const uint8_t kDistExtra[] = {0, 0, 0, 0, 1, 1, 2, 2, 3, 3, 4, 4, 5, 5, 6,
                                         6, 7, 7, 8, 8, 9, 9, 10, 10, 11, 11, 12, 12, 13, 13};
    for (;;) {
      int sym = decode(lit);
      if (sym < 256) {
        grow_check(out, 1);
        out.push_back(static_cast<uint8_t>(sym));
      } else if (sym == 256) {
        return;
      } else {
        sym -= 257;
        if (sym >= 29) fail("bad length symbol");
        const size_t len = kLenBase[sym] + bits(kLenExtra[sym]);
        const int ds = decode(dist);
        if (ds >= 30) fail("bad distance symbol");
        const size_t d = kDistBase[ds] + bits(kDistExtra[ds]);
        if (d > out.size() - stream_start) fail("distance too far back");
        grow_check(out, len);
        const size_t from = out.size() - d;
        // Byte by byte: source and destination may overlap (a run).
        for (size_t k = 0; k < len; ++k) out.push_back(out[from + k]);
      }
    }
  }

  const uint8_t* p_;
  size_t n_;
  size_t pos_ = 0;
  uint64_t bitbuf_ = 0;
  int bitcnt_ = 0;   // bits in bitbuf_, padding included
  int padbits_ = 0;  // of which zeros loaded past the end of the input
  size_t max_output_ = 0;
  std::string origin_;
  Huffman fixed_lit_, fixed_dist_;
};

/// Decodes a whole gzip file held in memory. IOError (naming `origin`) when malformed or when
/// the result would exceed `max_output` bytes.
inline std::vector<uint8_t> gunzip(const uint8_t* data, size_t size, const std::string& origin,
                                   size_t max_output = size_t(1) << 30) {
  Inflater inf(data, size, origin);
  return inf.gunzip(max_output);
}

/// Decodes one raw DEFLATE stream (a zip entry of method 8) that must decode to exactly
/// `expected_size` bytes and use all of [data, data + size). IOError otherwise.
inline std::vector<uint8_t> inflate_exact(const uint8_t* data, size_t size, size_t expected_size,
                                          const std::string& origin) {
  Inflater inf(data, size, origin);
  std::vector<uint8_t> out;
  out.reserve(expected_size < (size_t(64) << 20) ? expected_size : (size_t(64) << 20));
  inf.inflate_raw(out, expected_size);
  if (out.size() != expected_size)
    throw IOError(cat(origin, ": deflate data decodes to ", out.size(), " bytes, the directory says ", expected_size));
  if (inf.position() != size)
    throw IOError(cat(origin, ": deflate stream ends after ", inf.position(), " of its ", size, " bytes"));
  return out;
}

}  // namespace ga::io
