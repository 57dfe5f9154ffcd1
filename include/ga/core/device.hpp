// Where a tensor's memory lives. Only backend/ turns a Device into code.
#pragma once
#include <ostream>
#include <string>

namespace ga {

struct Device {
  enum class Type : uint8_t { cpu, cuda };
  Type type = Type::cpu;
  int index = 0;

  static Device cpu() { return {}; }
  static Device cuda(int i = 0) { return {Type::cuda, i}; }
  bool is_cpu() const { return type == Type::cpu; }
  bool operator==(const Device& o) const { return type == o.type && index == o.index; }
  bool operator!=(const Device& o) const { return !(*this == o); }
  std::string str() const { return is_cpu() ? "cpu" : "cuda:" + std::to_string(index); }
};
inline std::ostream& operator<<(std::ostream& os, const Device& d) { return os << d.str(); }

inline const Device kCPU = Device::cpu();

}  // namespace ga
