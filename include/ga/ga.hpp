// graphadapter.cpp: everything.
#pragma once
#include "io/io.hpp"
#include "nn/nn.hpp"
#include "tensor.hpp"
#include "version.hpp"
