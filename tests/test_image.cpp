// Image decoding and CLIP preprocessing against PIL: the fixtures in
// tests/fixtures/images (made by tests/fixtures/gen_image_fixtures.py, see cases.txt)
// hold PIL's modes and decoded RGB, and the resized, cropped and normalised outputs of
// OpenAI's pipeline, which resizes in the image's own PIL mode before converting to RGB;
// PNG, BMP, GIF and PNM inputs must match exactly, JPEG within a stated tolerance. Bad
// files must give IOError.
#include <doctest/doctest.h>

#include <cmath>
#include <cstdio>
#include <cstring>
#include <fstream>
#include <iterator>
#include <map>
#include <sstream>
#include <string>
#include <vector>

#include "ga/io/image.hpp"
#include "ga/io/preprocess.hpp"

#ifndef GA_SOURCE_DIR
#error "GA_SOURCE_DIR must name the repository root (tests/CMakeLists.txt defines it)"
#endif

namespace {

const std::string kImageDir = std::string(GA_SOURCE_DIR) + "/tests/fixtures/images/";

std::vector<uint8_t> read_bytes(const std::string& path) {
  std::ifstream in(path, std::ios::binary);
  REQUIRE_MESSAGE(in.good(), "missing fixture ", path);
  return std::vector<uint8_t>(std::istreambuf_iterator<char>(in), std::istreambuf_iterator<char>());
}

// A numpy .npy array (C order, '|u1' or '<f4'), written by the fixture script.
struct Npy {
  std::string descr;
  std::vector<int64_t> shape;
  std::vector<uint8_t> data;
  size_t count() const {
    size_t n = 1;
    for (int64_t d : shape) n *= size_t(d);
    return n;
  }
};

Npy read_npy(const std::string& path) {
  std::vector<uint8_t> b = read_bytes(path);
  REQUIRE(b.size() > 10);
  REQUIRE(std::memcmp(b.data(), "\x93NUMPY", 6) == 0);
  const size_t header_len = b[6] == 1 ? size_t(b[8]) | (size_t(b[9]) << 8) : size_t(b[8]) | (size_t(b[9]) << 8) |
                                                                                  (size_t(b[10]) << 16) |
                                                                                  (size_t(b[11]) << 24);
  const size_t start = b[6] == 1 ? 10 : 12;
  const std::string header(b.begin() + std::ptrdiff_t(start), b.begin() + std::ptrdiff_t(start + header_len));
  REQUIRE(header.find("'fortran_order': False") != std::string::npos);
  Npy out;
  const size_t d = header.find("'descr': '") + 10;
  out.descr = header.substr(d, header.find('\'', d) - d);
  const size_t s = header.find('(', header.find("'shape'")) + 1;
  std::stringstream dims(header.substr(s, header.find(')', s) - s));
  std::string tok;
  while (std::getline(dims, tok, ','))
    if (tok.find_first_not_of(' ') != std::string::npos) out.shape.push_back(std::stoll(tok));
  out.data.assign(b.begin() + std::ptrdiff_t(start + header_len), b.end());
  return out;
}

// PIL's uint8 HxWx3 reference as an Image.
ga::io::Image reference_image(const std::string& file) {
  ga::io::Image img;
  if (file.size() > 4 && file.substr(file.size() - 4) == ".png") {
    // 224-pixel references are PNGs written by PIL (RGB, 8-bit; exact decoding of such
    // files is itself checked by the decode cases).
    return ga::io::load_image(kImageDir + file);
  }
  Npy n = read_npy(kImageDir + file);
  REQUIRE(n.descr == "|u1");
  REQUIRE(n.shape.size() == 3);
  REQUIRE(n.shape[2] == 3);
  img.height = int(n.shape[0]);
  img.width = int(n.shape[1]);
  img.pixels = n.data;
  REQUIRE(img.pixels.size() == n.count());
  return img;
}

struct Diff {
  int max_abs = 0;
  double mean_abs = 0;
  size_t mismatches = 0;
};

Diff compare(const ga::io::Image& got, const ga::io::Image& want) {
  REQUIRE(got.width == want.width);
  REQUIRE(got.height == want.height);
  REQUIRE(got.channels == 3);
  REQUIRE(got.pixels.size() == want.pixels.size());
  Diff d;
  double sum = 0;
  for (size_t i = 0; i < got.pixels.size(); ++i) {
    const int e = std::abs(int(got.pixels[i]) - int(want.pixels[i]));
    d.max_abs = std::max(d.max_abs, e);
    d.mismatches += e != 0;
    sum += e;
  }
  d.mean_abs = got.pixels.empty() ? 0.0 : sum / double(got.pixels.size());
  return d;
}

std::vector<std::vector<std::string>> cases(const std::string& kind) {
  std::ifstream in(kImageDir + "cases.txt");
  REQUIRE_MESSAGE(in.good(), "missing ", kImageDir, "cases.txt (run tests/fixtures/gen_image_fixtures.py)");
  std::vector<std::vector<std::string>> out;
  std::string line;
  while (std::getline(in, line)) {
    std::istringstream ss(line);
    std::vector<std::string> f{std::istream_iterator<std::string>(ss), std::istream_iterator<std::string>()};
    if (!f.empty() && f[0] == kind) out.push_back(f);
  }
  return out;
}

// The message of the IOError that decoding `bytes` as `name` throws ("" if none).
std::string decode_error(const std::vector<uint8_t>& bytes, const std::string& name) {
  try {
    (void)ga::io::decode_image(bytes.data(), bytes.size(), name);
  } catch (const ga::IOError& e) {
    return e.what();
  }
  return "";
}

}  // namespace

TEST_CASE("image: decode matches PIL convert(\"RGB\") exactly (PNG 1/2/8/16-bit, BMP, GIF, PNM)") {
  const auto list = cases("decode");
  CHECK(list.size() >= 25);
  for (const auto& c : list) {
    CAPTURE(c[1]);
    const ga::io::Image got = ga::io::load_image(kImageDir + c[1]);
    const Diff d = compare(got, reference_image(c[2]));
    CHECK(d.mismatches == 0);
  }
}

TEST_CASE("image: JPEG decode is within tolerance of PIL (libjpeg)") {
  // stb's IDCT and chroma upsampling are not libjpeg-turbo's: a few levels apart at most
  // per sample, well under one level on average.
  const auto list = cases("jpeg");
  CHECK(list.size() >= 4);
  for (const auto& c : list) {
    CAPTURE(c[1]);
    const Diff d = compare(ga::io::load_image(kImageDir + c[1]), reference_image(c[2]));
    MESSAGE(c[1], ": max |diff| ", d.max_abs, ", mean |diff| ", d.mean_abs);
    CHECK(d.max_abs <= 8);
    CHECK(d.mean_abs <= 1.0);
  }
}

TEST_CASE("image: open_image gives the mode PIL's Image.open gives") {
  const auto list = cases("mode");
  CHECK(list.size() >= 40);
  for (const auto& c : list) {
    CAPTURE(c[1]);
    const ga::io::PilImage img = ga::io::open_image(kImageDir + c[1]);
    CHECK(std::string(ga::io::pil_mode_name(img.mode)) == c[2]);
    const size_t n = size_t(img.width) * size_t(img.height);
    CHECK(img.pixels.size() == n * size_t(ga::io::pil_bands(img.mode)));
    CHECK(img.values.size() == (img.mode == ga::io::PilMode::I ? n : 0));
  }
}

namespace {

// True for the modes where resizing in the image's mode and resizing its RGB conversion
// agree (PIL resizes both with the same uint8 bicubic): the convert-first Image API must
// then give the same pixels as the mode-aware one.
bool rgb_like(const std::string& file) {
  const ga::io::PilMode m = ga::io::open_image(kImageDir + file).mode;
  return m == ga::io::PilMode::RGB || m == ga::io::PilMode::L;
}

}  // namespace

TEST_CASE("image: bicubic resize matches PIL Image.resize in the image's mode exactly (up, down, extreme ratios)") {
  const auto list = cases("resize");
  CHECK(list.size() >= 18);
  for (const auto& c : list) {
    CAPTURE(c[1]);
    CAPTURE(c[2]);
    CAPTURE(c[3]);
    const int w = std::stoi(c[2]), h = std::stoi(c[3]);
    const ga::io::Image want = reference_image(c[4]);
    const ga::io::PilImage got = ga::io::resize_bicubic(ga::io::open_image(kImageDir + c[1]), w, h);
    CHECK(got.width == w);
    CHECK(got.height == h);
    CHECK(compare(ga::io::to_rgb(got), want).mismatches == 0);
    if (rgb_like(c[1]))
      CHECK(compare(ga::io::resize_bicubic(ga::io::load_image(kImageDir + c[1]), w, h), want).mismatches == 0);
  }
}

TEST_CASE("image: resize_shorter_side matches torchvision Resize(size) on PIL exactly") {
  const auto list = cases("shorter");
  CHECK(list.size() >= 30);
  for (const auto& c : list) {
    CAPTURE(c[1]);
    CAPTURE(c[2]);
    const int size = std::stoi(c[2]);
    const ga::io::Image want = reference_image(c[5]);
    const ga::io::Image got = ga::io::to_rgb(ga::io::resize_shorter_side(ga::io::open_image(kImageDir + c[1]), size));
    CHECK(got.width == std::stoi(c[3]));
    CHECK(got.height == std::stoi(c[4]));
    CHECK(compare(got, want).mismatches == 0);
    if (rgb_like(c[1]))
      CHECK(compare(ga::io::resize_shorter_side(ga::io::load_image(kImageDir + c[1]), size), want).mismatches == 0);
  }
}

TEST_CASE("image: Resize + CenterCrop + convert(\"RGB\") matches OpenAI's pipeline exactly in every mode") {
  const auto list = cases("crop");
  CHECK(list.size() >= 65);
  for (const auto& c : list) {
    CAPTURE(c[1]);
    CAPTURE(c[2]);
    const int size = std::stoi(c[2]);
    const ga::io::Image want = reference_image(c[3]);
    const ga::io::Image got = ga::io::to_rgb(
        ga::io::center_crop(ga::io::resize_shorter_side(ga::io::open_image(kImageDir + c[1]), size), size));
    const Diff d = compare(got, want);
    CHECK(d.mismatches == 0);
    if (rgb_like(c[1])) {
      const ga::io::Image rgb_first =
          ga::io::center_crop(ga::io::resize_shorter_side(ga::io::load_image(kImageDir + c[1]), size), size);
      CHECK(compare(rgb_first, want).mismatches == 0);
    }
  }
}

TEST_CASE("image: converting to RGB first would miss the references for P, 1, LA, RGBA and I images") {
  // The fixtures can tell the two orders apart: for each mode whose resize is not plain
  // uint8 bicubic, some crop case differs when the image is converted to RGB first.
  std::map<std::string, size_t> differing;
  for (const auto& c : cases("crop")) {
    const ga::io::PilImage img = ga::io::open_image(kImageDir + c[1]);
    if (img.mode == ga::io::PilMode::RGB || img.mode == ga::io::PilMode::L) continue;
    const int size = std::stoi(c[2]);
    const ga::io::Image rgb_first = ga::io::center_crop(ga::io::resize_shorter_side(ga::io::to_rgb(img), size), size);
    differing[ga::io::pil_mode_name(img.mode)] += compare(rgb_first, reference_image(c[3])).mismatches > 0;
  }
  for (const char* mode : {"P", "1", "LA", "RGBA", "I"}) {
    CAPTURE(mode);
    CHECK(differing[mode] >= 1);
  }
}

TEST_CASE("image: preprocess_clip matches OpenAI's _transform (ToTensor + Normalize) within 1e-6") {
  const auto list = cases("norm");
  CHECK(list.size() >= 13);
  for (const auto& c : list) {
    CAPTURE(c[1]);
    CAPTURE(c[2]);
    const int size = std::stoi(c[2]);
    const Npy ref = read_npy(kImageDir + c[3]);
    REQUIRE(ref.descr == "<f4");
    REQUIRE(ref.count() == size_t(3 * size * size));
    const float* want = reinterpret_cast<const float*>(ref.data.data());
    auto worst_diff = [&](const ga::Tensor& t) {
      REQUIRE(t.dtype() == ga::DType::f32);
      REQUIRE(t.shape() == ga::Shape{3, size, size});
      const float* got = t.data_ptr<float>();
      float worst = 0;
      for (size_t i = 0; i < ref.count(); ++i) worst = std::max(worst, std::fabs(got[i] - want[i]));
      return worst;
    };
    const ga::io::PilImage img = ga::io::open_image(kImageDir + c[1]);
    CHECK(worst_diff(ga::io::preprocess_clip(img, size)) <= 1e-6f);
    std::vector<float> into(size_t(3 * size * size));
    ga::io::preprocess_clip_into(img, size, into.data());
    CHECK(std::memcmp(into.data(), ga::io::preprocess_clip(img, size).data_ptr<float>(), into.size() * 4) == 0);
    if (rgb_like(c[1])) CHECK(worst_diff(ga::io::preprocess_clip(ga::io::load_image(kImageDir + c[1]), size)) <= 1e-6f);
  }
}

TEST_CASE("image: center crop uses Python's round-half-even offsets") {
  ga::io::Image img;
  img.width = 9;
  img.height = 4;
  for (int y = 0; y < 4; ++y)
    for (int x = 0; x < 9; ++x)
      for (int ch = 0; ch < 3; ++ch) img.pixels.push_back(uint8_t(10 * x + y));
  // w - size = 5: round(2.5) = 2 (not 3); h - size = 0.
  ga::io::Image c = ga::io::center_crop(img, 4);
  CHECK(c.at(0, 0, 0) == 20);
  // w - size = 6 -> 3; h - size = 1: round(0.5) = 0.
  c = ga::io::center_crop(img, 3);
  CHECK(c.at(0, 0, 0) == 30);
  // w - size = 7: round(3.5) = 4; h - size = 2 -> 1.
  c = ga::io::center_crop(img, 2);
  CHECK(c.at(0, 0, 0) == 41);
  // w - size = 8 -> 4; h - size = 3: round(1.5) = 2.
  c = ga::io::center_crop(img, 1);
  CHECK(c.at(0, 0, 0) == 42);
}

TEST_CASE("image: 16-bit grey PNG opens as mode I with its raw values; RGB clamps them to 255") {
  // Not a rescale: PIL keeps the 16-bit values and clips on conversion. Checked on the
  // fixture whose first row holds 0, 1, 254, 255, 256, 65535.
  const ga::io::PilImage raw = ga::io::open_image(kImageDir + "grey16.png");
  REQUIRE(raw.mode == ga::io::PilMode::I);
  const int32_t values[6] = {0, 1, 254, 255, 256, 65535};
  for (int x = 0; x < 6; ++x) CHECK(raw.values[size_t(x)] == values[x]);
  const ga::io::Image img = ga::io::load_image(kImageDir + "grey16.png");
  const int want[6] = {0, 1, 254, 255, 255, 255};
  for (int x = 0; x < 6; ++x) CHECK(img.at(x, 0, 0) == want[x]);
}

TEST_CASE("image: resizing to the same size changes nothing, in every mode (no premultiplication round trip)") {
  // PIL's resize returns a copy when the size is unchanged (and torchvision does not call
  // it): RGBA pixels with partial alpha must keep colours a premultiply round trip loses.
  for (const std::string name : {"rgba8_edges.png", "greyalpha8_edges.png", "palette8.png", "grey16_edges.png"}) {
    CAPTURE(name);
    const ga::io::PilImage img = ga::io::open_image(kImageDir + name);
    const ga::io::PilImage same = ga::io::resize_bicubic(img, img.width, img.height);
    CHECK(same.pixels == img.pixels);
    CHECK(same.values == img.values);
  }
}

TEST_CASE("image: decode_image is open_image then to_rgb") {
  for (const std::string name : {"palette8_trns.png", "rgba16_edges.png", "greyalpha16.png", "grey16.pgm",
                                 "transparent.gif", "greyramp.gif", "bilevel1.bmp", "rgb420.jpg"}) {
    CAPTURE(name);
    const std::vector<uint8_t> b = read_bytes(kImageDir + name);
    const ga::io::Image a = ga::io::decode_image(b.data(), b.size(), name);
    const ga::io::Image c = ga::io::to_rgb(ga::io::open_image(b.data(), b.size(), name));
    CHECK(a.width == c.width);
    CHECK(a.height == c.height);
    CHECK(a.pixels == c.pixels);
  }
}

TEST_CASE("image: unreadable, empty, corrupt, truncated and non-image files give IOError naming the file") {
  const std::string missing = kImageDir + "does_not_exist.png";
  CHECK_THROWS_WITH_AS(ga::io::load_image(missing), doctest::Contains("does_not_exist.png"), ga::IOError);
  CHECK_THROWS_AS(ga::io::load_image(kImageDir), ga::IOError);

  CHECK(decode_error({}, "empty.png").find("empty.png") != std::string::npos);
  CHECK(decode_error({}, "empty.png").find("empty") != std::string::npos);

  const std::string text = "hello, this is not an image\n";
  const std::string err = decode_error(std::vector<uint8_t>(text.begin(), text.end()), "notes.txt");
  CHECK(err.find("notes.txt") != std::string::npos);

  for (const std::string name : {"rgb8.png", "rgb420.jpg", "rgb24.bmp", "plain.gif", "rgb.ppm", "grey16.png",
                                 "grey_maxval1000.pgm"}) {
    CAPTURE(name);
    const std::vector<uint8_t> full = read_bytes(kImageDir + name);
    // Truncated at several points: header only, mid-data.
    for (size_t keep : {size_t(3), size_t(12), full.size() / 3}) {
      CAPTURE(keep);
      std::vector<uint8_t> cut(full.begin(), full.begin() + std::ptrdiff_t(keep));
      const std::string e = decode_error(cut, std::string("cut_") + name);
      // JPEG and GIF decoders in stb tolerate missing data after the header (they
      // return the partial image, as PIL does with LOAD_TRUNCATED_IMAGES); anything
      // else must be an error naming the file.
      const bool lenient = (name.find(".jpg") != std::string::npos || name.find(".gif") != std::string::npos) &&
                           keep == full.size() / 3;
      if (!lenient) CHECK(e.find(std::string("cut_") + name) != std::string::npos);
    }
  }
  // A PNG whose IDAT is corrupted (bytes flipped): stb's zlib or CRC-free parsing must
  // report it rather than crash.
  std::vector<uint8_t> png = read_bytes(kImageDir + "rgb8.png");
  for (size_t i = 60; i < png.size() && i < 400; ++i) png[i] ^= 0x5A;
  CHECK(decode_error(png, "flipped.png").find("flipped.png") != std::string::npos);
}

TEST_CASE("image: images over the pixel limit are rejected before decoding") {
  const std::vector<uint8_t> bytes = read_bytes(kImageDir + "rgb8.png");  // 61 x 47
  CHECK_NOTHROW(ga::io::decode_image(bytes.data(), bytes.size(), "ok.png", 61 * 47));
  CHECK_THROWS_WITH_AS(ga::io::decode_image(bytes.data(), bytes.size(), "big.png", 61 * 47 - 1),
                       doctest::Contains("big.png"), ga::IOError);
  // A header claiming 65535 x 65535 (no data): rejected by the limit, no allocation.
  std::vector<uint8_t> pgm;
  const std::string header = "P5 65535 65535 255\n";
  pgm.assign(header.begin(), header.end());
  CHECK_THROWS_WITH_AS(ga::io::decode_image(pgm.data(), pgm.size(), "huge.pgm"), doctest::Contains("huge.pgm"),
                       ga::IOError);
}

TEST_CASE("image: zero and negative sizes give ValueError") {
  const ga::io::Image img = ga::io::load_image(kImageDir + "rgb8.png");
  CHECK_THROWS_AS(ga::io::resize_shorter_side(img, 0), ga::ValueError);
  CHECK_THROWS_AS(ga::io::resize_shorter_side(img, -3), ga::ValueError);
  CHECK_THROWS_AS(ga::io::resize_bicubic(img, 0, 5), ga::ValueError);
  CHECK_THROWS_AS(ga::io::resize_bicubic(img, 5, 0), ga::ValueError);
  CHECK_THROWS_AS(ga::io::center_crop(img, 0), ga::ValueError);
  CHECK_THROWS_AS(ga::io::center_crop(img, 48), ga::ValueError);  // taller than the image
  CHECK_THROWS_AS(ga::io::preprocess_clip(img, 0), ga::ValueError);
  CHECK_THROWS_AS(ga::io::resize_shorter_side(ga::io::Image{}, 4), ga::ValueError);
  const ga::io::PilImage p = ga::io::open_image(kImageDir + "palette8.png");  // 37 x 29
  CHECK_THROWS_AS(ga::io::resize_shorter_side(p, 0), ga::ValueError);
  CHECK_THROWS_AS(ga::io::resize_bicubic(p, 0, 5), ga::ValueError);
  CHECK_THROWS_AS(ga::io::center_crop(p, 30), ga::ValueError);
  CHECK_THROWS_AS(ga::io::preprocess_clip(p, 0), ga::ValueError);
  CHECK_THROWS_AS(ga::io::resize_shorter_side(ga::io::PilImage{}, 4), ga::ValueError);
}

namespace {

// Offset of the first segment with marker `m` (0xFF m ...) at or after `from`, found by
// walking the segments of a well-formed fixture (entropy-coded data is skipped).
size_t jpeg_segment(const std::vector<uint8_t>& b, uint8_t m, size_t from = 2) {
  size_t i = 2;
  while (i + 4 <= b.size()) {
    REQUIRE(b[i] == 0xFF);
    if (b[i + 1] == m && i >= from) return i;
    const bool sos = b[i + 1] == 0xDA;
    i += 2 + ((size_t(b[i + 2]) << 8) | b[i + 3]);
    if (sos)
      while (i + 1 < b.size() && !(b[i] == 0xFF && b[i + 1] != 0 && (b[i + 1] < 0xD0 || b[i + 1] > 0xD7))) ++i;
  }
  FAIL("fixture has no segment 0xFF", int(m));
  return 0;
}

}  // namespace

TEST_CASE("image: JPEG fixtures decode exactly as stb decodes them (the header walk changes nothing)") {
  for (const std::string name : {"grey.jpg", "rgb420.jpg", "rgb444.jpg", "progressive.jpg"}) {
    CAPTURE(name);
    const std::vector<uint8_t> b = read_bytes(kImageDir + name);
    int w = 0, h = 0, c = 0;
    stbi_uc* raw = stbi_load_from_memory(b.data(), int(b.size()), &w, &h, &c, 3);
    REQUIRE(raw != nullptr);
    const std::vector<uint8_t> want(raw, raw + size_t(w) * size_t(h) * 3);
    stbi_image_free(raw);
    const ga::io::Image got = ga::io::decode_image(b.data(), b.size(), name);
    CHECK(got.width == w);
    CHECK(got.height == h);
    CHECK(got.pixels == want);
  }
}

TEST_CASE("image: malformed JPEG headers stb would mis-handle give IOError naming the file") {
  const std::vector<uint8_t> good = read_bytes(kImageDir + "rgb420.jpg");
  const size_t dht = jpeg_segment(good, 0xC4);
  auto expect = [](const std::vector<uint8_t>& bytes, const std::string& name, const std::string& why) {
    const std::string e = decode_error(bytes, name);
    CAPTURE(e);
    CHECK(e.find(name) != std::string::npos);
    CHECK(e.find(why) != std::string::npos);
  };
  {  // DHT counts summing to more than 256 (stb would write past its 257-entry table)
    std::vector<uint8_t> b = good;
    b[dht + 4 + 16] = 250;  // 16-bit codes: the 16 counts now sum past 256
    expect(b, "dht_count.jpg", "codes (at most 256)");
  }
  {  // table class 2 / table id 5
    std::vector<uint8_t> b = good;
    b[dht + 4] = 0x20;
    expect(b, "dht_class.jpg", "DHT table class 2");
    b[dht + 4] = 0x05;
    expect(b, "dht_id.jpg", "DHT table class 0 id 5");
  }
  {  // a DHT whose codes run past its segment
    std::vector<uint8_t> b = good;
    b[dht + 4 + 1] += 3;
    expect(b, "dht_overrun.jpg", "truncated DHT table");
  }
  {  // a segment length pointing past the end of the file / shorter than its own length field
    std::vector<uint8_t> b(good.begin(), good.begin() + std::ptrdiff_t(dht + 40));
    expect(b, "cut_dht.jpg", "truncated segment");
    b = good;
    b[dht + 2] = 0, b[dht + 3] = 1;
    expect(b, "short_len.jpg", "segment length 1");
  }
  {  // a scan selecting Huffman tables no DHT defined (stb would decode with garbage tables)
    std::vector<uint8_t> b = good;
    const size_t sos = jpeg_segment(good, 0xDA);
    b[sos + 6] = 0x33;  // first component: DC table 3, AC table 3
    expect(b, "undefined_huffman.jpg", "undefined DC Huffman table 3");
  }
  {  // a frame component using a quantisation table no DQT defined
    std::vector<uint8_t> b = good;
    const size_t sof = jpeg_segment(good, 0xC0);
    b[sof + 4 + 8] = 2;  // first component: table 2
    expect(b, "undefined_quant.jpg", "undefined quantisation table 2");
  }
  {  // progressive: a bad DHT between scans is found too (the walk skips scan data)
    const std::vector<uint8_t> prog = read_bytes(kImageDir + "progressive.jpg");
    const size_t late = jpeg_segment(prog, 0xC4, jpeg_segment(prog, 0xDA));
    std::vector<uint8_t> b = prog;
    b[late + 4 + 16] = 255;
    expect(b, "late_dht.jpg", "codes (at most 256)");
  }
}

TEST_CASE("image: a PNG with an empty IDAT chunk before its data decodes like the original") {
  const std::vector<uint8_t> good = read_bytes(kImageDir + "rgb8.png");
  size_t pos = 8;  // first IDAT chunk
  while (std::string(good.begin() + std::ptrdiff_t(pos + 4), good.begin() + std::ptrdiff_t(pos + 8)) != "IDAT")
    pos += 12 + ((size_t(good[pos]) << 24) | (size_t(good[pos + 1]) << 16) | (size_t(good[pos + 2]) << 8) | good[pos + 3]);
  std::vector<uint8_t> b(good.begin(), good.begin() + std::ptrdiff_t(pos));
  const uint8_t empty_idat[12] = {0, 0, 0, 0, 'I', 'D', 'A', 'T', 0x35, 0xAF, 0x06, 0x1E};
  b.insert(b.end(), empty_idat, empty_idat + 12);
  b.insert(b.end(), good.begin() + std::ptrdiff_t(pos), good.end());
  const ga::io::Image want = ga::io::decode_image(good.data(), good.size(), "rgb8.png");
  const ga::io::Image got = ga::io::decode_image(b.data(), b.size(), "empty_idat.png");
  CHECK(got.width == want.width);
  CHECK(got.height == want.height);
  CHECK(got.pixels == want.pixels);
}

TEST_CASE("image: a PNG chunk claiming more bytes than the file holds is refused before decoding") {
  // Found by fuzz_image: an IDAT chunk claiming up to 1 GiB made stb grow its buffer to that
  // size before reading; the chunk walk now refuses it, naming the file and the chunk.
  const std::vector<uint8_t> good = read_bytes(kImageDir + "rgb8.png");
  size_t pos = 8;  // first IDAT chunk
  while (std::string(good.begin() + std::ptrdiff_t(pos + 4), good.begin() + std::ptrdiff_t(pos + 8)) != "IDAT")
    pos += 12 + ((size_t(good[pos]) << 24) | (size_t(good[pos + 1]) << 16) | (size_t(good[pos + 2]) << 8) | good[pos + 3]);
  std::vector<uint8_t> b = good;
  b[pos] = 0x3f, b[pos + 1] = 0xff, b[pos + 2] = 0xff, b[pos + 3] = 0xff;
  const std::string e = decode_error(b, "huge_idat.png");
  CHECK(e.find("huge_idat.png") != std::string::npos);
  CHECK(e.find("corrupt PNG") != std::string::npos);
  CHECK(e.find("claims 1073741823 bytes") != std::string::npos);
}
