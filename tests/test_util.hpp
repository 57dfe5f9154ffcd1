// Helpers shared by the test files.
#pragma once
#include <doctest/doctest.h>

#include <initializer_list>
#include <string>

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

}  // namespace ga::test
