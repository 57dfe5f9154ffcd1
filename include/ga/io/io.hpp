// File formats: JSON and safetensors (mmapped read, atomic write). Include this when you
// need to load or save tensors; it brings in tensors (ga/tensor.hpp) and nothing above.
#pragma once
#include "json.hpp"
#include "safetensors.hpp"
