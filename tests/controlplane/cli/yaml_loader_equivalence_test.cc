// The loader's fast paths (FastYaml's subset parser, filling messages
// without JSON) against the reference ones (yaml-cpp, protobuf JSON): the
// same resources, origins and error messages for a corpus of files and for
// every one-character edit of them.
#include <gtest/gtest.h>

#include <string>
#include <vector>

#include "absl/strings/str_cat.h"
#include "controlplane/cli/fast_yaml.h"
#include "controlplane/cli/yaml_loader.h"

namespace sluice::cli {
namespace {

const char* const kCorpus[] = {
    // Every kind, flow and block styles, camelCase, durations, enums.
    R"(kind: Cluster
name: users
spec:
  lbPolicy: least_request
  connect_timeout: 250ms
  endpoints: [{address: 127.0.0.1, port: 9001, weight: 3}]
---
kind: RouteTable
name: main
spec:
  virtual_hosts:
    - domains: ["*"]
      routes:
        - match: {prefix: /, headers: [{name: x-env, exact: "1"}]}
          route: {cluster: users, timeout: 1m30s}
---
kind: listener
name: public
spec: {address: "::1", port: 8080, route_table: main, http: {idle_timeout: 5s}}
)",
    // Sequences at the indentation of their key, comments, quotes.
    R"(---
# the first document
kind: RouteTable   # a comment
name: main
spec:
  virtual_hosts:
  - name: h0
    domains: [h0.example.com, 'h1.example.com', "*"]
    routes:
    - {name: r0, match: {prefix: /svc0/v}, route: {cluster: c0}}
    - {name: r1, match: {path: /svc1/v}, route: {cluster: c1}}

    - name: r2
      match:
        prefix: /x
      route: {cluster: c0, timeout: 2s}
---
kind: Cluster
name: c0
spec:
  endpoints: [{address: 127.0.0.1, port: 20000}, {address: 127.0.0.1, port: 30000}]
---
kind: Cluster
name: c1
spec:
  endpoints:
    - address: 127.0.0.1
      port: 20001
)",
    // Wrappers, nested messages, repeated numbers and strings.
    R"(kind: Cluster
name: users
spec:
  lb_policy: MAGLEV
  hash_policy: {cookie: session}
  endpoints: [{address: 127.0.0.1, port: 9001, weight: 2}, {address: "::1", port: 9002}]
  health_check: {http: {path: /healthz, expected_statuses: [200, 204]}, interval: 2s,
                 timeout: 250ms, unhealthy_threshold: 2, healthy_on_add: true}
  outlier_detection: {consecutive_5xx: 0, base_ejection_time: 10s, max_ejection_percent: 50}
  circuit_breakers: {max_requests: 200, max_retries: 10}
  panic_threshold_percent: 0
)",
    // Errors: validation (lines of fields), unknown fields, bad values.
    "kind: Cluster\nname: a\nspec:\n  endpoints:\n    - address: 127.0.0.1\n      port: 0\n",
    "kind: Cluster\nname: a\nspec:\n  endpoints: [{address: 127.0.0.1, port: abc}]\n",
    "kind: Cluster\nname: a\nspec:\n  lb_policy: FASTEST\n  connect_timeout: soon\n",
    "kind: Cluster\nname: a\nspec:\n  endpoints: {address: x}\n",
    "kind: Cluster\nname: a\nspec: {name: b, endpoints: [{address: 127.0.0.1, port: 1}]}\n",
    "kind: Cluster\nname: ok\nspec: {endpoints: [{address: 127.0.0.1, port: 1}]}\n---\n"
    "kind: Cluster\nname: bad\nspec: {endpoints: [{address: 127.0.0.1, port: 1, wat: 1}]}\n",
    "kind: Pod\nname: a\nspec: {}\n",
    "kind: Cluster\nname: a\nspek: {}\n",
    "kind: Cluster\nname: [unclosed\n",
    "kind: Cluster\nname: a\n",
    "kind: Cluster\nname: a\nspec:\n  connect_timeout: 2s\n  connect_timeout: 3s\n",
    "kind: RouteTable\nname: m\nspec:\n  virtual_hosts:\n  - domains: [a]\n    routes:\n"
    "    - {match: {prefix: /a, path: /b}, route: {cluster: c}}\n",
    "",
    "# nothing\n",
    "---\n---\nkind: Cluster\nname: a\nspec: {endpoints: [{address: 127.0.0.1, port: 1}]}\n",
    "kind: Cluster\nname: a\nspec: {endpoints: [{address: 127.0.0.1, port: 1}]}\n---\n",
    "kind: Cluster\nname: a\nspec:\n  endpoints: [{address: 127.0.0.1, port: 1}]\n  lb_policy: ~\n",
    "kind: Cluster\nname: a\nspec:\n  endpoints:\n  - address: 'it''s'\n    port: 1\n",
    // A policy (google.protobuf.Any): the JSON path, whichever parser.
    R"(kind: RouteTable
name: main
spec:
  virtual_hosts:
  - domains: ["*"]
    routes:
    - match: {prefix: /}
      route: {cluster: c}
      policies: [{name: no-such-policy, typed_config: {a: 1}}]
)",
};

// The outcome of one load, as text that two loads can be compared by.
std::string Outcome(const std::string& text, const LoadOptions& options) {
  auto loaded = LoadYaml(text, "f.yaml", options);
  if (!loaded.ok()) return absl::StrCat("error: ", loaded.status().message());
  std::string out;
  for (const auto& r : *loaded) {
    absl::StrAppend(&out, r.origin, "\n", r.resource.DebugString(), "\n");
  }
  return out;
}

void ExpectSameAsReference(const std::string& text) {
  const std::string reference = Outcome(text, {false, false});
  EXPECT_EQ(Outcome(text, {true, true}), reference) << "input:\n" << text;
  EXPECT_EQ(Outcome(text, {true, false}), reference) << "input:\n" << text;
  EXPECT_EQ(Outcome(text, {false, true}), reference) << "input:\n" << text;
}

TEST(YamlLoaderEquivalenceTest, CorpusLoadsAlike) {
  for (const char* text : kCorpus) ExpectSameAsReference(text);
}

TEST(YamlLoaderEquivalenceTest, EveryOneCharacterEditLoadsAlike) {
  const std::string inserts = " :-#\n\"'{}[],x0~\t|&*!?@";
  for (const char* corpus_text : kCorpus) {
    const std::string text = corpus_text;
    if (text.size() > 700) continue;
    for (size_t i = 0; i < text.size(); ++i) {
      ExpectSameAsReference(text.substr(0, i) + text.substr(i + 1));
      for (char c : inserts) {
        // yaml-cpp 0.7 exhausts memory on a ',' that opens a block line (a
        // bug in the reference, not a case for the comparison).
        if (c == ',' && (i == 0 || text[i - 1] == '\n' || text[i - 1] == ' ')) continue;
        ExpectSameAsReference(text.substr(0, i) + c + text.substr(i));
      }
      if (::testing::Test::HasFailure()) return;  // one input is enough to look at
    }
  }
}

// The shape of scripts/bench-config.sh's file: read by the fast parser (no
// fallback to yaml-cpp) and loaded alike.
std::string BenchShapedFile(int routes, int clusters) {
  std::string out;
  for (int c = 0; c < clusters; ++c) {
    absl::StrAppend(&out, "kind: Cluster\nname: c", c,
                    "\nspec:\n  endpoints: [{address: 127.0.0.1, port: ", 20000 + c % 5000,
                    "}, {address: 127.0.0.1, port: ", 30000 + c % 5000, "}]\n---\n");
  }
  absl::StrAppend(&out, "kind: RouteTable\nname: main\nspec:\n  virtual_hosts:\n");
  const int per_host = routes / 10;
  for (int h = 0; h < 10; ++h) {
    absl::StrAppend(&out, "  - name: h", h, "\n    domains: [h", h, ".example.com",
                    h == 9 ? ", \"*\"" : "", "]\n    routes:\n");
    for (int r = 0; r < per_host; ++r) {
      const int i = h * per_host + r;
      absl::StrAppend(&out, "    - {name: r", i, ", match: {", r % 2 ? "path" : "prefix",
                      ": /svc", i, "/v}, route: {cluster: c", i % clusters, "}}\n");
    }
  }
  absl::StrAppend(&out, "---\nkind: Listener\nname: l\n"
                        "spec: {address: 127.0.0.1, port: 18290, route_table: main}\n");
  return out;
}

TEST(YamlLoaderEquivalenceTest, BenchShapedFileTakesTheFastPathAndLoadsAlike) {
  const std::string text = BenchShapedFile(200, 40);
  auto fast = ParseFastYaml(text);
  ASSERT_TRUE(fast.has_value());
  EXPECT_EQ((*fast)->documents.size(), 42u);
  ExpectSameAsReference(text);
  // Ended by a separator, as generators write every document: still the
  // fast path (yaml-cpp read it with four times the memory), and alike.
  for (const char* tail : {"---\n", "---\n\n# end\n", "---", "--- \n", "---  # end\n"}) {
    const std::string ended = text + "\n" + tail;
    auto again = ParseFastYaml(ended);
    ASSERT_TRUE(again.has_value()) << tail;
    EXPECT_EQ((*again)->documents.size(), 42u);
    ExpectSameAsReference(ended);
  }
  // A separator and nothing else is still yaml-cpp's to read, as is one
  // with more on its line.
  EXPECT_FALSE(ParseFastYaml("---\n").has_value());
  EXPECT_FALSE(ParseFastYaml(text + "\n--- a: 1\n").has_value());
  EXPECT_FALSE(ParseFastYaml(text + "\n---# c\n").has_value());
  // A commented separator between documents keeps the fast path too.
  const std::string commented = "kind: Cluster\nname: a\nspec: {endpoints: [{address: "
                                "127.0.0.1, port: 1}]}\n--- # next\nkind: Cluster\nname: b\n"
                                "spec: {endpoints: [{address: 127.0.0.1, port: 2}]}\n";
  auto two = ParseFastYaml(commented);
  ASSERT_TRUE(two.has_value());
  EXPECT_EQ((*two)->documents.size(), 2u);
  ExpectSameAsReference(commented);
}

}  // namespace
}  // namespace sluice::cli
