// File formats: JSON, safetensors (mmapped read, atomic write), and PyTorch checkpoints (zip +
// restricted pickle, read-only). Include this when you need to load or save tensors; it brings
// in tensors (ga/tensor.hpp) and nothing above.
#pragma once
#include "json.hpp"
#include "safetensors.hpp"
#include "torch_checkpoint.hpp"
