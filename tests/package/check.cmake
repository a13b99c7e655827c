# Builds and runs tests/package/consumer against tasktree consumed one way (MODE):
#
#   install           `cmake --install` to a scratch prefix, then CMake's find_package and
#                     `pkg-config --cflags --libs tasktree` (no CMake) against that one install
#   add_subdirectory  the source tree, vendored
#   FetchContent      from an archive of what a release holds
#   deb               the Debian package that `cpack -G DEB` makes of the built tree BUILD_DIR,
#                     unpacked with dpkg-deb -x: its contents and control fields, lintian (no
#                     errors), the consumer through both find_package and pkg-config against what
#                     it unpacked, and its tasktree-run
#
#   cmake -DMODE=<mode> -DSOURCE_DIR=<tasktree source> -DWORK_DIR=<scratch dir> [-DGENERATOR=Ninja]
#         [-DCXX=<compiler>] [-DWITH_MPI=ON] [-DBUILD_DIR=<built tasktree> -DCPACK=<cpack>] -P check.cmake
#
# WITH_MPI=ON: tasktree finds MPI, and the CMake consumer also uses tasktree::mpi (find_package with
# COMPONENTS mpi) and runs a program with it, as a single MPI rank, where an installed package is
# consumed (install, deb: that is where the mpi component's export can break); vendored
# (add_subdirectory, FetchContent) the consumer checks that the target tasktree::mpi exists and
# builds only the core program, which halves those two checks' compile time.

foreach(variable IN ITEMS MODE SOURCE_DIR WORK_DIR)
  if(NOT DEFINED ${variable})
    message(FATAL_ERROR "check.cmake: ${variable} is not set")
  endif()
endforeach()
if(NOT DEFINED GENERATOR)
  set(GENERATOR "Ninja")
endif()
set(compiler_args "")
if(DEFINED CXX AND NOT CXX STREQUAL "")
  set(compiler_args "-DCMAKE_CXX_COMPILER=${CXX}")
else()
  set(CXX c++)
endif()
if(NOT DEFINED WITH_MPI)
  set(WITH_MPI OFF)
endif()
set(consumer_dir ${CMAKE_CURRENT_LIST_DIR}/consumer)

# run(<command...>): runs it, fails the check with its output if it fails.
function(run)
  execute_process(COMMAND ${ARGN} RESULT_VARIABLE result OUTPUT_VARIABLE output ERROR_VARIABLE output)
  if(NOT result EQUAL 0)
    list(JOIN ARGN " " command)
    message(FATAL_ERROR "failed (${result}): ${command}\n${output}")
  endif()
endfunction()

# run_output(<variable> <command...>): as run(), and sets <variable> to its standard output.
function(run_output variable)
  execute_process(COMMAND ${ARGN} RESULT_VARIABLE result OUTPUT_VARIABLE output ERROR_VARIABLE error
                  OUTPUT_STRIP_TRAILING_WHITESPACE)
  if(NOT result EQUAL 0)
    list(JOIN ARGN " " command)
    message(FATAL_ERROR "failed (${result}): ${command}\n${output}\n${error}")
  endif()
  set(${variable} "${output}" PARENT_SCOPE)
endfunction()

# cmake_consumer(<build dir> <core|all> <args...>): configures, builds and runs the CMake consumer
# project: its core program only, or with WITH_MPI its MPI program too.
function(cmake_consumer build_dir programs)
  run(${CMAKE_COMMAND} -S ${consumer_dir} -B ${build_dir} -G ${GENERATOR} ${compiler_args}
      -DTASKTREE_CONSUME_MPI=${WITH_MPI} ${ARGN})
  if(WITH_MPI AND programs STREQUAL "all")
    run(${CMAKE_COMMAND} --build ${build_dir})
    run(${build_dir}/consumer_mpi)
  else()
    run(${CMAKE_COMMAND} --build ${build_dir} --target consumer)
  endif()
  run(${build_dir}/consumer)
endfunction()

# pkg_config_consumer(<dir of tasktree.pc> <prefix>): compiles consumer/main.cpp with nothing but the
# flags that pkg-config gives for tasktree, which must point into <prefix>, and runs it.
function(pkg_config_consumer pc_dir prefix)
  find_program(PKG_CONFIG pkg-config REQUIRED)
  set(pkg_config ${CMAKE_COMMAND} -E env PKG_CONFIG_PATH=${pc_dir} ${PKG_CONFIG})
  run_output(version ${pkg_config} --modversion tasktree)
  run_output(cflags ${pkg_config} --cflags tasktree)
  run_output(libs ${pkg_config} --libs tasktree)
  message(STATUS "pkg-config tasktree ${version}: --cflags ${cflags} --libs ${libs}")
  # The include directory must be the one in <prefix>, not one that happens to be installed.
  separate_arguments(cflags UNIX_COMMAND "${cflags}")
  separate_arguments(libs UNIX_COMMAND "${libs}")
  set(include_ok FALSE)
  foreach(flag IN LISTS cflags)
    if(flag MATCHES "^-I(.*)$")
      file(REAL_PATH "${CMAKE_MATCH_1}" include_dir)
      file(REAL_PATH "${prefix}" real_prefix)
      string(FIND "${include_dir}/" "${real_prefix}/" at)
      if(at EQUAL 0 AND EXISTS "${include_dir}/tasktree/tasktree.hpp")
        set(include_ok TRUE)
      endif()
    endif()
  endforeach()
  if(NOT include_ok)
    message(FATAL_ERROR "pkg-config --cflags tasktree gives no -I of tasktree's headers in ${prefix}: ${cflags}")
  endif()
  set(program ${WORK_DIR}/consumer-pkg-config)
  run(${CXX} -std=c++20 ${consumer_dir}/main.cpp ${cflags} ${libs} -o ${program})
  run(${program})
endfunction()

file(REMOVE_RECURSE ${WORK_DIR})
file(MAKE_DIRECTORY ${WORK_DIR})

if(MODE STREQUAL "install")
  set(prefix ${WORK_DIR}/prefix)
  run(${CMAKE_COMMAND} -S ${SOURCE_DIR} -B ${WORK_DIR}/tasktree-build -G ${GENERATOR} ${compiler_args}
      -DTASKTREE_BUILD_TESTS=OFF -DTASKTREE_BUILD_EXAMPLES=OFF -DTASKTREE_BUILD_BENCHMARKS=OFF
      -DTASKTREE_BUILD_TOOLS=OFF -DTASKTREE_WITH_MPI=${WITH_MPI})
  run(${CMAKE_COMMAND} --install ${WORK_DIR}/tasktree-build --prefix ${prefix})
  cmake_consumer(${WORK_DIR}/consumer-build all -DTASKTREE_CONSUME=find_package -DCMAKE_PREFIX_PATH=${prefix})
  pkg_config_consumer(${prefix}/share/pkgconfig ${prefix})
elseif(MODE STREQUAL "add_subdirectory")
  cmake_consumer(${WORK_DIR}/consumer-build core -DTASKTREE_CONSUME=add_subdirectory
                 -DTASKTREE_SOURCE_DIR=${SOURCE_DIR})
elseif(MODE STREQUAL "FetchContent")
  # What a release archive holds: the library, its build files and license.
  set(stage ${WORK_DIR}/tasktree-src)
  file(MAKE_DIRECTORY ${stage})
  file(COPY ${SOURCE_DIR}/include ${SOURCE_DIR}/cmake ${SOURCE_DIR}/CMakeLists.txt ${SOURCE_DIR}/LICENSE
       DESTINATION ${stage})
  run(${CMAKE_COMMAND} -E chdir ${WORK_DIR} ${CMAKE_COMMAND} -E tar czf tasktree.tar.gz tasktree-src)
  cmake_consumer(${WORK_DIR}/consumer-build core -DTASKTREE_CONSUME=FetchContent
                 -DTASKTREE_ARCHIVE=${WORK_DIR}/tasktree.tar.gz)
elseif(MODE STREQUAL "deb")
  foreach(variable IN ITEMS BUILD_DIR CPACK)
    if(NOT DEFINED ${variable})
      message(FATAL_ERROR "check.cmake: ${variable} is not set (MODE=deb)")
    endif()
  endforeach()
  find_program(DPKG_DEB dpkg-deb REQUIRED)
  find_program(LINTIAN lintian)
  if(NOT LINTIAN)
    message(FATAL_ERROR "check.cmake: lintian is not installed (scripts/deps.sh installs it)")
  endif()

  # The package, made of the already built tree (nothing is compiled again).
  run(${CPACK} -G DEB --config ${BUILD_DIR}/CPackConfig.cmake -B ${WORK_DIR}/cpack)
  file(GLOB debs ${WORK_DIR}/cpack/*.deb)
  list(LENGTH debs count)
  if(NOT count EQUAL 1)
    message(FATAL_ERROR "cpack -G DEB made ${count} packages: ${debs}")
  endif()
  run_output(info ${DPKG_DEB} --info ${debs})
  message(STATUS "${debs}:\n${info}")
  foreach(field IN ITEMS "Package: tasktree" "Section: devel" "Maintainer: " "Depends: .*libfmt-dev"
                         "Depends: .*libc6")
    if(NOT info MATCHES "\n ${field}")
      message(FATAL_ERROR "the package's control file has no '${field}'")
    endif()
  endforeach()

  # lintian: errors fail the check, warnings are only shown.
  execute_process(COMMAND ${LINTIAN} --fail-on error --display-level ">=warning" ${debs} RESULT_VARIABLE result
                  OUTPUT_VARIABLE output ERROR_VARIABLE output)
  message(STATUS "lintian:\n${output}")
  if(NOT result EQUAL 0)
    message(FATAL_ERROR "lintian reports errors on ${debs} (exit code ${result})")
  endif()

  set(root ${WORK_DIR}/root)
  run(${DPKG_DEB} -x ${debs} ${root})
  file(GLOB_RECURSE config_files RELATIVE ${root} ${root}/usr/lib/*/tasktreeConfig.cmake)
  foreach(file IN ITEMS usr/include/tasktree/tasktree.hpp usr/include/tasktree/detail/coordinator.hpp
                        usr/share/pkgconfig/tasktree.pc usr/bin/tasktree-run usr/share/doc/tasktree/copyright
                        usr/share/doc/tasktree/changelog.gz)
    if(NOT EXISTS ${root}/${file})
      message(FATAL_ERROR "the package has no ${file}")
    endif()
  endforeach()
  if(NOT config_files)
    message(FATAL_ERROR "the package has no tasktreeConfig.cmake under usr/lib")
  endif()

  # A program built against the unpacked package, through CMake (which must find that package, not
  # one installed on this machine) and through pkg-config.
  set(consumer_build ${WORK_DIR}/consumer-build)
  cmake_consumer(${consumer_build} all -DTASKTREE_CONSUME=find_package -DCMAKE_PREFIX_PATH=${root}/usr)
  file(STRINGS ${consumer_build}/CMakeCache.txt tasktree_dir REGEX "^tasktree_DIR:")
  string(FIND "${tasktree_dir}" "${root}/usr/" at)
  if(NOT at GREATER 0)
    message(FATAL_ERROR "the consumer found another tasktree package: ${tasktree_dir}")
  endif()
  pkg_config_consumer(${root}/usr/share/pkgconfig ${root})

  # The packaged tasktree-run runs a small jobs file.
  file(WRITE ${WORK_DIR}/smoke.jobs "a true\na/b true\na/~/c true\n")
  run(${root}/usr/bin/tasktree-run -j 2 ${WORK_DIR}/smoke.jobs)
else()
  message(FATAL_ERROR "check.cmake: unknown MODE '${MODE}'")
endif()
message(STATUS "tasktree consumed through ${MODE}: ok")
