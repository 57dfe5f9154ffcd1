// Writing a whole file all-or-nothing: the bytes go to a temporary file beside the target,
// which is flushed and then moved into place, so a reader never sees a partial file and an
// existing file the user owns is never replaced unless the caller asked for it.
#pragma once
#include <fcntl.h>
#include <sys/stat.h>
#include <unistd.h>

#include <atomic>
#include <cerrno>
#include <cstring>
#include <string>
#include <vector>

#include "../core/error.hpp"

namespace ga::io::detail {

/// Writes all of [p, p + n) to fd, retrying short writes and EINTR; false on error (errno set).
inline bool write_all(int fd, const void* p, size_t n) {
  const char* c = static_cast<const char*>(p);
  while (n > 0) {
    const ssize_t w = ::write(fd, c, n);
    if (w < 0 && errno == EINTR) continue;
    if (w <= 0) return false;
    c += w;
    n -= static_cast<size_t>(w);
  }
  return true;
}

/// One piece of a file: `size` bytes at `data`; `what` names it in an error ("the header").
struct FileChunk {
  const void* data;
  size_t size;
  std::string what;
};

/// Throws IOError naming `path` when it exists and `overwrite` is false. Callers check before
/// doing expensive work; write_file_atomically checks again at the end.
inline void refuse_existing(const std::string& path, bool overwrite) {
  struct stat st {};
  GA_CHECK(overwrite || ::lstat(path.c_str(), &st) != 0, IOError, path,
           ": already exists; not overwriting it (pass overwrite=true to replace it)");
}

/// Writes the chunks, in order, as the whole content of `path`. Requires the directory of
/// `path` to exist and be writable. Guarantees: on success `path` holds exactly the chunks;
/// on any failure (IOError naming `path` and what failed) `path` is as it was and no
/// temporary file is left. Without `overwrite`, an existing `path` is never replaced, even
/// one that appears while writing (link() refuses it; on filesystems without hard links the
/// existence check is the best available).
inline void write_file_atomically(const std::string& path, const std::vector<FileChunk>& chunks,
                                  bool overwrite) {
  refuse_existing(path, overwrite);
  const size_t slash = path.rfind('/');
  const std::string dir = slash == std::string::npos ? std::string() : path.substr(0, slash + 1);
  const std::string base = slash == std::string::npos ? path : path.substr(slash + 1);
  static std::atomic<unsigned> counter{0};
  std::string tmp;
  int fd = -1;
  for (int attempt = 0; attempt < 100 && fd < 0; ++attempt) {
    tmp = cat(dir, ".", base, ".tmp-", ::getpid(), "-", counter++);
    fd = ::open(tmp.c_str(), O_WRONLY | O_CREAT | O_EXCL | O_CLOEXEC, 0666);
    if (fd < 0 && errno != EEXIST) break;
  }
  GA_CHECK(fd >= 0, IOError, path, ": cannot create a temporary file next to it (", tmp, "): ",
           std::strerror(errno));
  auto fail = [&](const std::string& what) {
    const std::string e = std::strerror(errno);
    if (fd >= 0) ::close(fd);
    ::unlink(tmp.c_str());
    throw IOError(cat(path, ": ", what, ": ", e));
  };
  for (const FileChunk& c : chunks)
    if (c.size && !write_all(fd, c.data, c.size)) fail("cannot write " + c.what);
  if (::fsync(fd) != 0) fail("cannot flush to disk");
  if (::close(fd) != 0) {
    fd = -1;
    fail("cannot close");
  }
  fd = -1;
  if (overwrite) {
    if (::rename(tmp.c_str(), path.c_str()) != 0) fail("cannot rename the temporary file into place");
    return;
  }
  if (::link(tmp.c_str(), path.c_str()) == 0) {
    ::unlink(tmp.c_str());
    return;
  }
  const int link_errno = errno;
  struct stat st {};
  if (link_errno == EEXIST || ::lstat(path.c_str(), &st) == 0) {
    ::unlink(tmp.c_str());
    throw IOError(cat(path, ": already exists; not overwriting it (pass overwrite=true to replace it)"));
  }
  if (::rename(tmp.c_str(), path.c_str()) != 0) fail("cannot rename the temporary file into place");
}

}  // namespace ga::io::detail
