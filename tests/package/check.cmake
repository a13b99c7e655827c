# Builds and runs tests/package/consumer against tasktree consumed one way (MODE): find_package
# after an install, add_subdirectory, or FetchContent from an archive.
#
#   cmake -DMODE=<mode> -DSOURCE_DIR=<tasktree source> -DWORK_DIR=<scratch dir> [-DGENERATOR=Ninja]
#         [-DCXX=<compiler>] [-DWITH_MPI=ON] -P check.cmake
#
# WITH_MPI=ON: tasktree finds MPI, and the consumer also uses tasktree::mpi (find_package with
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
endif()

function(run)
  execute_process(COMMAND ${ARGN} RESULT_VARIABLE result OUTPUT_VARIABLE output ERROR_VARIABLE output)
  if(NOT result EQUAL 0)
    list(JOIN ARGN " " command)
    message(FATAL_ERROR "failed (${result}): ${command}\n${output}")
  endif()
endfunction()

file(REMOVE_RECURSE ${WORK_DIR})
file(MAKE_DIRECTORY ${WORK_DIR})
if(NOT DEFINED WITH_MPI)
  set(WITH_MPI OFF)
endif()
set(consumer_args -DTASKTREE_CONSUME=${MODE} -DTASKTREE_CONSUME_MPI=${WITH_MPI})

if(MODE STREQUAL "find_package")
  run(${CMAKE_COMMAND} -S ${SOURCE_DIR} -B ${WORK_DIR}/tasktree-build -G ${GENERATOR} ${compiler_args}
      -DTASKTREE_BUILD_TESTS=OFF -DTASKTREE_BUILD_EXAMPLES=OFF -DTASKTREE_BUILD_BENCHMARKS=OFF
      -DTASKTREE_BUILD_TOOLS=OFF -DTASKTREE_WITH_MPI=${WITH_MPI})
  run(${CMAKE_COMMAND} --install ${WORK_DIR}/tasktree-build --prefix ${WORK_DIR}/prefix)
  list(APPEND consumer_args -DCMAKE_PREFIX_PATH=${WORK_DIR}/prefix)
elseif(MODE STREQUAL "add_subdirectory")
  list(APPEND consumer_args -DTASKTREE_SOURCE_DIR=${SOURCE_DIR})
elseif(MODE STREQUAL "FetchContent")
  # What a release archive holds: the library, its build files and license.
  set(stage ${WORK_DIR}/tasktree-src)
  file(MAKE_DIRECTORY ${stage})
  file(COPY ${SOURCE_DIR}/include ${SOURCE_DIR}/cmake ${SOURCE_DIR}/CMakeLists.txt ${SOURCE_DIR}/LICENSE
       DESTINATION ${stage})
  run(${CMAKE_COMMAND} -E chdir ${WORK_DIR} ${CMAKE_COMMAND} -E tar czf tasktree.tar.gz tasktree-src)
  list(APPEND consumer_args -DTASKTREE_ARCHIVE=${WORK_DIR}/tasktree.tar.gz)
else()
  message(FATAL_ERROR "check.cmake: unknown MODE '${MODE}'")
endif()

run(${CMAKE_COMMAND} -S ${CMAKE_CURRENT_LIST_DIR}/consumer -B ${WORK_DIR}/consumer-build -G ${GENERATOR}
    ${compiler_args} ${consumer_args})
run(${CMAKE_COMMAND} --build ${WORK_DIR}/consumer-build)
run(${WORK_DIR}/consumer-build/consumer)
if(WITH_MPI)
  run(${WORK_DIR}/consumer-build/consumer_mpi)
endif()
message(STATUS "tasktree consumed through ${MODE}: ok")
