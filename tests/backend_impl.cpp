// The one translation unit of the test binary that compiles the CPU kernels; every other
// test file sees only their declarations (GA_SEPARATE_BACKEND, set in tests/CMakeLists.txt;
// see include/ga/backend/cpu/cpu_backend.hpp). This keeps the build within CI's budget.
#define GA_BACKEND_IMPLEMENTATION
#include <ga/ga.hpp>
