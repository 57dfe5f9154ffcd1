// The checkpoint converter (include/ga/clip/convert.hpp) on fixtures made by trusted code
// (tests/fixtures/gen_convert_fixtures.py: open_clip, transformers, OpenAI's clip; the parity
// fixtures of tests/fixtures/gen_clip_parity_fixtures.py; the torch.save / TorchScript
// fixtures of tests/fixtures/checkpoints). Checked: every input format converts; the output's
// tensors equal the source (exactly, or its exact f16 / bf16 rounding, computed here by an
// independent method); the metadata is the documented contract; the converted models encode
// like the references (1e-4 x the largest reference magnitude); and every bad input is an
// error naming the file, key or tensor at fault.
#include <doctest/doctest.h>
#include <dirent.h>
#include <sys/stat.h>
#include <unistd.h>

#include <algorithm>
#include <cfenv>
#include <cmath>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <filesystem>
#include <fstream>
#include <map>
#include <sstream>
#include <string>
#include <vector>

#include "ga/clip/convert.hpp"
#include "ga/clip/model.hpp"
#include "test_util.hpp"

#ifndef GA_SOURCE_DIR
#error "GA_SOURCE_DIR must name the repository root (tests/CMakeLists.txt defines it)"
#endif

using ga::Tensor;
using ga::clip::ConvertOptions;
using ga::clip::convert_checkpoint;
using ga::io::Json;
using ga::io::SafetensorsFile;
using ga::test::expect_error;

namespace {

const std::string kFixtures = std::string(GA_SOURCE_DIR) + "/tests/fixtures/";
const std::string kConvert = kFixtures + "convert/";
const std::string kOpenClipResnet = kConvert + "openclip_resnet.safetensors";

struct ConvertTempDir : ga::test::TempDir {
  ConvertTempDir() : ga::test::TempDir("ga_convert_test") {}
};



/// Copies a fixture directory (flat) to dst.
void copy_dir(const std::string& src, const std::string& dst) {
  std::filesystem::create_directories(dst);
  for (const auto& e : std::filesystem::directory_iterator(src))
    std::filesystem::copy_file(e.path(), dst + "/" + e.path().filename().string());
}

std::vector<float> floats(const Tensor& t) { return t.to(ga::f32).contiguous().to_vector<float>(); }

bool bytes_equal(const Tensor& a, const Tensor& b) {
  if (a.dtype() != b.dtype() || a.shape() != b.shape()) return false;
  const Tensor ca = a.contiguous(), cb = b.contiguous();
  return std::memcmp(ca.raw_data(), cb.raw_data(), static_cast<size_t>(a.numel()) * ga::dtype_size(a.dtype())) == 0;
}

float max_abs(const std::vector<float>& v) {
  float m = 0;
  for (float x : v) m = std::max(m, std::fabs(x));
  return m;
}

/// Requires got ~ ref within 1e-4 x max|ref| (the issue's parity tolerance).
void check_close(const Tensor& got, const Tensor& ref, const std::string& what) {
  INFO(what);
  REQUIRE(got.shape() == ref.shape());
  const std::vector<float> g = floats(got), r = floats(ref);
  const float tol = 1e-4f * max_abs(r);
  float worst = 0;
  for (size_t i = 0; i < g.size(); ++i) worst = std::max(worst, std::fabs(g[i] - r[i]));
  INFO("max abs difference ", worst, ", tolerance ", tol);
  CHECK(worst <= tol);
  CHECK(max_abs(r) > 0.1f);  // a reference of zeros would prove nothing
}

/// x rounded to nearest-even with `bits` significant bits and subnormal quantum 2^min_exp,
/// computed in double arithmetic (frexp / nearbyint), not with the library's bit tricks.
float round_reference(float x, int bits, int min_exp) {
  if (x == 0 || !std::isfinite(x)) return x;
  int e = 0;
  std::frexp(static_cast<double>(x), &e);  // x = m * 2^e, 0.5 <= |m| < 1
  const double quantum = std::ldexp(1.0, std::max(e - bits, min_exp));
  REQUIRE(std::fegetround() == FE_TONEAREST);
  return static_cast<float>(std::nearbyint(static_cast<double>(x) / quantum) * quantum);
}
float f16_reference(float x) { return round_reference(x, 11, -24); }
float bf16_reference(float x) { return round_reference(x, 8, -133); }

ConvertOptions quiet(std::string* log = nullptr) {
  ConvertOptions o;
  o.log = [log](const std::string& s) {
    if (log) *log += s + "\n";
  };
  return o;
}

Json parse(const std::string& text) { return ga::io::parse_json(text, "<test>"); }

/// The tiny models' text towers have 4 heads where OpenAI's rule (width / 64) infers 1: a
/// checkpoint "trained with other hyperparameters", converted as a user would, with --config.
ConvertOptions tiny(std::string* log = nullptr) {
  ConvertOptions o = quiet(log);
  o.config_overrides = parse(R"({"transformer_heads": 4})");
  return o;
}

/// The parity fixture's (OpenAI) references, for models made from the same weights.
struct Parity {
  SafetensorsFile file;
  explicit Parity(const std::string& kind) : file(SafetensorsFile::open(kFixtures + "parity/" + kind + ".safetensors")) {}
};

void check_encodes_like_parity(const std::string& model_path, const std::string& kind) {
  const Parity p(kind);
  // The two exact weight modes: as stored (f16 weights in mixed products) and upcast to f32.
  for (ga::clip::WeightMode mode : {ga::clip::WeightMode::AsStored, ga::clip::WeightMode::F32}) {
    ga::clip::LoadOptions lo;
    lo.weights = mode;
    const ga::clip::Model m = ga::clip::Model::load(model_path, lo);
    const Tensor img = m.encode_image(p.file.get("input.images").to(ga::f32));
    const Tensor txt = m.encode_text(p.file.get("input.tokens"));
    check_close(img, p.file.get("ref.image_features"),
                model_path + " image features, weight mode " + std::to_string(static_cast<int>(mode)));
    check_close(txt, p.file.get("ref.text_features"), model_path + " text features");
    check_close(m.logits(img, txt), p.file.get("ref.logits_per_image"), model_path + " logits");
  }
}

}  // namespace

TEST_CASE("convert: open_clip .safetensors (ResNet, f16) keeps every tensor exactly and writes the metadata") {
  ConvertTempDir dir;
  const std::string out = dir.file("rn.safetensors");
  std::string log;
  convert_checkpoint(kOpenClipResnet, out, tiny(&log));
  CHECK(log.find("warning: no vocabulary") != std::string::npos);
  CHECK(log.find("quick_gelu assumed") != std::string::npos);
  CHECK(log.find("heads: image 4 (OpenAI's rule)") != std::string::npos);

  const SafetensorsFile src = SafetensorsFile::open(kOpenClipResnet), dst = SafetensorsFile::open(out);
  size_t compared = 0;
  for (const std::string& k : src.keys()) {
    INFO(k);
    if (k.size() > 20 && k.compare(k.size() - 20, 20, ".num_batches_tracked") == 0) {
      CHECK_FALSE(dst.contains(k));  // dropped
      continue;
    }
    REQUIRE(dst.contains(k));
    CHECK(bytes_equal(dst.get(k), src.get(k)));  // f16 kept as is
    ++compared;
  }
  CHECK(compared == dst.size());
  CHECK(compared > 100);

  // Metadata: the contract of docs/clip.md / the loader.
  const auto& meta = dst.metadata();
  CHECK(meta.at("format") == "ga.clip");
  CHECK(meta.at("format_version") == "1");
  CHECK(meta.at("activation") == "quick_gelu");
  CHECK(meta.count("tokenizer.merges") == 0);
  CHECK(meta.at("source") == "openclip_resnet.safetensors (safetensors)");
  // The config equals the one tiny_clip.py documents (the parity fixture's metadata), key by key.
  const Json cfg = parse(meta.at("config"));
  const Json expected = parse(Parity("resnet").file.metadata().at("config"));
  for (size_t i = 0; i < expected.size(); ++i) {
    INFO(expected.keys()[i]);
    REQUIRE(cfg.contains(expected.keys()[i]));
    CHECK(cfg.at(expected.keys()[i]).dump() == expected.values()[i].dump());
  }
  const Json pre = parse(meta.at("preprocess"));
  CHECK(pre.at("resolution").as_int() == 64);
  CHECK(pre.at("resize").as_string() == "shorter_side");
  CHECK(pre.at("interpolation").as_string() == "bicubic");
  CHECK(pre.at("crop").as_string() == "center");
  CHECK(pre.at("mean")[0].as_number() == doctest::Approx(0.48145466).epsilon(1e-12));
  CHECK(pre.at("std")[2].as_number() == doctest::Approx(0.27577711).epsilon(1e-12));

  // Same weights as the parity fixture (tiny_clip.make_tiny("resnet") rounded to f16), so the
  // converted file must encode like OpenAI's model there.
  check_encodes_like_parity(out, "resnet");
}

TEST_CASE("convert: an existing output is not replaced unless asked") {
  ConvertTempDir dir;
  const std::string out = dir.file("rn.safetensors");
  ga::test::write_file(out, "precious");
  expect_error<ga::IOError>("existing output", [&] { convert_checkpoint(kOpenClipResnet, out, quiet()); },
                            {"rn.safetensors", "already exists"});
  CHECK(ga::test::read_file(out) == "precious");
  ConvertOptions o = tiny();
  o.overwrite = true;
  convert_checkpoint(kOpenClipResnet, out, o);
  CHECK(SafetensorsFile::open(out).metadata().at("format") == "ga.clip");
  // Refused again now that it is a model file; and no temporary files are left behind.
  expect_error<ga::IOError>("existing model", [&] { convert_checkpoint(kOpenClipResnet, out, quiet()); },
                            {"already exists"});
  size_t entries = 0;
  for (const auto& e : std::filesystem::directory_iterator(dir.path)) entries += e.is_regular_file() ? 1 : 0;
  CHECK(entries == 1);
}

TEST_CASE("convert: --vocab attaches the merges; the tokenizer matches OpenAI's on them; size must agree") {
  ConvertTempDir dir;
  const SafetensorsFile cli = SafetensorsFile::open(kConvert + "cli_reference.safetensors");
  const Json texts = parse(cli.metadata().at("texts"));
  const std::vector<int64_t> expected_ids = cli.get("resnet.text_tokens").to_vector<int64_t>();
  for (const char* vocab : {"tiny_vocab.txt", "tiny_vocab.txt.gz"}) {
    INFO(vocab);
    ConvertOptions o = tiny();
    o.vocab_path = kConvert + vocab;
    const std::string out = dir.file(std::string(vocab) + ".safetensors");
    convert_checkpoint(kOpenClipResnet, out, o);
    const SafetensorsFile f = SafetensorsFile::open(out);
    CHECK(f.metadata().at("tokenizer.merges") == ga::test::read_file(kConvert + "tiny_vocab.txt"));
    const ga::clip::Model m = ga::clip::Model::load(out);
    REQUIRE(m.has_tokenizer());
    std::vector<std::string> t;
    for (const Json& s : texts.values()) t.push_back(s.as_string());
    // OpenAI's SimpleTokenizer with the same merges (the fixture) gave these ids.
    CHECK(m.tokenize(t).to_vector<int64_t>() == expected_ids);
  }
  // The real vocabulary has 49408 tokens; the tiny model 1000.
  const std::string real = std::string(GA_SOURCE_DIR) + "/../shared/clip/bpe_simple_vocab_16e6.txt.gz";
  if (std::ifstream(real).good()) {
    ConvertOptions o = quiet();
    o.vocab_path = real;
    expect_error<ga::ValueError>("vocab size mismatch", [&] { convert_checkpoint(kOpenClipResnet, dir.file("x"), o); },
                                 {"bpe_simple_vocab_16e6.txt.gz", "49408", "1000"});
  }
  ConvertOptions o = quiet();
  o.vocab_path = dir.file("missing_vocab.txt");
  expect_error<ga::IOError>("missing vocab", [&] { convert_checkpoint(kOpenClipResnet, dir.file("y"), o); },
                            {"missing_vocab.txt"});
  ga::test::write_file(dir.file("bad_vocab.txt"), "#version\nnot a merge line at all\n");
  o.vocab_path = dir.file("bad_vocab.txt");
  expect_error<ga::IOError>("bad vocab", [&] { convert_checkpoint(kOpenClipResnet, dir.file("z"), o); },
                            {"bad_vocab.txt", "line 2"});
  CHECK_FALSE(std::filesystem::exists(dir.file("z")));
}

TEST_CASE("convert: output dtypes f32, f16, bf16 are the exact roundings of the source") {
  ConvertTempDir dir;
  // f16 source -> f32: exact widening.
  ConvertOptions o = tiny();
  o.dtype = "f32";
  convert_checkpoint(kOpenClipResnet, dir.file("rn32.safetensors"), o);
  {
    const SafetensorsFile src = SafetensorsFile::open(kOpenClipResnet), dst = SafetensorsFile::open(dir.file("rn32.safetensors"));
    for (const std::string& k : dst.keys()) {
      INFO(k);
      REQUIRE(dst.info(k).dtype_name == "F32");
      CHECK(floats(dst.get(k)) == floats(src.get(k)));
    }
    check_encodes_like_parity(dir.file("rn32.safetensors"), "resnet");
  }
  // f32 source (Hugging Face) -> keep (f32), f16, bf16.
  convert_checkpoint(kConvert + "hf_quickgelu", dir.file("vit32.safetensors"), quiet());
  const SafetensorsFile f32 = SafetensorsFile::open(dir.file("vit32.safetensors"));
  for (const std::string& k : f32.keys()) REQUIRE(f32.info(k).dtype_name == "F32");
  for (const char* dt : {"f16", "bf16"}) {
    INFO(dt);
    o.dtype = dt;
    const std::string out = dir.file(std::string("vit_") + dt + ".safetensors");
    convert_checkpoint(kConvert + "hf_quickgelu", out, o);
    const SafetensorsFile f = SafetensorsFile::open(out);
    REQUIRE(f.keys() == f32.keys());
    size_t changed = 0, total = 0;
    for (const std::string& k : f.keys()) {
      INFO(k);
      CHECK(f.info(k).dtype_name == (std::string(dt) == "f16" ? "F16" : "BF16"));
      const std::vector<float> got = floats(f.get(k)), src = floats(f32.get(k));
      REQUIRE(got.size() == src.size());
      size_t bad = 0;
      for (size_t i = 0; i < got.size(); ++i) {
        const float want = std::string(dt) == "f16" ? f16_reference(src[i]) : bf16_reference(src[i]);
        bad += got[i] != want;
        changed += want != src[i];
      }
      total += got.size();
      CHECK(bad == 0);
    }
    CHECK(changed > total / 2);  // the rounding did happen
  }
  // keep on a checkpoint that mixes dtypes (as OpenAI's fp16 releases may: norms in f32) or is
  // f64: f32, every value exact.
  {
    const SafetensorsFile src = SafetensorsFile::open(kOpenClipResnet);
    std::vector<std::pair<std::string, Tensor>> mixed, f64;
    for (const std::string& k : src.keys()) {
      const Tensor t = src.get(k);
      const bool floating = ga::is_floating(t.dtype());
      mixed.emplace_back(k, floating && k.find("ln_") != std::string::npos ? t.to(ga::f32) : t);
      f64.emplace_back(k, floating ? t.to(ga::f64) : t);
    }
    ga::io::save_safetensors(dir.file("mixed_in.safetensors"), mixed);
    ga::io::save_safetensors(dir.file("f64_in.safetensors"), f64);
    for (const char* in : {"mixed_in.safetensors", "f64_in.safetensors"}) {
      INFO(in);
      std::string log;
      const std::string out = dir.file(std::string("out_") + in);
      convert_checkpoint(dir.file(in), out, tiny(&log));
      CHECK(log.find("writing f32") != std::string::npos);
      const SafetensorsFile f = SafetensorsFile::open(out);
      for (const std::string& k : f.keys()) {
        INFO(k);
        CHECK(f.info(k).dtype_name == "F32");
        CHECK(floats(f.get(k)) == floats(src.get(k)));
      }
    }
  }
  o.dtype = "f8";
  expect_error<ga::ValueError>("bad dtype", [&] { convert_checkpoint(kOpenClipResnet, dir.file("q"), o); }, {"f8"});
}

TEST_CASE("convert: Hugging Face directories map to OpenAI names and encode like transformers") {
  ConvertTempDir dir;
  struct Case {
    const char* name;
    int64_t text_heads, vision_heads, context, resolution, embed;
    const char* activation;
    double mean;
    const char* stored;
  };
  for (const Case& c : {Case{"hf_quickgelu", 2, 4, 77, 32, 16, "quick_gelu", 0.48145466, "F32"},
                        Case{"hf_gelu", 4, 2, 16, 24, 24, "gelu", 0.5, "F16"}}) {
    INFO(std::string(c.name));
    const std::string out = dir.file(std::string(c.name) + ".safetensors");
    std::string log;
    convert_checkpoint(kConvert + c.name, out, quiet(&log));
    CHECK(log.find("warning") == std::string::npos);
    const SafetensorsFile f = SafetensorsFile::open(out);
    const auto& meta = f.metadata();
    CHECK(meta.at("source") == std::string(c.name) + " (huggingface)");
    CHECK(meta.at("activation") == c.activation);
    const Json cfg = parse(meta.at("config"));
    CHECK(cfg.at("transformer_heads").as_int() == c.text_heads);
    CHECK(cfg.at("vision_heads").as_int() == c.vision_heads);
    CHECK(cfg.at("context_length").as_int() == c.context);
    CHECK(cfg.at("image_resolution").as_int() == c.resolution);
    CHECK(cfg.at("embed_dim").as_int() == c.embed);
    CHECK(cfg.at("vocab_size").as_int() == 1000);
    CHECK(cfg.at("activation").as_string() == c.activation);
    CHECK(cfg.at("image_mean")[0].as_number() == doctest::Approx(c.mean).epsilon(1e-12));
    CHECK(parse(meta.at("preprocess")).at("std")[0].as_number() ==
          doctest::Approx(c.mean == 0.5 ? 0.5 : 0.26862954).epsilon(1e-12));
    // merges.txt ("#version: 0.2" header) became the tokenizer.
    CHECK(meta.at("tokenizer.merges") == ga::test::read_file(kConvert + c.name + "/merges.txt"));
    for (const std::string& k : f.keys()) CHECK(f.info(k).dtype_name == c.stored);

    // The renaming, tensor by tensor, against the Hugging Face file.
    const SafetensorsFile hf = SafetensorsFile::open(kConvert + c.name + "/model.safetensors");
    auto same = [&](const std::string& openai, const Tensor& want) {
      INFO(openai);
      REQUIRE(f.contains(openai));
      CHECK(bytes_equal(f.get(openai), want.contiguous()));
    };
    same("token_embedding.weight", hf.get("text_model.embeddings.token_embedding.weight"));
    same("positional_embedding", hf.get("text_model.embeddings.position_embedding.weight"));
    same("ln_final.weight", hf.get("text_model.final_layer_norm.weight"));
    same("text_projection", hf.get("text_projection.weight").t());
    same("visual.proj", hf.get("visual_projection.weight").t());
    same("visual.conv1.weight", hf.get("vision_model.embeddings.patch_embedding.weight"));
    same("visual.class_embedding", hf.get("vision_model.embeddings.class_embedding"));
    same("visual.positional_embedding", hf.get("vision_model.embeddings.position_embedding.weight"));
    same("visual.ln_pre.bias", hf.get("vision_model.pre_layrnorm.bias"));
    same("visual.ln_post.weight", hf.get("vision_model.post_layernorm.weight"));
    same("logit_scale", hf.get("logit_scale"));
    for (const std::string tower : {"text", "vision"}) {
      const std::string hp = tower + "_model.encoder.layers.0.";
      const std::string op = tower == "text" ? "transformer.resblocks.0." : "visual.transformer.resblocks.0.";
      for (const char* wb : {"weight", "bias"}) {
        const std::string w = wb;
        same(op + "attn.in_proj_" + w, ga::concat({hf.get(hp + "self_attn.q_proj." + w), hf.get(hp + "self_attn.k_proj." + w),
                                                   hf.get(hp + "self_attn.v_proj." + w)}));
        same(op + "attn.out_proj." + w, hf.get(hp + "self_attn.out_proj." + w));
        same(op + "ln_1." + w, hf.get(hp + "layer_norm1." + w));
        same(op + "ln_2." + w, hf.get(hp + "layer_norm2." + w));
        same(op + "mlp.c_fc." + w, hf.get(hp + "mlp.fc1." + w));
        same(op + "mlp.c_proj." + w, hf.get(hp + "mlp.fc2." + w));
      }
    }

    // transformers' own outputs on the same inputs.
    const SafetensorsFile ref = SafetensorsFile::open(kConvert + c.name + "_reference.safetensors");
    const ga::clip::Model m = ga::clip::Model::load(out);
    const Tensor img = m.encode_image(ref.get("input.pixel_values"));
    const Tensor txt = m.encode_text(ref.get("input.input_ids"));
    check_close(img, ref.get("ref.image_features"), std::string(c.name) + " image features");
    check_close(txt, ref.get("ref.text_features"), std::string(c.name) + " text features");
    check_close(m.logits(img, txt), ref.get("ref.logits_per_image"), std::string(c.name) + " logits");
    // Our tokenizer on merges.txt gives the ids transformers' CLIPTokenizer gave.
    std::vector<std::string> texts;
    const Json text_list = parse(ref.metadata().at("texts"));
    for (const Json& s : text_list.values()) texts.push_back(s.as_string());
    CHECK(m.tokenize(texts).to_vector<int64_t>() == ref.get("input.input_ids").to_vector<int64_t>());
  }
}

TEST_CASE("convert: Hugging Face inputs that do not fit are errors naming the file and the key") {
  ConvertTempDir dir;
  const std::string base = kConvert + "hf_quickgelu";
  expect_error<ga::IOError>("HF file without its directory",
                            [&] { convert_checkpoint(base + "/model.safetensors", dir.file("o1"), quiet()); },
                            {"model.safetensors", "directory", "config.json"});

  auto variant = [&](const std::string& name, const std::string& from, const std::string& to,
                     const std::string& file = "config.json") {
    const std::string d = dir.file(name);
    copy_dir(base, d);
    std::string text = ga::test::read_file(d + "/" + file);
    const size_t at = text.find(from);
    REQUIRE_MESSAGE(at != std::string::npos, from);
    text.replace(at, from.size(), to);
    ga::test::write_file(d + "/" + file, text);
    return d;
  };
  // A head count that does not divide the width: names the key and the tensor.
  const std::string heads = variant("heads", "\"num_attention_heads\": 2", "\"num_attention_heads\": 3");
  expect_error<ga::ValueError>("heads", [&] { convert_checkpoint(heads, dir.file("o2"), quiet()); },
                               {"config.json", "transformer_heads", "transformer.resblocks.0.attn.in_proj_weight"});
  // An image size the position embedding contradicts.
  const std::string size = variant("size", "\"image_size\": 32", "\"image_size\": 64");
  expect_error<ga::ValueError>("image_size", [&] { convert_checkpoint(size, dir.file("o3"), quiet()); },
                               {"config.json", "image_resolution", "visual.positional_embedding"});
  const std::string act = variant("act", "\"hidden_size\": 64,", "\"hidden_size\": 64, \"hidden_act\": \"gelu_new\",");
  expect_error<ga::IOError>("unsupported activation", [&] { convert_checkpoint(act, dir.file("o4"), quiet()); },
                            {"config.json", "gelu_new"});
  const std::string mixed = variant("mixed", "\"hidden_size\": 64,", "\"hidden_size\": 64, \"hidden_act\": \"gelu\",");
  expect_error<ga::IOError>("one activation per model", [&] { convert_checkpoint(mixed, dir.file("o5"), quiet()); },
                            {"config.json", "quick_gelu", "gelu"});
  const std::string eps = variant("eps", "\"hidden_size\": 64,", "\"hidden_size\": 64, \"layer_norm_eps\": 1e-6,");
  expect_error<ga::IOError>("layer_norm_eps", [&] { convert_checkpoint(eps, dir.file("o6"), quiet()); },
                            {"config.json", "layer_norm_eps"});
  const std::string type = variant("type", "\"model_type\": \"clip\"", "\"model_type\": \"siglip\"");
  expect_error<ga::IOError>("model_type", [&] { convert_checkpoint(type, dir.file("o7"), quiet()); },
                            {"config.json", "siglip"});
  // vocab.json that does not belong to merges.txt.
  const std::string vocab = variant("vocab", "\"in</w>\":", "\"xx</w>\":", "vocab.json");
  expect_error<ga::IOError>("vocab.json", [&] { convert_checkpoint(vocab, dir.file("o8"), quiet()); },
                            {"vocab.json", "xx</w>"});
  // No config.json: not a Hugging Face directory.
  const std::string bare = dir.file("bare");
  copy_dir(base, bare);
  std::filesystem::remove(bare + "/config.json");
  expect_error<ga::IOError>("no config.json", [&] { convert_checkpoint(bare, dir.file("o9"), quiet()); },
                            {"bare", "config.json"});
  // No merges.txt: converted without a tokenizer, with the warning.
  const std::string nomerges = dir.file("nomerges");
  copy_dir(base, nomerges);
  std::filesystem::remove(nomerges + "/merges.txt");
  std::string log;
  convert_checkpoint(nomerges, dir.file("o10"), quiet(&log));
  CHECK(log.find("warning: no vocabulary") != std::string::npos);
  CHECK(SafetensorsFile::open(dir.file("o10")).metadata().count("tokenizer.merges") == 0);
  for (int i = 1; i <= 9; ++i) CHECK_FALSE(std::filesystem::exists(dir.file("o" + std::to_string(i))));
}

TEST_CASE("convert: --config overrides apply, and one that contradicts a shape names the key and tensor") {
  ConvertTempDir dir;
  ConvertOptions o = quiet();
  o.config_overrides = parse(R"({"vision_heads": 8, "activation": "gelu", "image_mean": [0.5, 0.5, 0.5]})");
  convert_checkpoint(kOpenClipResnet, dir.file("a.safetensors"), o);
  const SafetensorsFile f = SafetensorsFile::open(dir.file("a.safetensors"));
  const Json cfg = parse(f.metadata().at("config"));
  CHECK(cfg.at("vision_heads").as_int() == 8);
  CHECK(cfg.at("activation").as_string() == "gelu");
  CHECK(f.metadata().at("activation") == "gelu");
  CHECK(parse(f.metadata().at("preprocess")).at("mean")[2].as_number() == 0.5);

  o.config_overrides = parse(R"({"embed_dim": 64})");
  expect_error<ga::ValueError>("embed_dim", [&] { convert_checkpoint(kOpenClipResnet, dir.file("b"), o); },
                               {"openclip_resnet.safetensors", "embed_dim", "text_projection"});
  o.config_overrides = parse(R"({"transformer_heads": 5})");
  expect_error<ga::ValueError>("heads", [&] { convert_checkpoint(kOpenClipResnet, dir.file("c"), o); },
                               {"transformer_heads", "transformer.resblocks.0.attn.in_proj_weight"});
  o.config_overrides = parse(R"({"frobnicate": 1})");
  expect_error<ga::ValueError>("unknown key", [&] { convert_checkpoint(kOpenClipResnet, dir.file("d"), o); },
                               {"frobnicate"});
  CHECK_FALSE(std::filesystem::exists(dir.file("b")));
}

TEST_CASE("convert: a missing or mis-shaped tensor is an error naming it") {
  ConvertTempDir dir;
  const SafetensorsFile src = SafetensorsFile::open(kOpenClipResnet);
  std::vector<std::pair<std::string, Tensor>> missing, misshaped, extra;
  for (const std::string& k : src.keys()) {
    const Tensor t = src.get(k);
    if (k != "ln_final.bias") missing.emplace_back(k, t);
    misshaped.emplace_back(k, k == "visual.layer2.0.bn1.bias" ? ga::zeros({17}, ga::f16) : t);
    extra.emplace_back(k, t);
  }
  extra.emplace_back("visual.extra_head.weight", ga::zeros({2, 2}, ga::f16));
  ga::io::save_safetensors(dir.file("missing.safetensors"), missing);
  ga::io::save_safetensors(dir.file("misshaped.safetensors"), misshaped);
  ga::io::save_safetensors(dir.file("extra.safetensors"), extra);
  expect_error<ga::KeyError>("missing", [&] { convert_checkpoint(dir.file("missing.safetensors"), dir.file("o1"), quiet()); },
                             {"missing.safetensors", "ln_final.bias"});
  expect_error<ga::ShapeError>("mis-shaped",
                               [&] { convert_checkpoint(dir.file("misshaped.safetensors"), dir.file("o2"), quiet()); },
                               {"misshaped.safetensors", "visual.layer2.0.bn1.bias", "[17]"});
  expect_error<ga::KeyError>("unexpected", [&] { convert_checkpoint(dir.file("extra.safetensors"), dir.file("o3"), quiet()); },
                             {"visual.extra_head.weight"});
  // An integer tensor where a weight belongs.
  std::vector<std::pair<std::string, Tensor>> ints;
  for (const std::string& k : src.keys()) ints.emplace_back(k, k == "logit_scale" ? ga::zeros({}, ga::i64) : src.get(k));
  ga::io::save_safetensors(dir.file("ints.safetensors"), ints);
  expect_error<ga::DTypeError>("int weight", [&] { convert_checkpoint(dir.file("ints.safetensors"), dir.file("o4"), quiet()); },
                               {"logit_scale", "i64"});
}

TEST_CASE("convert: inputs that are not checkpoints are IOErrors naming them") {
  ConvertTempDir dir;
  expect_error<ga::IOError>("missing", [&] { convert_checkpoint(dir.file("nope.pt"), dir.file("o"), quiet()); },
                            {"nope.pt", "no such file"});
  ga::test::write_file(dir.file("notes.txt"), "hello, I am not a checkpoint\n");
  expect_error<ga::IOError>("text", [&] { convert_checkpoint(dir.file("notes.txt"), dir.file("o"), quiet()); },
                            {"notes.txt", "not a recognised checkpoint"});
  ga::test::write_file(dir.file("empty.pt"), "");
  expect_error<ga::IOError>("empty", [&] { convert_checkpoint(dir.file("empty.pt"), dir.file("o"), quiet()); },
                            {"empty.pt"});
  // What torch.save(_use_new_zipfile_serialization=False) starts with: protocol 2, then the magic number.
  ga::test::write_file(dir.file("legacy.pt"), std::string("\x80\x02\x8a\x0a" "l\xfc\x9c" "F\xf9 j\xa8P\x19.", 16));
  expect_error<ga::IOError>("legacy pickle", [&] { convert_checkpoint(dir.file("legacy.pt"), dir.file("o"), quiet()); },
                            {"legacy.pt", "pre-1.6"});
  // A safetensors file whose header lies about its size.
  std::string st = ga::test::read_file(kOpenClipResnet);
  ga::test::write_file(dir.file("truncated.safetensors"), st.substr(0, st.size() / 2));
  expect_error<ga::IOError>("truncated", [&] { convert_checkpoint(dir.file("truncated.safetensors"), dir.file("o"), quiet()); },
                            {"truncated.safetensors"});
  std::filesystem::create_directories(dir.file("somedir"));
  expect_error<ga::IOError>("plain directory", [&] { convert_checkpoint(dir.file("somedir"), dir.file("o"), quiet()); },
                            {"somedir", "config.json"});
  CHECK_FALSE(std::filesystem::exists(dir.file("o")));
}

TEST_CASE("convert: a converted file re-converts (adding a vocabulary, changing the dtype) and keeps its config") {
  ConvertTempDir dir;
  ConvertOptions o = quiet();
  o.config_overrides = parse(R"({"activation": "gelu", "vision_heads": 8})");
  convert_checkpoint(kOpenClipResnet, dir.file("a.safetensors"), o);
  ConvertOptions o2 = quiet();
  o2.vocab_path = kConvert + "tiny_vocab.txt.gz";
  o2.dtype = "f32";
  std::string log;
  o2.log = [&](const std::string& s) { log += s + "\n"; };
  convert_checkpoint(dir.file("a.safetensors"), dir.file("b.safetensors"), o2);
  CHECK(log.find("quick_gelu assumed") == std::string::npos);
  const SafetensorsFile a = SafetensorsFile::open(dir.file("a.safetensors")), b = SafetensorsFile::open(dir.file("b.safetensors"));
  CHECK(a.metadata().at("config") == b.metadata().at("config"));
  CHECK(b.metadata().at("activation") == "gelu");
  CHECK(b.metadata().at("source") == "openclip_resnet.safetensors (safetensors)");
  CHECK(b.metadata().count("tokenizer.merges") == 1);
  CHECK(a.keys() == b.keys());
  for (const std::string& k : a.keys()) CHECK(floats(a.get(k)) == floats(b.get(k)));
  // ... and the tokenizer survives a further re-conversion without --vocab.
  convert_checkpoint(dir.file("b.safetensors"), dir.file("c.safetensors"), quiet());
  CHECK(SafetensorsFile::open(dir.file("c.safetensors")).metadata().at("tokenizer.merges") ==
        b.metadata().at("tokenizer.merges"));
}

TEST_CASE("convert: state-dict canonicalisation (open_clip wrapper, module. prefix, scalars, BN counters)") {
  const Tensor w = ga::ones({2});
  const std::vector<std::pair<std::string, Tensor>> wrapped = {
      {"state_dict.module.visual.conv1.weight", w},
      {"state_dict.module.visual.bn1.num_batches_tracked", ga::zeros({}, ga::i64)},
      {"state_dict.module.logit_scale", w},
      {"optimizer.state.0.exp_avg", w},
      {"input_resolution", ga::zeros({}, ga::i64)},
  };
  const auto c = ga::clip::canonicalize_state_dict(wrapped, "ck.pt");
  REQUIRE(c.size() == 2);
  CHECK(c[0].first == "visual.conv1.weight");
  CHECK(c[1].first == "logit_scale");
  const std::vector<std::pair<std::string, Tensor>> plain = {
      {"module.token_embedding.weight", w}, {"context_length", w}, {"vocab_size", w}, {"ln_final.weight", w}};
  const auto p = ga::clip::canonicalize_state_dict(plain, "ck.pt");
  REQUIRE(p.size() == 2);
  CHECK(p[0].first == "token_embedding.weight");
  CHECK(p[1].first == "ln_final.weight");
  expect_error<ga::KeyError>("duplicate after stripping", [&] {
    ga::clip::canonicalize_state_dict({{"module.ln_final.weight", w}, {"ln_final.weight", w}}, "dup.pt");
  }, {"dup.pt", "ln_final.weight"});
}

TEST_CASE("convert: torch.save and TorchScript checkpoints (tests/fixtures/checkpoints) encode like OpenAI's model") {
  // The fixtures of tests/fixtures/gen_checkpoint_fixtures.py hold tiny_clip.make_tiny models:
  // in f16 they are exactly the parity fixtures' weights, so OpenAI's references apply.
  const std::string ck = kFixtures + "checkpoints/";
  ConvertTempDir dir;
  struct Case {
    const char* file;
    const char* kind;
    const char* dtype;
    const char* format;
  };
  for (const Case& c : {Case{"vit_sd_f16.pt", "vit", "keep", "torch-zip"},
                        Case{"vit_jit_f16.pt", "vit", "keep", "torchscript"},
                        Case{"resnet_jit_f16.pt", "resnet", "keep", "torchscript"},
                        Case{"resnet_sd_f32.pt", "resnet", "f16", "torch-zip"}}) {
    INFO(std::string(c.file));
    const std::string out = dir.file(std::string(c.file) + ".safetensors");
    ConvertOptions o = tiny();
    o.dtype = c.dtype;
    convert_checkpoint(ck + c.file, out, o);
    const SafetensorsFile f = SafetensorsFile::open(out);
    CHECK(f.metadata().at("source") == std::string(c.file) + " (" + c.format + ")");
    for (const char* dropped : {"input_resolution", "context_length", "vocab_size", "visual.bn1.num_batches_tracked"})
      CHECK_FALSE(f.contains(dropped));
    // Tensor for tensor the parity fixture's weights (f16, OpenAI names).
    const Parity p(c.kind);
    size_t n = 0;
    for (const std::string& k : f.keys()) {
      INFO(k);
      CHECK(f.info(k).dtype_name == "F16");
      CHECK(bytes_equal(f.get(k), p.file.get(k)));
      ++n;
    }
    CHECK(n > 40);
    check_encodes_like_parity(out, c.kind);
  }
  // open_clip's training checkpoint: {"epoch", "name", "state_dict": {"module.*"}, "optimizer"}
  // in bf16, of the ResNet after one optimizer step on logit_scale and ln_final.weight.
  // Everything else is PyTorch's bf16 rounding of resnet_sd_f32.pt, which our bf16 output of
  // that file must equal bit for bit.
  ConvertOptions bf = tiny();
  bf.dtype = "bf16";
  convert_checkpoint(ck + "resnet_sd_f32.pt", dir.file("rn_bf16.safetensors"), bf);
  std::string log;
  convert_checkpoint(ck + "openclip_resnet_bf16.pt", dir.file("oc.safetensors"), tiny(&log));
  const SafetensorsFile ours = SafetensorsFile::open(dir.file("rn_bf16.safetensors")),
                        oc = SafetensorsFile::open(dir.file("oc.safetensors"));
  CHECK(oc.metadata().at("source") == "openclip_resnet_bf16.pt (torch-zip)");
  REQUIRE(oc.keys() == ours.keys());
  for (const std::string& k : oc.keys()) {
    INFO(k);
    CHECK(oc.info(k).dtype_name == "BF16");
    if (k != "logit_scale" && k != "ln_final.weight") CHECK(bytes_equal(oc.get(k), ours.get(k)));
  }
  // Bad checkpoints: the reader's errors, naming the file.
  for (const char* bad : {"legacy.pt", "malicious_system.pt", "malicious_eval.pt", "unsupported_int8.pt"}) {
    INFO(std::string(bad));
    expect_error<ga::IOError>(bad, [&] { convert_checkpoint(ck + bad, dir.file("bad.safetensors"), tiny()); }, {bad});
    CHECK_FALSE(std::filesystem::exists(dir.file("bad.safetensors")));
  }
  // A checkpoint that is not a CLIP model (TorchScript containers): missing tensors, named.
  expect_error<ga::Error>("not CLIP", [&] { convert_checkpoint(ck + "script_containers.pt", dir.file("x"), quiet()); },
                             {"script_containers.pt"});
  // Truncated: the zip reader's error, naming the file.
  const std::string whole = ga::test::read_file(ck + "vit_sd_f16.pt");
  ga::test::write_file(dir.file("cut.pt"), whole.substr(0, whole.size() * 2 / 3));
  expect_error<ga::IOError>("truncated zip", [&] { convert_checkpoint(dir.file("cut.pt"), dir.file("y"), tiny()); },
                            {"cut.pt"});
}
