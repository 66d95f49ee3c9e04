// libFuzzer target: the HTTP/1 parser in response mode (bytes from upstreams),
// including HEAD responses, interim 1xx responses and bodies read until close.
// See http1_fuzz_driver.h for the input layout and the invariants checked.
#include <cstddef>
#include <cstdint>

#include "tests/fuzz/http1_fuzz_driver.h"

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  sluice::http::fuzz::RunOne(sluice::http::Http1Parser::Mode::kResponse, data,
                             size);
  return 0;
}
