// libFuzzer target: the fuzzer's bytes become datasets, options and job outcomes (see
// tests/model/fuzz_input.hpp for the layout); the case runs inline and with a deterministic
// interleaving executor, and everything the library does is compared with the reference model
// (tests/model/reference_model.hpp). Invalid inputs must be rejected with std::invalid_argument
// and nothing else. Any disagreement is printed and aborts, which libFuzzer reports as a crash.
//
// Built by the "fuzz" preset (Clang, -fsanitize=fuzzer,address,undefined); run it with
//   build/fuzz/fuzz/fuzz_tasktree -max_total_time=60 build/fuzz/fuzz/corpus fuzz/corpus

#include "model/fuzz_input.hpp"

#include <cstddef>
#include <cstdint>
#include <cstdio>
#include <cstdlib>

extern "C" int LLVMFuzzerTestOneInput(const std::uint8_t* data, std::size_t size) {
  const auto problems = tasktree_model::check_fuzz_input(data, size);
  if (problems.empty()) return 0;
  for (const auto& problem : problems) std::fprintf(stderr, "%s\n", problem.c_str());
  std::abort();
}
