# Finds what the library needs and names the Debian package when something is missing.
include(GNUInstallDirs)

function(ga_missing what package)
  message(FATAL_ERROR "graphadapter.cpp: ${what} not found. On Debian/Ubuntu: apt-get install ${package}")
endfunction()

find_package(Eigen3 3.4 QUIET NO_MODULE)
if(NOT TARGET Eigen3::Eigen)
  ga_missing("Eigen 3.4" libeigen3-dev)
endif()

if(GA_OPENMP)
  find_package(OpenMP QUIET COMPONENTS CXX)
  if(NOT OpenMP_CXX_FOUND)
    message(FATAL_ERROR "graphadapter.cpp: OpenMP not found for ${CMAKE_CXX_COMPILER_ID}. "
                        "With GCC it ships with the compiler; with Clang: apt-get install libomp-dev. "
                        "Or configure with -DGA_OPENMP=OFF (single-threaded).")
  endif()
endif()

find_path(GA_STB_INCLUDE_DIR stb_image.h PATH_SUFFIXES stb)
if(NOT GA_STB_INCLUDE_DIR)
  ga_missing("stb_image.h" libstb-dev)
endif()

if(GA_CUDA)
  find_package(CUDAToolkit QUIET)
  if(NOT CUDAToolkit_FOUND)
    message(FATAL_ERROR "graphadapter.cpp: GA_CUDA=ON but the CUDA toolkit was not found "
                        "(apt-get install nvidia-cuda-toolkit, or set CUDAToolkit_ROOT)")
  endif()
endif()

if(GA_BUILD_TESTS)
  find_path(GA_DOCTEST_INCLUDE_DIR doctest/doctest.h)
  if(NOT GA_DOCTEST_INCLUDE_DIR)
    ga_missing("doctest" doctest-dev)
  endif()
endif()

if(GA_BUILD_BENCH)
  find_package(benchmark QUIET)
  if(NOT benchmark_FOUND)
    ga_missing("Google Benchmark" libbenchmark-dev)
  endif()
  find_path(GA_CBLAS_INCLUDE_DIR cblas.h PATH_SUFFIXES openblas x86_64-linux-gnu/openblas-pthread
            x86_64-linux-gnu/openblas-openmp)
  find_library(GA_OPENBLAS_LIBRARY openblas)
  if(NOT GA_CBLAS_INCLUDE_DIR OR NOT GA_OPENBLAS_LIBRARY)
    ga_missing("OpenBLAS (for the sgemm reference in bench/)" libopenblas-dev)
  endif()
endif()
