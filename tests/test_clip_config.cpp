// CLIP config tests: inference from tensor shapes for all nine OpenAI models, against a
// table of their published hyperparameters written here independently of the library (its
// own shape generator, not expected_shapes), parameter counts against clip.md's table,
// --config overrides, missing / unexpected / mis-shaped tensors, and JSON round trips.
#include <doctest/doctest.h>

#include <cmath>
#include <functional>
#include <map>
#include <string>
#include <vector>

#include "ga/clip/config.hpp"

namespace {

using ga::clip::ClipConfig;
using ga::clip::ShapeTable;
using Shape = std::vector<int64_t>;

// Published hyperparameters (clip.md section 3, OpenAI's model card and model.py).
struct Published {
  const char* name;
  int64_t res, embed;
  Shape layers;  // one entry: ViT layers; four: ResNet blocks per stage
  int64_t width, patch, vision_heads;
  int64_t text_width, text_heads;
  double image_mparams, text_mparams;
};

const std::vector<Published> kModels = {
    {"RN50", 224, 1024, {3, 4, 6, 3}, 64, 0, 32, 512, 8, 38.3, 63.7},
    {"RN101", 224, 512, {3, 4, 23, 3}, 64, 0, 32, 512, 8, 56.3, 63.4},
    {"RN50x4", 288, 640, {4, 6, 10, 6}, 80, 0, 40, 640, 10, 87.1, 91.2},
    {"RN50x16", 384, 768, {6, 8, 18, 8}, 96, 0, 48, 768, 12, 167.3, 123.7},
    {"RN50x64", 448, 1024, {3, 15, 36, 10}, 128, 0, 64, 1024, 16, 420.4, 202.9},
    {"ViT-B/32", 224, 512, {12}, 768, 32, 12, 512, 8, 87.9, 63.4},
    {"ViT-B/16", 224, 512, {12}, 768, 16, 12, 512, 8, 86.2, 63.4},
    {"ViT-L/14", 224, 768, {24}, 1024, 14, 16, 768, 12, 304.0, 123.7},
    {"ViT-L/14@336px", 336, 768, {24}, 1024, 14, 16, 768, 12, 304.3, 123.7},
};

// The state dict of a published model, written from clip.md section 2 and model.py without
// the library's help. Order is deliberately not OpenAI's: inference must not depend on it.
ShapeTable checkpoint_shapes(const Published& m) {
  ShapeTable t;
  auto add = [&](const std::string& n, Shape s) { t.push_back({n, std::move(s)}); };
  auto vec = [&](const std::string& p, int64_t n) { add(p + ".weight", {n}); add(p + ".bias", {n}); };
  auto lin = [&](const std::string& p, int64_t o, int64_t i) { add(p + ".weight", {o, i}); add(p + ".bias", {o}); };
  auto bn = [&](const std::string& p, int64_t n) {
    vec(p, n);
    add(p + ".running_mean", {n});
    add(p + ".running_var", {n});
    add(p + ".num_batches_tracked", {});
  };
  auto blocks = [&](const std::string& p, int64_t w, int64_t n) {
    for (int64_t i = 0; i < n; ++i) {
      const std::string b = p + std::to_string(i);
      add(b + ".attn.in_proj_weight", {3 * w, w});
      add(b + ".attn.in_proj_bias", {3 * w});
      lin(b + ".attn.out_proj", w, w);
      lin(b + ".mlp.c_fc", 4 * w, w);
      lin(b + ".mlp.c_proj", w, 4 * w);
      vec(b + ".ln_1", w);
      vec(b + ".ln_2", w);
    }
  };
  const int64_t w = m.width;
  if (m.layers.size() == 1) {
    const int64_t g = m.res / m.patch;
    add("visual.conv1.weight", {w, 3, m.patch, m.patch});
    add("visual.class_embedding", {w});
    add("visual.positional_embedding", {g * g + 1, w});
    vec("visual.ln_pre", w);
    blocks("visual.transformer.resblocks.", w, m.layers[0]);
    vec("visual.ln_post", w);
    add("visual.proj", {w, m.embed});
  } else {
    add("visual.conv1.weight", {w / 2, 3, 3, 3});
    add("visual.conv2.weight", {w / 2, w / 2, 3, 3});
    add("visual.conv3.weight", {w, w / 2, 3, 3});
    bn("visual.bn1", w / 2);
    bn("visual.bn2", w / 2);
    bn("visual.bn3", w);
    int64_t in = w;
    for (int s = 0; s < 4; ++s) {
      const int64_t planes = w * (int64_t{1} << s);
      for (int64_t b = 0; b < m.layers[s]; ++b) {
        const std::string p = "visual.layer" + std::to_string(s + 1) + "." + std::to_string(b) + ".";
        add(p + "conv1.weight", {planes, in, 1, 1});
        add(p + "conv2.weight", {planes, planes, 3, 3});
        add(p + "conv3.weight", {4 * planes, planes, 1, 1});
        bn(p + "bn1", planes);
        bn(p + "bn2", planes);
        bn(p + "bn3", 4 * planes);
        if (b == 0) {  // every stage's first block changes the channel count
          add(p + "downsample.0.weight", {4 * planes, in, 1, 1});
          bn(p + "downsample.1", 4 * planes);
        }
        in = 4 * planes;
      }
    }
    const int64_t g = m.res / 32, e = 32 * w;
    add("visual.attnpool.positional_embedding", {g * g + 1, e});
    lin("visual.attnpool.q_proj", e, e);
    lin("visual.attnpool.k_proj", e, e);
    lin("visual.attnpool.v_proj", e, e);
    lin("visual.attnpool.c_proj", m.embed, e);
  }
  const int64_t tw = m.text_width;
  add("token_embedding.weight", {49408, tw});
  add("positional_embedding", {77, tw});
  blocks("transformer.resblocks.", tw, 12);
  vec("ln_final", tw);
  add("text_projection", {tw, m.embed});
  add("logit_scale", {});
  return t;
}

std::map<std::string, Shape> as_map(const ShapeTable& t) { return {t.begin(), t.end()}; }

int64_t numel(const Shape& s) {
  int64_t n = 1;
  for (int64_t d : s) n *= d;
  return n;
}

// Learnable parameters, as published counts count them: BatchNorm running statistics and
// num_batches_tracked are buffers, not parameters.
bool is_buffer(const std::string& n) {
  for (const char* b : {".running_mean", ".running_var", ".num_batches_tracked"})
    if (n.size() >= std::string(b).size() && n.compare(n.size() - std::string(b).size(), std::string::npos, b) == 0)
      return true;
  return false;
}

template <class Exc>
std::string message_of(const std::function<void()>& f) {
  try {
    f();
  } catch (const Exc& e) {
    return e.what();
  }
  return "(no exception)";
}

ga::io::Json parse(const std::string& s) { return ga::io::parse_json(s); }

}  // namespace

TEST_CASE("clip config: infer_config recovers all nine OpenAI models") {
  for (const Published& m : kModels) {
    CAPTURE(std::string(m.name));
    const ShapeTable shapes = checkpoint_shapes(m);
    const ClipConfig c = ga::clip::infer_config(shapes);
    CHECK(c.vision_is_vit() == (m.layers.size() == 1));
    CHECK(c.embed_dim == m.embed);
    CHECK(c.image_resolution == m.res);
    CHECK(c.vision_layers == m.layers);
    CHECK(c.vision_width == m.width);
    CHECK(c.vision_patch_size == m.patch);
    CHECK(c.vision_heads == m.vision_heads);
    CHECK(c.context_length == 77);
    CHECK(c.vocab_size == 49408);
    CHECK(c.transformer_width == m.text_width);
    CHECK(c.transformer_heads == m.text_heads);
    CHECK(c.transformer_layers == 12);
    CHECK(c.activation == "quick_gelu");

    // The library's enumeration is the same key set with the same shapes.
    CHECK(as_map(ga::clip::expected_shapes(c)) == as_map(shapes));
    CHECK(ga::clip::expected_shapes(c).size() == shapes.size());
    CHECK_NOTHROW(ga::clip::check_shapes(c, shapes));
  }
}

TEST_CASE("clip config: parameter counts match the published table") {
  for (const Published& m : kModels) {
    CAPTURE(std::string(m.name));
    ClipConfig c = ga::clip::infer_config(checkpoint_shapes(m));
    int64_t image = 0, text = 0;
    for (const auto& [name, shape] : ga::clip::expected_shapes(c)) {
      if (is_buffer(name) || name == "logit_scale") continue;
      (name.rfind("visual.", 0) == 0 ? image : text) += numel(shape);
    }
    MESSAGE(std::string(m.name), ": image ", image / 1e6, " M (table ", m.image_mparams, "), text ", text / 1e6,
            " M (table ", m.text_mparams, ")");
    // The table rounds to 0.1 M, loosely: ViT-B/32's 87.849 M is listed as 87.9.
    CHECK(std::abs(image / 1e6 - m.image_mparams) <= 0.06);
    CHECK(std::abs(text / 1e6 - m.text_mparams) <= 0.06);
  }
}

TEST_CASE("clip config: OpenAI's expected_shapes order and TorchScript extras") {
  const ClipConfig vit = ga::clip::infer_config(checkpoint_shapes(kModels[5]));
  const ShapeTable e = ga::clip::expected_shapes(vit);
  REQUIRE(e.size() >= 4);
  CHECK(e[0].first == "positional_embedding");
  CHECK(e[1].first == "text_projection");
  CHECK(e[2].first == "logit_scale");
  CHECK(e[2].second.empty());
  CHECK(e.back().first == "ln_final.bias");

  // Some TorchScript releases carry three scalars that build_model deletes; they are ignored,
  // and BatchNorm's num_batches_tracked may be absent (PyTorch fills it in on load).
  ShapeTable shapes = checkpoint_shapes(kModels[0]);
  shapes.push_back({"input_resolution", {}});
  shapes.push_back({"context_length", {}});
  shapes.push_back({"vocab_size", {}});
  ShapeTable without_nbt;
  for (const auto& kv : shapes)
    if (kv.first.find("num_batches_tracked") == std::string::npos) without_nbt.push_back(kv);
  const ClipConfig rn = ga::clip::infer_config(shapes);
  CHECK_NOTHROW(ga::clip::check_shapes(rn, shapes));
  CHECK_NOTHROW(ga::clip::check_shapes(rn, without_nbt));
  CHECK(ga::clip::infer_config(without_nbt).vision_layers == Shape{3, 4, 6, 3});
}

TEST_CASE("clip config: missing, unexpected and mis-shaped tensors are reported") {
  const Published& m = kModels[5];  // ViT-B/32
  const ShapeTable good = checkpoint_shapes(m);
  const ClipConfig c = ga::clip::infer_config(good);

  ShapeTable bad;
  for (const auto& kv : good)
    if (kv.first != "visual.ln_post.bias" && kv.first != "transformer.resblocks.3.mlp.c_fc.weight")
      bad.push_back(kv);
  bad.push_back({"visual.extra", {3}});
  bad.push_back({"module.logit_scale", {}});
  const std::string keys = message_of<ga::KeyError>([&] { ga::clip::check_shapes(c, bad); });
  CHECK(keys.find("2 missing") != std::string::npos);
  CHECK(keys.find("visual.ln_post.bias") != std::string::npos);
  CHECK(keys.find("transformer.resblocks.3.mlp.c_fc.weight") != std::string::npos);
  CHECK(keys.find("2 unexpected") != std::string::npos);
  CHECK(keys.find("visual.extra") != std::string::npos);
  CHECK(keys.find("module.logit_scale") != std::string::npos);

  ShapeTable dup = good;
  dup.push_back(good[3]);
  CHECK(message_of<ga::KeyError>([&] { ga::clip::check_shapes(c, dup); }).find("duplicated") !=
        std::string::npos);

  ShapeTable misshaped = good;
  for (auto& [n, s] : misshaped) {
    if (n == "visual.transformer.resblocks.7.attn.in_proj_weight") s = {2304, 767};
    if (n == "logit_scale") s = {1};
  }
  const std::string shapes = message_of<ga::ShapeError>([&] { ga::clip::check_shapes(c, misshaped); });
  CHECK(shapes.find("2 mis-shaped") != std::string::npos);
  CHECK(shapes.find("visual.transformer.resblocks.7.attn.in_proj_weight: expected [2304, 768], got [2304, 767]") !=
        std::string::npos);
  CHECK(shapes.find("logit_scale: expected [], got [1]") != std::string::npos);

  // Inference itself needs the tensors its rules read.
  ShapeTable no_ln;
  for (const auto& kv : good)
    if (kv.first != "ln_final.weight") no_ln.push_back(kv);
  CHECK(message_of<ga::KeyError>([&] { ga::clip::infer_config(no_ln); }).find("ln_final.weight") !=
        std::string::npos);
  ShapeTable odd_pos = good;
  for (auto& [n, s] : odd_pos)
    if (n == "visual.positional_embedding") s = {51, 768};
  CHECK_THROWS_AS(ga::clip::infer_config(odd_pos), ga::ShapeError);
}

TEST_CASE("clip config: --config overrides") {
  const ShapeTable vit = checkpoint_shapes(kModels[5]);
  const ShapeTable rn = checkpoint_shapes(kModels[0]);

  SUBCASE("consistent values are accepted") {
    ClipConfig c = ga::clip::infer_config(vit);
    ga::clip::apply_overrides(c, parse(R"({"transformer_heads": 16, "vision_heads": 24,
        "activation": "gelu", "embed_dim": 512, "vision_layers": 12, "image_resolution": 224})"), vit);
    CHECK(c.transformer_heads == 16);
    CHECK(c.vision_heads == 24);
    CHECK(c.activation == "gelu");
    CHECK_NOTHROW(ga::clip::check_shapes(c, vit));

    ClipConfig r = ga::clip::infer_config(rn);
    ga::clip::apply_overrides(r, parse(R"({"vision_layers": [3, 4, 6, 3], "vision_patch_size": null,
        "vision_heads": 16})"), rn);
    CHECK(r.vision_heads == 16);
  }

  SUBCASE("a value contradicting a tensor names the key, value, tensor and shape") {
    ClipConfig c = ga::clip::infer_config(vit);
    const ClipConfig before = c;
    auto msg = [&](const char* json, const ShapeTable& t) {
      ClipConfig x = ga::clip::infer_config(t);
      return message_of<ga::ValueError>([&] { ga::clip::apply_overrides(x, parse(json), t); });
    };
    std::string m = msg(R"({"vision_width": 1024})", vit);
    CHECK(m.find("\"vision_width\" = 1024") != std::string::npos);
    CHECK(m.find("tensor visual.") != std::string::npos);
    CHECK(m.find("has shape [768") != std::string::npos);

    m = msg(R"({"transformer_heads": 7})", vit);
    CHECK(m.find("\"transformer_heads\" = 7") != std::string::npos);
    CHECK(m.find("transformer.resblocks.0.attn.in_proj_weight [1536, 512]") != std::string::npos);

    m = msg(R"({"vision_heads": 5})", rn);
    CHECK(m.find("\"vision_heads\" = 5") != std::string::npos);
    CHECK(m.find("visual.attnpool.q_proj.weight [2048, 2048]") != std::string::npos);

    m = msg(R"({"context_length": 64})", vit);
    CHECK(m.find("\"context_length\" = 64") != std::string::npos);
    CHECK(m.find("positional_embedding has shape [77, 512]") != std::string::npos);

    m = msg(R"({"vision_layers": 11})", vit);
    CHECK(m.find("\"vision_layers\" = 11") != std::string::npos);
    CHECK(m.find("visual.transformer.resblocks.11.") != std::string::npos);

    m = msg(R"({"vision_layers": 13})", vit);
    CHECK(m.find("visual.transformer.resblocks.12.") != std::string::npos);
    CHECK(m.find("lacks") != std::string::npos);

    m = msg(R"({"vision_layers": [3, 4, 6, 3]})", vit);
    CHECK(m.find("visual.proj") != std::string::npos);

    m = msg(R"({"image_resolution": 256})", rn);
    CHECK(m.find("visual.attnpool.positional_embedding has shape [50, 2048]") != std::string::npos);

    m = msg(R"({"vision_patch_size": 16})", rn);
    CHECK(m.find("vision_patch_size") != std::string::npos);

    m = msg(R"({"vocab_size": 49409})", vit);
    CHECK(m.find("token_embedding.weight has shape [49408, 512]") != std::string::npos);

    m = msg(R"({"embed_dim": 768})", rn);
    CHECK(m.find("\"embed_dim\" = 768") != std::string::npos);

    m = msg(R"({"bogus": 1})", vit);
    CHECK(m.find("unknown key \"bogus\"") != std::string::npos);
    m = msg(R"({"transformer_heads": "8"})", vit);
    CHECK(m.find("\"transformer_heads\" must be an integer") != std::string::npos);

    // A failing override leaves the config as it was, earlier keys included.
    CHECK_THROWS_AS(ga::clip::apply_overrides(c, parse(R"({"transformer_heads": 16, "vocab_size": 3})"), vit),
                    ga::ValueError);
    CHECK(c.to_json().dump() == before.to_json().dump());
  }

  SUBCASE("narrow towers need heads from --config") {
    // Width 32: OpenAI's width / 64 gives 0 heads; check_shapes says so, --config fixes it.
    const Published tiny{"tiny", 32, 16, {2}, 32, 8, 0, 32, 0, 0, 0};
    const ShapeTable t = checkpoint_shapes(tiny);
    ClipConfig c = ga::clip::infer_config(t);
    CHECK(c.transformer_heads == 0);
    CHECK(message_of<ga::ValueError>([&] { ga::clip::check_shapes(c, t); }).find("transformer_heads") !=
          std::string::npos);
    ga::clip::apply_overrides(c, parse(R"({"transformer_heads": 2, "vision_heads": 4})"), t);
    CHECK_NOTHROW(ga::clip::check_shapes(c, t));
  }
}

TEST_CASE("clip config: JSON round trip") {
  for (const Published& m : kModels) {
    CAPTURE(std::string(m.name));
    ClipConfig c = ga::clip::infer_config(checkpoint_shapes(m));
    c.activation = "gelu";
    c.image_mean = {0.5, 0.25, 0.125};
    const std::string text = c.to_json().dump();
    const ClipConfig back = ClipConfig::from_json(ga::io::parse_json(text));
    CHECK(back.to_json().dump() == text);
    CHECK(back.vision_layers == c.vision_layers);
    CHECK(back.image_mean == c.image_mean);
    CHECK(back.image_std == c.image_std);
  }
  const ga::io::Json rn = ClipConfig::from_json(parse(R"({"embed_dim": 1024, "image_resolution": 224,
      "vision_layers": [3, 4, 6, 3], "vision_width": 64, "vision_patch_size": null, "context_length": 77,
      "vocab_size": 49408, "transformer_width": 512, "transformer_heads": 8, "transformer_layers": 12})")).to_json();
  CHECK(rn.at("vision_heads").as_int() == 32);
  CHECK(rn.at("vision_patch_size").is_null());
  CHECK(rn.at("activation").as_string() == "quick_gelu");
  CHECK(rn.at("image_std")[2].as_number() == 0.27577711);

  auto bad = [](const std::string& key, const std::string& value) {
    ga::io::Json j = ClipConfig().to_json();
    j.set(key, parse(value));
    return message_of<ga::ValueError>([&] { ClipConfig::from_json(j); });
  };
  CHECK(bad("embed_dim", "\"512\"").find("\"embed_dim\"") != std::string::npos);
  CHECK(bad("embed_dim", "1.5").find("\"embed_dim\" must be an integer") != std::string::npos);
  CHECK(bad("vision_layers", "[1, 2]").find("\"vision_layers\"") != std::string::npos);
  CHECK(bad("image_mean", "[1, 2]").find("\"image_mean\"") != std::string::npos);
  CHECK(bad("activation", "\"relu\"").find("\"activation\"") != std::string::npos);
  CHECK(bad("extra_key", "1").find("unknown key \"extra_key\"") != std::string::npos);
  CHECK(bad("vision_patch_size", "null").find("\"vision_patch_size\"") != std::string::npos);
  ga::io::Json missing = parse(R"({"embed_dim": 512})");
  CHECK_THROWS_AS(ClipConfig::from_json(missing), ga::KeyError);
}
