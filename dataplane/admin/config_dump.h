// The admin endpoint's /config_dump: the config a proxy runs, as JSON
//   {"version":N,"resources":[{...}, ...]}
// each resource in protobuf's JSON mapping with proto field names. Private
// keys are redacted (api::RedactSecrets): the page is for people and tools
// that have no business with them.
//
// Pure function; thread-safe.
#ifndef SLUICE_DATAPLANE_ADMIN_CONFIG_DUMP_H_
#define SLUICE_DATAPLANE_ADMIN_CONFIG_DUMP_H_

#include <cstdint>
#include <string>

#include "api/resource.h"

namespace sluice::admin {

// The page for `resources` at `version`; ends with a line break.
std::string RenderConfigDump(uint64_t version, const api::ResourceMap& resources);

}  // namespace sluice::admin

#endif  // SLUICE_DATAPLANE_ADMIN_CONFIG_DUMP_H_
