// Whether the host of a HOST:PORT flag is a loopback address, for the
// start-up checks that refuse or warn about what a non-loopback address
// would expose (sluice-control's plaintext --listen, sluice-proxy's --admin
// without a token).
#ifndef SLUICE_COMMON_LOOPBACK_H_
#define SLUICE_COMMON_LOOPBACK_H_

#include <string_view>

namespace sluice {

// `host` (brackets allowed) is 127.0.0.0/8, ::1 or localhost.
bool IsLoopbackHost(std::string_view host);

}  // namespace sluice

#endif  // SLUICE_COMMON_LOOPBACK_H_
