// The nn layer: Module and state dicts, layers (Linear, Conv2d, LayerNorm, BatchNorm2d,
// MultiheadAttention, Embedding, Dropout, activations, Sequential), initialisers,
// optimizers, learning-rate schedules and gradient clipping.
#pragma once
#include "../tensor.hpp"
#include "activation.hpp"
#include "attention.hpp"
#include "clip_grad.hpp"
#include "container.hpp"
#include "conv.hpp"
#include "dropout.hpp"
#include "embedding.hpp"
#include "init.hpp"
#include "linear.hpp"
#include "module.hpp"
#include "normalization.hpp"
#include "optim.hpp"
#include "scheduler.hpp"
