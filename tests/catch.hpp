#pragma once
// The one include for Catch2 in tasktree's tests, for Catch2 v2 (Debian 12) and v3 alike.
#if TASKTREE_CATCH2_V3
#include <catch2/catch_all.hpp>
#else
#include <catch2/catch.hpp>
#endif
