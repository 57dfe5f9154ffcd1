// Embedding: a lookup table of learned vectors (token embeddings in CLIP's text tower).
#pragma once
#include "init.hpp"
#include "module.hpp"

namespace ga::nn {

/// ids (i32/i64, any shape, values in [0, num_embeddings)) -> ids.shape + [embedding_dim].
/// Parameter weight [num_embeddings, embedding_dim], initialised N(0, 1) as in PyTorch.
class Embedding : public Module {
 public:
  Embedding(int64_t num_embeddings, int64_t embedding_dim)
      : num_embeddings(num_embeddings), embedding_dim(embedding_dim) {
    GA_CHECK(num_embeddings > 0 && embedding_dim > 0, ValueError, "Embedding: sizes must be positive (",
             num_embeddings, " x ", embedding_dim, ")");
    weight = register_parameter("weight", empty({num_embeddings, embedding_dim}));
    reset_parameters();
  }
  void reset_parameters(Generator& gen = default_generator()) { init::normal_(weight, 0.0, 1.0, gen); }

  Tensor forward(const Tensor& ids) override { return embedding(weight, ids); }

  int64_t num_embeddings, embedding_dim;
  Tensor weight;
};

}  // namespace ga::nn
