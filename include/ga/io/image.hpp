// Image decoding: PNG, JPEG, BMP, GIF (first frame) and binary PNM (P5/P6) to 8-bit RGB,
// with the pixel values PIL's `Image.open(path).convert("RGB")` gives, so that CLIP's
// preprocessing (ga/io/preprocess.hpp) can match the Python pipeline exactly.
// Decoding is stb_image's (a system dependency, included as <stb_image.h>); the places
// where stb and PIL disagree are corrected here and named in decode_image's contract.
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

/// The bytes stb should decode for a PNG: stb 2.27 memcpy's into a null buffer when a
/// zero-length IDAT chunk comes before any image data (undefined behaviour, though zero
/// bytes are copied). Such chunks carry nothing, so a copy without them is returned; an
/// empty vector when there are none. stb does not check CRCs, so nothing else changes.
inline std::vector<uint8_t> png_without_empty_idat(const uint8_t* d, size_t size) {
  std::vector<uint8_t> out;
  size_t pos = 8, copied = 0;
  while (size - pos >= 12) {
    const size_t len = (size_t(d[pos]) << 24) | (size_t(d[pos + 1]) << 16) | (size_t(d[pos + 2]) << 8) | d[pos + 3];
    if (len > size - pos - 12) break;
    if (len == 0 && std::equal(d + pos + 4, d + pos + 8, "IDAT")) {
      out.insert(out.end(), d + copied, d + pos);
      copied = pos + 12;
    }
    pos += 12 + len;
  }
  if (copied > 0) out.insert(out.end(), d + copied, d + size);
  return out;
}

}  // namespace detail

/// Decodes an encoded image held in memory to 8-bit RGB; `name` (a path, usually) is
/// only used in error messages.
/// Ensures the pixels equal PIL's `Image.open(...).convert("RGB")`:
///  - grey is replicated, alpha is dropped (not composited), palettes are expanded;
///  - 16-bit RGB / RGBA / grey+alpha PNG keep the high byte of each sample (PIL's
///    "RGB;16B"-style unpacking; stb does the same);
///  - 16-bit grey PNG: PIL opens it as mode "I;16" and convert("RGB") clamps each value
///    to 255 (it does not rescale), so 1000 becomes 255; we do the same;
///  - PNM with maxval != 255: round(v / maxval * 255) (half to even), capped at 255; for
///    16-bit grey PNM PIL scales to 0..65535 first and then clamps at 255, reproduced;
///  - GIF: first frame; pixels of the transparent index, and pixels outside the first
///    frame's rectangle, get PIL's colour (palette entry of the transparent index, or of
///    index 0), where stb would leave them black;
///  - JPEG: stb's decoder (IDCT and chroma upsampling) is not libjpeg's, so values
///    differ from PIL by a few levels; no EXIF rotation is applied (PIL does not either).
/// Throws IOError naming `name` on empty, corrupt, truncated, unsupported (TGA, PSD,
/// plain-text PNM, 1-bit PBM, ...) data, and on images with more than `max_pixels` pixels.
inline Image decode_image(const uint8_t* data, size_t size, const std::string& name,
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
    // maxval > 255 (mode "I"; P5 with maxval 65535 is read as stored); convert("RGB")
    // then clamps mode "I" values to 255.
    const bool grey_wide = hdr.channels == 1 && hdr.maxval > 255;
    const double out_max = grey_wide ? 65535.0 : 255.0;
    const uint8_t* src = data + hdr.data_offset;
    Image img;
    img.width = int(hdr.width);
    img.height = int(hdr.height);
    img.pixels.resize(npix * 3);
    for (size_t i = 0; i < npix; ++i) {
      for (int c = 0; c < 3; ++c) {
        const size_t s = i * size_t(hdr.channels) + size_t(hdr.channels == 1 ? 0 : c);
        const uint32_t v = bytes_per_sample == 2 ? (uint32_t(src[2 * s]) << 8) | src[2 * s + 1] : src[s];
        double scaled = double(v);
        if (hdr.maxval != 255 && !(grey_wide && hdr.maxval == 65535))
          scaled = std::min(out_max, std::nearbyint(double(v) / double(hdr.maxval) * out_max));
        img.pixels[i * 3 + size_t(c)] = uint8_t(std::min(scaled, 255.0));
      }
    }
    return img;
  }

  if (detail::is_jpeg(data, size)) {
    const std::string why = detail::jpeg_structure_error(data, size);
    GA_CHECK(why.empty(), IOError, "image: cannot decode '", name, "': corrupt JPEG (", why, ")");
  }
  std::vector<uint8_t> png_copy;
  if (detail::is_png(data, size)) png_copy = detail::png_without_empty_idat(data, size);
  if (!png_copy.empty()) data = png_copy.data(), size = png_copy.size(), len = int(size);

  int w = 0, h = 0, comp = 0;
  if (!stbi_info_from_memory(data, len, &w, &h, &comp))
    detail::throw_decode_error(name, "not a supported image (PNG, JPEG, BMP, GIF, binary PNM) or corrupt header");
  GA_CHECK(w > 0 && h > 0, IOError, "image: cannot decode '", name, "': zero-size image ", w, "x", h);
  GA_CHECK(int64_t(w) * int64_t(h) <= max_pixels, IOError, "image: '", name, "' is too large (", w, "x", h,
           " pixels; the limit is ", max_pixels, ")");

  GA_CHECK(!detail::starts_with(data, size, "BM") || detail::bmp_data_complete(data, size), IOError,
           "image: cannot decode '", name, "': truncated BMP data");

  Image img;
  img.width = w;
  img.height = h;
  img.channels = 3;
  const size_t npix = size_t(w) * size_t(h);
  int got_w = 0, got_h = 0, got_comp = 0;
  auto check_size = [&](const void* p) {
    if (!p) detail::throw_decode_error(name, "corrupt or truncated data");
    GA_CHECK(got_w == w && got_h == h, IOError, "image: cannot decode '", name, "': inconsistent size");
  };

  if (comp == 1 && detail::is_png(data, size) && stbi_is_16_bit_from_memory(data, len)) {
    // PIL opens 16-bit grey PNG as mode "I;16" and convert("RGB") clamps each value to
    // 255 (no rescaling), where stb would keep the high byte.
    std::unique_ptr<stbi_us, detail::StbFree> raw(stbi_load_16_from_memory(data, len, &got_w, &got_h, &got_comp, 1));
    check_size(raw.get());
    img.pixels.resize(npix * 3);
    for (size_t i = 0; i < npix; ++i)
      std::fill_n(img.pixels.begin() + std::ptrdiff_t(i * 3), 3, uint8_t(std::min<int>(raw.get()[i], 255)));
    return img;
  }

  const bool gif = detail::starts_with(data, size, "GIF8");
  std::unique_ptr<stbi_uc, detail::StbFree> raw(
      stbi_load_from_memory(data, len, &got_w, &got_h, &got_comp, gif ? 4 : 3));
  check_size(raw.get());
  img.pixels.resize(npix * 3);
  if (!gif) {
    std::copy(raw.get(), raw.get() + npix * 3, img.pixels.begin());
    return img;
  }
  const detail::GifFirstFrame frame = detail::gif_first_frame(data, size);
  uint8_t fill[3] = {0, 0, 0};
  if (frame.ok && size_t(frame.fill_index) * 3 + 3 <= frame.palette.size())
    std::copy_n(frame.palette.begin() + frame.fill_index * 3, 3, fill);
  for (int y = 0; y < h; ++y) {
    for (int x = 0; x < w; ++x) {
      const size_t i = size_t(y) * size_t(w) + size_t(x);
      const uint8_t* src = raw.get() + i * 4;
      const bool outside = frame.ok && (x < frame.left || y < frame.top || x >= frame.left + frame.width ||
                                        y >= frame.top + frame.height);
      const uint8_t* rgb = (src[3] == 0 || outside) ? fill : src;
      std::copy_n(rgb, 3, img.pixels.begin() + i * 3);
    }
  }
  return img;
}

/// Reads and decodes the image file at `path` (see decode_image for the pixel contract).
/// Throws IOError naming `path` if it cannot be opened or read, or does not decode.
inline Image load_image(const std::string& path, int64_t max_pixels = kMaxImagePixels) {
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
  return decode_image(bytes.data(), bytes.size(), path, max_pixels);
}

}  // namespace ga::io
