#include "controlplane/cli/yaml_loader.h"

#include <gtest/gtest.h>
#include <sys/stat.h>
#include <unistd.h>

#include <cstdio>
#include <cstdlib>
#include <iostream>
#include <sstream>
#include <tuple>

#include "absl/strings/match.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/str_split.h"
#include "absl/strings/str_replace.h"
#include "api/validation.h"
#include "tests/api/test_certificates.h"

namespace sluice::cli {
namespace {

std::string Error(const std::string& yaml) {
  auto loaded = LoadYaml(yaml, "f.yaml");
  EXPECT_FALSE(loaded.ok());
  return std::string(loaded.status().message());
}

TEST(YamlLoaderTest, LoadsEveryKindWithDurationsEnumsAndCamelCase) {
  auto loaded = LoadYaml(R"(
kind: Cluster
name: users
spec:
  lbPolicy: least_request
  connect_timeout: 250ms
  idle_connection_timeout: 90s
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
                         "f.yaml");
  ASSERT_TRUE(loaded.ok()) << loaded.status();
  ASSERT_EQ(loaded->size(), 3u);
  const auto& cluster = (*loaded)[0].resource.cluster();
  EXPECT_EQ(cluster.name(), "users");
  EXPECT_EQ(cluster.lb_policy(), config::v1::Cluster::LEAST_REQUEST);
  EXPECT_EQ(cluster.connect_timeout().nanos(), 250000000);
  EXPECT_EQ(cluster.idle_connection_timeout().seconds(), 90);
  EXPECT_EQ(cluster.endpoints(0).weight(), 3u);
  const auto& route = (*loaded)[1].resource.route_table().virtual_hosts(0).routes(0);
  EXPECT_EQ(route.route().timeout().seconds(), 90);
  EXPECT_EQ(route.match().headers(0).exact(), "1");
  EXPECT_EQ((*loaded)[2].resource.listener().http().idle_timeout().seconds(), 5);
}

TEST(YamlLoaderTest, UnknownFieldNamesFileDocumentLineAndField) {
  EXPECT_EQ(Error("kind: Cluster\nname: a\nspec:\n  endpoints:\n    - address: 127.0.0.1\n"
                  "      prot: 80\n"),
            "f.yaml, document 1, line 6: Cluster \"a\": spec.endpoints[0].prot: unknown field "
            "'prot' in Endpoint (fields: address, port, weight); did you mean 'port'?");
  // The resource is named and a typo gets the field it likely meant; a key
  // nothing is near gets the list only.
  const std::string typo = Error("kind: Cluster\nname: users\nspec:\n  endpoint: []\n");
  EXPECT_TRUE(absl::StartsWith(typo, "f.yaml, document 1, line 4: Cluster \"users\": "
                                     "spec.endpoint: unknown field 'endpoint' in Cluster (fields: "
                                     "name, endpoints, "))
      << typo;
  EXPECT_TRUE(absl::EndsWith(typo, "); did you mean 'endpoints'?")) << typo;
  EXPECT_FALSE(absl::StrContains(
      Error("kind: Cluster\nname: users\nspec:\n  completely_different: 1\n"), "did you mean"));
  // A short key two edits from a field was not meant as it (`host` is no
  // `port`, `dns` no `tls`); two fields as near: neither is offered.
  for (const char* doc :
       {"kind: Cluster\nname: a\nspec:\n  endpoints: [{host: 127.0.0.1, port: 1}]\n",
        "kind: Cluster\nname: a\nspec:\n  dns: []\n  endpoints: [{address: 127.0.0.1, port: 1}]\n",
        "kind: Cluster\nname: a\nspec:\n  protocol: HTTP3\n  endpoints: [{address: 127.0.0.1, port: 1}]\n"}) {
    EXPECT_FALSE(absl::StrContains(Error(doc), "did you mean")) << Error(doc);
  }
  // Two neighbours swapped is one edit.
  EXPECT_TRUE(absl::EndsWith(
      Error("kind: Cluster\nname: a\nspec:\n  endpoints: [{address: 127.0.0.1, prot: 1}]\n"),
      "; did you mean 'port'?"));
  // A value's control bytes are escaped, not sent to the terminal.
  const std::string escaped = Error("kind: Cluster\nname: a\nspec:\n  lb_policy: \"\\e[2J\"\n");
  EXPECT_TRUE(absl::StrContains(escaped, "'\\x1b[2J' is not one of")) << escaped;
  EXPECT_FALSE(absl::StrContains(escaped, "\x1b")) << escaped;
}

TEST(YamlLoaderTest, TypeErrors) {
  EXPECT_NE(Error("kind: Cluster\nname: a\nspec:\n  endpoints: [{address: 127.0.0.1, port: abc}]\n")
                .find("line 4: Cluster \"a\": spec.endpoints[0].port: expected a non-negative integer, got 'abc'"),
            std::string::npos);
  // A number past the field's range is not "negative": the range is named
  // (both loaders, the fast one and yaml-cpp's, the latter for a flow map
  // with a tag).
  for (const char* doc : {"kind: Cluster\nname: a\nspec:\n  endpoints: [{address: 127.0.0.1, port: 4294967296}]\n",
                          "kind: Cluster\nname: a\nspec:\n  endpoints: [{address: 127.0.0.1, port: !!int 4294967296}]\n"}) {
    EXPECT_NE(Error(doc).find("spec.endpoints[0].port: expected an integer 0..4294967295, got "
                              "'4294967296'"),
              std::string::npos)
        << Error(doc);
  }
  EXPECT_NE(Error("kind: Cluster\nname: a\nspec:\n  lb_policy: FASTEST\n")
                .find("spec.lb_policy: 'FASTEST' is not one of ROUND_ROBIN, LEAST_REQUEST"),
            std::string::npos);
  EXPECT_FALSE(absl::StrContains(Error("kind: Cluster\nname: a\nspec:\n  lb_policy: FASTEST\n"),
                                 "did you mean"));
  EXPECT_TRUE(absl::EndsWith(Error("kind: Cluster\nname: a\nspec:\n  lb_policy: round_robbin\n"),
                                "; did you mean 'ROUND_ROBIN'?"))
      << Error("kind: Cluster\nname: a\nspec:\n  lb_policy: round_robbin\n");
  EXPECT_NE(Error("kind: Cluster\nname: a\nspec:\n  connect_timeout: soon\n")
                .find("spec.connect_timeout: 'soon' is not a duration"),
            std::string::npos);
  // Bytes that are not UTF-8 in a text field: the field and its line (the
  // JSON parser's message named neither).
  EXPECT_EQ(Error("kind: Cluster\nname: a\nspec:\n  endpoints:\n    - {address: \"1\xc0\xaf\", port: 80}\n"),
            "f.yaml, document 1, line 5: Cluster \"a\": spec.endpoints[0].address: is not valid "
            "UTF-8 (byte 1 of 3)");
  // At most 20 errors, then a count (5,000 bad documents printed 5,000 lines).
  {
    std::string many;
    for (int i = 0; i < 30; ++i) {
      absl::StrAppend(&many, "---\nkind: Cluster\nname: c", i,
                      "\nspec:\n  endpoints: [{address: 127.0.0.1, port: 0}]\n");
    }
    const std::string error = Error(many);
    EXPECT_TRUE(absl::EndsWith(error, "\n... and 10 more errors")) << error;
  }
  // What would be read as another duration than written: refused, not 0s
  // (which turns most timeouts off) or int64's 2562047h47m16s.
  for (const char* bad : {"0.1ns", "-0.1ns", "0.3ns", "0.00001us", "inf", "9999999999h"}) {
    const std::string error =
        Error(absl::StrCat("kind: Cluster\nname: a\nspec:\n  connect_timeout: ", bad, "\n"));
    EXPECT_NE(error.find(absl::StrCat("spec.connect_timeout: '", bad, "' is not a")),
              std::string::npos)
        << error;
  }
  EXPECT_NE(Error("kind: Cluster\nname: a\nspec:\n  endpoints: {address: x}\n")
                .find("spec.endpoints: expected a list"),
            std::string::npos);
  // A leading zero: YAML 1.1 tools read 0100 as 64, this reader would take
  // 100; refused rather than either (both loaders: a flow map with a tag
  // takes yaml-cpp's path).
  for (const char* port : {"0100", "!!int 0100", "-010"}) {
    const std::string error = Error(absl::StrCat(
        "kind: Cluster\nname: a\nspec:\n  endpoints: [{address: 127.0.0.1, port: ", port,
        "}]\n"));
    EXPECT_TRUE(absl::StrContains(error, "spec.endpoints[0].port: '") &&
                absl::StrContains(error, "' has a leading zero (YAML 1.1 tools read such a number"))
        << error;
  }
  EXPECT_TRUE(absl::StrContains(
      Error("kind: Cluster\nname: a\nspec:\n  endpoints: [{address: 127.0.0.1, port: 1}]\n"
            "  outlier_detection: {consecutive_5xx: 007}\n"),
      "'007' has a leading zero"));
  EXPECT_EQ(Error("kind: Cluster\nname: a\nspec:\n  endpoints: [{address: 127.0.0.1, port: 0}]\n")
                .find("leading zero"),
            std::string::npos);
}

// A null where a message goes is refused, naming both readings: taken as
// "set, every default" it turned `tls: ~` (meant as "no TLS") into TLS, and
// taken as "unset" `tls:` (meant as "TLS, defaults") would be plaintext.
// An empty list (`endpoints:`) stays an empty list.
TEST(YamlLoaderTest, ANullWhereAMessageGoesIsRefused) {
  for (const char* doc :
       {"kind: Cluster\nname: a\nspec:\n  endpoints: [{address: 127.0.0.1, port: 1}]\n  tls:\n",
        "kind: Cluster\nname: a\nspec:\n  endpoints: [{address: 127.0.0.1, port: 1}]\n  tls: ~\n",
        "kind: Cluster\nname: a\nspec: {endpoints: [{address: 127.0.0.1, port: 1}], tls: null}\n"}) {
    const std::string error = Error(doc);
    EXPECT_NE(error.find("spec.tls: is null (a key with nothing after it): leave the field out to "
                         "not set it, or write {} for a UpstreamTls with every default"),
              std::string::npos)
        << error;
  }
  // The key's line, not the next token's (a later line, or one past the
  // file's end).
  for (const char* doc :
       {"kind: Cluster\nname: a\nspec:\n  endpoints: [{address: 127.0.0.1, port: 1}]\n  tls:\n",
        "kind: Cluster\nname: a\nspec:\n  endpoints: [{address: 127.0.0.1, port: 1}]\n  tls:\n\n\n"
        "  lb_policy: RANDOM\n",
        "kind: Cluster\nname: a\nspec:\n  endpoints: [{address: 127.0.0.1, port: 1}]\n  tls:"}) {
    EXPECT_TRUE(absl::StartsWith(Error(doc), "f.yaml, document 1, line 5: Cluster \"a\": spec.tls: "))
        << Error(doc);
  }
  EXPECT_TRUE(absl::StartsWith(Error("kind: Cluster\nname: a\nspec:\n  connect_timeout:\n\n"
                                     "  endpoints: [{address: 127.0.0.1, port: 1}]\n"),
                               "f.yaml, document 1, line 4: Cluster \"a\": spec.connect_timeout: "))
      << Error("kind: Cluster\nname: a\nspec:\n  connect_timeout:\n\n"
               "  endpoints: [{address: 127.0.0.1, port: 1}]\n");
  EXPECT_NE(Error("kind: Cluster\nname: a\nspec:\n  connect_timeout:\n")
                .find("spec.connect_timeout: is null (a key with nothing after it): leave the "
                      "field out for its default"),
            std::string::npos);
  EXPECT_NE(Error("kind: Cluster\nname: a\nspec:\n  endpoints:\n    - ~\n")
                .find("spec.endpoints[0]: is null"),
            std::string::npos);
  // Left out, and written out, both still load.
  for (const char* tls : {"", "  tls: {insecure_skip_verify: true}\n"}) {
    auto loaded = LoadYaml(absl::StrCat("kind: Cluster\nname: a\nspec:\n  endpoints: [{address: "
                                        "127.0.0.1, port: 1}]\n",
                                        tls),
                           "f.yaml");
    ASSERT_TRUE(loaded.ok()) << loaded.status();
    EXPECT_EQ((*loaded)[0].resource.cluster().has_tls(), *tls != '\0');
  }
}

// A policy's settings are read against its own message: durations as
// operators write them, and mistakes named with their path and line.
TEST(YamlLoaderTest, PolicySettingsTakeDurationsWithUnitsAndNameTheirErrors) {
  auto route = [](const std::string& settings) {
    return absl::StrCat(
        "kind: RouteTable\nname: main\nspec:\n  virtual_hosts:\n    - domains: ['*']\n"
        "      routes:\n        - match: {prefix: /}\n          route: {cluster: web}\n"
        "          policies:\n            - name: cache\n              typed_config:\n",
        settings);
  };
  auto loaded = LoadYaml(route("                stale_if_error: 1h\n"
                               "                lock_timeout: 250ms\n"
                               "                default_ttl: 1m30s\n"),
                         "f.yaml");
  ASSERT_TRUE(loaded.ok()) << loaded.status();
  EXPECT_EQ(Error(route("                lock_timeout: soon\n")),
            "f.yaml, document 1, line 12: RouteTable \"main\": "
            "spec.virtual_hosts[0].routes[0].policies[0]."
            "typed_config.lock_timeout: 'soon' is not a duration (examples: 5s, 250ms, 1m)");
  EXPECT_NE(Error(route("                bogus: 1\n"))
                .find("line 12: RouteTable \"main\": "
                      "spec.virtual_hosts[0].routes[0].policies[0].typed_config.bogus: "
                      "unknown field 'bogus' in CacheConfig"),
            std::string::npos);
  EXPECT_NE(Error(route("                max_object_bytes: -1\n"))
                .find("typed_config.max_object_bytes: expected a non-negative integer, got '-1'"),
            std::string::npos);
  // With "@type", as `get` writes it, the same: the field, its path and
  // line. Before: `line 2: RouteTable "main": spec: bogus: Cannot find
  // field.`, and a value of the wrong type named by protobuf's type name.
  const std::string typed = "                \"@type\": type.googleapis.com/sluice.policy.cache.v1.CacheConfig\n";
  auto typed_loaded = LoadYaml(route(typed + "                lock_timeout: 250ms\n"), "f.yaml");
  ASSERT_TRUE(typed_loaded.ok()) << typed_loaded.status();
  EXPECT_NE(Error(route(typed + "                bogus: 1\n"))
                .find("line 13: RouteTable \"main\": "
                      "spec.virtual_hosts[0].routes[0].policies[0].typed_config.bogus: "
                      "unknown field 'bogus' in CacheConfig"),
            std::string::npos)
      << Error(route(typed + "                bogus: 1\n"));
  EXPECT_NE(Error(route(typed + "                max_object_bytes: -1\n"))
                .find("line 13: RouteTable \"main\": spec.virtual_hosts[0].routes[0].policies[0]."
                      "typed_config.max_object_bytes: expected a non-negative integer, got '-1'"),
            std::string::npos)
      << Error(route(typed + "                max_object_bytes: -1\n"));
  // Another policy's "@type" (copied from another policy's export).
  EXPECT_EQ(Error(route("                \"@type\": type.googleapis.com/sluice.policy.cors.v1.CorsConfig\n"
                        "                origins: ['*']\n")),
            "f.yaml, document 1, line 12: RouteTable \"main\": spec.virtual_hosts[0].routes[0]."
            "policies[0].typed_config.@type: is 'type.googleapis.com/sluice.policy.cors.v1.CorsConfig', "
            "policy 'cache' takes 'type.googleapis.com/sluice.policy.cache.v1.CacheConfig' (or leave "
            "\"@type\" out)");
  // An unknown policy is its name's error; a missing name is required.
  auto named = [](const std::string& name_line) {
    return absl::StrCat(
        "kind: RouteTable\nname: main\nspec:\n  virtual_hosts:\n    - domains: ['*']\n"
        "      routes:\n        - match: {prefix: /}\n          route: {cluster: web}\n"
        "          policies:\n            - ", name_line, "\n              typed_config: {}\n");
  };
  EXPECT_NE(Error(named("name: jwks")).find("policies[0].name: unknown policy 'jwks'"),
            std::string::npos)
      << Error(named("name: jwks"));
  EXPECT_TRUE(absl::EndsWith(Error(named("name: rate-limt")), "; did you mean 'rate-limit'?"))
      << Error(named("name: rate-limt"));
  // Two edits on a four-letter word is too far (jwks: jwt, or a JWKS?).
  EXPECT_FALSE(absl::StrContains(Error(named("name: jwks")), "did you mean")) << Error(named("name: jwks"));
  EXPECT_NE(Error(named("name: \"\"")).find("policies[0].name: is required"), std::string::npos)
      << Error(named("name: \"\""));
  // The "not set" placeholder is not offered as a choice.
  const std::string limited = absl::StrCat(
      "kind: RouteTable\nname: main\nspec:\n  virtual_hosts:\n    - domains: ['*']\n"
      "      routes:\n        - match: {prefix: /}\n          route: {cluster: web}\n"
      "          policies:\n            - name: rate-limit\n              typed_config:\n"
      "                limits: [{requests: 5, per: WEEK}]\n");
  EXPECT_NE(Error(limited).find("'WEEK' is not one of SECOND, MINUTE, HOUR, DAY"),
            std::string::npos)
      << Error(limited);
}

TEST(YamlLoaderTest, ValidationErrorsCarryTheLineOfTheField) {
  std::string e = Error(
      "kind: Cluster\nname: a\nspec:\n  endpoints:\n    - address: 127.0.0.1\n      port: 0\n");
  EXPECT_EQ(e, "f.yaml, document 1, line 6: Cluster \"a\": endpoints[0].port: must be 1..65535, got 0");
}

// Two fields of one oneof (a route's prefix and path, a Cluster's two
// health checks): the line of the second, the resource, and words rather
// than protobuf's. Before: "document 1: spec: (virtual_hosts[0].routes[0].
// match): invalid value oneof field 'path_specifier' is already set...".
// Every field of one document is found on its line, not only the first
// asked for: the lookup wrote into the cached document (yaml-cpp's
// assignment to a bound node), and later ones in it gave 0.
TEST(YamlLoaderTest, FieldLineFindsEveryFieldOfOneDocument) {
  auto loaded = LoadYaml(
      "kind: RouteTable\nname: gt\nspec:\n  virtual_hosts:\n    - domains: [a.com]\n"
      "      routes:\n"
      "        - match: {prefix: /a}\n          route: {cluster: ghost}\n"
      "        - match: {prefix: /b}\n          route: {cluster: ghost}\n"
      "        - match: {prefix: /c}\n          route: {cluster: ghost2}\n",
      "ghost.yaml");
  ASSERT_TRUE(loaded.ok()) << loaded.status();
  const LoadedResource& r = (*loaded)[0];
  for (int round = 0; round < 2; ++round) {
    EXPECT_EQ(FieldLine(r, "virtual_hosts[0].routes[0].route.cluster"), 8);
    EXPECT_EQ(FieldLine(r, "virtual_hosts[0].routes[1].route.cluster"), 10);
    EXPECT_EQ(FieldLine(r, "virtual_hosts[0].routes[2].route.cluster"), 12);
    EXPECT_EQ(FieldLine(r, "virtual_hosts[0].routes[2].match.prefix"), 11);
    EXPECT_EQ(FieldLine(r, "virtual_hosts[0].routes[9].route"), 7);  // the list: as deep as it goes
  }
}

TEST(YamlLoaderTest, TwoFieldsOfOneOneofNameTheLineAndTheResource) {
  std::string e = Error(
      "kind: RouteTable\nname: rt\nspec:\n  virtual_hosts:\n    - domains: ['*']\n"
      "      routes:\n        - match:\n            prefix: /a\n            path: /b\n"
      "          direct_response: {status: 200}\n");
  EXPECT_EQ(e, "f.yaml, document 1, line 9: RouteTable \"rt\": virtual_hosts[0].routes[0].match.path: "
               "cannot be set together with another field of path_specifier: set only one of them")
      << e;
  // A oneof of the spec itself (a Secret's two types): protobuf gave no
  // path, and the message came out raw, with the JSON name.
  e = Error(
      "kind: Secret\nname: s\nspec:\n  trusted_ca: {ca_certificates: x}\n  tls_certificate: {certificate_chain: x, "
      "private_key: y}\n");
  EXPECT_TRUE(absl::StrContains(e, "Secret \"s\": tls_certificate: cannot be set together with "
                                   "another field of type: set only one of them"))
      << e;
}

// A line of a PEM key out of its indentation becomes a key of the mapping:
// the error must not print it.
TEST(YamlLoaderTest, AnUnknownKeyThatIsNoFieldNameIsNotQuoted) {
  const std::string body = "MIGHAgEAMBMGByqGSM49AgEGCCqGSM49AwEHBG0wawIBAQQg+abc/def";
  std::string e = Error("kind: Cluster\nname: a\n" + body + ": x\nspec: {}\n");
  EXPECT_TRUE(absl::StrContains(e, "unknown top-level field of 56 characters, not quoted")) << e;
  EXPECT_FALSE(absl::StrContains(e, "MIGH")) << e;
  e = Error("kind: Secret\nname: a\nspec:\n  tls_certificate:\n    " + body + ": x\n");
  EXPECT_TRUE(absl::StrContains(e, "spec.tls_certificate.?: unknown field of 56 characters")) << e;
  EXPECT_FALSE(absl::StrContains(e, "MIGH")) << e;
}

// yaml-cpp's words are not left alone: a tab in the indentation is named,
// a list as a key is no "bad conversion", a list as the name is no missing
// name.
TEST(YamlLoaderTest, ParserErrorsSayWhatIsWrong) {
  std::string e = Error("kind: Cluster\nname: a\nspec:\n\tlb_policy: RANDOM\n"
                        "  endpoints: [{address: 127.0.0.1, port: 1}]\n");
  EXPECT_TRUE(absl::StrContains(e, "line 4, column 11: not valid YAML: illegal map value (a tab "
                                   "in the indentation: YAML indents with spaces only)"))
      << e;
  e = Error("kind: Cluster\nname: a\nspec:\n  ? [a, b]\n  : 1\n");
  EXPECT_EQ(e, "f.yaml, document 1, line 4: a list or mapping where a single value belongs (as a "
               "key, say)");
  e = Error("kind: Cluster\nname: [a]\nspec: {}\n");
  EXPECT_EQ(e, "f.yaml, document 1, line 2: name must be a single value, not a list or mapping");
  e = Error("kind: Cluster\nname: ~\nspec: {}\n");
  EXPECT_EQ(e, "f.yaml, document 1, line 2: name is empty (nothing after it, or ~)");
  e = Error("kind: ~\nname: a\nspec: {}\n");
  EXPECT_EQ(e, "f.yaml, document 1, line 1: kind is empty (nothing after it, or ~)");
  // Said at the key's line: an empty value's own mark is the next line's,
  // and an error about the name gave the document's first line (probe).
  e = Error("kind: Cluster\nname:\nspec: {}\n");
  EXPECT_EQ(e, "f.yaml, document 1, line 2: name is empty (nothing after it, or ~)");
  e = Error("# a comment\nkind:\nname: a\nspec: {}\n");
  EXPECT_EQ(e, "f.yaml, document 1, line 2: kind is empty (nothing after it, or ~)");
  e = Error("kind: Cluster\nspec:\n  endpoints: [{address: 127.0.0.1, port: 1}]\n\nname: a/b\n");
  EXPECT_TRUE(absl::StartsWith(e, "f.yaml, document 1, line 5: Cluster \"a/b\": name: ")) << e;
}

// A kebab-case key (nginx and Kong habits) is named, with its '_' spelling;
// a merge key is said to be unsupported. Before: "spec.?: unknown field of
// 15 characters, not quoted (... out of its indentation?)".
TEST(YamlLoaderTest, AKebabCaseKeyIsNamedWithItsUnderscoreSpelling) {
  std::string e = Error("kind: Cluster\nname: a\nspec:\n  connect-timeout: 1s\n"
                        "  endpoints: [{address: 127.0.0.1, port: 1}]\n");
  EXPECT_TRUE(absl::StrContains(e, "spec.connect-timeout: unknown field 'connect-timeout' (field "
                                   "names are written with '_': connect_timeout)"))
      << e;
  e = Error("kind: Cluster\nname: a\nspec:\n  <<: {lb_policy: RANDOM}\n"
            "  endpoints: [{address: 127.0.0.1, port: 1}]\n");
  EXPECT_TRUE(absl::StrContains(e, "spec.<<: unknown field '<<' (YAML merge keys are not "
                                   "supported")) << e;
}

// PEM pasted at column 0 under `certificate_chain: |` leaves the block
// empty and reads the PEM as keys; yaml-cpp's error comes at a later line
// ("illegal map value" at private_key). The hint names the block and the
// line its text starts.
TEST(YamlLoaderTest, ABlockScalarWhoseTextIsNotIndentedIsNamed) {
  const std::string e = Error(
      "kind: Secret\nname: s\nspec:\n  tls_certificate:\n    certificate_chain: |\n"
      "-----BEGIN CERTIFICATE-----\nMIIBszCCAVmgAwIBAgIUQ\n-----END CERTIFICATE-----\n"
      "    private_key: |\n      x\n");
  EXPECT_TRUE(absl::StrContains(e, "not valid YAML")) << e;
  EXPECT_TRUE(absl::StrContains(e, "(the block scalar at line 5 is empty: its text, from line 6, "
                                   "must be indented more than its key)"))
      << e;
  // An empty block followed by the next key is no such mistake: another
  // error gets no hint.
  const std::string other = Error("kind: Secret\nname: s\nspec:\n  a: |\n  b: [1\n");
  EXPECT_FALSE(absl::StrContains(other, "block scalar")) << other;
}

// A list or mapping where one value goes says which value and what it got
// (Envoy's cipher_suites is a list; here it is one OpenSSL cipher string).
TEST(YamlLoaderTest, AListForOneValueSaysWhatTheFieldTakes) {
  const std::string e = Error(
      "kind: Listener\nname: l\nspec:\n  port: 8443\n  route_table: rt\n"
      "  tls: {certificates: [c], cipher_suites: [ECDHE-RSA-AES128-GCM-SHA256]}\n");
  EXPECT_TRUE(absl::StrContains(
      e, "spec.tls.cipher_suites: expected a single value (a string), got a list"))
      << e;
  const std::string port = Error("kind: Cluster\nname: c\nspec:\n  endpoints: [{address: a, port: {x: 1}}]\n");
  EXPECT_TRUE(absl::StrContains(port, "expected a single value (a number), got a mapping")) << port;
}

TEST(YamlLoaderTest, EnvelopeErrors) {
  EXPECT_NE(Error("kind: Pod\nname: a\nspec: {}\n").find("unknown kind 'Pod'"), std::string::npos);
  EXPECT_NE(Error("kind: Clustr\nname: a\nspec: {}\n").find("did you mean 'Cluster'?"),
            std::string::npos);
  EXPECT_NE(Error("kind: Cluster\nspec: {}\n").find("name is required"), std::string::npos);
  EXPECT_NE(Error("kind: Cluster\nname: a\nspek: {}\n").find("unknown top-level field 'spek'"),
            std::string::npos);
  EXPECT_NE(Error("kind: Cluster\nname: a\nspec: {name: b, endpoints: [{address: 127.0.0.1, port: 1}]}\n")
                .find("spec.name 'b' differs from name 'a'"),
            std::string::npos);
  EXPECT_NE(Error("kind: Cluster\nname: [unclosed\n").find("f.yaml, line 3, column 1: not valid YAML"),
            std::string::npos);
  EXPECT_EQ(Error(""), "f.yaml: no documents");
}

// yaml-cpp keeps a repeated key (one of the values wins, or two lists are
// joined): refused, naming the key and both lines, at any depth and in
// flow mappings too.
TEST(YamlLoaderTest, ARepeatedKeyIsRefused) {
  EXPECT_NE(Error("kind: Cluster\nname: a\nname: b\nspec: {}\n")
                .find("f.yaml, document 1, line 3: duplicate key 'name' (first at line 2)"),
            std::string::npos)
      << Error("kind: Cluster\nname: a\nname: b\nspec: {}\n");
  const std::string nested =
      "kind: Cluster\nname: a\nspec:\n  endpoints: [{address: 127.0.0.1, port: 1}]\n"
      "  endpoints: [{address: 127.0.0.1, port: 2}]\n";
  EXPECT_NE(Error(nested).find("line 5: duplicate key 'endpoints' (first at line 4)"),
            std::string::npos)
      << Error(nested);
  const std::string flow =
      "kind: Cluster\nname: a\nspec: {endpoints: [{address: 127.0.0.1, address: 10.0.0.1, "
      "port: 1}]}\n";
  EXPECT_NE(Error(flow).find("duplicate key 'address'"), std::string::npos) << Error(flow);
  // One field in its two spellings is one key (protobuf kept the last).
  const std::string spellings =
      "kind: Cluster\nname: a\nspec:\n  endpoints: [{address: 127.0.0.1, port: 1}]\n"
      "  connect_timeout: 1s\n  connectTimeout: 2s\n";
  EXPECT_NE(Error(spellings).find("line 6: duplicate key 'connectTimeout' (first at line 5, as "
                                  "'connect_timeout')"),
            std::string::npos)
      << Error(spellings);
}

// yaml-cpp ends a quoted string at the end of the text when its closing
// quote is missing: the rest of the file became that string, and applied.
TEST(YamlLoaderTest, AQuotedStringThatIsNeverClosedIsRefused) {
  const std::string route =
      "kind: RouteTable\nname: rt\nspec:\n  virtual_hosts:\n  - domains: ['*']\n    routes:\n"
      "    - match: {prefix: /maintenance}\n      direct_response:\n        status: 503\n"
      "        body: QUOTEdown for maintenance\n    - match: {prefix: /}\n"
      "      direct_response: {status: 200, body: ok}\n";
  for (const char* quote : {"\"", "'"}) {
    std::string yaml = absl::StrReplaceAll(route, {{"QUOTE", quote}});
    EXPECT_NE(Error(yaml).find("f.yaml, document 1, line 10, column 15: not valid YAML: a quoted "
                               "string that is never closed"),
              std::string::npos)
        << Error(yaml);
  }
  // Closed ones, over lines and with escaped quotes, load.
  auto loaded = LoadYaml(absl::StrReplaceAll(route, {{"QUOTEdown for maintenance",
                                                      "\"down \\\" for\n  maintenance\""}}),
                         "f.yaml");
  EXPECT_TRUE(loaded.ok()) << loaded.status();
  loaded = LoadYaml(absl::StrReplaceAll(route, {{"QUOTEdown for maintenance", "'it''s down'"}}),
                    "f.yaml");
  EXPECT_TRUE(loaded.ok()) << loaded.status();
}

// Aliases are walked where they are used: one inside the node it names
// never ends (sluicectl crashed), and nested ones multiply (a 450-byte file
// took minutes). Both are refused at once.
TEST(YamlLoaderTest, SelfReferencingAndExplodingAliasesAreRefused) {
  EXPECT_NE(Error("kind: Cluster\nname: sr\nspec: &a\n  endpoints: [*a]\n")
                .find("nested more than 256 levels deep (or an alias used inside the node it "
                      "names)"),
            std::string::npos)
      << Error("kind: Cluster\nname: sr\nspec: &a\n  endpoints: [*a]\n");
  std::string bomb = "kind: Cluster\nname: b\nspec:\n  x0: &a0 [l, l, l, l, l, l, l, l, l]\n";
  for (int i = 1; i <= 9; ++i) {
    absl::StrAppend(&bomb, "  x", i, ": &a", i, " [");
    for (int j = 0; j < 9; ++j) absl::StrAppend(&bomb, j ? ", " : "", "*a", i - 1);
    bomb += "]\n";
  }
  const std::string e = Error(bomb);  // before: minutes of CPU
  EXPECT_NE(e.find("YAML nodes once its aliases are expanded"), std::string::npos)
      << e.substr(0, 300);
}

// A tag was dropped without a word ("!!str 8080" read as a port, "!custom
// 127.0.0.1" as an address): refused, naming it. An anchor and its alias
// (no tag) still load.
TEST(YamlLoaderTest, TagsAreRefused) {
  const std::string cluster =
      "kind: Cluster\nname: t\nspec:\n  endpoints: [{address: ADDRESS, port: PORT}]\n";
  auto with = [&](const std::string& address, const std::string& port) {
    return absl::StrReplaceAll(cluster, {{"ADDRESS", address}, {"PORT", port}});
  };
  std::string e = Error(with("!custom 127.0.0.1", "80"));
  EXPECT_NE(e.find("f.yaml, document 1, line 4: YAML tag !custom is not supported"),
            std::string::npos)
      << e;
  e = Error(with("127.0.0.1", "!!str 8080"));
  EXPECT_NE(e.find("YAML tag !!str is not supported"), std::string::npos) << e;
  e = Error("!!binary aGk=\n");
  EXPECT_NE(e.find("YAML tag !!binary is not supported"), std::string::npos) << e;
  // A core tag must say what the value is (they were read as if untagged).
  for (const auto& [address, port, said] :
       std::vector<std::tuple<std::string, std::string, std::string>>{
           {"!!int 127.0.0.1", "80", "YAML tag !!int on a value that is not an integer"},
           {"127.0.0.1", "!!map 8080", "YAML tag !!map on a value that is not a mapping"},
           {"127.0.0.1", "!!seq 8080", "YAML tag !!seq on a value that is not a list"},
           {"127.0.0.1", "!!int 1.5", "YAML tag !!int on a value that is not an integer"}}) {
    e = Error(with(address, port));
    EXPECT_NE(e.find(said), std::string::npos) << e;
  }
  EXPECT_TRUE(LoadYaml(with("127.0.0.1", "!!float 8080"), "f.yaml").ok());
  // !!bool and !!null: the value was read as if untagged (a port of 8080).
  for (const char* tag : {"!!bool", "!!null"}) {
    e = Error(with("127.0.0.1", absl::StrCat(tag, " 8080")));
    EXPECT_NE(e.find(absl::StrCat("YAML tag ", tag, " is not supported")), std::string::npos) << e;
  }
  // The core schema's number and structure tags say what the field's type
  // checks anyway.
  EXPECT_TRUE(LoadYaml(with("127.0.0.1", "!!int 8080"), "f.yaml").ok());
  EXPECT_TRUE(LoadYaml(with("'127.0.0.1'", "8080"), "f.yaml").ok());
  auto aliased = LoadYaml("kind: Cluster\nname: t\nspec:\n  endpoints: [{address: &a "
                          "127.0.0.1, port: 80}, {address: *a, port: 81}]\n",
                          "f.yaml");
  EXPECT_TRUE(aliased.ok()) << aliased.status();
}

// A file is read up to the most one apply can carry, not to the end
// (/dev/zero has none).
TEST(YamlLoaderTest, AFileOverTheConfigLimitIsRefusedWithoutReadingItAll) {
  auto loaded = LoadPath("/dev/zero");
  ASSERT_FALSE(loaded.ok());
  EXPECT_NE(loaded.status().message().find("/dev/zero: larger than 33554432 bytes"),
            std::string::npos)
      << loaded.status().message();
}

// "-f -" reads standard input (as kubectl does); errors name it.
TEST(YamlLoaderTest, DashReadsStandardInput) {
  std::istringstream good("kind: Cluster\nname: from-stdin\nspec:\n"
                          "  endpoints: [{address: 127.0.0.1, port: 9}]\n");
  std::streambuf* saved = std::cin.rdbuf(good.rdbuf());
  auto loaded = LoadPath("-");
  std::istringstream bad("kind: Cluster\nname: x\nspec:\n  endpoints: [{port: 0}]\n");
  std::cin.rdbuf(bad.rdbuf());
  std::cin.clear();
  auto refused = LoadPath("-");
  std::cin.rdbuf(saved);
  ASSERT_TRUE(loaded.ok()) << loaded.status();
  ASSERT_EQ(loaded->size(), 1u);
  EXPECT_EQ(api::NameOf((*loaded)[0].resource), "from-stdin");
  ASSERT_FALSE(refused.ok());
  EXPECT_TRUE(absl::StartsWith(refused.status().message(), "standard input, document 1, line 4"))
      << refused.status();
}

// Refused before parsing: a NUL byte in UTF-8 text (yaml-cpp read
// "<NUL>n" as an escape, storing a newline), and more documents than an
// apply holds (3 million "---" lines took gigabytes before any limit).
TEST(YamlLoaderTest, NulBytesAndDocumentFloodsAreRefusedBeforeParsing) {
  std::string nul = "kind: Cluster\nname: a\nspec:\n  endpoints: [{address: 127.0.0.1";
  nul += std::string("\0x41", 4);
  nul += ", port: 1}]\n";
  EXPECT_EQ(Error(nul), "f.yaml, line 4: a NUL byte, which YAML allows nowhere");
  std::string flood;
  for (int i = 0; i < 100001; ++i) flood += "---\n";
  const std::string too_many =
      "f.yaml: more than 100000 documents ('---' or '...' lines); one apply takes at most that many";
  EXPECT_EQ(Error(flood), too_many);
  std::string ends;  // documents ended by '...' count too
  for (int i = 0; i < 100001; ++i) ends += "{}\n...\n";
  EXPECT_EQ(Error(ends), too_many);
  // UTF-16 text (its bytes hold zeros) loads, and is checked as its
  // characters: a U+0000 in it is refused as in UTF-8; so is a flood.
  auto utf16 = [](const std::string& utf8) {
    std::string out = "\xFF\xFE";
    for (char c : utf8) {
      out.push_back(c);
      out.push_back('\0');
    }
    return out;
  };
  const std::string utf8 = "kind: Cluster\nname: a\nspec: {endpoints: [{address: 127.0.0.1, port: 1}]}\n";
  auto loaded = LoadYaml(utf16(utf8), "f.yaml");
  ASSERT_TRUE(loaded.ok()) << loaded.status();
  EXPECT_EQ(api::NameOf((*loaded)[0].resource), "a");
  EXPECT_EQ(Error(utf16(std::string("kind: Cluster\nname: a\0n\n", 24))),
            "f.yaml, line 2: a NUL byte, which YAML allows nowhere");
  EXPECT_EQ(Error(utf16(flood)), too_many);
  EXPECT_EQ(Error(std::string("\xFF\xFE\x00\xD8", 4)), "f.yaml: not valid UTF-16 at byte 2");
}

// -f DIR takes regular .yaml/.yml/.json files, not hidden ones (macOS's
// "._x.yaml"), not a FIFO (reading it blocked the apply for ever), not a
// directory so named; a file it cannot read says why.
TEST(YamlLoaderTest, ADirectoryGivesItsRegularVisibleYamlFiles) {
  char tmpl[] = "/tmp/yaml-dir-XXXXXX";
  ASSERT_NE(mkdtemp(tmpl), nullptr);
  const std::string dir = tmpl;
  auto write = [&](const std::string& name, const std::string& text) {
    FILE* f = fopen((dir + "/" + name).c_str(), "w");
    ASSERT_NE(f, nullptr);
    fputs(text.c_str(), f);
    fclose(f);
  };
  write("a.yaml", "kind: Cluster\nname: a\nspec: {endpoints: [{address: 127.0.0.1, port: 1}]}\n");
  // A `get -o json` export beside it (it was skipped).
  write("b.json",
        "{\"items\": [{\"kind\": \"Cluster\", \"name\": \"b\", \"spec\": {\"endpoints\": "
        "[{\"address\": \"127.0.0.1\", \"port\": 2}]}}]}\n");
  write("notes.txt", "not config");
  write("._a.yaml", "\x00\x05binary");
  ASSERT_EQ(mkfifo((dir + "/fifo.yaml").c_str(), 0600), 0);
  ASSERT_EQ(mkdir((dir + "/sub.yaml").c_str(), 0700), 0);
  auto loaded = LoadPath(dir);
  ASSERT_TRUE(loaded.ok()) << loaded.status();
  ASSERT_EQ(loaded->size(), 2u);
  EXPECT_EQ(api::NameOf((*loaded)[0].resource), "a");
  EXPECT_EQ(api::NameOf((*loaded)[1].resource), "b");
  if (geteuid() != 0) {  // root reads whatever the mode says
    write("c.yaml", "kind: Cluster\n");
    ASSERT_EQ(chmod((dir + "/c.yaml").c_str(), 0), 0);
    auto refused = LoadPath(dir);
    ASSERT_FALSE(refused.ok());
    EXPECT_TRUE(absl::StrContains(refused.status().message(), "c.yaml: cannot read: Permission denied"))
        << refused.status();
  }
}

TEST(YamlLoaderTest, AnErrorInOneDocumentYieldsNothingAndNamesTheDocument) {
  std::string e = Error(
      "kind: Cluster\nname: ok\nspec: {endpoints: [{address: 127.0.0.1, port: 1}]}\n---\n"
      "kind: Cluster\nname: bad\nspec: {endpoints: [{address: 127.0.0.1, port: 1, wat: 1}]}\n");
  EXPECT_NE(e.find("f.yaml, document 2, line 7"), std::string::npos) << e;
}

// What the control plane refuses only in added or changed content (here a
// repeated method and CONNECT) is said with another document's errors, in
// document order: they were named only once the other was fixed.
TEST(YamlLoaderTest, ApplyOnlyRefusalsOfOtherDocumentsComeInTheSameRound) {
  std::string e = Error(
      "kind: RouteTable\nname: t\nspec:\n  virtual_hosts:\n    - domains: ['*']\n"
      "      routes:\n        - match: {prefix: /, methods: [GET, GET, CONNECT]}\n"
      "          route: {cluster: c}\n---\n"
      "kind: Cluster\nname: c\nspec:\n  endpoints: [{address: 127.0.0.1, port: 1}]\n"
      "  health_check: {http: {path: '/a b'}}\n");
  const std::vector<std::string> lines = absl::StrSplit(e, '\n');
  ASSERT_EQ(lines.size(), 3u) << e;
  EXPECT_TRUE(absl::StartsWith(lines[0], "f.yaml, document 1, line 7: RouteTable \"t\": "
                                         "virtual_hosts[0].routes[0].match.methods[1]: 'GET' is "
                                         "listed twice (refused if the apply adds or changes it)"))
      << e;
  EXPECT_TRUE(absl::StrContains(lines[1], "match.methods[2]: CONNECT")) << e;
  // The space is said once (the apply-only path rule said it again).
  EXPECT_TRUE(absl::StartsWith(lines[2], "f.yaml, document 2, line 14: Cluster \"c\": "
                                         "health_check.http.path: must not contain spaces"))
      << e;
}

// `sluicectl get -o json` of the whole config is an envelope whose items
// are the resources: applied back as they are (before: "unknown top-level
// field 'version'").
TEST(YamlLoaderTest, TheWholeConfigAsGetPrintsItAppliesBack) {
  auto loaded = LoadYaml(
      R"({"version":3,"items":[{"kind":"Cluster","name":"a","spec":{"endpoints":[{"address":"127.0.0.1","port":1}]}},)"
      R"({"kind":"Cluster","name":"b","spec":{"endpoints":[{"address":"127.0.0.1","port":2}]}}]})",
      "all.json");
  ASSERT_TRUE(loaded.ok()) << loaded.status();
  ASSERT_EQ(loaded->size(), 2u);
  EXPECT_EQ((*loaded)[1].resource.cluster().name(), "b");
  EXPECT_EQ((*loaded)[1].where, "all.json, document 1, items[1]");
  std::string e = Error(
      R"({"version":3,"items":[{"kind":"Cluster","name":"a","spec":{"endpoints":[{"address":"127.0.0.1","port":0}]}}]})");
  EXPECT_TRUE(absl::StartsWith(e, "f.yaml, document 1, items[0], line 1: Cluster \"a\": "
                                  "endpoints[0].port: must be 1..65535"))
      << e;
  e = Error(R"({"version":3,"name":"x","items":[]})");
  EXPECT_EQ(e, "f.yaml, document 1: unknown top-level field 'name' beside items (a list of "
               "resources takes version and items only)");
  // A key that is a list (it threw out of the loader: sluicectl aborted).
  e = Error("items: []\n? [a, b]\n: 1\n");
  EXPECT_EQ(e, "f.yaml, document 1: unknown top-level field that is not a name (a list, a "
               "mapping or null) beside items (a list of resources takes version and items only)");
  e = Error(R"({"version":{"a":1},"items":[]})");
  EXPECT_EQ(e, "f.yaml, document 1, line 1: version must be a number (as get -o json prints it)");
  // A scalar that is no number is refused too (it passed for one).
  for (const char* version : {R"("x")", R"("")", "-1", "1.5", "null", "99999999999999999999"}) {
    e = Error(absl::StrCat(R"({"version":)", version, R"(,"items":[]})"));
    EXPECT_EQ(e, "f.yaml, document 1, line 1: version must be a number (as get -o json prints it)")
        << version;
  }
  // items that is no list (it was said to be an unknown top-level field
  // 'version').
  e = Error(R"({"version":3,"items":{"kind":"Cluster"}})");
  EXPECT_EQ(e, "f.yaml, document 1, line 1: items must be a list of resources");
  // A key given twice (two exports joined by hand): the second items was
  // dropped without a word, and the first version decided the stale check.
  e = Error(
      R"({"items":[{"kind":"Cluster","name":"q","spec":{"endpoints":[{"address":"127.0.0.1","port":1}]}}],)"
      R"("items":[{"kind":"Cluster","name":"r","spec":{"endpoints":[{"address":"127.0.0.1","port":2}]}}]})");
  EXPECT_EQ(e, "f.yaml, document 1, line 1: duplicate key 'items' (a list of resources takes one "
               "version and one items; join the lists)");
  e = Error("version: 9\nitems: []\nversion: 3\n");
  EXPECT_EQ(e, "f.yaml, document 1, line 3: duplicate key 'version' (a list of resources takes "
               "one version and one items; join the lists)");
}

TEST(YamlLoaderTest, YamlRoundTrip) {
  auto loaded = LoadYaml(
      "kind: Cluster\nname: users\nspec:\n  lb_policy: LEAST_REQUEST\n  connect_timeout: 2s\n"
      "  endpoints: [{address: 127.0.0.1, port: 9001}]\n",
      "f.yaml");
  ASSERT_TRUE(loaded.ok());
  std::string yaml = ToYaml((*loaded)[0].resource);
  auto again = LoadYaml(yaml, "again.yaml");
  ASSERT_TRUE(again.ok()) << again.status() << "\n" << yaml;
  EXPECT_EQ((*again)[0].resource.SerializeAsString(), (*loaded)[0].resource.SerializeAsString());
  EXPECT_NE(ToJson((*loaded)[0].resource).find("\"kind\":\"Cluster\""), std::string::npos);
}

// `get -o yaml` quotes a string that another YAML reader (PyYAML, yq,
// Ansible) would take for a bool, a number or a null, and escapes DEL
// (no printable YAML character). Before: `cluster: 0x1F` (31 to PyYAML),
// `name: yes` (true), and a raw DEL that PyYAML refused.
TEST(YamlLoaderTest, GetQuotesStringsOtherReadersWouldTakeForAnotherType) {
  auto loaded = LoadYaml(R"(
kind: RouteTable
name: '010'
spec:
  virtual_hosts:
    - name: '1.5'
      domains: ['*']
      routes:
        - name: 'yes'
          match: {prefix: /a}
          route: {cluster: '0x1F', timeout: 5s}
          policies:
            - name: headers
              typed_config:
                response:
                  set: [{name: x-a, value: inf}, {name: x-b, value: 0X1F}, {name: x-c, value: 1.5}]
        - name: 'off'
          match: {prefix: /b}
          direct_response: {status: 200, body: "x\x7Fy caf\u00e9"}
        - name: '2024-01-02'
          match: {prefix: /c}
          route: {cluster: '1_000'}
        - name: plain
          match: {prefix: /d}
          direct_response: {status: 200, body: '~'}
        - name: breaks
          match: {prefix: /e}
          direct_response: {status: 200, body: "a\u2028b\u2029c\x85d"}
)",
                         "f.yaml");
  ASSERT_TRUE(loaded.ok()) << loaded.status();
  const std::string yaml = ToYaml((*loaded)[0].resource);
  for (const char* quoted : {"name: \"010\"", "value: \"inf\"", "value: \"0X1F\"",
                             "value: \"1.5\"", "name: \"1.5\"", "name: \"yes\"", "cluster: \"0x1F\"",
                             "name: \"off\"", "name: \"2024-01-02\"", "cluster: \"1_000\"",
                             "body: \"~\"", "body: \"x\\x7fy caf\\xe9\"",
                             // Line breaks to a YAML 1.1 reader: PyYAML misread them plain.
                             "body: \"a\\u2028b\\u2029c\\x85d\""}) {
    EXPECT_TRUE(absl::StrContains(yaml, quoted)) << quoted << "\n" << yaml;
  }
  // What reads as a string anyway stays plain.
  EXPECT_TRUE(absl::StrContains(yaml, "timeout: 5s")) << yaml;
  EXPECT_TRUE(absl::StrContains(yaml, "name: plain")) << yaml;
  EXPECT_TRUE(absl::StrContains(yaml, "prefix: /a")) << yaml;
  auto again = LoadYaml(yaml, "again.yaml");
  ASSERT_TRUE(again.ok()) << again.status() << "\n" << yaml;
  EXPECT_EQ((*again)[0].resource.SerializeAsString(), (*loaded)[0].resource.SerializeAsString());
}

// JSON (Python's json.dump) writes a character past U+FFFF as a UTF-16
// surrogate pair, which yaml-cpp refused half by half ("invalid unicode:
// 55357"): the pairs of a double-quoted scalar are joined. A lone half is
// refused and said to be one; the same text outside double quotes is text.
TEST(YamlLoaderTest, SurrogatePairsInDoubleQuotedScalarsAreOneCharacter) {
  auto loaded = LoadYaml(
      "{\"kind\": \"RouteTable\", \"name\": \"t\", \"spec\": {\"virtual_hosts\": [{"
      "\"domains\": [\"*\"], \"routes\": ["
      "{\"match\": {\"prefix\": \"/a\"}, \"direct_response\": {\"status\": 200, "
      "\"body\": \"caf\u00e9 \\ud83d\\ude00 \\\\ud83d\\\\ude00 \\\" \\uD83C\\uDF89\"}},"
      "{\"match\": {\"prefix\": \"/b\"}, \"direct_response\": {\"status\": 200, "
      "\"body\": \"\\ud83d\\ude01\"}}]}]}}\n"
      "---\nkind: RouteTable\nname: u\nspec:\n  virtual_hosts:\n    - domains: ['*']\n"
      "      routes:\n        - match: {prefix: /c}\n"
      "          direct_response: {status: 200, body: '\\ud83d\\ude00'}\n"
      "        - match: {prefix: /d}\n"
      "          direct_response:\n            status: 200\n            body: |\n"
      "              {\"e\": \"\\ud83d\\ude00\"}\n",
      "f.json");
  ASSERT_TRUE(loaded.ok()) << loaded.status();
  ASSERT_EQ(loaded->size(), 2u);
  const auto& t = (*loaded)[0].resource.route_table().virtual_hosts(0);
  EXPECT_EQ(t.routes(0).direct_response().body(),
            "caf\xc3\xa9 \xf0\x9f\x98\x80 \\ud83d\\ude00 \" \xf0\x9f\x8e\x89");
  EXPECT_EQ(t.routes(1).direct_response().body(), "\xf0\x9f\x98\x81");
  const auto& u = (*loaded)[1].resource.route_table().virtual_hosts(0);
  EXPECT_EQ(u.routes(0).direct_response().body(), "\\ud83d\\ude00");
  EXPECT_EQ(u.routes(1).direct_response().body(), "{\"e\": \"\\ud83d\\ude00\"}\n");
  // JSON text is joined in one pass, however many strings hold pairs (the
  // file was read again for each: 31.8 s for 255 in 2.8 MB, and 257 were
  // refused); YAML's up to 256 scalars, then said to be too many.
  std::string json = "{\"kind\": \"RouteTable\", \"name\": \"many\", \"spec\": "
                     "{\"virtual_hosts\": [{\"domains\": [\"*\"], \"routes\": [";
  std::string yaml = "kind: RouteTable\nname: many\nspec:\n  virtual_hosts:\n"
                     "    - domains: ['*']\n      routes:\n";
  for (int i = 0; i < 300; ++i) {
    absl::StrAppend(&json, i == 0 ? "" : ", ", "{\"match\": {\"path\": \"/", i,
                    "\"}, \"direct_response\": {\"status\": 200, \"body\": \"", i,
                    "\\ud83d\\ude00\"}}");
    absl::StrAppend(&yaml, "        - match: {path: /", i, "}\n          direct_response: "
                    "{status: 200, body: \"", i, "\\ud83d\\ude00\"}\n");
  }
  absl::StrAppend(&json, "]}]}}\n");
  auto many = LoadYaml(json, "many.json");
  ASSERT_TRUE(many.ok()) << many.status();
  EXPECT_EQ((*many)[0].resource.route_table().virtual_hosts(0).routes(299)
                .direct_response().body(),
            "299\xf0\x9f\x98\x80");
  const std::string too_many = Error(yaml);
  EXPECT_TRUE(absl::StrContains(too_many, "in more than 256 double-quoted YAML scalars"))
      << too_many;
  const std::string lone = Error("kind: Cluster\nname: a\nspec: {x: \"\\ud83d!\"}\n");
  EXPECT_TRUE(absl::StrContains(lone, "line 3, column ")) << lone;
  EXPECT_TRUE(absl::StrContains(lone, "invalid unicode: 55357 (\\ud83d is half of a UTF-16 "
                                      "surrogate pair"))
      << lone;
}

TEST(YamlLoaderTest, EveryClusterFeatureRoundTripsThroughGetAndApply) {
  auto loaded = LoadYaml(R"(
kind: Cluster
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
---
kind: RouteTable
name: main
spec:
  virtual_hosts:
    - domains: ["*"]
      routes:
        - match: {prefix: /}
          route: {cluster: users, retry_policy: {num_retries: 2, retry_on: [gateway-error],
                  per_try_timeout: 500ms, retry_non_idempotent: true}}
)",
                         "f.yaml");
  ASSERT_TRUE(loaded.ok()) << loaded.status();
  const auto& c = (*loaded)[0].resource.cluster();
  // Wrapper fields keep an explicit 0 apart from "unset".
  EXPECT_TRUE(c.outlier_detection().has_consecutive_5xx());
  EXPECT_EQ(c.outlier_detection().consecutive_5xx().value(), 0u);
  EXPECT_TRUE(c.has_panic_threshold_percent());
  EXPECT_EQ(c.panic_threshold_percent().value(), 0u);
  EXPECT_EQ(c.health_check().timeout().nanos(), 250000000);
  for (const auto& r : *loaded) {
    std::string yaml = ToYaml(r.resource);
    auto again = LoadYaml(yaml, "again.yaml");
    ASSERT_TRUE(again.ok()) << again.status() << "\n" << yaml;
    EXPECT_EQ((*again)[0].resource.SerializeAsString(), r.resource.SerializeAsString()) << yaml;
  }
}

std::string Indent(const std::string& text, int spaces) {
  std::string pad(spaces, ' ');
  std::string out = pad + absl::StrReplaceAll(text, {{"\n", "\n" + pad}});
  return out.substr(0, out.size() - spaces);  // no indent after the last line break
}

TEST(YamlLoaderTest, SecretWithPemBlockScalarsRoundTrips) {
  testing::TestCertificate c = testing::MakeCertificate({});
  std::string yaml = absl::StrCat(
      "kind: Secret\n"
      "name: web\n"
      "spec:\n"
      "  tls_certificate:\n"
      "    certificate_chain: |\n",
      Indent(c.certificate_pem, 6),
      "    private_key: |\n",
      Indent(c.key_pem, 6));
  auto loaded = LoadYaml(yaml, "web.yaml");
  ASSERT_TRUE(loaded.ok()) << loaded.status() << "\n" << yaml;
  ASSERT_EQ(loaded->size(), 1u);
  const api::Resource& secret = (*loaded)[0].resource;
  EXPECT_EQ(api::Describe(api::IdOf(secret)), "Secret \"web\"");
  EXPECT_EQ(secret.secret().tls_certificate().certificate_chain(), c.certificate_pem);
  EXPECT_EQ(secret.secret().tls_certificate().private_key(), c.key_pem);

  // get -o yaml prints PEM as block scalars, and apply reads it back whole.
  std::string out = ToYaml(secret);
  EXPECT_TRUE(absl::StrContains(out, "certificate_chain: |\n      -----BEGIN CERTIFICATE-----\n"))
      << out;
  // No blank line after a block.
  EXPECT_TRUE(absl::StrContains(out, "-----END CERTIFICATE-----\n    private_key: |\n")) << out;
  EXPECT_FALSE(absl::StrContains(out, "\n\n")) << out;
  auto again = LoadYaml(out, "again.yaml");
  ASSERT_TRUE(again.ok()) << again.status() << "\n" << out;
  EXPECT_EQ((*again)[0].resource.SerializeAsString(), secret.SerializeAsString()) << out;
}

TEST(YamlLoaderTest, RedactedSecretFromGetIsRefusedOnApply) {
  testing::TestCertificate c = testing::MakeCertificate({});
  api::Resource secret;
  secret.mutable_secret()->set_name("web");
  secret.mutable_secret()->mutable_tls_certificate()->set_certificate_chain(c.certificate_pem);
  secret.mutable_secret()->mutable_tls_certificate()->set_private_key(c.key_pem);
  api::RedactSecrets(&secret);
  std::string out = ToYaml(secret);
  EXPECT_FALSE(absl::StrContains(out, "PRIVATE KEY")) << out;
  EXPECT_TRUE(absl::StrContains(out, "private_key: \"[redacted]\"")) << out;
  std::string e = Error(out);
  EXPECT_TRUE(absl::StrContains(
      e, "Secret \"web\": tls_certificate.private_key: is \"[redacted]\", what sluicectl get "
         "and the admin API show in place of a key: the key was redacted on output and must be "
         "supplied"))
      << e;
  EXPECT_TRUE(absl::StartsWith(e, "f.yaml, document 1, line ")) << e;
  EXPECT_FALSE(absl::StrContains(ToJson(secret), "PRIVATE KEY"));
}

TEST(YamlLoaderTest, TrustedCaAndListenerTls) {
  testing::CertificateSpec spec;
  spec.is_ca = true;
  std::string ca = testing::MakeCertificate(spec).certificate_pem;
  auto loaded = LoadYaml(absl::StrCat(R"(
kind: secrets
name: clients
spec:
  trusted_ca:
    ca_certificates: |
)", Indent(ca, 6), R"(---
kind: Listener
name: https
spec:
  address: 0.0.0.0
  port: 8443
  route_table: main
  tls:
    certificates: [web, web-rsa]
    min_version: "1.2"
    alpn_protocols: [http/1.1]
    client_ca: clients
    require_client_certificate: false
    session_tickets: true
)"),
                         "f.yaml");
  ASSERT_TRUE(loaded.ok()) << loaded.status();
  EXPECT_EQ((*loaded)[0].resource.secret().trusted_ca().ca_certificates(), ca);
  const auto& tls = (*loaded)[1].resource.listener().tls();
  EXPECT_EQ(tls.certificates_size(), 2);
  EXPECT_TRUE(tls.has_require_client_certificate());
  EXPECT_FALSE(tls.require_client_certificate().value());
  EXPECT_TRUE(tls.session_tickets().value());
  for (const auto& r : *loaded) {
    std::string yaml = ToYaml(r.resource);
    auto again = LoadYaml(yaml, "again.yaml");
    ASSERT_TRUE(again.ok()) << again.status() << "\n" << yaml;
    EXPECT_EQ((*again)[0].resource.SerializeAsString(), r.resource.SerializeAsString()) << yaml;
  }
}

TEST(YamlLoaderTest, SecretErrorsCarryTheLineOfTheField) {
  testing::TestCertificate c = testing::MakeCertificate({});
  std::string e = Error(absl::StrCat(
      "kind: Secret\nname: web\nspec:\n  tls_certificate:\n    certificate_chain: |\n",
      Indent(c.certificate_pem, 6), "    private_key: |\n",
      Indent(testing::MakeCertificate({}).key_pem, 6)));
  int key_line = 6 + static_cast<int>(std::count(c.certificate_pem.begin(),
                                                 c.certificate_pem.end(), '\n'));
  EXPECT_EQ(e, absl::StrCat("f.yaml, document 1, line ", key_line,
                            ": Secret \"web\": tls_certificate.private_key: does not match the "
                            "certificate's public key"));
}

TEST(YamlLoaderTest, ConsumerLoadsAndRoundTrips) {
  auto loaded = LoadYaml(R"(
kind: consumers
name: alice@example.com
spec:
  groups: [admins, ops]
  keys:
    - key: alice-key-0123456789
    - key_sha256: ba7816bf8f01cfea414140de5dae2223b00361a396177a9cb410ff61f20015ad
  basic_auth: {username: alice, password: "correct horse"}
)",
                         "f.yaml");
  ASSERT_TRUE(loaded.ok()) << loaded.status();
  ASSERT_EQ(loaded->size(), 1u);
  const api::Resource& r = (*loaded)[0].resource;
  ASSERT_TRUE(r.has_consumer());
  EXPECT_EQ(r.consumer().name(), "alice@example.com");
  EXPECT_EQ(r.consumer().groups_size(), 2);
  // Sent as written: the control plane hashes it (it needs the plain
  // password to see whether it changed).
  EXPECT_EQ(r.consumer().keys(0).key(), "alice-key-0123456789");
  EXPECT_EQ(r.consumer().basic_auth().password(), "correct horse");
  std::string yaml = ToYaml(r);
  EXPECT_TRUE(absl::StartsWith(yaml, "kind: Consumer\nname: alice@example.com\n")) << yaml;
  auto again = LoadYaml(yaml, "again.yaml");
  ASSERT_TRUE(again.ok()) << again.status() << "\n" << yaml;
  EXPECT_EQ((*again)[0].resource.SerializeAsString(), r.SerializeAsString());
  EXPECT_TRUE(absl::StartsWith(ToJson(r), "{\"kind\":\"Consumer\",\"name\":\"alice@example.com\""))
      << ToJson(r);
}

TEST(YamlLoaderTest, ConsumerErrorsCarryTheLineOfTheField) {
  EXPECT_EQ(Error("kind: Consumer\nname: alice\nspec:\n  keys:\n    - key: alice-key-1\n"
                  "    - key: short\n"),
            "f.yaml, document 1, line 6: Consumer \"alice\": keys[1].key: is 5 characters; must "
            "be 8..512");
  EXPECT_EQ(Error("kind: Consumer\nname: alice\nspec:\n  basic_auth:\n    username: alice\n"),
            "f.yaml, document 1, line 5: Consumer \"alice\": basic_auth: needs password or "
            "password_hash");
}

}  // namespace
}  // namespace sluice::cli

namespace sluice::cli {
namespace {

// Hostile shapes: deep nesting on one line and a flow mapping with very many
// keys are refused with an error (no exhausted stack, no quadratic scan).
// A file whose regular expressions alone pass the bound on a whole
// config's is refused here, before the control plane, and no more of its
// patterns are compiled past the bound (a 247 KB file took 32 s of
// sluicectl's CPU).
TEST(YamlLoaderTest, AFileOverTheRegexBudgetIsRefused) {
  std::string yaml = "kind: RouteTable\nname: main\nspec:\n  virtual_hosts:\n  - domains: ['*']\n"
                     "    routes:\n";
  for (int i = 0; i < 500; ++i) {
    absl::StrAppend(&yaml, "    - match: {regex: '/", i, ".{900}.{900}'}\n      route: {cluster: c}\n");
  }
  auto loaded = LoadYaml(yaml, "f.yaml");
  ASSERT_FALSE(loaded.ok());
  EXPECT_TRUE(absl::StartsWith(loaded.status().message(),
                               "f.yaml: the config's regular expressions would compile to at "
                               "least "))
      << loaded.status();
  EXPECT_TRUE(absl::StrContains(loaded.status().message(), "over the limit of 1000000"))
      << loaded.status();
}

// Mistakes a probe found worded badly or let through.
TEST(YamlLoaderTest, NullsNegativeZeroDeepFlowAndManyErrorsInOneDocument) {
  // A null where one value goes: said as a null.
  auto loaded = LoadYaml("kind: Cluster\nname: a\nspec:\n  endpoints: [{address: 127.0.0.1, port: ~}]\n",
                         "f.yaml");
  ASSERT_FALSE(loaded.ok());
  EXPECT_TRUE(absl::StrContains(loaded.status().message(), "port: is null")) << loaded.status();
  // "-0s" is not a duration (it turned a route's timeout off).
  loaded = LoadYaml("kind: Cluster\nname: a\nspec:\n  connect_timeout: -0s\n"
                    "  endpoints: [{address: 127.0.0.1, port: 80}]\n",
                    "f.yaml");
  ASSERT_FALSE(loaded.ok());
  EXPECT_TRUE(absl::StrContains(loaded.status().message(), "'-0s' is not a duration"))
      << loaded.status();
  // Flow nesting past yaml-cpp's own guard: the depth is named, not "bad file".
  loaded = LoadYaml(absl::StrCat("kind: Cluster\nname: a\nspec: ", std::string(1000, '['),
                                 std::string(1000, ']'), "\n"),
                    "f.yaml");
  ASSERT_FALSE(loaded.ok());
  EXPECT_TRUE(absl::StrContains(loaded.status().message(), "nested more than 256 levels deep"))
      << loaded.status();
  // 2,000 errors in one document: 20 shown, then the count.
  std::string yaml = "kind: RouteTable\nname: main\nspec:\n  virtual_hosts:\n  - domains: ['*']\n"
                     "    routes:\n";
  for (int i = 0; i < 2000; ++i) {
    absl::StrAppend(&yaml, "    - match: {prefix: /}\n      route: {cluster: c, timeout: 2h}\n");
  }
  loaded = LoadYaml(yaml, "f.yaml");
  ASSERT_FALSE(loaded.ok());
  const std::string message(loaded.status().message());
  EXPECT_EQ(std::count(message.begin(), message.end(), '\n'), 20) << message.substr(0, 3000);
  EXPECT_TRUE(absl::StrContains(message, "... and 1980 more errors")) << message.substr(0, 3000);
}

TEST(YamlLoaderTest, DeepNestingAndManyKeysAreRefusedNotFatal) {
  const int kDepth = 100000;
  std::string deep = "kind: Cluster\nname: a\nspec: " + std::string(kDepth, '[') +
                     std::string(kDepth, ']') + "\n";
  EXPECT_FALSE(LoadYaml(deep, "f.yaml").ok());

  std::string wide = "kind: Cluster\nname: a\nspec: {";
  for (int i = 0; i < 200000; ++i) absl::StrAppend(&wide, i ? ", " : "", "k", i, ": 1");
  wide += "}\n";
  auto loaded = LoadYaml(wide, "f.yaml");
  ASSERT_FALSE(loaded.ok());
  EXPECT_NE(loaded.status().message().find("k0"), std::string::npos) << loaded.status();
}

}  // namespace
}  // namespace sluice::cli
