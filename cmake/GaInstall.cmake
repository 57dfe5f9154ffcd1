# Installs the headers and a CMake package so that find_package(ga CONFIG) gives ga::ga.
# The package remembers GA_OPENMP and GA_CUDA and finds Eigen3 (and OpenMP / CUDAToolkit
# when they were on) for the consumer.
include(GNUInstallDirs)
include(CMakePackageConfigHelpers)

set(GA_INSTALL_CMAKEDIR ${CMAKE_INSTALL_LIBDIR}/cmake/ga CACHE STRING "Where gaConfig.cmake is installed")
mark_as_advanced(GA_INSTALL_CMAKEDIR)

install(DIRECTORY ${PROJECT_SOURCE_DIR}/include/ga DESTINATION ${CMAKE_INSTALL_INCLUDEDIR})
install(TARGETS ga EXPORT gaTargets)
install(EXPORT gaTargets NAMESPACE ga:: DESTINATION ${GA_INSTALL_CMAKEDIR})
set(GA_INSTALLED_OPENMP ${GA_OPENMP})
set(GA_INSTALLED_CUDA ${GA_CUDA})
configure_package_config_file(${CMAKE_CURRENT_LIST_DIR}/gaConfig.cmake.in ${PROJECT_BINARY_DIR}/gaConfig.cmake
                              INSTALL_DESTINATION ${GA_INSTALL_CMAKEDIR})
write_basic_package_version_file(${PROJECT_BINARY_DIR}/gaConfigVersion.cmake
                                 VERSION ${PROJECT_VERSION}
                                 COMPATIBILITY SameMinorVersion ARCH_INDEPENDENT)
install(FILES ${PROJECT_BINARY_DIR}/gaConfig.cmake ${PROJECT_BINARY_DIR}/gaConfigVersion.cmake
        DESTINATION ${GA_INSTALL_CMAKEDIR})
