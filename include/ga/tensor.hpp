// Tensors with autograd: core + backends + ops + the backward engine + gradcheck.
// Everything below nn/; include this when you need tensors and nothing else.
#pragma once
#include "autograd/engine.hpp"
#include "autograd/gradcheck.hpp"
#include "autograd/tape.hpp"
#include "backend/dispatch.hpp"
#include "core/core.hpp"
#include "ops/ops.hpp"
