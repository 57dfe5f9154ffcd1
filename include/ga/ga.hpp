// graphadapter.cpp: everything.
#pragma once
#include "tensor.hpp"
#include "version.hpp"
