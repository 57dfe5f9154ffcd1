// Helpers shared by the test files.
#pragma once
#include <doctest/doctest.h>

#include <stdlib.h>

#include <cstdlib>
#include <filesystem>
#include <fstream>
#include <initializer_list>
#include <sstream>
#include <string>
#include <system_error>
#include <vector>

namespace ga::test {

/// Runs f and checks it throws Exc whose message contains every part (`what` labels the
/// check in the failure report).
template <class Exc, class F>
void expect_error(const char* what, F&& f, std::initializer_list<const char*> parts = {}) {
  std::string msg;
  bool right = false;
  try {
    f();
    msg = "(nothing thrown)";
  } catch (const Exc& e) {
    right = true;
    msg = e.what();
  } catch (const std::exception& e) {
    msg = std::string("(wrong exception type) ") + e.what();
  }
  INFO(std::string(what), " -> ", msg);
  CHECK(right);
  for (const char* p : parts) {
    INFO("message should contain: ", std::string(p));
    CHECK(msg.find(p) != std::string::npos);
  }
}

/// A fresh directory under $TMPDIR (or /tmp), named after `tag`, removed with everything in
/// it at scope exit.
struct TempDir {
  std::string path;
  explicit TempDir(const std::string& tag = "ga_test") {
    const char* base = std::getenv("TMPDIR");
    std::string tmpl = std::string(base && *base ? base : "/tmp") + "/" + tag + "_XXXXXX";
    std::vector<char> buf(tmpl.begin(), tmpl.end());
    buf.push_back('\0');
    REQUIRE(mkdtemp(buf.data()) != nullptr);
    path = buf.data();
  }
  TempDir(const TempDir&) = delete;
  TempDir& operator=(const TempDir&) = delete;
  ~TempDir() {
    std::error_code ec;
    std::filesystem::remove_all(path, ec);
  }
  std::string file(const std::string& name) const { return path + "/" + name; }
  /// The names in the directory (not . and ..), in no particular order.
  std::vector<std::string> entries() const {
    std::vector<std::string> out;
    for (const auto& e : std::filesystem::directory_iterator(path)) out.push_back(e.path().filename().string());
    return out;
  }
};

/// The whole content of `path`; fails the test when it cannot be opened.
inline std::string read_file(const std::string& path) {
  std::ifstream f(path, std::ios::binary);
  REQUIRE_MESSAGE(f.good(), "cannot open ", path);
  std::ostringstream ss;
  ss << f.rdbuf();
  return ss.str();
}

/// Replaces the content of `path` with `bytes`; fails the test on a write error.
inline void write_file(const std::string& path, const std::string& bytes) {
  std::ofstream f(path, std::ios::binary | std::ios::trunc);
  f.write(bytes.data(), static_cast<std::streamsize>(bytes.size()));
  REQUIRE(f.good());
}

}  // namespace ga::test
