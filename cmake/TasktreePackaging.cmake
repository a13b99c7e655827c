# CPack: `cpack -G DEB` in a configured and built tasktree build directory makes a Debian package
# (tasktree_<version>_<arch>.deb) of what `cmake --install` installs: the headers, the CMake package
# files, the pkg-config file and, when built, tasktree-run; plus what Debian asks of every package,
# a copyright file and a compressed changelog. tests/package/check.cmake (MODE=deb) builds it,
# checks it with lintian and builds a program against what it unpacks to.

set(TASKTREE_PACKAGE_MAINTAINER "tasktree maintainers <tasktree@example.invalid>"
    CACHE STRING "Maintainer of the Debian package made by cpack: \"Name <address>\"")

# The Debian changelog's newest entry must be this version: a version bump needs an entry there.
set(tasktree_debian_dir ${PROJECT_SOURCE_DIR}/cmake/debian)
file(STRINGS ${tasktree_debian_dir}/changelog tasktree_changelog_head LIMIT_COUNT 1)
if(NOT tasktree_changelog_head MATCHES "^tasktree \\(${PROJECT_VERSION}\\) ")
  message(FATAL_ERROR "cmake/debian/changelog starts with '${tasktree_changelog_head}', but the project is "
                      "version ${PROJECT_VERSION}: add an entry for it at the top")
endif()
set_property(DIRECTORY APPEND PROPERTY CMAKE_CONFIGURE_DEPENDS ${tasktree_debian_dir}/changelog)

# Debian wants changelogs gzip'd at the highest level and without a timestamp (gzip -9n); the
# copyright file is in Debian's machine-readable format, the license by reference.
set(tasktree_debian_out ${PROJECT_BINARY_DIR}/debian)
file(MAKE_DIRECTORY ${tasktree_debian_out})
configure_file(${tasktree_debian_dir}/copyright.in ${tasktree_debian_out}/copyright @ONLY)
find_program(TASKTREE_GZIP gzip REQUIRED)
execute_process(COMMAND ${TASKTREE_GZIP} -9nc ${tasktree_debian_dir}/changelog
                OUTPUT_FILE ${tasktree_debian_out}/changelog.gz RESULT_VARIABLE tasktree_gzip_result)
if(NOT tasktree_gzip_result EQUAL 0)
  message(FATAL_ERROR "gzip of cmake/debian/changelog failed: ${tasktree_gzip_result}")
endif()
# Component "debian", left out of a plain `cmake --install` (which has the LICENSE instead): only the
# package below asks for it.
install(FILES ${tasktree_debian_out}/copyright ${tasktree_debian_out}/changelog.gz
        DESTINATION ${CMAKE_INSTALL_DATADIR}/doc/tasktree COMPONENT debian EXCLUDE_FROM_ALL)

set(CPACK_GENERATOR DEB)
set(CPACK_PACKAGE_NAME tasktree)
set(CPACK_PACKAGE_VENDOR "The tasktree authors")
set(CPACK_PACKAGE_CONTACT "${TASKTREE_PACKAGE_MAINTAINER}")
set(CPACK_PACKAGE_DESCRIPTION_SUMMARY "parallel, dependency-aware scheduling of jobs named by paths")
# Debian wants the lines of the extended description at most 80 characters long.
string(CONCAT CPACK_PACKAGE_DESCRIPTION
       "tasktree is a header-only C++20 library that runs many jobs named by\n"
       "slash-separated paths (ZFS datasets, directories, S3 prefixes, job ids) in\n"
       "parallel: a job starts only after the jobs above it on its path have\n"
       "finished, unrelated subtrees run in parallel, barriers wait for whole\n"
       "subtrees, and retries and failure policies come ready-made. It scales out\n"
       "over MPI ranks (the tasktree::mpi CMake component).\n"
       "\n"
       "This package holds the headers, the CMake package (find_package(tasktree)),\n"
       "the pkg-config file, and tasktree-run, which runs a file of shell commands\n"
       "named by job paths.")
set(CPACK_STRIP_FILES ON)  # tasktree-run: Debian ships stripped binaries
set(CPACK_INSTALL_DEFAULT_DIRECTORY_PERMISSIONS OWNER_READ OWNER_WRITE OWNER_EXECUTE GROUP_READ GROUP_EXECUTE
                                                WORLD_READ WORLD_EXECUTE)
# Everything `cmake --install` installs (component "Unspecified"), plus the Debian files.
set(CPACK_INSTALL_CMAKE_PROJECTS "${PROJECT_BINARY_DIR};tasktree;Unspecified;/"
                                 "${PROJECT_BINARY_DIR};tasktree;debian;/")

set(CPACK_DEBIAN_FILE_NAME DEB-DEFAULT)
set(CPACK_DEBIAN_PACKAGE_MAINTAINER "${TASKTREE_PACKAGE_MAINTAINER}")
set(CPACK_DEBIAN_PACKAGE_SECTION devel)
set(CPACK_DEBIAN_PACKAGE_PRIORITY optional)
set(CPACK_DEBIAN_PACKAGE_HOMEPAGE "${PROJECT_HOMEPAGE_URL}")
# The headers need {fmt}'s; tasktree-run's shared libraries come from dpkg-shlibdeps (dpkg-dev).
set(CPACK_DEBIAN_PACKAGE_DEPENDS "libfmt-dev (>= 9)")
if(TASKTREE_BUILD_TOOLS)
  set(CPACK_DEBIAN_PACKAGE_SHLIBDEPS ON)
else()
  set(CPACK_DEBIAN_PACKAGE_ARCHITECTURE all)  # headers and text files only
endif()
if(TASKTREE_MPI_ENABLED)
  set(CPACK_DEBIAN_PACKAGE_SUGGESTS "libopenmpi-dev | mpi-default-dev")
endif()

include(CPack)
set(TASKTREE_PACKAGING ON)  # tests/CMakeLists.txt: the package.deb test
