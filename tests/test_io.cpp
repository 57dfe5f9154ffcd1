// io tests: the strict JSON parser, and safetensors reading and writing. Expected values come
// from hand-written literals, from bit patterns, or from the reference Python implementation
// (tests/fixtures/reference.safetensors + reference_expected.json, made by
// tests/fixtures/gen_safetensors_fixtures.py), never from our own writer alone.
#include <doctest/doctest.h>
#include <dirent.h>
#include <stdlib.h>
#include <unistd.h>

#include <algorithm>
#include <cmath>
#include <cstdint>
#include <cstdio>
#include <cstring>
#include <fstream>
#include <limits>
#include <map>
#include <memory>
#include <sstream>
#include <string>
#include <vector>

#include <ga/ga.hpp>

#include "test_util.hpp"

#ifndef GA_SOURCE_DIR
#error "GA_SOURCE_DIR must name the repository root (tests/CMakeLists.txt defines it)"
#endif

using namespace ga;
using ga::io::Json;
using ga::io::parse_json;
using ga::io::SafetensorsFile;

namespace {

struct TempDir : test::TempDir {
  TempDir() : test::TempDir("ga_io_test") {}
};


/// A safetensors file by hand: 8-byte little-endian length, header text, data.
std::string st_file(const std::string& header, const std::string& data, uint64_t claimed_len) {
  std::string out(8, '\0');
  for (int i = 0; i < 8; ++i) out[i] = static_cast<char>((claimed_len >> (8 * i)) & 0xff);
  return out + header + data;
}
std::string st_file(const std::string& header, const std::string& data) {
  return st_file(header, data, header.size());
}

std::shared_ptr<std::vector<uint8_t>> buffer_of(const std::string& s) {
  return std::make_shared<std::vector<uint8_t>>(s.begin(), s.end());
}

/// The message of the IOError `f` throws ("" and a failed check when it throws nothing or
/// something else).
template <class F>
std::string io_error_of(F&& f) {
  try {
    f();
  } catch (const IOError& e) {
    return e.what();
  } catch (const std::exception& e) {
    FAIL_CHECK("expected IOError, got: ", e.what());
    return "";
  }
  FAIL_CHECK("expected IOError, nothing thrown");
  return "";
}

bool contains(const std::string& hay, const std::string& needle) { return hay.find(needle) != std::string::npos; }

uint64_t bits_of(double d) {
  uint64_t u;
  std::memcpy(&u, &d, 8);
  return u;
}

/// Raw bytes of a (contiguous) tensor.
std::string raw_bytes(const Tensor& t) {
  Tensor c = t.contiguous();
  return std::string(static_cast<const char*>(c.raw_data()), c.numel() * dtype_size(c.dtype()));
}

std::string f32_bytes(std::initializer_list<float> v) {
  std::string s(v.size() * 4, '\0');
  std::memcpy(&s[0], v.begin(), s.size());
  return s;
}

}  // namespace

// ------------------------------------------------------------------------------------------
// JSON
// ------------------------------------------------------------------------------------------

TEST_CASE("io: json parses every kind of value and keeps object order") {
  const Json j = parse_json(
      " {\"z\": 1, \"a\": [true, false, null, -0, 12.5e-1, -7, \"s\"], \"m\": {\"k\": {}}, \"e\": []} \n");
  REQUIRE(j.is_object());
  CHECK(j.keys() == std::vector<std::string>{"z", "a", "m", "e"});
  CHECK(j.at("z").is_int());
  CHECK(j.at("z").as_int() == 1);
  const Json& a = j.at("a");
  REQUIRE(a.size() == 7);
  CHECK(a[0].as_bool() == true);
  CHECK(a[1].as_bool() == false);
  CHECK(a[2].is_null());
  CHECK(a[3].as_int() == 0);
  CHECK(a[4].as_number() == 1.25);
  CHECK_FALSE(a[4].is_int());
  CHECK(a[5].as_int() == -7);
  CHECK(a[6].as_string() == "s");
  CHECK(j.at("m").at("k").size() == 0);
  CHECK(j.at("e").size() == 0);
  CHECK(j.find("nope") == nullptr);
  CHECK_THROWS_AS(j.at("nope"), KeyError);
  CHECK_THROWS_AS(j.at("z").as_string(), ValueError);
  CHECK_THROWS_AS(a[7], IndexError);
}

TEST_CASE("io: json numbers are exact where they can be") {
  CHECK(parse_json("9223372036854775807").as_int() == std::numeric_limits<int64_t>::max());
  CHECK(parse_json("-9223372036854775808").as_int() == std::numeric_limits<int64_t>::min());
  // One past int64: still a number, no longer an exact integer.
  const Json big = parse_json("9223372036854775808");
  CHECK(big.as_number() == 9223372036854775808.0);
  CHECK_FALSE(big.is_int());
  CHECK(parse_json("0.1").as_number() == 0.1);
  CHECK(parse_json("-2.5E+300").as_number() == -2.5e300);
  CHECK(bits_of(parse_json("5e-324").as_number()) == 1u);  // smallest subnormal, exact
  CHECK(parse_json("1e2").is_int());                         // an integral value, like 100
  CHECK(parse_json("1e2").as_int() == 100);
  CHECK(std::signbit(parse_json("-0.0").as_number()));
  CHECK(std::signbit(parse_json("-0").as_number()));
  CHECK(parse_json("-0").as_int() == 0);
}

TEST_CASE("io: json strings decode escapes and UTF-8") {
  CHECK(parse_json(R"("a\"b\\c\/d\b\f\n\r\t")").as_string() == "a\"b\\c/d\b\f\n\r\t");
  CHECK(parse_json(R"("\u0041\u00e9\u2603")").as_string() == "A\xc3\xa9\xe2\x98\x83");
  CHECK(parse_json(R"("\ud834\udd1e")").as_string() == "\xf0\x9d\x84\x9e");  // U+1D11E, a surrogate pair
  CHECK(parse_json("\"h\xc3\xa9llo \xe2\x98\x83 \xf0\x9d\x84\x9e\"").as_string() ==
        "h\xc3\xa9llo \xe2\x98\x83 \xf0\x9d\x84\x9e");
  CHECK(parse_json(R"("\u0000")").as_string() == std::string(1, '\0'));
}

TEST_CASE("io: json rejects malformed input with the source and byte offset") {
  const std::vector<std::string> bad = {
      "", " ", "{", "}", "[", "[1,]", "[,1]", "{\"a\":1,}", "{\"a\" 1}", "{\"a\":}", "{1:2}", "{'a':1}",
      "[1 2]", "01", "-01", "1.", ".5", "-", "+1", "1e", "1e+", "0x10", "NaN", "Infinity", "-Infinity",
      "tru", "nul", "falsey", "True", "\"abc", "\"\\x\"", "\"\\u12\"", "\"\\u12g4\"", "\"\\uD800\"",
      "\"\\uDC00\"", "\"\\uD800\\u0041\"", "\"\\uD800x\"", std::string("\"\x01\""), "\"tab\there\"",
      "\"\xff\"", "\"\xc0\xaf\"", "\"\xe0\x80\xaf\"", "\"\xed\xa0\x80\"", "\"\xf4\x90\x80\x80\"",
      "\"\xc3\"", "\"\xe2\x98\"", "\"\x80\"", "{\"a\":1,\"a\":2}", "1 2", "[1] x", "{} {}", "1e400",
      "-1e400", "1e-400", std::string("1\0", 2), "\xef\xbb\xbf{}" /* BOM */, std::string("[1]\0", 4),
      std::string(300, '1'), "/* c */ 1", "[1,2", "{\"a\":[1,{\"b\":2]}"};
  for (const std::string& text : bad) {
    CAPTURE(text);
    const std::string msg = io_error_of([&] { parse_json(text, "some/file.json"); });
    CHECK(contains(msg, "some/file.json"));
    CHECK(contains(msg, "byte "));
  }
  // Offsets count from base_offset, so a header inside a file reports the file position.
  CHECK(contains(io_error_of([] { parse_json("[1, x]", "f.json", 8); }), "at byte 12"));
  CHECK(contains(io_error_of([] { parse_json("{\"a\":1,\"a\":2}", "f.json"); }), "duplicate key \"a\""));
  CHECK(contains(io_error_of([] { parse_json("{\"a\":1,\"a\":2}", "f.json"); }), "at byte 7"));
}

TEST_CASE("io: json nesting is limited to 64 levels") {
  const auto nest = [](int depth) { return std::string(depth, '[') + std::string(depth, ']'); };
  CHECK(parse_json(nest(64)).is_array());
  CHECK(contains(io_error_of([&] { parse_json(nest(65), "deep.json"); }), "nesting deeper than 64"));
  std::string objs;
  for (int i = 0; i < 65; ++i) objs += "{\"k\":";
  objs += "1" + std::string(65, '}');
  CHECK(contains(io_error_of([&] { parse_json(objs, "deep.json"); }), "deep.json"));
  // A million brackets must fail fast at depth 65, not overflow the stack.
  CHECK(contains(io_error_of([&] { parse_json(std::string(1000000, '['), "deep.json"); }), "nesting"));
}

TEST_CASE("io: utf-8 validation") {
  CHECK(io::is_valid_utf8(""));
  CHECK(io::is_valid_utf8("plain \xc3\xa9 \xe2\x98\x83 \xf0\x9d\x84\x9e \xf4\x8f\xbf\xbf"));
  for (const char* bad : {"\x80", "\xc3", "\xc0\x80", "\xc1\xbf", "\xe0\x9f\xbf", "\xed\xa0\x80",
                          "\xf0\x8f\xbf\xbf", "\xf4\x90\x80\x80", "\xf5\x80\x80\x80", "\xff", "a\xe2\x98"}) {
    CAPTURE(bad);
    CHECK_FALSE(io::is_valid_utf8(bad));
  }
}

TEST_CASE("io: json dump parses back to the same value") {
  Json o = Json::object();
  o.set("name", Json("q\"uo\\te\n\x01 \xe2\x98\x83"));
  o.set("n", Json(int64_t(-9223372036854775807LL - 1)));
  o.set("x", Json(0.1));
  o.set("t", Json(true));
  o.set("z", Json());
  Json arr = Json::array();
  arr.push_back(Json(1));
  arr.push_back(Json(-2.5e-300));
  o.set("a", arr);
  const std::string text = o.dump();
  CHECK(text == "{\"name\":\"q\\\"uo\\\\te\\n\\u0001 \xe2\x98\x83\",\"n\":-9223372036854775808,\"x\":0.1,"
                "\"t\":true,\"z\":null,\"a\":[1,-2.5e-300]}");
  const Json back = parse_json(text);
  CHECK(back.keys() == o.keys());
  CHECK(back.at("name").as_string() == o.at("name").as_string());
  CHECK(back.at("n").as_int() == o.at("n").as_int());
  CHECK(back.at("x").as_number() == 0.1);
  CHECK(back.at("a")[1].as_number() == -2.5e-300);
  // Integers beyond 2^53 and the sign of zero survive a dump.
  CHECK(parse_json(parse_json("[9223372036854775807,-0.0,-0]").dump()).dump() == "[9223372036854775807,-0,-0]");
  CHECK(parse_json("[9223372036854775807]").dump() == "[9223372036854775807]");
  CHECK(std::signbit(parse_json(parse_json("-0.0").dump()).as_number()));
  // set() on an existing key replaces in place.
  o.set("name", Json(3));
  CHECK(o.keys().front() == "name");
  CHECK(o.at("name").as_int() == 3);
}

// ------------------------------------------------------------------------------------------
// safetensors: round trips through our writer and reader
// ------------------------------------------------------------------------------------------

TEST_CASE("io: safetensors round trip of every dtype, layout, empty and 0-d tensors") {
  TempDir dir;
  const std::vector<double> vals = {0.0, 1.0, -2.0, 3.5, 100.0, -0.25, 7.0, 1.0, 0.0, 42.0, -1.0, 2.0};
  const std::vector<DType> dtypes = {f32, f64, f16, bf16, i32, i64, u8, b8};
  const std::map<DType, std::string> names = {{f32, "F32"}, {f64, "F64"}, {f16, "F16"}, {bf16, "BF16"},
                                              {i32, "I32"}, {i64, "I64"}, {u8, "U8"},   {b8, "BOOL"}};
  std::vector<std::pair<std::string, Tensor>> in;
  for (DType dt : dtypes) {
    std::vector<double> v = vals;
    if (dt == u8 || dt == b8)
      for (double& x : v) x = std::fabs(x);
    const Tensor base = tensor(v, {3, 4}).to(dt);
    const std::string n = dtype_name(dt);
    in.emplace_back(n + ".contig", base);
    in.emplace_back(n + ".transposed", base.t());                // non-contiguous
    in.emplace_back(n + ".strided", base.slice(1, 0, 4, 2));     // a gap between elements
    in.emplace_back(n + ".empty", empty({0, 5}, dt));
    in.emplace_back(n + ".scalar", tensor(std::vector<double>{v[3]}, {}).to(dt));
  }
  // Whole cache lines of data (512 and 64 bytes), listed after tensors of odd sizes.
  in.emplace_back("f32.lines", arange(0, 128, 1, f32).reshape({4, 32}));
  in.emplace_back("u8.line", arange(0, 64, 1, u8));
  // Deliberately a dtype order that would misalign data without the writer's reordering.
  const std::string path = dir.file("all.safetensors");
  io::save_safetensors(path, in);
  const SafetensorsFile f = SafetensorsFile::open(path);
  REQUIRE(f.keys().size() == in.size());
  for (size_t i = 0; i < in.size(); ++i) {
    const std::string& name = in[i].first;  // (not a structured binding: CAPTURE is a lambda)
    const Tensor& t = in[i].second;
    CAPTURE(name);
    CHECK(f.keys()[i] == name);  // header order is the order given
    const auto& info = f.info(name);
    CHECK(info.dtype_name == names.at(t.dtype()));
    REQUIRE(info.dtype.has_value());
    CHECK(*info.dtype == t.dtype());
    const Tensor got = f.get(name);
    CHECK(got.dtype() == t.dtype());
    CHECK(got.shape() == t.shape());
    CHECK(got.is_contiguous());
    CHECK(raw_bytes(got) == raw_bytes(t));
    CHECK(got.to_vector<double>() == t.to_vector<double>());
    if (t.numel() > 0) CHECK(f.is_zero_copy(name));  // the writer keeps every tensor aligned
  }
  // Spot values against literals, independent of how the input was built.
  CHECK(f.get("f32.transposed").to_vector<double>() ==
        std::vector<double>{0, 100, 0, 1, -0.25, 42, -2, 7, -1, 3.5, 1, 2});
  CHECK(f.get("i64.strided").to_vector<double>() == std::vector<double>{0, -2, 100, 7, 0, -1});
  CHECK(f.get("bool.contig").to_vector<double>() ==
        std::vector<double>{0, 1, 1, 1, 1, 1, 1, 1, 0, 1, 1, 1});
  CHECK(f.get("f16.scalar").dim() == 0);
  CHECK(f.get("f16.scalar").item<double>() == 3.5);
  // The data section starts 64-aligned (the writer pads the header with spaces), and so does
  // every tensor whose size is a multiple of 64 bytes, in the file and when mapped.
  const std::string bytes = test::read_file(path);
  uint64_t n = 0;
  for (int i = 7; i >= 0; --i) n = (n << 8) | static_cast<uint8_t>(bytes[i]);
  CHECK((8 + n) % 64 == 0);
  CHECK(bytes[8 + n - 1] != '\0');
  int lines = 0;
  for (const auto& [name, t] : in) {
    const auto& info = f.info(name);
    CHECK(info.data_start == 8 + n);
    if (info.end > info.begin && (info.end - info.begin) % 64 == 0) {
      ++lines;
      CHECK((info.data_start + info.begin) % 64 == 0);
      CHECK(reinterpret_cast<uintptr_t>(f.get(name).raw_data()) % 64 == 0);
    }
  }
  CHECK(lines == 2);
  CHECK(f.metadata().empty());
}

TEST_CASE("io: safetensors metadata round trip") {
  TempDir dir;
  const std::map<std::string, std::string> meta = {
      {"config", "{\"embed_dim\": 512, \"layers\": [3, 4]}"},
      {"merges", "#version: 0.2\ni n\nt h</w>\n"},
      {"unicode", "h\xc3\xa9llo \xe2\x98\x83 \xf0\x9d\x84\x9e \"q\" \\ \t \x01"},
      {"", "empty key"},
      {"empty value", ""}};
  const std::string path = dir.file("meta.safetensors");
  io::save_safetensors(path, {{"w", ones({2}, f32)}}, meta);
  const SafetensorsFile f = SafetensorsFile::open(path);
  CHECK(f.metadata() == meta);
  CHECK(f.keys() == std::vector<std::string>{"w"});  // __metadata__ is not a tensor
  CHECK_FALSE(f.contains("__metadata__"));
  // A file of metadata and no tensors is valid.
  io::save_safetensors(dir.file("only_meta.safetensors"), {}, meta);
  const SafetensorsFile g = SafetensorsFile::open(dir.file("only_meta.safetensors"));
  CHECK(g.keys().empty());
  CHECK(g.metadata() == meta);
}

TEST_CASE("io: safetensors get is zero-copy for aligned data and outlives the file object") {
  TempDir dir;
  const std::string path = dir.file("w.safetensors");
  io::save_safetensors(path, {{"a", tensor({1.f, 2.f, 3.f}, {3})}, {"b", tensor({4.f, 5.f}, {2})}});
  Tensor a, b;
  {
    const SafetensorsFile f = SafetensorsFile::open(path);
    a = f.get("a");
    b = f.get("b");
    const auto* lo = f.bytes();
    const auto* hi = f.bytes() + f.byte_size();
    const auto* pa = static_cast<const uint8_t*>(a.raw_data());
    CHECK(pa >= lo);
    CHECK(pa + 12 <= hi);
    CHECK(f.is_zero_copy("a"));
    // Two gets of the same tensor alias the same bytes.
    CHECK(f.get("a").raw_data() == a.raw_data());
  }  // the SafetensorsFile is gone; the mapping lives on in the tensors
  CHECK(a.to_vector<float>() == std::vector<float>{1, 2, 3});
  CHECK(b.to_vector<float>() == std::vector<float>{4, 5});
  // The mapping is private: writing to a loaded tensor never changes the file.
  a.fill_(9.0);
  CHECK(a.to_vector<float>() == std::vector<float>{9, 9, 9});
  CHECK(SafetensorsFile::open(path).get("a").to_vector<float>() == std::vector<float>{1, 2, 3});
}

/// This process's resident set in bytes (the second field of /proc/self/statm, in pages).
long resident_bytes() {
  std::ifstream statm("/proc/self/statm");
  long size = 0, resident = 0;
  statm >> size >> resident;
  return resident * sysconf(_SC_PAGESIZE);
}

TEST_CASE("io: safetensors release drops a mapped tensor's pages from memory, and its values survive") {
  TempDir dir;
  const std::string path = dir.file("big.safetensors");
  const int64_t n = int64_t(32) << 20 >> 2;  // 32 MiB of f32
  io::save_safetensors(path, {{"head", tensor({7.f}, {1})}, {"big", arange(0, double(n), 1, ga::f32)}});
  const SafetensorsFile f = SafetensorsFile::open(path);
  const Tensor big = f.get("big");
  REQUIRE(f.is_zero_copy("big"));
  const long before = resident_bytes();
  CHECK(sum(big).item<double>() == doctest::Approx(double(n) * double(n - 1) / 2).epsilon(1e-3));  // touches it
  const long touched = resident_bytes();
  CHECK(touched - before > (30l << 20));
  f.release(big);
  const long released = resident_bytes();
  MESSAGE("resident: ", before >> 20, " MiB, touched ", touched >> 20, " MiB, released ", released >> 20, " MiB");
  CHECK(touched - released > (30l << 20));
  // Reading again brings the file's values back.
  CHECK(big.to_vector<float>()[size_t(n) - 1] == float(n - 1));
  CHECK(f.get("head").item<float>() == 7.f);
  // Copies and in-memory buffers are left alone.
  const Tensor copy = big.clone();
  f.release(copy);
  CHECK(copy.to_vector<float>()[12345] == 12345.f);
}

TEST_CASE("io: safetensors misaligned data is copied, and BOOL bytes are normalised") {
  // data_start = 8 + header length; one U8 byte first puts the F32 at an odd address.
  std::string header = R"({"u":{"dtype":"U8","shape":[1],"data_offsets":[0,1]},)"
                       R"("x":{"dtype":"F32","shape":[2],"data_offsets":[1,9]},)"
                       R"("m":{"dtype":"BOOL","shape":[3],"data_offsets":[9,12]}})";
  while ((8 + header.size()) % 8) header += ' ';
  const std::string data = std::string("\x07", 1) + f32_bytes({1.5f, -2.0f}) + std::string("\x00\x01\x05", 3);
  TempDir dir;
  test::write_file(dir.file("mis.safetensors"), st_file(header, data));
  const SafetensorsFile f = SafetensorsFile::open(dir.file("mis.safetensors"));
  CHECK_FALSE(f.is_zero_copy("x"));
  const Tensor x = f.get("x");
  CHECK(x.to_vector<float>() == std::vector<float>{1.5f, -2.0f});
  CHECK(reinterpret_cast<uintptr_t>(x.raw_data()) % 4 == 0);
  CHECK(f.get("u").to_vector<int64_t>() == std::vector<int64_t>{7});
  CHECK(f.is_zero_copy("u"));
  CHECK_FALSE(f.is_zero_copy("m"));  // byte 5 is not a valid bool
  CHECK(f.get("m").to_vector<double>() == std::vector<double>{0, 1, 1});
  CHECK(f.get("m").dtype() == b8);
}

TEST_CASE("io: safetensors reads the reference implementation's file") {
  const std::string dir = std::string(GA_SOURCE_DIR) + "/tests/fixtures/";
  const SafetensorsFile f = SafetensorsFile::open(dir + "reference.safetensors");
  const Json expected = parse_json(test::read_file(dir + "reference_expected.json"), "reference_expected.json");
  std::vector<std::string> keys;
  for (const Json& k : expected.at("header_keys").values()) keys.push_back(k.as_string());
  CHECK(f.keys() == keys);
  std::map<std::string, std::string> meta;
  const Json& m = expected.at("metadata");
  for (size_t i = 0; i < m.size(); ++i) meta[m.keys()[i]] = m.values()[i].as_string();
  CHECK(f.metadata() == meta);
  CHECK(f.metadata().at("unicode") == "h\xc3\xa9llo \xe2\x98\x83 \xf0\x9d\x84\x9e \"quoted\" back\\slash\ttab\nnewline");
  const Json& tensors = expected.at("tensors");
  REQUIRE(tensors.size() == 12);
  for (const std::string& name : tensors.keys()) {
    CAPTURE(name);
    const Json& e = tensors.at(name);
    const auto& info = f.info(name);
    CHECK(info.dtype_name == e.at("dtype").as_string());
    Shape shape;
    for (const Json& d : e.at("shape").values()) shape.push_back(d.as_int());
    CHECK(info.shape == shape);
    CHECK(info.begin == static_cast<uint64_t>(e.at("data_offsets")[0].as_int()));
    CHECK(info.end == static_cast<uint64_t>(e.at("data_offsets")[1].as_int()));
    const Tensor t = f.get(name);
    CHECK(t.shape() == shape);
    const Json& values = e.at("values");
    REQUIRE(static_cast<size_t>(t.numel()) == values.size());
    if (t.dtype() == i64) {  // beyond double's exact range: compare as integers
      const auto got = t.to_vector<int64_t>();
      for (size_t i = 0; i < got.size(); ++i) CHECK(got[i] == values[i].as_int());
      continue;
    }
    const auto got = t.to_vector<double>();
    for (size_t i = 0; i < got.size(); ++i) {
      CAPTURE(i);
      const Json& v = values[i];
      if (v.is_string()) {
        const std::string s = v.as_string();
        if (s == "nan") CHECK(std::isnan(got[i]));
        else CHECK(got[i] == (s == "inf" ? 1.0 : -1.0) * std::numeric_limits<double>::infinity());
      } else if (v.is_bool()) {
        CHECK(got[i] == (v.as_bool() ? 1.0 : 0.0));
      } else {
        CHECK(bits_of(got[i]) == bits_of(v.as_number()));  // exact, sign of zero included
      }
    }
  }
  // The reference pads its header to 8 bytes, so our reader can alias it in place.
  CHECK(f.is_zero_copy("weight.f32"));
  CHECK(f.is_zero_copy("i64"));
  CHECK(f.get("scalar").dim() == 0);
}

namespace {
/// The file the Python reference reads back (gen_safetensors_fixtures.py --check): keep the
/// values in step with ours_expected() there.
std::vector<std::pair<std::string, Tensor>> export_tensors() {
  const Tensor f32_base = tensor(std::vector<float>{-3, -2.5, -2, -1.5, -1, -0.5, 0, 0.5, 1, 1.5, 2, 2.5}, {3, 4});
  return {
      {"f32_t", f32_base.t()},
      {"f64", tensor(std::vector<double>{1.0 / 3.0, -2.5e300, 5e-324})},
      {"f16", tensor(std::vector<double>{0.1, -65504.0, 6e-8, 1.0 / 3.0}).to(f16)},
      {"bf16", tensor(std::vector<float>{1.0f, -2.5f, 3.140625f, 0.0f}).to(bf16)},
      {"i32", tensor(std::vector<int32_t>{2147483647, -2147483647 - 1, 0}, {1, 3})},
      {"i64", tensor(std::vector<int64_t>{9223372036854775807LL, -9223372036854775807LL - 1})},
      {"u8", tensor(std::vector<uint8_t>{250, 251, 252, 253, 254, 255}, {2, 3})},
      {"mask", tensor(std::vector<uint8_t>{1, 0, 1}).to(b8)},
      {"empty", empty({2, 0}, f32)},
      {"scalar", tensor(std::vector<float>{42.5f}, {})},
  };
}
}  // namespace

TEST_CASE("io: safetensors export for the Python reference reader") {
  // Set GA_IO_EXPORT_DIR to keep the file; gen_safetensors_fixtures.py --check reads it.
  TempDir dir;
  const char* keep = std::getenv("GA_IO_EXPORT_DIR");
  const std::string path = keep && *keep ? std::string(keep) + "/ours.safetensors" : dir.file("ours.safetensors");
  const std::map<std::string, std::string> meta = {{"format", "ga"}, {"note", "h\xc3\xa9llo \"quoted\"\n"}};
  io::save_safetensors(path, export_tensors(), meta, /*overwrite=*/true);
  const SafetensorsFile f = SafetensorsFile::open(path);
  CHECK(f.keys() == std::vector<std::string>{"f32_t", "f64", "f16", "bf16", "i32", "i64", "u8", "mask",
                                             "empty", "scalar"});
  CHECK(f.get("f32_t").to_vector<float>() ==
        std::vector<float>{-3, -1, 1, -2.5, -0.5, 1.5, -2, 0, 2, -1.5, 0.5, 2.5});
  // f16 bits as numpy's float16 rounds them: 0.1 -> 0x2e66, -65504 -> 0xfbff, 6e-8 -> 0x0001,
  // 1/3 -> 0x3555.
  const Tensor h = f.get("f16");
  const uint16_t* hb = reinterpret_cast<const uint16_t*>(h.raw_data());
  CHECK(std::vector<uint16_t>(hb, hb + 4) == std::vector<uint16_t>{0x2e66, 0xfbff, 0x0001, 0x3555});
  const Tensor b = f.get("bf16");
  const uint16_t* bb = reinterpret_cast<const uint16_t*>(b.raw_data());
  CHECK(std::vector<uint16_t>(bb, bb + 4) == std::vector<uint16_t>{0x3f80, 0xc020, 0x4049, 0x0000});
  CHECK(f.get("scalar").dim() == 0);
  CHECK(f.get("empty").shape() == Shape{2, 0});
  CHECK(f.metadata() == meta);
}

// ------------------------------------------------------------------------------------------
// safetensors: writer refusals
// ------------------------------------------------------------------------------------------

TEST_CASE("io: save_safetensors never overwrites without being asked, and writes atomically") {
  TempDir dir;
  const std::string path = dir.file("model.safetensors");
  io::save_safetensors(path, {{"w", tensor({1.f, 2.f})}});
  const std::string before = test::read_file(path);
  const std::string msg = io_error_of([&] { io::save_safetensors(path, {{"w", tensor({3.f})}}); });
  CHECK(contains(msg, path));
  CHECK(contains(msg, "already exists"));
  CHECK(contains(msg, "overwrite=true"));
  CHECK(test::read_file(path) == before);
  // A file the user owns that is not safetensors at all is just as protected.
  test::write_file(dir.file("notes.txt"), "my notes");
  CHECK_THROWS_AS(io::save_safetensors(dir.file("notes.txt"), {{"w", tensor({3.f})}}), IOError);
  CHECK(test::read_file(dir.file("notes.txt")) == "my notes");
  // With overwrite=true it is replaced.
  io::save_safetensors(path, {{"w", tensor({3.f})}}, {}, /*overwrite=*/true);
  CHECK(SafetensorsFile::open(path).get("w").to_vector<float>() == std::vector<float>{3});
  // No temporary files are left behind.
  auto entries = dir.entries();
  std::sort(entries.begin(), entries.end());
  CHECK(entries == std::vector<std::string>{"model.safetensors", "notes.txt"});
  // A directory that does not exist: IOError naming the path.
  const std::string nowhere = dir.file("no/such/dir/x.safetensors");
  CHECK(contains(io_error_of([&] { io::save_safetensors(nowhere, {{"w", tensor({3.f})}}); }), nowhere));
}

TEST_CASE("io: save_safetensors rejects duplicate, reserved and undefined tensors") {
  TempDir dir;
  const std::string path = dir.file("x.safetensors");
  CHECK_THROWS_AS(io::save_safetensors(path, {{"a", tensor({1.f})}, {"a", tensor({2.f})}}), ValueError);
  CHECK_THROWS_AS(io::save_safetensors(path, {{"a", Tensor()}}), ValueError);
  CHECK_THROWS_AS(io::save_safetensors(path, {{"__metadata__", tensor({1.f})}}), ValueError);
  CHECK_THROWS_AS(io::save_safetensors(path, {{"bad\xff", tensor({1.f})}}), ValueError);
  CHECK_THROWS_AS(io::save_safetensors(path, {{"a", tensor({1.f})}}, {{"k", "\xc3"}}), ValueError);
  try {
    io::save_safetensors(path, {{"a", tensor({1.f})}, {"a", tensor({2.f})}});
  } catch (const ValueError& e) {
    CHECK(contains(e.what(), "\"a\""));
    CHECK(contains(e.what(), path));
  }
  CHECK(dir.entries().empty());  // nothing written, not even a temporary
}

// ------------------------------------------------------------------------------------------
// safetensors: bad input
// ------------------------------------------------------------------------------------------

TEST_CASE("io: safetensors missing, empty and unreadable files are IOErrors naming the path") {
  TempDir dir;
  const std::string missing = dir.file("missing.safetensors");
  CHECK(contains(io_error_of([&] { SafetensorsFile::open(missing); }), missing));
  CHECK(contains(io_error_of([&] { SafetensorsFile::open(dir.path); }), dir.path));  // a directory
  test::write_file(dir.file("empty.safetensors"), "");
  CHECK(contains(io_error_of([&] { SafetensorsFile::open(dir.file("empty.safetensors")); }),
                 dir.file("empty.safetensors")));
}

TEST_CASE("io: safetensors truncated at every length is an IOError") {
  const std::string path = std::string(GA_SOURCE_DIR) + "/tests/fixtures/reference.safetensors";
  const std::string whole = test::read_file(path);
  REQUIRE(whole.size() > 100);
  CHECK_NOTHROW(SafetensorsFile::from_buffer(buffer_of(whole), "whole"));
  for (size_t len = 0; len < whole.size(); ++len) {
    CAPTURE(len);
    const std::string msg = io_error_of([&] { SafetensorsFile::from_buffer(buffer_of(whole.substr(0, len)), "cut"); });
    CHECK(contains(msg, "cut: "));
  }
  // The same through real files, at a few lengths (inside the length, header and data).
  TempDir dir;
  for (size_t len : {size_t(3), size_t(8), size_t(9), size_t(100), whole.size() - 300, whole.size() - 1}) {
    const std::string p = dir.file("cut" + std::to_string(len) + ".safetensors");
    test::write_file(p, whole.substr(0, len));
    CHECK(contains(io_error_of([&] { SafetensorsFile::open(p); }), p));
  }
}

TEST_CASE("io: safetensors headers that lie are IOErrors naming the file and the tensor") {
  TempDir dir;
  const std::string good_header = R"({"a":{"dtype":"F32","shape":[2],"data_offsets":[0,8]}})";
  const std::string data = f32_bytes({1.f, 2.f});
  struct Case {
    std::string what, bytes, expect;
  };
  const std::string h = good_header;
  const std::vector<Case> cases = {
      {"length beyond the file", st_file(h, data, h.size() + data.size() + 1), "file has"},
      {"length of 2^64 - 1", st_file(h, data, ~uint64_t(0)), "limit"},
      {"length just over 100 MB", st_file(h, data, 100000001), "limit"},
      {"length zero", st_file(h, data, 0), "does not start with '{'"},
      {"length too short (JSON cut)", st_file(h, data, h.size() - 1), "invalid JSON"},
      {"length too long (data read as JSON)", st_file(h, data, h.size() + 1), "invalid JSON"},
      {"offsets beyond the data", st_file(R"({"a":{"dtype":"F32","shape":[2],"data_offsets":[4,12]}})", data),
       "tensor \"a\""},
      {"offsets end before begin", st_file(R"({"a":{"dtype":"F32","shape":[0],"data_offsets":[8,0]}})", data),
       "tensor \"a\""},
      {"size mismatch", st_file(R"({"a":{"dtype":"F32","shape":[3],"data_offsets":[0,8]}})", data),
       "header says F32 [3] (12 bytes), data_offsets hold 8 bytes"},
      {"dtype size mismatch", st_file(R"({"a":{"dtype":"F64","shape":[2],"data_offsets":[0,8]}})", data),
       "tensor \"a\""},
      {"overlap", st_file(R"({"a":{"dtype":"F32","shape":[2],"data_offsets":[0,8]},)"
                          R"("b":{"dtype":"F32","shape":[1],"data_offsets":[4,8]}})", data),
       "overlap"},
      {"hole", st_file(R"({"a":{"dtype":"F32","shape":[1],"data_offsets":[4,8]}})", data), "holes"},
      {"trailing bytes", st_file(h, data + "junk"), "data section"},
      {"negative dim", st_file(R"({"a":{"dtype":"F32","shape":[-2],"data_offsets":[0,8]}})", data),
       "non-negative integers"},
      {"fractional dim", st_file(R"({"a":{"dtype":"F32","shape":[2.5],"data_offsets":[0,8]}})", data),
       "non-negative integers"},
      {"string dim", st_file(R"({"a":{"dtype":"F32","shape":["2"],"data_offsets":[0,8]}})", data),
       "non-negative integers"},
      {"shape overflows", st_file(R"({"a":{"dtype":"F32","shape":[4294967296,4294967296],"data_offsets":[0,8]}})", data),
       "64 bits"},
      {"bytes overflow", st_file(R"({"a":{"dtype":"F64","shape":[4611686018427387904],"data_offsets":[0,8]}})", data),
       "64 bits"},
      {"empty with huge dims", st_file(R"({"a":{"dtype":"F32","shape":[0,9223372036854775807,4],"data_offsets":[0,0]},)"
                                       R"("b":{"dtype":"F32","shape":[2],"data_offsets":[0,8]}})", data),
       "64 bits"},
      {"negative offset", st_file(R"({"a":{"dtype":"F32","shape":[2],"data_offsets":[-1,8]}})", data),
       "data_offsets"},
      {"three offsets", st_file(R"({"a":{"dtype":"F32","shape":[2],"data_offsets":[0,8,8]}})", data),
       "data_offsets"},
      {"missing shape", st_file(R"({"a":{"dtype":"F32","data_offsets":[0,8]}})", data), "needs dtype"},
      {"extra field", st_file(R"({"a":{"dtype":"F32","shape":[2],"data_offsets":[0,8],"x":1}})", data),
       "unexpected field"},
      {"entry not an object", st_file(R"({"a":[1,2]})", data), "tensor \"a\""},
      {"header not an object", st_file("[1]", data), "does not start with '{'"},
      {"unknown dtype", st_file(R"({"a":{"dtype":"F17","shape":[2],"data_offsets":[0,8]}})", data),
       "unknown dtype \"F17\""},
      {"dtype not a string", st_file(R"({"a":{"dtype":4,"shape":[2],"data_offsets":[0,8]}})", data), "dtype"},
      {"bad JSON", st_file(R"({"a":{"dtype":"F32","shape":[2],"data_offsets":[0,8]})", data), "invalid JSON"},
      {"duplicate tensor", st_file(R"({"a":{"dtype":"F32","shape":[1],"data_offsets":[0,4]},)"
                                   R"("a":{"dtype":"F32","shape":[1],"data_offsets":[4,8]}})", data),
       "duplicate key"},
      {"non-UTF-8 name", st_file("{\"a\xff\":{\"dtype\":\"F32\",\"shape\":[2],\"data_offsets\":[0,8]}}", data),
       "UTF-8"},
      {"non-UTF-8 padding", st_file(h + "\xff", data), "invalid JSON"},
      {"NUL padding", st_file(h + std::string(3, '\0'), data), "invalid JSON"},
      {"metadata not strings", st_file(R"({"__metadata__":{"k":1},"a":{"dtype":"F32","shape":[2],"data_offsets":[0,8]}})", data),
       "__metadata__ entry \"k\""},
      {"metadata not an object", st_file(R"({"__metadata__":"x","a":{"dtype":"F32","shape":[2],"data_offsets":[0,8]}})", data),
       "__metadata__"},
  };
  for (const Case& c : cases) {
    CAPTURE(c.what);
    const std::string p = dir.file("bad.safetensors");
    test::write_file(p, c.bytes);
    const std::string msg = io_error_of([&] { SafetensorsFile::open(p); });
    CHECK(contains(msg, p));
    CHECK(contains(msg, c.expect));
    CAPTURE(msg);
    // The in-memory path reports the same thing under its own name.
    const std::string mem = io_error_of([&] { SafetensorsFile::from_buffer(buffer_of(c.bytes), "mem"); });
    CHECK(contains(mem, "mem: "));
  }
  // Sanity: the good header itself is accepted, so the cases above fail for their own reason.
  test::write_file(dir.file("good.safetensors"), st_file(h, data));
  CHECK(SafetensorsFile::open(dir.file("good.safetensors")).get("a").to_vector<float>() ==
        std::vector<float>{1, 2});
}

TEST_CASE("io: safetensors dtypes ga lacks open but get() names the tensor and dtype") {
  const std::string header = R"({"q":{"dtype":"I8","shape":[2],"data_offsets":[0,2]},)"
                             R"("h":{"dtype":"F32","shape":[1],"data_offsets":[4,8]},)"
                             R"("s":{"dtype":"U16","shape":[1],"data_offsets":[2,4]}})";
  const std::string bytes = st_file(header, std::string("\x01\xff\x02\x00", 4) + f32_bytes({0.5f}));
  const SafetensorsFile f = SafetensorsFile::from_buffer(buffer_of(bytes), "quant.safetensors");
  CHECK(f.keys() == std::vector<std::string>{"q", "h", "s"});
  CHECK(f.info("q").dtype_name == "I8");
  CHECK_FALSE(f.info("q").dtype.has_value());
  const std::string msg = io_error_of([&] { f.get("q"); });
  CHECK(contains(msg, "quant.safetensors"));
  CHECK(contains(msg, "\"q\""));
  CHECK(contains(msg, "I8"));
  CHECK(f.get("h").to_vector<float>() == std::vector<float>{0.5f});
  CHECK_THROWS_AS(f.get("nope"), KeyError);
  CHECK_THROWS_AS(f.info("nope"), KeyError);
}
