# Builds and runs tests/consumer against this checkout (cmake -P; see tests/CMakeLists.txt).
#   MODE          subdirectory: the consumer does add_subdirectory(GA_SOURCE_DIR)
#                 package: configure GA_SOURCE_DIR alone, cmake --install it into WORK_DIR/prefix,
#                 and the consumer does find_package(ga CONFIG REQUIRED) from there
#   GA_SOURCE_DIR the repository;  WORK_DIR  scratch space (reused between runs)
#   GA_ARGS       extra -D options for graphadapter.cpp, separated by '|'
#   EXPECT_OPENMP, EXPECT_CUDA   0/1: what the consumer must see through ga::ga
#   CXX           the C++ compiler;  JOBS  parallel build jobs
cmake_minimum_required(VERSION 3.18)
foreach(v MODE GA_SOURCE_DIR WORK_DIR)
  if(NOT DEFINED ${v})
    message(FATAL_ERROR "run_consumer.cmake: ${v} not set")
  endif()
endforeach()
if(NOT DEFINED EXPECT_OPENMP)
  set(EXPECT_OPENMP 1)
endif()
if(NOT DEFINED EXPECT_CUDA)
  set(EXPECT_CUDA 0)
endif()
if(NOT JOBS)
  set(JOBS 2)
endif()
string(REPLACE "|" ";" ga_args "${GA_ARGS}")
set(compiler_args)
if(CXX)
  set(compiler_args -DCMAKE_CXX_COMPILER=${CXX})
endif()

function(step what)
  string(REPLACE ";" " " shown "${ARGN}")
  message(STATUS "[consumer ${MODE}] ${what}: ${shown}")
  execute_process(COMMAND ${ARGN} RESULT_VARIABLE rc OUTPUT_VARIABLE out ERROR_VARIABLE out)
  if(NOT rc EQUAL 0)
    message("${out}")
    message(FATAL_ERROR "[consumer ${MODE}] ${what} failed (exit ${rc})")
  endif()
  set(step_output "${out}" PARENT_SCOPE)
endfunction()

set(consumer_args)
if(MODE STREQUAL "package")
  # A standalone configure of the library (nothing but ga::ga), installed into a fresh prefix.
  set(prefix ${WORK_DIR}/prefix)
  file(REMOVE_RECURSE ${prefix})
  step("configure graphadapter.cpp" ${CMAKE_COMMAND} -S ${GA_SOURCE_DIR} -B ${WORK_DIR}/ga-build ${compiler_args}
       -DGA_BUILD_TESTS=OFF -DGA_BUILD_EXAMPLES=OFF -DGA_BUILD_BENCH=OFF -DGA_SANITIZE=OFF ${ga_args})
  step("install" ${CMAKE_COMMAND} --install ${WORK_DIR}/ga-build --prefix ${prefix})
  if(NOT EXISTS ${prefix}/include/ga/ga.hpp)
    message(FATAL_ERROR "[consumer package] the install has no include/ga/ga.hpp")
  endif()
  list(APPEND consumer_args -DCMAKE_PREFIX_PATH=${prefix} -DGA_EXPECT_PREFIX=${prefix}
       -DCMAKE_FIND_PACKAGE_NO_PACKAGE_REGISTRY=ON)
elseif(MODE STREQUAL "subdirectory")
  list(APPEND consumer_args -DGA_SOURCE_DIR=${GA_SOURCE_DIR} ${ga_args})
else()
  message(FATAL_ERROR "MODE must be subdirectory or package")
endif()

step("configure consumer" ${CMAKE_COMMAND} -S ${CMAKE_CURRENT_LIST_DIR} -B ${WORK_DIR}/build ${compiler_args}
     -DGA_CONSUMER_MODE=${MODE} -DGA_EXPECT_OPENMP=${EXPECT_OPENMP} -DGA_EXPECT_CUDA=${EXPECT_CUDA}
     ${consumer_args})
step("build consumer" ${CMAKE_COMMAND} --build ${WORK_DIR}/build -j ${JOBS})
step("run consumer" ${WORK_DIR}/build/consumer)
message("${step_output}")
if(NOT step_output MATCHES "consumer ok")
  message(FATAL_ERROR "[consumer ${MODE}] did not report 'consumer ok'")
endif()
