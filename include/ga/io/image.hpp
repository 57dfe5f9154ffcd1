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
  const int len = int(size);
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
