// Every op.
#pragma once
#include "attention.hpp"
#include "common.hpp"
#include "conv.hpp"
#include "elementwise.hpp"
#include "factory.hpp"
#include "index.hpp"
#include "linalg.hpp"
#include "loss.hpp"
#include "nn_ops.hpp"
#include "quantized.hpp"
#include "reduce.hpp"
#include "view.hpp"
