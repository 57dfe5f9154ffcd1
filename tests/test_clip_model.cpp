// CLIP towers against OpenAI's own model code: image and text embeddings, logits and every
// traced intermediate activation of the tiny ViT and ModifiedResNet models, from fixtures
// written by tests/fixtures/gen_clip_parity_fixtures.py (OpenAI's clip.model.CLIP, torch).
// Also: EOT truncation against the full-length computation, f16 / bf16 stored weights, the
// GELU variant, Model::load round trips and the errors bad input must give.
#include <doctest/doctest.h>

#include <atomic>
#include <cmath>
#include <cstdint>
#include <cstdlib>
#include <cstring>
#include <filesystem>
#include <limits>
#include <map>
#include <string>
#include <vector>

#include "ga/clip/model.hpp"
#include "ga/ga.hpp"
#include "test_util.hpp"

#ifndef GA_SOURCE_DIR
#error "GA_SOURCE_DIR must name the repository root (tests/CMakeLists.txt defines it)"
#endif

using namespace ga;
using ga::clip::ClipConfig;
using ga::clip::LoadOptions;
using ga::clip::WeightMode;
using ga::clip::Model;
using ga::clip::Trace;
using ga::test::expect_error;
using Named = std::vector<std::pair<std::string, Tensor>>;

namespace {

const std::string kParityDir = std::string(GA_SOURCE_DIR) + "/tests/fixtures/parity/";

bool starts_with(const std::string& s, const std::string& p) { return s.compare(0, p.size(), p) == 0; }

/// One parity fixture: the model's weights (OpenAI names, as stored: f16, I64 counters),
/// its config, inputs, and OpenAI's outputs keyed by their fixture name.
struct Fixture {
  std::string path;
  ClipConfig cfg;
  std::string config_json;
  Named weights;
  Tensor images, tokens;
  std::map<std::string, Tensor> ref;  // "ref.*", "ref_bf16.*", "ref_gelu.*", "trace.*"

  explicit Fixture(const std::string& kind) : path(kParityDir + kind + ".safetensors") {
    const io::SafetensorsFile f = io::SafetensorsFile::open(path);
    config_json = f.metadata().at("config");
    cfg = ClipConfig::from_json(io::parse_json(config_json));
    for (const std::string& k : f.keys()) {
      if (k == "input.images") images = f.get(k).to(f32);
      else if (k == "input.tokens") tokens = f.get(k);
      else if (starts_with(k, "ref") || starts_with(k, "trace.")) ref[k] = f.get(k);
      else weights.emplace_back(k, f.get(k));
    }
  }

  /// The weights converted to dtype (BatchNorm's integer counters kept as they are).
  Named weights_as(DType dt) const {
    Named out;
    for (const auto& [n, t] : weights) out.emplace_back(n, is_floating(t.dtype()) ? t.to(dt) : t);
    return out;
  }
};

const Fixture& fixture(const std::string& kind) {
  static std::map<std::string, Fixture> cache;
  auto it = cache.find(kind);
  if (it == cache.end()) it = cache.emplace(kind, Fixture(kind)).first;
  return it->second;
}

/// max |actual - expected| <= rel * max |expected| (the parity criterion); shapes equal.
void check_close(const Tensor& actual, const Tensor& expected, const std::string& what, double rel = 1e-4) {
  INFO(what);
  REQUIRE(actual.defined());
  REQUIRE_MESSAGE(actual.shape() == expected.shape(), what, ": shape ", shape_str(actual.shape()), " vs reference ",
                  shape_str(expected.shape()));
  const std::vector<double> a = actual.to_vector<double>(), e = expected.to_vector<double>();
  double diff = 0, scale = 0;
  for (size_t i = 0; i < a.size(); ++i) {
    diff = std::max(diff, std::fabs(a[i] - e[i]));
    scale = std::max(scale, std::fabs(e[i]));
  }
  CHECK_MESSAGE(diff <= rel * scale, what, ": max abs diff ", diff, " > ", rel, " * max |reference| ", scale);
}

/// Compares every traced activation with the reference of the same name, in forward order (so
/// the first failure names the first wrong block), and requires that both sides have the same
/// set of names (a renamed or missing step is a failure). Text activations may be shorter than
/// the reference's 77 positions (EOT truncation): the prefix is compared, which is exact under
/// the causal mask.
void check_trace(const Trace& trace, const Fixture& fx, const std::string& tower) {
  std::map<std::string, bool> expected;  // name -> seen in the trace
  for (const auto& [key, t] : fx.ref)
    if (starts_with(key, "trace.") && starts_with(key.substr(6), "visual") == (tower == "image"))
      expected[key.substr(6)] = false;
  for (const auto& [name, actual] : trace) {
    auto it = expected.find(name);
    CHECK_MESSAGE(it != expected.end(), "the model traces ", name, ", which the fixture lacks");
    if (it == expected.end()) continue;
    CHECK_MESSAGE(!it->second, "the model traces ", name, " twice");
    it->second = true;
    Tensor e = fx.ref.at("trace." + name);
    if (tower == "text" && e.dim() == 3 && actual.size(1) < e.size(1)) e = e.narrow(1, 0, actual.size(1));
    check_close(actual, e, fx.path + ": " + tower + " activation after " + name);
  }
  for (const auto& [name, seen] : expected) CHECK_MESSAGE(seen, "the model's trace lacks ", name);
}

/// Full parity of a model built from the fixture's weights against a reference prefix.
void check_parity(const Model& m, const Fixture& fx, const std::string& prefix, bool with_trace) {
  Trace ti, tt;
  const Tensor img = m.encode_image(fx.images, with_trace ? &ti : nullptr);
  const Tensor txt = m.encode_text(fx.tokens, with_trace ? &tt : nullptr);
  check_close(img, fx.ref.at(prefix + ".image_features"), fx.path + ": " + prefix + " image features");
  check_close(txt, fx.ref.at(prefix + ".text_features"), fx.path + ": " + prefix + " text features");
  if (fx.ref.count(prefix + ".logits_per_image"))
    check_close(m.logits(img, txt), fx.ref.at(prefix + ".logits_per_image"), fx.path + ": logits_per_image");
  if (with_trace) {
    check_trace(ti, fx, "image");
    check_trace(tt, fx, "text");
  }
}

struct TempDir : ga::test::TempDir {
  TempDir() : ga::test::TempDir("ga_clip_model_test") {}
};

std::map<std::string, std::string> model_metadata(const Fixture& fx) {
  return {{"format", "ga.clip"}, {"format_version", "1"}, {"config", fx.config_json},
          {"activation", fx.cfg.activation}};
}

/// The fixture's weights without num_batches_tracked (as the converter writes them).
Named converted_weights(const Fixture& fx) {
  Named out;
  for (const auto& [n, t] : fx.weights)
    if (n.find("num_batches_tracked") == std::string::npos) out.emplace_back(n, t);
  return out;
}

Named without(const Named& ts, const std::string& name) {
  Named out;
  for (const auto& kv : ts)
    if (kv.first != name) out.push_back(kv);
  return out;
}

/// Rows of a 2-d tensor (index_select takes only float tensors; tokens are integers).
Tensor row_subset(const Tensor& t, const std::vector<int64_t>& rows) {
  Tensor out = empty({static_cast<int64_t>(rows.size()), t.size(1)}, t.dtype());
  for (size_t i = 0; i < rows.size(); ++i) out.select(0, static_cast<int64_t>(i)).copy_(t.select(0, rows[i]));
  return out;
}

}  // namespace

TEST_CASE("clip model: parity with OpenAI's CLIP (f32 weights), embeddings, logits and every block") {
  for (const char* kind : {"vit", "resnet"}) {
    CAPTURE(kind);
    const Fixture& fx = fixture(kind);
    const Model m = Model::from_tensors(fx.cfg, fx.weights_as(f32));
    CHECK(m.weight("transformer.resblocks.0.attn.in_proj_weight").dtype() == f32);
    check_parity(m, fx, "ref", /*with_trace=*/true);
    CHECK(m.logit_scale() == doctest::Approx(1 / 0.07).epsilon(1e-3));  // exp(log(1 / 0.07)), f16-rounded
  }
}

TEST_CASE("clip model: f16-stored weights stay f16 and match the reference computed from the same values") {
  // The fixture's weights are f16 values; its references are OpenAI's f32 forward on exactly
  // those values. Keeping them f16 and computing in f32 is the same arithmetic, so the f32
  // tolerance applies unchanged.
  for (const char* kind : {"vit", "resnet"}) {
    CAPTURE(kind);
    const Fixture& fx = fixture(kind);
    const Model m = Model::from_tensors(fx.cfg, fx.weights);
    for (const char* name : {"transformer.resblocks.0.attn.in_proj_weight", "token_embedding.weight",
                             "text_projection", "positional_embedding", "ln_final.weight"})
      CHECK_MESSAGE(m.weight(name).dtype() == f16, name);
    if (fx.cfg.vision_is_vit()) {
      CHECK(m.weight("visual.transformer.resblocks.1.mlp.c_fc.weight").dtype() == f16);
      CHECK(m.weight("visual.conv1.weight").dtype() == f16);
    } else {
      CHECK(m.weight("visual.attnpool.q_proj.weight").dtype() == f16);
      // Folded convolutions are new f32 tensors with a bias; their BatchNorms are gone.
      CHECK(m.weight("visual.layer1.0.conv2.weight").dtype() == f32);
      CHECK(m.weight("visual.layer1.0.conv2.bias").dtype() == f32);
      CHECK_THROWS_AS(m.weight("visual.layer1.0.bn2.weight"), KeyError);
    }
    // Kept as stored: the model's tensor is the caller's where that lies on a cache line, else
    // an aligned copy of the same f16 values (the fixture file's writer does not align).
    for (const auto& [n, t] : fx.weights)
      if (n == "transformer.resblocks.0.mlp.c_fc.weight") {
        const bool on_line = reinterpret_cast<uintptr_t>(t.raw_data()) % 64 == 0;
        CHECK(m.weight(n).shares_storage_with(t) == on_line);
        CHECK(reinterpret_cast<uintptr_t>(m.weight(n).raw_data()) % 64 == 0);
        CHECK(m.weight(n).dtype() == f16);
        CHECK(m.weight(n).to_vector<float>() == t.to_vector<float>());
      }
    check_parity(m, fx, "ref", /*with_trace=*/true);

    const Model up = Model::from_tensors(fx.cfg, fx.weights, std::nullopt, LoadOptions{WeightMode::F32});
    CHECK(up.weight("transformer.resblocks.0.attn.in_proj_weight").dtype() == f32);
    CHECK(up.weight("token_embedding.weight").dtype() == f32);
    check_parity(up, fx, "ref", /*with_trace=*/false);
  }
}

TEST_CASE("clip model: bf16-stored weights match OpenAI's forward on bf16-rounded weights") {
  // f16 -> f32 is exact and f32 -> bf16 rounds to nearest even, as torch's .to(bfloat16)
  // does; so these are the values the fixture script rounded the weights to.
  for (const char* kind : {"vit", "resnet"}) {
    CAPTURE(kind);
    const Fixture& fx = fixture(kind);
    const Model m = Model::from_tensors(fx.cfg, fx.weights_as(bf16));
    CHECK(m.weight("transformer.resblocks.1.mlp.c_proj.weight").dtype() == bf16);
    check_parity(m, fx, "ref_bf16", /*with_trace=*/false);
  }
}

TEST_CASE("clip model: activation \"gelu\" from the config runs exact GELU (open_clip's LAION models)") {
  for (const char* kind : {"vit", "resnet"}) {
    CAPTURE(kind);
    const Fixture& fx = fixture(kind);
    ClipConfig cfg = fx.cfg;
    cfg.activation = "gelu";
    check_parity(Model::from_tensors(cfg, fx.weights_as(f32)), fx, "ref_gelu", /*with_trace=*/false);
  }
}

TEST_CASE("clip model: text EOT truncation equals the full-length computation") {
  const Fixture& fx = fixture("vit");
  const Model m = Model::from_tensors(fx.cfg, fx.weights_as(f32));
  const Tensor ref = fx.ref.at("ref.text_features");
  // Row lengths (EOT position + 1) of the fixture's tokens: 2, 77 and two in between.
  std::vector<int64_t> eot;
  for (int64_t n = 0; n < fx.tokens.size(0); ++n) eot.push_back(argmax(fx.tokens.select(0, n).to(f32)).item<int64_t>());
  REQUIRE(eot.size() == 4);
  CHECK(eot[0] == 1);
  CHECK(eot[1] == 76);

  auto check_batch = [&](const std::vector<int64_t>& rows, int64_t expect_length) {
    CAPTURE(rows.size());
    const Tensor toks = row_subset(fx.tokens, rows);
    Trace trace;
    const Tensor traced = m.encode_text(toks, &trace);  // truncated, every block at every position
    const Tensor fast = m.encode_text(toks);            // truncated, the last block at the EOTs only
    const Tensor full = m.encode_text(toks, nullptr, /*full_length=*/true);
    // The truncated run really is shorter: its first activation has expect_length positions.
    REQUIRE(!trace.empty());
    CHECK(trace.front().first == "text.embedding");
    CHECK(trace.front().second.size(1) == expect_length);
    // Mathematically equal; numerically up to GEMM blocking, which depends on the row count
    // (measured: 0 to 8e-7 relative).
    check_close(traced, full, "truncated vs full-length text features", 1e-5);
    check_close(fast, full, "truncated, last block at the EOTs only, vs full-length text features", 1e-5);
    check_close(fast, row_subset(ref, rows), "truncated text features vs OpenAI");
  };
  int64_t longest_short = 0;
  for (int64_t r : {int64_t(0), int64_t(2), int64_t(3)}) longest_short = std::max(longest_short, eot[r] + 1);
  check_batch({0, 1, 2, 3}, 77);                  // very different lengths, one full
  check_batch({0, 2, 3}, longest_short);          // short rows only: computed to the longest
  check_batch({0}, 2);                            // the empty text: SOT, EOT
  check_batch({3, 0, 0, 2}, longest_short);       // repeated rows, any order
  for (int64_t r = 0; r < 4; ++r) check_batch({r}, eot[r] + 1);

  // Hugging Face pads with the EOT id instead of 0: the first occurrence of the largest id
  // is still the EOT, so the features are unchanged.
  std::vector<int64_t> ids = fx.tokens.to_vector<int64_t>();
  for (int64_t n = 0; n < 4; ++n)
    for (int64_t i = eot[n] + 1; i < 77; ++i) ids[n * 77 + i] = fx.cfg.vocab_size - 1;
  check_close(m.encode_text(tensor(ids, {4, 77})), ref, "EOT-padded tokens");
  // i32 tokens work the same.
  check_close(m.encode_text(fx.tokens.to(i32)), ref, "i32 tokens");
}

TEST_CASE("clip model: the ViT's last block at the class token only equals the full computation") {
  const Fixture& fx = fixture("vit");
  for (DType wt : {f32, f16}) {
    const std::string weights = dtype_name(wt);
    CAPTURE(weights);
    const Model m = Model::from_tensors(fx.cfg, fx.weights_as(wt));
    Trace trace;
    const Tensor traced = m.encode_image(fx.images, &trace);  // every block at every position
    const Tensor fast = m.encode_image(fx.images);            // the last block at the class token only
    // The traced run computed the last block everywhere: its trace entry is [N, L, W].
    const std::string last = "visual.transformer.resblocks." + std::to_string(fx.cfg.vision_layers[0] - 1);
    bool seen = false;
    for (const auto& [name, t] : trace)
      if (name == last) {
        seen = true;
        CHECK(t.size(1) == (fx.cfg.image_resolution / fx.cfg.vision_patch_size) * (fx.cfg.image_resolution / fx.cfg.vision_patch_size) + 1);
      }
    CHECK(seen);
    // Mathematically equal; numerically up to GEMM blocking, which depends on the row count.
    check_close(fast, traced, "class token only vs every position", 1e-5);
    if (wt == f32) check_close(fast, fx.ref.at("ref.image_features"), "class token only vs OpenAI");
    // One image at a time, and any order, give the same rows.
    for (int64_t i = 0; i < fx.images.size(0); ++i)
      check_close(m.encode_image(fx.images.narrow(0, i, 1)), traced.narrow(0, i, 1),
                  "image " + std::to_string(i) + " alone, class token only", 1e-5);
  }
}

TEST_CASE("clip model: any batch size; rows are independent") {
  for (const char* kind : {"vit", "resnet"}) {
    CAPTURE(kind);
    const Fixture& fx = fixture(kind);
    const Model m = Model::from_tensors(fx.cfg, fx.weights);
    const Tensor ref = fx.ref.at("ref.image_features");
    for (int64_t i = 0; i < fx.images.size(0); ++i)
      check_close(m.encode_image(fx.images.narrow(0, i, 1)), ref.narrow(0, i, 1), "image " + std::to_string(i) + " alone");
    const Tensor none = m.encode_image(empty({0, 3, fx.cfg.image_resolution, fx.cfg.image_resolution}));
    CHECK(none.shape() == Shape{0, fx.cfg.embed_dim});
    CHECK(m.encode_text(empty({0, 77}, i64)).shape() == Shape{0, fx.cfg.embed_dim});
    // Encoding under grad mode still records nothing.
    CHECK_FALSE(m.encode_image(fx.images).requires_grad());
  }
}

/// The smallest cosine similarity between matching rows of a and b (both [N, D]), in f64.
double min_row_cosine(const Tensor& a, const Tensor& b) {
  REQUIRE(a.shape() == b.shape());
  const std::vector<double> x = a.to(ga::f64).contiguous().to_vector<double>();
  const std::vector<double> y = b.to(ga::f64).contiguous().to_vector<double>();
  const size_t D = static_cast<size_t>(a.size(1));
  double worst = 1;
  for (size_t r = 0; r * D < x.size(); ++r) {
    double xy = 0, xx = 0, yy = 0;
    for (size_t j = r * D; j < (r + 1) * D; ++j) {
      xy += x[j] * y[j];
      xx += x[j] * x[j];
      yy += y[j] * y[j];
    }
    worst = std::min(worst, xy / std::sqrt(xx * yy));
  }
  return worst;
}

TEST_CASE("clip model: product weights off a cache line are copied to aligned memory, with the same results") {
  for (const char* kind : {"vit", "resnet"}) {
    CAPTURE(kind);
    const Fixture& fx = fixture(kind);
    // Every tensor at an address 4 bytes past a cache line, as in a file whose data starts there.
    std::vector<std::vector<float>> buffers;
    Named shifted;
    for (const auto& [name, t] : fx.weights_as(f32)) {
      const Tensor c = t.contiguous();
      buffers.emplace_back(size_t(c.numel()) + 32);
      float* p = buffers.back().data();
      while (reinterpret_cast<uintptr_t>(p) % 64 != 4) ++p;
      std::memcpy(p, c.raw_data(), size_t(c.numel()) * sizeof(float));
      shifted.emplace_back(name, ga::from_blob(p, c.shape(), f32));
    }
    const Named fresh = fx.weights_as(f32);  // new allocations, 64-byte aligned
    const Model aligned = Model::from_tensors(fx.cfg, fresh);
    const Model m = Model::from_tensors(fx.cfg, shifted);
    for (const auto& [name, t] : fresh)  // aligned: kept where it lies, not copied
      if (name == "transformer.resblocks.0.mlp.c_fc.weight" || name == "text_projection")
        CHECK_MESSAGE(aligned.weight(name).shares_storage_with(t), name);
    int copied = 0;
    auto ends_with = [](const std::string& s, const std::string& e) {
      return s.size() >= e.size() && s.compare(s.size() - e.size(), e.size(), e) == 0;
    };
    for (const auto& [name, t] : shifted) {
      // The ResNet's convolutions are replaced by folded copies (or gone, the BatchNorms).
      if (std::string(kind) == "resnet" && starts_with(name, "visual.") && !starts_with(name, "visual.attnpool."))
        continue;
      const Tensor* held = nullptr;
      try {
        held = &m.weight(name);
      } catch (const ga::KeyError&) {
        continue;  // folded away (the ResNet's convolutions and BatchNorms)
      }
      const auto address = reinterpret_cast<uintptr_t>(held->raw_data());
      const bool product = ends_with(name, "_proj_weight") || ends_with(name, "proj.weight") ||
                           ends_with(name, "c_fc.weight") || name == "visual.proj" || name == "text_projection" ||
                           (std::string(kind) == "vit" && name == "visual.conv1.weight");
      if (product) {
        ++copied;
        CHECK_MESSAGE(address % 64 == 0, name);
      } else {
        CHECK_MESSAGE(address == reinterpret_cast<uintptr_t>(t.raw_data()), name);  // the rest stays where it was
      }
    }
    CHECK(copied >= 6);
    CHECK(m.encode_image(fx.images).to_vector<float>() == aligned.encode_image(fx.images).to_vector<float>());
    CHECK(m.encode_text(fx.tokens).to_vector<float>() == aligned.encode_text(fx.tokens).to_vector<float>());
  }
}

TEST_CASE("clip model: WeightMode::Bf16 rounds the products' weights and stays within cosine 0.999 of f32") {
  for (const char* kind : {"vit", "resnet"}) {
    CAPTURE(kind);
    const Fixture& fx = fixture(kind);
    const Model m = Model::from_tensors(fx.cfg, fx.weights_as(f32), std::nullopt, LoadOptions{WeightMode::Bf16});
    CHECK(m.weight_mode() == WeightMode::Bf16);
    for (const char* name : {"transformer.resblocks.0.attn.in_proj_weight", "transformer.resblocks.1.mlp.c_fc.weight",
                             "transformer.resblocks.1.attn.out_proj.weight", "text_projection"})
      CHECK_MESSAGE(m.weight(name).dtype() == bf16, name);
    // Norms, embeddings and biases keep their precision.
    for (const char* name : {"token_embedding.weight", "positional_embedding", "ln_final.weight",
                             "transformer.resblocks.0.attn.in_proj_bias"})
      CHECK_MESSAGE(m.weight(name).dtype() == f32, name);
    if (fx.cfg.vision_is_vit()) {
      CHECK(m.weight("visual.conv1.weight").dtype() == bf16);
      CHECK(m.weight("visual.proj").dtype() == bf16);
    } else {
      CHECK(m.weight("visual.layer1.0.conv2.weight").dtype() == bf16);  // folded, then rounded
      CHECK(m.weight("visual.layer1.0.conv2.bias").dtype() == f32);
      CHECK(m.weight("visual.attnpool.k_proj.weight").dtype() == bf16);
    }
    const Tensor img = m.encode_image(fx.images), txt = m.encode_text(fx.tokens);
    const double ci = min_row_cosine(img, fx.ref.at("ref.image_features"));
    const double ct = min_row_cosine(txt, fx.ref.at("ref.text_features"));
    MESSAGE(std::string(kind), ": bf16 cosine to the f32 reference: image ", ci, ", text ", ct);
    CHECK(ci >= 0.999);
    CHECK(ct >= 0.999);
    // The reduced precision is the model's own: it does not leak into the caller's products.
    CHECK(ga::mixed_matmul_precision() == ga::backend::MixedPrecision::Highest);
    // And it is really reduced (the bf16 path is taken, not an f32 upcast): not exact.
    CHECK(ci < 1 - 1e-9);
  }
}

TEST_CASE("clip model: WeightMode::Int8 quantizes the products' weights and stays within cosine 0.999 of f32") {
  for (const char* kind : {"vit", "resnet"}) {
    CAPTURE(kind);
    const Fixture& fx = fixture(kind);
    const Model m = Model::from_tensors(fx.cfg, fx.weights_as(f32), std::nullopt, LoadOptions{WeightMode::Int8});
    CHECK(m.weight_mode() == WeightMode::Int8);
    // The quantized weights are held by the towers only.
    for (const char* name : {"transformer.resblocks.0.attn.in_proj_weight", "transformer.resblocks.1.mlp.c_fc.weight"})
      CHECK_THROWS_AS(m.weight(name), ga::KeyError);
    // Norms, embeddings, biases and the final projections keep their precision.
    for (const char* name : {"token_embedding.weight", "ln_final.weight", "transformer.resblocks.0.attn.in_proj_bias",
                             "text_projection"})
      CHECK_MESSAGE(m.weight(name).dtype() == f32, name);
    if (!fx.cfg.vision_is_vit()) CHECK(m.weight("visual.layer1.0.conv2.bias").dtype() == f32);
    const Tensor img = m.encode_image(fx.images), txt = m.encode_text(fx.tokens);
    const double ci = min_row_cosine(img, fx.ref.at("ref.image_features"));
    const double ct = min_row_cosine(txt, fx.ref.at("ref.text_features"));
    MESSAGE(std::string(kind), ": int8 cosine to the f32 reference: image ", ci, ", text ", ct);
    CHECK(ci >= 0.999);
    CHECK(ct >= 0.999);
    CHECK(ci < 1 - 1e-9);  // really quantized
    // The trace runs every block in full (the unsplit projection): the same embedding.
    ga::clip::Trace trace;
    CHECK(min_row_cosine(m.encode_image(fx.images, &trace), img) >= 0.99999);
    CHECK(min_row_cosine(m.encode_text(fx.tokens, nullptr, /*full_length=*/true), txt) >= 0.99999);
  }
}

TEST_CASE("clip model: Model::load round trip through a converted file") {
  for (const char* kind : {"vit", "resnet"}) {
    CAPTURE(kind);
    const Fixture& fx = fixture(kind);
    TempDir dir;
    const std::string path = dir.file(std::string(kind) + ".safetensors");
    auto meta = model_metadata(fx);
    meta["tokenizer.merges"] = "#version: 0.2\nt h\nth e</w>\n";
    io::save_safetensors(path, converted_weights(fx), meta);

    const Model m = Model::load(path);
    CHECK(m.config().to_json().dump() == fx.cfg.to_json().dump());
    CHECK(m.weight("transformer.resblocks.0.attn.in_proj_weight").dtype() == f16);
    check_parity(m, fx, "ref", /*with_trace=*/false);
    REQUIRE(m.has_tokenizer());
    const Tensor toks = m.tokenize({"the", "a b"});
    CHECK(toks.dtype() == i64);
    CHECK(toks.shape() == Shape{2, 77});
    const std::vector<int32_t> expect = m.tokenizer().tokenize("the");
    const std::vector<int64_t> got = toks.select(0, 0).to_vector<int64_t>();
    CHECK(std::vector<int64_t>(expect.begin(), expect.end()) == got);

    const Model up = Model::load(path, LoadOptions{WeightMode::F32});
    CHECK(up.weight("transformer.resblocks.0.attn.in_proj_weight").dtype() == f32);
    check_parity(up, fx, "ref", /*with_trace=*/false);
    // Converted at load, with the originals' pages dropped: nothing still reads them.
    const Model fast = Model::load(path, LoadOptions{WeightMode::Bf16});
    CHECK(fast.weight("transformer.resblocks.0.attn.in_proj_weight").dtype() == bf16);
    CHECK(min_row_cosine(fast.encode_image(fx.images), fx.ref.at("ref.image_features")) >= 0.999);
    CHECK(min_row_cosine(fast.encode_text(fx.tokens), fx.ref.at("ref.text_features")) >= 0.999);

    // f32 file, and no tokenizer in it.
    const std::string p32 = dir.file("f32.safetensors");
    Named w32;
    for (const auto& [n, t] : converted_weights(fx)) w32.emplace_back(n, t.to(f32));
    io::save_safetensors(p32, w32, model_metadata(fx));
    const Model m32 = Model::load(p32);
    check_parity(m32, fx, "ref", /*with_trace=*/false);
    CHECK_FALSE(m32.has_tokenizer());
    expect_error<ValueError>("no tokenizer", [&] { m32.tokenize({"a"}); }, {"--vocab"});
  }
}

TEST_CASE("clip model: bad input names the thing at fault") {
  const Fixture& fx = fixture("vit");
  const Model m = Model::from_tensors(fx.cfg, fx.weights);

  expect_error<ShapeError>("image size", [&] { m.encode_image(zeros({1, 3, 64, 64})); }, {"[N, 3, 32, 32]", "[1, 3, 64, 64]"});
  expect_error<ShapeError>("image channels", [&] { m.encode_image(zeros({1, 1, 32, 32})); }, {"[N, 3, 32, 32]"});
  expect_error<ShapeError>("image rank", [&] { m.encode_image(zeros({3, 32, 32})); }, {"[N, 3, 32, 32]"});
  expect_error<DTypeError>("image dtype", [&] { m.encode_image(zeros({1, 3, 32, 32}, f64)); }, {"f32", "f64"});

  std::vector<int64_t> ids = fx.tokens.to_vector<int64_t>();
  ids[1 * 77 + 5] = 1000;
  expect_error<IndexError>("id >= vocab", [&] { m.encode_text(tensor(ids, {4, 77})); }, {"row 1", "1000", "[0, 1000)"});
  ids[1 * 77 + 5] = -3;
  expect_error<IndexError>("negative id", [&] { m.encode_text(tensor(ids, {4, 77})); }, {"row 1", "-3"});
  expect_error<ShapeError>("context length", [&] { m.encode_text(zeros({2, 76}, i64)); }, {"[N, 77]", "[2, 76]"});
  expect_error<ShapeError>("token rank", [&] { m.encode_text(zeros({77}, i64)); }, {"[N, 77]"});
  expect_error<DTypeError>("token dtype", [&] { m.encode_text(zeros({1, 77})); }, {"i32 or i64", "f32"});
  expect_error<ShapeError>("logits width", [&] { m.logits(zeros({2, 31}), zeros({2, 32})); }, {"image_features", "[N, 32]"});

  // Tensors: missing, mis-shaped, unexpected, wrong dtype.
  expect_error<KeyError>("missing tensor", [&] { Model::from_tensors(fx.cfg, without(fx.weights, "visual.ln_post.bias")); },
                         {"missing", "visual.ln_post.bias"});
  Named bad = fx.weights;
  for (auto& [n, t] : bad)
    if (n == "transformer.resblocks.1.mlp.c_fc.weight") t = zeros({256, 63}, f16);
  expect_error<ShapeError>("mis-shaped tensor", [&] { Model::from_tensors(fx.cfg, bad); },
                           {"transformer.resblocks.1.mlp.c_fc.weight", "[256, 64]", "[256, 63]"});
  bad = fx.weights;
  bad.emplace_back("visual.extra", zeros({1}));
  expect_error<KeyError>("unexpected tensor", [&] { Model::from_tensors(fx.cfg, bad); }, {"visual.extra"});
  bad = fx.weights;
  for (auto& [n, t] : bad)
    if (n == "ln_final.weight") t = zeros({64}, i32);
  expect_error<DTypeError>("integer weight", [&] { Model::from_tensors(fx.cfg, bad); }, {"ln_final.weight", "i32"});
  // The TorchScript scalars and BatchNorm counters are allowed and ignored.
  bad = fx.weights;
  bad.emplace_back("input_resolution", tensor(std::vector<int64_t>{32}, {}));
  bad.emplace_back("context_length", tensor(std::vector<int64_t>{77}, {}));
  bad.emplace_back("vocab_size", tensor(std::vector<int64_t>{1000}, {}));
  check_parity(Model::from_tensors(fx.cfg, bad), fx, "ref", false);

  // Files.
  TempDir dir;
  auto write = [&](const std::string& name, const Named& ts, const std::map<std::string, std::string>& meta) {
    const std::string p = dir.file(name);
    io::save_safetensors(p, ts, meta);
    return p;
  };
  const Named good = converted_weights(fx);
  auto meta = model_metadata(fx);
  std::string p = write("missing_tensor.safetensors", without(good, "visual.proj"), meta);
  expect_error<KeyError>("file: missing tensor", [&] { Model::load(p); }, {p.c_str(), "visual.proj"});

  auto bad_meta = [&](const std::string& name, const std::string& key, const std::string* value) {
    auto mm = meta;
    if (value) mm[key] = *value;
    else mm.erase(key);
    return write(name, good, mm);
  };
  const std::string other = "safetensors.torch", v2 = "2", not_json = "{\"embed_dim\": 32,", bad_act = "gelu";
  p = bad_meta("no_format.safetensors", "format", nullptr);
  expect_error<IOError>("no format", [&] { Model::load(p); }, {p.c_str(), "\"format\"", "missing"});
  p = bad_meta("wrong_format.safetensors", "format", &other);
  expect_error<IOError>("wrong format", [&] { Model::load(p); }, {p.c_str(), "\"format\"", "safetensors.torch", "ga.clip"});
  p = bad_meta("wrong_version.safetensors", "format_version", &v2);
  expect_error<IOError>("wrong version", [&] { Model::load(p); }, {p.c_str(), "format_version", "\"2\""});
  p = bad_meta("no_config.safetensors", "config", nullptr);
  expect_error<IOError>("no config", [&] { Model::load(p); }, {p.c_str(), "\"config\""});
  p = bad_meta("bad_json.safetensors", "config", &not_json);
  expect_error<IOError>("config not JSON", [&] { Model::load(p); }, {p.c_str(), "config"});
  p = bad_meta("bad_activation.safetensors", "activation", &bad_act);
  expect_error<IOError>("activation disagrees", [&] { Model::load(p); }, {p.c_str(), "activation", "quick_gelu"});
  const std::string incomplete = "{\"embed_dim\": 32}";
  p = bad_meta("incomplete_config.safetensors", "config", &incomplete);
  expect_error<KeyError>("config lacks a key", [&] { Model::load(p); }, {p.c_str(), "image_resolution"});
  // A config that does not fit the tensors: a KeyError / ShapeError naming the file and tensor.
  ClipConfig wider = fx.cfg;
  wider.transformer_width = 128;
  wider.transformer_heads = 2;
  const std::string wider_json = wider.to_json().dump();
  p = bad_meta("wrong_config.safetensors", "config", &wider_json);
  expect_error<ShapeError>("config vs tensors", [&] { Model::load(p); }, {p.c_str(), "ln_final.weight", "[128]", "[64]"});
  const std::string bad_merges = "#version\nnot-a-merge-line-without-space\n";
  p = bad_meta("bad_merges.safetensors", "tokenizer.merges", &bad_merges);
  expect_error<IOError>("bad merges", [&] { Model::load(p); }, {p.c_str(), "tokenizer.merges"});
  expect_error<IOError>("no such file", [&] { Model::load(dir.file("absent.safetensors")); }, {"absent.safetensors"});
}

TEST_CASE("clip model: causal softmax weights are exactly 0 where masked, never subnormal") {
  // The text tower's attention relies on this for speed (subnormal weights made p @ v ~50x
  // slower) and for PyTorch's exact zeros at masked positions.
  Generator gen(7);
  // Scores spread by 30 so that some unmasked weights are tiny too (exp below -88 underflows).
  const Tensor scores = add(randn({2, 77, 77}, gen) * 30.0, causal_mask(77, 77));
  const std::vector<float> p = softmax(scores, -1).to_vector<float>();
  int64_t masked_nonzero = 0, subnormal = 0;
  for (int64_t b = 0; b < 2; ++b)
    for (int64_t i = 0; i < 77; ++i)
      for (int64_t j = 0; j < 77; ++j) {
        const float v = p[static_cast<size_t>((b * 77 + i) * 77 + j)];
        if (j > i && v != 0.0f) ++masked_nonzero;
        if (v != 0.0f && std::fabs(v) < std::numeric_limits<float>::min()) ++subnormal;
      }
  CHECK(masked_nonzero == 0);
  CHECK(subnormal == 0);
}
