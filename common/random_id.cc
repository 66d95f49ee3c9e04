#include "common/random_id.h"

#include <cstdint>
#include <cstring>
#include <random>

#include "absl/strings/escaping.h"

namespace sluice {

std::string RandomHexId() {
  std::random_device random;
  std::string bytes(16, '\0');
  for (size_t i = 0; i < bytes.size(); i += 4) {
    uint32_t word = random();
    std::memcpy(&bytes[i], &word, 4);
  }
  return absl::BytesToHexString(bytes);
}

}  // namespace sluice
