# tasktree_add_mpi_test(<name> <ranks> <executable> [args...] [MPIEXEC_FLAGS flags...]): a ctest
# test that runs <executable> under mpiexec with <ranks> ranks, as FindMPI describes, plus
# TASKTREE_MPIEXEC_FLAGS and the given flags; it never runs beside another MPI test (RESOURCE_LOCK).

# Open MPI refuses by default to start more ranks than cores, and to run as root (as CI and
# containers do); the tests start 4 ranks on 2 cores. Other MPIs (MPICH's hydra) need neither flag.
if(NOT DEFINED TASKTREE_MPIEXEC_FLAGS)
  execute_process(COMMAND ${MPIEXEC_EXECUTABLE} --version OUTPUT_VARIABLE tasktree_mpiexec_version
                  ERROR_VARIABLE tasktree_mpiexec_version RESULT_VARIABLE tasktree_mpiexec_result)
  set(tasktree_mpiexec_flags "")
  if(tasktree_mpiexec_version MATCHES "Open MPI|OpenRTE")
    set(tasktree_mpiexec_flags --oversubscribe --allow-run-as-root)
  endif()
  set(TASKTREE_MPIEXEC_FLAGS "${tasktree_mpiexec_flags}" CACHE STRING "Extra mpiexec flags for tasktree's MPI tests")
endif()

# The flags that keep an MPI job alive when one of its ranks dies, for the lost-rank tests; empty
# when this launcher's are unknown (the tests are then not added). Open MPI: --enable-recovery;
# MPICH's hydra would take -disable-auto-cleanup (untested here).
if(NOT DEFINED TASKTREE_MPIEXEC_RECOVERY_FLAGS)
  execute_process(COMMAND ${MPIEXEC_EXECUTABLE} --version OUTPUT_VARIABLE tasktree_mpiexec_version
                  ERROR_VARIABLE tasktree_mpiexec_version RESULT_VARIABLE tasktree_mpiexec_result)
  set(tasktree_recovery_flags "")
  if(tasktree_mpiexec_version MATCHES "Open MPI|OpenRTE")
    set(tasktree_recovery_flags --enable-recovery)
  endif()
  set(TASKTREE_MPIEXEC_RECOVERY_FLAGS "${tasktree_recovery_flags}"
      CACHE STRING "mpiexec flags that keep the job alive when a rank dies (lost-rank tests)")
endif()

# Sanitizers: Open MPI is not built with them, and leaks its own allocations at exit and in its
# runtime threads; tests/sanitizers/ holds the suppressions, each one explained there.
# fast_unwind_on_malloc=0: Open MPI is built without frame pointers, so only the slow unwinder
# records a leaked block's full stack, down to the Open MPI library that the suppressions name.
set(TASKTREE_MPI_TEST_ENVIRONMENT
    "LSAN_OPTIONS=suppressions=${PROJECT_SOURCE_DIR}/tests/sanitizers/lsan-openmpi.supp:print_suppressions=0:fast_unwind_on_malloc=0"
    "TSAN_OPTIONS=suppressions=${PROJECT_SOURCE_DIR}/tests/sanitizers/tsan-openmpi.supp:halt_on_error=1:second_deadlock_stack=1")

# The ctest COST of every MPI test: above every other test's (the package tests' 2000), so that the
# MPI runs, which run one at a time, start first and the other tests fill the second slot beside
# them, instead of the MPI runs finishing alone at the end.
set(TASKTREE_MPI_TEST_COST 3000)

function(tasktree_add_mpi_test name ranks executable)
  cmake_parse_arguments(PARSE_ARGV 3 arg "" "" "MPIEXEC_FLAGS")
  add_test(NAME ${name}
           COMMAND ${MPIEXEC_EXECUTABLE} ${MPIEXEC_NUMPROC_FLAG} ${ranks} ${TASKTREE_MPIEXEC_FLAGS} ${arg_MPIEXEC_FLAGS}
                   ${MPIEXEC_PREFLAGS} ${executable} ${MPIEXEC_POSTFLAGS} ${arg_UNPARSED_ARGUMENTS})
  # RESOURCE_LOCK: up to 4 ranks, which oversubscribe 2 cores already, so one MPI run at a time;
  # beside it one other test, which the ranks leave enough CPU: they sleep between polls.
  # COST: one after the other they take 40 to 55 s, the longest chain of a preset's test step, so
  # ctest starts them first (see TASKTREE_MPI_TEST_COST).
  set_tests_properties(${name} PROPERTIES LABELS "mpi" TIMEOUT 300 RESOURCE_LOCK mpi_ranks
                                          COST ${TASKTREE_MPI_TEST_COST}
                                          ENVIRONMENT "${TASKTREE_MPI_TEST_ENVIRONMENT}")
endfunction()
