// Random ids: 128 bits from std::random_device as 32 lower-case hex digits
// (a control plane's store id, a control-plane replica's id).
#ifndef SLUICE_COMMON_RANDOM_ID_H_
#define SLUICE_COMMON_RANDOM_ID_H_

#include <string>

namespace sluice {

std::string RandomHexId();

}  // namespace sluice

#endif  // SLUICE_COMMON_RANDOM_ID_H_
