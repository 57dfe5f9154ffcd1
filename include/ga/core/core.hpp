// The core layer: dtypes, shapes, storage, devices, Tensor, errors, random numbers.
#pragma once
#include "device.hpp"
#include "dtype.hpp"
#include "error.hpp"
#include "generator.hpp"
#include "shape.hpp"
#include "storage.hpp"
#include "tensor.hpp"
