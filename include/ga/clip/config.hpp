// CLIP model configuration: the hyperparameters of OpenAI's `CLIP` constructor, inferred
// from a checkpoint's tensor names and shapes exactly as OpenAI's build_model does (so no
// config file is needed), overridable with `--config` JSON, and checked against every tensor
// of the architecture. Needs only tensor names and shapes, never weights.
#pragma once
#include <algorithm>
#include <array>
#include <cstdint>
#include <map>
#include <set>
#include <string>
#include <utility>
#include <vector>

#include "../core/error.hpp"
#include "../io/json.hpp"

namespace ga::clip {

using io::Json;

/// Tensor name -> shape, in checkpoint order. A scalar has an empty shape.
using ShapeTable = std::vector<std::pair<std::string, std::vector<int64_t>>>;

/// The hyperparameters of OpenAI's `CLIP(embed_dim, image_resolution, vision_layers,
/// vision_width, vision_patch_size, context_length, vocab_size, transformer_width,
/// transformer_heads, transformer_layers)`, plus what that constructor derives or hard-codes
/// and other checkpoints change: the image tower's head count, the MLP activation and the
/// preprocessing constants. Defaults are ViT-B/32's.
struct ClipConfig {
  int64_t embed_dim = 512;
  int64_t image_resolution = 224;
  /// One entry (layer count) for a ViT; four (blocks per stage) for a ModifiedResNet.
  std::vector<int64_t> vision_layers{12};
  int64_t vision_width = 768;
  /// ViT only; 0 for a ModifiedResNet (OpenAI passes None).
  int64_t vision_patch_size = 32;
  int64_t context_length = 77;
  int64_t vocab_size = 49408;
  int64_t transformer_width = 512;
  int64_t transformer_heads = 8;
  int64_t transformer_layers = 12;
  /// OpenAI derives it (ViT: width / 64; ResNet attention pool: width * 32 / 64); kept as a
  /// field because checkpoints trained with other head counts exist and shapes cannot tell.
  int64_t vision_heads = 12;
  /// "quick_gelu" (x * sigmoid(1.702 x), OpenAI's weights) or "gelu" (exact, LAION's).
  std::string activation = "quick_gelu";
  std::array<double, 3> image_mean{0.48145466, 0.4578275, 0.40821073};
  std::array<double, 3> image_std{0.26862954, 0.26130258, 0.27577711};

  bool vision_is_vit() const { return vision_layers.size() == 1; }

  /// All fields as one JSON object, with OpenAI's key names; `vision_layers` is an integer
  /// for a ViT and an array of four for a ResNet, `vision_patch_size` null for a ResNet.
  inline Json to_json() const;
  /// The inverse of to_json. The ten constructor keys are required (KeyError naming the
  /// missing one); vision_heads defaults to OpenAI's derivation, activation and the
  /// preprocessing constants to OpenAI's. An unknown key, a value of the wrong type or out
  /// of range is a ValueError naming the key.
  inline static ClipConfig from_json(const Json& j);
};

/// OpenAI's rule for the image tower's head count.
inline int64_t default_vision_heads(const std::vector<int64_t>& vision_layers, int64_t vision_width) {
  return vision_layers.size() == 1 ? vision_width / 64 : vision_width * 32 / 64;
}

/// Throws ValueError naming the field when the config cannot describe a model: a non-positive
/// size, a head count that does not divide its width, a resolution that is not a multiple of
/// the patch (ViT) or of 32 (ResNet), an unknown activation, a non-positive std.
inline void validate(const ClipConfig& cfg);

/// Every tensor of OpenAI's state dict for `cfg`, with its exact shape, in OpenAI's
/// state-dict order. BatchNorm layers include `num_batches_tracked` (shape []); the three
/// scalar entries of some TorchScript releases (input_resolution, context_length,
/// vocab_size) are not part of the model and not listed.
inline ShapeTable expected_shapes(const ClipConfig& cfg);

/// The config OpenAI's build_model would construct from these tensors (clip.md section 3):
/// ViT iff `visual.proj` is present; heads are width / 64 as there, which is 0 below width 64
/// (validate and check_shapes reject that, and --config fixes it). Requires the tensors the
/// rules read (KeyError naming a missing one) with the ranks they need (ShapeError).
/// Activation and preprocessing constants cannot be seen in shapes: OpenAI's are assumed.
inline ClipConfig infer_config(const ShapeTable& shapes);

/// Applies `--config` overrides (a JSON object with any key of ClipConfig::to_json) to a
/// config inferred from `shapes`. A value that contradicts a tensor is a ValueError naming the
/// key, the value, the tensor and its shape; a result that fails validate() is a ValueError
/// naming the field. Keys are applied in order; on error `cfg` is unchanged.
inline void apply_overrides(ClipConfig& cfg, const Json& overrides, const ShapeTable& shapes);

/// Requires that `shapes` holds exactly the tensors of expected_shapes(cfg) with those shapes,
/// apart from two allowances: the three TorchScript scalars (input_resolution, context_length,
/// vocab_size) are ignored, as build_model deletes them, and `num_batches_tracked` may be
/// absent, as PyTorch's BatchNorm itself fills it in on load. Throws ValueError if the config
/// fails validate(); KeyError listing every missing and every unexpected tensor (and
/// duplicates); otherwise ShapeError listing every mis-shaped tensor, expected vs actual.
inline void check_shapes(const ClipConfig& cfg, const ShapeTable& shapes);

// ---------------------------------------------------------------------------------------
// Implementation

namespace detail {

inline std::string shape_str(const std::vector<int64_t>& s) {
  std::string out = "[";
  for (size_t i = 0; i < s.size(); ++i) out += (i ? ", " : "") + std::to_string(s[i]);
  return out + "]";
}

inline bool starts_with(const std::string& s, const std::string& p) {
  return s.size() >= p.size() && s.compare(0, p.size(), p) == 0;
}
inline bool ends_with(const std::string& s, const std::string& p) {
  return s.size() >= p.size() && s.compare(s.size() - p.size(), p.size(), p) == 0;
}

inline const std::vector<int64_t>* find_shape(const ShapeTable& t, const std::string& name) {
  for (const auto& [n, s] : t)
    if (n == name) return &s;
  return nullptr;
}

inline const std::vector<int64_t>& need_shape(const ShapeTable& t, const std::string& name,
                                             size_t rank) {
  const auto* s = find_shape(t, name);
  GA_CHECK(s != nullptr, KeyError, "clip config: tensor ", name,
           " is missing; it is needed to infer the model's configuration");
  GA_CHECK(s->size() == rank, ShapeError, "clip config: tensor ", name, " has shape ",
           shape_str(*s), ", expected rank ", rank);
  for (int64_t d : *s)
    GA_CHECK(d > 0, ShapeError, "clip config: tensor ", name, " has shape ", shape_str(*s),
             " with an empty dimension");
  return *s;
}

/// Distinct values of the dot-separated component `at` among names starting with `prefix`
/// (OpenAI's `len(set(k.split(".")[at] ...))`).
inline int64_t count_distinct(const ShapeTable& t, const std::string& prefix, size_t at) {
  std::set<std::string> seen;
  for (const auto& [name, shape] : t) {
    if (!starts_with(name, prefix)) continue;
    size_t pos = 0;
    for (size_t i = 0; i < at && pos != std::string::npos; ++i) {
      pos = name.find('.', pos);
      if (pos != std::string::npos) ++pos;
    }
    if (pos == std::string::npos) continue;
    seen.insert(name.substr(pos, name.find('.', pos) - pos));
  }
  return static_cast<int64_t>(seen.size());
}

/// sqrt(rows - 1) when rows = g^2 + 1 exactly, else -1.
inline int64_t grid_from_rows(int64_t rows) {
  int64_t g = 0;
  while ((g + 1) * (g + 1) <= rows - 1) ++g;
  return g * g + 1 == rows ? g : -1;
}

inline bool is_torchscript_scalar(const std::string& name) {
  return name == "input_resolution" || name == "context_length" || name == "vocab_size";
}

inline void add_linear(ShapeTable& t, const std::string& p, int64_t out, int64_t in) {
  t.push_back({p + ".weight", {out, in}});
  t.push_back({p + ".bias", {out}});
}
inline void add_layer_norm(ShapeTable& t, const std::string& p, int64_t w) {
  t.push_back({p + ".weight", {w}});
  t.push_back({p + ".bias", {w}});
}
inline void add_batch_norm(ShapeTable& t, const std::string& p, int64_t c) {
  for (const char* k : {".weight", ".bias", ".running_mean", ".running_var"})
    t.push_back({p + k, {c}});
  t.push_back({p + ".num_batches_tracked", {}});
}
inline void add_conv(ShapeTable& t, const std::string& p, int64_t out, int64_t in, int64_t k) {
  t.push_back({p + ".weight", {out, in, k, k}});
}

/// OpenAI's Transformer: ResidualAttentionBlocks in registration order (attn, ln_1, mlp, ln_2).
inline void add_transformer(ShapeTable& t, const std::string& p, int64_t w, int64_t layers) {
  for (int64_t i = 0; i < layers; ++i) {
    const std::string b = p + ".resblocks." + std::to_string(i);
    t.push_back({b + ".attn.in_proj_weight", {3 * w, w}});
    t.push_back({b + ".attn.in_proj_bias", {3 * w}});
    add_linear(t, b + ".attn.out_proj", w, w);
    add_layer_norm(t, b + ".ln_1", w);
    add_linear(t, b + ".mlp.c_fc", 4 * w, w);
    add_linear(t, b + ".mlp.c_proj", w, 4 * w);
    add_layer_norm(t, b + ".ln_2", w);
  }
}

inline void add_vit(ShapeTable& t, const ClipConfig& c) {
  const int64_t w = c.vision_width, grid = c.image_resolution / c.vision_patch_size;
  t.push_back({"visual.class_embedding", {w}});
  t.push_back({"visual.positional_embedding", {grid * grid + 1, w}});
  t.push_back({"visual.proj", {w, c.embed_dim}});
  add_conv(t, "visual.conv1", w, 3, c.vision_patch_size);
  add_layer_norm(t, "visual.ln_pre", w);
  add_transformer(t, "visual.transformer", w, c.vision_layers[0]);
  add_layer_norm(t, "visual.ln_post", w);
}

inline void add_resnet(ShapeTable& t, const ClipConfig& c) {
  const int64_t w = c.vision_width;
  add_conv(t, "visual.conv1", w / 2, 3, 3);
  add_batch_norm(t, "visual.bn1", w / 2);
  add_conv(t, "visual.conv2", w / 2, w / 2, 3);
  add_batch_norm(t, "visual.bn2", w / 2);
  add_conv(t, "visual.conv3", w, w / 2, 3);
  add_batch_norm(t, "visual.bn3", w);
  int64_t inplanes = w;
  for (int stage = 0; stage < 4; ++stage) {
    const int64_t planes = w << stage, stride = stage == 0 ? 1 : 2;
    for (int64_t b = 0; b < c.vision_layers[static_cast<size_t>(stage)]; ++b) {
      const std::string p = "visual.layer" + std::to_string(stage + 1) + "." + std::to_string(b);
      add_conv(t, p + ".conv1", planes, inplanes, 1);
      add_batch_norm(t, p + ".bn1", planes);
      add_conv(t, p + ".conv2", planes, planes, 3);
      add_batch_norm(t, p + ".bn2", planes);
      add_conv(t, p + ".conv3", planes * 4, planes, 1);
      add_batch_norm(t, p + ".bn3", planes * 4);
      // Bottleneck's rule: a downsample branch when stride > 1 or inplanes != planes * 4.
      // Only a stage's first block can meet it (afterwards inplanes == planes * 4).
      if ((b == 0 ? stride : 1) > 1 || inplanes != planes * 4) {
        add_conv(t, p + ".downsample.0", planes * 4, inplanes, 1);
        add_batch_norm(t, p + ".downsample.1", planes * 4);
      }
      inplanes = planes * 4;
    }
  }
  const int64_t e = w * 32, grid = c.image_resolution / 32;
  t.push_back({"visual.attnpool.positional_embedding", {grid * grid + 1, e}});
  add_linear(t, "visual.attnpool.k_proj", e, e);
  add_linear(t, "visual.attnpool.q_proj", e, e);
  add_linear(t, "visual.attnpool.v_proj", e, e);
  add_linear(t, "visual.attnpool.c_proj", c.embed_dim, e);
}

inline int64_t json_int(const Json& v, const std::string& key, bool positive = true) {
  GA_CHECK(v.is_int(), ValueError, "clip config: \"", key, "\" must be an integer, got ",
           v.kind_name() == std::string("a number") ? v.dump() : v.kind_name());
  const int64_t i = v.as_int();
  GA_CHECK(!positive || i > 0, ValueError, "clip config: \"", key, "\" must be positive, got ", i);
  return i;
}

inline std::array<double, 3> json_triple(const Json& v, const std::string& key) {
  GA_CHECK(v.is_array() && v.size() == 3, ValueError, "clip config: \"", key,
           "\" must be an array of 3 numbers, got ", v.dump());
  std::array<double, 3> out{};
  for (size_t i = 0; i < 3; ++i) {
    GA_CHECK(v[i].is_number(), ValueError, "clip config: \"", key,
             "\" must be an array of 3 numbers, got ", v.dump());
    out[i] = v[i].as_number();
  }
  return out;
}

/// Sets one field from JSON; ValueError naming the key for an unknown key or a bad value.
inline void set_field(ClipConfig& c, const std::string& key, const Json& v) {
  if (key == "embed_dim") c.embed_dim = json_int(v, key);
  else if (key == "image_resolution") c.image_resolution = json_int(v, key);
  else if (key == "vision_width") c.vision_width = json_int(v, key);
  else if (key == "context_length") c.context_length = json_int(v, key);
  else if (key == "vocab_size") c.vocab_size = json_int(v, key);
  else if (key == "transformer_width") c.transformer_width = json_int(v, key);
  else if (key == "transformer_heads") c.transformer_heads = json_int(v, key);
  else if (key == "transformer_layers") c.transformer_layers = json_int(v, key);
  else if (key == "vision_heads") c.vision_heads = json_int(v, key);
  else if (key == "vision_patch_size") c.vision_patch_size = v.is_null() ? 0 : json_int(v, key);
  else if (key == "vision_layers") {
    if (v.is_array()) {
      GA_CHECK(v.size() == 4, ValueError, "clip config: \"vision_layers\" must be an integer (ViT) "
               "or an array of 4 integers (ResNet), got ", v.dump());
      c.vision_layers.clear();
      for (const Json& x : v.values()) c.vision_layers.push_back(json_int(x, key));
    } else {
      c.vision_layers = {json_int(v, key)};
    }
  } else if (key == "activation") {
    GA_CHECK(v.is_string() && (v.as_string() == "quick_gelu" || v.as_string() == "gelu"),
             ValueError, "clip config: \"activation\" must be \"quick_gelu\" or \"gelu\", got ",
             v.dump());
    c.activation = v.as_string();
  } else if (key == "image_mean") c.image_mean = json_triple(v, key);
  else if (key == "image_std") c.image_std = json_triple(v, key);
  else
    throw ValueError(cat("clip config: unknown key \"", key, "\" (expected the keys of OpenAI's "
                         "CLIP constructor, vision_heads, activation, image_mean, image_std)"));
}

}  // namespace detail

inline Json ClipConfig::to_json() const {
  Json j = Json::object();
  j.set("embed_dim", embed_dim);
  j.set("image_resolution", image_resolution);
  if (vision_is_vit()) {
    j.set("vision_layers", vision_layers[0]);
  } else {
    Json a = Json::array();
    for (int64_t n : vision_layers) a.push_back(n);
    j.set("vision_layers", std::move(a));
  }
  j.set("vision_width", vision_width);
  j.set("vision_patch_size", vision_is_vit() ? Json(vision_patch_size) : Json());
  j.set("context_length", context_length);
  j.set("vocab_size", vocab_size);
  j.set("transformer_width", transformer_width);
  j.set("transformer_heads", transformer_heads);
  j.set("transformer_layers", transformer_layers);
  j.set("vision_heads", vision_heads);
  j.set("activation", activation);
  Json mean = Json::array(), std_ = Json::array();
  for (double m : image_mean) mean.push_back(m);
  for (double s : image_std) std_.push_back(s);
  j.set("image_mean", std::move(mean));
  j.set("image_std", std::move(std_));
  return j;
}

inline ClipConfig ClipConfig::from_json(const Json& j) {
  GA_CHECK(j.is_object(), ValueError, "clip config: expected a JSON object, got ", j.kind_name());
  for (const char* k : {"embed_dim", "image_resolution", "vision_layers", "vision_width",
                        "vision_patch_size", "context_length", "vocab_size", "transformer_width",
                        "transformer_heads", "transformer_layers"})
    GA_CHECK(j.contains(k), KeyError, "clip config: key \"", k, "\" is missing");
  ClipConfig c;
  for (size_t i = 0; i < j.size(); ++i) detail::set_field(c, j.keys()[i], j.values()[i]);
  if (!j.contains("vision_heads")) c.vision_heads = default_vision_heads(c.vision_layers, c.vision_width);
  GA_CHECK(c.vision_is_vit() == (c.vision_patch_size > 0), ValueError,
           "clip config: \"vision_patch_size\" must be a positive integer for a ViT (integer "
           "vision_layers) and null for a ResNet (4 vision_layers), got ", j.at("vision_patch_size").dump());
  validate(c);
  return c;
}

inline void validate(const ClipConfig& c) {
  auto positive = [](int64_t v, const char* key) {
    GA_CHECK(v > 0, ValueError, "clip config: \"", key, "\" must be positive, got ", v);
  };
  positive(c.embed_dim, "embed_dim");
  positive(c.image_resolution, "image_resolution");
  positive(c.vision_width, "vision_width");
  positive(c.context_length, "context_length");
  positive(c.vocab_size, "vocab_size");
  positive(c.transformer_width, "transformer_width");
  positive(c.transformer_layers, "transformer_layers");
  GA_CHECK(c.vision_layers.size() == 1 || c.vision_layers.size() == 4, ValueError,
           "clip config: \"vision_layers\" must hold 1 (ViT) or 4 (ResNet) counts, got ",
           c.vision_layers.size());
  for (int64_t n : c.vision_layers) positive(n, "vision_layers");
  GA_CHECK(c.transformer_heads > 0 && c.transformer_width % c.transformer_heads == 0, ValueError,
           "clip config: \"transformer_heads\" = ", c.transformer_heads,
           " must be positive and divide transformer_width = ", c.transformer_width,
           " (OpenAI's rule width / 64 fails below width 64; set it with --config)");
  const int64_t attn_width = c.vision_is_vit() ? c.vision_width : c.vision_width * 32;
  GA_CHECK(c.vision_heads > 0 && attn_width % c.vision_heads == 0, ValueError,
           "clip config: \"vision_heads\" = ", c.vision_heads, " must be positive and divide the ",
           c.vision_is_vit() ? "ViT width " : "attention pool width (vision_width * 32) ",
           attn_width, " (set it with --config)");
  if (c.vision_is_vit()) {
    positive(c.vision_patch_size, "vision_patch_size");
    GA_CHECK(c.image_resolution % c.vision_patch_size == 0, ValueError,
             "clip config: \"image_resolution\" = ", c.image_resolution,
             " must be a multiple of vision_patch_size = ", c.vision_patch_size);
  } else {
    GA_CHECK(c.vision_width % 2 == 0, ValueError, "clip config: \"vision_width\" = ",
             c.vision_width, " must be even for a ResNet (its stem's first convolutions are half as wide)");
    GA_CHECK(c.image_resolution % 32 == 0, ValueError, "clip config: \"image_resolution\" = ",
             c.image_resolution, " must be a multiple of 32 for a ResNet (its total stride)");
  }
  GA_CHECK(c.activation == "quick_gelu" || c.activation == "gelu", ValueError,
           "clip config: \"activation\" must be \"quick_gelu\" or \"gelu\", got \"", c.activation, "\"");
  for (double s : c.image_std)
    GA_CHECK(s > 0, ValueError, "clip config: \"image_std\" values must be positive, got ", s);
}

inline ShapeTable expected_shapes(const ClipConfig& c) {
  GA_CHECK(c.vision_layers.size() == 1 || c.vision_layers.size() == 4, ValueError,
           "clip config: \"vision_layers\" must hold 1 (ViT) or 4 (ResNet) counts, got ",
           c.vision_layers.size());
  GA_CHECK(!c.vision_is_vit() || c.vision_patch_size > 0, ValueError,
           "clip config: \"vision_patch_size\" must be positive for a ViT");
  // CLIP's own parameters come first in its state dict, then its submodules in
  // registration order: visual, transformer, token_embedding, ln_final.
  const int64_t tw = c.transformer_width;
  ShapeTable t;
  t.push_back({"positional_embedding", {c.context_length, tw}});
  t.push_back({"text_projection", {tw, c.embed_dim}});
  t.push_back({"logit_scale", {}});
  if (c.vision_is_vit()) detail::add_vit(t, c);
  else detail::add_resnet(t, c);
  detail::add_transformer(t, "transformer", tw, c.transformer_layers);
  t.push_back({"token_embedding.weight", {c.vocab_size, tw}});
  detail::add_layer_norm(t, "ln_final", tw);
  return t;
}

inline ClipConfig infer_config(const ShapeTable& t) {
  using detail::need_shape;
  ClipConfig c;
  if (detail::find_shape(t, "visual.proj") != nullptr) {
    const auto& conv1 = need_shape(t, "visual.conv1.weight", 4);
    c.vision_width = conv1[0];
    c.vision_patch_size = conv1[3];
    int64_t layers = 0;
    for (const auto& kv : t)
      if (detail::starts_with(kv.first, "visual.") && detail::ends_with(kv.first, ".attn.in_proj_weight"))
        ++layers;
    c.vision_layers = {layers};
    const int64_t rows = need_shape(t, "visual.positional_embedding", 2)[0];
    const int64_t grid = detail::grid_from_rows(rows);
    GA_CHECK(grid > 0, ShapeError, "clip config: visual.positional_embedding has ", rows,
             " rows, expected a square number of patches plus one");
    c.image_resolution = c.vision_patch_size * grid;
  } else {
    c.vision_layers.clear();
    for (int k = 1; k <= 4; ++k)
      c.vision_layers.push_back(detail::count_distinct(t, "visual.layer" + std::to_string(k) + ".", 2));
    c.vision_width = need_shape(t, "visual.layer1.0.conv1.weight", 4)[0];
    c.vision_patch_size = 0;
    const int64_t rows = need_shape(t, "visual.attnpool.positional_embedding", 2)[0];
    const int64_t grid = detail::grid_from_rows(rows);
    GA_CHECK(grid > 0, ShapeError, "clip config: visual.attnpool.positional_embedding has ", rows,
             " rows, expected a square number of positions plus one");
    c.image_resolution = grid * 32;
  }
  c.vision_heads = default_vision_heads(c.vision_layers, c.vision_width);
  c.embed_dim = need_shape(t, "text_projection", 2)[1];
  c.context_length = need_shape(t, "positional_embedding", 2)[0];
  c.vocab_size = need_shape(t, "token_embedding.weight", 2)[0];
  c.transformer_width = need_shape(t, "ln_final.weight", 1)[0];
  c.transformer_heads = c.transformer_width / 64;
  c.transformer_layers = detail::count_distinct(t, "transformer.resblocks.", 2);
  return c;
}

inline void apply_overrides(ClipConfig& cfg, const Json& overrides, const ShapeTable& shapes) {
  GA_CHECK(overrides.is_object(), ValueError, "clip config: --config must be a JSON object, got ",
           overrides.kind_name());
  std::map<std::string, const std::vector<int64_t>*> actual;
  for (const auto& [n, s] : shapes) actual[n] = &s;
  ClipConfig out = cfg;
  for (size_t i = 0; i < overrides.size(); ++i) {
    const std::string& key = overrides.keys()[i];
    const Json& value = overrides.values()[i];
    ClipConfig next = out;
    detail::set_field(next, key, value);
    // Keep the derived head count derived unless the user set it: a new width or tower kind
    // changes what OpenAI's constructor would have used.
    if ((key == "vision_width" || key == "vision_layers") && !overrides.contains("vision_heads"))
      next.vision_heads = default_vision_heads(next.vision_layers, next.vision_width);
    if (key == "vision_layers" && next.vision_is_vit() != out.vision_is_vit())
      throw ValueError(cat("clip config: --config \"vision_layers\" = ", value.dump(), " asks for a ",
                           next.vision_is_vit() ? "ViT" : "ResNet", " but the checkpoint ",
                           out.vision_is_vit() ? "has" : "has no", " tensor visual.proj, so it is a ",
                           out.vision_is_vit() ? "ViT" : "ResNet"));
    if (key == "vision_patch_size" && next.vision_is_vit() != (next.vision_patch_size > 0))
      throw ValueError(cat("clip config: --config \"vision_patch_size\" = ", value.dump(),
                           next.vision_is_vit() ? " but a ViT needs a positive patch size"
                                                : " but the checkpoint is a ResNet (no visual.proj), "
                                                  "whose patch size is null"));
    // A tensor contradicts this key when its expected shape changed with the key's value and
    // no longer matches the checkpoint. Comparing against the shapes expected before the
    // change, not against the checkpoint alone, blames only the key being applied.
    const ShapeTable before = expected_shapes(out), after = expected_shapes(next);
    std::map<std::string, const std::vector<int64_t>*> before_map;
    for (const auto& [n, s] : before) before_map[n] = &s;
    auto fail = [&](const std::string& why) {
      throw ValueError(cat("clip config: --config \"", key, "\" = ", value.dump(), " contradicts the checkpoint: ", why));
    };
    std::set<std::string> in_after;
    for (const auto& [n, s] : after) {
      in_after.insert(n);
      auto b = before_map.find(n);
      if (b != before_map.end() && *b->second == s) continue;
      auto a = actual.find(n);
      if (a == actual.end()) {
        if (detail::ends_with(n, ".num_batches_tracked")) continue;
        fail(cat("it needs tensor ", n, " ", detail::shape_str(s), ", which the checkpoint lacks"));
      }
      if (*a->second != s)
        fail(cat("tensor ", n, " has shape ", detail::shape_str(*a->second), ", this value needs ",
                 detail::shape_str(s)));
    }
    for (const auto& [n, s] : before) {
      if (in_after.count(n) || !actual.count(n)) continue;
      fail(cat("the checkpoint has tensor ", n, " ", detail::shape_str(*actual[n]),
               ", which this value has no place for"));
    }
    // Head counts shape no tensor, but must divide the width a tensor fixes.
    auto check_heads = [&](int64_t heads, const std::string& tensor) {
      auto a = actual.find(tensor);
      if (a == actual.end() || a->second->size() != 2) return;
      const int64_t width = (*a->second)[1];
      if (heads <= 0 || width % heads != 0)
        fail(cat("it must divide the width ", width, " of tensor ", tensor, " ",
                 detail::shape_str(*a->second)));
    };
    if (key == "transformer_heads")
      check_heads(next.transformer_heads, "transformer.resblocks.0.attn.in_proj_weight");
    if (key == "vision_heads")
      check_heads(next.vision_heads,
                  next.vision_is_vit() ? "visual.transformer.resblocks.0.attn.in_proj_weight"
                                       : "visual.attnpool.q_proj.weight");
    out = std::move(next);
  }
  // Validated once all keys are in: a narrow checkpoint may need two keys (both head counts)
  // before it is valid. validate's messages name the field at fault.
  try {
    validate(out);
  } catch (const ValueError& e) {
    throw ValueError(cat("clip config: --config ", overrides.dump(), ": ", e.what()));
  }
  cfg = std::move(out);
}

inline void check_shapes(const ClipConfig& cfg, const ShapeTable& shapes) {
  validate(cfg);
  const ShapeTable expected = expected_shapes(cfg);
  std::map<std::string, const std::vector<int64_t>*> want;
  for (const auto& [n, s] : expected) want[n] = &s;
  std::set<std::string> seen;
  std::vector<std::string> unexpected, duplicated, missing, misshaped;
  for (const auto& [n, s] : shapes) {
    if (!seen.insert(n).second) { duplicated.push_back(n); continue; }
    if (detail::is_torchscript_scalar(n)) continue;
    auto w = want.find(n);
    if (w == want.end()) unexpected.push_back(n);
    else if (*w->second != s)
      misshaped.push_back(cat(n, ": expected ", detail::shape_str(*w->second), ", got ", detail::shape_str(s)));
  }
  for (const auto& [n, s] : expected)
    if (!seen.count(n) && !detail::ends_with(n, ".num_batches_tracked")) missing.push_back(n);
  auto join = [](const std::vector<std::string>& v) {
    std::string out;
    for (const auto& s : v) out += (out.empty() ? "" : ", ") + s;
    return out;
  };
  const std::string tower = cfg.vision_is_vit() ? "ViT" : "ResNet";
  if (!missing.empty() || !unexpected.empty() || !duplicated.empty()) {
    std::string msg = "clip checkpoint does not match its " + tower + " config:";
    if (!missing.empty()) msg += cat(" ", missing.size(), " missing tensor(s): ", join(missing), ";");
    if (!unexpected.empty()) msg += cat(" ", unexpected.size(), " unexpected tensor(s): ", join(unexpected), ";");
    if (!duplicated.empty()) msg += cat(" duplicated tensor(s): ", join(duplicated), ";");
    msg.pop_back();
    throw KeyError(msg);
  }
  if (!misshaped.empty())
    throw ShapeError(cat("clip checkpoint does not match its ", tower, " config: ", misshaped.size(),
                         " mis-shaped tensor(s): ", join(misshaped)));
}

}  // namespace ga::clip
