// The one translation unit that compiles the CPU kernels for every executable of this
// build: the tests, the ga tool, the benchmarks and the fuzz targets link its object
// (target ga_cpu_kernels; the fuzz build compiles its own, instrumented), and their files
// see only the kernels' declarations (GA_SEPARATE_BACKEND; see
// include/ga/backend/cpu/cpu_backend.hpp). Compiling the kernels once instead of in every
// executable keeps CI within its time budget.
#define GA_BACKEND_IMPLEMENTATION
#include <ga/ga.hpp>
