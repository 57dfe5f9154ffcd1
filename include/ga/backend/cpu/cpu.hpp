// The CPU backend, all kernel families.
#pragma once
#include "conv_kernels.hpp"
#include "cpu_backend.hpp"
#include "elementwise.hpp"
#include "gemm_int8.hpp"
#include "index_kernels.hpp"
#include "matmul.hpp"
#include "nn_kernels.hpp"
#include "reduce.hpp"
