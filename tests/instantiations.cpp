// The explicit instantiations that tests/instantiations.hpp declares.
#define TASKTREE_TEST_INSTANTIATE
#include "instantiations.hpp"
