// placeholder: filled in by the nn_ops ops work.
#pragma once
#include "linalg.hpp"
