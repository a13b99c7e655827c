#pragma once
/// @file tasktree.hpp
/// @brief Umbrella header: everything in tasktree: the core and the fault-tolerant policy layer.
///
/// tasktree runs many jobs named by slash-separated paths in parallel, each job starting only
/// after the jobs above it on its path have completed, with barriers that wait for whole
/// subtrees, strict priority among ready jobs, pacing, termination and caller-defined failure
/// policies. Start with `tasktree::ParallelTaskTree`, or with
/// `tasktree::process_datasets_in_parallel_and_fault_tolerant()` for retries and a ready-made
/// failure policy.

#include <tasktree/clock.hpp>
#include <tasktree/completion.hpp>
#include <tasktree/dataset_trie.hpp>
#include <tasktree/executor.hpp>
#include <tasktree/log.hpp>
#include <tasktree/observer.hpp>
#include <tasktree/options.hpp>
#include <tasktree/parallel_task_tree.hpp>
#include <tasktree/policy.hpp>
#include <tasktree/priority.hpp>
#include <tasktree/retry.hpp>
#include <tasktree/thread_pool.hpp>
#include <tasktree/version.hpp>
