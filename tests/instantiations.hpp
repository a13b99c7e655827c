#pragma once
// The library's templates that most test programs instantiate with the same arguments, compiled
// once per build in tests/instantiations.cpp (the tasktree_test_instantiations library, which
// every test program that uses the precompiled header links) instead of in every test program.
// An explicit instantiation declaration keeps a translation unit from emitting these members: at
// -O0 (the asan and clang presets) it does not instantiate them at all, which halved the object
// code of a test program and took 40% off its compile time; optimizing builds may still
// instantiate an inline member to inline it. Included by the precompiled header (support.hpp).

#include <tasktree/policy.hpp>
#include <tasktree/tasktree.hpp>

#ifndef TASKTREE_TEST_INSTANTIATE
#define TASKTREE_TEST_EXTERN extern
#else
#define TASKTREE_TEST_EXTERN
#endif

TASKTREE_TEST_EXTERN template class tasktree::detail::Coordinator<tasktree::detail::IndexReadyQueue,
                                                                  tasktree::detail::SimpleEnqueue>;
TASKTREE_TEST_EXTERN template class tasktree::detail::Coordinator<tasktree::detail::IndexReadyQueue,
                                                                  tasktree::detail::BarrierEnqueue>;
TASKTREE_TEST_EXTERN template class tasktree::detail::Coordinator<tasktree::detail::ErasedReadyQueue,
                                                                  tasktree::detail::SimpleEnqueue>;
TASKTREE_TEST_EXTERN template class tasktree::detail::Coordinator<tasktree::detail::ErasedReadyQueue,
                                                                  tasktree::detail::BarrierEnqueue>;
TASKTREE_TEST_EXTERN template class tasktree::ParallelTaskTree<tasktree::DefaultExecutor>;
TASKTREE_TEST_EXTERN template class tasktree::ParallelTaskTree<tasktree::SynchronousExecutor>;
TASKTREE_TEST_EXTERN template class tasktree::detail::FaultTolerantRun<tasktree::DefaultExecutor>;
TASKTREE_TEST_EXTERN template class tasktree::detail::FaultTolerantRun<tasktree::SynchronousExecutor>;
TASKTREE_TEST_EXTERN template bool tasktree::process_datasets_in_parallel_and_fault_tolerant<tasktree::DefaultExecutor>(
    tasktree::FaultTolerantOptions<tasktree::DefaultExecutor>, tasktree::FaultTolerantStats&);
TASKTREE_TEST_EXTERN template bool
tasktree::process_datasets_in_parallel_and_fault_tolerant<tasktree::SynchronousExecutor>(
    tasktree::FaultTolerantOptions<tasktree::SynchronousExecutor>, tasktree::FaultTolerantStats&);

#undef TASKTREE_TEST_EXTERN
