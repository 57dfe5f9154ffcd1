// Image decoding: PNG, JPEG, BMP, GIF (first frame) and binary PNM (P5/P6), either in the
// mode PIL's `Image.open` gives (open_image: grey, grey+alpha, palette, 16-bit, ...) or as
// 8-bit RGB equal to PIL's `Image.open(path).convert("RGB")` (decode_image, load_image).
// The mode matters because CLIP's pipeline resizes before it converts to RGB, and PIL
// resizes each mode its own way (ga/io/preprocess.hpp). This header is the one place that
// knows which mode PIL gives each file and how convert("RGB") maps each mode.
// Decoding is stb_image's (a system dependency, included as <stb_image.h>); the places
// where stb and PIL disagree are corrected here and named in open_image's contract.
#pragma once
#include <algorithm>
#include <climits>
#include <cmath>
#include <cstddef>
#include <cstdint>
#include <filesystem>
#include <fstream>
#include <memory>
#include <string>
#include <vector>

#include "ga/core/error.hpp"
#include "ga/io/stb_image_impl.hpp"

namespace ga::io {

/// An 8-bit image, rows top to bottom, pixels interleaved (RGB when channels == 3).
/// Invariant: pixels.size() == width * height * channels.
struct Image {
  int width = 0;
  int height = 0;
  int channels = 3;
  std::vector<uint8_t> pixels;

  /// Requires 0 <= x < width, 0 <= y < height, 0 <= c < channels (unchecked).
  uint8_t at(int x, int y, int c) const {
    return pixels[(size_t(y) * size_t(width) + size_t(x)) * size_t(channels) + size_t(c)];
  }
};

/// The modes PIL (Debian's Pillow 9.4, the reference) opens our formats in, and how a
/// PilImage stores each:
///   bilevel  PIL "1": 1-bit PNG, 2-colour black/white BMP. 1 band, 0 or 255.
///   L        8-bit grey (also 2/4-bit PNG, scaled; identity-grey-palette BMP and GIF). 1 band.
///   P        palette: PNG colour type 3, BMP of <= 8 bits, GIF. 3 bands holding each
///            pixel's palette colour, not its index (stb expands palettes and never
///            returns indices; everything CLIP's pipeline does to P, nearest resampling,
///            cropping and convert("RGB"), selects or maps whole pixels, so colours give
///            the result indices would).
///   I        32-bit integer grey: 16-bit grey PNG (raw values), 16-bit PGM (scaled to
///            0..65535). Stored in `values`, not `pixels`. (Newer Pillow, 12.3 and 13.0
///            checked, opens 16-bit grey PNG as "I;16": see resize_bicubic(PilImage).)
///   LA       grey + alpha, 8-bit PNG. 2 bands.
///   RGB      3 bands: 8/16-bit RGB PNG (16-bit keeps the high byte), 24/32-bit BMP,
///            PPM, colour JPEG.
///   RGBA     4 bands: 8/16-bit RGBA PNG and 16-bit grey+alpha PNG (PIL opens that as
///            RGBA with R = G = B = grey, high bytes).
enum class PilMode { bilevel, L, P, I, LA, RGB, RGBA };

/// PIL's name for `mode` ("1", "L", "P", "I", "LA", "RGB", "RGBA").
inline const char* pil_mode_name(PilMode mode) {
  switch (mode) {
    case PilMode::bilevel: return "1";
    case PilMode::L: return "L";
    case PilMode::P: return "P";
    case PilMode::I: return "I";
    case PilMode::LA: return "LA";
    case PilMode::RGB: return "RGB";
    case PilMode::RGBA: return "RGBA";
  }
  return "?";
}

/// Bytes per pixel in PilImage::pixels for `mode` (0 for I, whose samples are `values`).
inline int pil_bands(PilMode mode) {
  switch (mode) {
    case PilMode::bilevel: case PilMode::L: return 1;
    case PilMode::LA: return 2;
    case PilMode::P: case PilMode::RGB: return 3;
    case PilMode::RGBA: return 4;
    case PilMode::I: return 0;
  }
  return 0;
}

/// An image in the mode PIL opens it in (see PilMode for the storage of each mode).
/// Invariant: pixels.size() == width * height * pil_bands(mode), and values.size() ==
/// width * height when mode == I (empty otherwise).
struct PilImage {
  PilMode mode = PilMode::RGB;
  int width = 0;
  int height = 0;
  std::vector<uint8_t> pixels;
  std::vector<int32_t> values;
};

/// PIL's `convert("RGB")`: grey (L, 1) is replicated, alpha dropped (not composited), P
/// already holds its colours, I is clamped to 0..255 (not rescaled) and replicated.
inline Image to_rgb(const PilImage& in) {
  Image out;
  out.width = in.width;
  out.height = in.height;
  out.channels = 3;
  const size_t n = size_t(in.width) * size_t(in.height);
  if (in.mode == PilMode::RGB || in.mode == PilMode::P) {
    out.pixels = in.pixels;
    return out;
  }
  out.pixels.resize(n * 3);
  const int bands = pil_bands(in.mode);
  for (size_t i = 0; i < n; ++i) {
    uint8_t* dst = &out.pixels[i * 3];
    if (in.mode == PilMode::I) {
      std::fill_n(dst, 3, uint8_t(std::clamp<int32_t>(in.values[i], 0, 255)));
    } else if (in.mode == PilMode::RGBA) {
      std::copy_n(&in.pixels[i * 4], 3, dst);
    } else {  // bilevel, L, LA: the grey band first
      std::fill_n(dst, 3, in.pixels[i * size_t(bands)]);
    }
  }
  return out;
}

/// to_rgb, reusing the pixel buffer where the mode already stores RGB (RGB, P).
inline Image to_rgb(PilImage&& in) {
  if (in.mode != PilMode::RGB && in.mode != PilMode::P) return to_rgb(static_cast<const PilImage&>(in));
  Image out;
  out.width = in.width;
  out.height = in.height;
  out.pixels = std::move(in.pixels);
  return out;
}

/// Largest image decode_image accepts by default (width * height): 2^28 pixels is
/// 768 MiB of RGB, far beyond any photo, and keeps a hostile header from making us
/// allocate without bound.
inline constexpr int64_t kMaxImagePixels = int64_t(1) << 28;

namespace detail {

struct StbFree {
  void operator()(void* p) const { stbi_image_free(p); }
};

[[noreturn]] inline void throw_decode_error(const std::string& name, const char* what) {
  const char* reason = stbi_failure_reason();
  throw IOError(cat("image: cannot decode '", name, "': ", what,
                    reason ? cat(" (", reason, ")") : std::string()));
}

inline bool starts_with(const uint8_t* data, size_t size, const char* magic) {
  size_t n = std::char_traits<char>::length(magic);
  return size >= n && std::equal(magic, magic + n, reinterpret_cast<const char*>(data));
}

inline bool is_png(const uint8_t* data, size_t size) { return starts_with(data, size, "\x89PNG\r\n\x1a\n"); }

/// A binary PNM header (P5 grey, P6 RGB): decimal fields separated by whitespace and
/// '#' comments (to end of line), then exactly one whitespace byte before the samples.
struct PnmHeader {
  bool ok = false;
  int channels = 0;
  int64_t width = 0, height = 0;
  int maxval = 0;
  size_t data_offset = 0;
};

inline PnmHeader pnm_header(const uint8_t* data, size_t size) {
  PnmHeader hdr;
  size_t pos = 2;
  auto is_space = [](uint8_t c) { return c == ' ' || c == '\t' || c == '\n' || c == '\r' || c == '\v' || c == '\f'; };
  int64_t fields[3] = {0, 0, 0};
  for (int64_t& value : fields) {
    while (pos < size && (is_space(data[pos]) || data[pos] == '#')) {
      if (data[pos] == '#') {
        while (pos < size && data[pos] != '\n' && data[pos] != '\r') ++pos;
      } else {
        ++pos;
      }
    }
    if (pos >= size || data[pos] < '0' || data[pos] > '9') return hdr;
    int digits = 0;
    while (pos < size && data[pos] >= '0' && data[pos] <= '9') {
      if (++digits > 10) return hdr;  // PIL's token limit; also keeps value in range
      value = value * 10 + (data[pos++] - '0');
    }
  }
  if (pos >= size || !is_space(data[pos])) return hdr;
  hdr.data_offset = pos + 1;
  hdr.channels = data[1] == '5' ? 1 : 3;
  hdr.width = fields[0];
  hdr.height = fields[1];
  hdr.maxval = fields[2] >= 1 && fields[2] <= 65535 ? int(fields[2]) : 0;
  hdr.ok = hdr.maxval > 0;
  return hdr;
}

/// False when an uncompressed BMP holds fewer pixel bytes than its header declares
/// (stb would decode the missing rows as zeros; PIL rejects the file).
inline bool bmp_data_complete(const uint8_t* data, size_t size) {
  if (size < 26) return true;  // too short for our check: stb's own header checks apply
  auto u16 = [&](size_t p) { return uint32_t(data[p]) | (uint32_t(data[p + 1]) << 8); };
  auto u32 = [&](size_t p) { return u16(p) | (u16(p + 2) << 16); };
  const uint32_t offset = u32(10), dib = u32(14);
  int64_t w = 0, h = 0;
  uint32_t bpp = 0, compression = 0;
  if (dib == 12) {
    w = u16(18), h = u16(20), bpp = u16(24);
  } else if (dib >= 40 && size >= 34) {
    w = int32_t(u32(18)), h = int32_t(u32(22)), bpp = u16(28), compression = u32(30);
  } else {
    return true;
  }
  if (compression != 0 && compression != 3) return true;  // RLE: length not known upfront
  if (w <= 0 || h == 0 || bpp == 0 || bpp > 32) return true;
  const int64_t row = (int64_t(bpp) * w + 31) / 32 * 4;
  return int64_t(size) >= int64_t(offset) + row * (h < 0 ? -h : h);
}

/// What PIL's first-frame GIF decoding needs beyond stb: the frame's palette, the fill
/// index for pixels stb leaves transparent, and the frame rectangle.
struct GifFirstFrame {
  bool ok = false;
  std::vector<uint8_t> palette;  // RGB triples (local table if present, else global)
  int fill_index = 0;            // transparent index if declared, else 0
  int left = 0, top = 0, width = 0, height = 0;
};

inline GifFirstFrame gif_first_frame(const uint8_t* data, size_t size) {
  GifFirstFrame g;
  if (size < 13) return g;
  auto u16 = [&](size_t p) { return int(data[p]) | (int(data[p + 1]) << 8); };
  size_t pos = 13;
  const uint8_t screen_flags = data[10];
  std::vector<uint8_t> global;
  if (screen_flags & 0x80) {
    size_t n = size_t(3) << ((screen_flags & 7) + 1);
    if (pos + n > size) return g;
    global.assign(data + pos, data + pos + n);
    pos += n;
  }
  int transparent = -1;
  while (pos < size) {
    uint8_t block = data[pos++];
    if (block == 0x21) {  // extension: label, then sub-blocks
      if (pos >= size) return g;
      uint8_t label = data[pos++];
      // A graphic control extension applies to the next image only; the last one wins.
      if (label == 0xF9 && pos + 5 <= size && data[pos] >= 4)
        transparent = (data[pos + 1] & 1) ? int(data[pos + 4]) : -1;
      while (pos < size && data[pos] != 0) pos += size_t(data[pos]) + 1;
      ++pos;
    } else if (block == 0x2C) {  // image descriptor
      if (pos + 9 > size) return g;
      g.left = u16(pos);
      g.top = u16(pos + 2);
      g.width = u16(pos + 4);
      g.height = u16(pos + 6);
      uint8_t flags = data[pos + 8];
      pos += 9;
      if (flags & 0x80) {
        size_t n = size_t(3) << ((flags & 7) + 1);
        if (pos + n > size) return g;
        g.palette.assign(data + pos, data + pos + n);
      } else {
        g.palette = global;
      }
      g.fill_index = transparent >= 0 ? transparent : 0;
      g.ok = true;
      return g;
    } else {
      return g;
    }
  }
  return g;
}

/// True when stb_image would take the data for a JPEG: 0xFF, any 0xFF fill bytes, SOI.
inline bool is_jpeg(const uint8_t* data, size_t size) {
  size_t i = 0;
  while (i < size && data[i] == 0xFF) ++i;
  return i > 0 && i < size && data[i] == 0xD8;
}

/// Why this exists: the JPEG decoder of Debian's stb_image 2.27 (a system package we do
/// not patch) trusts its header segments; later stb releases fixed what follows. A DHT
/// table declaring more than 256 codes overruns the Huffman tables (out-of-bounds writes,
/// CVE-2021-28021), and a scan that uses a Huffman or quantisation table no earlier
/// segment defined decodes with uninitialised tables (out-of-bounds reads). So every JPEG
/// is walked here, as stb will read it, before stb sees any of it (stbi_info included).
/// Walk: SOI; then marker segments (2-byte big-endian length counting itself) up to EOI
/// or the end of the data; after each SOS its entropy-coded data is skipped up to the
/// next 0xFF followed by a byte that is not 0x00 (stuffing), RSTn or 0xFF (fill), so
/// DHT/DQT segments between progressive scans are checked too. Bytes between segments
/// that are no marker are skipped (stb skips or rejects them itself).
/// Returns why the data must not reach stb, or "" when it may.
inline std::string jpeg_structure_error(const uint8_t* d, size_t size) {
  bool dc_table[4] = {}, ac_table[4] = {}, quant_table[4] = {};
  int comp_id[4] = {}, comp_tq[4] = {}, ncomp = 0;
  bool progressive = false;
  size_t pos = 0;
  while (d[pos] == 0xFF) ++pos;
  ++pos;  // SOI (see is_jpeg)
  while (pos < size) {
    if (d[pos] != 0xFF) {
      ++pos;
      continue;
    }
    while (pos < size && d[pos] == 0xFF) ++pos;
    if (pos >= size) break;
    const int m = d[pos++];
    if (m == 0xD9) break;                                           // EOI: stb reads no further
    if (m == 0x00 || m == 0x01 || (m >= 0xD0 && m <= 0xD8)) continue;  // no segment follows
    const std::string seg = cat("marker 0xFF", std::hex, std::uppercase, m, std::dec);
    if (size - pos < 2) return cat("truncated segment (", seg, ")");
    const size_t len = (size_t(d[pos]) << 8) | d[pos + 1];
    if (len < 2) return cat("segment length ", len, " < 2 (", seg, ")");
    if (len > size - pos) return cat("truncated segment (", seg, " declares ", len, " bytes, ", size - pos, " left)");
    const uint8_t* s = d + pos + 2;  // the segment's payload, n bytes
    const size_t n = len - 2;
    pos += len;
    if (m == 0xC4) {  // DHT: tables of (class << 4 | id, 16 code-length counts, values)
      for (size_t i = 0; i < n;) {
        if (n - i < 17) return "truncated DHT table";
        const int tc = s[i] >> 4, th = s[i] & 15;
        if (tc > 1 || th > 3) return cat("DHT table class ", tc, " id ", th, " (class must be 0..1, id 0..3)");
        size_t codes = 0;
        for (int k = 1; k <= 16; ++k) codes += s[i + size_t(k)];
        if (codes > 256) return cat("DHT table declares ", codes, " codes (at most 256)");
        if (n - i - 17 < codes) return "truncated DHT table";
        (tc == 0 ? dc_table : ac_table)[th] = true;
        i += 17 + codes;
      }
    } else if (m == 0xDB) {  // DQT: tables of (precision << 4 | id, 64 8- or 16-bit values)
      for (size_t i = 0; i < n;) {
        const int pq = s[i] >> 4, tq = s[i] & 15;
        if (pq > 1 || tq > 3) return cat("DQT table precision ", pq, " id ", tq);
        if (n - i < 1 + 64 * size_t(pq + 1)) return "truncated DQT table";
        quant_table[tq] = true;
        i += 1 + 64 * size_t(pq + 1);
      }
    } else if ((m == 0xC0 || m == 0xC1 || m == 0xC2) && ncomp == 0) {  // the SOF stb decodes
      if (n < 6 || s[5] < 1 || s[5] > 4 || n < 6 + 3 * size_t(s[5])) return "bad SOF segment";
      ncomp = s[5];
      progressive = m == 0xC2;
      for (int c = 0; c < ncomp; ++c) {
        comp_id[c] = s[6 + 3 * c];
        comp_tq[c] = s[8 + 3 * c];
        if (comp_tq[c] > 3) return "bad SOF segment";
      }
    } else if (m == 0xDA) {  // SOS: each component's tables must exist; then skip the scan data
      const size_t ns = n >= 1 ? s[0] : 0;
      if (ns < 1 || ns > 4 || n != 4 + 2 * ns) return "bad SOS segment";
      const int ss = s[1 + 2 * ns], ah = s[3 + 2 * ns] >> 4;
      for (size_t k = 0; k < ns; ++k) {
        const int id = s[1 + 2 * k], td = s[2 + 2 * k] >> 4, ta = s[2 + 2 * k] & 15;
        int c = 0;
        while (c < ncomp && comp_id[c] != id) ++c;
        if (c == ncomp || td > 3 || ta > 3) return "bad SOS segment";  // stb rejects these too
        if (!quant_table[comp_tq[c]]) return cat("scan uses undefined quantisation table ", comp_tq[c]);
        // stb reads the DC table in sequential scans and first DC scans, the AC table in
        // sequential scans and AC scans.
        if ((!progressive || (ss == 0 && ah == 0)) && !dc_table[td])
          return cat("scan uses undefined DC Huffman table ", td);
        if ((!progressive || ss != 0) && !ac_table[ta]) return cat("scan uses undefined AC Huffman table ", ta);
      }
      while (pos < size) {
        const int next = pos + 1 < size ? d[pos + 1] : -1;
        if (d[pos] == 0xFF && next != 0x00 && next != 0xFF && !(next >= 0xD0 && next <= 0xD7)) break;
        pos += (d[pos] == 0xFF && next != 0xFF) ? 2 : 1;
      }
    }
  }
  return "";
}

/// One chunk of a PNG: its 4-byte length field at d[pos], its type at d[pos + 4], then `len`
/// data bytes and a CRC; `fits` when all 12 + len bytes lie within the data.
struct PngChunk {
  size_t pos, len;
  const uint8_t* type;
  bool fits;
  bool is(const char* name) const { return std::equal(type, type + 4, name); }
};

/// Calls visit(chunk) for each chunk after the 8-byte signature (size >= 8), in order, while
/// 12 bytes (a chunk's frame) are left, until visit returns false or after the first chunk
/// that does not fit. Reads nothing past d[size - 1].
template <class Visit>
void for_each_png_chunk(const uint8_t* d, size_t size, Visit visit) {
  for (size_t pos = 8; size - pos >= 12;) {
    const size_t len = (size_t(d[pos]) << 24) | (size_t(d[pos + 1]) << 16) | (size_t(d[pos + 2]) << 8) | d[pos + 3];
    const PngChunk chunk{pos, len, d + pos + 4, len <= size - pos - 12};
    if (!visit(chunk) || !chunk.fits) return;
    pos += 12 + len;
  }
}

/// The bytes stb should decode for a PNG: stb 2.27 memcpy's into a null buffer when a
/// zero-length IDAT chunk comes before any image data (undefined behaviour, though zero
/// bytes are copied). Such chunks carry nothing, so a copy without them is returned; an
/// empty vector when there are none. stb does not check CRCs, so nothing else changes.
inline std::vector<uint8_t> png_without_empty_idat(const uint8_t* d, size_t size) {
  std::vector<uint8_t> out;
  size_t copied = 0;
  for_each_png_chunk(d, size, [&](const PngChunk& c) {
    if (c.fits && c.len == 0 && c.is("IDAT")) {
      out.insert(out.end(), d + copied, d + c.pos);
      copied = c.pos + 12;
    }
    return true;
  });
  if (copied > 0) out.insert(out.end(), d + copied, d + size);
  return out;
}

/// Why a PNG must not reach stb, or "" when it may: a chunk (up to IEND) whose length runs
/// past the end of the data. stb grows its buffer for an IDAT chunk's claimed length before
/// reading it, so a few hundred bytes claiming a gigabyte would make it allocate that much.
inline std::string png_structure_error(const uint8_t* d, size_t size) {
  std::string why;
  for_each_png_chunk(d, size, [&](const PngChunk& c) {
    if (!c.fits)
      why = "truncated or corrupt chunk at byte " + std::to_string(c.pos) + ": it claims " + std::to_string(c.len) +
            " bytes, " + std::to_string(size - c.pos - 12) + " are left";
    return c.fits && !c.is("IEND");
  });
  return why;
}

/// A PNG's IHDR bit depth and colour type; -1, -1 when the first chunk is not IHDR.
struct PngHeader {
  int bit_depth = -1;
  int color_type = -1;
};

inline PngHeader png_header(const uint8_t* d, size_t size) {
  PngHeader h;
  if (size >= 26 && std::equal(d + 12, d + 16, "IHDR")) h.bit_depth = d[24], h.color_type = d[25];
  return h;
}

/// PIL's mode for a PNG (PngImagePlugin's table); a PNG without a leading IHDR (Apple's
/// CgBI, which PIL cannot open) goes by stb's channel count.
inline PilMode png_mode(const PngHeader& h, int stb_comp) {
  switch (h.color_type) {
    case 0: return h.bit_depth == 1 ? PilMode::bilevel : h.bit_depth == 16 ? PilMode::I : PilMode::L;
    case 2: return PilMode::RGB;
    case 3: return PilMode::P;
    case 4: return h.bit_depth == 16 ? PilMode::RGBA : PilMode::LA;
    case 6: return PilMode::RGBA;
    default: break;
  }
  return stb_comp == 1 ? PilMode::L : stb_comp == 2 ? PilMode::LA : stb_comp == 4 ? PilMode::RGBA : PilMode::RGB;
}

/// PIL's mode for a BMP stb accepted (BmpImagePlugin): up to 8 bits per pixel is P,
/// except when the first `colors` palette entries (the header's count, else 2^bits) are
/// the grey ramp 0, 1, 2, ... (L) or, for 2 colours, black then white (bilevel); 32 bits
/// with BI_BITFIELDS and an alpha mask is RGBA; anything else is RGB.
inline PilMode bmp_mode(const uint8_t* d, size_t size) {
  auto u16 = [&](size_t p) { return uint32_t(d[p]) | (uint32_t(d[p + 1]) << 8); };
  auto u32 = [&](size_t p) { return u16(p) | (u16(p + 2) << 16); };
  if (size < 18) return PilMode::RGB;
  const uint32_t dib = u32(14);
  uint32_t bits = 0, colors = 0, compression = 0;
  size_t entry = 4;  // palette entry size: BGRX, or BGR for the OS/2 header
  if (dib == 12 && size >= 26) {
    bits = u16(24);
    entry = 3;
  } else if (dib >= 40 && size >= 54) {
    bits = u16(28);
    compression = u32(30);
    colors = u32(46);
  } else {
    return PilMode::RGB;
  }
  if (bits == 32 && compression == 3)  // alpha mask: only headers longer than 40 bytes have one
    return dib > 40 && size >= 70 && u32(66) != 0 ? PilMode::RGBA : PilMode::RGB;
  if (bits > 8) return PilMode::RGB;
  if (colors == 0) colors = uint32_t(1) << bits;
  const size_t palette = 14 + size_t(dib);
  bool grey = true;
  for (uint32_t i = 0; i < colors && grey; ++i) {
    const uint32_t want = colors == 2 ? (i == 0 ? 0 : 255) : (i & 255);
    const size_t p = palette + size_t(i) * entry;
    grey = p + 3 <= size && d[p] == want && d[p + 1] == want && d[p + 2] == want;
  }
  return !grey ? PilMode::P : colors == 2 ? PilMode::bilevel : PilMode::L;
}

/// True when a GIF colour table is PIL's "not needed" palette: entry i is (i, i, i) for
/// every entry (an empty table included); PIL then opens the frame as L, not P.
inline bool gif_palette_is_grey_ramp(const std::vector<uint8_t>& palette) {
  for (size_t i = 0; i + 2 < palette.size(); i += 3)
    if (palette[i] != i / 3 || palette[i + 1] != i / 3 || palette[i + 2] != i / 3) return false;
  return true;
}

/// Keeps band 0 of every `bands`-byte pixel (grey from stb's replicated RGB).
inline std::vector<uint8_t> first_band(const uint8_t* src, size_t npix, int bands) {
  std::vector<uint8_t> out(npix);
  for (size_t i = 0; i < npix; ++i) out[i] = src[i * size_t(bands)];
  return out;
}

}  // namespace detail

/// Decodes an encoded image held in memory in the mode PIL's `Image.open` gives it (see
/// PilMode); `name` (a path, usually) is only used in error messages.
/// Ensures to_rgb(result) equals PIL's `Image.open(...).convert("RGB")`, and the mode and
/// samples equal what PIL holds before the conversion:
///  - 16-bit RGB / RGBA / grey+alpha PNG keep the high byte of each sample (PIL's
///    "RGB;16B"-style unpacking; stb does the same); 16-bit grey PNG keeps all 16 bits
///    (mode I);
///  - PNM with maxval != 255: round(v / maxval * 255) (half to even), capped at 255; for
///    16-bit grey PNM (mode I) PIL scales to 0..65535 instead (maxval 65535 is read as
///    stored), reproduced;
///  - GIF: first frame; pixels of the transparent index, and pixels outside the first
///    frame's rectangle, get PIL's colour (palette entry of the transparent index, or of
///    index 0), where stb would leave them black; a grey-ramp colour table gives L;
///  - BMP: palette images are P, L or bilevel by PIL's palette test (detail::bmp_mode);
///    for a 32-bit BMP with an alpha mask (RGBA) whose alpha is all zero, stb (and so
///    this) makes it opaque where PIL keeps it transparent;
///  - JPEG: stb's decoder (IDCT and chroma upsampling) is not libjpeg's, so values
///    differ from PIL by a few levels; no EXIF rotation is applied (PIL does not either);
///    CMYK JPEGs come back as RGB (PIL keeps CMYK).
/// Throws IOError naming `name` on empty, corrupt, truncated, unsupported (TGA, PSD,
/// plain-text PNM, 1-bit PBM, ...) data, and on images with more than `max_pixels` pixels.
inline PilImage open_image(const uint8_t* data, size_t size, const std::string& name,
                           int64_t max_pixels = kMaxImagePixels) {
  GA_CHECK(size > 0 && data != nullptr, IOError, "image: cannot decode '", name, "': empty file");
  GA_CHECK(size <= size_t(INT_MAX), IOError, "image: cannot decode '", name, "': file larger than 2 GiB");
  int len = int(size);
  if (detail::starts_with(data, size, "P5") || detail::starts_with(data, size, "P6")) {
    // Binary PNM is decoded here, not by stb: this stb reads 16-bit samples without
    // swapping them from big-endian, ignores maxval, and accepts truncated data (leaving
    // the rest of the buffer uninitialised).
    const detail::PnmHeader hdr = detail::pnm_header(data, size);
    GA_CHECK(hdr.ok, IOError, "image: cannot decode '", name, "': bad PNM header (maxval must be 1..65535)");
    GA_CHECK(hdr.width > 0 && hdr.height > 0, IOError, "image: cannot decode '", name, "': zero-size image ",
             hdr.width, "x", hdr.height);
    GA_CHECK(hdr.width <= max_pixels / hdr.height, IOError,
             "image: '", name, "' is too large (", hdr.width, "x", hdr.height, " pixels; the limit is ", max_pixels,
             ")");
    const size_t npix = size_t(hdr.width) * size_t(hdr.height);
    const size_t bytes_per_sample = hdr.maxval > 255 ? 2 : 1;
    const size_t nsamples = npix * size_t(hdr.channels);
    GA_CHECK(size - hdr.data_offset >= nsamples * bytes_per_sample, IOError, "image: cannot decode '", name,
             "': truncated PNM data (", size - hdr.data_offset, " bytes, need ", nsamples * bytes_per_sample, ")");
    // PIL: maxval 255 is copied; other maxvals scale to round(v / maxval * out_max)
    // (half to even), capped at out_max, where out_max is 255, or 65535 for grey with
    // maxval > 255 (mode I; P5 with maxval 65535 is read as stored).
    const bool wide = hdr.channels == 1 && hdr.maxval > 255;
    const double out_max = wide ? 65535.0 : 255.0;
    const uint8_t* src = data + hdr.data_offset;
    PilImage img;
    img.mode = wide ? PilMode::I : hdr.channels == 1 ? PilMode::L : PilMode::RGB;
    img.width = int(hdr.width);
    img.height = int(hdr.height);
    if (wide)
      img.values.resize(npix);
    else
      img.pixels.resize(nsamples);
    for (size_t s = 0; s < nsamples; ++s) {
      const uint32_t v = bytes_per_sample == 2 ? (uint32_t(src[2 * s]) << 8) | src[2 * s + 1] : src[s];
      double scaled = double(v);
      if (hdr.maxval != 255 && !(wide && hdr.maxval == 65535))
        scaled = std::min(out_max, std::nearbyint(double(v) / double(hdr.maxval) * out_max));
      if (wide)
        img.values[s] = int32_t(scaled);
      else
        img.pixels[s] = uint8_t(scaled);
    }
    return img;
  }

  if (detail::is_jpeg(data, size)) {
    const std::string why = detail::jpeg_structure_error(data, size);
    GA_CHECK(why.empty(), IOError, "image: cannot decode '", name, "': corrupt JPEG (", why, ")");
  }
  std::vector<uint8_t> png_copy;
  const bool png = detail::is_png(data, size);
  if (png) {
    const std::string why = detail::png_structure_error(data, size);
    GA_CHECK(why.empty(), IOError, "image: cannot decode '", name, "': corrupt PNG (", why, ")");
    png_copy = detail::png_without_empty_idat(data, size);
  }
  if (!png_copy.empty()) data = png_copy.data(), size = png_copy.size(), len = int(size);

  int w = 0, h = 0, comp = 0;
  if (!stbi_info_from_memory(data, len, &w, &h, &comp))
    detail::throw_decode_error(name, "not a supported image (PNG, JPEG, BMP, GIF, binary PNM) or corrupt header");
  GA_CHECK(w > 0 && h > 0, IOError, "image: cannot decode '", name, "': zero-size image ", w, "x", h);
  GA_CHECK(int64_t(w) * int64_t(h) <= max_pixels, IOError, "image: '", name, "' is too large (", w, "x", h,
           " pixels; the limit is ", max_pixels, ")");

  const bool bmp = detail::starts_with(data, size, "BM");
  GA_CHECK(!bmp || detail::bmp_data_complete(data, size), IOError, "image: cannot decode '", name,
           "': truncated BMP data");

  PilImage img;
  img.width = w;
  img.height = h;
  const size_t npix = size_t(w) * size_t(h);
  int got_w = 0, got_h = 0, got_comp = 0;
  auto check_size = [&](const void* p) {
    if (!p) detail::throw_decode_error(name, "corrupt or truncated data");
    GA_CHECK(got_w == w && got_h == h, IOError, "image: cannot decode '", name, "': inconsistent size");
  };
  auto load8 = [&](int channels) {
    std::unique_ptr<stbi_uc, detail::StbFree> raw(
        stbi_load_from_memory(data, len, &got_w, &got_h, &got_comp, channels));
    check_size(raw.get());
    return raw;
  };

  const bool gif = detail::starts_with(data, size, "GIF8");
  if (png) {
    const detail::PngHeader hdr = detail::png_header(data, size);
    img.mode = detail::png_mode(hdr, comp);
    if (img.mode == PilMode::I) {
      std::unique_ptr<stbi_us, detail::StbFree> raw(stbi_load_16_from_memory(data, len, &got_w, &got_h, &got_comp, 1));
      check_size(raw.get());
      img.values.assign(raw.get(), raw.get() + npix);
      return img;
    }
    if (hdr.color_type == 4 && img.mode == PilMode::RGBA) {  // 16-bit grey+alpha: grey, grey, grey, alpha
      const auto raw = load8(2);
      img.pixels.resize(npix * 4);
      for (size_t i = 0; i < npix; ++i) {
        std::fill_n(&img.pixels[i * 4], 3, raw.get()[i * 2]);
        img.pixels[i * 4 + 3] = raw.get()[i * 2 + 1];
      }
      return img;
    }
    const int bands = pil_bands(img.mode);
    const auto raw = load8(bands);
    img.pixels.assign(raw.get(), raw.get() + npix * size_t(bands));
    return img;
  }
  if (bmp) {
    img.mode = detail::bmp_mode(data, size);
    const int bands = img.mode == PilMode::RGBA ? 4 : 3;
    const auto raw = load8(bands);
    if (pil_bands(img.mode) == 1)
      img.pixels = detail::first_band(raw.get(), npix, 3);
    else
      img.pixels.assign(raw.get(), raw.get() + npix * size_t(bands));
    return img;
  }
  if (!gif) {  // JPEG
    img.mode = comp == 1 ? PilMode::L : PilMode::RGB;
    const int bands = pil_bands(img.mode);
    const auto raw = load8(bands);
    img.pixels.assign(raw.get(), raw.get() + npix * size_t(bands));
    return img;
  }

  const auto raw = load8(4);
  const detail::GifFirstFrame frame = detail::gif_first_frame(data, size);
  img.mode = frame.ok && detail::gif_palette_is_grey_ramp(frame.palette) ? PilMode::L : PilMode::P;
  uint8_t fill[3] = {0, 0, 0};
  if (frame.ok && size_t(frame.fill_index) * 3 + 3 <= frame.palette.size())
    std::copy_n(frame.palette.begin() + frame.fill_index * 3, 3, fill);
  const int bands = pil_bands(img.mode);
  img.pixels.resize(npix * size_t(bands));
  for (int y = 0; y < h; ++y) {
    for (int x = 0; x < w; ++x) {
      const size_t i = size_t(y) * size_t(w) + size_t(x);
      const uint8_t* src = raw.get() + i * 4;
      const bool outside = frame.ok && (x < frame.left || y < frame.top || x >= frame.left + frame.width ||
                                        y >= frame.top + frame.height);
      const uint8_t* rgb = (src[3] == 0 || outside) ? fill : src;
      std::copy_n(rgb, bands, img.pixels.begin() + std::ptrdiff_t(i * size_t(bands)));
    }
  }
  return img;
}

/// Decodes an encoded image held in memory to 8-bit RGB: to_rgb(open_image(...)), i.e.
/// PIL's `Image.open(...).convert("RGB")` (JPEG within a few levels; see open_image).
/// Throws as open_image does.
inline Image decode_image(const uint8_t* data, size_t size, const std::string& name,
                          int64_t max_pixels = kMaxImagePixels) {
  return to_rgb(open_image(data, size, name, max_pixels));
}

namespace detail {

inline std::vector<uint8_t> read_image_file(const std::string& path) {
  std::error_code ec;
  GA_CHECK(!std::filesystem::is_directory(path, ec), IOError, "image: cannot read '", path, "': is a directory");
  std::ifstream in(path, std::ios::binary | std::ios::ate);
  GA_CHECK(in.good(), IOError, "image: cannot open '", path, "'");
  const std::streamoff end = in.tellg();
  GA_CHECK(end >= 0, IOError, "image: cannot read '", path, "' (not a regular file?)");
  std::vector<uint8_t> bytes(static_cast<size_t>(end));
  in.seekg(0);
  if (end > 0) in.read(reinterpret_cast<char*>(bytes.data()), end);
  GA_CHECK(in.good() || (end == 0), IOError, "image: cannot read '", path, "'");
  return bytes;
}

}  // namespace detail

/// Reads the image file at `path` and decodes it in PIL's mode (see open_image).
/// Throws IOError naming `path` if it cannot be opened or read, or does not decode.
inline PilImage open_image(const std::string& path, int64_t max_pixels = kMaxImagePixels) {
  const std::vector<uint8_t> bytes = detail::read_image_file(path);
  return open_image(bytes.data(), bytes.size(), path, max_pixels);
}

/// Reads and decodes the image file at `path` to RGB (see decode_image).
/// Throws IOError naming `path` if it cannot be opened or read, or does not decode.
inline Image load_image(const std::string& path, int64_t max_pixels = kMaxImagePixels) {
  return to_rgb(open_image(path, max_pixels));
}

}  // namespace ga::io
