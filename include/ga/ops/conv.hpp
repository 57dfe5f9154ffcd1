// placeholder: filled in by the conv ops work.
#pragma once
#include "linalg.hpp"
