// CLIP's ModifiedResNet image tower, batch-first: a 3-convolution stem and a 2x2 average
// pool, four stages of bottlenecks (anti-aliased: average pooling instead of strided
// convolutions), and attention pooling. Every BatchNorm is folded into the convolution before
// it when the weights are loaded, so inference runs one convolution with a bias per pair.
#pragma once
#include "blocks.hpp"
#include "config.hpp"

namespace ga::clip::detail {

/// A convolution followed by an inference-mode BatchNorm, folded into one convolution with a
/// bias: w' = w * s, b' = beta - mean * s per output channel, s = gamma / sqrt(var + eps).
struct FoldedConv {
  Tensor weight;  // [O, C, k, k], f32 (or bf16 when the model holds bf16 weights)
  Tensor bias;    // [O] f32
  int64_t pad = 0;
  backend::Int8Weight int8;  // defined once quantized (WeightMode::Int8); weight is then undefined

  /// Folds `conv_name`.weight with the BatchNorm `bn_prefix` (eps 1e-5, PyTorch's default, as
  /// OpenAI's model uses). The scale s is computed in f64 from the stored values; the weight
  /// is scaled in f32 (one rounding more than an f64 product, and no f64 copy of every
  /// convolution at load) and held as `dtype` (f32, or bf16 for the fast path). Calls
  /// `done(original weight)` once the folded copy exists, so a loader can drop its pages.
  static FoldedConv fold(const TensorMap& m, const std::string& conv_name, const std::string& bn_prefix,
                         int64_t pad, DType dtype, const WeightRelease& done) {
    const Tensor& w = weight_at(m, conv_name + ".weight");
    const Tensor gamma = weight_at(m, bn_prefix + ".weight").to(DType::f64);
    const Tensor beta = weight_at(m, bn_prefix + ".bias").to(DType::f64);
    const Tensor mean = weight_at(m, bn_prefix + ".running_mean").to(DType::f64);
    const Tensor var = weight_at(m, bn_prefix + ".running_var").to(DType::f64);
    const Tensor s = mul(gamma, rsqrt(var + 1e-5));
    FoldedConv c;
    c.weight = mul(as_f32(w), s.to(DType::f32).reshape({-1, 1, 1, 1}));
    if (dtype != DType::f32) c.weight = c.weight.to(dtype);
    c.bias = sub(beta, mul(mean, s)).to(DType::f32);
    c.pad = pad;
    if (done) done(w);
    return c;
  }

  /// Replaces the weight by its int8 quantization, where that pays. Each output's sum is cut
  /// into runs of the window's depth (channels * kh * kw) with a fixed cost each (a tile's
  /// scaling and epilogue), so a shallow window gains nothing. Measured with RN50's shapes on
  /// a Zen 4, 2 threads, batch 1, f32 time / int8 time with the AVX512-VNNI tile (and with
  /// both sides on their AVX2 kernels, as a CPU without AVX-512 runs them): depth 27 (the
  /// stem's first convolution) 0.3; 64 (1x1) 0.6-0.73 (0.59-0.74); 128 (1x1 -> 512) 1.25
  /// (0.9); 256 (1x1) 1.07-1.52 (0.93-1.24); 288 (3x3 of 32 channels) 1.69-1.73 (1.51-1.58);
  /// 512 (1x1) 1.6-1.94 (1.42). So: int8 where the depth is 256 or more; the others keep
  /// their f32 weight.
  void quantize(backend::Int8Inputs inputs) {
    const int64_t taps = weight.size(2) * weight.size(3);
    if (weight.size(1) * taps < 256) return;
    int8 = quantize_int8(as_f32(weight), inputs);
    weight = Tensor();
  }

  /// then.activation(conv(x) + then.residual), fused into the product's stores.
  Tensor operator()(const Tensor& x, int64_t stride = 1, const Epilogue& then = {}) const {
    if (int8.defined()) return conv2d_int8(x, int8, bias, {stride, stride}, {pad, pad}, then);
    return conv2d(x, weight, bias, {stride, stride}, {pad, pad}, then);
  }
};

/// OpenAI's Bottleneck (expansion 4): 1x1, 3x3, [avgpool(stride)], 1x1, each with its
/// BatchNorm (folded), ReLU after the first two and after the residual sum; the shortcut is
/// [avgpool(stride)], 1x1 conv, BatchNorm when shapes change, else the identity.
struct BottleneckWeights {
  FoldedConv conv1, conv2, conv3, downsample;
  bool has_downsample = false;
  int64_t stride = 1;

  Tensor forward(const Tensor& x) const {
    const Tensor shortcut = has_downsample ? downsample(stride > 1 ? avg_pool2d(x, {stride, stride}) : x) : x;
    Tensor out = conv1(x, 1, {Tensor(), Activation::Relu});
    out = conv2(out, 1, {Tensor(), Activation::Relu});
    if (stride > 1) out = avg_pool2d(out, {stride, stride});
    return conv3(out, 1, {shortcut, Activation::Relu});
  }
};

/// AttentionPool2d: the spatial tokens with their mean prepended, plus a positional
/// embedding; one multi-head attention whose only query is the mean token; then c_proj.
struct AttentionPoolWeights {
  Tensor positional_embedding;  // [HW + 1, C] f32
  LinearWeights q_proj, k_proj, v_proj, c_proj;
  int64_t heads = 0;

  /// x [N, C, H, W] -> [N, embed].
  Tensor forward(const Tensor& x) const {
    const int64_t N = x.size(0), C = x.size(1), HW = x.size(2) * x.size(3);
    Tensor tokens = x.reshape({N, C, HW}).permute({0, 2, 1});     // [N, HW, C]
    Tensor t = concat({mean(tokens, {1}, true), tokens}, 1);      // [N, HW + 1, C], contiguous
    add_(t, positional_embedding);
    Tensor q = q_proj(t.narrow(1, 0, 1));                         // [N, 1, C]
    Tensor a = multi_head_attention(q, k_proj(t), v_proj(t), heads, /*causal=*/false);
    return c_proj(a.reshape({N, C}));
  }
};

struct ModifiedResNetWeights {
  FoldedConv conv1, conv2, conv3;  // the stem: conv1 has stride 2
  std::vector<std::vector<BottleneckWeights>> stages;
  AttentionPoolWeights attnpool;

  /// The tower from OpenAI-named tensors, its convolutions folded and held as `conv_dtype`
  /// (f32 or bf16); `done` is called with each original convolution weight once folded.
  static ModifiedResNetWeights from(const TensorMap& m, const ClipConfig& cfg, DType conv_dtype,
                                    const WeightRelease& done) {
    ModifiedResNetWeights r;
    auto fold = [&](const std::string& conv, const std::string& bn, int64_t pad) {
      return FoldedConv::fold(m, conv, bn, pad, conv_dtype, done);
    };
    r.conv1 = fold("visual.conv1", "visual.bn1", 1);
    r.conv2 = fold("visual.conv2", "visual.bn2", 1);
    r.conv3 = fold("visual.conv3", "visual.bn3", 1);
    for (int stage = 0; stage < 4; ++stage) {
      std::vector<BottleneckWeights> blocks;
      for (int64_t b = 0; b < cfg.vision_layers[static_cast<size_t>(stage)]; ++b) {
        const std::string p = "visual.layer" + std::to_string(stage + 1) + "." + std::to_string(b);
        BottleneckWeights blk;
        blk.stride = (stage > 0 && b == 0) ? 2 : 1;
        blk.conv1 = fold(p + ".conv1", p + ".bn1", 0);
        blk.conv2 = fold(p + ".conv2", p + ".bn2", 1);
        blk.conv3 = fold(p + ".conv3", p + ".bn3", 0);
        // Present exactly where OpenAI's Bottleneck builds it (check_shapes enforced that).
        blk.has_downsample = m.count(p + ".downsample.0.weight") != 0;
        if (blk.has_downsample) blk.downsample = fold(p + ".downsample.0", p + ".downsample.1", 0);
        blocks.push_back(std::move(blk));
      }
      r.stages.push_back(std::move(blocks));
    }
    r.attnpool.positional_embedding = small_weight_at(m, "visual.attnpool.positional_embedding");
    r.attnpool.q_proj = LinearWeights::from(m, "visual.attnpool.q_proj");
    r.attnpool.k_proj = LinearWeights::from(m, "visual.attnpool.k_proj");
    r.attnpool.v_proj = LinearWeights::from(m, "visual.attnpool.v_proj");
    r.attnpool.c_proj = LinearWeights::from(m, "visual.attnpool.c_proj");
    r.attnpool.heads = cfg.vision_heads;
    return r;
  }

  /// Quantizes every product weight to int8: the convolutions and the attention pool's
  /// projections.
  void quantize(backend::Int8Inputs inputs) {
    for (FoldedConv* c : {&conv1, &conv2, &conv3}) c->quantize(inputs);
    for (auto& stage : stages)
      for (BottleneckWeights& b : stage) {
        for (FoldedConv* c : {&b.conv1, &b.conv2, &b.conv3}) c->quantize(inputs);
        if (b.has_downsample) b.downsample.quantize(inputs);
      }
    for (LinearWeights* l : {&attnpool.q_proj, &attnpool.k_proj, &attnpool.v_proj, &attnpool.c_proj})
      l->quantize(inputs);
  }

  /// The folded tensors under their convolution's name: "<conv>.weight" and "<conv>.bias"
  /// (the weight only while not quantized).
  void export_folded(TensorMap& out) const {
    auto put = [&](const std::string& name, const FoldedConv& c) {
      if (c.weight.defined()) out[name + ".weight"] = c.weight;
      out[name + ".bias"] = c.bias;
    };
    put("visual.conv1", conv1);
    put("visual.conv2", conv2);
    put("visual.conv3", conv3);
    for (size_t s = 0; s < stages.size(); ++s)
      for (size_t b = 0; b < stages[s].size(); ++b) {
        const std::string p = "visual.layer" + std::to_string(s + 1) + "." + std::to_string(b);
        put(p + ".conv1", stages[s][b].conv1);
        put(p + ".conv2", stages[s][b].conv2);
        put(p + ".conv3", stages[s][b].conv3);
        if (stages[s][b].has_downsample) put(p + ".downsample.0", stages[s][b].downsample);
      }
  }

  /// images [N, 3, R, R] f32 (checked by the caller) -> [N, embed] f32.
  Tensor forward(const Tensor& images, Trace* trace) const {
    const Epilogue then_relu{Tensor(), Activation::Relu};
    Tensor x = conv1(images, 2, then_relu);
    x = conv2(x, 1, then_relu);
    x = conv3(x, 1, then_relu);
    x = avg_pool2d(x, {2, 2});
    if (trace) trace->emplace_back("visual.avgpool", x);
    for (size_t s = 0; s < stages.size(); ++s)
      for (size_t b = 0; b < stages[s].size(); ++b) {
        x = stages[s][b].forward(x);
        if (trace) trace->emplace_back("visual.layer" + std::to_string(s + 1) + "." + std::to_string(b), x);
      }
    Tensor out = attnpool.forward(x);
    if (trace) {
      trace->emplace_back("visual.attnpool", out);
      trace->emplace_back("visual", out);
    }
    return out;
  }
};

}  // namespace ga::clip::detail
