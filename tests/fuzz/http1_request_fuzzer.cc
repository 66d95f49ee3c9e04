// libFuzzer target: the HTTP/1 parser in request mode (bytes from clients).
// See http1_fuzz_driver.h for the input layout and the invariants checked.
#include <cstddef>
#include <cstdint>

#include "tests/fuzz/http1_fuzz_driver.h"

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  sluice::http::fuzz::RunOne(sluice::http::Http1Parser::Mode::kRequest, data,
                             size);
  return 0;
}
