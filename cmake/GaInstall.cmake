# Installs the headers and a CMake package so that find_package(ga CONFIG) gives ga::ga.
include(CMakePackageConfigHelpers)

install(DIRECTORY include/ga DESTINATION ${CMAKE_INSTALL_INCLUDEDIR})
install(TARGETS ga EXPORT gaTargets)
install(EXPORT gaTargets NAMESPACE ga:: DESTINATION ${CMAKE_INSTALL_LIBDIR}/cmake/ga)
set(GA_INSTALLED_OPENMP ${GA_OPENMP})
set(GA_INSTALLED_CUDA ${GA_CUDA})
configure_package_config_file(cmake/gaConfig.cmake.in ${CMAKE_CURRENT_BINARY_DIR}/gaConfig.cmake
                              INSTALL_DESTINATION ${CMAKE_INSTALL_LIBDIR}/cmake/ga)
write_basic_package_version_file(${CMAKE_CURRENT_BINARY_DIR}/gaConfigVersion.cmake
                                 COMPATIBILITY SameMinorVersion ARCH_INDEPENDENT)
install(FILES ${CMAKE_CURRENT_BINARY_DIR}/gaConfig.cmake ${CMAKE_CURRENT_BINARY_DIR}/gaConfigVersion.cmake
        DESTINATION ${CMAKE_INSTALL_LIBDIR}/cmake/ga)
