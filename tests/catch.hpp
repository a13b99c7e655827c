#pragma once
// The one include for Catch2 in tasktree's tests, for Catch2 v2 (Debian 12) and v3 alike.
#if TASKTREE_CATCH2_V3
#include <catch2/catch_all.hpp>
#else
#include <catch2/catch.hpp>
#endif

namespace tasktree_test {
/// What Catch2's own main() does: runs the test cases that the command line selects and returns
/// the exit status, non-zero if the command line is bad or a test case failed. Defined in
/// catch_impl.cpp, which is where Catch2 v2 itself is compiled, once for all test programs.
int run_catch_session(int argc, const char* const* argv);
}  // namespace tasktree_test
