// placeholder: filled in by the index ops work.
#pragma once
#include "linalg.hpp"
