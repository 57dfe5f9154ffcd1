// Storage: a block of bytes on a device, shared by every view of a tensor.
// It either owns its memory (given by a backend's allocate, freed through free_fn) or
// wraps memory the caller owns (from_blob, mmapped weights), keeping an optional keep-alive handle.
#pragma once
#include <cstddef>
#include <cstdlib>
#include <functional>
#include <memory>

#include "device.hpp"
#include "error.hpp"

namespace ga {

class Storage {
 public:
  /// Allocates `nbytes` on `device` through `alloc`, released through `free_fn`.
  Storage(size_t nbytes, Device device, void* data, std::function<void(void*)> free_fn)
      : data_(data), nbytes_(nbytes), device_(device), free_(std::move(free_fn)) {}
  ~Storage() {
    if (free_) free_(data_);
  }
  Storage(const Storage&) = delete;
  Storage& operator=(const Storage&) = delete;

  void* data() const { return data_; }
  size_t nbytes() const { return nbytes_; }
  Device device() const { return device_; }

  /// Wraps memory the caller owns; `keep_alive` (may be null) is held until the storage dies.
  static std::shared_ptr<Storage> wrap(void* data, size_t nbytes, Device device,
                                       std::shared_ptr<void> keep_alive = nullptr) {
    return std::make_shared<Storage>(nbytes, device, data,
                                     [keep = std::move(keep_alive)](void*) mutable { keep.reset(); });
  }

 private:
  void* data_;
  size_t nbytes_;
  Device device_;
  std::function<void(void*)> free_;
};

}  // namespace ga
