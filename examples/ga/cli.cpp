// The helpers cli.hpp declares: output checks, model metadata, JSON strings, common parsing.
#include "cli.hpp"

#include <sys/stat.h>

#include <filesystem>

#include <ga/tensor.hpp>
#include <ga/io/json.hpp>
#include <ga/io/safetensors.hpp>

namespace ga_cli {

void check_output_path(const std::string& path, bool force) {
  struct stat st {};
  if (::lstat(path.c_str(), &st) == 0) {
    GA_CHECK(force, ga::IOError, path, ": already exists; not overwriting it (pass --force to replace it)");
    GA_CHECK(!S_ISDIR(st.st_mode), ga::IOError, path, ": is a directory");
  }
  const std::filesystem::path parent = std::filesystem::path(path).parent_path();
  std::error_code ec;
  GA_CHECK(parent.empty() || std::filesystem::is_directory(parent, ec), ga::IOError, path,
           ": cannot write it: directory ", parent.string(), " does not exist");
}

ModelFileInfo read_model_info(const std::string& path) {
  const ga::io::SafetensorsFile f = ga::io::SafetensorsFile::open(path);
  ModelFileInfo info;
  info.path = path;
  info.metadata = f.metadata();
  auto format = info.metadata.find("format");
  GA_CHECK(format != info.metadata.end() && format->second == "ga.clip", ga::IOError, path,
           ": not a converted CLIP model (no \"format\": \"ga.clip\" metadata); convert the checkpoint with "
           "'ga convert' first");
  auto version = info.metadata.find("format_version");
  GA_CHECK(version != info.metadata.end() && version->second == "1", ga::IOError, path,
           ": model file format version \"", version == info.metadata.end() ? "" : version->second,
           "\" is not the \"1\" this build reads; re-convert the checkpoint");
  auto config = info.metadata.find("config");
  GA_CHECK(config != info.metadata.end(), ga::IOError, path, ": the model file has no \"config\" metadata");
  try {
    info.config = ga::clip::ClipConfig::from_json(ga::io::parse_json(config->second, path + " (metadata \"config\")"));
  } catch (const ga::IOError&) {
    throw;
  } catch (const ga::Error& e) {
    throw ga::IOError(ga::cat(path, ": metadata \"config\": ", e.what()));
  }
  return info;
}

std::string json_string(const std::string& s) {
  std::string clean;
  clean.reserve(s.size());
  const char* p = s.data();
  const char* end = p + s.size();
  while (p != end) {
    const size_t n = ga::io::utf8_sequence_length(p, end);
    if (n == 0) {
      clean += "\xEF\xBF\xBD";  // U+FFFD
      ++p;
    } else {
      clean.append(p, n);
      p += n;
    }
  }
  return ga::io::Json(clean).dump();
}

bool parse_common(const std::string& command, const std::vector<std::string>& argv,
                  const std::vector<Option>& options, const char* usage, Args& out) {
  out = parse_args(command, argv, options);
  if (out.flag("help")) {
    std::cout << usage;
    return true;
  }
  if (out.has("threads")) ga::set_num_threads(static_cast<int>(out.get_int("threads", 1, 1024, 0)));
  return false;
}

}  // namespace ga_cli
