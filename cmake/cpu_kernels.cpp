// The one translation unit of an executable that compiles the CPU kernels: ga_tests lists
// it among its sources, the benchmarks (and the ga tool, where they are built) share its
// object (target ga_cpu_kernels), the fuzz targets an instrumented one; every other file sees only the
// kernels' declarations (GA_SEPARATE_BACKEND; see include/ga/backend/cpu/cpu_backend.hpp).
// This keeps CI within its time budget.
#define GA_BACKEND_IMPLEMENTATION
#include <ga/ga.hpp>
