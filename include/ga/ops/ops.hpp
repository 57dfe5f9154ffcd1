// Every differentiable op.
#pragma once
#include "common.hpp"
#include "elementwise.hpp"
#include "factory.hpp"
#include "linalg.hpp"
#include "reduce.hpp"
#include "view.hpp"
