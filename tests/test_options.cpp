// Tests for include/tasktree/options.hpp and detail/option_fields.hpp: the job wrapper, and the
// options that the layers share and carry from one struct to another.

#include "catch.hpp"

#include <tasktree/detail/option_fields.hpp>
#include <tasktree/tasktree.hpp>

#include <chrono>
#include <cstdint>
#include <memory>
#include <stop_token>
#include <string>
#include <string_view>
#include <vector>

using tasktree::CompletionCallbackResult;
using tasktree::FaultTolerantOptions;
using tasktree::Options;

namespace {
struct SomeObserver : tasktree::RunObserver {};

struct Three {
  int a = 0;
  std::string b;
  std::vector<int> c;
};
}  // namespace

TEST_CASE("field_count counts the fields of an aggregate, whatever their types") {
  static_assert(tasktree::detail::field_count<Three>() == 3);
  // Checked again at run time so that a report shows the counts if the static checks are ever
  // relaxed: a field added to one struct and not the others changes these.
  CHECK(tasktree::detail::field_count<Three>() == 3);
  CHECK(tasktree::detail::field_count<Options<>>() == 14);
  CHECK(tasktree::detail::field_count<FaultTolerantOptions<>>() == 25);
  // What the policy layer relies on: every core option but the job is shared.
  CHECK(tasktree::detail::shared_option_count<Options<>, FaultTolerantOptions<>> == 13);
}

TEST_CASE("carry_shared_options moves every shared option and leaves the others and the excepted ones alone") {
  auto clock = std::make_shared<tasktree::ManualClock>();
  auto observer = std::make_shared<SomeObserver>();
  std::stop_source stop;
  FaultTolerantOptions<> from{
      .datasets = {"a", "a/b"},
      .process_dataset = [](std::string_view, std::string_view, const tasktree::Retry&) { return true; },
      .skip_on_error = tasktree::SkipOnError::tree,
      .task_name = "replicate",
      .priority = [](std::string_view dataset) { return -static_cast<int>(dataset.size()); },
      .max_workers = 7,
      .interval_nanos = [](std::int64_t, std::string_view, std::int64_t) { return std::int64_t{5}; },
      .stop_token = stop.get_token(),
      .enable_barriers = true,
      .barrier_name = "BARRIER",
      .clock = clock,
      .log = {.sink = [](tasktree::LogLevel, std::string_view) {}, .level = tasktree::LogLevel::trace},
      .observer = observer,
  };
  Options<> to{.process_dataset = [](std::string_view, std::int64_t) { return CompletionCallbackResult{}; }};
  tasktree::detail::carry_shared_options(std::move(from), to, &Options<>::max_workers);
  CHECK(to.datasets == std::vector<std::string>{"a", "a/b"});
  CHECK_FALSE(to.priority.is_name_order());
  CHECK(to.max_workers == tasktree::default_max_workers());  // excepted
  CHECK(from.max_workers == 7);
  CHECK(to.interval_nanos(0, "a", 1) == 5);
  CHECK(to.stop_token == stop.get_token());
  CHECK(to.enable_barriers == true);
  CHECK(to.barrier_name == "BARRIER");
  CHECK(to.clock == clock);
  CHECK(to.log.level == tasktree::LogLevel::trace);
  CHECK(to.observer == observer);
  CHECK(static_cast<bool>(to.process_dataset));  // never carried: each layer wraps its own job
  CHECK(from.task_name == "replicate");          // not shared with the core
  CHECK(from.skip_on_error == tasktree::SkipOnError::tree);
}

TEST_CASE("ProcessDataset stores either form of the job and passes the stop token to the three-argument one") {
  std::stop_source stop;
  const tasktree::ProcessDataset two = [](std::string_view dataset, std::int64_t submit_count) {
    return CompletionCallbackResult{.no_skip = dataset == "a" && submit_count == 3, .fail = false};
  };
  const tasktree::ProcessDataset three = [](std::string_view, std::int64_t, const std::stop_token& token) {
    return CompletionCallbackResult{.no_skip = token.stop_requested(), .fail = true};
  };
  CHECK_FALSE(static_cast<bool>(tasktree::ProcessDataset{}));
  stop.request_stop();
  tasktree::InFlight in_flight({}, 0, {}, nullptr);
  tasktree::CompletionCallback first = two("a", 3, stop.get_token());
  tasktree::CompletionCallback second = three("b", 1, stop.get_token());
  const CompletionCallbackResult a = first(in_flight);
  const CompletionCallbackResult b = second(in_flight);
  CHECK(a.no_skip);
  CHECK_FALSE(a.fail);
  CHECK(b.no_skip);  // the token it was given was stopped
  CHECK(b.fail);
}
