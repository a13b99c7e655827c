// Tests for include/tasktree/priority.hpp (and the ready queue behind it): docs/semantics.md §4.5.

#include "catch.hpp"
#include "support.hpp"

#include <tasktree/tasktree.hpp>

#include <array>
#include <cmath>
#include <cstdint>
#include <limits>
#include <map>
#include <memory>
#include <set>
#include <string>
#include <tuple>
#include <utility>
#include <vector>

using namespace tasktree_test;
using tasktree::CompletionCallbackResult;
using tasktree::ParallelTaskTree;
using tasktree::SynchronousExecutor;

namespace {

/// Runs inline with one worker and the given priority; returns the order jobs ran in.
std::vector<std::string> order_with(std::vector<std::string> datasets, tasktree::Priority priority) {
  std::vector<std::string> order;
  ParallelTaskTree<SynchronousExecutor> tree({
      .datasets = std::move(datasets),
      .process_dataset =
          [&](std::string_view dataset, std::int64_t) {
            order.emplace_back(dataset);
            return CompletionCallbackResult{};
          },
      .priority = std::move(priority),
      .max_workers = 1,
  });
  tree.process_datasets_in_parallel();
  return order;
}

}  // namespace

TEST_CASE("the default priority is the dataset name") {
  const tasktree::Priority priority;
  CHECK(priority.is_name_order());
  CHECK(order_with({"c", "b", "a", "b/a"}, priority) == std::vector<std::string>{"a", "b", "b/a", "c"});
}

TEST_CASE("a custom priority orders available jobs by key, smallest first, parents still first") {
  const std::map<std::string, int, std::less<>> size{{"a", 1}, {"b", 5}, {"c", 3}, {"c/x", 9}, {"d", 4}};
  const auto largest_first = [&](std::string_view dataset) { return -size.find(dataset)->second; };
  CHECK_FALSE(tasktree::Priority(largest_first).is_name_order());
  // c/x (9) is the largest but only becomes available after c.
  CHECK(order_with({"a", "b", "c", "c/x", "d"}, largest_first) == std::vector<std::string>{"b", "d", "c", "c/x", "a"});
}

TEST_CASE("ties break by dataset name") {
  CHECK(order_with({"d", "c", "b", "a"}, [](std::string_view) { return 0; }) ==
        std::vector<std::string>{"a", "b", "c", "d"});
  const auto by_parity = [](std::string_view dataset) { return (dataset.back() - '0') % 2; };
  CHECK(order_with({"1", "2", "3", "4", "5"}, by_parity) == std::vector<std::string>{"2", "4", "1", "3", "5"});
}

TEST_CASE("any totally ordered key type works") {
  const std::vector<std::string> datasets{"aa", "b", "ccc", "dddd"};
  SECTION("double") {
    CHECK(order_with(datasets, [](std::string_view d) { return 1.0 / static_cast<double>(d.size()); }) ==
          std::vector<std::string>{"dddd", "ccc", "aa", "b"});
  }
  SECTION("std::string") {
    CHECK(order_with(datasets, [](std::string_view d) { return std::string(d.rbegin(), d.rend()); }) ==
          std::vector<std::string>{"aa", "b", "ccc", "dddd"});
    CHECK(order_with({"ab", "ba"}, [](std::string_view d) { return std::string(d.rbegin(), d.rend()); }) ==
          std::vector<std::string>{"ba", "ab"});
  }
  SECTION("std::tuple") {
    CHECK(order_with(datasets, [](std::string_view d) {
            return std::tuple<bool, std::size_t>(d.size() % 2 == 0, d.size());
          }) == std::vector<std::string>{"b", "ccc", "aa", "dddd"});
  }
  SECTION("unsigned and extreme integers") {
    CHECK(order_with({"x", "y"}, [](std::string_view d) {
            return d == "x" ? std::numeric_limits<std::uint64_t>::max() : std::uint64_t{0};
          }) == std::vector<std::string>{"y", "x"});
  }
}

TEST_CASE("priority is called exactly once per job, in name order within one step") {
  // Several jobs become available at once through intermediate nodes, including names where
  // '-' and '.' sort before '/'.
  const std::vector<std::string> datasets{"r",   "r/a/b",   "r/a-c",   "r/a.d/e", "r/a/f/g",
                                          "r/b", "r/b/c-d", "r/b/c/d", "s-t",     "s/u"};
  std::vector<std::string> calls;
  int counter = 0;
  const auto counting = [&](std::string_view dataset) {
    calls.emplace_back(dataset);
    return counter++;  // a counter as priority: jobs run in the order they became available
  };
  const auto order = order_with(datasets, counting);
  CHECK(calls.size() == datasets.size());
  // Start: roots r, s-t, s/u. After r: r/a-c, r/a.d/e, r/a/b, r/a/f/g, r/b (name order). After
  // r/b: r/b/c-d, r/b/c/d.
  CHECK(calls == std::vector<std::string>{"r", "s-t", "s/u", "r/a-c", "r/a.d/e", "r/a/b", "r/a/f/g", "r/b", "r/b/c-d",
                                          "r/b/c/d"});
  CHECK(order == calls);
}

TEST_CASE("priority runs on the coordinator thread") {
  const auto coordinator = std::this_thread::get_id();
  std::atomic<int> elsewhere = 0;
  std::vector<std::string> datasets;
  for (int i = 0; i < 100; ++i) datasets.push_back(fmt::format("p/{}", i));
  ParallelTaskTree tree({
      .datasets = datasets,
      .process_dataset = [](std::string_view, std::int64_t) { return CompletionCallbackResult{}; },
      .priority =
          [&](std::string_view dataset) {
            if (std::this_thread::get_id() != coordinator) ++elsewhere;
            return dataset.size();
          },
      .max_workers = 4,
  });
  CHECK_FALSE(tree.process_datasets_in_parallel());
  CHECK(elsewhere == 0);
}

TEST_CASE("a NaN priority is rejected naming the dataset") {
  ParallelTaskTree<SynchronousExecutor> tree({
      .datasets = {"a", "b"},
      .process_dataset = [](std::string_view, std::int64_t) { return CompletionCallbackResult{}; },
      .priority = [](std::string_view dataset) { return dataset == "b" ? std::nan("") : 1.0; },
      .max_workers = 1,
  });
  CHECK_THROWS_WITH(tree.process_datasets_in_parallel(), "tasktree: priority of dataset \"b\" is NaN");
}

TEST_CASE("a throwing priority aborts the run before any job starts and the tree stays usable") {
  bool throwing = true;
  int ran = 0;
  ParallelTaskTree<SynchronousExecutor> tree({
      .datasets = {"a", "b"},
      .process_dataset =
          [&](std::string_view, std::int64_t) {
            ++ran;
            return CompletionCallbackResult{};
          },
      .priority =
          [&](std::string_view) {
            if (throwing) throw std::runtime_error("no key");
            return 0;
          },
      .max_workers = 1,
  });
  CHECK_THROWS_WITH(tree.process_datasets_in_parallel(), "no key");
  CHECK(ran == 0);
  throwing = false;
  CHECK_FALSE(tree.process_datasets_in_parallel());
  CHECK(ran == 2);
}

TEST_CASE("Priority::Queue pops the smallest key first, ties by dataset number, and returns the tag") {
  const tasktree::Priority priority([](std::string_view dataset) { return dataset.size(); });
  REQUIRE_FALSE(priority.is_name_order());
  const std::unique_ptr<tasktree::Priority::Queue> queue = priority.make_queue();
  queue->reserve(4);
  CHECK(queue->empty());
  queue->push(3, 30, "ccc");
  queue->push(2, 20, "bb");
  queue->push(1, 10, "a");
  queue->push(0, 5, "dd");
  CHECK(queue->size() == 4);
  std::vector<std::pair<std::uint32_t, std::uint32_t>> popped;
  while (!queue->empty()) popped.push_back(queue->pop());
  CHECK(popped == std::vector<std::pair<std::uint32_t, std::uint32_t>>{{1, 10}, {0, 5}, {2, 20}, {3, 30}});
}

TEST_CASE("Priority::Queue rejects a NaN key naming the dataset and keeps what it had") {
  const tasktree::Priority priority(
      [](std::string_view dataset) { return dataset == "bad" ? std::numeric_limits<double>::quiet_NaN() : 1.0; });
  const std::unique_ptr<tasktree::Priority::Queue> queue = priority.make_queue();
  queue->push(0, 0, "good");
  CHECK_THROWS_WITH(queue->push(1, 1, "bad"), "tasktree: priority of dataset \"bad\" is NaN");
  CHECK(queue->size() == 1);
}

TEST_CASE("a NaN anywhere inside a composite priority key is rejected naming the dataset, and nothing runs") {
  // Regression: only plain floating-point keys were checked; a pair with a NaN broke the heap's
  // order (datasets a..e ran e b a c d where the other keys say e d b a).
  constexpr double nan = std::numeric_limits<double>::quiet_NaN();
  const auto check = [](auto priority, std::string_view expected) {
    std::vector<std::string> ran;
    tasktree::ParallelTaskTree tree({
        .datasets = {"a", "b", "c", "d", "e"},
        .process_dataset =
            [&ran](std::string_view dataset, std::int64_t) {
              ran.emplace_back(dataset);
              return tasktree::CompletionCallbackResult{.no_skip = true, .fail = false};
            },
        .priority = priority,
        .max_workers = 1,
    });
    CHECK_THROWS_WITH(tree.process_datasets_in_parallel(), std::string(expected));
    CHECK(ran.empty());
  };
  check(
      [](std::string_view d) {
        return std::pair<double, int>{d == "c" ? nan : 1.0, 0};
      },
      "tasktree: priority of dataset \"c\" holds a NaN");
  check(
      [](std::string_view d) {
        return std::tuple<int, std::pair<std::string, float>>{
            1, {"x", d == "a" ? std::numeric_limits<float>::quiet_NaN() : 2.f}};
      },
      "tasktree: priority of dataset \"a\" holds a NaN");
  check(
      [](std::string_view d) {
        return std::vector<double>{1.0, d == "e" ? nan : 3.0};
      },
      "tasktree: priority of dataset \"e\" holds a NaN");
  check(
      [](std::string_view d) {
        return std::array<double, 2>{d == "b" ? nan : 0.0, 1.0};
      },
      "tasktree: priority of dataset \"b\" holds a NaN");
  // Keys without a NaN of those types are accepted, strings included.
  CHECK_FALSE(tasktree::detail::contains_nan(std::pair<std::string, double>{"nan", 1.0}));
  CHECK_FALSE(tasktree::detail::contains_nan(std::vector<int>{1, 2}));
  CHECK(tasktree::detail::contains_nan(std::vector<std::pair<int, double>>{{1, 0.0}, {2, nan}}));
}

TEST_CASE("the default ready queue pops the smallest node, also after pushes below the last one popped") {
  // The bitset's pop takes the first bit of a remembered word when it has one; pushes of smaller
  // nodes must move that word back. Checked against std::set over a trie whose bitset has three
  // levels, with bursts of pushes and pops at random places.
  std::vector<std::string> names;
  for (int i = 0; i < 300'000; ++i) names.push_back(fmt::format("d{:06}", i));
  const tasktree::DatasetTrie trie(names);
  tasktree::detail::IndexReadyQueue queue(trie);
  std::set<std::uint32_t> reference;
  std::uint32_t seed = 7;
  const auto next = [&seed](std::uint32_t below) {
    seed = seed * 1664525u + 1013904223u;
    return (seed >> 8) % below;
  };
  for (int round = 0; round < 2'000; ++round) {
    const std::uint32_t pushes = next(40);
    for (std::uint32_t i = 0; i < pushes; ++i) {
      // Mostly near the front (as jobs become available in name order), sometimes anywhere.
      const std::uint32_t near =
          std::min<std::uint32_t>(299'999, next(5'000) + static_cast<std::uint32_t>(round) * 100);
      const std::uint32_t node = 1 + (next(4) == 0 ? next(300'000) : near);
      if (!reference.insert(node).second) continue;
      queue.push(tasktree::detail::ReadyJob{trie.dataset(node), node}, {});
    }
    const std::uint32_t pops = next(40);
    for (std::uint32_t i = 0; i < pops && !reference.empty(); ++i) {
      const tasktree::detail::ReadyJob job = queue.pop();
      REQUIRE(job.node == *reference.begin());
      CHECK(job.dataset == trie.dataset(job.node));
      reference.erase(reference.begin());
    }
    REQUIRE(queue.size() == reference.size());
  }
  while (!reference.empty()) {
    REQUIRE(queue.pop().node == *reference.begin());
    reference.erase(reference.begin());
  }
  CHECK(queue.empty());
}
