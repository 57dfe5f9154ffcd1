// Shared pieces of the `ga` tool: the per-command argument parser, usage errors, and the
// helpers several commands use (output-file checks, progress on stderr, reading a converted
// model's metadata, JSON text). Each command is `int run(const Args&)`; main.cpp dispatches.
//
// Exit codes: 0 success; 1 the command ran and failed on its input (one line on stderr naming
// the file, text or key at fault); 2 bad usage (unknown option, missing argument or value).
#pragma once
#include <cerrno>
#include <cstdint>
#include <cstdlib>
#include <iostream>
#include <map>
#include <set>
#include <stdexcept>
#include <string>
#include <vector>

#include <ga/clip/config.hpp>
#include <ga/core/error.hpp>

namespace ga_cli {

/// Bad usage: main prints "ga <command>: <message> (see 'ga <command> --help')" and exits 2.
struct UsageError : std::runtime_error {
  using std::runtime_error::runtime_error;
};

/// One option of a command: "--name" alone (a flag) or "--name VALUE" / "--name=VALUE".
struct Option {
  std::string name;  // without the leading dashes
  bool takes_value;
};

/// A command's parsed arguments. --help and --threads are handled by the parser's caller.
struct Args {
  std::string command;
  std::map<std::string, std::string> values;  // options given with a value (the last one wins)
  std::set<std::string> flags;                // options given without a value
  std::vector<std::string> positional;

  bool flag(const std::string& name) const { return flags.count(name) != 0; }
  bool has(const std::string& name) const { return values.count(name) != 0; }
  /// The value of --name; UsageError when it was not given.
  const std::string& required(const std::string& name) const {
    auto it = values.find(name);
    if (it == values.end()) throw UsageError("missing required option --" + name);
    return it->second;
  }
  std::string get(const std::string& name, const std::string& fallback) const {
    auto it = values.find(name);
    return it == values.end() ? fallback : it->second;
  }
  /// The integer value of --name in [lo, hi], or `fallback` when absent; UsageError otherwise.
  int64_t get_int(const std::string& name, int64_t lo, int64_t hi, int64_t fallback) const {
    auto it = values.find(name);
    if (it == values.end()) return fallback;
    const std::string& s = it->second;
    char* end = nullptr;
    errno = 0;
    const long long v = s.empty() ? 0 : std::strtoll(s.c_str(), &end, 10);
    if (s.empty() || *end != '\0' || errno != 0 || v < lo || v > hi)
      throw UsageError("--" + name + " needs an integer from " + std::to_string(lo) + " to " + std::to_string(hi) +
                       ", got '" + s + "'");
    return v;
  }
};

/// Parses the arguments after the command name. Options may come before, between or after the
/// positional arguments; "--" ends the options (for texts that start with '-'); a lone "-" is
/// positional. Always known: --help / -h (a flag) and --threads N. UsageError for an unknown
/// option, a missing value, or a value given to a flag.
inline Args parse_args(const std::string& command, const std::vector<std::string>& argv,
                       const std::vector<Option>& options) {
  Args a;
  a.command = command;
  std::vector<Option> all = options;
  all.push_back({"help", false});
  all.push_back({"threads", true});
  bool only_positional = false;
  for (size_t i = 0; i < argv.size(); ++i) {
    const std::string& s = argv[i];
    if (only_positional || s.size() < 2 || s[0] != '-') {
      a.positional.push_back(s);
      continue;
    }
    if (s == "--") {
      only_positional = true;
      continue;
    }
    if (s == "-h") {
      a.flags.insert("help");
      continue;
    }
    if (s.compare(0, 2, "--") != 0) throw UsageError("unknown option '" + s + "'");
    const size_t eq = s.find('=');
    const std::string name = s.substr(2, eq == std::string::npos ? std::string::npos : eq - 2);
    const Option* opt = nullptr;
    for (const Option& o : all)
      if (o.name == name) opt = &o;
    if (!opt) throw UsageError("unknown option '" + s.substr(0, eq) + "'");
    if (!opt->takes_value) {
      if (eq != std::string::npos) throw UsageError("option --" + name + " takes no value");
      a.flags.insert(name);
      continue;
    }
    if (eq != std::string::npos) {
      a.values[name] = s.substr(eq + 1);
    } else {
      if (i + 1 >= argv.size()) throw UsageError("option --" + name + " needs a value");
      a.values[name] = argv[++i];
    }
  }
  return a;
}

/// Progress lines on stderr ("ga <command>: ..."), so that stdout stays the command's output.
inline void progress(const std::string& command, const std::string& line) {
  std::cerr << "ga " << command << ": " << line << "\n" << std::flush;
}

/// Checks before any work that `path` can be created: it must not exist unless `force`
/// (nothing the user owns is replaced without asking), and its directory must exist.
/// Throws ga::IOError naming the path.
void check_output_path(const std::string& path, bool force);

/// A converted model file's metadata, read without loading the weights (tokenize, info and
/// preprocess need nothing else). IOError naming the file if it is not a ga.clip file.
struct ModelFileInfo {
  std::string path;
  ga::clip::ClipConfig config;
  std::map<std::string, std::string> metadata;
  bool has_merges() const { return metadata.count("tokenizer.merges") != 0; }
};
ModelFileInfo read_model_info(const std::string& path);

/// s as a JSON string literal; bytes that are not UTF-8 become U+FFFD, so the output is always
/// valid JSON (a file name need not be UTF-8).
std::string json_string(const std::string& s);

// ---- option help shared by the commands' usage texts (literals, so that each usage text
// stays one string literal) ----
#define GA_CLI_HELP_COMMON                          \
  "  --threads N     threads for CPU kernels\n" \
  "  --help          this text\n"
#define GA_CLI_HELP_OUT                                     \
  "  --out OUT.npy   the output file (numpy .npy)\n" \
  "  --force         replace OUT.npy if it exists (otherwise an existing file is an error)\n"
#define GA_CLI_HELP_BF16                                                                         \
  "  --bf16          fast, approximate: weights rounded to bf16 and products computed in\n" \
  "                  bf16 with f32 sums (AMX / AVX512-BF16 CPUs; cosine to f32 >= 0.999;\n" \
  "                  elsewhere emulated: no faster than f32, often slower)\n" \
  "  --int8          fast, approximate: weights quantized to 7-bit integers, inputs to\n" \
  "                  7 bits (images) or 8 (text), exact integer sums (AVX2 CPUs; cosine\n" \
  "                  to f32 >= 0.999 on random weights; not with --bf16)\n"

// ---- the commands (convert_commands.cpp, clip_commands.cpp) ----
int run_convert(const std::vector<std::string>& argv);
int run_info(const std::vector<std::string>& argv);
int run_tokenize(const std::vector<std::string>& argv);
int run_preprocess(const std::vector<std::string>& argv);
int run_encode_image(const std::vector<std::string>& argv);
int run_encode_text(const std::vector<std::string>& argv);
int run_zeroshot(const std::vector<std::string>& argv);

/// Parses argv for a command; prints `usage` and returns true when --help was given (the
/// command then exits 0); applies --threads.
bool parse_common(const std::string& command, const std::vector<std::string>& argv,
                  const std::vector<Option>& options, const char* usage, Args& out);

}  // namespace ga_cli
