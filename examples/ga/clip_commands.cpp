// The CLIP inference commands: tokenize, preprocess, encode-image, encode-text, zeroshot.
// Outputs: token ids on stdout; .npy files (float32, C order) for tensors; zero-shot results
// on stdout, as text or one JSON object per line. Progress goes to stderr.
#include <algorithm>
#include <array>
#include <charconv>
#include <chrono>
#include <cstdio>
#include <exception>
#include <iomanip>
#include <iostream>
#include <numeric>
#include <optional>
#include <sstream>

#include <ga/clip/model.hpp>
#include <ga/clip/tokenizer.hpp>
#include <ga/io/image.hpp>
#include <ga/io/npy.hpp>
#include <ga/io/preprocess.hpp>

#include "cli.hpp"

namespace ga_cli {

namespace {

const char* const kTokenizeUsage =
    "usage: ga tokenize [--vocab FILE | --model MODEL] [--context N] [--truncate] TEXT...\n"
    "\n"
    "Prints one line per TEXT: its CLIP token ids, space-separated, padding included\n"
    "(start token, the text's tokens, end token, zeros up to the context length), as OpenAI's\n"
    "clip.tokenize computes them.\n"
    "\n"
    "options:\n"
    "  --vocab FILE    a BPE vocabulary (bpe_simple_vocab_16e6.txt or .txt.gz)\n"
    "  --model MODEL   a converted model file: its vocabulary and context length\n"
    "  --context N     the context length (default: the model's, or 77 with --vocab)\n"
    "  --truncate      cut texts longer than the context (keeping the end token) instead of\n"
    "                  failing\n"
    GA_CLI_HELP_COMMON
    "\n"
    "Use -- before texts that start with '-'.\n";

const char* const kPreprocessUsage =
    "usage: ga preprocess --model MODEL --out OUT.npy [--force] IMAGE...\n"
    "\n"
    "Writes the images as CLIP sees them: float32 N x 3 x R x R (R: the model's resolution),\n"
    "decoded to RGB, the shorter side resized to R (bicubic, as PIL), center-cropped to R x R,\n"
    "scaled to [0, 1] and normalised with the model's mean and std. Images: PNG, JPEG, BMP,\n"
    "GIF (first frame), binary PNM.\n"
    "\n"
    "options:\n"
    "  --model MODEL   a converted model file (its resolution, mean and std)\n"
    GA_CLI_HELP_OUT
    GA_CLI_HELP_COMMON;

const char* const kEncodeImageUsage =
    "usage: ga encode-image --model MODEL [--batch B] [--normalize] [--bf16|--int8] --out OUT.npy [--force]\n"
    "                       IMAGE...\n"
    "\n"
    "Writes the CLIP image embeddings of the images: float32 N x D (D: the model's embed_dim),\n"
    "one row per IMAGE in order. Images are preprocessed as by 'ga preprocess'.\n"
    "\n"
    "options:\n"
    "  --model MODEL   a converted model file\n"
    "  --batch B       images per forward pass (default 16)\n"
    "  --normalize     L2-normalise each embedding\n"
    GA_CLI_HELP_BF16
    GA_CLI_HELP_OUT
    GA_CLI_HELP_COMMON;

const char* const kEncodeTextUsage =
    "usage: ga encode-text --model MODEL [--normalize] [--truncate] [--bf16|--int8] --out OUT.npy [--force]\n"
    "                      TEXT...\n"
    "\n"
    "Writes the CLIP text embeddings of the texts: float32 N x D (D: the model's embed_dim),\n"
    "one row per TEXT in order. The model file needs a tokenizer (ga convert --vocab).\n"
    "\n"
    "options:\n"
    "  --model MODEL   a converted model file\n"
    "  --normalize     L2-normalise each embedding\n"
    "  --truncate      cut texts longer than the context instead of failing\n"
    GA_CLI_HELP_BF16
    GA_CLI_HELP_OUT
    GA_CLI_HELP_COMMON
    "\n"
    "Use -- before texts that start with '-'.\n";

const char* const kZeroshotUsage =
    "usage: ga zeroshot --model MODEL --classes \"cat,dog,...\" [--template \"a photo of a {}.\"]\n"
    "                   [--json] [--batch B] [--bf16|--int8] IMAGE...\n"
    "\n"
    "Classifies each image over the classes: the probabilities are the softmax, over the\n"
    "classes, of CLIP's logits (logit_scale x cosine similarity) between the image and the\n"
    "prompt of each class (the template with {} replaced by the class name). Prints, per\n"
    "image, the top 5 classes (fewer if there are fewer) with their probabilities:\n"
    "  IMAGE\n"
    "    0.9123  cat\n"
    "    ...\n"
    "With --json, one JSON object per line instead:\n"
    "  {\"image\": PATH, \"top\": [{\"class\": NAME, \"prob\": P}, ...]}\n"
    "\n"
    "options:\n"
    "  --model MODEL   a converted model file with a tokenizer (ga convert --vocab)\n"
    "  --classes LIST  class names separated by commas (spaces around names are ignored)\n"
    "  --template T    the prompt, with {} where the class name goes (default \"a photo of a {}.\")\n"
    "  --json          JSON lines output\n"
    "  --batch B       images per forward pass (default 16)\n"
    GA_CLI_HELP_BF16
    GA_CLI_HELP_COMMON;

const std::vector<Option> kOutOptions = {{"out", true}, {"force", false}};

std::vector<Option> with(std::vector<Option> a, const std::vector<Option>& b) {
  a.insert(a.end(), b.begin(), b.end());
  return a;
}

void need_inputs(const Args& args, const char* what) {
  if (args.positional.empty()) throw UsageError(std::string("needs at least one ") + what);
}

/// Loads images[begin, end) preprocessed for `cfg` into a new [end - begin, 3, R, R] f32 tensor.
/// Images decode in parallel; the first failure (in input order) is rethrown, naming its file.
ga::Tensor preprocess_images(const std::vector<std::string>& images, size_t begin, size_t end,
                             const ga::clip::ClipConfig& cfg) {
  const int64_t R = cfg.image_resolution;
  const std::array<float, 3> mean{float(cfg.image_mean[0]), float(cfg.image_mean[1]), float(cfg.image_mean[2])};
  const std::array<float, 3> std{float(cfg.image_std[0]), float(cfg.image_std[1]), float(cfg.image_std[2])};
  const int64_t n = static_cast<int64_t>(end - begin);
  ga::Tensor out = ga::empty({n, 3, R, R});
  float* dst = out.data_ptr<float>();
  std::vector<std::exception_ptr> errors(static_cast<size_t>(n));
#pragma omp parallel for schedule(dynamic, 1)
  for (int64_t i = 0; i < n; ++i) {
    try {
      const std::string& path = images[begin + static_cast<size_t>(i)];
      // OpenAI's order: resize and crop in the mode PIL opens the file in, then RGB.
      ga::io::preprocess_clip_into(ga::io::open_image(path), static_cast<int>(R), dst + i * 3 * R * R, mean, std);
    } catch (...) {
      errors[static_cast<size_t>(i)] = std::current_exception();
    }
  }
  for (const auto& e : errors)
    if (e) std::rethrow_exception(e);
  return out;
}

/// Rows of `features` scaled to unit L2 norm.
ga::Tensor l2_normalize(const ga::Tensor& features) { return ga::normalize(features, 1); }

/// Text features of token rows [N, context], 256 rows per forward pass (bounded memory for
/// long lists, e.g. a thousand class prompts); progress on stderr when there is more than one.
ga::Tensor encode_texts(const std::string& command, const ga::clip::Model& m, const ga::Tensor& tokens) {
  const int64_t n = tokens.size(0), batch = 256;
  std::vector<ga::Tensor> parts;
  for (int64_t b = 0; b < n; b += batch) {
    const int64_t e = std::min(n, b + batch);
    parts.push_back(m.encode_text(tokens.narrow(0, b, e - b).contiguous()));
    if (n > batch) progress(command, std::to_string(e) + "/" + std::to_string(n) + " texts");
  }
  return parts.size() == 1 ? parts[0] : ga::concat(parts, 0);
}

/// Loads the model, reporting how long it took when it is slow (large files, cold cache).
/// With --bf16 or --int8, the fast reduced-precision weights (ga::clip::WeightMode::Bf16 or
/// Int8).
ga::clip::Model load_model(const std::string& command, const std::string& path, const Args& args) {
  read_model_info(path);  // a clear error for a file that is not a converted model
  const auto t0 = std::chrono::steady_clock::now();
  ga::clip::LoadOptions options;
  if (args.flag("bf16") && args.flag("int8")) throw UsageError("--bf16 and --int8 exclude each other: pick one");
  if (args.flag("bf16")) options.weights = ga::clip::WeightMode::Bf16;
  if (args.flag("int8")) options.weights = ga::clip::WeightMode::Int8;
  ga::clip::Model m = ga::clip::Model::load(path, options);
  const double s = std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count();
  if (s > 1.0) {
    std::ostringstream os;
    os << "loaded " << path << " in " << std::fixed << std::setprecision(1) << s << " s";
    progress(command, os.str());
  }
  return m;
}

void require_tokenizer(const ga::clip::Model& m, const std::string& path) {
  GA_CHECK(m.has_tokenizer(), ga::IOError, path,
           ": the model file has no tokenizer; convert it again with --vocab bpe_simple_vocab_16e6.txt.gz "
           "(ga convert ", path, " NEW.safetensors --vocab ...)");
}

/// Shortest decimal text that reads back as the same float (valid JSON for finite values).
std::string float_text(float v) {
  char buf[32];
  const auto r = std::to_chars(buf, buf + sizeof buf, v);
  return std::string(buf, r.ptr);
}

}  // namespace

int run_tokenize(const std::vector<std::string>& argv) {
  Args args;
  if (parse_common("tokenize", argv, {{"vocab", true}, {"model", true}, {"context", true}, {"truncate", false}},
                   kTokenizeUsage, args))
    return 0;
  if (args.has("vocab") == args.has("model")) throw UsageError("give exactly one of --vocab FILE and --model MODEL");
  need_inputs(args, "TEXT");
  std::optional<ga::clip::Tokenizer> tok;
  int64_t context = 77;
  if (args.has("vocab")) {
    tok = ga::clip::Tokenizer::from_file(args.values.at("vocab"));
  } else {
    const ModelFileInfo info = read_model_info(args.values.at("model"));
    GA_CHECK(info.has_merges(), ga::IOError, info.path,
             ": the model file has no tokenizer; convert it again with --vocab bpe_simple_vocab_16e6.txt.gz");
    tok = ga::clip::Tokenizer::from_merges_text(info.metadata.at("tokenizer.merges"),
                                                info.path + " (tokenizer.merges)");
    context = info.config.context_length;
  }
  context = args.get_int("context", 2, 1 << 20, context);
  const bool truncate = args.flag("truncate");
  std::string out;
  for (const std::string& text : args.positional) {
    const std::vector<int32_t> ids = tok->tokenize(text, static_cast<int>(context), truncate);
    for (size_t i = 0; i < ids.size(); ++i) out += (i ? " " : "") + std::to_string(ids[i]);
    out += '\n';
  }
  std::cout << out;
  return 0;
}

int run_preprocess(const std::vector<std::string>& argv) {
  Args args;
  if (parse_common("preprocess", argv, with({{"model", true}}, kOutOptions), kPreprocessUsage, args)) return 0;
  const std::string& model = args.required("model");
  const std::string& out = args.required("out");
  need_inputs(args, "IMAGE");
  check_output_path(out, args.flag("force"));
  const ModelFileInfo info = read_model_info(model);
  const std::vector<std::string>& images = args.positional;
  const size_t chunk = 64;
  std::vector<ga::Tensor> parts;
  for (size_t b = 0; b < images.size(); b += chunk) {
    const size_t e = std::min(images.size(), b + chunk);
    parts.push_back(preprocess_images(images, b, e, info.config));
    if (images.size() > chunk) progress("preprocess", std::to_string(e) + "/" + std::to_string(images.size()) + " images");
  }
  ga::io::save_npy(out, parts.size() == 1 ? parts[0] : ga::concat(parts, 0), args.flag("force"));
  return 0;
}

int run_encode_image(const std::vector<std::string>& argv) {
  Args args;
  if (parse_common("encode-image", argv, with({{"model", true}, {"batch", true}, {"normalize", false}, {"bf16", false}, {"int8", false}}, kOutOptions),
                   kEncodeImageUsage, args))
    return 0;
  const std::string& model = args.required("model");
  const std::string& out = args.required("out");
  const size_t batch = static_cast<size_t>(args.get_int("batch", 1, 1 << 20, 16));
  need_inputs(args, "IMAGE");
  check_output_path(out, args.flag("force"));
  const ga::clip::Model m = load_model("encode-image", model, args);
  const std::vector<std::string>& images = args.positional;
  std::vector<ga::Tensor> parts;
  const auto t0 = std::chrono::steady_clock::now();
  for (size_t b = 0; b < images.size(); b += batch) {
    const size_t e = std::min(images.size(), b + batch);
    ga::Tensor features = m.encode_image(preprocess_images(images, b, e, m.config()));
    parts.push_back(args.flag("normalize") ? l2_normalize(features) : features);
    if (images.size() > batch) {
      const double s = std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count();
      std::ostringstream os;
      os << e << "/" << images.size() << " images, " << std::fixed << std::setprecision(1) << double(e) / s
         << " images/s";
      progress("encode-image", os.str());
    }
  }
  ga::io::save_npy(out, parts.size() == 1 ? parts[0] : ga::concat(parts, 0), args.flag("force"));
  return 0;
}

int run_encode_text(const std::vector<std::string>& argv) {
  Args args;
  if (parse_common("encode-text", argv, with({{"model", true}, {"normalize", false}, {"truncate", false}, {"bf16", false}, {"int8", false}}, kOutOptions),
                   kEncodeTextUsage, args))
    return 0;
  const std::string& model = args.required("model");
  const std::string& out = args.required("out");
  need_inputs(args, "TEXT");
  check_output_path(out, args.flag("force"));
  const ga::clip::Model m = load_model("encode-text", model, args);
  require_tokenizer(m, model);
  const ga::Tensor features = encode_texts("encode-text", m, m.tokenize(args.positional, args.flag("truncate")));
  ga::io::save_npy(out, args.flag("normalize") ? l2_normalize(features) : features, args.flag("force"));
  return 0;
}

int run_zeroshot(const std::vector<std::string>& argv) {
  Args args;
  if (parse_common("zeroshot", argv,
                   {{"model", true}, {"classes", true}, {"template", true}, {"json", false}, {"batch", true}, {"bf16", false}, {"int8", false}},
                   kZeroshotUsage, args))
    return 0;
  const std::string& model = args.required("model");
  const std::string& class_list = args.required("classes");
  const std::string tmpl = args.get("template", "a photo of a {}.");
  const size_t batch = static_cast<size_t>(args.get_int("batch", 1, 1 << 20, 16));
  const bool json = args.flag("json");
  need_inputs(args, "IMAGE");
  if (tmpl.find("{}") == std::string::npos)
    throw UsageError("--template must contain {} where the class name goes, got '" + tmpl + "'");
  std::vector<std::string> classes;
  {
    size_t start = 0;
    while (true) {
      const size_t comma = class_list.find(',', start);
      std::string name = class_list.substr(start, comma == std::string::npos ? std::string::npos : comma - start);
      const size_t a = name.find_first_not_of(" \t"), z = name.find_last_not_of(" \t");
      name = a == std::string::npos ? "" : name.substr(a, z - a + 1);
      if (name.empty())
        throw UsageError("--classes has an empty class name (at position " + std::to_string(classes.size() + 1) + ")");
      if (std::find(classes.begin(), classes.end(), name) != classes.end())
        throw UsageError("--classes names '" + name + "' twice");
      classes.push_back(name);
      if (comma == std::string::npos) break;
      start = comma + 1;
    }
  }
  const ga::clip::Model m = load_model("zeroshot", model, args);
  require_tokenizer(m, model);
  std::vector<std::string> prompts;
  for (const std::string& c : classes) {
    std::string p;
    size_t at = 0, hole;
    while ((hole = tmpl.find("{}", at)) != std::string::npos) {
      p += tmpl.substr(at, hole - at) + c;
      at = hole + 2;
    }
    prompts.push_back(p + tmpl.substr(at));
  }
  const ga::Tensor text = encode_texts("zeroshot", m, m.tokenize(prompts));
  const size_t top = std::min<size_t>(5, classes.size());
  const std::vector<std::string>& images = args.positional;
  for (size_t b = 0; b < images.size(); b += batch) {
    const size_t e = std::min(images.size(), b + batch);
    const ga::Tensor probs = ga::softmax(m.logits(m.encode_image(preprocess_images(images, b, e, m.config())), text), 1);
    const std::vector<float> p = probs.contiguous().to_vector<float>();
    std::ostringstream os;
    for (size_t i = 0; i < e - b; ++i) {
      const float* row = p.data() + i * classes.size();
      std::vector<size_t> order(classes.size());
      std::iota(order.begin(), order.end(), size_t(0));
      std::stable_sort(order.begin(), order.end(), [&](size_t x, size_t y) { return row[x] > row[y]; });
      if (json) {
        os << "{\"image\": " << json_string(images[b + i]) << ", \"top\": [";
        for (size_t k = 0; k < top; ++k)
          os << (k ? ", " : "") << "{\"class\": " << json_string(classes[order[k]])
             << ", \"prob\": " << float_text(row[order[k]]) << "}";
        os << "]}\n";
      } else {
        os << images[b + i] << "\n";
        for (size_t k = 0; k < top; ++k)
          os << "  " << std::fixed << std::setprecision(4) << row[order[k]] << "  " << classes[order[k]] << "\n";
      }
    }
    std::cout << os.str() << std::flush;
    if (images.size() > batch)
      progress("zeroshot", std::to_string(e) + "/" + std::to_string(images.size()) + " images");
  }
  return 0;
}

}  // namespace ga_cli
