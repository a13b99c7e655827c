// Tests for include/tasktree/dataset_trie.hpp: shape, child order, name validation, scale.

#include "catch.hpp"

#include <tasktree/dataset_trie.hpp>
#include <tasktree/detail/sort_names.hpp>

#include <fmt/format.h>

#include <algorithm>
#include <cstdint>
#include <optional>
#include <random>
#include <stdexcept>
#include <string>
#include <vector>

using tasktree::DatasetTrie;
using Node = DatasetTrie::NodeIndex;

namespace {

/// Paths of `node`'s children, in child order.
std::vector<std::string> children(const DatasetTrie& trie, Node node) {
  std::vector<std::string> paths;
  for (Node child = trie.first_child(node); child != DatasetTrie::npos; child = trie.next_sibling(child)) {
    paths.emplace_back(trie.path(child));
  }
  return paths;
}

/// Jobs met by a pre-order walk (iterative), i.e. the order the scheduler enqueues them in.
std::vector<std::string> preorder_jobs(const DatasetTrie& trie) {
  std::vector<std::string> jobs;
  std::vector<Node> stack{DatasetTrie::root};
  while (!stack.empty()) {
    const Node node = stack.back();
    stack.pop_back();
    if (trie.is_job(node)) jobs.emplace_back(trie.datasets()[trie.dataset(node)]);
    std::vector<Node> kids;
    for (Node child = trie.first_child(node); child != DatasetTrie::npos; child = trie.next_sibling(child)) {
      kids.push_back(child);
    }
    stack.insert(stack.end(), kids.rbegin(), kids.rend());
  }
  return jobs;
}

std::string message_of(const std::vector<std::string>& names, std::string_view barrier = "~") {
  try {
    DatasetTrie trie(names, barrier);
  } catch (const std::invalid_argument& e) {
    return e.what();
  }
  return "no exception";
}

}  // namespace

TEST_CASE("an empty trie has only the root") {
  const std::vector<std::string> none;
  const DatasetTrie trie(none);
  CHECK(trie.size() == 1);
  CHECK(trie.dataset_count() == 0);
  CHECK(trie.first_child(DatasetTrie::root) == DatasetTrie::npos);
  CHECK(trie.parent(DatasetTrie::root) == DatasetTrie::npos);
  CHECK_FALSE(trie.has_siblings());
  CHECK_FALSE(trie.has_barriers());
  CHECK_FALSE(trie.is_job(DatasetTrie::root));
  CHECK(trie.path(DatasetTrie::root).empty());
}

TEST_CASE("each distinct path prefix is one node; job nodes know their dataset") {
  const std::vector<std::string> names{"a", "a/b/c", "a/d", "e/f"};
  const DatasetTrie trie(names);
  // root, a, a/b, a/b/c, a/d, e, e/f
  CHECK(trie.size() == 7);
  CHECK(children(trie, DatasetTrie::root) == std::vector<std::string>{"a", "e"});
  const Node a = trie.find("a");
  REQUIRE(a != DatasetTrie::npos);
  CHECK(trie.is_job(a));
  CHECK(trie.dataset(a) == 0);
  CHECK(children(trie, a) == std::vector<std::string>{"a/b", "a/d"});
  const Node ab = trie.find("a/b");
  CHECK_FALSE(trie.is_job(ab));
  CHECK(trie.dataset(ab) == DatasetTrie::npos);
  CHECK(trie.parent(ab) == a);
  CHECK(trie.dataset(trie.find("a/b/c")) == 1);
  CHECK(trie.dataset(trie.find("a/d")) == 2);
  CHECK_FALSE(trie.is_job(trie.find("e")));
  CHECK(trie.dataset(trie.find("e/f")) == 3);
  CHECK(trie.find("a/x") == DatasetTrie::npos);
  CHECK(trie.component(trie.find("a/b/c")) == "c");
  CHECK(trie.child_count(a) == 2);
  CHECK(trie.has_siblings());
}

TEST_CASE("a chain has no siblings; two roots are siblings") {
  const std::vector<std::string> chain{"a", "a/b", "a/b/c"};
  CHECK_FALSE(DatasetTrie(chain).has_siblings());
  const std::vector<std::string> two_roots{"a", "b"};
  CHECK(DatasetTrie(two_roots).has_siblings());
  const std::vector<std::string> fork_below_intermediate{"x/a", "x/b"};
  CHECK(DatasetTrie(fork_below_intermediate).has_siblings());
}

TEST_CASE("children are ordered by the smallest dataset below them, so '-' and '.' sort before '/'") {
  SECTION("an intermediate child whose name is a prefix of a sibling comes after it") {
    // Sorted: x/a-c < x/a.d < x/a/b. Node x/a has no job, so its first dataset is x/a/b.
    const std::vector<std::string> names{"x/a-c", "x/a.d", "x/a/b"};
    const DatasetTrie trie(names);
    CHECK(children(trie, trie.find("x")) == std::vector<std::string>{"x/a-c", "x/a.d", "x/a"});
    CHECK(preorder_jobs(trie) == names);
  }
  SECTION("a job child whose children arrive after its '-' siblings keeps its place and gets them") {
    // Sorted: p/a < p/a-c < p/a/b: node p/a is a job created first; its child arrives later.
    const std::vector<std::string> names{"p/a", "p/a-c", "p/a/b"};
    const DatasetTrie trie(names);
    CHECK(trie.size() == 5);  // root, p, p/a, p/a-c, p/a/b
    CHECK(children(trie, trie.find("p")) == std::vector<std::string>{"p/a", "p/a-c"});
    CHECK(children(trie, trie.find("p/a")) == std::vector<std::string>{"p/a/b"});
    CHECK(trie.parent(trie.find("p/a/b")) == trie.find("p/a"));
  }
  SECTION("several parked jobs at one level resume in reverse order") {
    const std::vector<std::string> names{"a", "a-", "a--", "a--/x", "a-/y", "a/z", "b"};
    const DatasetTrie trie(names);
    CHECK(trie.size() == 1 + 7);
    CHECK(children(trie, DatasetTrie::root) == std::vector<std::string>{"a", "a-", "a--", "b"});
    CHECK(children(trie, trie.find("a")) == std::vector<std::string>{"a/z"});
    CHECK(children(trie, trie.find("a-")) == std::vector<std::string>{"a-/y"});
    CHECK(children(trie, trie.find("a--")) == std::vector<std::string>{"a--/x"});
  }
  SECTION("a parked job that is passed over for good is dropped, and deeper levels still work") {
    const std::vector<std::string> names{"r/a", "r/a-b", "r/a-b/c", "r/a0", "r/a0/d/e", "r/a0/d/f"};
    const DatasetTrie trie(names);
    CHECK(children(trie, trie.find("r")) == std::vector<std::string>{"r/a", "r/a-b", "r/a0"});
    CHECK(trie.first_child(trie.find("r/a")) == DatasetTrie::npos);
    CHECK(children(trie, trie.find("r/a0/d")) == std::vector<std::string>{"r/a0/d/e", "r/a0/d/f"});
  }
}

TEST_CASE("job nodes are numbered in name order, also where parked jobs resume") {
  // The default ready queue pops the smallest node index and relies on this.
  const std::vector<std::string> names{"a",     "a-",  "a--",   "a--/x", "a-/y", "a/b/c",
                                       "a/b/d", "a/z", "b/c/d", "b/c/e", "b/d",  "b0"};
  const DatasetTrie trie(names);
  std::vector<std::uint32_t> datasets_by_node;
  for (Node node = 0; node < trie.size(); ++node) {
    if (trie.is_job(node)) datasets_by_node.push_back(trie.dataset(node));
  }
  CHECK(datasets_by_node.size() == names.size());
  CHECK(std::is_sorted(datasets_by_node.begin(), datasets_by_node.end()));
}

TEST_CASE("random names with '-' and '.' beside '/': one node per distinct path prefix, each found by its path") {
  // The build grows its array as the names need: first to a guess from the nodes per name so far,
  // then, if that falls short, to a bound on the node count (exact but where parked jobs resume);
  // names that park and resume jobs at many levels check that the bound holds and the trie is
  // right, and that the array is cut to the nodes used.
  std::uint32_t seed = 12345;
  const auto next = [&seed](std::uint32_t below) {
    seed = seed * 1664525u + 1013904223u;
    return (seed >> 16) % below;
  };
  const std::string alphabet = "ab-./";
  for (int round = 0; round < 300; ++round) {
    std::vector<std::string> names;
    const std::uint32_t count = 1 + next(40);
    for (std::uint32_t i = 0; i < count; ++i) {
      std::string name(1, 'a' + static_cast<char>(next(2)));
      const std::uint32_t length = next(9);
      for (std::uint32_t j = 0; j < length; ++j) {
        const char c = alphabet[next(static_cast<std::uint32_t>(alphabet.size()))];
        if (c == '/' && name.back() == '/') continue;
        name += c;
      }
      if (name.back() == '/') name.pop_back();
      names.push_back(name);
    }
    std::sort(names.begin(), names.end());
    names.erase(std::unique(names.begin(), names.end()), names.end());
    std::vector<std::string> prefixes;  // every path prefix of every name, ending at a component
    for (const std::string& name : names) {
      for (std::size_t at = name.find('/'); at != std::string::npos; at = name.find('/', at + 1)) {
        prefixes.push_back(name.substr(0, at));
      }
      prefixes.push_back(name);
    }
    std::sort(prefixes.begin(), prefixes.end());
    prefixes.erase(std::unique(prefixes.begin(), prefixes.end()), prefixes.end());
    INFO("names: " << Catch::Detail::stringify(names));
    const DatasetTrie trie(names);
    REQUIRE(trie.size() == prefixes.size() + 1);
    for (const std::string& prefix : prefixes) {
      const Node node = trie.find(prefix);
      REQUIRE(node != DatasetTrie::npos);
      CHECK(trie.path(node) == prefix);
      CHECK(trie.is_job(node) == std::binary_search(names.begin(), names.end(), prefix));
    }
    std::vector<std::uint32_t> datasets_by_node;
    for (Node node = 0; node < trie.size(); ++node) {
      if (trie.is_job(node)) datasets_by_node.push_back(trie.dataset(node));
    }
    CHECK(datasets_by_node.size() == names.size());
    CHECK(std::is_sorted(datasets_by_node.begin(), datasets_by_node.end()));
  }
}

TEST_CASE("the node array grows as the names need, whichever part of them adds the most nodes") {
  // Past the names the array first has room for, one node each, it grows to a guess from the
  // nodes per name so far, and to an exact bound if the guess falls short (deep names after flat
  // ones), or is cut to size at the end if it was too large (flat names after deep ones).
  const auto flat = [](int count, std::vector<std::string>& names) {
    for (int i = 0; i < count; ++i) names.push_back(fmt::format("f{:05}", i));
  };
  const auto deep = [](int count, std::vector<std::string>& names) {
    for (int i = 0; i < count; ++i) names.push_back(fmt::format("z{:05}/a/b/c/d/e", i));
  };
  for (const bool flat_first : {true, false}) {
    std::vector<std::string> names;
    if (flat_first) {
      flat(5000, names);
      deep(1000, names);
    } else {
      deep(1000, names);
      flat(5000, names);
    }
    std::sort(names.begin(), names.end());  // "f..." before "z...": deep first needs other names
    if (!flat_first) {
      for (std::string& name : names) {
        if (name.front() == 'f') name.front() = '~';  // sorts after 'z'
      }
      std::sort(names.begin(), names.end());
    }
    INFO("flat names first: " << flat_first);
    const DatasetTrie trie(names);
    CHECK(trie.size() == 1 + 5000 + 1000 * 6);
    CHECK(trie.dataset_count() == names.size());
    // Every 37th name (`find` walks the root's 6,000 children: all of them would be slow under TSan).
    for (std::size_t i = 0; i < names.size(); i += 37) {
      const std::string& name = names[i];
      const Node node = trie.find(name);
      REQUIRE(node != DatasetTrie::npos);
      CHECK(trie.is_job(node));
      CHECK(trie.datasets()[trie.dataset(node)] == name);
    }
    CHECK(trie.path(trie.find("z00042/a/b")) == "z00042/a/b");
    CHECK_FALSE(trie.is_job(trie.find("z00999/a/b/c/d")));
    CHECK(trie.is_job(trie.find("z00999/a/b/c/d/e")));
  }
}

TEST_CASE("barrier nodes are marked, never jobs, and detected") {
  const std::vector<std::string> names{"h/snap", "h/snap/r1", "h/snap/r2", "h/snap/~/prune"};
  const DatasetTrie trie(names);
  CHECK(trie.has_barriers());
  const Node barrier = trie.find("h/snap/~");
  REQUIRE(barrier != DatasetTrie::npos);
  CHECK(trie.is_barrier(barrier));
  CHECK_FALSE(trie.is_job(barrier));
  CHECK_FALSE(trie.is_only_child(barrier));
  CHECK(trie.barrier_name() == "~");
  SECTION("with a custom barrier name, '~' is an ordinary component") {
    const std::vector<std::string> custom{"a/BARRIER/c", "a/~/b"};
    const DatasetTrie with_custom(custom, "BARRIER");
    CHECK(with_custom.has_barriers());
    CHECK(with_custom.is_barrier(with_custom.find("a/BARRIER")));
    CHECK_FALSE(with_custom.is_barrier(with_custom.find("a/~")));
  }
}

TEST_CASE("count_jobs_below counts job nodes strictly below a node") {
  const std::vector<std::string> names{"a", "a/b", "a/b/c", "a/d", "a/~/e", "f"};
  const DatasetTrie trie(names);
  CHECK(trie.count_jobs_below(DatasetTrie::root) == 6);
  CHECK(trie.count_jobs_below(trie.find("a")) == 4);
  CHECK(trie.count_jobs_below(trie.find("a/b")) == 1);
  CHECK(trie.count_jobs_below(trie.find("a/~")) == 1);
  CHECK(trie.count_jobs_below(trie.find("f")) == 0);
}

TEST_CASE("invalid dataset names are rejected with a message naming them") {
  CHECK(message_of({""}) == "tasktree: invalid dataset name \"\": it is empty");
  CHECK(message_of({"/a"}) == "tasktree: invalid dataset name \"/a\": it starts with '/'");
  CHECK(message_of({"a/"}) == "tasktree: invalid dataset name \"a/\": it ends with '/'");
  CHECK(message_of({"a//b"}) == "tasktree: invalid dataset name \"a//b\": it has an empty component");
  CHECK(message_of({"/"}) == "tasktree: invalid dataset name \"/\": it starts with '/'");
  CHECK(message_of({"a", "a"}) == "tasktree: duplicate dataset name \"a\"");
  CHECK(message_of({"b", "a"}) == "tasktree: datasets are not sorted: \"a\" comes after \"b\"");
  CHECK(message_of({"a/~"}) ==
        "tasktree: invalid dataset name \"a/~\": its last component is the barrier name \"~\", so it could never run");
  CHECK(message_of({"~"}) ==
        "tasktree: invalid dataset name \"~\": its last component is the barrier name \"~\", so it could never run");
  CHECK(message_of({"a/b", "a/B/x"}, "B").find("not sorted") != std::string::npos);
  CHECK(message_of({"a/B"}, "B").find("its last component is the barrier name \"B\"") != std::string::npos);
  CHECK(message_of({"a"}, "") == "tasktree: invalid barrier_name \"\": it must not be empty");
  CHECK(message_of({"a"}, "x/y") == "tasktree: invalid barrier_name \"x/y\": it must not contain '/'");
  SECTION("control characters are shown escaped") {
    CHECK(message_of({std::string("a\n/")}) == "tasktree: invalid dataset name \"a\\n/\": it ends with '/'");
  }
}

TEST_CASE("a chain 100,000 levels deep builds without recursion") {
  // Jobs at depths 1, 50,000 and 100,000; every other level is an intermediate node. (A job at
  // every level would need 10 GB of names: the input itself grows with the square of the depth.)
  constexpr std::size_t depth = 100'000;
  std::string deepest_name = "n";
  for (std::size_t i = 1; i < depth; ++i) deepest_name += "/n";
  const std::vector<std::string> names{"n", deepest_name.substr(0, 2 * (depth / 2) - 1), deepest_name};
  const DatasetTrie trie(names);
  CHECK(trie.size() == depth + 1);
  CHECK_FALSE(trie.has_siblings());
  CHECK(trie.count_jobs_below(DatasetTrie::root) == 3);
  Node deepest = DatasetTrie::root;
  std::size_t levels = 0;
  while (trie.first_child(deepest) != DatasetTrie::npos) {
    deepest = trie.first_child(deepest);
    ++levels;
  }
  CHECK(levels == depth);
  CHECK(trie.dataset(deepest) == 2);
  CHECK(trie.path(deepest) == deepest_name);
  CHECK(trie.dataset(trie.find(names[1])) == 1);
}

TEST_CASE("one million siblings share one parent") {
  constexpr std::size_t count = 1'000'000;
  std::vector<std::string> names;
  names.reserve(count);
  for (std::size_t i = 0; i < count; ++i) names.push_back(fmt::format("pool/{:07}", i));
  const DatasetTrie trie(names);
  CHECK(trie.size() == count + 2);
  CHECK(trie.child_count(trie.find("pool")) == count);
  CHECK(trie.count_jobs_below(DatasetTrie::root) == count);
}

// docs/semantics.md §3: datasets may arrive in any order. The tree builds sorted input in one walk
// and learns from that walk, without an exception, when the input must be sorted first.
TEST_CASE("build_if_sorted builds sorted input and returns nothing for unsorted input") {
  const std::vector<std::string> sorted{"a", "a/b", "c/d"};
  const std::optional<DatasetTrie> trie = DatasetTrie::build_if_sorted(sorted);
  REQUIRE(trie.has_value());
  CHECK(children(*trie, DatasetTrie::root) == std::vector<std::string>{"a", "c"});
  CHECK(preorder_jobs(*trie) == sorted);

  const std::vector<std::string> unsorted{"c/d", "a", "a/b"};
  CHECK_FALSE(DatasetTrie::build_if_sorted(unsorted).has_value());
  // Unsorted with an intermediate node, which stops the first pass early.
  const std::vector<std::string> unsorted_deep{"x/y/z", "x/y/w", "a"};
  CHECK_FALSE(DatasetTrie::build_if_sorted(unsorted_deep).has_value());
}

TEST_CASE("build_if_sorted rejects invalid sorted input as the constructor does") {
  const auto message = [](const std::vector<std::string>& names, std::string_view barrier = "~") -> std::string {
    try {
      (void)DatasetTrie::build_if_sorted(names, barrier);
    } catch (const std::invalid_argument& e) {
      return e.what();
    }
    return "no exception";
  };
  for (const std::vector<std::string>& names : std::vector<std::vector<std::string>>{
           {"a", "a"}, {"a", "a//b"}, {"", "a"}, {"a", "b/"}, {"a", "a/~"}}) {
    CAPTURE(names);
    CHECK(message(names) == message_of(names));
    CHECK(message(names) != "no exception");
  }
  CHECK(message({"a"}, "x/y") == message_of({"a"}, "x/y"));
  // Out of order and invalid: nothing is returned, so that the caller sorts and reports the error
  // a sorted list gives.
  const std::vector<std::string> unsorted_invalid{"b", "a/", "a"};
  CHECK_FALSE(DatasetTrie::build_if_sorted(unsorted_invalid).has_value());
}

TEST_CASE("sort_names puts names in the order std::sort gives them, whatever their bytes") {
  // Ties on eight bytes at a time are what the sort works through: names that share prefixes of
  // 0 to 40 bytes, end inside or at the end of an 8-byte word, hold NUL and bytes from 0x80 up,
  // are empty, or repeat.
  std::mt19937_64 random(20261208);
  const std::string alphabet{'a', 'b', '/', '\0', '\xff', '\x80'};
  std::vector<std::string> names{"", "", "a", std::string("a\0", 2), std::string("a\0\0\0\0\0\0\0\0", 9), "a/b/c/d/", "a/b/c/d"};
  for (int i = 0; i < 5000; ++i) {
    std::string name(random() % 41, 'p');  // a shared prefix of 0..40 bytes
    const std::size_t extra = random() % 12;
    for (std::size_t j = 0; j < extra; ++j) name.push_back(alphabet[random() % alphabet.size()]);
    names.push_back(name);
    if (random() % 10 == 0) names.push_back(name);  // a duplicate
  }
  std::shuffle(names.begin(), names.end(), random);
  std::vector<std::string> expected = names;
  std::sort(expected.begin(), expected.end());
  tasktree::detail::sort_names(names);
  CHECK(names == expected);

  std::vector<std::string> none;
  tasktree::detail::sort_names(none);
  CHECK(none.empty());
  std::vector<std::string> reversed{"c", "b", "a/b", "a"};
  tasktree::detail::sort_names(reversed);
  CHECK(reversed == std::vector<std::string>{"a", "a/b", "b", "c"});
}
