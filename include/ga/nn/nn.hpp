// The nn layer: modules, initialisers, optimizers, schedulers.
#pragma once
#include "../tensor.hpp"
