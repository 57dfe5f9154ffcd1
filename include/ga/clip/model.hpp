// A CLIP model ready for inference: loaded from our converted safetensors file (one file
// holding weights, config and tokenizer) or built from in-memory tensors with OpenAI's names.
// encode_image / encode_text / logits follow OpenAI's CLIP, batch-first, under no-grad.
#pragma once
#include <cmath>
#include <map>
#include <memory>
#include <optional>
#include <string>
#include <utility>
#include <vector>

#include "../io/json.hpp"
#include "../io/safetensors.hpp"
#include "blocks.hpp"
#include "config.hpp"
#include "resnet.hpp"
#include "text.hpp"
#include "tokenizer.hpp"
#include "vit.hpp"

namespace ga::clip {

/// How a model holds its weights and computes its products (linear layers, convolutions,
/// projections).
enum class WeightMode {
  /// As stored in the file (zero-copy views of the mapping): f32 products for f32 weights,
  /// mixed products for f16/bf16 ones, exact up to f32 accumulation (at the process-wide
  /// mixed_matmul_precision(), Highest unless set). BatchNorm-folded convolutions are f32.
  AsStored,
  /// Every f16/bf16 tensor converted to f32 at load.
  F32,
  /// The fast reduced-precision path: the products' weights (folded convolutions included)
  /// rounded to bf16 at load and their inputs rounded to bf16 in each product
  /// (MixedPrecision::Medium, f32 accumulation), AMX or AVX512-BF16 where the CPU has it.
  /// Norms, embeddings and biases keep their stored precision. Embeddings agree with f32
  /// to a cosine of about 0.9999 (tested: at least 0.999).
  Bf16,
  /// The fastest path on CPUs without bf16 arithmetic: the products' weights (linear layers,
  /// convolutions, folded or not; not the two final projections) quantized at load to 7-bit
  /// integers per output channel, their inputs on the fly per row (per image for a
  /// convolution) to 7 bits in the image tower and 8 bits in the text tower, products summed
  /// exactly in int32 (see ga::linear_int8, backend::Int8Inputs). The image tower trades
  /// the input bit for speed (about 1.2x its products' rate on AVX2) at a small cost in
  /// precision; the text tower keeps it, because a small text tower (the test fixture's) fell
  /// to a cosine of 0.9987 with 7 bits, and text encoding is fast anyway. ResNet convolutions
  /// whose window is too shallow to gain (under 256 values deep) keep f32
  /// (FoldedConv::quantize). The quantized weights take a quarter
  /// of their f32 memory. Embeddings agree with f32 to a cosine of 0.9991-0.9997 on random
  /// weights of the real sizes (tested on the fixtures: at least 0.999); trained weights with
  /// outlying activations may lose more. The quantized weights are not available through
  /// Model::weight.
  Int8,
};

struct LoadOptions {
  WeightMode weights = WeightMode::AsStored;
};

class Model {
 public:
  /// Loads a file written by the converter: safetensors with OpenAI's tensor names and the
  /// metadata "format" = "ga.clip", "format_version" = "1", "config" (ClipConfig JSON) and,
  /// optionally, "tokenizer.merges" (the BPE vocabulary text). Tensors are mmapped, not
  /// copied, except BatchNorm-folded convolutions, what options.weights converts, and product
  /// weights not 64-byte aligned in the file (files written before save_safetensors aligned
  /// them): new tensors, the originals' pages released once copied, so memory holds one copy.
  /// Errors name the file: IOError for an unreadable file or bad metadata, KeyError for a
  /// missing or unexpected tensor (named), ShapeError for a mis-shaped one (named, expected
  /// vs actual), ValueError for an invalid config.
  static Model load(const std::string& path, const LoadOptions& options = {}) {
    const io::SafetensorsFile f = io::SafetensorsFile::open(path);
    const auto& meta = f.metadata();
    auto meta_value = [&](const std::string& key) -> const std::string& {
      auto it = meta.find(key);
      GA_CHECK(it != meta.end(), IOError, path, ": not a converted CLIP model: metadata key \"", key,
               "\" is missing (convert the checkpoint with `ga convert`)");
      return it->second;
    };
    GA_CHECK(meta_value("format") == "ga.clip", IOError, path, ": not a converted CLIP model: metadata \"format\" is \"",
             meta_value("format"), "\", expected \"ga.clip\"");
    GA_CHECK(meta_value("format_version") == "1", IOError, path, ": metadata \"format_version\" is \"",
             meta_value("format_version"), "\"; this build reads version \"1\" (re-convert the checkpoint)");
    ClipConfig cfg;
    const io::Json cj = io::parse_json(meta_value("config"), path + " (metadata \"config\")");
    with_context(path + ": metadata \"config\"", [&] { cfg = ClipConfig::from_json(cj); });
    auto act = meta.find("activation");
    GA_CHECK(act == meta.end() || act->second == cfg.activation, IOError, path, ": metadata \"activation\" is \"",
             act == meta.end() ? "" : act->second, "\" but the config says \"", cfg.activation, "\"");
    std::optional<Tokenizer> tok;
    auto merges = meta.find("tokenizer.merges");
    if (merges != meta.end())
      with_context(path, [&] { tok = Tokenizer::from_merges_text(merges->second, path + " (metadata tokenizer.merges)"); });
    std::vector<std::pair<std::string, Tensor>> tensors;
    tensors.reserve(f.keys().size());
    with_context(path, [&] {
      for (const std::string& k : f.keys()) tensors.emplace_back(k, f.get(k));
    });
    Model m;
    with_context(path, [&] {
      m.init(std::move(cfg), tensors, std::move(tok), options, [&f](const Tensor& t) { f.release(t); });
    });
    return m;
  }

  /// Builds from in-memory tensors with OpenAI's state-dict names (any float dtype; f64 is
  /// converted to f32, f16/bf16 kept). `num_batches_tracked` and the TorchScript scalars
  /// input_resolution / context_length / vocab_size may be present and are ignored. Same
  /// checks as load (check_shapes: KeyError / ShapeError naming the tensors).
  static Model from_tensors(const ClipConfig& cfg, const std::vector<std::pair<std::string, Tensor>>& tensors,
                            std::optional<Tokenizer> tokenizer = std::nullopt, const LoadOptions& options = {}) {
    Model m;
    m.init(cfg, tensors, std::move(tokenizer), options);
    return m;
  }

  const ClipConfig& config() const { return *cfg_; }
  bool has_tokenizer() const { return tokenizer_->has_value(); }
  /// ValueError when the model file carried no vocabulary.
  const Tokenizer& tokenizer() const {
    GA_CHECK(has_tokenizer(), ValueError, "clip model: this model file has no tokenizer vocabulary; re-convert it "
             "with `ga convert ... --vocab bpe_simple_vocab_16e6.txt.gz`");
    return **tokenizer_;
  }

  /// [N, context_length] i64 token ids (clip.tokenize). Too long a text is a ValueError
  /// naming it unless truncate.
  Tensor tokenize(const std::vector<std::string>& texts, bool truncate = false) const {
    const Tokenizer& tok = tokenizer();
    const int64_t ctx = cfg_->context_length;
    std::vector<int64_t> ids;
    ids.reserve(texts.size() * static_cast<size_t>(ctx));
    for (const std::string& t : texts)
      for (int32_t id : tok.tokenize(t, static_cast<int>(ctx), truncate)) ids.push_back(id);
    return tensor(ids, {static_cast<int64_t>(texts.size()), ctx});
  }

  /// images [N, 3, R, R] f32 (R = image_resolution; ShapeError / DTypeError naming the
  /// expected layout otherwise) -> [N, embed_dim] f32, not normalised. With `trace`, appends
  /// the intermediate activations, named after OpenAI's modules, batch-first:
  ///   ViT:    visual.conv1 [N,W,g,g], visual.ln_pre [N,L,W], visual.transformer.resblocks.<i>
  ///           [N,L,W], visual.ln_post [N,W], visual [N,E]
  ///   ResNet: visual.avgpool (the stem's output), visual.layer<k>.<m> [N,C,H,W],
  ///           visual.attnpool [N,E], visual [N,E]
  /// Without a trace, the ViT's last block is computed at the class token only, the one
  /// position read (exact; equal to the traced result up to the products' rounding).
  Tensor encode_image(const Tensor& images, Trace* trace = nullptr) const {
    const int64_t R = cfg_->image_resolution;
    GA_CHECK(images.defined(), ValueError, "encode_image: images is an undefined tensor");
    GA_CHECK(images.dtype() == DType::f32, DTypeError, "encode_image: images must be f32, got ",
             dtype_name(images.dtype()));
    GA_CHECK(images.dim() == 4 && images.size(1) == 3 && images.size(2) == R && images.size(3) == R, ShapeError,
             "encode_image: images must be [N, 3, ", R, ", ", R, "] (the model's resolution), got ",
             shape_str(images.shape()));
    NoGradGuard no_grad;
    const Tensor x = images.detach();
    if (x.size(0) == 0) return empty({0, cfg_->embed_dim});
    const PrecisionScope precision(weight_mode_);
    return vit_ ? vit_->forward(x, trace) : resnet_->forward(x, trace);
  }

  /// tokens [N, context_length] i32/i64 with ids < vocab_size -> [N, embed_dim] f32, not
  /// normalised. Errors: ShapeError (wrong context length), DTypeError, IndexError naming the
  /// row and id out of range. Computes only up to the batch's last EOT position, and the
  /// last block only at each row's EOT, unless full_length (every position of every block,
  /// as OpenAI does; the results agree, and full_length exists to test that). A trace also
  /// computes the last block at every position, up to the last EOT. Trace names:
  /// text.embedding (token + positional) [N,L,D], transformer.resblocks.<i> [N,L,D], ln_final
  /// [N,L,D], text.pooled (ln_final at each row's EOT) [N,D], text [N,E]; L is the computed
  /// length (the batch's last EOT position + 1, or context_length with full_length).
  Tensor encode_text(const Tensor& tokens, Trace* trace = nullptr, bool full_length = false) const {
    NoGradGuard no_grad;
    const PrecisionScope precision(weight_mode_);
    return text_->forward(tokens, trace, full_length);
  }

  /// exp(logit_scale) * normalize(image_features) @ normalize(text_features)^T: [Ni, Nt].
  /// Requires both 2-d f32 with embed_dim columns (ShapeError / DTypeError otherwise).
  Tensor logits(const Tensor& image_features, const Tensor& text_features) const {
    for (const Tensor* t : {&image_features, &text_features}) {
      const char* what = t == &image_features ? "image_features" : "text_features";
      GA_CHECK(t->defined(), ValueError, "logits: ", what, " is an undefined tensor");
      GA_CHECK(t->dtype() == DType::f32, DTypeError, "logits: ", what, " must be f32, got ", dtype_name(t->dtype()));
      GA_CHECK(t->dim() == 2 && t->size(1) == cfg_->embed_dim, ShapeError, "logits: ", what, " must be [N, ",
               cfg_->embed_dim, "], got ", shape_str(t->shape()));
    }
    NoGradGuard no_grad;
    Tensor img = normalize(image_features.detach(), 1), txt = normalize(text_features.detach(), 1);
    Tensor out = matmul(img, txt.t());
    mul_(out, static_cast<double>(logit_scale_));
    return out;
  }

  /// exp of the stored logit_scale (100 for OpenAI's released models).
  float logit_scale() const { return logit_scale_; }

  WeightMode weight_mode() const { return weight_mode_; }

  /// The tensor the model computes with under an OpenAI state-dict name, in the dtype it is
  /// held (see WeightMode). BatchNorm-folded convolutions appear as "<conv>.weight" and
  /// "<conv>.bias" (folded; f32, or a bf16 weight in WeightMode::Bf16); their BatchNorm
  /// tensors do not, nor (WeightMode::Int8) the weights held quantized.
  /// KeyError naming `name` when absent.
  const Tensor& weight(const std::string& name) const {
    auto it = weights_->find(name);
    GA_CHECK(it != weights_->end(), KeyError, "clip model: no tensor named ", name);
    return it->second;
  }

 private:
  Model() = default;

  /// Runs f, rethrowing a ga error as the same type with `context` (a file name) in front.
  template <class F>
  static void with_context(const std::string& context, F&& f) {
    try {
      f();
    } catch (const KeyError& e) { throw KeyError(cat(context, ": ", e.what()));
    } catch (const ShapeError& e) { throw ShapeError(cat(context, ": ", e.what()));
    } catch (const DTypeError& e) { throw DTypeError(cat(context, ": ", e.what()));
    } catch (const IndexError& e) { throw IndexError(cat(context, ": ", e.what()));
    } catch (const ValueError& e) { throw ValueError(cat(context, ": ", e.what()));
    } catch (const IOError& e) {
      const std::string w = e.what();
      throw IOError(w.compare(0, context.size(), context) == 0 ? w : cat(context, ": ", w));
    }
  }

  /// The precision of the forward pass for a weight mode: Medium for Bf16, else the one in
  /// effect when the pass starts, held for the whole pass. (Not an optional scope: GCC 12
  /// reports an optional's member as maybe uninitialised in its destructor.)
  struct PrecisionScope {
    MixedPrecisionScope scope;
    explicit PrecisionScope(WeightMode mode)
        : scope(mode == WeightMode::Bf16 ? backend::MixedPrecision::Medium : mixed_matmul_precision()) {}
  };

  /// Whether `name` is the weight of a product (a linear layer, the ViT's patch embedding, a
  /// projection): what WeightMode::Bf16 rounds. ResNet convolutions are rounded after folding.
  static bool is_product_weight(const std::string& name, bool vit) {
    using detail::ends_with;
    return ends_with(name, ".in_proj_weight") || ends_with(name, "out_proj.weight") ||
           ends_with(name, ".c_fc.weight") || ends_with(name, ".c_proj.weight") || ends_with(name, "q_proj.weight") ||
           ends_with(name, "k_proj.weight") || ends_with(name, "v_proj.weight") || name == "visual.proj" ||
           name == "text_projection" || (vit && name == "visual.conv1.weight");
  }

  /// Whether WeightMode::Int8 quantizes `name`: a product weight but the final projections
  /// (ResNet convolutions are quantized after folding).
  static bool is_quantized_weight(const std::string& name, bool vit) {
    return is_product_weight(name, vit) && name != "visual.proj" && name != "text_projection";
  }

  /// `release` (may be empty) is called with each original tensor once a converted copy
  /// replaces it (Model::load drops its mapped pages, so peak memory holds one of the two).
  void init(ClipConfig cfg, const std::vector<std::pair<std::string, Tensor>>& tensors, std::optional<Tokenizer> tok,
            const LoadOptions& options, const WeightRelease& release = {}) {
    ShapeTable shapes;
    shapes.reserve(tensors.size());
    for (const auto& [name, t] : tensors) {
      GA_CHECK(t.defined(), ValueError, "clip model: tensor ", name, " is undefined");
      shapes.emplace_back(name, t.shape());
    }
    check_shapes(cfg, shapes);
    TensorMap m;
    for (const auto& [name, t] : tensors) {
      if (detail::is_torchscript_scalar(name) || detail::ends_with(name, ".num_batches_tracked")) continue;
      GA_CHECK(is_floating(t.dtype()), DTypeError, "clip model: tensor ", name, " has dtype ", dtype_name(t.dtype()),
               ", expected f32, f16 or bf16");
      Tensor w = t.detach();
      DType want = w.dtype() == DType::f64 ? DType::f32 : w.dtype();
      if (options.weights == WeightMode::F32) want = DType::f32;
      if (options.weights == WeightMode::Bf16 && is_product_weight(name, cfg.vision_is_vit())) want = DType::bf16;
      if (options.weights == WeightMode::Int8 && is_quantized_weight(name, cfg.vision_is_vit())) want = DType::f32;
      if (want != w.dtype()) {
        w = w.to(want);
        if (release) release(t);
      } else if (is_product_weight(name, cfg.vision_is_vit()) &&
                 reinterpret_cast<uintptr_t>(w.raw_data()) % 64 != 0) {
        // Off a cache line (a file written before save_safetensors aligned its weights, or by
        // another writer): copied to aligned memory, because products that stream a weight
        // ran about a quarter slower when its rows straddled cache lines (bench/RESULTS.md).
        w = w.clone();
        if (release) release(t);
      }
      m.emplace(name, std::move(w));
    }
    const DType conv_dtype = options.weights == WeightMode::Bf16 ? DType::bf16 : DType::f32;
    auto weights = std::make_shared<TensorMap>();
    {
      NoGradGuard no_grad;
      const bool int8 = options.weights == WeightMode::Int8;
      if (cfg.vision_is_vit()) {
        auto vit = std::make_shared<detail::VisionTransformerWeights>(detail::VisionTransformerWeights::from(m, cfg));
        if (int8) vit->quantize(backend::Int8Inputs::Bits7);
        vit_ = std::move(vit);
      } else {
        auto resnet = std::make_shared<detail::ModifiedResNetWeights>(
            detail::ModifiedResNetWeights::from(m, cfg, conv_dtype, release));
        if (int8) resnet->quantize(backend::Int8Inputs::Bits7);
        resnet_ = std::move(resnet);
      }
      auto text = std::make_shared<detail::TextTransformerWeights>(detail::TextTransformerWeights::from(m, cfg));
      if (int8) text->transformer.quantize(backend::Int8Inputs::Bits8);
      text_ = std::move(text);
      logit_scale_ = static_cast<float>(std::exp(detail::weight_at(m, "logit_scale").item<double>()));
      if (int8) {  // the towers hold the quantized weights only: drop the f32 ones and their pages
        for (const auto& [name, t] : tensors)
          if (is_quantized_weight(name, cfg.vision_is_vit())) {
            m.erase(name);
            if (release) release(t);
          }
      }
    }
    // What the towers hold. A ResNet's convolutions and BatchNorms (all of visual.* but the
    // attention pool) are replaced by the folded convolutions.
    for (auto& [name, t] : m) {
      const bool folded_away = resnet_ && detail::starts_with(name, "visual.") &&
                               !detail::starts_with(name, "visual.attnpool.");
      if (!folded_away) weights->emplace(name, t);
    }
    if (resnet_) resnet_->export_folded(*weights);
    weights_ = std::move(weights);
    cfg_ = std::make_shared<const ClipConfig>(std::move(cfg));
    tokenizer_ = std::make_shared<const std::optional<Tokenizer>>(std::move(tok));
    weight_mode_ = options.weights;
  }

  // Shared, immutable after construction: copies of a Model are cheap and share weights.
  std::shared_ptr<const ClipConfig> cfg_;
  std::shared_ptr<const std::optional<Tokenizer>> tokenizer_;
  std::shared_ptr<const detail::VisionTransformerWeights> vit_;
  std::shared_ptr<const detail::ModifiedResNetWeights> resnet_;
  std::shared_ptr<const detail::TextTransformerWeights> text_;
  std::shared_ptr<const TensorMap> weights_;
  float logit_scale_ = 1.0f;
  WeightMode weight_mode_ = WeightMode::AsStored;
};

}  // namespace ga::clip
