// The `ga` tool's CLIP commands, run as a user runs them (a separate process, exit code,
// stdout, stderr), on the tiny fixtures of tests/fixtures/gen_convert_fixtures.py: outputs are
// compared with the references there (OpenAI's clip model and transformers' CLIPModel on
// OpenAI's preprocessing and tokenizer), usage errors must exit 2 and bad input 1 with one line
// naming the file at fault.
//
// These cases need the ga binary: ctest runs them as the test "ga_cli_commands", which sets
// GA_CLI to its path (tests/CMakeLists.txt). Without GA_CLI they are skipped.
#include <doctest/doctest.h>
#include <fcntl.h>
#include <spawn.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <unistd.h>

#include <algorithm>
#include <cmath>
#include <cstdlib>
#include <cstring>
#include <filesystem>
#include <fstream>
#include <sstream>
#include <string>
#include <vector>

#include "ga/clip/model.hpp"
#include "ga/io/json.hpp"
#include "ga/io/npy.hpp"
#include "ga/io/preprocess.hpp"
#include "ga/io/safetensors.hpp"
#include "test_util.hpp"

extern char** environ;

#ifndef GA_SOURCE_DIR
#error "GA_SOURCE_DIR must name the repository root (tests/CMakeLists.txt defines it)"
#endif

using ga::Tensor;
using ga::io::Json;
using ga::io::SafetensorsFile;

namespace {

const std::string kConvert = std::string(GA_SOURCE_DIR) + "/tests/fixtures/convert/";
const std::string kImages = std::string(GA_SOURCE_DIR) + "/tests/fixtures/images/";

const char* cli_path() {
  const char* p = std::getenv("GA_CLI");
  return p && *p ? p : nullptr;
}

#define REQUIRE_CLI()                                                                     \
  if (!cli_path()) {                                                                      \
    MESSAGE("skipped: GA_CLI is not set (ctest's ga_cli_commands runs this with the ga tool)"); \
    return;                                                                               \
  }

struct CliTempDir : ga::test::TempDir {
  CliTempDir() : ga::test::TempDir("ga_cli_test") {}
};


struct Run {
  int rc = -1;
  std::string out, err;
  std::string show() const { return "exit " + std::to_string(rc) + "\nstdout: " + out + "\nstderr: " + err; }
};

/// Runs the ga tool with `args` (no shell), capturing its exit code, stdout and stderr.
Run run_ga(const std::vector<std::string>& args) {
  static int counter = 0;
  const char* base = std::getenv("TMPDIR");
  const std::string stem = std::string(base && *base ? base : "/tmp") + "/ga_cli_run_" + std::to_string(::getpid()) +
                           "_" + std::to_string(counter++);
  const std::string out_path = stem + ".out", err_path = stem + ".err";
  std::vector<std::string> all = {cli_path()};
  all.insert(all.end(), args.begin(), args.end());
  std::vector<char*> cargv;
  for (std::string& a : all) cargv.push_back(a.data());
  cargv.push_back(nullptr);
  posix_spawn_file_actions_t fa;
  posix_spawn_file_actions_init(&fa);
  posix_spawn_file_actions_addopen(&fa, 1, out_path.c_str(), O_WRONLY | O_CREAT | O_TRUNC, 0644);
  posix_spawn_file_actions_addopen(&fa, 2, err_path.c_str(), O_WRONLY | O_CREAT | O_TRUNC, 0644);
  pid_t pid = 0;
  Run r;
  const int spawned = posix_spawn(&pid, cargv[0], &fa, nullptr, cargv.data(), environ);
  posix_spawn_file_actions_destroy(&fa);
  REQUIRE_MESSAGE(spawned == 0, "cannot run ", cargv[0]);
  int status = 0;
  REQUIRE(waitpid(pid, &status, 0) == pid);
  r.rc = WIFEXITED(status) ? WEXITSTATUS(status) : 128 + WTERMSIG(status);
  r.out = ga::test::read_file(out_path);
  r.err = ga::test::read_file(err_path);
  std::remove(out_path.c_str());
  std::remove(err_path.c_str());
  return r;
}

std::vector<std::string> lines(const std::string& s);

/// The run failed with `rc`, printed nothing on stdout and one line on stderr holding every one
/// of `parts`; with `after_progress`, that line may follow progress lines (convert's).
void check_failure(const Run& r, int rc, std::initializer_list<std::string> parts, bool after_progress = false) {
  INFO(r.show());
  CHECK(r.rc == rc);
  CHECK(r.out.empty());
  const std::vector<std::string> ls = lines(r.err);
  REQUIRE(!ls.empty());
  CHECK(r.err.back() == '\n');
  if (!after_progress) CHECK(ls.size() == 1);
  for (const std::string& p : parts) {
    INFO("the last line of stderr should contain: ", p);
    CHECK(ls.back().find(p) != std::string::npos);
  }
}

std::vector<std::string> lines(const std::string& s) {
  std::vector<std::string> out;
  std::istringstream in(s);
  for (std::string l; std::getline(in, l);) out.push_back(l);
  return out;
}

std::vector<std::string> json_strings(const std::string& text) {
  std::vector<std::string> out;
  const Json j = ga::io::parse_json(text, "<fixture metadata>");
  for (const Json& v : j.values()) out.push_back(v.as_string());
  return out;
}

std::vector<float> floats(const Tensor& t) { return t.to(ga::f32).contiguous().to_vector<float>(); }

/// Requires got ~ ref within rel x max|ref| (shapes equal).
void check_close(const Tensor& got, const Tensor& ref, double rel, const std::string& what) {
  INFO(what);
  REQUIRE(got.shape() == ref.shape());
  CHECK(got.dtype() == ga::f32);
  const std::vector<float> g = floats(got), r = floats(ref);
  double worst = 0, scale = 0;
  for (size_t i = 0; i < g.size(); ++i) {
    worst = std::max(worst, double(std::fabs(g[i] - r[i])));
    scale = std::max(scale, double(std::fabs(r[i])));
  }
  INFO("max abs difference ", worst, ", max |reference| ", scale);
  CHECK(worst <= rel * scale);
  CHECK(scale > 0.1);
}

Tensor normalized_rows(const Tensor& t) {
  std::vector<float> v = floats(t);
  const int64_t n = t.size(0), d = t.size(1);
  for (int64_t i = 0; i < n; ++i) {
    double s = 0;
    for (int64_t j = 0; j < d; ++j) s += double(v[i * d + j]) * v[i * d + j];
    for (int64_t j = 0; j < d; ++j) v[i * d + j] = float(v[i * d + j] / std::sqrt(s));
  }
  return ga::tensor(v, {n, d});
}

/// The two tiny models, converted once per test binary run into a temporary directory.
struct Models {
  CliTempDir dir;
  std::string resnet, vit, resnet_no_vocab;
  Models() {
    resnet = dir.file("rn.safetensors");
    vit = dir.file("vit.safetensors");
    resnet_no_vocab = dir.file("rn_novocab.safetensors");
    const Run a = run_ga({"convert", kConvert + "openclip_resnet.safetensors", resnet, "--vocab",
                      kConvert + "tiny_vocab.txt.gz", "--config", "{\"transformer_heads\": 4}"});
    REQUIRE_MESSAGE(a.rc == 0, a.show());
    const Run b = run_ga({"convert", kConvert + "hf_quickgelu", vit});
    REQUIRE_MESSAGE(b.rc == 0, b.show());
    const Run c = run_ga({"convert", "--config={\"transformer_heads\": 4}", kConvert + "openclip_resnet.safetensors",
                      resnet_no_vocab});
    REQUIRE_MESSAGE(c.rc == 0, c.show());
  }
};

const Models& models() {
  static Models m;
  return m;
}

const SafetensorsFile& reference() {
  static const SafetensorsFile f = SafetensorsFile::open(kConvert + "cli_reference.safetensors");
  return f;
}

std::vector<std::string> reference_images() {
  std::vector<std::string> out;
  for (const std::string& f : json_strings(reference().metadata().at("images"))) out.push_back(kImages + f);
  return out;
}

}  // namespace

TEST_CASE("cli: ga describes the build, naming the int8 kernel this CPU runs") {
  REQUIRE_CLI();
  const Run r = run_ga({});
  REQUIRE_MESSAGE(r.rc == 0, r.show());
  const size_t at = r.out.find("  kernels: f32 ");
  REQUIRE_MESSAGE(at != std::string::npos, r.show());
  const std::string line = r.out.substr(at, r.out.find('\n', at) - at);
  CAPTURE(line);
  // The fastest int8 tile the CPU runs, probed here independently of the library (unless
  // the environment forces one).
  if (!std::getenv("GA_GEMM_INT8")) {
    std::string want = "portable";
#if defined(__x86_64__) && defined(__GNUC__)
    __builtin_cpu_init();
    if (__builtin_cpu_supports("avx2")) want = "avx2";
    if (__builtin_cpu_supports("avx512f") && __builtin_cpu_supports("avx512vl") &&
        __builtin_cpu_supports("avx512vnni"))
      want = "avx512vnni";
#endif
    const std::string tail = ", int8 " + want;
    CHECK(line.size() > tail.size());
    CHECK(line.compare(line.size() - tail.size(), tail.size(), tail) == 0);
  }
}

TEST_CASE("cli: convert reports progress, refuses to overwrite without --force, info prints the config") {
  REQUIRE_CLI();
  CliTempDir dir;
  const std::string out = dir.file("m.safetensors");
  const std::vector<std::string> convert = {"convert", kConvert + "hf_gelu", out};
  Run r = run_ga(convert);
  INFO(r.show());
  REQUIRE(r.rc == 0);
  CHECK(r.out.empty());
  CHECK(r.err.find("ga convert: reading") != std::string::npos);
  CHECK(r.err.find("ga convert: wrote " + out) != std::string::npos);
  const std::string first = ga::test::read_file(out);
  // An existing OUTPUT: exit 1, untouched, the message names it and the flag.
  check_failure(run_ga(convert), 1, {out, "already exists", "--force"});
  CHECK(ga::test::read_file(out) == first);
  std::vector<std::string> forced = convert;
  forced.push_back("--force");
  CHECK(run_ga(forced).rc == 0);
  CHECK(ga::test::read_file(out) == first);  // the same bytes: conversion is deterministic

  r = run_ga({"info", out});
  INFO(r.show());
  REQUIRE(r.rc == 0);
  const auto ls = lines(r.out);
  REQUIRE_FALSE(ls.empty());
  std::string config_line;
  for (const std::string& l : ls)
    if (l.compare(0, 8, "config: ") == 0) config_line = l.substr(8);
  const Json cfg = ga::io::parse_json(config_line, "info's config line");
  CHECK(cfg.dump() == ga::io::parse_json(SafetensorsFile::open(out).metadata().at("config")).dump());
  CHECK(cfg.at("activation").as_string() == "gelu");
  CHECK(cfg.at("context_length").as_int() == 16);
  CHECK(r.out.find("tokenizer:    1000 tokens") != std::string::npos);
  CHECK(r.out.find("source:       hf_gelu (huggingface)") != std::string::npos);
  r = run_ga({"info", "--tensors", out});
  CHECK(r.rc == 0);
  CHECK(r.out.find("  visual.proj  F16  [32, 24]\n") != std::string::npos);
  r = run_ga({"info", models().resnet_no_vocab});
  CHECK(r.out.find("tokenizer:    none") != std::string::npos);
}

TEST_CASE("cli: tokenize prints OpenAI's ids, padding included") {
  REQUIRE_CLI();
  const std::vector<std::string> texts = json_strings(reference().metadata().at("texts"));
  const std::vector<int64_t> ids = reference().get("resnet.text_tokens").to_vector<int64_t>();
  std::vector<std::string> expected;
  for (size_t i = 0; i < texts.size(); ++i) {
    std::string l;
    for (size_t j = 0; j < 77; ++j) l += (j ? " " : "") + std::to_string(ids[i * 77 + j]);
    expected.push_back(l);
  }
  for (const std::vector<std::string>& source : {std::vector<std::string>{"--model", models().resnet},
                                                 std::vector<std::string>{"--vocab", kConvert + "tiny_vocab.txt"}}) {
    std::vector<std::string> args = {"tokenize"};
    args.insert(args.end(), source.begin(), source.end());
    args.push_back("--");  // the texts follow; one is empty
    args.insert(args.end(), texts.begin(), texts.end());
    const Run r = run_ga(args);
    INFO(r.show());
    REQUIRE(r.rc == 0);
    CHECK(lines(r.out) == expected);
  }
  // --context and --truncate: "a photo of a cat." is 10 ids with start and end.
  check_failure(run_ga({"tokenize", "--vocab", kConvert + "tiny_vocab.txt", "--context", "8", texts[0]}), 1,
                {texts[0], "context length 8"});
  const Run r = run_ga({"tokenize", "--vocab", kConvert + "tiny_vocab.txt", "--context", "8", "--truncate", texts[0]});
  CHECK(r.rc == 0);
  std::string cut;
  for (size_t j = 0; j < 7; ++j) cut += std::to_string(ids[j]) + " ";
  CHECK(r.out == cut + "999\n");
  // A model without a vocabulary says how to add one.
  check_failure(run_ga({"tokenize", "--model", models().resnet_no_vocab, "x"}), 1, {models().resnet_no_vocab, "--vocab"});
}

TEST_CASE("cli: preprocess, encode-image, encode-text match the references") {
  REQUIRE_CLI();
  CliTempDir dir;
  const std::vector<std::string> images = reference_images();
  const std::vector<std::string> texts = json_strings(reference().metadata().at("texts"));
  auto with = [](std::vector<std::string> a, const std::vector<std::string>& b) {
    a.insert(a.end(), b.begin(), b.end());
    return a;
  };
  // Preprocessing: OpenAI's (PIL + torchvision) pipeline, exactly up to float rounding.
  Run r = run_ga(with({"preprocess", "--model", models().vit, "--out", dir.file("pre.npy")}, images));
  REQUIRE_MESSAGE(r.rc == 0, r.show());
  check_close(ga::io::load_npy(dir.file("pre.npy")), reference().get("vit.preprocess"), 1e-6, "preprocess");
  // Palette and alpha images take OpenAI's order (resize and crop in the file's own mode, then
  // RGB), which io::preprocess_clip(PilImage) implements and test_image checks against PIL;
  // converting to RGB first (the old way) gives other values for these files.
  {
    const ga::clip::ClipConfig cfg = ga::clip::Model::load(models().vit).config();
    const int R = static_cast<int>(cfg.image_resolution);
    const std::array<float, 3> mean{float(cfg.image_mean[0]), float(cfg.image_mean[1]), float(cfg.image_mean[2])};
    const std::array<float, 3> sd{float(cfg.image_std[0]), float(cfg.image_std[1]), float(cfg.image_std[2])};
    const std::vector<std::string> odd = {kImages + "rgba8_edges.png", kImages + "palette8.png"};
    r = run_ga(with({"preprocess", "--model", models().vit, "--out", dir.file("odd.npy")}, odd));
    REQUIRE_MESSAGE(r.rc == 0, r.show());
    const Tensor got = ga::io::load_npy(dir.file("odd.npy"));
    for (size_t i = 0; i < odd.size(); ++i) {
      INFO(odd[i]);
      const Tensor want = ga::io::preprocess_clip(ga::io::open_image(odd[i]), R, mean, sd);
      const Tensor rgb_first = ga::io::preprocess_clip(ga::io::load_image(odd[i]), R);
      CHECK(ga::max(ga::abs(ga::sub(got.select(0, int64_t(i)), want))).item<float>() == 0.0f);
      CHECK(ga::max(ga::abs(ga::sub(want, rgb_first))).item<float>() > 0.01f);
    }
  }

  for (const char* kind : {"resnet", "vit"}) {
    INFO(kind);
    const std::string model = std::string(kind) == "vit" ? models().vit : models().resnet;
    const Tensor img_ref = reference().get(std::string(kind) + ".image_features");
    const Tensor txt_ref = reference().get(std::string(kind) + ".text_features");
    // Batch 2 over 3 images: two forward passes, progress on stderr.
    const std::string img = dir.file(std::string(kind) + "_img.npy");
    r = run_ga(with({"encode-image", "--model", model, "--batch", "2", "--out", img}, images));
    REQUIRE_MESSAGE(r.rc == 0, r.show());
    CHECK(r.out.empty());
    CHECK(r.err.find("ga encode-image: 2/3 images") != std::string::npos);
    check_close(ga::io::load_npy(img), img_ref, 1e-4, "encode-image");
    const std::string imgn = dir.file(std::string(kind) + "_imgn.npy");
    r = run_ga(with({"encode-image", "--normalize", "--model", model, "--out", imgn}, images));
    REQUIRE_MESSAGE(r.rc == 0, r.show());
    check_close(ga::io::load_npy(imgn), normalized_rows(img_ref), 1e-4, "encode-image --normalize");
    // --bf16: the fast approximate path; each unit row within cosine 0.999 of the reference's.
    const std::string imgb = dir.file(std::string(kind) + "_imgb.npy");
    r = run_ga(with({"encode-image", "--bf16", "--normalize", "--model", model, "--out", imgb}, images));
    REQUIRE_MESSAGE(r.rc == 0, r.show());
    const std::vector<float> cos = ga::sum(ga::mul(ga::io::load_npy(imgb), normalized_rows(img_ref)), {1}).to_vector<float>();
    for (float c : cos) CHECK(c >= 0.999f);
    // --int8 likewise; --bf16 with --int8 is a usage error (exit 2).
    const std::string img8 = dir.file(std::string(kind) + "_img8.npy");
    r = run_ga(with({"encode-image", "--int8", "--normalize", "--model", model, "--out", img8}, images));
    REQUIRE_MESSAGE(r.rc == 0, r.show());
    const std::vector<float> cos8 = ga::sum(ga::mul(ga::io::load_npy(img8), normalized_rows(img_ref)), {1}).to_vector<float>();
    for (float c : cos8) CHECK(c >= 0.999f);
    check_failure(run_ga(with({"encode-image", "--int8", "--bf16", "--model", model, "--out", dir.file("x.npy")}, images)),
                  2, {"--bf16", "--int8"});

    const std::string txt = dir.file(std::string(kind) + "_txt.npy");
    r = run_ga(with({"encode-text", "--model", model, "--out", txt, "--"}, texts));
    REQUIRE_MESSAGE(r.rc == 0, r.show());
    check_close(ga::io::load_npy(txt), txt_ref, 1e-4, "encode-text");
    const std::string txtn = dir.file(std::string(kind) + "_txtn.npy");
    r = run_ga(with({"encode-text", "--model", model, "--normalize", "--out", txtn, "--"}, texts));
    REQUIRE_MESSAGE(r.rc == 0, r.show());
    check_close(ga::io::load_npy(txtn), normalized_rows(txt_ref), 1e-4, "encode-text --normalize");
    // An existing --out: exit 1, file untouched; --force replaces it.
    const std::string before = ga::test::read_file(txt);
    check_failure(run_ga({"encode-text", "--model", model, "--out", txt, "other"}), 1, {txt, "already exists", "--force"});
    CHECK(ga::test::read_file(txt) == before);
    r = run_ga({"encode-text", "--model", model, "--out", txt, "--force", "other"});
    CHECK(r.rc == 0);
    CHECK(ga::io::load_npy(txt).shape() == ga::Shape{1, img_ref.size(1)});
  }
  // --truncate lets a text longer than the context through.
  std::string long_text;
  for (int i = 0; i < 80; ++i) long_text += "cat ";
  check_failure(run_ga({"encode-text", "--model", models().vit, "--out", dir.file("long.npy"), long_text}), 1,
                {"cat cat cat", "context length 77", "truncat"});
  CHECK_FALSE(std::filesystem::exists(dir.file("long.npy")));
  r = run_ga({"encode-text", "--model", models().vit, "--truncate", "--out", dir.file("long.npy"), long_text});
  CHECK(r.rc == 0);
  CHECK(ga::io::load_npy(dir.file("long.npy")).shape() == ga::Shape{1, 16});
}

TEST_CASE("cli: zeroshot prints the top classes; --json lines are valid JSON with the references' probabilities") {
  REQUIRE_CLI();
  CliTempDir dir;
  const std::vector<std::string> classes = json_strings(reference().metadata().at("classes"));
  std::string class_arg;
  for (const std::string& c : classes) class_arg += (class_arg.empty() ? "" : ", ") + c;  // spaces are trimmed
  // Image names JSON must escape: a quote and a backslash, and bytes that are not UTF-8.
  std::vector<std::string> images = reference_images();
  std::filesystem::copy_file(images[0], dir.file("we\"ird\\name.png"));
  std::filesystem::copy_file(images[1], dir.file("bad\xff" "utf8.png"));
  images[0] = dir.file("we\"ird\\name.png");
  images[1] = dir.file("bad\xff" "utf8.png");
  for (const char* kind : {"resnet", "vit"}) {
    INFO(kind);
    const std::string model = std::string(kind) == "vit" ? models().vit : models().resnet;
    const std::vector<float> probs = floats(reference().get(std::string(kind) + ".zeroshot_probs"));
    std::vector<std::string> args = {"zeroshot", "--model", model, "--classes", class_arg, "--json", "--batch", "2"};
    args.insert(args.end(), images.begin(), images.end());
    Run r = run_ga(args);
    INFO(r.show());
    REQUIRE(r.rc == 0);
    const auto ls = lines(r.out);
    REQUIRE(ls.size() == images.size());
    for (size_t i = 0; i < ls.size(); ++i) {
      const Json j = ga::io::parse_json(ls[i], "zeroshot --json line");
      REQUIRE(j.keys() == std::vector<std::string>{"image", "top"});
      if (i == 0) CHECK(j.at("image").as_string() == images[0]);
      if (i == 1) CHECK(j.at("image").as_string() == dir.file("bad\xEF\xBF\xBD" "utf8.png"));
      const Json& top = j.at("top");
      REQUIRE(top.size() == 5);
      const float* row = probs.data() + i * classes.size();
      float previous = 2;
      for (size_t k = 0; k < 5; ++k) {
        REQUIRE(top[k].keys() == std::vector<std::string>{"class", "prob"});
        const std::string name = top[k].at("class").as_string();
        const auto at = std::find(classes.begin(), classes.end(), name);
        REQUIRE_MESSAGE(at != classes.end(), name);
        const double p = top[k].at("prob").as_number();
        CHECK(p == doctest::Approx(row[at - classes.begin()]).epsilon(1e-4));
        CHECK(p <= previous);
        previous = static_cast<float>(p);
      }
      // The one class left out has the smallest reference probability.
      CHECK(*std::min_element(row, row + classes.size()) <= previous + 1e-6f);
    }
    // Plain text: the image, then "  P.PPPP  class" lines; fewer classes than 5 -> all of them.
    r = run_ga({"zeroshot", "--model", model, "--classes", "cat,dog,tree", "--template", "a {} here.", reference_images()[0]});
    REQUIRE(r.rc == 0);
    const auto pl = lines(r.out);
    REQUIRE(pl.size() == 4);
    CHECK(pl[0] == reference_images()[0]);
    double sum = 0;
    for (size_t k = 1; k < 4; ++k) {
      CHECK(pl[k].compare(0, 4, "  0.") == 0);
      sum += std::stod(pl[k].substr(2, 6));
    }
    CHECK(sum == doctest::Approx(1.0).epsilon(2e-4));
  }
}

TEST_CASE("cli: bad usage exits 2, bad input 1, each with one line naming what is at fault") {
  REQUIRE_CLI();
  CliTempDir dir;
  const std::string& model = models().resnet;
  const std::string img = reference_images()[0];
  // Usage errors.
  check_failure(run_ga({"info", "--frobnicate", model}), 2, {"ga info", "unknown option '--frobnicate'", "ga info --help"});
  check_failure(run_ga({"info"}), 2, {"needs one MODEL"});
  check_failure(run_ga({"convert", model}), 2, {"needs INPUT and OUTPUT"});
  check_failure(run_ga({"convert", model, dir.file("x"), "--dtype", "f64"}), 2, {"--dtype", "f64"});
  check_failure(run_ga({"convert", model, dir.file("x"), "--config", "{not json"}), 2, {"--config"});
  check_failure(run_ga({"preprocess", "--model", model, img}), 2, {"missing required option --out"});
  check_failure(run_ga({"encode-image", "--model", model, "--out", dir.file("o.npy")}), 2, {"IMAGE"});
  check_failure(run_ga({"encode-image", "--model", model, "--batch", "0", "--out", dir.file("o.npy"), img}), 2, {"--batch"});
  check_failure(run_ga({"encode-text", "--model"}), 2, {"--model needs a value"});
  check_failure(run_ga({"encode-text", "--normalize=yes", "--model", model, "--out", dir.file("o.npy"), "t"}), 2,
                {"--normalize takes no value"});
  check_failure(run_ga({"tokenize", "--model", model, "--vocab", kConvert + "tiny_vocab.txt", "t"}), 2, {"exactly one"});
  check_failure(run_ga({"tokenize", "--vocab", kConvert + "tiny_vocab.txt", "--context", "x", "t"}), 2, {"--context"});
  check_failure(run_ga({"zeroshot", "--model", model, "--classes", "cat,,dog", img}), 2, {"empty class name"});
  check_failure(run_ga({"zeroshot", "--model", model, "--classes", "cat", "--template", "a photo", img}), 2, {"{}"});
  check_failure(run_ga({"zeroshot", "--model", model, img}), 2, {"--classes"});
  check_failure(run_ga({"selftest", "--threads", "0"}), 2, {"--threads"});
  check_failure(run_ga({"frobnicate"}), 2, {"unknown command"});
  for (const char* cmd : {"convert", "info", "tokenize", "preprocess", "encode-image", "encode-text", "zeroshot"}) {
    const Run r = run_ga({cmd, "--help"});
    INFO(r.show());
    CHECK(r.rc == 0);
    CHECK(r.out.find(std::string("usage: ga ") + cmd) == 0);
    CHECK(r.out.find("--threads N") != std::string::npos);
    CHECK(run_ga({cmd, "--threads", "1", "-h"}).rc == 0);
  }

  // Bad input.
  check_failure(run_ga({"info", dir.file("missing.safetensors")}), 1, {"missing.safetensors"});
  check_failure(run_ga({"info", kConvert + "hf_quickgelu_reference.safetensors"}), 1,
                {"hf_quickgelu_reference.safetensors", "not a converted CLIP model"});
  std::string ck = ga::test::read_file(std::string(GA_SOURCE_DIR) + "/tests/fixtures/checkpoints/vit_sd_f16.pt");
  std::ofstream(dir.file("corrupt.pt"), std::ios::binary) << ck.substr(0, ck.size() / 2);
  check_failure(run_ga({"convert", dir.file("corrupt.pt"), dir.file("c.safetensors")}), 1, {"corrupt.pt"},
                /*after_progress=*/true);
  CHECK_FALSE(std::filesystem::exists(dir.file("c.safetensors")));
  std::ofstream(dir.file("notes.txt")) << "not a model\n";
  check_failure(run_ga({"convert", dir.file("notes.txt"), dir.file("c.safetensors")}), 1,
                {"notes.txt", "not a recognised checkpoint"});
  std::ofstream(dir.file("broken.png"), std::ios::binary) << "\x89PNG\r\n\x1a\n garbage";
  check_failure(run_ga({"encode-image", "--model", model, "--out", dir.file("o.npy"), img, dir.file("broken.png")}), 1,
                {"broken.png"});
  check_failure(run_ga({"preprocess", "--model", model, "--out", dir.file("o.npy"), dir.file("nope.jpg")}), 1, {"nope.jpg"});
  check_failure(run_ga({"zeroshot", "--model", model, "--classes", "a,b", dir.file("broken.png")}), 1, {"broken.png"});
  CHECK_FALSE(std::filesystem::exists(dir.file("o.npy")));
  check_failure(run_ga({"encode-text", "--model", models().resnet_no_vocab, "--out", dir.file("o.npy"), "t"}), 1,
                {models().resnet_no_vocab, "--vocab"});
  check_failure(run_ga({"zeroshot", "--model", models().resnet_no_vocab, "--classes", "a,b", img}), 1,
                {models().resnet_no_vocab, "--vocab"});
  check_failure(run_ga({"encode-image", "--model", model, "--out", dir.file("nodir/o.npy"), img}), 1, {"nodir"});
  check_failure(run_ga({"convert", kConvert + "openclip_resnet.safetensors", dir.file("e.safetensors"), "--config",
                    "{\"embed_dim\": 7}"}),
                1, {"embed_dim", "text_projection"}, /*after_progress=*/true);
}
