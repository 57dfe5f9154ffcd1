// A bounded cache of freed host blocks, so that an op producing a large output in a loop
// (inference, training steps) reuses memory instead of asking the OS for fresh pages each
// time: glibc serves large blocks by mmap, and first-touch page faults on a new 1 MiB
// output cost as much as a 512x512 matrix product.
#pragma once
#include <cstdlib>
#include <mutex>
#include <unordered_map>
#include <vector>

#include "../../core/storage.hpp"

namespace ga::backend::cpu {

class HostBlockCache {
 public:
  static constexpr size_t kMinCached = size_t(64) << 10;  // smaller blocks: malloc is already fast

  /// The process-wide cache. Never destroyed, so storages freed during static destruction
  /// still have somewhere to go.
  static HostBlockCache& instance() {
    static HostBlockCache* c = new HostBlockCache();
    return *c;
  }

  /// 64-byte aligned memory for nbytes, from the cache when a block of the same rounded size
  /// is there. Throws ga::Error when the system is out of memory.
  std::shared_ptr<Storage> allocate(size_t nbytes) {
    const size_t rounded = round_up(nbytes);
    void* p = rounded ? take(rounded) : nullptr;
    if (!p && rounded) p = std::aligned_alloc(64, rounded);
    GA_CHECK(p || !rounded, Error, "out of memory allocating ", nbytes, " bytes");
    return std::make_shared<Storage>(nbytes, Device::cpu(), p, [this, rounded](void* q) { give_back(q, rounded); });
  }

  /// Bytes the cache may hold (default 1 GiB); 0 disables caching and frees what it holds.
  void set_limit(size_t bytes) {
    std::lock_guard<std::mutex> lock(mu_);
    limit_ = bytes;
    trim_locked();
  }
  size_t cached_bytes() const {
    std::lock_guard<std::mutex> lock(mu_);
    return cached_;
  }

 private:
  static size_t round_up(size_t n) {
    const size_t unit = n >= kMinCached ? 4096 : 64;
    return (n + unit - 1) / unit * unit;
  }
  void* take(size_t rounded) {
    if (rounded < kMinCached) return nullptr;
    std::lock_guard<std::mutex> lock(mu_);
    auto it = free_.find(rounded);
    if (it == free_.end() || it->second.empty()) return nullptr;
    void* p = it->second.back();
    it->second.pop_back();
    cached_ -= rounded;
    return p;
  }
  void give_back(void* p, size_t rounded) {
    if (!p) return;
    if (rounded >= kMinCached) {
      std::lock_guard<std::mutex> lock(mu_);
      if (cached_ + rounded <= limit_) {
        free_[rounded].push_back(p);
        cached_ += rounded;
        return;
      }
    }
    std::free(p);
  }
  void trim_locked() {
    for (auto& [size, blocks] : free_) {
      while (cached_ > limit_ && !blocks.empty()) {
        std::free(blocks.back());
        blocks.pop_back();
        cached_ -= size;
      }
    }
  }

  mutable std::mutex mu_;
  std::unordered_map<size_t, std::vector<void*>> free_;
  size_t cached_ = 0;
  size_t limit_ = size_t(1) << 30;
};

}  // namespace ga::backend::cpu

namespace ga {
/// Caps the memory the CPU backend keeps for reuse after tensors are freed (default 1 GiB;
/// 0 turns the cache off and returns its memory to the system).
inline void set_cpu_cache_limit(size_t bytes) { backend::cpu::HostBlockCache::instance().set_limit(bytes); }
}  // namespace ga
