#include "dataplane/admin/config_dump.h"

#include "absl/strings/str_cat.h"
#include "google/protobuf/util/json_util.h"

namespace sluice::admin {

std::string RenderConfigDump(uint64_t version, const api::ResourceMap& resources) {
  std::string out = absl::StrCat("{\"version\":", version, ",\"resources\":[");
  google::protobuf::util::JsonPrintOptions options;
  options.preserve_proto_field_names = true;
  bool first = true;
  for (const auto& [id, resource] : resources) {
    api::Resource shown = resource;
    api::RedactSecrets(&shown);
    std::string json;
    (void)google::protobuf::util::MessageToJsonString(shown, &json, options);
    absl::StrAppend(&out, first ? "" : ",", json);
    first = false;
  }
  absl::StrAppend(&out, "]}\n");
  return out;
}

}  // namespace sluice::admin
