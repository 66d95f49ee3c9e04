// Whether pages of this process's memory are resident: for tests of code
// that gives memory back to the kernel (madvise).
#ifndef SLUICE_TESTS_HARNESS_RESIDENT_H_
#define SLUICE_TESTS_HARNESS_RESIDENT_H_

#include <cstddef>

namespace sluice::testing {

// How many pages of [p, p + bytes) are resident (mincore(2)); `p` is
// page-aligned. SIZE_MAX when mincore fails.
size_t ResidentPages(const void* p, size_t bytes);

}  // namespace sluice::testing

#endif  // SLUICE_TESTS_HARNESS_RESIDENT_H_
