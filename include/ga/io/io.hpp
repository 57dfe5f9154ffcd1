// File formats: JSON, safetensors (mmapped read, atomic write), NumPy .npy, and PyTorch
// checkpoints (zip + restricted pickle, read-only). Include this when you need to load or save
// tensors; it brings in tensors (ga/tensor.hpp) and nothing above. Images are separate
// (ga/io/image.hpp, ga/io/preprocess.hpp): they compile stb_image into the including file.
#pragma once
#include "json.hpp"
#include "npy.hpp"
#include "safetensors.hpp"
#include "torch_checkpoint.hpp"
