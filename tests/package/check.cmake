# Builds and runs tests/package/consumer against tasktree consumed one way (MODE):
#
#   find_package      CMake's find_package, after `cmake --install` to a scratch prefix
#   add_subdirectory  the source tree, vendored
#   FetchContent      from an archive of what a release holds
#   pkg-config        `pkg-config --cflags --libs tasktree` (no CMake), after an install as above
#
#   cmake -DMODE=<mode> -DSOURCE_DIR=<tasktree source> -DWORK_DIR=<scratch dir> [-DGENERATOR=Ninja]
#         [-DCXX=<compiler>] [-DWITH_MPI=ON] -P check.cmake
#
# WITH_MPI=ON: tasktree finds MPI, and the CMake consumer also uses tasktree::mpi (find_package with
# COMPONENTS mpi) and runs a program with it, as a single MPI rank.

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

# cmake_consumer(<build dir> <args...>): configures, builds and runs the CMake consumer project.
function(cmake_consumer build_dir)
  run(${CMAKE_COMMAND} -S ${consumer_dir} -B ${build_dir} -G ${GENERATOR} ${compiler_args}
      -DTASKTREE_CONSUME_MPI=${WITH_MPI} ${ARGN})
  run(${CMAKE_COMMAND} --build ${build_dir})
  run(${build_dir}/consumer)
  if(WITH_MPI)
    run(${build_dir}/consumer_mpi)
  endif()
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

if(MODE STREQUAL "find_package" OR MODE STREQUAL "pkg-config")
  set(prefix ${WORK_DIR}/prefix)
  run(${CMAKE_COMMAND} -S ${SOURCE_DIR} -B ${WORK_DIR}/tasktree-build -G ${GENERATOR} ${compiler_args}
      -DTASKTREE_BUILD_TESTS=OFF -DTASKTREE_BUILD_EXAMPLES=OFF -DTASKTREE_BUILD_BENCHMARKS=OFF
      -DTASKTREE_BUILD_TOOLS=OFF -DTASKTREE_WITH_MPI=${WITH_MPI})
  run(${CMAKE_COMMAND} --install ${WORK_DIR}/tasktree-build --prefix ${prefix})
  if(MODE STREQUAL "find_package")
    cmake_consumer(${WORK_DIR}/consumer-build -DTASKTREE_CONSUME=find_package -DCMAKE_PREFIX_PATH=${prefix})
  else()
    pkg_config_consumer(${prefix}/share/pkgconfig ${prefix})
  endif()
elseif(MODE STREQUAL "add_subdirectory")
  cmake_consumer(${WORK_DIR}/consumer-build -DTASKTREE_CONSUME=add_subdirectory -DTASKTREE_SOURCE_DIR=${SOURCE_DIR})
elseif(MODE STREQUAL "FetchContent")
  # What a release archive holds: the library, its build files and license.
  set(stage ${WORK_DIR}/tasktree-src)
  file(MAKE_DIRECTORY ${stage})
  file(COPY ${SOURCE_DIR}/include ${SOURCE_DIR}/cmake ${SOURCE_DIR}/CMakeLists.txt ${SOURCE_DIR}/LICENSE
       DESTINATION ${stage})
  run(${CMAKE_COMMAND} -E chdir ${WORK_DIR} ${CMAKE_COMMAND} -E tar czf tasktree.tar.gz tasktree-src)
  cmake_consumer(${WORK_DIR}/consumer-build -DTASKTREE_CONSUME=FetchContent
                 -DTASKTREE_ARCHIVE=${WORK_DIR}/tasktree.tar.gz)
else()
  message(FATAL_ERROR "check.cmake: unknown MODE '${MODE}'")
endif()
message(STATUS "tasktree consumed through ${MODE}: ok")
