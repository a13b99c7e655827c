// main() of the test programs with Catch2 v2 (Catch2 itself is compiled in catch_impl.cpp); with
// Catch2 v3 they link Catch2::Catch2WithMain instead.
#include "catch.hpp"

int main(int argc, char* argv[]) { return tasktree_test::run_catch_session(argc, argv); }
