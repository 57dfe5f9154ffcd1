// Read-only bytes of a file (mmapped) or of a buffer, with a keep-alive handle, shared by the
// file readers (safetensors, zip): a tensor that aliases the bytes holds the handle, so the
// mapping lives exactly as long as something uses it.
#pragma once
#include <fcntl.h>
#include <sys/mman.h>
#include <sys/stat.h>
#include <unistd.h>

#include <cerrno>
#include <cstdint>
#include <cstring>
#include <memory>
#include <string>
#include <vector>

#include "../core/error.hpp"

namespace ga::io {

namespace detail {

/// An mmapped file. Private copy-on-write: the file is opened read-only and never written,
/// yet an in-place op on a tensor that aliases it modifies its own pages instead of faulting.
struct Mapping {
  void* addr = nullptr;
  size_t size = 0;
  Mapping() = default;
  Mapping(const Mapping&) = delete;
  Mapping& operator=(const Mapping&) = delete;
  ~Mapping() {
    if (addr) munmap(addr, size);
  }
};

inline std::string errno_text() { return std::strerror(errno); }

}  // namespace detail

/// Read-only bytes [data, data + size), kept alive by whoever holds `owner`.
struct ByteSource {
  const uint8_t* data = nullptr;
  size_t size = 0;
  std::shared_ptr<void> owner;  // the mapping or the vector; null for an empty file
  bool file_mapped = false;     // owner is a file mapping (see release_pages)
};

/// Drops the memory pages that lie wholly inside [p, p + n) from this process's resident set,
/// when `src` is a mapped file and the range is inside it; otherwise does nothing. For bytes
/// the caller has finished with (a weight replaced by a converted copy): reading them again
/// re-reads the file, so a change written through a tensor aliasing them would be lost.
inline void release_pages(const ByteSource& src, const void* p, size_t n) {
  const auto lo = reinterpret_cast<uintptr_t>(p), base = reinterpret_cast<uintptr_t>(src.data);
  if (!src.file_mapped || lo < base || n > src.size || lo - base > src.size - n) return;
  const uintptr_t page = static_cast<uintptr_t>(sysconf(_SC_PAGESIZE));
  const uintptr_t first = (lo + page - 1) / page * page, last = (lo + n) / page * page;
  // The mapping starts on a page boundary, so [first, last) is inside it. Advice only: a
  // failure leaves the pages resident, which is harmless.
  if (last > first) madvise(reinterpret_cast<void*>(first), last - first, MADV_DONTNEED);
}

/// Maps the regular file `path` (an empty file gives an empty source). IOError naming the
/// path when it cannot be opened, is not a regular file, or cannot be mapped. A file changed or
/// truncated by someone else while mapped is outside the contract (POSIX delivers SIGBUS on
/// reads past a truncated end).
inline ByteSource map_file(const std::string& path) {
  // O_NONBLOCK: opening a FIFO must not wait for a writer (it is rejected just below).
  const int fd = ::open(path.c_str(), O_RDONLY | O_CLOEXEC | O_NONBLOCK);
  GA_CHECK(fd >= 0, IOError, path, ": cannot open: ", detail::errno_text());
  struct stat st {};
  if (fstat(fd, &st) != 0) {
    const std::string e = detail::errno_text();
    ::close(fd);
    throw IOError(cat(path, ": cannot stat: ", e));
  }
  if (!S_ISREG(st.st_mode)) {
    ::close(fd);
    throw IOError(cat(path, ": not a regular file"));
  }
  ByteSource src;
  const uint64_t size = static_cast<uint64_t>(st.st_size);
  if (size == 0) {
    ::close(fd);
    return src;
  }
  void* addr = mmap(nullptr, size, PROT_READ | PROT_WRITE, MAP_PRIVATE, fd, 0);
  const std::string map_err = addr == MAP_FAILED ? detail::errno_text() : "";
  ::close(fd);  // the mapping stays valid without the descriptor
  GA_CHECK(addr != MAP_FAILED, IOError, path, ": cannot mmap ", size, " bytes: ", map_err);
  auto mapping = std::make_shared<detail::Mapping>();
  mapping->addr = addr;
  mapping->size = size;
  src.data = static_cast<const uint8_t*>(addr);
  src.size = size;
  src.owner = std::move(mapping);
  src.file_mapped = true;
  return src;
}

/// The bytes of a vector (kept alive by the source). Requires `bytes` non-null.
inline ByteSource buffer_source(std::shared_ptr<std::vector<uint8_t>> bytes) {
  ByteSource src;
  src.data = bytes->data();
  src.size = bytes->size();
  src.owner = std::move(bytes);
  return src;
}

}  // namespace ga::io
