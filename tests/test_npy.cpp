// .npy reading and writing (include/ga/io/npy.hpp) against files numpy.save wrote
// (tests/fixtures/convert/npy_*.npy, made by tests/fixtures/gen_convert_fixtures.py): our writer
// must reproduce them byte for byte, our reader must read them, and malformed files must be
// IOErrors naming the file.
#include <doctest/doctest.h>
#include <dirent.h>
#include <unistd.h>

#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <fstream>
#include <sstream>
#include <string>
#include <vector>

#include "ga/io/npy.hpp"
#include "test_util.hpp"

#ifndef GA_SOURCE_DIR
#error "GA_SOURCE_DIR must name the repository root (tests/CMakeLists.txt defines it)"
#endif

namespace {

const std::string kDir = std::string(GA_SOURCE_DIR) + "/tests/fixtures/convert/";

struct NpyTempDir : ga::test::TempDir {
  NpyTempDir() : ga::test::TempDir("ga_npy_test") {}
};



}  // namespace

TEST_CASE("npy: numpy's files read back and are reproduced byte for byte") {
  NpyTempDir dir;
  struct Case {
    const char* file;
    ga::Tensor expected;
  };
  const Case cases[] = {
      {"npy_f32_2x3.npy", ga::tensor({1.5f, -2.25f, 3.0f, 0.1f, 1e-8f, -0.0f}, {2, 3})},
      {"npy_i64_3.npy", ga::tensor(std::vector<int64_t>{7, -1, int64_t(1) << 40}, {3})},
      {"npy_f16_2x2x1.npy", ga::tensor({0.5f, -1.0f, 65504.0f, 5.9604644775390625e-08f}, {2, 2, 1}).to(ga::f16)},
      {"npy_bool_scalar.npy", ga::ones({}, ga::b8)},
      {"npy_u8_0x4.npy", ga::zeros({0, 4}, ga::u8)},
  };
  for (const Case& c : cases) {
    INFO(c.file);
    const ga::Tensor t = ga::io::load_npy(kDir + c.file);
    CHECK(t.dtype() == c.expected.dtype());
    CHECK(t.shape() == c.expected.shape());
    if (t.numel() > 0) {
      const size_t n = static_cast<size_t>(t.numel()) * ga::dtype_size(t.dtype());
      CHECK(std::memcmp(t.raw_data(), c.expected.contiguous().raw_data(), n) == 0);
    }
    const std::string out = dir.file(c.file);
    ga::io::save_npy(out, c.expected);
    CHECK(ga::test::read_file(out) == ga::test::read_file(kDir + c.file));
  }
}

TEST_CASE("npy: any layout is written in C order; bf16 is refused") {
  NpyTempDir dir;
  const ga::Tensor a = ga::arange(0, 6, 1, ga::f32).reshape({2, 3});
  ga::io::save_npy(dir.file("t.npy"), a.t());  // a non-contiguous view
  const ga::Tensor b = ga::io::load_npy(dir.file("t.npy"));
  REQUIRE(b.shape() == ga::Shape{3, 2});
  CHECK(b.to_vector<float>() == std::vector<float>{0, 3, 1, 4, 2, 5});
  ga::test::expect_error<ga::DTypeError>("bf16", [&] { ga::io::save_npy(dir.file("b.npy"), a.to(ga::bf16)); },
                                         {"b.npy", "bf16"});
}

TEST_CASE("npy: an existing file is not replaced unless asked; nothing is left behind") {
  NpyTempDir dir;
  const std::string path = dir.file("out.npy");
  ga::test::write_file(path, "precious");
  ga::test::expect_error<ga::IOError>("existing", [&] { ga::io::save_npy(path, ga::ones({2})); },
                                      {"out.npy", "already exists"});
  CHECK(ga::test::read_file(path) == "precious");
  CHECK(dir.entries().size() == 1);
  ga::io::save_npy(path, ga::ones({2}), /*overwrite=*/true);
  CHECK(ga::io::load_npy(path).to_vector<float>() == std::vector<float>{1, 1});
  CHECK(dir.entries().size() == 1);
  ga::test::expect_error<ga::IOError>("no such directory",
                                      [&] { ga::io::save_npy(dir.file("missing/x.npy"), ga::ones({2})); },
                                      {"missing/x.npy"});
}

TEST_CASE("npy: malformed files are IOErrors naming the file") {
  NpyTempDir dir;
  const std::string good = ga::test::read_file(kDir + "npy_f32_2x3.npy");
  auto header_with = [&](const std::string& dict) {
    std::string h = dict;
    while ((10 + h.size() + 1) % 64) h += ' ';
    h += '\n';
    std::string out("\x93NUMPY\x01\x00", 8);
    out += static_cast<char>(h.size() & 0xFF);
    out += static_cast<char>(h.size() >> 8);
    return out + h;
  };
  const std::string data24(24, '\0');
  struct Bad {
    const char* name;
    std::string bytes;
    const char* says;
  };
  const Bad bad[] = {
      {"empty.npy", "", "not a .npy"},
      {"magic.npy", "\x93NUMPX" + good.substr(6), "not a .npy"},
      {"truncated_data.npy", good.substr(0, good.size() - 1), "data is"},
      {"extra_data.npy", good + "x", "data is"},
      {"header_past_end.npy", good.substr(0, 60), "runs past"},
      {"version.npy", good.substr(0, 6) + "\x09" + good.substr(7), "version"},
      {"fortran.npy", header_with("{'descr': '<f4', 'fortran_order': True, 'shape': (2, 3), }") + data24, "Fortran"},
      {"bigendian.npy", header_with("{'descr': '>f4', 'fortran_order': False, 'shape': (2, 3), }") + data24, ">f4"},
      {"object.npy", header_with("{'descr': '|O', 'fortran_order': False, 'shape': (2, 3), }") + data24, "|O"},
      {"no_shape.npy", header_with("{'descr': '<f4', 'fortran_order': False, }") + data24, "lacks"},
      {"bad_shape.npy", header_with("{'descr': '<f4', 'fortran_order': False, 'shape': (2, x), }") + data24, "malformed"},
      {"huge_shape.npy",
       header_with("{'descr': '<f4', 'fortran_order': False, 'shape': (4294967296, 4294967296, 4294967296), }"),
       "overflows"},
      // found by fuzz_npy: a zero dim makes the count 0, but the other dims' strides overflow
      {"zero_dim_huge_shape.npy",
       header_with("{'descr': '|u1', 'fortran_order': False, 'shape': (0, 200000, 2200, 2, 50100, 2, 51615, 4), }"),
       "overflows"},
      {"unknown_key.npy", header_with("{'descr': '<f4', 'fortran_order': False, 'shape': (6,), 'x': 1}") + data24,
       "unknown key"},
      {"bool_value.npy", header_with("{'descr': '|b1', 'fortran_order': False, 'shape': (1,), }") + "\x02",
       "neither 0 nor 1"},
  };
  for (const Bad& b : bad) {
    const std::string path = dir.file(b.name);
    ga::test::write_file(path, b.bytes);
    ga::test::expect_error<ga::IOError>(b.name, [&] { ga::io::load_npy(path); }, {b.name, b.says});
  }
  ga::test::expect_error<ga::IOError>("missing file", [&] { ga::io::load_npy(dir.file("nope.npy")); }, {"nope.npy"});
}
