// Catch2 v2 is a single header whose implementation takes longer to compile than most tests: it is
// compiled here, once for all of tasktree's test programs, and their main()s (catch_main.cpp, and
// mpi_main.cpp for test_mpi) call run_catch_session(). With Catch2 v3, whose library is prebuilt,
// this file only defines that function.
#define CATCH_CONFIG_RUNNER
#include "catch.hpp"

int tasktree_test::run_catch_session(int argc, const char* const* argv) { return Catch::Session().run(argc, argv); }
