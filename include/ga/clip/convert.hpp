// The CLIP checkpoint converter behind `ga convert`: reads what users download (OpenAI's
// TorchScript releases, torch.save zips including open_clip's, open_clip .safetensors, Hugging
// Face directories, and our own converted files), renames everything to OpenAI's state-dict
// names, infers and checks the config, and writes the one-file model format the loader reads
// (tensors + "__metadata__": config, activation, preprocessing constants, BPE merges).
#pragma once
#include <sys/stat.h>

#include <cmath>
#include <cstdint>
#include <filesystem>
#include <fstream>
#include <functional>
#include <iterator>
#include <map>
#include <optional>
#include <set>
#include <string>
#include <utility>
#include <vector>

#include "../io/inflate.hpp"
#include "../io/json.hpp"
#include "../io/safetensors.hpp"
#include "../io/torch_checkpoint.hpp"
#include "../tensor.hpp"
#include "config.hpp"
#include "tokenizer.hpp"

namespace ga::clip {

/// How convert_checkpoint converts.
struct ConvertOptions {
  /// A BPE merges file (bpe_simple_vocab_16e6.txt or its .gz). Empty: Hugging Face inputs use
  /// their merges.txt, converted files keep their merges, anything else is written without a
  /// tokenizer (with a warning: text commands then need a re-conversion with a vocabulary).
  std::string vocab_path;
  /// "keep" (default), "f32", "f16" or "bf16". "keep": the source's dtype when every tensor
  /// has the same one of f32 / f16 / bf16; f32 when they are mixed (OpenAI's fp16 releases
  /// keep some tensors in f32) or f64, so that the default never loses precision.
  std::string dtype = "keep";
  /// `--config` overrides (a JSON object with ClipConfig::to_json keys), applied after the
  /// config is inferred (and, for Hugging Face, after config.json); null when none.
  io::Json config_overrides;
  /// Replace an existing output file. Without it an existing output is an IOError, raised
  /// before the input is read.
  bool overwrite = false;
  /// Receives progress lines and warnings (warnings start with "warning: "); may be empty.
  std::function<void(const std::string&)> log;
};

/// A checkpoint read and renamed to OpenAI's names, before any config or dtype decision.
struct ClipSource {
  /// "torchscript", "torch-zip", "safetensors", "huggingface" or "ga.clip" (a converted file).
  std::string format;
  /// The input's file (or directory) name and format, for the "source" metadata entry.
  std::string description;
  /// OpenAI state-dict names; TorchScript scalars, num_batches_tracked and Hugging Face's
  /// position_ids dropped; q/k/v stacked and projections transposed for Hugging Face.
  std::vector<std::pair<std::string, Tensor>> tensors;
  /// Overrides the input itself carries: Hugging Face config.json (heads, activation, the
  /// sizes, checked against the tensors) and preprocessor_config.json (mean, std); a
  /// converted file's whole config. Null when the input carries none.
  io::Json config_overrides;
  /// Where config_overrides came from (for error messages).
  std::string config_origin;
  /// BPE merges text carried by the input (Hugging Face merges.txt, a converted file's
  /// metadata), if any.
  std::optional<std::string> merges_text;
  std::string merges_origin;
};

/// Canonical state-dict names (clip.md section 1): when any name starts with "state_dict."
/// (open_clip's {"epoch", "state_dict", "optimizer"} wrapper, flattened), only those entries
/// are kept, without the prefix; then a leading "module." (DataParallel) is stripped from every
/// name; then TorchScript's scalars (input_resolution, context_length, vocab_size) and
/// BatchNorm's num_batches_tracked are dropped. A name that becomes a duplicate is a KeyError.
inline std::vector<std::pair<std::string, Tensor>> canonicalize_state_dict(
    const std::vector<std::pair<std::string, Tensor>>& tensors, const std::string& origin);

/// Hugging Face CLIPModel names -> OpenAI names (clip.md section 3): q/k/v projections stacked
/// into in_proj_weight / in_proj_bias, visual_projection and text_projection transposed, every
/// other tensor renamed; "*.position_ids" dropped. A name it does not know is kept unchanged
/// (check_shapes reports it as unexpected); a layer missing one of q/k/v is a KeyError naming it.
inline std::vector<std::pair<std::string, Tensor>> huggingface_to_openai(
    const std::vector<std::pair<std::string, Tensor>>& tensors, const std::string& origin);

/// True when the names are Hugging Face CLIPModel's (text_model.* / vision_model.*).
inline bool has_huggingface_names(const std::vector<std::string>& names);

/// Reads `input` (detected by content, not by name: a directory with config.json is Hugging
/// Face; a file starting with a zip signature is a torch.save / TorchScript archive; a file
/// with a safetensors header is open_clip's or a converted file) and returns it with OpenAI
/// names. IOError naming the input for anything else (including pre-1.6 pickle-only
/// torch.save files and a Hugging Face model.safetensors given without its directory).
inline ClipSource read_clip_source(const std::string& input, const ConvertOptions& options = {});

/// Converts `input` to the model file `output` (the format of docs/clip.md and the loader):
/// read_clip_source, infer_config, the input's own config, then options.config_overrides
/// (apply_overrides: a value that contradicts a tensor is a ValueError naming key and tensor),
/// check_shapes (KeyError / ShapeError naming the tensors), cast to the chosen dtype, attach the
/// tokenizer (its vocabulary size must equal the config's vocab_size: ValueError otherwise)
/// and write atomically. Refuses to replace `output` unless options.overwrite (IOError).
inline void convert_checkpoint(const std::string& input, const std::string& output,
                               const ConvertOptions& options = {});

/// The "preprocess" metadata value for `cfg` (JSON text).
inline std::string preprocess_metadata(const ClipConfig& cfg);

// ---------------------------------------------------------------------------------------
// Implementation

namespace detail {

inline void log_line(const ConvertOptions& o, const std::string& line) {
  if (o.log) o.log(line);
}

inline std::string base_name(const std::string& path) {
  std::string p = path;
  while (p.size() > 1 && p.back() == '/') p.pop_back();
  const size_t slash = p.rfind('/');
  return slash == std::string::npos ? p : p.substr(slash + 1);
}

inline std::string read_text_file(const std::string& path, const std::string& what) {
  std::error_code ec;
  GA_CHECK(!std::filesystem::is_directory(path, ec), IOError, path, ": is a directory, expected ", what);
  std::ifstream f(path, std::ios::binary);
  GA_CHECK(f.good(), IOError, path, ": cannot open ", what);
  std::string data((std::istreambuf_iterator<char>(f)), std::istreambuf_iterator<char>());
  GA_CHECK(!f.bad(), IOError, path, ": cannot read ", what);
  return data;
}

/// Reads a BPE merges file, gunzipping it when it is gzip data (by content).
inline std::string read_merges_file(const std::string& path) {
  std::string data = read_text_file(path, "a BPE vocabulary (bpe_simple_vocab_16e6.txt or .txt.gz)");
  if (data.size() >= 2 && static_cast<unsigned char>(data[0]) == 0x1F && static_cast<unsigned char>(data[1]) == 0x8B) {
    const std::vector<uint8_t> text = io::gunzip(reinterpret_cast<const uint8_t*>(data.data()), data.size(), path,
                                                 Tokenizer::kMaxVocabBytes);
    data.assign(text.begin(), text.end());
  }
  return data;
}

/// The header line and the first `merges` merge lines of a merges text: what the tokenizer
/// reads (the reference ignores everything after them), so the metadata stays small.
inline std::string trim_merges_text(const std::string& text, size_t merges) {
  size_t pos = 0;
  for (size_t line = 0; line < merges + 1; ++line) {
    const size_t nl = text.find('\n', pos);
    if (nl == std::string::npos) return text;
    pos = nl + 1;
  }
  return text.substr(0, pos);
}

/// GPT-2's bytes_to_unicode: the byte-level symbol of each byte, printable Latin-1 first.
inline std::vector<std::string> byte_symbols_in_vocab_order() {
  std::vector<int> order;
  std::vector<char32_t> ch(256);
  auto printable = [](int b) { return (b >= 0x21 && b <= 0x7E) || (b >= 0xA1 && b <= 0xAC) || (b >= 0xAE && b <= 0xFF); };
  for (int b = 0; b < 256; ++b)
    if (printable(b)) order.push_back(b), ch[b] = static_cast<char32_t>(b);
  int extra = 0;
  for (int b = 0; b < 256; ++b)
    if (!printable(b)) order.push_back(b), ch[b] = static_cast<char32_t>(256 + extra++);
  std::vector<std::string> out;
  for (int b : order) out.push_back(utf8_encode(U32(1, ch[b])));
  return out;
}

/// Checks a Hugging Face vocab.json against the merges the tokenizer was built from: the ids
/// Hugging Face's CLIPTokenizer reads from vocab.json must be the ids our tokenizer derives
/// from merges.txt (byte symbols, the same with </w>, one per merge, then the two specials).
inline void check_vocab_json(const std::string& path, const std::string& merges_text, size_t merges) {
  const io::Json vocab = io::parse_json(read_text_file(path, "a vocabulary (vocab.json)"), path);
  GA_CHECK(vocab.is_object(), IOError, path, ": expected a JSON object (token -> id), got ", vocab.kind_name());
  std::vector<std::string> names = byte_symbols_in_vocab_order();
  for (size_t i = 0; i < 256; ++i) names.push_back(names[i] + "</w>");
  size_t pos = merges_text.find('\n');
  pos = pos == std::string::npos ? merges_text.size() : pos + 1;
  for (size_t m = 0; m < merges && pos < merges_text.size(); ++m) {
    size_t end = merges_text.find('\n', pos);
    if (end == std::string::npos) end = merges_text.size();
    std::string line = merges_text.substr(pos, end - pos);
    if (!line.empty() && line.back() == '\r') line.pop_back();
    std::string joined;
    for (char c : line)
      if (c != ' ' && c != '\t') joined += c;
    names.push_back(joined);
    pos = end + 1;
  }
  names.push_back("<|startoftext|>");
  names.push_back("<|endoftext|>");
  std::map<std::string, int64_t> expected;  // a later duplicate wins, as in Python's dict
  for (size_t i = 0; i < names.size(); ++i) expected[names[i]] = static_cast<int64_t>(i);
  GA_CHECK(vocab.size() == expected.size(), IOError, path, ": holds ", vocab.size(),
           " tokens, but merges.txt defines ", expected.size());
  for (size_t i = 0; i < vocab.size(); ++i) {
    const std::string& tok = vocab.keys()[i];
    const io::Json& id = vocab.values()[i];
    auto it = expected.find(tok);
    GA_CHECK(it != expected.end(), IOError, path, ": token \"", tok, "\" is not one merges.txt defines");
    GA_CHECK(id.is_int() && id.as_int() == it->second, IOError, path, ": token \"", tok, "\" has id ", id.dump(),
             ", merges.txt gives it id ", it->second, " (the two files do not belong together)");
  }
}

/// A member of a Hugging Face config object, or its transformers default when absent.
inline const io::Json& hf_member(const io::Json& obj, const std::string& key, const io::Json& fallback) {
  const io::Json* v = obj.is_object() ? obj.find(key) : nullptr;
  return v ? *v : fallback;
}

inline int64_t hf_int(const io::Json& obj, const std::string& key, int64_t fallback, const std::string& where) {
  const io::Json def(fallback);
  const io::Json& v = hf_member(obj, key, def);
  GA_CHECK(v.is_int() && v.as_int() > 0, IOError, where, ": \"", key, "\" must be a positive integer, got ", v.dump());
  return v.as_int();
}

/// Reads the Hugging Face config.json (and preprocessor_config.json if present) of `dir` into
/// ClipConfig overrides. Absent keys take transformers' CLIPTextConfig / CLIPVisionConfig
/// defaults, as transformers itself does when it loads the directory (save_pretrained writes
/// only the keys that differ from them).
inline io::Json huggingface_overrides(const std::string& dir, const ConvertOptions& opts) {
  const std::string path = dir + "/config.json";
  const io::Json cfg = io::parse_json(read_text_file(path, "a Hugging Face config (config.json)"), path);
  GA_CHECK(cfg.is_object(), IOError, path, ": expected a JSON object, got ", cfg.kind_name());
  if (const io::Json* mt = cfg.find("model_type"))
    GA_CHECK(mt->is_string() && mt->as_string() == "clip", IOError, path, ": model_type ", mt->dump(),
             " is not supported; only CLIPModel checkpoints (model_type \"clip\", both towers) are");
  const io::Json empty = io::Json::object();
  const io::Json& text = hf_member(cfg, "text_config", empty);
  const io::Json& vision = hf_member(cfg, "vision_config", empty);
  GA_CHECK(text.is_object() && vision.is_object(), IOError, path,
           ": \"text_config\" and \"vision_config\" must be objects");
  const std::string tw = path + " text_config", vw = path + " vision_config";

  // The activation: one kind for both towers, as ClipConfig has one.
  auto act = [&](const io::Json& tower, const std::string& where) {
    const io::Json def("quick_gelu");
    const io::Json& v = hf_member(tower, "hidden_act", def);
    GA_CHECK(v.is_string() && (v.as_string() == "quick_gelu" || v.as_string() == "gelu"), IOError, where,
             ": hidden_act ", v.dump(), " is not supported (\"quick_gelu\" and \"gelu\" are)");
    return v.as_string();
  };
  const std::string text_act = act(text, tw), vision_act = act(vision, vw);
  GA_CHECK(text_act == vision_act, IOError, path, ": the text tower uses ", text_act, " but the vision tower ",
           vision_act, "; one activation for both towers is supported");
  for (const auto* tower : {&text, &vision}) {
    const io::Json def(1e-5);
    const io::Json& eps = hf_member(*tower, "layer_norm_eps", def);
    GA_CHECK(eps.is_number() && std::fabs(eps.as_number() - 1e-5) < 1e-12, IOError,
             tower == &text ? tw : vw, ": layer_norm_eps ", eps.dump(), " is not supported (CLIP's 1e-05 is)");
  }

  io::Json o = io::Json::object();
  // Sizes first: checked against the tensors by apply_overrides, so a config.json that does
  // not describe its weights is an error naming the key and the tensor.
  o.set("embed_dim", hf_int(cfg, "projection_dim", 512, path));
  o.set("image_resolution", hf_int(vision, "image_size", 224, vw));
  o.set("vision_layers", hf_int(vision, "num_hidden_layers", 12, vw));
  o.set("vision_width", hf_int(vision, "hidden_size", 768, vw));
  o.set("vision_patch_size", hf_int(vision, "patch_size", 32, vw));
  o.set("context_length", hf_int(text, "max_position_embeddings", 77, tw));
  o.set("vocab_size", hf_int(text, "vocab_size", 49408, tw));
  o.set("transformer_width", hf_int(text, "hidden_size", 512, tw));
  o.set("transformer_layers", hf_int(text, "num_hidden_layers", 12, tw));
  // What shapes cannot tell.
  o.set("transformer_heads", hf_int(text, "num_attention_heads", 8, tw));
  o.set("vision_heads", hf_int(vision, "num_attention_heads", 12, vw));
  o.set("activation", text_act);

  // transformers pools the text feature at the first eos_token_id, or at the largest id when
  // eos_token_id is the legacy 2; both are our (OpenAI's) rule only when EOT is the largest id.
  const io::Json eos_def(int64_t(49407));
  const io::Json& eos = hf_member(text, "eos_token_id", eos_def);
  const int64_t vocab = o.at("vocab_size").as_int();
  if (eos.is_int() && eos.as_int() != 2 && eos.as_int() != vocab - 1)
    log_line(opts, cat("warning: ", tw, ": eos_token_id ", eos.as_int(), " is not the largest token id ", vocab - 1,
                       "; transformers pools the text feature at that token, this converter's model at the largest "
                       "id (OpenAI's rule), so text embeddings may differ"));

  const std::string pre = dir + "/preprocessor_config.json";
  std::error_code ec;
  if (std::filesystem::exists(pre, ec)) {
    const io::Json p = io::parse_json(read_text_file(pre, "a preprocessor config"), pre);
    GA_CHECK(p.is_object(), IOError, pre, ": expected a JSON object, got ", p.kind_name());
    for (const char* key : {"image_mean", "image_std"})
      if (const io::Json* v = p.find(key)) o.set(key, *v);
  }
  return o;
}

inline bool starts_with_str(const std::string& s, const std::string& p) { return s.compare(0, p.size(), p) == 0; }

/// Replaces the leading `from` of `name` with `to`; false when `name` does not start with it.
inline bool rename_prefix(std::string& name, const std::string& from, const std::string& to) {
  if (!starts_with_str(name, from)) return false;
  name = to + name.substr(from.size());
  return true;
}

/// What a file starts with, for format detection.
inline std::string file_head(const std::string& path, size_t n) {
  std::ifstream f(path, std::ios::binary);
  GA_CHECK(f.good(), IOError, path, ": cannot open");
  std::string head(n, '\0');
  f.read(&head[0], static_cast<std::streamsize>(n));
  head.resize(static_cast<size_t>(f.gcount()));
  return head;
}

inline bool looks_like_safetensors(const std::string& head) {
  if (head.size() < 9) return false;
  uint64_t len = 0;
  for (int i = 0; i < 8; ++i) len |= static_cast<uint64_t>(static_cast<unsigned char>(head[i])) << (8 * i);
  return len >= 2 && len <= io::SafetensorsFile::kMaxHeaderBytes && head[8] == '{';
}

inline std::vector<std::pair<std::string, Tensor>> read_safetensors_tensors(const io::SafetensorsFile& f) {
  std::vector<std::pair<std::string, Tensor>> out;
  out.reserve(f.size());
  for (const std::string& k : f.keys()) out.emplace_back(k, f.get(k));
  return out;
}

/// A Hugging Face directory's weights: model.safetensors, the shards of
/// model.safetensors.index.json, or pytorch_model.bin (a torch.save zip).
inline std::vector<std::pair<std::string, Tensor>> read_huggingface_weights(const std::string& dir,
                                                                          std::string& file_used) {
  std::error_code ec;
  const std::string single = dir + "/model.safetensors", index = dir + "/model.safetensors.index.json",
                    bin = dir + "/pytorch_model.bin";
  if (std::filesystem::exists(single, ec)) {
    file_used = single;
    return read_safetensors_tensors(io::SafetensorsFile::open(single));
  }
  if (std::filesystem::exists(index, ec)) {
    file_used = index;
    const io::Json j = io::parse_json(read_text_file(index, "a safetensors index"), index);
    GA_CHECK(j.is_object() && j.contains("weight_map") && j.at("weight_map").is_object(), IOError, index,
             ": expected an object with a \"weight_map\" object");
    std::set<std::string> shards;
    for (const io::Json& v : j.at("weight_map").values()) {
      GA_CHECK(v.is_string() && !v.as_string().empty() && v.as_string().find('/') == std::string::npos &&
                   v.as_string() != "..",
               IOError, index, ": weight_map values must be file names in the same directory, got ", v.dump());
      shards.insert(v.as_string());
    }
    std::vector<std::pair<std::string, Tensor>> out;
    for (const std::string& s : shards) {
      auto part = read_safetensors_tensors(io::SafetensorsFile::open(dir + "/" + s));
      out.insert(out.end(), part.begin(), part.end());
    }
    return out;
  }
  if (std::filesystem::exists(bin, ec)) {
    file_used = bin;
    return io::read_torch_checkpoint(bin).tensors;
  }
  throw IOError(cat(dir, ": a Hugging Face directory (it has config.json) but no model.safetensors, "
                         "model.safetensors.index.json or pytorch_model.bin"));
}

inline std::string shape_text(const Shape& s) { return shape_str(std::vector<int64_t>(s.begin(), s.end())); }

}  // namespace detail

inline std::vector<std::pair<std::string, Tensor>> canonicalize_state_dict(
    const std::vector<std::pair<std::string, Tensor>>& tensors, const std::string& origin) {
  bool wrapped = false;
  for (const auto& kv : tensors) wrapped = wrapped || detail::starts_with_str(kv.first, "state_dict.");
  std::vector<std::pair<std::string, Tensor>> out;
  std::set<std::string> seen;
  for (const auto& [name, t] : tensors) {
    std::string n = name;
    if (wrapped && !detail::rename_prefix(n, "state_dict.", "")) continue;  // epoch, optimizer, ...
    detail::rename_prefix(n, "module.", "");
    if (detail::is_torchscript_scalar(n) || detail::ends_with(n, ".num_batches_tracked")) continue;
    GA_CHECK(seen.insert(n).second, KeyError, origin, ": tensor \"", n, "\" appears twice (as \"", name,
             "\" and under another prefix)");
    out.emplace_back(std::move(n), t);
  }
  return out;
}

inline bool has_huggingface_names(const std::vector<std::string>& names) {
  for (const auto& n : names)
    if (detail::starts_with_str(n, "text_model.") || detail::starts_with_str(n, "vision_model.")) return true;
  return false;
}

inline std::vector<std::pair<std::string, Tensor>> huggingface_to_openai(
    const std::vector<std::pair<std::string, Tensor>>& tensors, const std::string& origin) {
  using detail::rename_prefix;
  // q/k/v of one layer, keyed by the OpenAI prefix of its attention ("transformer.resblocks.3.attn.").
  struct Qkv {
    Tensor w[3], b[3];
  };
  std::map<std::string, Qkv> qkv;
  std::vector<std::string> qkv_order;
  std::vector<std::pair<std::string, Tensor>> out;
  for (const auto& [name, t] : tensors) {
    if (detail::ends_with(name, ".position_ids")) continue;  // a buffer older transformers saved
    std::string n = name;
    if (n == "visual_projection.weight" || n == "text_projection.weight") {
      GA_CHECK(t.dim() == 2, ShapeError, origin, ": tensor ", n, " has shape ", detail::shape_text(t.shape()),
               ", expected a matrix");
      out.emplace_back(n[0] == 'v' ? "visual.proj" : "text_projection", t.transpose(0, 1).contiguous());
      continue;
    }
    bool layer = false;
    if (rename_prefix(n, "text_model.encoder.layers.", "transformer.resblocks.") ||
        rename_prefix(n, "vision_model.encoder.layers.", "visual.transformer.resblocks.")) {
      layer = true;
      const size_t dot = n.find('.', n.find("resblocks.") + 10);
      if (dot != std::string::npos) {
        const std::string block = n.substr(0, dot + 1);
        std::string rest = n.substr(dot + 1);
        static const std::pair<const char*, int> proj[] = {{"self_attn.q_proj.", 0}, {"self_attn.k_proj.", 1},
                                                          {"self_attn.v_proj.", 2}};
        bool stacked = false;
        for (const auto& [p, idx] : proj) {
          if (!detail::starts_with_str(rest, p)) continue;
          const std::string what = rest.substr(std::string(p).size());
          const std::string key = block + "attn.";
          if (!qkv.count(key)) qkv_order.push_back(key);
          if (what == "weight") qkv[key].w[idx] = t;
          else if (what == "bias") qkv[key].b[idx] = t;
          else break;
          stacked = true;
        }
        if (stacked) continue;
        rename_prefix(rest, "self_attn.out_proj.", "attn.out_proj.") || rename_prefix(rest, "layer_norm1.", "ln_1.") ||
            rename_prefix(rest, "layer_norm2.", "ln_2.") || rename_prefix(rest, "mlp.fc1.", "mlp.c_fc.") ||
            rename_prefix(rest, "mlp.fc2.", "mlp.c_proj.");
        n = block + rest;
      }
    }
    if (!layer) {
      if (n == "text_model.embeddings.token_embedding.weight") n = "token_embedding.weight";
      else if (n == "text_model.embeddings.position_embedding.weight") n = "positional_embedding";
      else if (n == "vision_model.embeddings.class_embedding") n = "visual.class_embedding";
      else if (n == "vision_model.embeddings.patch_embedding.weight") n = "visual.conv1.weight";
      else if (n == "vision_model.embeddings.position_embedding.weight") n = "visual.positional_embedding";
      else
        rename_prefix(n, "text_model.final_layer_norm.", "ln_final.") ||
            rename_prefix(n, "vision_model.pre_layrnorm.", "visual.ln_pre.") ||
            rename_prefix(n, "vision_model.post_layernorm.", "visual.ln_post.");
    }
    out.emplace_back(std::move(n), t);
  }
  static const char* kQkv[3] = {"q_proj", "k_proj", "v_proj"};
  for (const std::string& key : qkv_order) {
    const Qkv& g = qkv.at(key);
    // The Hugging Face layer this came from, for messages.
    std::string hf = key.substr(0, key.size() - 5);
    detail::rename_prefix(hf, "transformer.resblocks.", "text_model.encoder.layers.") ||
        detail::rename_prefix(hf, "visual.transformer.resblocks.", "vision_model.encoder.layers.");
    for (int part = 0; part < 2; ++part) {
      const Tensor* ts = part == 0 ? g.w : g.b;
      const char* suffix = part == 0 ? "weight" : "bias";
      if (!ts[0].defined() && !ts[1].defined() && !ts[2].defined()) continue;  // check_shapes names it
      for (int i = 0; i < 3; ++i)
        GA_CHECK(ts[i].defined(), KeyError, origin, ": tensor ", hf, ".self_attn.", kQkv[i], ".", suffix,
                 " is missing (its layer has the other attention projections)");
      for (int i = 1; i < 3; ++i)
        GA_CHECK(ts[i].shape() == ts[0].shape() && ts[i].dtype() == ts[0].dtype(), ShapeError, origin, ": tensor ",
                 hf, ".self_attn.", kQkv[i], ".", suffix, " is ", dtype_name(ts[i].dtype()), " ",
                 detail::shape_text(ts[i].shape()), " but ", hf, ".self_attn.q_proj.", suffix, " is ",
                 dtype_name(ts[0].dtype()), " ", detail::shape_text(ts[0].shape()));
      out.emplace_back(key + (part == 0 ? "in_proj_weight" : "in_proj_bias"), concat({ts[0], ts[1], ts[2]}, 0));
    }
  }
  return out;
}

inline ClipSource read_clip_source(const std::string& input, const ConvertOptions& options) {
  ClipSource src;
  std::error_code ec;
  const std::string name = detail::base_name(input);
  auto describe = [&](const std::string& format) {
    src.format = format;
    src.description = cat(name, " (", format, ")");
  };
  GA_CHECK(std::filesystem::exists(input, ec), IOError, input, ": no such file or directory");
  if (std::filesystem::is_directory(input, ec)) {
    GA_CHECK(std::filesystem::exists(input + "/config.json", ec), IOError, input,
             ": a directory, but not a Hugging Face model (no config.json); give a checkpoint file, or a directory "
             "with config.json, model.safetensors, vocab.json and merges.txt");
    describe("huggingface");
    detail::log_line(options, cat("reading ", input, " (a Hugging Face directory)"));
    std::string weights_file;
    auto raw = detail::read_huggingface_weights(input, weights_file);
    detail::log_line(options, cat(weights_file, ": ", raw.size(), " tensors"));
    src.config_overrides = detail::huggingface_overrides(input, options);
    src.config_origin = input + "/config.json";
    src.tensors = huggingface_to_openai(raw, weights_file);
    const std::string merges = input + "/merges.txt";
    if (std::filesystem::exists(merges, ec)) {
      src.merges_text = detail::read_text_file(merges, "BPE merges (merges.txt)");
      src.merges_origin = merges;
    }
    return src;
  }
  const std::string head = detail::file_head(input, 16);
  if (head.size() >= 4 && head.compare(0, 2, "PK") == 0 &&
      ((head[2] == 3 && head[3] == 4) || (head[2] == 5 && head[3] == 6))) {
    detail::log_line(options, cat("reading ", input, " (a zip archive)"));
    io::TorchCheckpoint ck = io::read_torch_checkpoint(input);
    describe(ck.format);
    detail::log_line(options, cat(input, ": ", ck.tensors.size(), " tensors (", ck.format, ")"));
    src.tensors = canonicalize_state_dict(ck.tensors, input);
    std::vector<std::string> names;
    for (const auto& kv : src.tensors) names.push_back(kv.first);
    if (has_huggingface_names(names)) {
      throw IOError(cat(input, ": holds Hugging Face tensor names (text_model.*, vision_model.*); convert the "
                               "directory it came from (with config.json, vocab.json, merges.txt) instead"));
    }
    return src;
  }
  if (detail::looks_like_safetensors(head)) {
    io::SafetensorsFile f = io::SafetensorsFile::open(input);
    const auto& meta = f.metadata();
    auto fmt = meta.find("format");
    if (fmt != meta.end() && fmt->second == "ga.clip") {
      describe("ga.clip");
      // Keep the original source visible through re-conversions.
      if (auto s = meta.find("source"); s != meta.end()) src.description = s->second;
      detail::log_line(options, cat("reading ", input, ": ", f.size(), " tensors (a converted ga.clip file)"));
      auto cfg = meta.find("config");
      GA_CHECK(cfg != meta.end(), IOError, input, ": a ga.clip file without \"config\" metadata");
      src.config_overrides = io::parse_json(cfg->second, input + " metadata \"config\"");
      src.config_origin = input + " metadata \"config\"";
      auto merges = meta.find("tokenizer.merges");
      if (merges != meta.end()) {
        src.merges_text = merges->second;
        src.merges_origin = input + " metadata \"tokenizer.merges\"";
      }
      src.tensors = detail::read_safetensors_tensors(f);
      return src;
    }
    if (has_huggingface_names(f.keys())) {
      throw IOError(cat(input, ": a Hugging Face checkpoint (tensor names text_model.*, vision_model.*); its head "
                               "counts and activation are in config.json, so convert the directory holding "
                               "model.safetensors, config.json, vocab.json and merges.txt instead of the file"));
    }
    describe("safetensors");
    detail::log_line(options, cat("reading ", input, ": ", f.size(), " tensors (safetensors)"));
    src.tensors = canonicalize_state_dict(detail::read_safetensors_tensors(f), input);
    return src;
  }
  if (!head.empty() && static_cast<unsigned char>(head[0]) == 0x80) {
    throw IOError(cat(input, ": a bare pickle (PyTorch's pre-1.6 torch.save format), which is not supported; "
                             "re-save it with a current PyTorch (torch.save writes a zip archive)"));
  }
  throw IOError(cat(input, ": not a recognised checkpoint (expected a torch.save or TorchScript zip archive, a "
                           ".safetensors file, or a Hugging Face directory with config.json)"));
}

inline std::string preprocess_metadata(const ClipConfig& cfg) {
  io::Json p = io::Json::object();
  p.set("resolution", cfg.image_resolution);
  p.set("resize", "shorter_side");
  p.set("interpolation", "bicubic");
  p.set("crop", "center");
  io::Json mean = io::Json::array(), std = io::Json::array();
  for (int c = 0; c < 3; ++c) {
    mean.push_back(cfg.image_mean[static_cast<size_t>(c)]);
    std.push_back(cfg.image_std[static_cast<size_t>(c)]);
  }
  p.set("mean", std::move(mean));
  p.set("std", std::move(std));
  return p.dump();
}

inline void convert_checkpoint(const std::string& input, const std::string& output, const ConvertOptions& options) {
  std::optional<DType> target;
  if (options.dtype == "f32") target = DType::f32;
  else if (options.dtype == "f16") target = DType::f16;
  else if (options.dtype == "bf16") target = DType::bf16;
  else
    GA_CHECK(options.dtype == "keep", ValueError, "convert: dtype must be f32, f16, bf16 or keep, got \"",
             options.dtype, "\"");
  if (!options.overwrite) {
    struct stat st {};
    GA_CHECK(::lstat(output.c_str(), &st) != 0, IOError, output, ": already exists; not overwriting it");
  }

  ClipSource src = read_clip_source(input, options);
  GA_CHECK(!src.tensors.empty(), IOError, input, ": holds no tensors");

  // Every model tensor must be floating point; f64 is narrowed (no CLIP ships in f64).
  std::set<DType> dtypes;
  for (const auto& [n, t] : src.tensors) {
    GA_CHECK(is_floating(t.dtype()), DTypeError, input, ": tensor ", n, " has dtype ", dtype_name(t.dtype()),
             ", expected a floating-point weight");
    dtypes.insert(t.dtype());
  }
  if (!target) {
    if (dtypes.size() == 1 && *dtypes.begin() != DType::f64) {
      target = *dtypes.begin();
    } else {
      target = DType::f32;
      std::string list;
      for (DType d : dtypes) list += std::string(list.empty() ? "" : ", ") + dtype_name(d);
      detail::log_line(options, cat(dtypes.size() == 1 ? "the input is " : "the input mixes dtypes (", list,
                                    dtypes.size() == 1 ? "" : ")", ": writing f32, which keeps every value of f32, "
                                    "f16 and bf16 exactly; --dtype f16 halves the size"));
    }
  }

  ShapeTable shapes;
  for (const auto& [n, t] : src.tensors) shapes.push_back({n, std::vector<int64_t>(t.shape().begin(), t.shape().end())});
  ClipConfig cfg = infer_config(shapes);
  if (!src.config_overrides.is_null()) {
    try {
      apply_overrides(cfg, src.config_overrides, shapes);
    } catch (const Error& e) {
      throw ValueError(cat(src.config_origin, ": does not fit the weights: ", e.what()));
    }
  }
  if (!options.config_overrides.is_null()) {
    try {
      apply_overrides(cfg, options.config_overrides, shapes);
    } catch (const Error& e) {
      throw ValueError(cat(input, ": ", e.what()));
    }
  }
  try {
    check_shapes(cfg, shapes);
  } catch (const KeyError& e) {
    throw KeyError(cat(input, ": ", e.what()));
  } catch (const ShapeError& e) {
    throw ShapeError(cat(input, ": ", e.what()));
  } catch (const ValueError& e) {
    throw ValueError(cat(input, ": ", e.what(), " (fix it with --config)"));
  }
  // What shapes cannot show: say what was assumed, so a user with a non-OpenAI checkpoint knows
  // which --config key to set.
  auto user_set = [&](const char* key) {
    return !options.config_overrides.is_null() && options.config_overrides.contains(key);
  };
  const bool carries_config = src.format == "huggingface" || src.format == "ga.clip";
  detail::log_line(options, cat("config: ", cfg.vision_is_vit() ? "ViT" : "ResNet", ", ", cfg.to_json().dump()));
  if (!carries_config && !user_set("activation") && src.format != "torchscript")
    detail::log_line(options, "activation: quick_gelu assumed (OpenAI's weights); models trained by LAION with "
                              "open_clip use exact GELU: add --config '{\"activation\": \"gelu\"}' for those");
  if (!carries_config && (!user_set("transformer_heads") || !user_set("vision_heads"))) {
    std::string inferred;
    if (!user_set("transformer_heads")) inferred += cat("text ", cfg.transformer_heads);
    if (!user_set("vision_heads")) inferred += cat(inferred.empty() ? "" : ", ", "image ", cfg.vision_heads);
    detail::log_line(options, cat("heads: ", inferred, " (OpenAI's rule); a checkpoint trained with other head "
                                  "counts needs --config '{\"transformer_heads\": N, \"vision_heads\": M}'"));
  }

  // The tokenizer: --vocab, else what the input carries.
  std::optional<std::string> merges = src.merges_text;
  std::string merges_origin = src.merges_origin;
  if (!options.vocab_path.empty()) {
    merges = detail::read_merges_file(options.vocab_path);
    merges_origin = options.vocab_path;
  }
  std::map<std::string, std::string> meta;
  if (merges) {
    const Tokenizer tok = Tokenizer::from_merges_text(*merges, merges_origin);
    GA_CHECK(static_cast<int64_t>(tok.vocab_size()) == cfg.vocab_size, ValueError, merges_origin, ": a vocabulary of ",
             tok.vocab_size(), " tokens, but the model's token_embedding has ", cfg.vocab_size,
             " rows; give the vocabulary the model was trained with");
    const size_t n_merges = tok.vocab_size() - 514;
    if (src.format == "huggingface" && merges_origin == src.merges_origin) {
      std::error_code ec;
      const std::string vocab_json = input + "/vocab.json";
      if (std::filesystem::exists(vocab_json, ec)) detail::check_vocab_json(vocab_json, *merges, n_merges);
    }
    meta["tokenizer.merges"] = detail::trim_merges_text(*merges, n_merges);
    detail::log_line(options, cat("tokenizer: ", tok.vocab_size(), " tokens from ", merges_origin));
  } else {
    detail::log_line(options, cat("warning: no vocabulary given; the model is written without a tokenizer, so "
                                  "tokenize, encode-text and zeroshot will need a re-conversion with --vocab "
                                  "bpe_simple_vocab_16e6.txt.gz (converting the converted file is enough)"));
  }

  meta["format"] = "ga.clip";
  meta["format_version"] = "1";
  meta["config"] = cfg.to_json().dump();
  meta["activation"] = cfg.activation;
  meta["preprocess"] = preprocess_metadata(cfg);
  meta["source"] = src.description;

  // Tensors in OpenAI's state-dict order, cast to the target dtype.
  std::map<std::string, const Tensor*> by_name;
  for (const auto& kv : src.tensors) by_name[kv.first] = &kv.second;
  std::vector<std::pair<std::string, Tensor>> out;
  uint64_t bytes = 0;
  for (const auto& [n, shape] : expected_shapes(cfg)) {
    auto it = by_name.find(n);
    if (it == by_name.end()) continue;  // num_batches_tracked
    const Tensor& t = *it->second;
    out.emplace_back(n, t.dtype() == *target ? t : t.to(*target));
    bytes += static_cast<uint64_t>(t.numel()) * dtype_size(*target);
  }
  detail::log_line(options, cat("writing ", output, ": ", out.size(), " tensors in ", dtype_name(*target), ", ",
                                (bytes + 500000) / 1000000, " MB"));
  io::save_safetensors(output, out, meta, options.overwrite);
}

}  // namespace ga::clip
