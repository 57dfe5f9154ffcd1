// placeholder: filled in by the attention ops work.
#pragma once
#include "linalg.hpp"
