// Shared by the CLIP benchmarks (bench_clip.cpp, bench_clip_tool.cpp): the models measured
// (OpenAI's published hyperparameters), converted model files of the real size with random
// weights (written once to a cache directory), the real prompts, and the list of matrix
// products each tower performs (for the GEMM ceiling). Bench-only: it may read ../shared.
#pragma once
#include <sys/resource.h>
#include <sys/stat.h>
#include <unistd.h>

#include <cmath>
#include <cstdint>
#include <cstdio>
#include <cstdlib>
#include <fstream>
#include <map>
#include <sstream>
#include <string>
#include <utility>
#include <vector>

#include <ga/clip/config.hpp>
#include <ga/clip/tokenizer.hpp>
#include <ga/tensor.hpp>
#include <ga/io/inflate.hpp>
#include <ga/io/safetensors.hpp>

#include "bench_threads.hpp"

#ifndef GA_SOURCE_DIR
#error "GA_SOURCE_DIR must be defined (bench/CMakeLists.txt does it)"
#endif

namespace clipbench {

using ga::clip::ClipConfig;

struct ModelSpec {
  std::string name;             // OpenAI's name, e.g. "ViT-B/32"
  ClipConfig cfg;
  double image_gflops = 0;      // per image, 2 per multiply-add (docs/clip.md's table)
  bool full = false;            // timed at batch 1 and 16 (else batch 1 only)
};

/// OpenAI's CLIP(...) arguments for a model (docs/clip.md section 3).
inline ClipConfig make_config(int64_t embed, int64_t res, std::vector<int64_t> layers, int64_t width, int64_t patch,
                              int64_t text_width, int64_t text_heads) {
  ClipConfig c;
  c.embed_dim = embed;
  c.image_resolution = res;
  c.vision_layers = std::move(layers);
  c.vision_width = width;
  c.vision_patch_size = patch;
  c.context_length = 77;
  c.vocab_size = 49408;
  c.transformer_width = text_width;
  c.transformer_heads = text_heads;
  c.transformer_layers = 12;
  c.vision_heads = ga::clip::default_vision_heads(c.vision_layers, c.vision_width);
  c.activation = "quick_gelu";
  ga::clip::validate(c);
  return c;
}

inline const std::vector<ModelSpec>& all_specs() {
  static const std::vector<ModelSpec> specs = {
      {"ViT-B/32", make_config(512, 224, {12}, 768, 32, 512, 8), 8.8, true},
      {"RN50", make_config(1024, 224, {3, 4, 6, 3}, 64, 0, 512, 8), 12.2, true},
      {"RN50x4", make_config(640, 288, {4, 6, 10, 6}, 80, 0, 640, 10), 42.6, false},
      {"ViT-L/14@336px", make_config(768, 336, {24}, 1024, 14, 768, 12), 381.9, false},
      {"RN101", make_config(512, 224, {3, 4, 23, 3}, 64, 0, 512, 8), 19.5, false},
      {"RN50x16", make_config(768, 384, {6, 8, 18, 8}, 96, 0, 768, 12), 149.4, false},
      {"RN50x64", make_config(1024, 448, {3, 15, 36, 10}, 128, 0, 1024, 16), 529.1, false},
      {"ViT-B/16", make_config(512, 224, {12}, 768, 16, 512, 8), 35.1, false},
      {"ViT-L/14", make_config(768, 224, {24}, 1024, 14, 768, 12), 162.0, false},
  };
  return specs;
}

inline const ModelSpec& spec(const std::string& name) {
  for (const auto& s : all_specs())
    if (s.name == name) return s;
  throw ga::ValueError("clip bench: unknown model " + name);
}

/// The models a run measures: GA_CLIP_BENCH_MODELS (comma-separated), default the four of
/// issue 3 point 5.
inline std::vector<std::string> selected_models() {
  const char* env = std::getenv("GA_CLIP_BENCH_MODELS");
  std::string s = env && *env ? env : "ViT-B/32,RN50,RN50x4,ViT-L/14@336px";
  std::vector<std::string> out;
  std::stringstream ss(s);
  for (std::string item; std::getline(ss, item, ',');)
    if (!item.empty()) out.push_back(spec(item).name);
  return out;
}

inline std::string file_tag(std::string name) {
  for (char& c : name)
    if (c == '/' || c == '@') c = '-';
  return name;
}

inline std::string cache_dir() {
  const char* s = std::getenv("GA_CLIP_BENCH_CACHE");
  std::string d = s && *s ? s : "clip_bench_cache";
  ::mkdir(d.c_str(), 0777);
  return d;
}

inline std::string vocab_path() {
  const char* s = std::getenv("GA_CLIP_VOCAB");
  return s && *s ? s : std::string(GA_SOURCE_DIR) + "/../shared/clip/bpe_simple_vocab_16e6.txt.gz";
}

inline std::string read_file(const std::string& path) {
  std::ifstream f(path, std::ios::binary);
  GA_CHECK(f.good(), ga::IOError, path, ": cannot open");
  std::ostringstream ss;
  ss << f.rdbuf();
  return ss.str();
}

/// The BPE text as the converter stores it: the header line and the 48894 merges OpenAI's
/// tokenizer uses (49152 - 256 - 2), from the .txt or .txt.gz vocabulary.
inline std::string merges_text(const std::string& path) {
  std::string data = read_file(path);
  if (data.size() >= 2 && static_cast<unsigned char>(data[0]) == 0x1f && static_cast<unsigned char>(data[1]) == 0x8b) {
    const std::vector<uint8_t> raw = ga::io::gunzip(reinterpret_cast<const uint8_t*>(data.data()), data.size(), path);
    data.assign(raw.begin(), raw.end());
  }
  size_t pos = 0;
  for (int line = 0; line < 1 + 48894 && pos != std::string::npos; ++line) {
    pos = data.find('\n', pos);
    if (pos != std::string::npos) ++pos;
  }
  if (pos != std::string::npos) data.resize(pos);
  return data;
}

/// "a photo of a {class}." over the first n classes of bench/clip_classes.txt (Food-101).
inline std::vector<std::string> prompts(size_t n = 64) {
  const std::string path = std::string(GA_SOURCE_DIR) + "/bench/clip_classes.txt";
  std::istringstream in(read_file(path));
  std::vector<std::string> out;
  for (std::string line; std::getline(in, line) && out.size() < n;) {
    if (line.empty() || line[0] == '#') continue;
    out.push_back("a photo of a " + line + ".");
  }
  GA_CHECK(out.size() == n, ga::ValueError, path, ": needs ", n, " classes, has ", out.size());
  return out;
}

/// Random weights for one tensor of the state dict, scaled like a trained network's so that
/// activations stay O(1) through every layer (no overflow, no denormals): weights
/// N(0, 1/fan_in); LayerNorm / BatchNorm scale 1, shift 0, running stats (0, 1); biases 0;
/// embeddings as OpenAI's initialize_parameters.
inline ga::Tensor random_weight(const std::string& name, const std::vector<int64_t>& shape, ga::Generator& g) {
  auto ends = [&](const char* s) { return ga::clip::detail::ends_with(name, s); };
  const ga::Shape sh(shape.begin(), shape.end());
  if (name == "logit_scale") return ga::full(sh, std::log(1.0 / 0.07));
  if (ends("running_var")) return ga::ones(sh);
  if (ends("running_mean") || ends(".bias")) return ga::zeros(sh);
  const bool norm = name.find(".ln_") != std::string::npos || name.find("ln_final") != std::string::npos ||
                    name.find(".bn") != std::string::npos || ends("downsample.1.weight");
  if (norm) return ga::ones(sh);
  if (name == "token_embedding.weight") return ga::randn(sh, g, ga::DType::f32, 0.0, 0.02);
  if (name == "positional_embedding") return ga::randn(sh, g, ga::DType::f32, 0.0, 0.01);
  if (ends("class_embedding") || ends("attnpool.positional_embedding") || name == "visual.positional_embedding")
    return ga::randn(sh, g, ga::DType::f32, 0.0, 1.0 / std::sqrt(double(shape.back())));
  if (name == "visual.proj" || name == "text_projection")  // [in, out], applied as x @ proj
    return ga::randn(sh, g, ga::DType::f32, 0.0, 1.0 / std::sqrt(double(shape[0])));
  int64_t fan_in = 1;
  for (size_t i = 1; i < shape.size(); ++i) fan_in *= shape[i];
  return ga::randn(sh, g, ga::DType::f32, 0.0, 1.0 / std::sqrt(double(std::max<int64_t>(fan_in, 1))));
}

inline bool file_exists(const std::string& p) {
  struct stat st {};
  return ::stat(p.c_str(), &st) == 0;
}

/// The converted model file (docs: "The converted model file") for `s`, f32, random weights,
/// with the real tokenizer; written on first use into cache_dir().
inline std::string ensure_model_file(const ModelSpec& s) {
  const std::string path = cache_dir() + "/ga_" + file_tag(s.name) + "_f32.safetensors";
  if (file_exists(path)) return path;
  std::fprintf(stderr, "clip bench: writing %s (random f32 weights of the real size)\n", path.c_str());
  ga::Generator g(20261125);
  std::vector<std::pair<std::string, ga::Tensor>> tensors;
  for (const auto& [name, shape] : ga::clip::expected_shapes(s.cfg)) {
    if (ga::clip::detail::ends_with(name, "num_batches_tracked")) continue;
    tensors.emplace_back(name, random_weight(name, shape, g));
  }
  std::map<std::string, std::string> meta;
  meta["format"] = "ga.clip";
  meta["format_version"] = "1";
  meta["config"] = s.cfg.to_json().dump();
  meta["activation"] = s.cfg.activation;
  {
    ga::io::Json p = ga::io::Json::object();
    p.set("resolution", s.cfg.image_resolution);
    p.set("resize", "shorter_side");
    p.set("interpolation", "bicubic");
    p.set("crop", "center");
    ga::io::Json mean = ga::io::Json::array(), stdv = ga::io::Json::array();
    for (size_t c = 0; c < 3; ++c) {
      mean.push_back(s.cfg.image_mean[c]);
      stdv.push_back(s.cfg.image_std[c]);
    }
    p.set("mean", std::move(mean));
    p.set("std", std::move(stdv));
    meta["preprocess"] = p.dump();
  }
  const std::string merges = merges_text(vocab_path());
  GA_CHECK(ga::clip::Tokenizer::from_merges_text(merges).vocab_size() == size_t(s.cfg.vocab_size), ga::ValueError,
           vocab_path(), ": not CLIP's 49408-token vocabulary");
  meta["tokenizer.merges"] = merges;
  meta["source"] = "random weights (bench/clip_bench_common.hpp)";
  ga::io::save_safetensors(path, tensors, meta, /*overwrite=*/false);
  return path;
}

/// Bytes the weights take in f32 (every tensor of the state dict but num_batches_tracked).
inline double weights_f32_bytes(const ClipConfig& cfg) {
  double n = 0;
  for (const auto& [name, shape] : ga::clip::expected_shapes(cfg)) {
    if (ga::clip::detail::ends_with(name, "num_batches_tracked")) continue;
    double e = 1;
    for (int64_t d : shape) e *= double(d);
    n += e;
  }
  return 4 * n;
}

inline long peak_rss_bytes() {
  struct rusage ru {};
  ::getrusage(RUSAGE_SELF, &ru);
  return ru.ru_maxrss * 1024L;
}

inline long current_rss_bytes() {
  std::ifstream f("/proc/self/statm");
  long pages = 0, resident = 0;
  f >> pages >> resident;
  return resident * ::sysconf(_SC_PAGESIZE);
}

// ---------------------------------------------------------------------------------------
// The matrix products of a forward pass (the nominal work of docs/clip.md's FLOP counts).

enum class GemmKind {
  Linear,  // x [M, K] @ w[N, K]^T: transformer and attention-pool projections
  Conv,    // w [M=O, K=C*k*k] @ im2col [K, N=B*OH*OW]: images side by side (the batched ceiling)
  Attn,    // batch x ([M, K] @ [K, N]): per-head scores and weighted values
};

struct Gemm {
  std::string label;  // e.g. "layer2.conv2" or "mlp.c_fc"
  GemmKind kind = GemmKind::Linear;
  int64_t batch = 1, M = 0, K = 0, N = 0;
  int64_t count = 1;  // occurrences per forward pass
  double flops() const { return 2.0 * double(batch) * double(M) * double(K) * double(N); }
};

/// Adds g, merging with an identical shape already listed.
inline void add_gemm(std::vector<Gemm>& v, const Gemm& g) {
  for (auto& e : v)
    if (e.kind == g.kind && e.batch == g.batch && e.M == g.M && e.K == g.K && e.N == g.N) {
      e.count += g.count;
      return;
    }
  v.push_back(g);
}

inline void transformer_gemms(std::vector<Gemm>& v, int64_t B, int64_t L, int64_t W, int64_t heads, int64_t layers) {
  const int64_t T = B * L, hd = W / heads;
  add_gemm(v, {"attn.in_proj", GemmKind::Linear, 1, T, W, 3 * W, layers});
  add_gemm(v, {"attn.scores", GemmKind::Attn, B * heads, L, hd, L, layers});
  add_gemm(v, {"attn.values", GemmKind::Attn, B * heads, L, L, hd, layers});
  add_gemm(v, {"attn.out_proj", GemmKind::Linear, 1, T, W, W, layers});
  add_gemm(v, {"mlp.c_fc", GemmKind::Linear, 1, T, W, 4 * W, layers});
  add_gemm(v, {"mlp.c_proj", GemmKind::Linear, 1, T, 4 * W, W, layers});
}

/// The image tower's products at batch B.
inline std::vector<Gemm> image_gemms(const ClipConfig& c, int64_t B) {
  std::vector<Gemm> v;
  const int64_t R = c.image_resolution;
  if (c.vision_is_vit()) {
    const int64_t p = c.vision_patch_size, g = R / p, W = c.vision_width;
    // The patch embedding, as the tower computes it: a linear layer over the patches.
    add_gemm(v, {"conv1 (patches)", GemmKind::Linear, 1, B * g * g, 3 * p * p, W, 1});
    transformer_gemms(v, B, g * g + 1, W, c.vision_heads, c.vision_layers[0]);
    add_gemm(v, {"proj", GemmKind::Linear, 1, B, W, c.embed_dim, 1});
    return v;
  }
  const int64_t w = c.vision_width;
  auto conv = [&](const std::string& label, int64_t cin, int64_t cout, int64_t k, int64_t hw) {
    add_gemm(v, {label, GemmKind::Conv, 1, cout, cin * k * k, B * hw * hw, 1});
  };
  int64_t H = R / 2;
  conv("stem.conv1", 3, w / 2, 3, H);
  conv("stem.conv2", w / 2, w / 2, 3, H);
  conv("stem.conv3", w / 2, w, 3, H);
  H /= 2;
  int64_t inplanes = w;
  for (int s = 0; s < 4; ++s) {
    const int64_t planes = w << s;
    const std::string st = "layer" + std::to_string(s + 1);
    for (int64_t b = 0; b < c.vision_layers[size_t(s)]; ++b) {
      const int64_t stride = (s > 0 && b == 0) ? 2 : 1;
      conv(st + ".conv1", inplanes, planes, 1, H);
      conv(st + ".conv2", planes, planes, 3, H);
      const int64_t H2 = H / stride;
      conv(st + ".conv3", planes, 4 * planes, 1, H2);
      if (b == 0) conv(st + ".downsample", inplanes, 4 * planes, 1, H2);
      inplanes = 4 * planes;
      H = H2;
    }
  }
  // Attention pooling as OpenAI computes it (every token queries; the output is token 0's).
  const int64_t C = w * 32, L = H * H + 1, heads = c.vision_heads;
  add_gemm(v, {"attnpool.q_proj", GemmKind::Linear, 1, B * L, C, C, 1});
  add_gemm(v, {"attnpool.k_proj", GemmKind::Linear, 1, B * L, C, C, 2});  // k and v
  add_gemm(v, {"attnpool.scores", GemmKind::Attn, B * heads, L, C / heads, L, 1});
  add_gemm(v, {"attnpool.values", GemmKind::Attn, B * heads, L, L, C / heads, 1});
  add_gemm(v, {"attnpool.c_proj", GemmKind::Linear, 1, B * L, C, c.embed_dim, 1});
  return v;
}

/// The text tower's products for B prompts computed over L positions.
inline std::vector<Gemm> text_gemms(const ClipConfig& c, int64_t B, int64_t L) {
  std::vector<Gemm> v;
  transformer_gemms(v, B, L, c.transformer_width, c.transformer_heads, c.transformer_layers);
  add_gemm(v, {"text_projection", GemmKind::Linear, 1, B, c.transformer_width, c.embed_dim, 1});
  return v;
}

inline double total_flops(const std::vector<Gemm>& v) {
  double f = 0;
  for (const auto& g : v) f += g.flops() * double(g.count);
  return f;
}

}  // namespace clipbench
