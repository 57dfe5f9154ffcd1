# Configures the repository with a dependency hidden (CMAKE_FIND_ROOT_PATH pointed at a
# directory that does not exist) and checks that CMake fails naming the Debian package.
#   GA_SOURCE_DIR  the repository;  WORK_DIR  scratch space;  CXX  the C++ compiler
#   Eigen3_DIR, STB_DIR  where the real ones are (so that a later dependency can be hidden alone)
cmake_minimum_required(VERSION 3.18)
set(hide -DCMAKE_FIND_ROOT_PATH=${WORK_DIR}/nonexistent)
# Each case: the package the error must name, then the configure arguments.
set(case_eigen "libeigen3-dev" -DCMAKE_FIND_ROOT_PATH_MODE_PACKAGE=ONLY -DCMAKE_FIND_ROOT_PATH_MODE_INCLUDE=ONLY)
set(case_stb "libstb-dev" -DCMAKE_FIND_ROOT_PATH_MODE_INCLUDE=ONLY)
set(case_doctest "doctest-dev" -DCMAKE_FIND_ROOT_PATH_MODE_INCLUDE=ONLY -DGA_STB_INCLUDE_DIR=${STB_DIR}
    -DGA_BUILD_TESTS=ON)
set(case_benchmark "libbenchmark-dev" -DCMAKE_FIND_ROOT_PATH_MODE_PACKAGE=ONLY -DGA_BUILD_BENCH=ON
    -DEigen3_DIR=${Eigen3_DIR})
foreach(c eigen stb doctest benchmark)
  list(GET case_${c} 0 package)
  list(SUBLIST case_${c} 1 -1 args)
  file(REMOVE_RECURSE ${WORK_DIR}/${c})
  execute_process(COMMAND ${CMAKE_COMMAND} -S ${GA_SOURCE_DIR} -B ${WORK_DIR}/${c} -DCMAKE_CXX_COMPILER=${CXX}
                          -DGA_OPENMP=OFF -DGA_BUILD_TESTS=OFF -DGA_BUILD_EXAMPLES=OFF -DGA_BUILD_BENCH=OFF
                          ${hide} ${args}
                  RESULT_VARIABLE rc OUTPUT_VARIABLE out ERROR_VARIABLE out)
  if(rc EQUAL 0)
    message(FATAL_ERROR "[${c}] configure succeeded with the dependency hidden:\n${out}")
  endif()
  if(NOT out MATCHES "apt-get[ \n]+install[ \n]+${package}")
    message(FATAL_ERROR "[${c}] configure failed without naming ${package}:\n${out}")
  endif()
  message(STATUS "[${c}] missing -> error names ${package}: ok")
endforeach()
