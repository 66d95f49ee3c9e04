// Turns declarative YAML files into config resources, for sluicectl.
//
// A file holds one or more YAML documents, each
//   kind: Cluster          # Listener, RouteTable, Cluster, Secret or Consumer
//   name: users
//   spec: {...}            # the message's fields, protobuf JSON mapping
// Field names are the proto names (snake_case) or their JSON names
// (lowerCamelCase); durations read "5s", enums by name. Every error names
// the file, the document, the line and the field; a file with any error
// yields no resources. Per-resource validation (api/validation.h) runs here
// too, so most mistakes are reported with their line before anything is sent.
//
// Thread-compatible; no shared state.
#ifndef SLUICE_CONTROLPLANE_CLI_YAML_LOADER_H_
#define SLUICE_CONTROLPLANE_CLI_YAML_LOADER_H_

#include <map>
#include <memory>
#include <string>
#include <vector>

#include "absl/status/statusor.h"
#include "api/resource.h"

namespace sluice::cli {

struct LoadedResource {
  api::Resource resource;
  std::string origin;  // "FILE, document N (line L)"
  std::string where;   // "FILE, document N"
  // The lines of fields that the control plane's apply-only rules
  // (api::ValidateNewContent) refuse, so its answer can name them.
  std::map<std::string, int> field_lines;
  // Those refusals as error lines ("FILE, document N, line L: ..."), said
  // with another document's errors so that one round names them all.
  std::vector<std::string> later_errors;
  // The text it was read from and its document's number there (from 1; 0
  // for an item of a `get -o json` list), for FieldLine.
  std::shared_ptr<const std::string> source;
  int document = 0;
  // An item of a `get -o json` list: the config version it was exported
  // at (its "version"), which apply takes as --if-version; 0 otherwise.
  uint64_t exported_version = 0;
};

// The line of `field`, a path as the control plane names it
// ("virtual_hosts[14].routes[235].route.cluster"), in `r`'s document: of
// the deepest part of it there; 0 when its first part is not there (or the
// document cannot be read again). For errors the control plane finds in a
// big document: they name the field, and this its line.
int FieldLine(const LoadedResource& r, const std::string& field);

// Parses YAML text; `file_name` is used in errors only.
absl::StatusOr<std::vector<LoadedResource>> LoadYaml(const std::string& text,
                                                     const std::string& file_name);

// How LoadYaml reads. Both fast paths give the same resources and errors as
// the reference ones (yaml-cpp's tree, then protobuf JSON); they exist to be
// turned off by the test that compares them.
struct LoadOptions {
  // The plain subset with FastYaml (fast_yaml.h), anything else with yaml-cpp.
  bool fast_parser = true;
  // Messages filled from the tree, without the JSON text, when nothing in
  // the document needs protobuf's JSON parser (google.protobuf.Any...).
  bool direct_conversion = true;
  // false: the resources' shape only, not the rules of api/validation.h
  // (`delete -f` reads only kinds and names, and takes `get -o yaml` output
  // with its redacted keys).
  bool validate = true;
};
absl::StatusOr<std::vector<LoadedResource>> LoadYaml(const std::string& text,
                                                     const std::string& file_name,
                                                     const LoadOptions& options);

// A file, or every *.yaml / *.yml file in a directory (sorted by name), or
// standard input when `path` is "-".
absl::StatusOr<std::vector<LoadedResource>> LoadPath(const std::string& path);
absl::StatusOr<std::vector<LoadedResource>> LoadPath(const std::string& path,
                                                     const LoadOptions& options);

// The resource as a YAML document in the same shape LoadYaml reads, ending
// with a newline; multi-line strings (PEM) are written as `|` block scalars
// (with no blank line after them). Prints what it
// is given: callers that show a resource to people redact it first
// (api::RedactSecrets).
std::string ToYaml(const api::Resource& resource);
// The resource as a JSON object {"kind", "name", "spec"}.
std::string ToJson(const api::Resource& resource);

}  // namespace sluice::cli

#endif  // SLUICE_CONTROLPLANE_CLI_YAML_LOADER_H_
