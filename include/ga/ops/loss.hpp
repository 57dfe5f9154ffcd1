// placeholder: filled in by the loss ops work.
#pragma once
#include "linalg.hpp"
