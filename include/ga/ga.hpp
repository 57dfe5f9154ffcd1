// graphadapter.cpp: everything.
#pragma once
#include "nn/nn.hpp"
#include "tensor.hpp"
#include "version.hpp"
