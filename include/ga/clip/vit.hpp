// CLIP's Vision Transformer image tower (OpenAI's VisionTransformer), batch-first:
// patch embedding (a bias-free strided convolution, computed as a linear layer over the
// patches), class token, positional embedding,
// ln_pre, pre-norm residual blocks, ln_post on the class token, then @ proj. Without a
// trace, the last block is computed at the class token only (exact: nothing else is read).
#pragma once
#include "blocks.hpp"
#include "config.hpp"

namespace ga::clip::detail {

struct VisionTransformerWeights {
  int64_t patch = 0, heads = 0;
  Activation act = Activation::QuickGelu;
  Tensor conv1;                   // [W, 3, patch, patch], no bias (undefined once quantized)
  backend::Int8Weight conv1_int8;  // WeightMode::Int8
  Tensor class_embedding;         // [W] f32
  Tensor positional_embedding;    // [grid^2 + 1, W] f32
  LayerNormWeights ln_pre, ln_post;
  TransformerWeights transformer;
  Tensor proj;                    // [W, embed], applied as x @ proj

  static VisionTransformerWeights from(const TensorMap& m, const ClipConfig& cfg) {
    VisionTransformerWeights v;
    v.patch = cfg.vision_patch_size;
    v.heads = cfg.vision_heads;
    v.act = activation_from_name(cfg.activation);
    v.conv1 = weight_at(m, "visual.conv1.weight");
    v.class_embedding = small_weight_at(m, "visual.class_embedding");
    v.positional_embedding = small_weight_at(m, "visual.positional_embedding");
    v.ln_pre = LayerNormWeights::from(m, "visual.ln_pre");
    v.ln_post = LayerNormWeights::from(m, "visual.ln_post");
    v.transformer = TransformerWeights::from(m, "visual.transformer", cfg.vision_layers[0]);
    v.proj = weight_at(m, "visual.proj");
    return v;
  }

  /// Quantizes the patch embedding and the blocks' product weights to int8.
  void quantize(backend::Int8Inputs inputs) {
    conv1_int8 = quantize_int8(as_f32(conv1), inputs);
    conv1 = Tensor();
    transformer.quantize(inputs);
  }

  /// The patch embedding: images [N, 3, R, R] -> tokens [N, g * g, W], g = R / patch. It is a
  /// convolution with a patch x patch kernel, stride patch and no padding, so a linear layer
  /// over the image's non-overlapping patches, each flattened in the kernel's (channel, row,
  /// column) order: computed that way, the tokens come out as the transformer reads them,
  /// [position, width], where the convolution's [W, g, g] needed a transposing copy, and the
  /// patches cost one gathering copy of the image where im2col and its transpose took two
  /// passes (~0.1 ms less of a ViT-B/32 forward at batch 1, ~3 ms at batch 16;
  /// bench/RESULTS.md, nineteenth session). At batch 1 both take the dot-product form over
  /// the same rows, so the bits are the convolution's. An int8 weight keeps the
  /// convolution, which its quantization was made for.
  Tensor patch_tokens(const Tensor& images) const {
    const int64_t N = images.size(0), g = images.size(2) / patch, W = proj.size(0), K = 3 * patch * patch;
    if (conv1_int8.defined())
      return conv2d_int8(images, conv1_int8, Tensor(), {patch, patch}).view({N, W, g * g}).permute({0, 2, 1});
    const Tensor patches = images.narrow(2, 0, g * patch)
                               .narrow(3, 0, g * patch)
                               .reshape({N, 3, g, patch, g, patch})
                               .permute({0, 2, 4, 1, 3, 5})
                               .reshape({N * g * g, K});
    return linear(patches, conv1.reshape({W, K})).view({N, g * g, W});
  }

  /// images [N, 3, R, R] f32 (checked by the caller) -> [N, embed] f32.
  Tensor forward(const Tensor& images, Trace* trace) const {
    const int64_t N = images.size(0), W = proj.size(0), g = images.size(2) / patch;
    const Tensor tokens = patch_tokens(images);  // [N, P, W]
    if (trace) trace->emplace_back("visual.conv1", tokens.reshape({N, g, g, W}).permute({0, 3, 1, 2}));
    const Tensor cls = class_embedding.reshape({1, 1, W}).expand({N, 1, W});
    Tensor x = concat({cls, tokens}, 1);                                  // [N, P + 1, W], contiguous
    add_(x, positional_embedding);
    x = ln_pre(x);
    if (trace) trace->emplace_back("visual.ln_pre", x.clone());
    Tensor pooled;                                                        // [N, W]
    if (trace) {  // every position of every block, for the trace
      transformer.forward_inplace(x, heads, act, /*causal=*/false, trace, "visual.transformer");
      pooled = ln_post(x.select(1, 0));
    } else {  // the last block only at the class token, the one position read
      pooled = ln_post(transformer.forward_at(x, std::vector<int64_t>(static_cast<size_t>(N), 0), heads, act,
                                              /*causal=*/false));
    }
    if (trace) trace->emplace_back("visual.ln_post", pooled);
    Tensor out = matmul(pooled, proj);
    if (trace) trace->emplace_back("visual", out);
    return out;
  }
};

}  // namespace ga::clip::detail
