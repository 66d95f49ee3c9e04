// sluicectl: the operator's CLI for sluice-control.
//
//   sluicectl [--server HOST:PORT] apply -f FILE|DIR [--dry-run] [--if-version N] [-m MSG]
//   sluicectl [--server HOST:PORT] apply -f FILE|DIR --canary GROUP|N% --verify DURATION
//             [--max-5xx-rate 0.01] [--max-4xx-rate 0.1] [--max-p99-ratio 1.5]
//             [--p99-slack 10ms] [--min-requests 100] [--on-no-traffic abort|promote] [--wait]
//   sluicectl [--server HOST:PORT] rollout status [-o table|json] | promote | abort [-m MSG]
//             [--wait [--timeout 30s]]
//   sluicectl [--server HOST:PORT] get [KIND [NAME]] [-o table|yaml|json]
//   sluicectl [--server HOST:PORT] delete KIND NAME [NAME...] | -f FILE|DIR [--dry-run]
//             [--if-version N] [-m MSG]
//   sluicectl [--server HOST:PORT] history [--limit N] [-o table|json]
//   sluicectl [--server HOST:PORT] diff V1 [V2]
//   sluicectl [--server HOST:PORT] rollback V [--dry-run] [--if-version N] [-m MSG]
//   sluicectl [--server HOST:PORT] proxies [-o table|wide|json]
//   sluicectl [--server HOST:PORT] top [--interval 2s] [--once]
//   sluicectl hash-password [--iterations N]   (password on stdin)
//   sluicectl [--server HOST:PORT] token create NAME --role viewer|operator|admin
//   sluicectl [--server HOST:PORT] token list | token revoke NAME
//   sluicectl [--server HOST:PORT] cache purge [--route R] [--host H]
//             [--path P | --prefix P] [--group G] [--timeout 5s]
//
// --token T (else $SLUICE_TOKEN) is sent as `authorization: Bearer T` on
// every call (sluice-control --require-tokens).
//
// The server defaults to $SLUICE_SERVER, then 127.0.0.1:18000. --ca FILE (or
// $SLUICE_CA) speaks TLS to it; --cert/--key add a client certificate.
#include <arpa/inet.h>
#include <limits.h>
#include <pwd.h>
#include <grpc/support/log.h>
#include <termios.h>
#include <unistd.h>

#include <algorithm>
#include <array>
#include <cstdio>
#include <cstdlib>
#include <iostream>
#include <functional>
#include <map>
#include <set>
#include <string>
#include <tuple>
#include <vector>

#include "absl/strings/ascii.h"
#include "absl/strings/escaping.h"
#include "absl/strings/match.h"
#include "absl/strings/numbers.h"
#include "absl/strings/strip.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/str_format.h"
#include "absl/strings/str_join.h"
#include "absl/strings/str_split.h"
#include "absl/time/clock.h"
#include "absl/time/time.h"
#include "api/credentials.h"
#include "api/discovery.h"
#include "api/resource.h"
#include "common/flags.h"
#include "common/nearest.h"
#include "common/pem_file.h"
#include "common/utf8.h"
#include "controlplane/cli/yaml_loader.h"
#include "google/protobuf/util/json_util.h"
#include "google/protobuf/util/message_differencer.h"
#include "google/protobuf/util/time_util.h"
#include "grpcpp/grpcpp.h"
#include "sluice/admin/v1/admin.grpc.pb.h"

namespace sluice::cli {
namespace {

// How long a connection to sluice-control may take to open (TCP, TLS and
// the HTTP/2 preface).
constexpr int64_t kConnectTimeoutMs = 5000;

constexpr char kUsage[] = R"(usage: sluicectl [--server HOST:PORT] COMMAND

commands:
  apply -f FILE|DIR|- [--dry-run]   create or replace the resources in FILE (or every
                                    .yaml/.yml/.json file in DIR, or standard input for -)
                                    as one change
  apply -f FILE --canary GROUP|N% --verify DURATION [thresholds] [--wait]
                                    a canary rollout: the change goes to the proxies of
                                    node group GROUP (or N% of the connected proxies,
                                    rounded down, at least one) only; after DURATION of
                                    their traffic it is promoted to every proxy, or the
                                    canaries are rolled back (see "canary rollouts")
  rollout status [-o table|json]    the running rollout, or the last one since
                                    sluice-control started: canaries, versions, time
                                    left, the figures so far, the decision (an older
                                    decision is in history)
  rollout promote|abort [-m MSG] [--wait [--timeout 30s]]
                                    decide the running rollout now (operator role);
                                    --wait: until every proxy took the decision
  get [KIND [NAME]] [-o FORMAT]     list resources, or show one; FORMAT is table
                                    (default), yaml or json
  delete KIND NAME [NAME...] [--dry-run]
                                    delete resources of one kind, in one version
  delete -f FILE|DIR [--dry-run]    delete every resource the file(s) name (kind and
                                    name; the rest of each is not read), in one version
  history [--limit N] [-o table|json]
                                    the kept versions, newest first: time, author,
                                    change (+added ~changed -removed) and message
  diff V1 [V2]                      what changed from version V1 to V2 (default: the
                                    current one), resource by resource and line by line
  rollback V [--dry-run]            make version V's content current again, as a new
                                    version (checked like an apply)
  proxies [-o table|wide|json]      connected proxies and the version each runs; wide adds
                                    each one's traffic (rps, errors, p50/p99, connections)
  top [--interval 2s] [--once]      the fleet's traffic and busiest routes, refreshed
  token create NAME --role ROLE     make an operator token (ROLE: viewer, operator or
                                    admin) and print it once; needs an admin token (with
                                    none anywhere, the first one made must be admin)
  token list [-o table|json]        the tokens' names, roles and creators (never a token)
  token revoke NAME                 refuse that token from now on
  cache purge [--route R] [--host H] [--path P | --prefix P] [--group G] [--timeout 5s]
                                    remove cached responses on every connected proxy (of
                                    node group G): those of route R, host H, the one key
                                    P (path and query) or every path under prefix P (all
                                    of them when no filter is given); waits up to
                                    --timeout (at most 60s) for each proxy to confirm and
                                    fails unless all did (operator role)
  hash-password [--iterations N]    read a password from stdin (one line) and print
                                    a password_hash for a Consumer's basic_auth
                                    (no server needed; default N is 100000)

apply, delete and rollback take:
  -m MESSAGE                        why: kept in the history with the change
  --if-version N                    change nothing unless N is still the current version
                                    (else print the changes made since N and fail)
  --wait [--timeout 30s]            then wait (1s..10m) until every connected proxy took
                                    the new version or refused it; print each refusal
                                    (NACK) and exit 1 unless all took it
They record $USER@hostname as the author ($LOGNAME, else the account, when
$USER is unset); when sluice-control requires tokens it
records the token's name instead.

canary rollouts (apply --canary): once every canary runs the candidate, the
proxies' traffic reports (sluice-proxy --report-interval, default 5s) of the
canaries and of the rest are summed over --verify. The canaries are rolled back
at once when one rejects (NACKs) the candidate, or when, with --min-requests on
each side, their 5xx rate exceeds the rest's by more than --max-5xx-rate
(default 0.01: one percentage point), their 4xx rate the rest's by more than
--max-4xx-rate (default 0.1: ten points, so a policy refusing most callers is
rolled back; 1 for an intended one), or their p99 exceeds the rest's times
--max-p99-ratio (default 1.5) and by more than --p99-slack (default 10ms).
Otherwise the candidate is promoted when --verify ends; with fewer than
--min-requests (default 100) on either side --on-no-traffic decides (default
abort: roll back). Either way a new version goes to every proxy and the history
records the decision with the figures. --wait waits for it (as long as it takes:
up to 30s for the canaries to take the candidate, then --verify) and exits 1 on
a rollback, then, within --timeout, for the fleet to take the decision's
version, as above (a proxy outside the canaries may refuse what they could not
try: a listener of another node group). While a rollout runs, other changes are
refused.

KIND is Listener, RouteTable, Cluster, Secret or Consumer (any case, singular or
plural).

get and diff never print a private key: they show "[redacted]" in its place. A Consumer's
API keys and passwords are stored only as hashes (key_sha256, password_hash).

The server is --server, else $SLUICE_SERVER, else 127.0.0.1:18000; several,
comma-separated (replicas of one store): the first that takes the connection.
--token T (else $SLUICE_TOKEN) authenticates every call (sluice-control
--require-tokens): viewer tokens may read, operator tokens also change the config,
admin tokens also manage tokens.
--ca FILE (else $SLUICE_CA) connects with TLS, verifying the server against that
PEM CA; --cert FILE --key FILE add a client certificate. A token goes in clear text
only to a loopback address (127.0.0.0/8, ::1, localhost): to another server without
--ca the command is refused, unless --plaintext-token says the network is trusted.
)";

// `sluicectl COMMAND --help`: that command's entries of the usage (an entry
// is a line naming it and the deeper-indented lines under it), the
// paragraphs that are about it, and where the global flags are told. Empty
// for a command the usage does not know.
std::string CommandUsage(const std::string& command) {
  const std::vector<absl::string_view> lines = absl::StrSplit(kUsage, '\n');
  std::string entries;
  bool in_entry = false;
  for (absl::string_view line : lines) {
    if (absl::StartsWith(line, "  ") && !absl::StartsWith(line, "   ")) {
      in_entry = absl::StartsWith(line.substr(2), command + " ") || line.substr(2) == command;
    } else if (!absl::StartsWith(line, "   ")) {
      in_entry = false;
    }
    if (in_entry) absl::StrAppend(&entries, line, "\n");
  }
  if (entries.empty()) return "";
  const bool local = command == "hash-password";  // needs no server
  std::string usage = absl::StrCat("usage: sluicectl ", local ? "" : "[--server HOST:PORT] ",
                                   command, " ...\n\n", entries);
  // The paragraphs after the command list that name the command first.
  const std::vector<absl::string_view> paragraphs = absl::StrSplit(kUsage, "\n\n");
  for (size_t i = 2; i < paragraphs.size(); ++i) {
    absl::string_view p = paragraphs[i];
    if (absl::StartsWith(p, command + " ") || absl::StartsWith(p, command + ",") ||
        absl::StrContains(p.substr(0, p.find(':')), " " + command + " ") ||
        (command == "apply" && absl::StartsWith(p, "canary rollouts")) ||
        (absl::StartsWith(p, "KIND is") && absl::StrContains(entries, "KIND"))) {
      absl::StrAppend(&usage, "\n", p, "\n");
    }
  }
  if (!local) {
    absl::StrAppend(&usage, "\nGlobal flags: --server, --token, --ca, --cert, --key (see "
                            "sluicectl --help).\n");
  }
  return usage;
}

// Whether the channel is plaintext (no --ca): a refused connection then
// hints at TLS.
bool plaintext_channel = true;

// --token, else $SLUICE_TOKEN; empty: none is sent.
std::string bearer_token;
// A call that changes something was sent: a connection lost before its
// answer leaves the outcome unknown (RpcFail says so).
bool change_sent = false;

// The channel to sluice-control: an UNAVAILABLE answer on a connected channel
// came from sluice-control itself (e.g. its etcd store has no quorum).
std::shared_ptr<grpc::Channel> admin_channel;
// How long a call (Context()) waits for its answer.
constexpr absl::Duration kCallDeadline = absl::Seconds(30);

// A change's warnings, one `warning:` line each (durability, or config
// that is valid but cannot do what it says).
void PrintWarnings(const std::string& warnings) {
  if (warnings.empty()) return;
  for (absl::string_view line : absl::StrSplit(warnings, '\n')) {
    std::cerr << "warning: " << line << "\n";
  }
}

int Fail(const std::string& message) {
  std::cerr << "error: " << message << "\n";
  return 1;
}

using common::Nearest;

// absl::FormatDuration, but "0s" for zero (it prints a bare "0": "started
// 0 ago").
std::string ShownDuration(absl::Duration d) {
  return d == absl::ZeroDuration() ? "0s" : absl::FormatDuration(d);
}

const std::vector<std::string>& CommandNames() {
  static const auto* names = new std::vector<std::string>{
      "apply", "get",   "delete", "history", "diff",    "rollback",     "proxies",
      "top",   "token", "cache",  "rollout", "hash-password", "help"};
  return *names;
}

// An unknown command: one line, a did-you-mean, and where the list is (the
// whole usage buried the error).
int UnknownCommand(const std::string& command) {
  std::cerr << "error: unknown command '" << command << "'";
  if (std::string near = Nearest(command, CommandNames(), /*max_edits=*/2); !near.empty()) {
    std::cerr << "; did you mean '" << near << "'?";
  }
  std::cerr << "\n(sluicectl --help lists the commands)\n";
  return 2;
}

// A command or flag used wrongly (missing or extra arguments, a value that
// does not parse): exit status 2, as for an unknown flag.
// On stderr, before the answer: a replica that has not read etcd for a
// while answers get and history from the version it last read.
void NoteStoreUnread(const google::protobuf::Duration& unread) {
  if (unread.seconds() <= 0) return;
  std::cerr << "note: this sluice-control has not read etcd for " << unread.seconds()
            << "s (out of reach): this is the version it last read; another replica may have "
               "applied since (ask it with --server)\n";
}

int UsageFail(const std::string& message) {
  std::cerr << "error: " << message << "\n";
  return 2;
}

// A message as one line of JSON with the proto's field names.
void PrintJson(const google::protobuf::Message& message) {
  std::string json;
  google::protobuf::util::JsonPrintOptions options;
  options.preserve_proto_field_names = true;
  (void)google::protobuf::util::MessageToJsonString(message, &json, options);
  std::cout << json << "\n";
}

// Whether an HTTP/2 server that is no gRPC one (or the upstream of a
// gateway route) answered with an HTTP status that refused the call unread:
// a 4xx or a 501 (a 502, 503 or 504 may come from a balancer in front of
// sluice-control that passed the call on).
bool HttpRefusal(const grpc::Status& status) {
  const std::string message = status.error_message();  // a copy: a view of it dangled
  absl::string_view said = message;
  int code = 0;
  return absl::ConsumePrefix(&said, "Received http2 header with status: ") &&
         absl::SimpleAtoi(said, &code) && ((code >= 400 && code < 500) || code == 501);
}

// Neither --server nor $SLUICE_SERVER named the server: 127.0.0.1:18000.
bool server_defaulted = false;

int RpcFail(const grpc::Status& status, const std::string& server) {
  const bool never_connected =
      absl::StrContains(absl::AsciiStrToLower(status.error_message()), "failed to connect") ||
      absl::StrContains(status.error_message(), "DNS resolution failed");
  // Another server on the port: an HTTP/1 one (a proxy's --admin, a
  // metrics port, a gateway listener without h2c) is no TLS matter, and a
  // gRPC one (a gateway listener, which answers a request it has no route
  // for with UNIMPLEMENTED "no route matches the request") did not refuse
  // the request: it is not sluice-control. Before, the first got the --ca
  // hint and the second read as a config error.
  if (absl::StrContains(status.error_message(), "http1.x server") ||
      absl::StrContains(status.error_message(), "Failed parsing HTTP/2")) {
    return Fail(absl::StrCat("cannot reach sluice-control at ", server,
                             ": an HTTP/1 server answered there (a sluice-proxy's --admin or a "
                             "metrics port?): is --server sluice-control's --listen address?"));
  }
  // A gateway route that sends the call to an upstream that is no gRPC
  // server ends it without a gRPC status: gRPC says "Stream removed".
  // A gateway's own gRPC answers (its route sends the call to an
  // upstream that is down or not gRPC) are no sluice-control's either:
  // read as "sluice-control is unavailable", an apply even said it may
  // have been applied.
  const std::string& said = status.error_message();
  const bool gateway_answer = HttpRefusal(status) || absl::StartsWith(said, "upstream ") ||
                              absl::StartsWith(said, "no healthy endpoint in cluster ") ||
                              absl::StartsWith(said, "no endpoint in cluster ") ||
                              absl::StartsWith(said, "circuit breaker ");
  if (status.error_code() == grpc::StatusCode::UNIMPLEMENTED || gateway_answer ||
      (status.error_code() == grpc::StatusCode::UNKNOWN && said == "Stream removed")) {
    // gRPC's names of the codes an HTTP status maps to (400, 401, 403,
    // 404, 429 and 50x) and of a gateway's answers.
    const char* code;
    switch (status.error_code()) {
      case grpc::StatusCode::UNIMPLEMENTED: code = "UNIMPLEMENTED"; break;
      case grpc::StatusCode::UNAVAILABLE: code = "UNAVAILABLE"; break;
      case grpc::StatusCode::DEADLINE_EXCEEDED: code = "DEADLINE_EXCEEDED"; break;
      case grpc::StatusCode::INTERNAL: code = "INTERNAL"; break;
      case grpc::StatusCode::UNAUTHENTICATED: code = "UNAUTHENTICATED"; break;
      case grpc::StatusCode::PERMISSION_DENIED: code = "PERMISSION_DENIED"; break;
      default: code = "UNKNOWN"; break;
    }
    return Fail(absl::StrCat(server, " does not serve this sluice-control call (", code,
                             ": ", status.error_message(),
                             "): is --server sluice-control's --listen address and not a "
                             "gateway listener or another gRPC server? (An older sluice-control "
                             "lacks the newer calls.)"));
  }
  // The control plane's own answer: its store could not write the change.
  if (absl::StartsWith(status.error_message(), "the change was not stored, nothing changed")) {
    return Fail(absl::StrCat("sluice-control at ", server, " refused the change: ",
                             status.error_message()));
  }
  // The control plane's own answer too: etcd did not confirm the change in
  // time (it may still commit it once its quorum is back).
  if (change_sent && status.error_code() == grpc::StatusCode::UNAVAILABLE &&
      absl::StartsWith(status.error_message(), "etcd")) {
    // The message says whether the change may still land, and what to do.
    const bool said = absl::StrContains(status.error_message(), "nothing applied") ||
                      absl::StrContains(status.error_message(), "check sluicectl history");
    return Fail(absl::StrCat("sluice-control at ", server, " is unavailable: ",
                             status.error_message(),
                             said ? "" : "; check with `sluicectl history` (or `get`) before "
                                         "trying again"));
  }
  if (change_sent && !never_connected &&
      (status.error_code() == grpc::StatusCode::UNAVAILABLE ||
       status.error_code() == grpc::StatusCode::DEADLINE_EXCEEDED)) {
    // The request went out (the connection was up); whether the change was
    // made is not known.
    return Fail(absl::StrCat("no answer from sluice-control at ", server, " after the change was "
                             "sent (", status.error_message(), "): it may have been applied; "
                             "check with `sluicectl history` (or `get`) before trying again"));
  }
  if (status.error_code() == grpc::StatusCode::UNAVAILABLE && admin_channel != nullptr &&
      admin_channel->GetState(/*try_to_connect=*/false) == GRPC_CHANNEL_READY) {
    return Fail(absl::StrCat("sluice-control at ", server, " is unavailable: ",
                             status.error_message()));
  }
  if (status.error_code() == grpc::StatusCode::DEADLINE_EXCEEDED && admin_channel != nullptr &&
      admin_channel->GetState(/*try_to_connect=*/false) == GRPC_CHANNEL_READY) {
    // Reached, but silent: "cannot reach" misled.
    return Fail(absl::StrCat("sluice-control at ", server, " took the connection but did not "
                             "answer within ", absl::FormatDuration(kCallDeadline),
                             ": is --server sluice-control's --listen address, and is it stuck?"));
  }
  if (status.error_code() == grpc::StatusCode::UNAVAILABLE ||
      status.error_code() == grpc::StatusCode::DEADLINE_EXCEEDED) {
    // A refused connection, or a name that does not resolve, is no TLS
    // matter.
    // Nor is a hung one (a TLS server would have closed a plaintext
    // connection at once).
    const bool refused = absl::StrContains(status.error_message(), "Connection refused") ||
                         absl::StrContains(status.error_message(), "DNS resolution failed") ||
                         absl::StrContains(status.error_message(), "timed out");
    return Fail(absl::StrCat("cannot reach sluice-control at ", server, ": ",
                             status.error_message(),
                             plaintext_channel && !refused
                                 ? " (if it serves TLS, give --ca FILE or set $SLUICE_CA)"
                                 : "",
                             server_defaulted ? " (the default address: give --server "
                                                "HOST:PORT or set $SLUICE_SERVER)"
                                              : ""));
  }
  if (status.error_code() == grpc::StatusCode::UNAUTHENTICATED) {
    if (bearer_token.empty()) {
      return Fail(
          "not authenticated: sluice-control requires a token; pass --token T or set "
          "$SLUICE_TOKEN");
    }
    return Fail(absl::StrCat("not authenticated: ", status.error_message()));
  }
  if (status.error_code() == grpc::StatusCode::PERMISSION_DENIED) {
    return Fail(absl::StrCat("permission denied: ", status.error_message()));
  }
  return Fail(status.error_message());
}

// Errors that are about reaching or being let into sluice-control rather than
// about the request: RpcFail words them.
bool NotAboutTheRequest(const grpc::Status& status) {
  switch (status.error_code()) {
    case grpc::StatusCode::UNAVAILABLE:
    case grpc::StatusCode::DEADLINE_EXCEEDED:
    case grpc::StatusCode::UNAUTHENTICATED:
    case grpc::StatusCode::PERMISSION_DENIED:
    case grpc::StatusCode::UNIMPLEMENTED:
      return true;
    case grpc::StatusCode::UNKNOWN:
      return status.error_message() == "Stream removed" || HttpRefusal(status);
    case grpc::StatusCode::INTERNAL:  // an HTTP 400
      return HttpRefusal(status);
    default:
      return false;
  }
}

std::unique_ptr<grpc::ClientContext> Context() {
  auto context = std::make_unique<grpc::ClientContext>();
  if (!bearer_token.empty()) context->AddMetadata("authorization", "Bearer " + bearer_token);
  context->set_deadline(std::chrono::system_clock::now() + absl::ToChronoSeconds(kCallDeadline));
  return context;
}

std::string LineDiff(const std::string& a, const std::string& b, size_t context = 3);

// What `diff` and the dry runs print under a changed resource: the lines of
// its YAML that differ, both sides redacted (so a change to a key alone
// shows as such).
std::string ResourceLines(const api::Resource& before, const api::Resource& after) {
  std::string out = LineDiff(ToYaml(before), ToYaml(after));
  return out.empty() ? "    (only redacted fields differ)\n" : out;
}

// `lines`, when given, prints under each changed resource what its fields
// become (an apply's dry run).
using ChangedLines = std::function<std::string(const api::ResourceId&)>;

void PrintDiff(const admin::v1::Diff& diff, const ChangedLines* lines = nullptr) {
  auto print = [](const char* mark, const auto& keys) {
    for (const auto& key : keys) {
      std::cout << mark << " " << api::Describe({key.kind(), key.name()}) << "\n";
    }
  };
  print("+", diff.added());
  for (const auto& key : diff.changed()) {
    std::cout << "~ " << api::Describe({key.kind(), key.name()}) << "\n";
    if (lines != nullptr) std::cout << (*lines)({key.kind(), key.name()});
  }
  print("-", diff.removed());
  std::cout << diff.added_size() << " added, " << diff.changed_size() << " changed, "
            << diff.removed_size() << " removed, " << diff.unchanged() << " unchanged\n";
}

bool DiffEmpty(const admin::v1::Diff& diff) {
  return diff.added_size() == 0 && diff.changed_size() == 0 && diff.removed_size() == 0;
}

void PrintOutcome(bool dry_run, const admin::v1::Diff& diff, uint64_t version,
                  const ChangedLines* lines = nullptr) {
  PrintDiff(diff, lines);
  if (dry_run) {
    std::cout << "dry run: nothing stored (current version " << version << ")\n";
  } else if (DiffEmpty(diff)) {
    std::cout << "no change; version " << version << "\n";
  } else {
    std::cout << "applied: version " << version << "\n";
  }
}

// HOST:PORT, an IPv6 address in brackets ([::1]:8443, not ::1:8443).
std::string HostPort(const std::string& host, uint32_t port) {
  if (host.find(':') != std::string::npos) return absl::StrCat("[", host, "]:", port);
  return absl::StrCat(host, ":", port);
}

std::string Summary(const api::Resource& r) {
  if (r.has_listener()) {
    std::string tls;
    if (r.listener().has_tls()) {
      tls = absl::StrCat(" (tls: ", absl::StrJoin(r.listener().tls().certificates(), ","), ")");
    }
    return absl::StrCat(HostPort(r.listener().address(), r.listener().port()), " -> ",
                        r.listener().route_table(), tls);
  }
  if (r.has_route_table()) {
    int routes = 0;
    for (const auto& v : r.route_table().virtual_hosts()) routes += v.routes_size();
    return absl::StrCat(r.route_table().virtual_hosts_size(), " virtual hosts, ", routes,
                        " routes");
  }
  if (r.has_cluster()) {
    std::vector<std::string> eps;
    for (const auto& e : r.cluster().endpoints()) {
      eps.push_back(HostPort(e.address(), e.port()));
    }
    return absl::StrCat(config::v1::Cluster::LbPolicy_Name(r.cluster().lb_policy()), " ",
                        absl::StrJoin(eps, ","));
  }
  if (r.has_secret()) {
    if (r.secret().has_tls_certificate()) return "tls_certificate";
    if (r.secret().has_trusted_ca()) return "trusted_ca";
  }
  if (r.has_consumer()) {
    std::vector<std::string> parts;
    if (r.consumer().groups_size() > 0) {
      parts.push_back(absl::StrCat("groups=", absl::StrJoin(r.consumer().groups(), ",")));
    }
    parts.push_back(absl::StrCat("keys=", r.consumer().keys_size()));
    if (r.consumer().has_basic_auth()) parts.push_back("basic-auth");
    return absl::StrJoin(parts, " ");
  }
  return "";
}

std::string FormatTime(const google::protobuf::Timestamp& t) {
  if (t.seconds() == 0) return "-";
  return absl::FormatTime("%Y-%m-%dT%H:%M:%SZ", absl::FromUnixSeconds(t.seconds()),
                          absl::UTCTimeZone());
}

// Who makes a change, as far as this machine knows: $USER@hostname. The
// control plane records it as given unless it requires tokens (then it
// records the token's name).
std::string Author() {
  // $USER, else $LOGNAME, else the account of the effective uid (cron,
  // `docker exec` and systemd units often set neither), as git does.
  const char* user = std::getenv("USER");
  if (user == nullptr || *user == '\0') user = std::getenv("LOGNAME");
  if (user == nullptr || *user == '\0') {
    if (const struct passwd* account = ::getpwuid(::geteuid())) user = account->pw_name;
  }
  char host[HOST_NAME_MAX + 1] = {0};
  if (::gethostname(host, sizeof(host) - 1) != 0) host[0] = '\0';
  std::string author = absl::StrCat(user && *user ? user : "unknown", "@", *host ? host : "unknown");
  // A $USER that is not UTF-8 would make every change fail: escaped.
  if (common::InvalidUtf8At(std::string_view(author)) != std::string_view::npos) author = absl::CHexEscape(author);
  return author.size() > api::kMaxAuthorBytes ? author.substr(0, api::kMaxAuthorBytes) : author;
}

// -m and --if-version, shared by apply, delete and rollback.
struct ChangeFlags {
  std::string message;
  uint64_t if_version = 0;
};

bool ParseChangeFlags(const ParsedFlags& flags, ChangeFlags* out, std::string* error) {
  if (auto it = flags.values.find("m"); it != flags.values.end()) {
    out->message = it->second;
    if (size_t at = common::InvalidUtf8At(std::string_view(out->message)); at != std::string_view::npos) {
      *error = absl::StrCat("-m: not valid UTF-8 (byte ", at + 1, ")");
      return false;
    }
    if (out->message.size() > api::kMaxChangeMessageBytes) {
      *error = absl::StrCat("-m: ", out->message.size(), " bytes; at most ",
                            api::kMaxChangeMessageBytes, " are kept");
      return false;
    }
  }
  if (auto it = flags.values.find("if-version"); it != flags.values.end()) {
    if (!absl::SimpleAtoi(it->second, &out->if_version) || out->if_version == 0) {
      *error = absl::StrCat("--if-version ", it->second, ": expected a version number (1 or more)");
      return false;
    }
  }
  return true;
}

std::string ChangeSummary(const admin::v1::Diff& diff) {
  return absl::StrCat("+", diff.added_size(), " ~", diff.changed_size(), " -",
                      diff.removed_size());
}

// Text another client chose (an author, a message, a node id, a NACK
// reason) as part of one line of output: control bytes are shown escaped
// (\n, \r, \t, \xNN), so such text cannot make a row of its own or drive
// the terminal. JSON output escapes them itself.
std::string Printable(absl::string_view text) {
  std::string out;
  out.reserve(text.size());
  for (char c : text) {
    const unsigned char u = static_cast<unsigned char>(c);
    if (c == '\n') {
      out += "\\n";
    } else if (c == '\r') {
      out += "\\r";
    } else if (c == '\t') {
      out += "\\t";
    } else if (u < 0x20 || u == 0x7f) {
      out += absl::StrFormat("\\x%02x", u);
    } else {
      out.push_back(c);
    }
  }
  return out;
}

// An argument past the last one `command` takes (`at` its index in `args`).
int ExtraArgument(const std::string& command, const std::vector<std::string>& args, size_t at) {
  return UsageFail(absl::StrCat(command, ": '", Printable(args[at]),
                                "' is one argument too many"));
}

void PrintHistoryTable(const std::vector<admin::v1::HistoryEntry>& entries) {
  std::cout << absl::StrFormat("%-8s %-21s %-24s %-12s %s\n", "VERSION", "TIME", "AUTHOR",
                               "CHANGE", "MESSAGE");
  for (const auto& e : entries) {
    const bool known = e.has_time();
    // No time but a message: a version whose record was lost, kept as one
    // change from the version before (the message says so).
    const bool change_known = known || !e.message().empty();
    std::cout << absl::StrFormat(
        "%-8d %-21s %-24s %-12s %s\n", e.version(), known ? FormatTime(e.time()) : "-",
        e.author().empty() ? "-" : Printable(e.author()),
        change_known ? ChangeSummary(e.diff()) : "?",
        change_known ? Printable(e.message()) : "(made before history was kept)");
  }
}

// A control plane that started within a proxy's longest reconnect delay
// (10 s, and a margin) may not list every proxy yet: those that were
// connected to the process before come back meanwhile.
constexpr absl::Duration kReconnectWindow = absl::Seconds(12);

// An ABORTED change: the config moved on since --if-version. Prints the
// server's reason and the versions made since.
// Without --wait: the proxies refusing a version (an earlier one, a
// listener's port taken, say, or this one already) run none of the later
// ones while the refused part stays; said on stderr, so that the change is
// not taken for live. Before, only --wait told.
void NoteRefusingProxies(admin::v1::AdminService::Stub& stub, uint64_t version) {
  admin::v1::ListProxiesResponse fleet;
  if (!stub.ListProxies(Context().get(), admin::v1::ListProxiesRequest(), &fleet).ok()) return;
  for (const auto& p : fleet.proxies()) {
    // (This version itself may be refused already: it is pushed at once.)
    if (p.last_nack_version() == 0 || p.last_nack_version() <= p.version_applied() ||
        p.last_nack_version() > version) {
      continue;
    }
    std::cerr << "note: proxy " << Printable(p.node().id()) << " refuses version "
              << p.last_nack_version() << " (" << Printable(p.last_nack_error())
              << ") and runs version " << p.version_applied()
              << ": it takes no later version while the refused part stays; `sluicectl proxies` "
                 "(or --wait) shows whether it takes version "
              << version << "\n";
  }
}

// The current version when every version after `since` is in the history
// and none added, changed or removed a resource of `loaded`; else 0.
uint64_t UntouchedSince(admin::v1::AdminService::Stub& stub, uint64_t since,
                        const std::vector<LoadedResource>& loaded) {
  admin::v1::HistoryResponse history;
  if (!stub.History(Context().get(), admin::v1::HistoryRequest(), &history).ok()) return 0;
  std::set<api::ResourceId> mine;
  for (const LoadedResource& r : loaded) mine.insert(api::IdOf(r.resource));
  std::set<uint64_t> seen;
  for (const auto& e : history.entries()) {
    if (e.version() <= since || e.version() > history.current_version()) continue;
    // A version made before history was kept (an older build's data dir, a
    // history restored from another backup): what it changed is unknown.
    if (!e.has_time()) return 0;
    seen.insert(e.version());
    for (const auto* keys : {&e.diff().added(), &e.diff().changed(), &e.diff().removed()}) {
      for (const auto& key : *keys) {
        if (mine.count({key.kind(), key.name()}) > 0) return 0;
      }
    }
  }
  const uint64_t current = history.current_version();
  if (current <= since || seen.size() != current - since) return 0;  // not all kept
  return current;
}

int ConflictFail(admin::v1::AdminService::Stub& stub, const grpc::Status& status,
                 uint64_t if_version) {
  std::cerr << "error: conflict: " << status.error_message() << "\n";
  // Without --if-version (replicas racing past their retries) the message
  // names the version: a list since version 0 would be the whole history.
  if (if_version == 0) return 1;
  admin::v1::HistoryResponse history;
  if (stub.History(Context().get(), admin::v1::HistoryRequest(), &history).ok()) {
    std::vector<admin::v1::HistoryEntry> since;
    for (const auto& e : history.entries()) {
      if (e.version() > if_version) since.push_back(e);
    }
    if (!since.empty()) {
      std::cout << "changes since version " << if_version << ":\n";
      uint64_t oldest = since.front().version();
      for (const auto& e : since) oldest = std::min<uint64_t>(oldest, e.version());
      // The newest 20 (the history comes newest first): a stale version
      // far behind would fill the terminal with the whole history.
      constexpr size_t kShown = 20;
      const size_t older = since.size() > kShown ? since.size() - kShown : 0;
      since.resize(std::min(since.size(), kShown));
      PrintHistoryTable(since);
      if (older > 0) {
        std::cout << "(and " << older << (older == 1 ? " older one" : " older ones")
                  << ": sluicectl history)\n";
      }
      if (oldest > if_version + 1) {
        std::cout << "(versions " << if_version + 1 << ".." << oldest - 1
                  << " are no longer kept: --history)\n";
      }
    }
  }
  return 1;
}

const char* RolloutStateName(admin::v1::Rollout::State state) {
  switch (state) {
    case admin::v1::Rollout::DEPLOYING:
      return "deploying to the canaries";
    case admin::v1::Rollout::VERIFYING:
      return "verifying";
    case admin::v1::Rollout::PROMOTED:
      return "promoted";
    case admin::v1::Rollout::ROLLED_BACK:
      return "rolled back";
    default:
      return "unknown";
  }
}

std::string FiguresText(const admin::v1::RolloutFigures& f) {
  const double rate =
      f.requests() ? 100.0 * static_cast<double>(f.responses_5xx()) / f.requests() : 0.0;
  const double rate_4xx =
      f.requests() ? 100.0 * static_cast<double>(f.responses_4xx()) / f.requests() : 0.0;
  return absl::StrFormat("%d requests from %d %s (%d %s), 5xx %.2f%%, 4xx %.2f%%, "
                         "p99 %.1f ms, %d NACKs",
                         f.requests(), f.proxies(), f.proxies() == 1 ? "proxy" : "proxies",
                         f.reports(), f.reports() == 1 ? "report" : "reports", rate, rate_4xx,
                         f.p99_ms(), f.nacks());
}

std::string CanariesText(const admin::v1::Rollout& r) {
  std::string nodes = absl::StrJoin(r.canary_nodes(), ", ");
  if (!r.canary_group().empty()) {
    return absl::StrCat("node group \"", r.canary_group(), "\"",
                        nodes.empty() ? "" : absl::StrCat(" (", nodes, ")"));
  }
  return nodes;
}

void PrintRollout(const admin::v1::Rollout& r, bool running) {
  std::string state = RolloutStateName(r.state());
  if (running && r.state() == admin::v1::Rollout::VERIFYING) {
    const absl::Duration left =
        absl::FromUnixSeconds(r.verify_ends().seconds()) +
        absl::Nanoseconds(r.verify_ends().nanos()) - absl::Now();
    absl::StrAppend(&state, ", ",
                    ShownDuration(absl::Trunc(std::max(left, absl::ZeroDuration()),
                                              absl::Seconds(1))),
                    " left");
  }
  std::cout << "rollout " << r.id() << ": " << state << "\n";
  std::cout << "  canaries:   " << CanariesText(r) << "\n";
  std::cout << "  versions:   candidate " << r.candidate_version() << " on the canaries, stable "
            << r.stable_version() << " on the rest\n";
  std::cout << "  started:    " << FormatTime(r.started()) << " by "
            << (r.author().empty() ? "unknown" : Printable(r.author()))
            << (r.message().empty() ? "" : absl::StrCat(": \"", Printable(r.message()), "\""))
            << "\n";
  const auto& t = r.thresholds();
  std::cout << absl::StrFormat(
      "  thresholds: verify %s, 5xx rate at most %.2f points over the rest, 4xx rate %s, "
      "p99 at most %gx the rest's or %g ms more, at least %d requests each side (else %s)\n",
      absl::FormatDuration(absl::Milliseconds(r.verify_ms())),
      100.0 * t.max_5xx_rate_increase(),
      t.max_4xx_rate_increase() >= 1
          ? std::string("not judged")
          : absl::StrFormat("at most %.2f points over", 100.0 * t.max_4xx_rate_increase()),
      t.max_p99_ratio(), t.p99_slack_ms(), t.min_requests(),
      t.promote_without_traffic() ? "promote" : "abort");
  std::cout << "  canaries:   " << FiguresText(r.canary()) << "\n";
  std::cout << "  rest:       " << FiguresText(r.rest()) << "\n";
  if (!running) {
    std::cout << "  decision:   " << RolloutStateName(r.state());
    if (r.decision_version() != 0) std::cout << " as version " << r.decision_version();
    std::cout << ": " << r.reason() << "\n";
  }
}

// `--wait`: until every proxy took `version` (ACKed it or a later one) or
// refused it (a NACK of it or later), at most `timeout`. "Every proxy" is
// each one connected now or when the wait began: one that disconnected
// before taking the version (a partitioned proxy keeps serving its last
// config) is waited for, in case it comes back, and counted as not having
// taken it. Prints each refusal and a summary; 0 when every proxy took it
// (or none is connected), 1 otherwise. A control plane that cannot be
// reached for a moment is asked again until the deadline. `unchanged`: the
// apply changed nothing, so a refusal already there when the wait began is
// an old one (its cause may have been fixed since: the wait is run again
// for that): only an ACK or a newer refusal, when the control plane offers
// the version again, ends that proxy's wait.
int WaitForFleet(admin::v1::AdminService::Stub& stub, const std::string& server,
                 uint64_t version, absl::Duration timeout, bool unchanged = false) {
  const absl::Time deadline = absl::Now() + timeout;
  admin::v1::ListProxiesResponse response;
  // Connections, by node id and the time each connected (two proxies may
  // share an id): those there when the wait began, and those of them not
  // yet seen taking or refusing the version. One of the latter gone since
  // dropped off, unless a new connection of its id came (a proxy that
  // reconnected, whose status is then counted).
  using Connection = std::pair<std::string, std::pair<int64_t, int32_t>>;
  auto connection_of = [](const admin::v1::ProxyStatus& p) {
    return Connection(p.node().id(), {p.connected_since().seconds(), p.connected_since().nanos()});
  };
  std::set<Connection> at_start;
  std::set<Connection> pending;  // of at_start
  bool first = true;
  // With `unchanged`: each connection's refusal of the version at the start.
  std::map<Connection, std::pair<int64_t, int32_t>> old_nacks;
  auto refused_now = [&](const admin::v1::ProxyStatus& p) {
    if (p.last_nack_version() < version) return false;
    auto it = old_nacks.find(connection_of(p));
    return it == old_nacks.end() ||
           it->second != std::make_pair(p.last_nack_time().seconds(), p.last_nack_time().nanos());
  };
  auto done = [&](const admin::v1::ProxyStatus& p) {
    return p.version_applied() >= version || refused_now(p);
  };
  std::map<std::string, int> gone;  // node id: connections missing now
  const absl::Time begun = absl::Now();
  // Until kReconnectWindow no answer is final (an apply right after a
  // restart said "taken by 1 of 1" while another proxy still ran the
  // version before).
  absl::Time settled = absl::InfinitePast();
  bool told_settling = false;
  bool told_partial = false;
  while (true) {
    response.Clear();
    grpc::Status status =
        stub.ListProxies(Context().get(), admin::v1::ListProxiesRequest(), &response);
    if (!status.ok()) {
      // A control plane restarting: new calls are UNAVAILABLE, one on the
      // old channel may end CANCELLED or past its deadline. Asked again.
      const grpc::StatusCode code = status.error_code();
      if ((code == grpc::StatusCode::UNAVAILABLE || code == grpc::StatusCode::CANCELLED ||
           code == grpc::StatusCode::DEADLINE_EXCEEDED) &&
          absl::Now() < deadline) {
        absl::SleepFor(absl::Milliseconds(200));
        continue;
      }
      return RpcFail(status, server);
    }
    std::set<Connection> connected;
    std::map<std::string, int> reconnected;  // new connections, by node id
    bool waiting = false;
    for (const auto& p : response.proxies()) {
      const Connection c = connection_of(p);
      connected.insert(c);
      if (first && unchanged && p.version_applied() < version &&
          p.last_nack_version() >= version) {
        old_nacks[c] = {p.last_nack_time().seconds(), p.last_nack_time().nanos()};
      }
      if (first) {
        at_start.insert(c);
        if (!done(p)) pending.insert(c);
      } else if (!at_start.count(c)) {
        ++reconnected[c.first];
      }
      if (done(p)) pending.erase(c);  // took (or refused) it, whatever comes next
      waiting = waiting || !done(p);
    }
    if (first) {
      const absl::Duration serving = absl::Seconds(response.serving_for().seconds()) +
                                     absl::Nanoseconds(response.serving_for().nanos());
      if (response.has_serving_for() && serving < kReconnectWindow) {
        settled = absl::Now() + (kReconnectWindow - serving);
      }
    }
    first = false;
    // Per node id: a new connection stands first for a start connection
    // that was done and left (a restarted proxy that had taken the
    // version), then for a pending one that left.
    gone.clear();
    std::map<std::string, int> done_gone;
    for (const Connection& c : at_start) {
      if (connected.count(c)) continue;
      ++(pending.count(c) ? gone[c.first] : done_gone[c.first]);
    }
    for (auto it = gone.begin(); it != gone.end();) {
      it->second -= std::max(0, reconnected[it->first] - done_gone[it->first]);
      it = it->second > 0 ? std::next(it) : gone.erase(it);
    }
    // A replica that has not read the others' proxies (etcd was out of
    // reach, and is back since a moment) lists its own alone: "no proxy is
    // connected", exit 0, while the others' proxies ran the version before.
    const bool partial = response.has_fleet_unread_for();
    if (!waiting && gone.empty() && absl::Now() < settled && absl::Now() < deadline) {
      if (!told_settling) {
        told_settling = true;
        std::cerr << "sluice-control started less than "
                  << absl::FormatDuration(kReconnectWindow)
                  << " ago: waiting for proxies that were connected before to come back\n";
      }
    } else if (!waiting && gone.empty() && partial && absl::Now() < deadline) {
      if (!told_partial) {
        told_partial = true;
        std::cerr << "sluice-control has not read the other replicas' proxies for "
                  << response.fleet_unread_for().seconds()
                  << "s (etcd out of reach): waiting for it to read them\n";
      }
    } else if ((!waiting && gone.empty()) || absl::Now() >= deadline) {
      break;
    }
    // Asked every 20 ms for the first 2 s (a fleet often takes a change
    // within tens of milliseconds: the wait ends as soon), then every 200 ms.
    absl::SleepFor(absl::Now() - begun < absl::Seconds(2) ? absl::Milliseconds(20)
                                                         : absl::Milliseconds(200));
  }
  int took = 0, refused = 0, silent = 0;
  for (const auto& p : response.proxies()) {
    if (p.version_applied() >= version) {
      ++took;
    } else if (p.last_nack_version() >= version) {
      ++refused;
      std::cerr << "proxy " << Printable(p.node().id()) << " refused version "
                << p.last_nack_version() << ": " << Printable(p.last_nack_error()) << "\n";
    } else if (p.has_replica_silent_for()) {
      ++silent;
      std::cerr << "proxy " << Printable(p.node().id()) << " is connected to control-plane replica "
                << Printable(p.replica()) << ", which has not reported for "
                << p.replica_silent_for().seconds()
                << "s (hung, or cut off from etcd): it may still run version "
                << p.version_applied() << " until it moves to a live replica\n";
    } else {
      ++silent;
      std::cerr << "proxy " << Printable(p.node().id()) << " has not answered (it runs version "
                << p.version_applied() << ")\n";
    }
  }
  int disconnected = 0;
  for (const auto& [id, count] : gone) {
    disconnected += count;
    std::cerr << "proxy " << Printable(id) << (count > 1 ? absl::StrCat(" (", count, " of that id)") : "")
              << " disconnected before taking version " << version
              << " (it keeps serving the version it had)\n";
  }
  const int all = response.proxies_size() + disconnected;
  const bool unknown = response.has_fleet_unread_for();
  if (unknown) {
    std::cerr << "the other control-plane replicas' proxies are not known (this sluice-control "
                 "has not read them for "
              << response.fleet_unread_for().seconds()
              << "s: etcd out of reach): they may still run the version before; ask another "
                 "replica (--server) with sluicectl proxies\n";
  }
  if (all == 0) {
    std::cout << "version " << version
              << (unknown ? ": no proxy of this replica is connected\n"
                          : ": no proxy is connected\n");
    return unknown ? 1 : 0;
  }
  std::cout << "version " << version << ": taken by " << took << " of " << all << " proxies";
  if (refused > 0) std::cout << ", refused by " << refused << " (they keep their last version)";
  if (silent > 0) {
    std::cout << ", " << silent << " did not answer within " << absl::FormatDuration(timeout);
  }
  if (disconnected > 0) std::cout << ", " << disconnected << " disconnected";
  std::cout << "\n";
  return refused == 0 && silent == 0 && gone.empty() && !unknown ? 0 : 1;
}

// --timeout for --wait: default 30s, 1s..10m.
bool WaitTimeout(const ParsedFlags& flags, absl::Duration* timeout, std::string* error) {
  *timeout = absl::Seconds(30);
  auto it = flags.values.find("timeout");
  if (it == flags.values.end()) return true;
  if (!flags.switches.count("wait")) {
    *error = "--timeout goes with --wait";
    return false;
  }
  if (!absl::ParseDuration(it->second, timeout) || *timeout < absl::Seconds(1) ||
      *timeout > absl::Minutes(10)) {
    *error = absl::StrCat("--timeout ", it->second, ": expected a duration of 1s..10m");
    return false;
  }
  return true;
}

// Waits until rollout `id` is decided; 0 when promoted, 1 when rolled back.
// A control plane that cannot be reached (restarting, a network blip) is
// asked again for up to kWaitOutage; its answer then decides (a restart
// aborts the rollout).
constexpr absl::Duration kWaitOutage = absl::Minutes(2);
int WaitForRollout(admin::v1::AdminService::Stub& stub, const std::string& server,
                   const std::string& id, uint64_t* decision_version = nullptr) {
  absl::Time unreachable_since = absl::InfiniteFuture();
  while (true) {
    admin::v1::GetRolloutResponse response;
    grpc::Status status =
        stub.GetRollout(Context().get(), admin::v1::GetRolloutRequest(), &response);
    const bool transient = status.error_code() == grpc::StatusCode::UNAVAILABLE ||
                           status.error_code() == grpc::StatusCode::CANCELLED ||
                           status.error_code() == grpc::StatusCode::DEADLINE_EXCEEDED;
    if (transient) {
      const absl::Time now = absl::Now();
      if (unreachable_since == absl::InfiniteFuture()) {
        unreachable_since = now;
        std::cerr << "lost sluice-control at " << server << " (" << status.error_message()
                  << "); asking again for up to " << absl::FormatDuration(kWaitOutage) << "\n";
      }
      if (now - unreachable_since < kWaitOutage) {
        absl::SleepFor(absl::Seconds(1));
        continue;
      }
    }
    if (!status.ok()) return RpcFail(status, server);
    unreachable_since = absl::InfiniteFuture();
    if (response.rollout().id() != id) {
      return Fail(absl::StrCat("rollout ", id, " is no longer known (sluice-control restarted?); "
                               "see sluicectl history"));
    }
    if (!response.running()) {
      PrintRollout(response.rollout(), false);
      if (decision_version != nullptr) *decision_version = response.rollout().decision_version();
      return response.rollout().state() == admin::v1::Rollout::PROMOTED ? 0 : 1;
    }
    absl::SleepFor(absl::Milliseconds(500));
  }
}

std::string WithOrigins(const std::string& errors, const std::vector<LoadedResource>& loaded);

int StartCanary(admin::v1::AdminService::Stub& stub, const std::string& server,
                const ParsedFlags& flags, const ChangeFlags& change,
                const std::vector<LoadedResource>& loaded, absl::Duration wait_timeout) {
  auto canary = flags.values.find("canary");
  auto verify_flag = flags.values.find("verify");
  if (canary == flags.values.end() || verify_flag == flags.values.end()) {
    return UsageFail("a canary rollout needs both --canary GROUP|N% and --verify DURATION");
  }
  admin::v1::StartRolloutRequest request;
  for (const auto& r : loaded) *request.add_resources() = r.resource;
  request.set_author(Author());
  request.set_message(change.message);
  request.set_if_version(change.if_version);
  const std::string& selection = canary->second;
  if (!selection.empty() && selection.back() == '%') {
    uint32_t percent = 0;
    if (!absl::SimpleAtoi(selection.substr(0, selection.size() - 1), &percent) ||
        percent < 1 || percent > 99) {
      return UsageFail(absl::StrCat("--canary ", selection, ": expected a node group or 1%..99%"));
    }
    request.set_canary_percent(percent);
  } else if (selection.empty()) {
    return UsageFail("--canary needs a node group or a share such as 20%");
  } else {
    request.set_canary_group(selection);
  }
  absl::Duration verify;
  if (!absl::ParseDuration(verify_flag->second, &verify) || verify < absl::Seconds(1) ||
      verify > absl::Hours(1)) {
    return UsageFail(absl::StrCat("--verify ", verify_flag->second, ": expected a duration of 1s..1h"));
  }
  request.set_verify_ms(static_cast<uint32_t>(absl::ToInt64Milliseconds(verify)));
  admin::v1::RolloutThresholds* t = request.mutable_thresholds();
  if (auto it = flags.values.find("max-5xx-rate"); it != flags.values.end()) {
    double rate = 0;
    if (!absl::SimpleAtod(it->second, &rate) || !(rate >= 0 && rate <= 1)) {
      return UsageFail(absl::StrCat("--max-5xx-rate ", it->second,
                               ": expected 0..1 (0.01 is one percentage point)"));
    }
    t->set_max_5xx_rate_increase(rate);
  }
  if (auto it = flags.values.find("max-4xx-rate"); it != flags.values.end()) {
    double rate = 0;
    if (!absl::SimpleAtod(it->second, &rate) || !(rate >= 0 && rate <= 1)) {
      return UsageFail(absl::StrCat("--max-4xx-rate ", it->second,
                                    ": expected 0..1 (0.1 is ten percentage points; 1: 4xx not "
                                    "judged)"));
    }
    t->set_max_4xx_rate_increase(rate);
  }
  if (auto it = flags.values.find("max-p99-ratio"); it != flags.values.end()) {
    double ratio = 0;
    if (!absl::SimpleAtod(it->second, &ratio) || !(ratio >= 1 && ratio <= 1000)) {
      return UsageFail(absl::StrCat("--max-p99-ratio ", it->second, ": expected 1..1000"));
    }
    t->set_max_p99_ratio(ratio);
  }
  if (auto it = flags.values.find("p99-slack"); it != flags.values.end()) {
    absl::Duration slack;
    if (!absl::ParseDuration(it->second, &slack) || slack < absl::ZeroDuration() ||
        slack > absl::Hours(1)) {
      return UsageFail(
          absl::StrCat("--p99-slack ", it->second, ": expected a duration like 10ms, up to 1h"));
    }
    t->set_p99_slack_ms(absl::ToDoubleMilliseconds(slack));
  }
  if (auto it = flags.values.find("min-requests"); it != flags.values.end()) {
    uint64_t min = 0;
    if (!absl::SimpleAtoi(it->second, &min)) {
      return UsageFail(absl::StrCat("--min-requests ", it->second, ": expected a number"));
    }
    t->set_min_requests(min);
  }
  if (auto it = flags.values.find("on-no-traffic"); it != flags.values.end()) {
    if (it->second != "abort" && it->second != "promote") {
      return UsageFail(absl::StrCat("--on-no-traffic ", it->second, ": expected abort or promote"));
    }
    t->set_promote_without_traffic(it->second == "promote");
  }
  admin::v1::StartRolloutResponse response;
  change_sent = true;
  grpc::Status status = stub.StartRollout(Context().get(), request, &response);
  change_sent = change_sent && !status.ok();  // answered: known
  if (status.error_code() == grpc::StatusCode::ABORTED) {
    return ConflictFail(stub, status, change.if_version);
  }
  if (!status.ok()) {
    if (NotAboutTheRequest(status)) return RpcFail(status, server);
    return Fail(absl::StrCat("nothing applied:\n", WithOrigins(status.error_message(), loaded)));
  }
  const admin::v1::Rollout& r = response.rollout();
  PrintDiff(response.diff());
  std::cout << "canary rollout " << r.id() << ": version " << r.candidate_version() << " to "
            << CanariesText(r) << "; the rest stays on version " << r.stable_version()
            << "; verifying for " << absl::FormatDuration(verify)
            << " once the canaries run it\n";
  PrintWarnings(response.warning());
  if (flags.switches.count("wait")) {
    std::cout.flush();
    uint64_t decision = 0;
    int verdict = WaitForRollout(stub, server, r.id(), &decision);
    // Either way a version goes to every proxy: see that they take it (a
    // proxy outside the canaries may refuse what they could not test).
    if (decision != 0) {
      std::cout.flush();
      if (WaitForFleet(stub, server, decision, wait_timeout) != 0) return 1;
    }
    return verdict;
  }
  std::cout << "follow it with: sluicectl rollout status\n";
  return 0;
}

int RolloutCommand(admin::v1::AdminService::Stub& stub, const std::string& server,
                   const ParsedFlags& flags) {
  const auto& args = flags.positional;  // "rollout", VERB
  if (args.size() > 2) return ExtraArgument(absl::StrCat("rollout ", args[1]), args, 2);
  if (args.size() != 2) return UsageFail("rollout needs status, promote or abort");
  if (args[1] == "status") {
    admin::v1::GetRolloutResponse response;
    grpc::Status status =
        stub.GetRollout(Context().get(), admin::v1::GetRolloutRequest(), &response);
    if (!status.ok()) {
      if (NotAboutTheRequest(status)) return RpcFail(status, server);
      return Fail(status.error_message());
    }
    std::string format = "table";
    if (auto it = flags.values.find("o"); it != flags.values.end()) format = it->second;
    if (format == "json") {
      PrintJson(response);
      return 0;
    }
    if (format != "table") return UsageFail(absl::StrCat("-o ", format, ": expected table or json"));
    PrintRollout(response.rollout(), response.running());
    return 0;
  }
  if (args[1] != "promote" && args[1] != "abort") {
    return UsageFail(absl::StrCat("rollout ", args[1], ": expected status, promote or abort"));
  }
  absl::Duration wait_timeout;
  std::string error;
  if (!WaitTimeout(flags, &wait_timeout, &error)) return UsageFail(error);
  std::string message;
  if (auto it = flags.values.find("m"); it != flags.values.end()) message = it->second;
  admin::v1::Rollout decided;
  grpc::Status status;
  if (args[1] == "promote") {
    admin::v1::PromoteRolloutRequest request;
    request.set_author(Author());
    request.set_message(message);
    admin::v1::PromoteRolloutResponse response;
    change_sent = true;
    status = stub.PromoteRollout(Context().get(), request, &response);
    change_sent = change_sent && !status.ok();  // answered: known
    decided = response.rollout();
  } else {
    admin::v1::AbortRolloutRequest request;
    request.set_author(Author());
    request.set_message(message);
    admin::v1::AbortRolloutResponse response;
    change_sent = true;
    status = stub.AbortRollout(Context().get(), request, &response);
    change_sent = change_sent && !status.ok();  // answered: known
    decided = response.rollout();
  }
  if (!status.ok()) {
    if (NotAboutTheRequest(status)) return RpcFail(status, server);
    return Fail(status.error_message());
  }
  PrintRollout(decided, false);
  // As apply --wait: the decision is a version every proxy must take (one
  // outside the canaries may refuse what they could not test).
  if (flags.switches.count("wait") && decided.decision_version() != 0) {
    std::cout.flush();
    return WaitForFleet(stub, server, decided.decision_version(), wait_timeout);
  }
  return 0;
}

// The control plane's errors about the whole config (a reference to a
// resource that does not exist, a port two listeners share) name a
// resource, not a file: each line naming one of `loaded` gets its origin
// ("FILE, document N (line L): ") in front, as the loader's own errors have.
std::string WithOrigins(const std::string& errors, const std::vector<LoadedResource>& loaded) {
  // "Kind \"name\"" -> each of its documents
  std::map<std::string, std::vector<const LoadedResource*>> origins;
  for (const LoadedResource& r : loaded) {
    origins[api::Describe(api::IdOf(r.resource))].push_back(&r);
  }
  // "appears twice" lines so far per resource: the n-th is about its
  // (n+1)-th document (three copies: documents 2 and 3, not 2 twice).
  std::map<std::string, size_t> repeats;
  std::vector<std::string> lines = absl::StrSplit(errors, '\n');
  for (std::string& line : lines) {
    size_t colon = line.find("\": ");
    if (colon == std::string::npos) continue;
    auto it = origins.find(line.substr(0, colon + 1));
    if (it == origins.end()) continue;
    size_t copy = 0;
    if (absl::StrContains(line, "appears twice") && it->second.size() > 1) {
      copy = std::min(++repeats[it->first], it->second.size() - 1);
    }
    const LoadedResource& r = *it->second[copy];
    // "Kind \"name\": FIELD: reason": a field an apply-only rule refused has
    // its own line.
    const size_t field_end = line.find(": ", colon + 3);
    const std::string path =
        field_end == std::string::npos ? "" : line.substr(colon + 3, field_end - colon - 3);
    auto field = r.field_lines.find(path);
    // Else the field's own line in its document (a route's in a table of
    // thousands, not the table's first line).
    const int field_line = field != r.field_lines.end() ? field->second : FieldLine(r, path);
    line = field_line > 0 ? absl::StrCat(r.where, ", line ", field_line, ": ", line)
                          : absl::StrCat(r.origin, ": ", line);
    // And where it was first.
    if (copy > 0) absl::StrAppend(&line, " (first in ", it->second[0]->origin, ")");
  }
  return absl::StrJoin(lines, "\n");
}

int Apply(admin::v1::AdminService::Stub& stub, const std::string& server,
          const ParsedFlags& flags) {
  auto file = flags.values.find("f");
  if (file == flags.values.end() || file->second.empty()) {
    return UsageFail("apply needs -f FILE|DIR");
  }
  if (flags.positional.size() > 1) {
    return UsageFail(absl::StrCat("apply takes one -f FILE|DIR and no other argument: '",
                                  Printable(flags.positional[1]),
                                  "' (to apply several files together, put them in one "
                                  "directory and give -f DIR)"));
  }
  ChangeFlags change;
  std::string error;
  if (!ParseChangeFlags(flags, &change, &error)) return UsageFail(error);
  absl::Duration wait_timeout;
  if (!WaitTimeout(flags, &wait_timeout, &error)) return UsageFail(error);
  auto loaded = LoadPath(file->second);
  if (!loaded.ok()) return Fail(absl::StrCat("nothing applied:\n", loaded.status().message()));
  // A `get -o json` export carries the version it was taken at: applied
  // back, it must not undo what changed since (as kubectl's resourceVersion).
  uint64_t exported = 0;
  if (!flags.values.count("if-version")) {
    for (const auto& r : *loaded) {
      if (r.exported_version > 0 && (exported == 0 || r.exported_version < exported)) {
        exported = r.exported_version;
      }
    }
    if (exported > 0) change.if_version = exported;
  }
  auto stale_hint = [&] {
    if (exported > 0) {
      std::cerr << "the file is a `get -o json` export of version " << exported
                << " (its \"version\"), and the versions since changed resources it holds "
                   "(or are no longer kept): applying it would undo those changes. To apply it "
                   "anyway, give --if-version with the current version, or remove its "
                   "\"version\" field\n";
    }
  };
  if (flags.values.count("canary") || flags.values.count("verify")) {
    if (flags.switches.count("dry-run")) {
      return UsageFail("--canary and --dry-run do not go together: dry-run the change without "
                  "--canary first");
    }
    return StartCanary(stub, server, flags, change, *loaded, wait_timeout);
  }
  admin::v1::ApplyRequest request;
  request.set_dry_run(flags.switches.count("dry-run") > 0);
  request.set_author(Author());
  request.set_message(change.message);
  request.set_if_version(change.if_version);
  for (const auto& r : *loaded) *request.add_resources() = r.resource;
  admin::v1::ApplyResponse response;
  change_sent = !request.dry_run();
  grpc::Status status = stub.Apply(Context().get(), request, &response);
  change_sent = change_sent && !status.ok();  // answered: known
  if (status.error_code() == grpc::StatusCode::ABORTED && exported > 0 &&
      absl::StrContains(status.error_message(), "is ahead of this store")) {
    // Versions only grow: an export ahead of the store is no stale copy
    // of it but another store's (a restore into a new one), and there is
    // nothing since to undo.
    std::cerr << "note: the file is a `get -o json` export of version " << exported
              << ", ahead of this store's: it comes from another store (or from before this "
                 "one was reset), so it is applied without the stale-file check\n";
    request.set_if_version(0);
    response.Clear();
    change_sent = !request.dry_run();
    status = stub.Apply(Context().get(), request, &response);
    change_sent = change_sent && !status.ok();
  }
  if (status.error_code() == grpc::StatusCode::ABORTED && exported > 0) {
    // As kubectl's resourceVersion is each object's: when no version since
    // the export touched a resource of the file (the history shows every
    // one), nothing would be undone: applied at the current version. An
    // export of one Cluster was refused for a change to another.
    if (const uint64_t current = UntouchedSince(stub, exported, *loaded); current > 0) {
      std::cerr << "note: the file is a `get -o json` export of version " << exported
                << "; the versions since changed none of its resources, so it is applied at "
                   "version "
                << current << "\n";
      request.set_if_version(current);
      response.Clear();
      change_sent = !request.dry_run();
      status = stub.Apply(Context().get(), request, &response);
      change_sent = change_sent && !status.ok();
    }
  }
  if (status.error_code() == grpc::StatusCode::ABORTED) {
    const int code = ConflictFail(stub, status, change.if_version);
    stale_hint();
    return code;
  }
  if (!status.ok()) {
    if (NotAboutTheRequest(status)) return RpcFail(status, server);
    return Fail(absl::StrCat("nothing applied:\n", WithOrigins(status.error_message(), *loaded)));
  }
  // A dry run shows each changed resource's lines: the stored YAML (as get
  // prints it) against the one applied, credentials sealed and secrets
  // redacted as the control plane would.
  const ChangedLines lines = [&](const api::ResourceId& id) -> std::string {
    admin::v1::GetRequest get;
    get.set_kind(id.first);
    get.set_name(id.second);
    admin::v1::GetResponse stored;
    if (grpc::Status got = stub.Get(Context().get(), get, &stored); !got.ok()) {
      return absl::StrCat("    (its stored lines could not be read: ", got.error_message(), ")\n");
    }
    for (const LoadedResource& r : *loaded) {
      if (api::IdOf(r.resource) != id) continue;
      api::Resource mine = r.resource;
      api::SealCredentials(&mine, &stored.resource());
      api::RedactSecrets(&mine);
      return ResourceLines(stored.resource(), mine);
    }
    return "";
  };
  PrintOutcome(response.dry_run(), response.diff(), response.version(),
               response.dry_run() ? &lines : nullptr);
  PrintWarnings(response.warning());
  if (flags.switches.count("wait") && !response.dry_run()) {
    // No change: the version in force, which a wait that timed out before
    // may still be waiting for, or a refusal whose cause was fixed since.
    std::cout.flush();
    return WaitForFleet(stub, server, response.version(), wait_timeout,
                        DiffEmpty(response.diff()));
  }
  if (!response.dry_run()) {
    // Also when nothing changed: "no change" must not pass for "live".
    std::cout.flush();
    NoteRefusingProxies(stub, response.version());
  }
  return 0;
}

int Get(admin::v1::AdminService::Stub& stub, const std::string& server,
        const ParsedFlags& flags) {
  std::string format = "table";
  if (auto it = flags.values.find("o"); it != flags.values.end()) format = it->second;
  if (format != "table" && format != "yaml" && format != "json") {
    return UsageFail(absl::StrCat("-o ", format, ": expected table, yaml or json"));
  }
  const auto& args = flags.positional;  // "get", [KIND, [NAME]]
  if (args.size() > 3) return UsageFail("get takes at most KIND and NAME");
  std::vector<api::Resource> resources;
  uint64_t version = 0;
  config::v1::ResourceKind kind = config::v1::RESOURCE_KIND_UNSPECIFIED;
  if (args.size() >= 2) {
    auto parsed = api::ParseKind(args[1]);
    if (!parsed.ok()) return UsageFail(std::string(parsed.status().message()));
    kind = *parsed;
  }
  if (args.size() == 3) {
    admin::v1::GetRequest request;
    request.set_kind(kind);
    request.set_name(args[2]);
    admin::v1::GetResponse response;
    grpc::Status status = stub.Get(Context().get(), request, &response);
    if (!status.ok()) return RpcFail(status, server);
    resources.push_back(response.resource());
    version = response.version();
    NoteStoreUnread(response.store_unread_for());
  } else {
    admin::v1::ListRequest request;
    request.set_kind(kind);
    admin::v1::ListResponse response;
    grpc::Status status = stub.List(Context().get(), request, &response);
    if (!status.ok()) return RpcFail(status, server);
    resources.assign(response.resources().begin(), response.resources().end());
    version = response.version();
    NoteStoreUnread(response.store_unread_for());
  }
  // The server redacts too; this covers a server older than this client.
  for (auto& r : resources) api::RedactSecrets(&r);
  if (format == "yaml") {
    for (const auto& r : resources) std::cout << "---\n" << ToYaml(r);
  } else if (format == "json") {
    std::vector<std::string> items;
    for (const auto& r : resources) items.push_back(ToJson(r));
    if (args.size() == 3) {
      // One resource, with the version it was read at (applied back, it
      // is as `--if-version N`, as the list form's).
      std::cout << "{\"version\":" << version << "," << items[0].substr(1) << "\n";
    } else {
      std::cout << "{\"version\":" << version << ",\"items\":[" << absl::StrJoin(items, ",")
                << "]}\n";
    }
  } else {
    std::cout << absl::StrFormat("%-12s %-28s %s\n", "KIND", "NAME", "SUMMARY");
    for (const auto& r : resources) {
      std::cout << absl::StrFormat("%-12s %-28s %s\n", api::KindName(api::KindOf(r)),
                                   api::NameOf(r), Summary(r));
    }
    std::cout << "version " << version << "\n";
  }
  return 0;
}

int Delete(admin::v1::AdminService::Stub& stub, const std::string& server,
           const ParsedFlags& flags) {
  const auto& args = flags.positional;
  auto file = flags.values.find("f");
  if (file != flags.values.end() && args.size() > 1) {
    return UsageFail(absl::StrCat("delete takes KIND NAME... or -f FILE|DIR, not both: '",
                                  Printable(args[1]), "'"));
  }
  if (file == flags.values.end() && args.size() < 3) {
    return UsageFail(absl::StrCat("delete takes KIND and NAME (or more names), or -f FILE|DIR; got ",
                                  args.size() - 1, args.size() == 2 ? " argument" : " arguments"));
  }
  std::vector<api::ResourceId> ids;
  if (file == flags.values.end()) {
    auto kind = api::ParseKind(args[1]);
    if (!kind.ok()) return UsageFail(std::string(kind.status().message()));
    for (size_t i = 2; i < args.size(); ++i) ids.emplace_back(*kind, args[i]);
  }
  ChangeFlags change;
  std::string error;
  if (!ParseChangeFlags(flags, &change, &error)) return UsageFail(error);
  absl::Duration wait_timeout;
  if (!WaitTimeout(flags, &wait_timeout, &error)) return UsageFail(error);
  if (file != flags.values.end()) {
    if (file->second.empty()) return UsageFail("delete -f needs FILE|DIR");
    LoadOptions names_only;
    names_only.validate = false;
    auto loaded = LoadPath(file->second, names_only);
    if (!loaded.ok()) return Fail(absl::StrCat("nothing deleted:\n", loaded.status().message()));
    for (const LoadedResource& r : *loaded) ids.push_back(api::IdOf(r.resource));
    if (ids.empty()) return Fail(absl::StrCat("nothing deleted: ", file->second, " names no resource"));
  }
  admin::v1::DeleteRequest request;
  request.set_kind(ids[0].first);
  request.set_name(ids[0].second);
  for (size_t i = 1; i < ids.size(); ++i) {
    config::v1::ResourceKey* key = request.add_more();
    key->set_kind(ids[i].first);
    key->set_name(ids[i].second);
  }
  request.set_dry_run(flags.switches.count("dry-run") > 0);
  request.set_author(Author());
  request.set_message(change.message);
  request.set_if_version(change.if_version);
  const size_t asked = std::set<api::ResourceId>(ids.begin(), ids.end()).size();
  // A sluice-control older than this sluicectl reads the first name only:
  // several are tried as a dry run first, so that it deletes none of them.
  auto took_fewer = [&](const admin::v1::DeleteResponse& answer) {
    return static_cast<size_t>(answer.diff().removed_size()) < asked;
  };
  const std::string fewer = absl::StrCat(
      "this sluice-control takes one name per delete (it is older than this sluicectl): ",
      "nothing deleted; delete the ", asked, " resources one by one");
  if (asked > 1 && !request.dry_run()) {
    admin::v1::DeleteRequest trial = request;
    trial.set_dry_run(true);
    admin::v1::DeleteResponse tried;
    auto context = Context();
    // Not counted or audited as an operator's dry run.
    context->AddMetadata(api::kSluicectlCheckMetadata, "delete-names");
    grpc::Status status = stub.Delete(context.get(), trial, &tried);
    if (status.ok() && took_fewer(tried)) return Fail(fewer);
    // Not reached, silent, or refused for its token: the delete itself is
    // not sent (it went after a 30 s silence, and a refusal was audited
    // twice: regression probe).
    if (!status.ok() && NotAboutTheRequest(status)) return RpcFail(status, server);
  }
  admin::v1::DeleteResponse response;
  change_sent = true;
  grpc::Status status = stub.Delete(Context().get(), request, &response);
  change_sent = change_sent && !status.ok();  // answered: known
  if (status.error_code() == grpc::StatusCode::ABORTED) {
    return ConflictFail(stub, status, change.if_version);
  }
  if (!status.ok()) return RpcFail(status, server);
  PrintOutcome(response.dry_run(), response.diff(), response.version());
  PrintWarnings(response.warning());
  if (took_fewer(response)) {
    if (response.dry_run()) return Fail(fewer);
    // Only if it changed in between: say what happened.
    return Fail(absl::StrCat("the control plane removed ", response.diff().removed_size(),
                             " of the ", asked, " resources named (a sluice-control older than "
                             "this sluicectl takes one per delete): delete the others one by one"));
  }
  if (flags.switches.count("wait") && !response.dry_run()) {
    std::cout.flush();
    return WaitForFleet(stub, server, response.version(), wait_timeout);
  }
  return 0;
}

int History(admin::v1::AdminService::Stub& stub, const std::string& server,
            const ParsedFlags& flags) {
  if (flags.positional.size() != 1) return UsageFail("history takes no arguments");
  std::string format = "table";
  if (auto it = flags.values.find("o"); it != flags.values.end()) format = it->second;
  if (format != "table" && format != "json") {
    return UsageFail(absl::StrCat("-o ", format, ": expected table or json"));
  }
  admin::v1::HistoryRequest request;
  if (auto it = flags.values.find("limit"); it != flags.values.end()) {
    uint32_t limit = 0;
    if (!absl::SimpleAtoi(it->second, &limit) || limit == 0) {
      return UsageFail(absl::StrCat("--limit ", it->second, ": expected a number (1 or more)"));
    }
    request.set_limit(limit);
  }
  admin::v1::HistoryResponse response;
  grpc::Status status = stub.History(Context().get(), request, &response);
  if (!status.ok()) return RpcFail(status, server);
  NoteStoreUnread(response.store_unread_for());
  if (format == "json") {
    PrintJson(response);
    return 0;
  }
  PrintHistoryTable({response.entries().begin(), response.entries().end()});
  std::cout << "current version " << response.current_version() << "; up to "
            << response.retention() << " versions kept\n";
  return 0;
}

// The edit script from x to y: each line with ' ' (kept), '-' (removed) or
// '+' (added), removed lines before the added ones of each change, as diff
// -u prints them. Myers' O(ND) algorithm ("An O(ND) Difference Algorithm
// and Its Variations", 1986): time (N+M)·D and D² memory for D edits, so
// a few changes in a table of 60,000 lines cost little. Empty when more
// than max_edits lines differ.
std::vector<std::pair<char, absl::string_view>> EditScript(
    const std::vector<absl::string_view>& x, const std::vector<absl::string_view>& y,
    int max_edits) {
  const int n = static_cast<int>(x.size()), m = static_cast<int>(y.size());
  const int limit = std::min(n + m, max_edits);
  // v[k + limit + 1]: the furthest x on diagonal k (x - y) after d edits;
  // trace[d] keeps the diagonals -d..d as they were before step d.
  std::vector<int> v(2 * static_cast<size_t>(limit) + 3, 0);
  const int offset = limit + 1;
  std::vector<std::vector<int>> trace;
  int found = -1;
  for (int d = 0; d <= limit && found < 0; ++d) {
    trace.emplace_back(v.begin() + offset - d - 1, v.begin() + offset + d + 2);
    for (int k = -d; k <= d; k += 2) {
      int i = (k == -d || (k != d && v[offset + k - 1] < v[offset + k + 1]))
                  ? v[offset + k + 1]       // a line of y added
                  : v[offset + k - 1] + 1;  // a line of x removed
      int j = i - k;
      while (i < n && j < m && x[i] == y[j]) ++i, ++j;
      v[offset + k] = i;
      if (i >= n && j >= m) {
        found = d;
        break;
      }
    }
  }
  if (found < 0) return {};
  std::vector<std::pair<char, absl::string_view>> script;
  int i = n, j = m;
  for (int d = found; d > 0; --d) {
    const std::vector<int>& before = trace[d];  // diagonals -d-1..d+1
    auto at = [&](int k) { return before[k + d + 1]; };
    const int k = i - j;
    const int prev_k = (k == -d || (k != d && at(k - 1) < at(k + 1))) ? k + 1 : k - 1;
    const int prev_i = at(prev_k), prev_j = prev_i - prev_k;
    while (i > prev_i && j > prev_j) script.emplace_back(' ', x[--i]), --j;
    if (prev_k == k + 1) {
      script.emplace_back('+', y[--j]);
    } else {
      script.emplace_back('-', x[--i]);
    }
  }
  while (i > 0 && j > 0) script.emplace_back(' ', x[--i]), --j;
  std::reverse(script.begin(), script.end());
  // Within each run of changes, the removed lines first.
  for (size_t from = 0; from < script.size();) {
    size_t to = from;
    while (to < script.size() && script[to].first != ' ') ++to;
    std::stable_partition(script.begin() + from, script.begin() + to,
                          [](const auto& line) { return line.first == '-'; });
    from = to + 1;
  }
  return script;
}

// The lines of `a` and `b` with "-", "+" or " " in front (EditScript);
// unchanged lines only within `context` of a change. The lines both start
// and end with are set aside first.
std::string LineDiff(const std::string& a, const std::string& b, size_t context) {
  // A final newline ends the last line; it starts no empty one.
  auto lines_of = [](absl::string_view text) {
    if (absl::EndsWith(text, "\n")) text.remove_suffix(1);
    return std::vector<absl::string_view>(absl::StrSplit(text, '\n'));
  };
  std::vector<absl::string_view> x = lines_of(a);
  std::vector<absl::string_view> y = lines_of(b);
  size_t head = 0;
  while (head < x.size() && head < y.size() && x[head] == y[head]) ++head;
  size_t tail = 0;
  while (tail < x.size() - head && tail < y.size() - head &&
         x[x.size() - 1 - tail] == y[y.size() - 1 - tail]) {
    ++tail;
  }
  const std::vector<absl::string_view> x_middle(x.begin() + head, x.end() - tail);
  const std::vector<absl::string_view> y_middle(y.begin() + head, y.end() - tail);
  constexpr int kMaxEdits = 4000;
  std::vector<std::pair<char, absl::string_view>> middle =
      EditScript(x_middle, y_middle, kMaxEdits);
  if (middle.empty() && !(x_middle.empty() && y_middle.empty())) {
    return absl::StrCat("    (more than ", kMaxEdits,
                        " lines removed or added: too many to show line by line)\n");
  }
  std::vector<std::pair<char, absl::string_view>> lines;
  lines.reserve(head + middle.size() + tail);
  for (size_t k = 0; k < head; ++k) lines.emplace_back(' ', x[k]);
  lines.insert(lines.end(), middle.begin(), middle.end());
  for (size_t k = x.size() - tail; k < x.size(); ++k) lines.emplace_back(' ', x[k]);
  // Where a hunk sits (git's hunk-header context, as a path): the lines
  // above the hunk that enclose its first change, each less indented than
  // the one after it, outermost first. Without it a change deep in a table
  // of 200 virtual hosts, whose route names may repeat, could not be placed.
  auto indent = [](absl::string_view line) {
    size_t n = 0;
    while (n < line.size() && line[n] == ' ') ++n;
    return n;
  };
  auto enclosing = [&](size_t k) {
    size_t change = k;
    while (change + 1 < lines.size() && lines[change].first == ' ') ++change;
    std::vector<absl::string_view> path;
    size_t below = indent(lines[change].second);
    for (size_t j = change; j-- > 0 && below > 0;) {
      const absl::string_view line = lines[j].second;
      if (absl::StripAsciiWhitespace(line).empty() || indent(line) >= below) continue;
      below = indent(line);
      if (j < k) path.push_back(absl::StripAsciiWhitespace(line));  // not shown in the hunk
    }
    std::reverse(path.begin(), path.end());
    return absl::StrJoin(path, " > ");
  };
  std::string out;
  size_t last_shown = 0;
  bool shown_any = false;
  for (size_t k = 0; k < lines.size(); ++k) {
    bool near = false;
    for (size_t d = (k >= context ? k - context : 0);
         d < lines.size() && d <= k + context && !near; ++d) {
      near = lines[d].first != ' ';
    }
    if (!near) continue;
    // Unchanged lines left out before a hunk: say so, and where it is.
    if ((shown_any && k > last_shown + 1) || (!shown_any && k > 0)) {
      const std::string where = enclosing(k);
      absl::StrAppend(&out, "    ...", where.empty() ? "" : " in " + where, "\n");
    }
    absl::StrAppend(&out, "    ", std::string(1, lines[k].first), " ", lines[k].second, "\n");
    last_shown = k;
    shown_any = true;
  }
  return out;
}

absl::StatusOr<admin::v1::GetVersionResponse> FetchVersion(
    admin::v1::AdminService::Stub& stub, uint64_t version, grpc::Status* status,
    uint64_t compare_with = 0) {
  admin::v1::GetVersionRequest request;
  request.set_version(version);
  request.set_compare_with(compare_with);
  admin::v1::GetVersionResponse response;
  *status = stub.GetVersion(Context().get(), request, &response);
  if (!status->ok()) return absl::UnknownError(status->error_message());
  static bool noted = false;  // diff asks twice: one note
  if (!noted && response.store_unread_for().seconds() > 0) {
    noted = true;
    NoteStoreUnread(response.store_unread_for());
  }
  return response;
}

int Diff(admin::v1::AdminService::Stub& stub, const std::string& server,
         const ParsedFlags& flags) {
  const auto& args = flags.positional;  // "diff", V1, [V2]
  if (args.size() > 3) return ExtraArgument("diff takes V1 and optionally V2", args, 3);
  if (args.size() < 2) return UsageFail("diff needs V1 and optionally V2");
  uint64_t versions[2] = {0, 0};  // V2 0: the current one
  for (size_t i = 1; i < args.size(); ++i) {
    if (!absl::SimpleAtoi(args[i], &versions[i - 1]) || versions[i - 1] == 0) {
      return UsageFail(absl::StrCat("diff: '", args[i], "' is not a version number"));
    }
  }
  api::ResourceMap content[2];
  uint64_t resolved[2];
  // The server names what changed from the full content (the second fetch
  // compares with the first): the redacted copies cannot show a key change.
  std::set<api::ResourceId> changed;
  for (int k = 0; k < 2; ++k) {
    grpc::Status status;
    auto got = FetchVersion(stub, versions[k], &status, k == 1 ? resolved[0] : 0);
    if (!got.ok()) return RpcFail(status, server);
    resolved[k] = got->version();
    for (auto r : got->resources()) {
      api::RedactSecrets(&r);  // the server redacts too
      content[k][api::IdOf(r)] = std::move(r);
    }
    // (A server from before compare_with names none: the content decides.)
    for (const auto& key : got->changed()) changed.emplace(key.kind(), key.name());
  }
  std::cout << "from version " << resolved[0] << " to version " << resolved[1] << ":\n";
  api::StateDiff diff = api::ComputeDiff(
      content[0], content[1],
      [&](const api::ResourceId& id, const api::Resource& a, const api::Resource& b) {
        return changed.count(id) == 0 && google::protobuf::util::MessageDifferencer::Equals(a, b);
      });
  for (const auto& id : diff.added) std::cout << "+ " << api::Describe(id) << "\n";
  for (const auto& id : diff.removed) std::cout << "- " << api::Describe(id) << "\n";
  for (const auto& id : diff.changed) {
    std::cout << "~ " << api::Describe(id) << "\n";
    std::cout << ResourceLines(content[0].at(id), content[1].at(id));
  }
  std::cout << diff.added.size() << " added, " << diff.changed.size() << " changed, "
            << diff.removed.size() << " removed, " << diff.unchanged << " unchanged\n";
  return 0;
}

int Rollback(admin::v1::AdminService::Stub& stub, const std::string& server,
             const ParsedFlags& flags) {
  const auto& args = flags.positional;  // "rollback", V
  uint64_t version = 0;
  if (args.size() < 2) {
    return UsageFail("rollback needs the version to go back to (see sluicectl history)");
  }
  if (args.size() > 2) {
    return ExtraArgument("rollback takes one version", args, 2);
  }
  if (!absl::SimpleAtoi(args[1], &version) || version == 0) {
    return UsageFail(absl::StrCat("rollback ", Printable(args[1]),
                                  ": a version is a number from 1 (see sluicectl history)"));
  }
  ChangeFlags change;
  std::string error;
  if (!ParseChangeFlags(flags, &change, &error)) return UsageFail(error);
  absl::Duration wait_timeout;
  if (!WaitTimeout(flags, &wait_timeout, &error)) return UsageFail(error);
  admin::v1::RollbackRequest request;
  request.set_version(version);
  request.set_dry_run(flags.switches.count("dry-run") > 0);
  request.set_author(Author());
  // The target stays in the history with a message of the operator's.
  request.set_message(change.message.empty()
                          ? absl::StrCat("rollback to version ", version)
                          : absl::StrCat("rollback to version ", version, ": ", change.message));
  request.set_if_version(change.if_version);
  admin::v1::RollbackResponse response;
  change_sent = true;
  grpc::Status status = stub.Rollback(Context().get(), request, &response);
  change_sent = change_sent && !status.ok();  // answered: known
  if (status.error_code() == grpc::StatusCode::ABORTED) {
    return ConflictFail(stub, status, change.if_version);
  }
  if (!status.ok()) {
    if (NotAboutTheRequest(status)) return RpcFail(status, server);
    return Fail(absl::StrCat("nothing rolled back:\n", status.error_message()));
  }
  // A dry run shows, as apply's does, what each changed resource's fields
  // become: from the current version's content to version V's (both
  // redacted, as the server gives them).
  api::ResourceMap content[2];
  bool fetched = false;
  if (response.dry_run() && !DiffEmpty(response.diff())) {
    grpc::Status now_status, then_status;
    auto now = FetchVersion(stub, 0, &now_status);
    auto then = FetchVersion(stub, version, &then_status);
    fetched = now.ok() && then.ok();
    for (int k = 0; k < 2 && fetched; ++k) {
      for (auto r : (k == 0 ? *now : *then).resources()) {
        api::RedactSecrets(&r);
        content[k][api::IdOf(r)] = std::move(r);
      }
    }
  }
  ChangedLines lines = [&](const api::ResourceId& id) -> std::string {
    auto a = content[0].find(id);
    auto b = content[1].find(id);
    if (a == content[0].end() || b == content[1].end()) return "";
    return ResourceLines(a->second, b->second);
  };
  PrintOutcome(response.dry_run(), response.diff(), response.version(),
               fetched ? &lines : nullptr);
  PrintWarnings(response.warning());
  if (flags.switches.count("wait") && !response.dry_run()) {
    std::cout.flush();
    return WaitForFleet(stub, server, response.version(), wait_timeout);
  }
  return 0;
}

// While a canary rollout runs the current version is its candidate, which
// only the canaries run: said after the version, so that no one reads it as
// rolled out. Empty when none runs (or the call fails).
std::string RolloutNote(admin::v1::AdminService::Stub& stub) {
  admin::v1::GetRolloutResponse rollout;
  if (!stub.GetRollout(Context().get(), admin::v1::GetRolloutRequest(), &rollout).ok() ||
      !rollout.running()) {
    return "";
  }
  return absl::StrCat(" (canary rollout ", rollout.rollout().id(), ": candidate ",
                      rollout.rollout().candidate_version(), " on the canaries, stable ",
                      rollout.rollout().stable_version(), " on the rest)");
}

// How old a proxy's last traffic report is: by the control plane's clock
// when it says (a skewed client clock would make every report look stale
// or fresh), else by this one's.
absl::Duration ReportAge(const admin::v1::ProxyStatus& p) {
  const google::protobuf::Duration age =
      p.has_last_report_age() ? p.last_report_age()
                              : google::protobuf::util::TimeUtil::NanosecondsToTimestamp(
                                    absl::ToUnixNanos(absl::Now())) -
                                    p.last_report_time();
  return absl::Seconds(age.seconds()) + absl::Nanoseconds(age.nanos());
}

// Whether a proxy's last report is past its next two (and 2 s more): the
// proxy stopped reporting (hung, or its stream lost) and its figures are
// no longer the fleet's. `top` leaves them out.
bool ReportIsStale(const admin::v1::ProxyStatus& p) {
  return ReportAge(p) >
         2 * absl::Milliseconds(p.last_report().interval_ms()) + absl::Seconds(2);
}

// Proxies listed by a control-plane replica that stopped reporting: their
// rows are what it last said.
void PrintSilentReplicas(const admin::v1::ListProxiesResponse& response) {
  // Right after a restart the list misses proxies that have yet to come
  // back (their reconnect delay is at most 10 s): say so, or an empty fleet
  // looks lost.
  const absl::Duration serving = absl::Seconds(response.serving_for().seconds()) +
                                 absl::Nanoseconds(response.serving_for().nanos());
  if (response.has_serving_for() && serving < kReconnectWindow) {
    std::cerr << "sluice-control started "
              << ShownDuration(absl::Trunc(serving, absl::Milliseconds(100)))
              << " ago: proxies that were connected before may not be back yet (within "
              << absl::FormatDuration(kReconnectWindow) << ")\n";
  }
  if (response.has_fleet_unread_for()) {
    std::cerr << "this sluice-control has not read the other replicas' proxies for "
              << response.fleet_unread_for().seconds()
              << "s (etcd out of reach): only its own proxies are listed; ask another "
                 "replica (--server) for the rest\n";
  }
  std::map<std::string, std::pair<int64_t, int>> silent;  // replica: seconds, proxies
  for (const auto& p : response.proxies()) {
    if (!p.has_replica_silent_for()) continue;
    auto& [seconds, count] = silent[p.replica()];
    seconds = std::max(seconds, p.replica_silent_for().seconds());
    ++count;
  }
  for (const auto& [replica, silence] : silent) {
    std::cerr << "control-plane replica " << Printable(replica) << " has not reported for "
              << silence.first << "s (hung, or cut off from etcd): its " << silence.second
              << " proxies are shown as it last reported them; they move to a live replica "
                 "when their keepalive gives up\n";
  }
}

int Proxies(admin::v1::AdminService::Stub& stub, const std::string& server,
            const ParsedFlags& flags) {
  if (flags.positional.size() != 1) return UsageFail("proxies takes no arguments");
  admin::v1::ListProxiesResponse response;
  grpc::Status status =
      stub.ListProxies(Context().get(), admin::v1::ListProxiesRequest(), &response);
  if (!status.ok()) return RpcFail(status, server);
  std::string format = "table";
  if (auto it = flags.values.find("o"); it != flags.values.end()) format = it->second;
  if (format == "json") {
    PrintJson(response);
    return 0;
  }
  // Columns as wide as their longest value (a Kubernetes pod name is 28
  // characters and more), at least the header's width.
  int node_width = 20;
  int group_width = 10;
  for (const auto& p : response.proxies()) {
    node_width = std::max(node_width, static_cast<int>(Printable(p.node().id()).size()));
    group_width = std::max(group_width, static_cast<int>(Printable(p.node().group()).size()));
  }
  // A NACK of a version the proxy has taken since (it runs that version or
  // a later one of this store) is kept (why it was refused once), marked as
  // past: it read like a fault still there. A proxy ahead of the store
  // (refusing to go back) is not past it.
  const uint64_t current = response.current_version();
  auto nack_of = [current](const admin::v1::ProxyStatus& p) {
    if (p.last_nack_error().empty()) return std::string("-");
    const bool past =
        p.version_applied() >= p.last_nack_version() && p.version_applied() <= current;
    return absl::StrCat("v", p.last_nack_version(), past ? " (taken since)" : "", ": ",
                        Printable(p.last_nack_error()));
  };
  if (format == "wide") {
    // The table's columns, with each proxy's last traffic report (sent every
    // few seconds) before the NACK, which may run long.
    std::cout << absl::StrFormat(
        "%-*s %-*s %-8s %-8s %-21s %9s %6s %6s %9s %9s %7s %7s %s\n", node_width, "NODE",
        group_width, "GROUP", "VERSION", "PENDING", "CONNECTED", "RPS", "4XX%", "5XX%",
        "P50(ms)", "P99(ms)", "CONNS", "REPORT", "LAST NACK");
    for (const auto& p : response.proxies()) {
      const std::string head = absl::StrFormat(
          "%-*s %-*s %-8d %-8s %-21s", node_width, Printable(p.node().id()), group_width,
          p.node().group().empty() ? "-" : Printable(p.node().group()), p.version_applied(),
          p.version_pending() ? absl::StrCat(p.version_pending()) : "-",
          FormatTime(p.connected_since()));
      const auto& r = p.last_report();
      if (!p.has_last_report_time() || r.interval_ms() == 0) {
        std::cout << absl::StrFormat("%s %9s %6s %6s %9s %9s %7s %7s %s\n", head, "-", "-", "-",
                                     "-", "-", "-", "none", nack_of(p));
        continue;
      }
      double seconds = static_cast<double>(r.interval_ms()) / 1000.0;
      double requests = static_cast<double>(r.requests());
      auto percent = [&](uint64_t n) {
        return requests > 0 ? absl::StrFormat("%.1f", 100.0 * static_cast<double>(n) / requests)
                            : std::string("0.0");
      };
      const int64_t age = absl::ToInt64Seconds(ReportAge(p));
      std::cout << absl::StrFormat("%s %9.1f %6s %6s %9.2f %9.2f %7d %6ds %s\n", head,
                                   requests / seconds, percent(r.responses_4xx()),
                                   percent(r.responses_5xx()), r.p50_ms(), r.p99_ms(),
                                   r.active_connections(), age, nack_of(p));
    }
    std::cout << response.proxies_size() << (response.proxies_size() == 1 ? " proxy" : " proxies")
              << "; current version " << response.current_version() << RolloutNote(stub) << "\n";
    PrintSilentReplicas(response);
    return 0;
  }
  if (format != "table") {
    return UsageFail(absl::StrCat("-o ", format, ": expected table, wide or json"));
  }
  std::cout << absl::StrFormat("%-*s %-*s %-8s %-8s %-21s %s\n", node_width, "NODE",
                               group_width, "GROUP", "VERSION", "PENDING", "CONNECTED",
                               "LAST NACK");
  for (const auto& p : response.proxies()) {
    const std::string nack = nack_of(p);
    std::cout << absl::StrFormat(
        "%-*s %-*s %-8d %-8s %-21s %s\n", node_width, Printable(p.node().id()), group_width,
        p.node().group().empty() ? "-" : Printable(p.node().group()), p.version_applied(),
        p.version_pending() ? absl::StrCat(p.version_pending()) : "-",
        FormatTime(p.connected_since()), nack);
  }
  std::cout << response.proxies_size() << (response.proxies_size() == 1 ? " proxy" : " proxies")
            << "; current version " << response.current_version() << RolloutNote(stub) << "\n";
  PrintSilentReplicas(response);
  return 0;
}

// The fleet from the proxies' last traffic reports: totals, then the
// busiest routes across proxies. Once, or refreshed every --interval.
int Top(admin::v1::AdminService::Stub& stub, const std::string& server,
        const ParsedFlags& flags) {
  if (flags.positional.size() != 1) return UsageFail("top takes no arguments");
  absl::Duration interval = absl::Seconds(2);
  if (auto it = flags.values.find("interval"); it != flags.values.end()) {
    if (!absl::ParseDuration(it->second, &interval) || interval < absl::Milliseconds(100)) {
      return UsageFail(absl::StrCat("--interval ", it->second, ": expected a duration of 100ms or more"));
    }
  }
  const bool once = flags.switches.count("once") > 0;
  for (;;) {
    admin::v1::ListProxiesResponse response;
    grpc::Status status =
        stub.ListProxies(Context().get(), admin::v1::ListProxiesRequest(), &response);
    if (!status.ok()) return RpcFail(status, server);
    struct Route {
      double rps = 0;
      uint64_t requests = 0;
      uint64_t errors = 0;
      double p99 = 0;
    };
    // By (route table, virtual host, route): a route's name is unique in
    // its virtual host only.
    using RouteKey = std::tuple<std::string, std::string, std::string>;
    std::map<RouteKey, Route> routes;
    double rps = 0, p99 = 0;
    uint64_t requests = 0, errors = 0;
    int64_t connections = 0;
    int reporting = 0, stale = 0;
    for (const auto& p : response.proxies()) {
      const auto& r = p.last_report();
      // A silent replica's proxies: their last reports are old.
      if (p.has_replica_silent_for()) continue;
      if (!p.has_last_report_time() || r.interval_ms() == 0) continue;
      // A hung proxy stays listed until the control plane's keepalive gives
      // up on it (up to 40 s): its last figures are not the fleet's now.
      if (ReportIsStale(p)) {
        ++stale;
        continue;
      }
      ++reporting;
      double seconds = static_cast<double>(r.interval_ms()) / 1000.0;
      rps += static_cast<double>(r.requests()) / seconds;
      requests += r.requests();
      errors += r.responses_5xx();
      p99 = std::max(p99, r.p99_ms());
      connections += r.active_connections();
      for (const auto& rt : r.routes()) {
        Route& route = routes[{rt.route_table(), rt.virtual_host(), rt.route()}];
        route.rps += static_cast<double>(rt.requests()) / seconds;
        route.requests += rt.requests();
        route.errors += rt.responses_5xx();
        route.p99 = std::max(route.p99, rt.p99_ms());
      }
    }
    std::vector<std::pair<RouteKey, Route>> sorted(routes.begin(), routes.end());
    std::sort(sorted.begin(), sorted.end(),
              [](const auto& a, const auto& b) { return a.second.rps > b.second.rps; });
    // Clear the terminal (only a terminal: a pipe or a file gets frames).
    if (!once && ::isatty(STDOUT_FILENO) == 1) std::cout << "\033[H\033[2J";
    std::cout << absl::StrFormat(
        "fleet: %d %s (%d reporting%s), version %d; %.1f rps, 5xx %.2f%%, p99 %.2f ms "
        "(worst proxy), %d connections\n\n",
        response.proxies_size(), response.proxies_size() == 1 ? "proxy" : "proxies", reporting,
        stale ? absl::StrCat(", ", stale, " silent past two report intervals, left out") : "",
        response.current_version(), rps,
        requests ? 100.0 * static_cast<double>(errors) / static_cast<double>(requests) : 0.0,
        p99, connections);
    // Names a proxy reported: escaped, so that they cannot move the cursor
    // or forge a row; the columns as wide as the longest shown (as in
    // `proxies`), at least the header's width.
    const size_t shown = std::min<size_t>(sorted.size(), 10);
    std::vector<std::array<std::string, 3>> names(shown);
    int widths[3] = {20, 16, 24};
    for (size_t i = 0; i < shown; ++i) {
      names[i] = {Printable(std::get<0>(sorted[i].first)),
                  std::get<1>(sorted[i].first).empty() ? "-"
                                                       : Printable(std::get<1>(sorted[i].first)),
                  Printable(std::get<2>(sorted[i].first))};
      for (int c = 0; c < 3; ++c) {
        widths[c] = std::max(widths[c], static_cast<int>(names[i][c].size()));
      }
    }
    std::cout << absl::StrFormat("%-*s %-*s %-*s %9s %6s %9s\n", widths[0], "ROUTE TABLE",
                                 widths[1], "VIRTUAL HOST", widths[2], "ROUTE", "RPS", "5XX%",
                                 "P99(ms)");
    for (size_t i = 0; i < shown; ++i) {
      const Route& r = sorted[i].second;
      std::cout << absl::StrFormat(
          "%-*s %-*s %-*s %9.1f %6.2f %9.2f\n", widths[0], names[i][0], widths[1], names[i][1],
          widths[2], names[i][2], r.rps,
          r.requests ? 100.0 * static_cast<double>(r.errors) / static_cast<double>(r.requests)
                     : 0.0,
          r.p99);
    }
    std::cout.flush();
    if (once) return 0;
    absl::SleepFor(interval);
  }
}

// One line from stdin, without its line break. With a terminal on stdin,
// prompts on stderr and does not echo what is typed.
bool ReadPasswordLine(std::string* password) {
  termios saved;
  const bool quiet = ::isatty(STDIN_FILENO) == 1 && ::tcgetattr(STDIN_FILENO, &saved) == 0;
  if (quiet) {
    termios no_echo = saved;
    no_echo.c_lflag &= ~ECHO;
    ::tcsetattr(STDIN_FILENO, TCSAFLUSH, &no_echo);
    std::cerr << "password: " << std::flush;
  }
  const bool read = static_cast<bool>(std::getline(std::cin, *password));
  if (quiet) {
    ::tcsetattr(STDIN_FILENO, TCSAFLUSH, &saved);
    std::cerr << "\n";
  }
  if (read && !password->empty() && password->back() == '\r') password->pop_back();
  return read;
}

// Prints the password_hash of the password on stdin, for operators who put
// only hashes in their files. Needs no server.
int HashPasswordCommand(const ParsedFlags& flags) {
  if (flags.positional.size() != 1) {
    return UsageFail("hash-password takes no arguments (it reads the password from stdin)");
  }
  uint32_t iterations = api::kDefaultPasswordIterations;
  if (auto it = flags.values.find("iterations"); it != flags.values.end()) {
    if (!absl::SimpleAtoi(it->second, &iterations) ||
        iterations < api::kMinPasswordIterations || iterations > api::kMaxPasswordIterations) {
      return UsageFail(absl::StrCat("--iterations ", it->second, ": expected a number ",
                               api::kMinPasswordIterations, "..",
                               api::kMaxPasswordIterations));
    }
  }
  std::string password;
  if (!ReadPasswordLine(&password)) return Fail("no password on stdin");
  if (password.empty()) return Fail("the password is empty");
  if (password.size() > api::kMaxPasswordBytes) {
    return Fail(absl::StrCat("the password is ", password.size(), " bytes; at most ",
                             api::kMaxPasswordBytes));
  }
  std::cout << api::HashPassword(password, iterations) << "\n";
  return 0;
}

// token create NAME --role ROLE | token list [-o table|json] | token revoke NAME
int TokenCommand(admin::v1::AdminService::Stub& stub, const std::string& server,
                 const ParsedFlags& flags) {
  const auto& args = flags.positional;  // "token", VERB, ...
  const std::string verb = args.size() >= 2 ? args[1] : "";
  if (verb == "create") {
    if (args.size() > 3) return ExtraArgument("token create takes one NAME", args, 3);
    if (args.size() != 3) return UsageFail("token create needs NAME (and --role)");
    auto role = flags.values.find("role");
    if (role == flags.values.end()) {
      return UsageFail("token create needs --role viewer, operator or admin");
    }
    if (role->second != "viewer" && role->second != "operator" && role->second != "admin") {
      return UsageFail(absl::StrCat("--role ", role->second,
                                    ": expected viewer, operator or admin"));
    }
    admin::v1::CreateTokenRequest request;
    request.set_name(args[2]);
    request.set_role(role->second);
    admin::v1::CreateTokenResponse response;
    change_sent = true;
    grpc::Status status = stub.CreateToken(Context().get(), request, &response);
    change_sent = change_sent && !status.ok();  // answered: known
    if (!status.ok()) return RpcFail(status, server);
    std::cerr << "created " << response.role() << " token '" << response.name()
              << "'; it is shown only this once:\n";
    std::cout << response.token() << "\n";
    return 0;
  }
  if (verb == "list") {
    if (args.size() != 2) return UsageFail("token list takes no arguments");
    admin::v1::ListTokensResponse response;
    grpc::Status status =
        stub.ListTokens(Context().get(), admin::v1::ListTokensRequest(), &response);
    if (!status.ok()) return RpcFail(status, server);
    std::string format = "table";
    if (auto it = flags.values.find("o"); it != flags.values.end()) format = it->second;
    if (format == "json") {
      PrintJson(response);
      return 0;
    }
    if (format != "table") return UsageFail(absl::StrCat("-o ", format, ": expected table or json"));
    std::cout << absl::StrFormat("%-24s %-9s %-21s %s\n", "NAME", "ROLE", "CREATED",
                                 "CREATED BY");
    for (const auto& t : response.tokens()) {
      std::cout << absl::StrFormat("%-24s %-9s %-21s %s\n", t.name(), t.role(),
                                   FormatTime(t.created()), Printable(t.created_by()));
    }
    return 0;
  }
  if (verb == "revoke") {
    if (args.size() > 3) return ExtraArgument("token revoke takes one NAME", args, 3);
    if (args.size() != 3) return UsageFail("token revoke needs NAME");
    admin::v1::RevokeTokenRequest request;
    request.set_name(args[2]);
    admin::v1::RevokeTokenResponse response;
    change_sent = true;
    grpc::Status status = stub.RevokeToken(Context().get(), request, &response);
    change_sent = change_sent && !status.ok();  // answered: known
    if (!status.ok()) return RpcFail(status, server);
    std::cout << "revoked token '" << args[2] << "'\n";
    return 0;
  }
  return UsageFail("token needs create NAME --role ROLE, list, or revoke NAME");
}

// cache purge [--route R] [--host H] [--path P | --prefix P] [--group G]
// [--timeout 5s]: prints what the proxies removed and each one that did not
// confirm; fails unless every targeted proxy confirmed.
int CacheCommand(admin::v1::AdminService::Stub& stub, const std::string& server,
                 const ParsedFlags& flags) {
  const auto& args = flags.positional;  // "cache", VERB
  if (args.size() != 2 || args[1] != "purge") {
    return UsageFail(
        "cache needs purge [--route R] [--host H] [--path P | --prefix P] "
        "[--group G]");
  }
  auto value = [&](const std::string& name) {
    auto it = flags.values.find(name);
    return it == flags.values.end() ? std::string() : it->second;
  };
  // What the server would refuse, said here (a usage error, exit 2, with
  // no server needed).
  // A selector given empty (`--path "$P"` with P unset) would select
  // nothing and so purge everything: refused.
  for (const char* name : {"route", "host", "path", "prefix", "group"}) {
    if (auto it = flags.values.find(name); it != flags.values.end() && it->second.empty()) {
      return UsageFail(absl::StrCat("--", name, " is empty (an unset variable?); leave --",
                                    name, " out for a purge not narrowed by it"));
    }
  }
  if (!value("path").empty() && !value("prefix").empty()) {
    return UsageFail("--path and --prefix are exclusive: --path purges one key, --prefix every "
                     "path under it");
  }
  for (const char* name : {"path", "prefix"}) {
    if (!value(name).empty() && value(name)[0] != '/') {
      return UsageFail(absl::StrCat("--", name, " ", value(name), ": must start with '/'"));
    }
  }
  admin::v1::PurgeCacheRequest request;
  request.set_route(value("route"));
  request.set_host(value("host"));
  request.set_path(value("path"));
  request.set_prefix(value("prefix"));
  request.set_group(value("group"));
  absl::Duration timeout = absl::Seconds(5);
  if (auto it = flags.values.find("timeout"); it != flags.values.end()) {
    if (!absl::ParseDuration(it->second, &timeout) ||
        timeout < absl::Milliseconds(1) || timeout > absl::Seconds(60)) {
      return UsageFail(absl::StrCat("--timeout ", it->second,
                               ": expected a duration of 1ms..60s"));
    }
  }
  request.set_timeout_ms(
      static_cast<uint32_t>(absl::ToInt64Milliseconds(timeout)));
  // The call waits for the proxies: give it the timeout and room to answer.
  auto context = Context();
  context->set_deadline(
      std::chrono::system_clock::now() +
      absl::ToChronoMilliseconds(timeout + absl::Seconds(30)));
  admin::v1::PurgeCacheResponse response;
  change_sent = true;
  grpc::Status status = stub.PurgeCache(context.get(), request, &response);
  change_sent = change_sent && !status.ok();  // answered: known
  if (!status.ok()) {
    if (NotAboutTheRequest(status)) return RpcFail(status, server);
    // The server's refusal of a group no proxy is in already says so.
    const std::string& why = status.error_message();
    return Fail(absl::StrContains(why, "nothing purged") ? why
                                                        : absl::StrCat("nothing purged: ", why));
  }
  std::cout << "purged " << response.entries_removed() << " entries on "
            << response.proxies_confirmed() << " of "
            << response.proxies_targeted() << " proxies\n";
  for (const auto& failure : response.failures()) {
    std::cout << "  not confirmed: " << Printable(failure.node_id()) << ": "
              << Printable(failure.reason()) << "\n";
  }
  for (const auto& departed : response.departed()) {
    std::cout << "  not connected: " << Printable(departed.node_id()) << ": left "
              << departed.ago().seconds()
              << "s ago; it is sent this purge when it reconnects (within 10m of leaving)\n";
  }
  if (response.proxies_confirmed() != response.proxies_targeted()) {
    return Fail(absl::StrCat(
        response.proxies_targeted() - response.proxies_confirmed(), " of ",
        response.proxies_targeted(),
        " proxies did not confirm the purge; they may still serve the "
        "purged entries"));
  }
  return 0;
}

// Whether HOST:PORT (or [V6]:PORT, or a bare host) is a loopback address:
// 127.0.0.0/8, ::1, or localhost.
bool IsLoopbackServer(std::string_view server) {
  std::string host(server);
  if (absl::StartsWith(host, "[")) {
    host = host.substr(1, host.find(']') == std::string::npos ? std::string::npos
                                                             : host.find(']') - 1);
  } else if (std::count(host.begin(), host.end(), ':') == 1) {
    host = host.substr(0, host.find(':'));
  }
  if (absl::StartsWith(host, "ipv4:")) host = host.substr(5);
  if (absl::EqualsIgnoreCase(host, "localhost") || host == "::1") return true;
  in_addr v4;
  return inet_pton(AF_INET, host.c_str(), &v4) == 1 && (ntohl(v4.s_addr) >> 24) == 127;
}

// Plaintext, or TLS with --ca (else $SLUICE_CA) and an optional --cert/--key.
absl::StatusOr<std::shared_ptr<grpc::ChannelCredentials>> ChannelCredentials(
    const ParsedFlags& flags) {
  auto value = [&](const std::string& name) {
    auto it = flags.values.find(name);
    return it == flags.values.end() ? std::string() : it->second;
  };
  std::string ca_flag = "--ca";
  std::string ca = value("ca");
  if (const char* env = std::getenv("SLUICE_CA"); ca.empty() && env && *env) {
    ca = env;
    ca_flag = "$SLUICE_CA";
  }
  const std::string cert = value("cert"), key = value("key");
  if (ca.empty()) {
    if (!cert.empty() || !key.empty()) {
      return absl::InvalidArgumentError("--cert and --key need --ca (or $SLUICE_CA)");
    }
    return grpc::InsecureChannelCredentials();
  }
  if (cert.empty() != key.empty()) {
    return absl::InvalidArgumentError("--cert and --key go together: give both, or neither");
  }
  grpc::SslCredentialsOptions tls;
  absl::StatusOr<std::string> pem = ReadPemFile(ca_flag, ca, PemKind::kCertificate);
  if (!pem.ok()) return pem.status();
  tls.pem_root_certs = *pem;
  if (!cert.empty()) {
    if (pem = ReadPemFile("--cert", cert, PemKind::kCertificate); !pem.ok()) return pem.status();
    tls.pem_cert_chain = *pem;
    if (pem = ReadPemFile("--key", key, PemKind::kPrivateKey); !pem.ok()) return pem.status();
    tls.pem_private_key = *pem;
  }
  plaintext_channel = false;
  return grpc::SslCredentials(tls);
}

// The flags each command takes besides the global ones (--server, --token,
// --ca, --cert, --key, --help). Any other flag is refused, not ignored: a
// `diff -o json` that silently printed text would fool a script.
std::string CheckCommandFlags(const std::string& command, const ParsedFlags& flags) {
  static const std::map<std::string, std::set<std::string>> kCommandFlags = {
      {"apply", {"f", "dry-run", "m", "if-version", "canary", "verify", "max-5xx-rate",
                 "max-4xx-rate", "max-p99-ratio", "p99-slack", "min-requests", "on-no-traffic", "wait",
                 "timeout"}},
      {"get", {"o"}},
      {"delete", {"f", "dry-run", "m", "if-version", "wait", "timeout"}},
      {"history", {"limit", "o"}},
      {"diff", {}},
      {"rollback", {"dry-run", "m", "if-version", "wait", "timeout"}},
      {"proxies", {"o"}},
      {"top", {"interval", "once"}},
      {"token", {"o", "role"}},
      {"cache", {"route", "host", "path", "prefix", "group", "timeout"}},
      {"rollout", {"o", "m", "wait", "timeout"}},
      {"hash-password", {"iterations"}},
  };
  static const std::set<std::string> kGlobal = {"server", "token", "ca", "cert", "key",
                                                "plaintext-token", "help", "h"};
  static const std::map<std::string, std::string> kAliases = {
      {"filename", "f"}, {"output", "o"}, {"message", "m"}};
  auto known = kCommandFlags.find(command);
  if (known == kCommandFlags.end()) return "";  // an unknown command is reported as such
  std::vector<std::string> given;
  for (const auto& [name, value] : flags.values) given.push_back(name);
  for (const auto& name : flags.switches) given.push_back(name);
  for (std::string name : given) {
    if (auto alias = kAliases.find(name); alias != kAliases.end()) name = alias->second;
    if (kGlobal.count(name) || known->second.count(name)) continue;
    return absl::StrCat(command, " does not take ", name.size() == 1 ? "-" : "--", name);
  }
  // The rollout's own flags mean nothing to a plain apply: refused rather
  // than ignored (an `apply --wait` would otherwise go to every proxy at
  // once while its author waits for a verdict).
  if (command == "apply" && !flags.values.count("canary") && !flags.values.count("verify")) {
    for (const char* name : {"max-5xx-rate", "max-4xx-rate", "max-p99-ratio", "p99-slack",
                             "min-requests", "on-no-traffic"}) {
      if (flags.values.count(name) || flags.switches.count(name)) {
        return absl::StrCat("apply --", name, " goes with --canary GROUP|N% --verify DURATION");
      }
    }
  }
  // Refused rather than ignored: a dry run stores nothing for the proxies
  // to take (it exited 0 as if the fleet had taken it).
  if (flags.switches.count("dry-run") && flags.switches.count("wait")) {
    return absl::StrCat(command, " --wait and --dry-run do not go together: a dry run stores "
                        "nothing for the proxies to take");
  }
  return "";
}

int Run(int argc, char** argv) {
  // gRPC core's own lines (`E1201 ... ssl_transport_security.cc] Handshake
  // failed ...`) came before sluicectl's error, which says the same in
  // words; they are dropped.
  gpr_set_log_function([](gpr_log_func_args*) {});
  const std::set<std::string> value_flags = {
      "server",   "f",      "filename", "o",          "output", "iterations",
      "interval", "m",      "message",  "if-version", "limit",  "ca",
      "cert",     "key",    "token",    "role",       "route",  "host",
      "path",     "prefix", "group",    "timeout", "canary", "verify",
      "max-5xx-rate", "max-4xx-rate", "max-p99-ratio", "p99-slack", "min-requests",
      "on-no-traffic"};
  const std::set<std::string> switch_flags = {"dry-run", "help", "h", "once", "wait",
                                              "plaintext-token"};
  auto flags = ParseFlags(argc, argv, value_flags, switch_flags);
  if (!flags.ok()) {
    // One line and a pointer (the whole usage buried the error); ParseFlags
    // names the flag meant when it is a typo away.
    std::cerr << "error: " << flags.status().message();
    std::cerr << "\n(sluicectl --help, or sluicectl COMMAND --help, lists the flags)\n";
    return 2;
  }
  // Every flag is taken once: a second one (a shell glob, `-f *.yaml`; two
  // --path selectors) was dropped without a word. Short and long spellings
  // are one flag.
  std::set<std::string> given = flags->repeated;
  for (const auto& [short_name, long_name] :
       {std::pair<std::string, std::string>{"f", "filename"}, {"o", "output"}, {"m", "message"}}) {
    if (flags->values.count(short_name) && flags->values.count(long_name)) given.insert(short_name);
  }
  if (!given.empty()) {
    const std::string name = *given.begin();
    std::cerr << "error: " << (name.size() == 1 ? "-" : "--") << name
              << " is given more than once; each flag is taken once"
              << (name == "f" || name == "filename"
                      ? " (to apply several files together, put them in one directory and give "
                        "-f DIR)"
                      : "")
              << "\n";
    return 2;
  }
  if (auto it = flags->values.find("filename"); it != flags->values.end()) {
    flags->values["f"] = it->second;
  }
  if (auto it = flags->values.find("output"); it != flags->values.end()) {
    flags->values["o"] = it->second;
  }
  if (auto it = flags->values.find("message"); it != flags->values.end()) {
    flags->values["m"] = it->second;
  }
  // `sluicectl help [COMMAND]`, as git and kubectl take it.
  if (!flags->positional.empty() && flags->positional[0] == "help") {
    flags->positional.erase(flags->positional.begin());
    flags->switches.insert("help");
  }
  if ((flags->switches.count("help") || flags->switches.count("h")) &&
      !flags->positional.empty()) {
    if (flags->positional[0] == "help") {  // `help help`: the whole list
      std::cout << kUsage;
      return 0;
    }
    if (std::string usage = CommandUsage(flags->positional[0]); !usage.empty()) {
      std::cout << usage;
      return 0;
    }
    return UnknownCommand(flags->positional[0]);
  }
  if (flags->switches.count("help") || flags->switches.count("h") ||
      flags->positional.empty()) {
    const bool asked = flags->switches.count("help") || flags->switches.count("h");
    // Asked for: the help is the output. Bare `sluicectl`: a usage error,
    // on standard error (as every other).
    (asked ? std::cout : std::cerr) << kUsage;
    return flags->positional.empty() && !flags->switches.count("help") &&
                   !flags->switches.count("h")
               ? 2
               : 0;
  }
  if (std::string error = CheckCommandFlags(flags->positional[0], *flags); !error.empty()) {
    std::cerr << "error: " << error << "\n";
    return 2;
  }
  if (flags->positional[0] == "hash-password") return HashPasswordCommand(*flags);
  std::string servers = "127.0.0.1:18000";
  server_defaulted = true;
  if (const char* env = std::getenv("SLUICE_SERVER"); env && *env) {
    servers = env;
    server_defaulted = false;
  }
  if (auto it = flags->values.find("server"); it != flags->values.end()) {
    servers = it->second;
    server_defaulted = false;
  }
  const std::vector<std::string> candidates = absl::StrSplit(servers, ',');
  for (const std::string& candidate : candidates) {
    if (absl::Status checked = CheckHostPortFlag("server", candidate); !checked.ok()) {
      return UsageFail(std::string(checked.message()));
    }
  }

  // The same message limits as sluice-control's, so that a config it holds
  // can be listed and one it accepts can be applied.
  grpc::ChannelArguments args;
  args.SetMaxReceiveMessageSize(api::kMaxMessageBytes);
  args.SetMaxSendMessageSize(api::kMaxMessageBytes);
  // A peer that accepts and never answers (not sluice-control, or one
  // stuck) fails a command in 5 s, not gRPC's 20 s connect timeout; one
  // that refuses fails at once either way.
  args.SetInt(GRPC_ARG_MIN_RECONNECT_BACKOFF_MS, static_cast<int>(kConnectTimeoutMs));
  auto credentials = ChannelCredentials(*flags);
  // A flag given wrongly (as sluice-control and sluice-proxy say it): exit 2.
  if (!credentials.ok()) return UsageFail(std::string(credentials.status().message()));
  if (const char* env = std::getenv("SLUICE_TOKEN"); env && *env) bearer_token = env;
  if (auto it = flags->values.find("token"); it != flags->values.end()) {
    bearer_token = it->second;
  }
  // A token read from a file often ends with a line end (a CRLF file gives
  // "\r"): trimmed, as sluice-control trims it. Any other control byte
  // cannot go in a header (gRPC would abort): named instead.
  while (!bearer_token.empty() && absl::ascii_isspace(static_cast<unsigned char>(bearer_token.back()))) {
    bearer_token.pop_back();
  }
  for (size_t i = 0; i < bearer_token.size(); ++i) {
    const unsigned char c = static_cast<unsigned char>(bearer_token[i]);
    if (c < 0x20 || c >= 0x7f) {
      return UsageFail(absl::StrCat("the token (--token or $SLUICE_TOKEN) has a byte that is not ",
                                    "printable ASCII at position ", i + 1));
    }
  }
  // A token in clear text to another host can be read on the way (or by
  // whatever answers on that port): only with TLS, or to loopback, or when
  // the operator says the network is trusted. Before: sent, then "cannot
  // reach ... (if it serves TLS, give --ca)".
  const char* env_ca = std::getenv("SLUICE_CA");
  const bool tls = (flags->values.count("ca") && !flags->values.at("ca").empty()) ||
                   (env_ca != nullptr && *env_ca);
  if (!bearer_token.empty() && !tls && !flags->switches.count("plaintext-token")) {
    for (const std::string& candidate : candidates) {
      if (!IsLoopbackServer(candidate)) {
        return UsageFail(absl::StrCat(
            "refusing to send the token in clear text to ", candidate,
            ": give --ca FILE (or $SLUICE_CA) for sluice-control's TLS, or --plaintext-token "
            "if the network to it is trusted"));
      }
    }
  }
  // Replicas of one store: the first that takes the connection (TCP, TLS
  // and HTTP/2 set up; nothing is sent before), so a command never goes to
  // two. None: the first, whose error the command reports.
  std::string server = candidates.front();
  std::shared_ptr<grpc::Channel> channel;
  for (size_t i = 0; i < candidates.size() && candidates.size() > 1; ++i) {
    auto tried = grpc::CreateCustomChannel(candidates[i], *credentials, args);
    const auto deadline = std::chrono::system_clock::now() +
                          std::chrono::milliseconds(kConnectTimeoutMs);
    grpc_connectivity_state state = tried->GetState(/*try_to_connect=*/true);
    while (state != GRPC_CHANNEL_READY && state != GRPC_CHANNEL_TRANSIENT_FAILURE &&
           state != GRPC_CHANNEL_SHUTDOWN && tried->WaitForStateChange(state, deadline)) {
      state = tried->GetState(/*try_to_connect=*/true);
    }
    if (state == GRPC_CHANNEL_READY) {
      server = candidates[i];
      channel = std::move(tried);
      break;
    }
    std::cerr << "note: sluice-control at " << candidates[i] << " cannot be reached"
              << (i + 1 < candidates.size() ? ", trying " + candidates[i + 1] : "") << "\n";
  }
  if (channel == nullptr) channel = grpc::CreateCustomChannel(server, *credentials, args);
  auto stub = admin::v1::AdminService::NewStub(channel);
  admin_channel = channel;
  const std::string& command = flags->positional[0];
  if (command == "apply") return Apply(*stub, server, *flags);
  if (command == "get") return Get(*stub, server, *flags);
  if (command == "delete") return Delete(*stub, server, *flags);
  if (command == "history") return History(*stub, server, *flags);
  if (command == "diff") return Diff(*stub, server, *flags);
  if (command == "rollback") return Rollback(*stub, server, *flags);
  if (command == "proxies") return Proxies(*stub, server, *flags);
  if (command == "top") return Top(*stub, server, *flags);
  if (command == "token") return TokenCommand(*stub, server, *flags);
  if (command == "cache") return CacheCommand(*stub, server, *flags);
  if (command == "rollout") return RolloutCommand(*stub, server, *flags);
  return UnknownCommand(command);
}

}  // namespace
}  // namespace sluice::cli

int main(int argc, char** argv) { return sluice::cli::Run(argc, argv); }
