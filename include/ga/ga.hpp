// graphadapter.cpp: the engine (tensors, autograd, ops, nn, optimizers) and the file formats.
// CLIP is one include more: ga/clip/clip.hpp.
#pragma once
#include "io/io.hpp"
#include "nn/nn.hpp"
#include "tensor.hpp"
#include "version.hpp"
