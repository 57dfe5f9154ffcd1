// CLIP's text tower, batch-first: token + positional embedding, causal residual blocks,
// ln_final, the feature at each row's EOT token (its largest id, OpenAI's rule), then
// @ text_projection. A batch is computed only up to its longest EOT position: under the
// causal mask no later position can reach the feature read at an EOT, so this is exact.
// Likewise the last block is computed only at each row's EOT, the one position read.
#pragma once
#include <algorithm>

#include "blocks.hpp"
#include "config.hpp"

namespace ga::clip::detail {

/// Where each row's feature is read, and how many positions the batch needs.
struct EotPositions {
  std::vector<int64_t> eot;  // per row: the first position holding the row's largest id
  int64_t length = 0;        // max over rows of eot + 1
};

/// Validates tokens [N, ctx] (i32/i64, ctx == context_length, ids in [0, vocab_size)) and
/// finds the EOT positions. ShapeError / DTypeError naming the expected layout; IndexError
/// naming the row, the position and the id out of range.
inline EotPositions find_eot(const Tensor& tokens, int64_t context_length, int64_t vocab_size) {
  GA_CHECK(tokens.defined(), ValueError, "encode_text: tokens is an undefined tensor");
  GA_CHECK(tokens.dtype() == DType::i32 || tokens.dtype() == DType::i64, DTypeError,
           "encode_text: tokens must be i32 or i64, got ", dtype_name(tokens.dtype()));
  GA_CHECK(tokens.dim() == 2 && tokens.size(1) == context_length, ShapeError, "encode_text: tokens must be [N, ",
           context_length, "] (the model's context length), got ", shape_str(tokens.shape()));
  const int64_t N = tokens.size(0), L = tokens.size(1);
  const std::vector<int64_t> ids = tokens.to_vector<int64_t>();
  EotPositions p;
  p.eot.resize(static_cast<size_t>(N));
  for (int64_t n = 0; n < N; ++n) {
    int64_t best = 0;
    for (int64_t i = 0; i < L; ++i) {
      const int64_t id = ids[static_cast<size_t>(n * L + i)];
      GA_CHECK(id >= 0 && id < vocab_size, IndexError, "encode_text: row ", n, " position ", i, " holds token id ",
               id, ", outside the vocabulary [0, ", vocab_size, ")");
      if (id > ids[static_cast<size_t>(n * L + best)]) best = i;
    }
    p.eot[static_cast<size_t>(n)] = best;
    p.length = std::max(p.length, best + 1);
  }
  return p;
}

struct TextTransformerWeights {
  int64_t heads = 0, context_length = 0, vocab_size = 0;
  Activation act = Activation::QuickGelu;
  Tensor token_embedding;       // [vocab, D]
  Tensor positional_embedding;  // [ctx, D] f32
  TransformerWeights transformer;
  LayerNormWeights ln_final;
  Tensor text_projection;       // [D, embed], applied as x @ text_projection

  static TextTransformerWeights from(const TensorMap& m, const ClipConfig& cfg) {
    TextTransformerWeights t;
    t.heads = cfg.transformer_heads;
    t.context_length = cfg.context_length;
    t.vocab_size = cfg.vocab_size;
    t.act = activation_from_name(cfg.activation);
    t.token_embedding = weight_at(m, "token_embedding.weight");
    t.positional_embedding = small_weight_at(m, "positional_embedding");
    t.transformer = TransformerWeights::from(m, "transformer", cfg.transformer_layers);
    t.ln_final = LayerNormWeights::from(m, "ln_final");
    t.text_projection = weight_at(m, "text_projection");
    return t;
  }

  /// Rows of the token embedding for ids [N, L] as f32 [N, L, D]. f32 weights use the
  /// embedding op; f16/bf16 ones are converted row by row, since index_select takes only
  /// f32/f64 and converting the whole table per call would cost a full pass over it.
  Tensor embed(const Tensor& ids) const {
    if (token_embedding.dtype() == DType::f32) return embedding(token_embedding, ids);
    const int64_t N = ids.size(0), L = ids.size(1), D = token_embedding.size(1);
    Tensor out = empty({N, L, D});
    const std::vector<int64_t> flat = ids.to_vector<int64_t>();
    Tensor rows = out.view({N * L, D});
    for (int64_t i = 0; i < N * L; ++i) rows.select(0, i).copy_(token_embedding.select(0, flat[static_cast<size_t>(i)]));
    return out;
  }

  /// tokens [N, ctx] (validated here) -> [N, embed] f32. full_length computes every position
  /// of every block (OpenAI's way) instead of stopping at the batch's last EOT and computing
  /// the last block at the EOTs only; so does a trace (every position, to the last EOT). The
  /// result is the same.
  Tensor forward(const Tensor& tokens, Trace* trace, bool full_length) const {
    const EotPositions eot = find_eot(tokens, context_length, vocab_size);
    const int64_t N = tokens.size(0);
    const int64_t L = full_length ? context_length : eot.length;
    if (N == 0) return empty({0, text_projection.size(1)});
    Tensor x = embed(tokens.narrow(1, 0, L));  // [N, L, D], contiguous
    add_(x, positional_embedding.narrow(0, 0, L));
    if (trace) trace->emplace_back("text.embedding", x.clone());
    // Layer norm is per position, so normalising only the EOT rows is the same as OpenAI's
    // ln_final over the whole sequence followed by the gather.
    Tensor pooled;  // [N, D]
    if (trace || full_length) {  // every position of every block
      transformer.forward_inplace(x, heads, act, /*causal=*/true, trace, "transformer");
      if (trace) trace->emplace_back("ln_final", ln_final(x));
      pooled = ln_final(rows_at(x, eot.eot));
    } else {  // the last block only at each row's EOT
      pooled = ln_final(transformer.forward_at(x, eot.eot, heads, act, /*causal=*/true));
    }
    if (trace) trace->emplace_back("text.pooled", pooled);
    Tensor out = matmul(pooled, text_projection);
    if (trace) trace->emplace_back("text", out);
    return out;
  }
};

}  // namespace ga::clip::detail
