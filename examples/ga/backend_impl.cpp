// The one translation unit of the ga tool that compiles the CPU kernels; the others see only
// their declarations (GA_SEPARATE_BACKEND, set in examples/CMakeLists.txt; see
// include/ga/backend/cpu/cpu_backend.hpp), so the tool's files compile in parallel, fast.
#define GA_BACKEND_IMPLEMENTATION
#include <ga/ga.hpp>
