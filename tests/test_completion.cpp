// Tests for include/tasktree/completion.hpp: CompletionCallback and the InFlight view.

#include "catch.hpp"

#include <tasktree/completion.hpp>

#include <array>
#include <memory>
#include <stop_token>
#include <string>
#include <vector>

using tasktree::CompletionCallback;
using tasktree::CompletionCallbackResult;
using tasktree::InFlight;

namespace {

InFlight empty_view() { return InFlight({}, 0, {}, nullptr); }

}  // namespace

TEST_CASE("a default CompletionCallback is empty") {
  CompletionCallback callback;
  CHECK_FALSE(static_cast<bool>(callback));
}

TEST_CASE("a CompletionCallbackResult converts to a callback returning it") {
  CompletionCallback callback = CompletionCallbackResult{.no_skip = false, .fail = true};
  REQUIRE(static_cast<bool>(callback));
  auto view = empty_view();
  CHECK(callback(view) == CompletionCallbackResult{.no_skip = false, .fail = true});
  CHECK(callback(view) == CompletionCallbackResult{.no_skip = false, .fail = true});
}

TEST_CASE("small callables are stored inline and large ones on the heap; both behave the same") {
  auto view = empty_view();
  SECTION("small") {
    int calls = 0;
    CompletionCallback callback([&calls](InFlight&) {
      ++calls;
      return CompletionCallbackResult{.no_skip = true, .fail = calls > 1};
    });
    CHECK(callback(view) == CompletionCallbackResult{.no_skip = true, .fail = false});
    CHECK(callback(view) == CompletionCallbackResult{.no_skip = true, .fail = true});
  }
  SECTION("small and trivially copyable: moves keep the captured values") {
    int expected = 42;  // not const: a constant would not need capturing
    bool fail = true;
    CompletionCallback first(
        [expected, fail](InFlight&) { return CompletionCallbackResult{.no_skip = expected == 42, .fail = fail}; });
    CompletionCallback second(std::move(first));
    CompletionCallback third;
    third = std::move(second);
    CHECK_FALSE(static_cast<bool>(second));  // NOLINT(bugprone-use-after-move): checking the moved-from state
    CHECK(third(view) == CompletionCallbackResult{.no_skip = true, .fail = true});
  }
  SECTION("large") {
    std::array<char, 200> big{};
    big[199] = 1;
    CompletionCallback callback([big](InFlight&) { return CompletionCallbackResult{.no_skip = big[199] == 1}; });
    CHECK(callback(view).no_skip);
  }
}

TEST_CASE("CompletionCallback is move-only and destroys its callable exactly once") {
  auto token = std::make_shared<int>(7);
  std::weak_ptr<int> watch = token;
  auto view = empty_view();
  {
    CompletionCallback first(
        [owned = std::move(token)](InFlight&) { return CompletionCallbackResult{.no_skip = *owned == 7}; });
    CHECK_FALSE(watch.expired());
    CompletionCallback second(std::move(first));
    CHECK_FALSE(static_cast<bool>(first));  // NOLINT(bugprone-use-after-move): checking the moved-from state
    CHECK(second(view).no_skip);
    CompletionCallback third;
    third = std::move(second);
    CHECK(third(view).no_skip);
    CHECK_FALSE(watch.expired());
    third.reset();
    CHECK(watch.expired());
    CHECK_FALSE(static_cast<bool>(third));
  }
  SECTION("assignment over a live callable destroys the old one") {
    auto other = std::make_shared<int>(1);
    std::weak_ptr<int> watch_other = other;
    CompletionCallback callback([o = std::move(other)](InFlight&) { return CompletionCallbackResult{}; });
    callback = CompletionCallback(CompletionCallbackResult{});
    CHECK(watch_other.expired());
  }
  SECTION("a large callable moves without copying") {
    auto owned = std::make_unique<std::array<int, 100>>();
    CompletionCallback callback(
        [p = std::move(owned)](InFlight&) { return CompletionCallbackResult{.no_skip = p != nullptr}; });
    CompletionCallback moved(std::move(callback));
    CHECK(moved(view).no_skip);
  }
  static_assert(!std::is_copy_constructible_v<CompletionCallback>);
  static_assert(std::is_nothrow_move_constructible_v<CompletionCallback>);
}

TEST_CASE("InFlight lists the datasets in its slots and forwards stop requests") {
  const std::vector<std::string> names{"a", "b", "c", "d"};
  const std::vector<std::uint32_t> slots{InFlight::free_slot, 2, InFlight::free_slot, 0, 3, InFlight::free_slot};
  std::stop_source stop;
  InFlight view(slots, 3, names, &stop);
  CHECK(view.size() == 3);
  CHECK_FALSE(view.empty());
  CHECK(std::vector<std::string>(view.begin(), view.end()) == std::vector<std::string>{"c", "a", "d"});
  CHECK_FALSE(view.stop_requested());
  view.request_stop();
  CHECK(stop.stop_requested());
  CHECK(view.stop_requested());
  SECTION("an empty view") {
    const std::vector<std::uint32_t> free_only{InFlight::free_slot, InFlight::free_slot};
    InFlight none(free_only, 0, names, nullptr);
    CHECK(none.empty());
    CHECK(none.begin() == none.end());
    none.request_stop();  // no stop source: harmless
    CHECK_FALSE(none.stop_requested());
  }
}
