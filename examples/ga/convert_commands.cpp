// `ga convert` and `ga info`: checkpoint -> model file, and what a model file holds.
#include <cstdio>
#include <fstream>
#include <iomanip>
#include <iostream>
#include <iterator>
#include <sstream>

#include <ga/clip/convert.hpp>
#include <ga/io/safetensors.hpp>

#include "cli.hpp"

namespace ga_cli {

namespace {

const char* const kConvertUsage =
    "usage: ga convert INPUT OUTPUT.safetensors [--vocab FILE] [--dtype f32|f16|bf16|keep]\n"
    "                  [--config JSON] [--force]\n"
    "\n"
    "Converts a CLIP checkpoint to one .safetensors model file holding the weights (OpenAI's\n"
    "tensor names), the config, the activation, the preprocessing constants and the tokenizer.\n"
    "INPUT is recognised by its content:\n"
    "  an OpenAI release (RN50.pt ... ViT-L-14-336px.pt: TorchScript archives)\n"
    "  a torch.save checkpoint (.pt, .pth, .bin; open_clip's too, with or without its\n"
    "    \"state_dict\" wrapper and \"module.\" prefix)\n"
    "  an open_clip .safetensors file\n"
    "  a Hugging Face CLIPModel directory (config.json, model.safetensors, vocab.json, merges.txt)\n"
    "  a model file converted before (to add a vocabulary or change the dtype)\n"
    "\n"
    "options:\n"
    "  --vocab FILE    the BPE vocabulary, bpe_simple_vocab_16e6.txt or .txt.gz (in OpenAI's\n"
    "                  clip package); needed by tokenize, encode-text and zeroshot. Hugging Face\n"
    "                  directories bring theirs (merges.txt); a converted file keeps its own.\n"
    "  --dtype T       f32, f16 or bf16 weights; default keep: the checkpoint's dtype (f32 when\n"
    "                  it mixes dtypes, so nothing is rounded unless asked)\n"
    "  --config JSON   override the inferred config: a JSON object, or a file holding one, with\n"
    "                  keys of OpenAI's CLIP constructor (embed_dim, image_resolution,\n"
    "                  vision_layers, vision_width, vision_patch_size, context_length,\n"
    "                  vocab_size, transformer_width, transformer_heads, transformer_layers)\n"
    "                  or vision_heads, activation (\"quick_gelu\" | \"gelu\"), image_mean,\n"
    "                  image_std. Shapes cannot show head counts (OpenAI's rule, width / 64, is\n"
    "                  assumed) nor the activation (quick_gelu; LAION's open_clip models use\n"
    "                  gelu). A value that contradicts a tensor's shape is an error.\n"
    "  --force         replace OUTPUT if it exists (otherwise an existing file is an error)\n"
    GA_CLI_HELP_COMMON
    "\n"
    "Progress goes to stderr. Without a vocabulary the model is written without a tokenizer\n"
    "(a warning says so): convert the converted file again with --vocab to add one.\n";

const char* const kInfoUsage =
    "usage: ga info MODEL [--tensors]\n"
    "\n"
    "Prints what a converted model file holds: its source, the config (also as one JSON line,\n"
    "\"config: {...}\"), the preprocessing, the tokenizer, and the weights' dtype and size.\n"
    "\n"
    "options:\n"
    "  --tensors       also list every tensor: name, dtype, shape\n"
    GA_CLI_HELP_COMMON;

/// --config's value: JSON text when it starts with '{' (after spaces), else a file to read.
ga::io::Json config_argument(const std::string& value) {
  const size_t first = value.find_first_not_of(" \t\r\n");
  if (first != std::string::npos && value[first] == '{') {
    try {
      return ga::io::parse_json(value, "--config");
    } catch (const ga::Error& e) {
      throw UsageError(std::string("--config is not valid JSON: ") + e.what());
    }
  }
  std::ifstream f(value, std::ios::binary);
  GA_CHECK(f.good(), ga::IOError, value, ": cannot open the --config file (give a JSON object or a file holding one)");
  const std::string text((std::istreambuf_iterator<char>(f)), std::istreambuf_iterator<char>());
  return ga::io::parse_json(text, value);
}

std::string shape_text(const ga::Shape& s) {
  std::string out = "[";
  for (size_t i = 0; i < s.size(); ++i) out += (i ? ", " : "") + std::to_string(s[i]);
  return out + "]";
}

std::string triple(const std::array<double, 3>& v) {
  std::ostringstream os;
  os << std::setprecision(8) << "[" << v[0] << ", " << v[1] << ", " << v[2] << "]";
  return os.str();
}

}  // namespace

int run_convert(const std::vector<std::string>& argv) {
  Args args;
  if (parse_common("convert", argv,
                   {{"vocab", true}, {"dtype", true}, {"config", true}, {"force", false}}, kConvertUsage, args))
    return 0;
  if (args.positional.size() != 2)
    throw UsageError("needs INPUT and OUTPUT, got " + std::to_string(args.positional.size()) + " argument(s)");
  ga::clip::ConvertOptions opts;
  opts.dtype = args.get("dtype", "keep");
  if (opts.dtype != "f32" && opts.dtype != "f16" && opts.dtype != "bf16" && opts.dtype != "keep")
    throw UsageError("--dtype must be f32, f16, bf16 or keep, got '" + opts.dtype + "'");
  opts.vocab_path = args.get("vocab", "");
  if (args.has("vocab") && opts.vocab_path.empty()) throw UsageError("--vocab needs a file name");
  if (args.has("config")) opts.config_overrides = config_argument(args.values.at("config"));
  opts.overwrite = args.flag("force");
  opts.log = [](const std::string& line) { progress("convert", line); };
  const std::string& input = args.positional[0];
  const std::string& output = args.positional[1];
  check_output_path(output, opts.overwrite);
  ga::clip::convert_checkpoint(input, output, opts);
  progress("convert", "wrote " + output);
  return 0;
}

int run_info(const std::vector<std::string>& argv) {
  Args args;
  if (parse_common("info", argv, {{"tensors", false}}, kInfoUsage, args)) return 0;
  if (args.positional.size() != 1)
    throw UsageError("needs one MODEL, got " + std::to_string(args.positional.size()) + " argument(s)");
  const ModelFileInfo info = read_model_info(args.positional[0]);
  const ga::clip::ClipConfig& c = info.config;
  const ga::io::SafetensorsFile f = ga::io::SafetensorsFile::open(info.path);
  auto meta = [&](const char* key) {
    auto it = info.metadata.find(key);
    return it == info.metadata.end() ? std::string("(none)") : it->second;
  };
  std::ostringstream tower;
  if (c.vision_is_vit()) {
    tower << "ViT, " << c.vision_layers[0] << " layers, width " << c.vision_width << ", patch " << c.vision_patch_size
          << ", " << c.vision_heads << " heads";
  } else {
    tower << "ModifiedResNet, blocks [" << c.vision_layers[0] << ", " << c.vision_layers[1] << ", "
          << c.vision_layers[2] << ", " << c.vision_layers[3] << "], width " << c.vision_width
          << ", attention pool " << c.vision_heads << " heads";
  }
  std::map<std::string, int64_t> per_dtype;
  int64_t params = 0, bytes = 0;
  for (const std::string& k : f.keys()) {
    const ga::io::TensorInfo& ti = f.info(k);
    int64_t n = 1;
    for (int64_t d : ti.shape) n *= d;
    per_dtype[ti.dtype_name] += n;
    params += n;
    bytes += static_cast<int64_t>(ti.end - ti.begin);
  }
  std::string dtypes;
  for (const auto& [d, n] : per_dtype) dtypes += (dtypes.empty() ? "" : ", ") + d;
  std::cout << "model:        " << info.path << "\n"
            << "source:       " << meta("source") << "\n"
            << "image tower:  " << tower.str() << ", resolution " << c.image_resolution << "\n"
            << "text tower:   " << c.transformer_layers << " layers, width " << c.transformer_width << ", "
            << c.transformer_heads << " heads, context " << c.context_length << ", vocabulary " << c.vocab_size << "\n"
            << "embed_dim:    " << c.embed_dim << "\n"
            << "activation:   " << c.activation << "\n"
            << "preprocess:   resize the shorter side to " << c.image_resolution << " (bicubic), center crop "
            << c.image_resolution << ", mean " << triple(c.image_mean) << ", std " << triple(c.image_std) << "\n";
  if (info.has_merges()) {
    const ga::clip::Tokenizer tok =
        ga::clip::Tokenizer::from_merges_text(info.metadata.at("tokenizer.merges"), info.path + " (tokenizer.merges)");
    std::cout << "tokenizer:    " << tok.vocab_size() << " tokens\n";
  } else {
    std::cout << "tokenizer:    none (convert this file again with --vocab to add one)\n";
  }
  std::cout << "weights:      " << f.size() << " tensors, " << dtypes << ", " << std::fixed << std::setprecision(2)
            << double(params) / 1e6 << " M parameters, " << double(bytes) / 1e6 << " MB\n"
            << std::defaultfloat << "config: " << c.to_json().dump() << "\n";
  if (args.flag("tensors"))
    for (const std::string& k : f.keys())
      std::cout << "  " << k << "  " << f.info(k).dtype_name << "  " << shape_text(f.info(k).shape) << "\n";
  return 0;
}

}  // namespace ga_cli
