// What the `jwt` policy costs a worker per request: a token's verification
// (parse, signature, claims) by algorithm, which a cache miss pays, and the
// whole filter when the token is in the verified-token cache (SHA-256 of
// the token, one shard probe, the consumer lookup and the claim headers).
// Keys and tokens come from jwt_tokens.py (PyJWT) as in jwt_test.
//
//   bazel run -c opt --config=opt //tests/dataplane/policy:jwt_benchmark
#include <benchmark/benchmark.h>

#include <cstdio>
#include <string>
#include <vector>

#include "dataplane/auth/consumers.h"
#include "dataplane/policy/jwt/filter.h"
#include "dataplane/policy/jwt/keys.h"
#include "dataplane/policy/jwt/verifier.h"
#include "tests/dataplane/policy/fake_callbacks.h"
#include "tests/dataplane/policy/jwt_material.h"

namespace sluice::policy::jwt {
namespace {

constexpr int64_t kNow = 1700000000;

const testing::JwtMaterial& M() {
  static const auto* const m = new testing::JwtMaterial(testing::MakeJwtMaterial(kNow));
  if (!m->error.empty()) {
    std::fprintf(stderr, "%s\n", m->error.c_str());
    std::abort();
  }
  return *m;
}

const TokenVerifier& Verifier() {
  static const TokenVerifier* const verifier = [] {
    std::vector<KeySetError> errors;
    std::vector<VerificationKey> keys = ParseKeySet(M().jwks.at("all"), {}, &errors);
    if (!errors.empty()) std::abort();
    VerifierOptions options;
    options.algorithms.assign(std::begin(kAllAlgorithms), std::end(kAllAlgorithms));
    options.issuers = {"https://issuer.test"};
    options.audiences = {"api"};
    options.wanted_claims = {"sub", "email", "roles"};
    return new TokenVerifier(std::move(options), std::move(keys));
  }();
  return *verifier;
}

// One full verification of the token named by the benchmark's label.
void BM_Verify(benchmark::State& state, const char* alg) {
  const std::string token = M().token(alg);
  for (auto _ : state) {
    auto verified = Verifier().Verify(token, kNow * 1000);  // milliseconds
    if (!verified.ok()) {
      state.SkipWithError(std::string(verified.status().message()).c_str());
      return;
    }
    benchmark::DoNotOptimize(verified);
  }
}
BENCHMARK_CAPTURE(BM_Verify, ES256, "ES256")->Unit(benchmark::kMicrosecond);
BENCHMARK_CAPTURE(BM_Verify, RS256, "RS256")->Unit(benchmark::kMicrosecond);
BENCHMARK_CAPTURE(BM_Verify, PS256, "PS256")->Unit(benchmark::kMicrosecond);
BENCHMARK_CAPTURE(BM_Verify, ES384, "ES384")->Unit(benchmark::kMicrosecond);
BENCHMARK_CAPTURE(BM_Verify, EdDSA, "EdDSA")->Unit(benchmark::kMicrosecond);
BENCHMARK_CAPTURE(BM_Verify, HS256, "HS256")->Unit(benchmark::kMicrosecond);

std::shared_ptr<const auth::ConsumerIndex> Consumers() {
  api::ResourceMap resources;
  config::v1::Resource alice;
  alice.mutable_consumer()->set_name("alice");
  resources[api::IdOf(alice)] = alice;
  return auth::ConsumerIndex::Build(resources);
}

// The filter's whole request-head hook for a token already in the cache:
// the token taken from the header, SHA-256 of it, the shard probe, the
// consumer lookup, one claim header set.
void BM_FilterCacheHit(benchmark::State& state, const char* alg) {
  v1::JwtConfig config;
  config.set_jwks(M().jwks.at("all"));
  config.add_algorithms(alg);
  config.set_consumer_claim("sub");
  auto* email = config.add_claims_to_headers();
  email->set_claim("email");
  email->set_header("x-user-email");
  auto factory = CompileJwtFilter(config, [] { return kNow; });
  if (!factory.ok()) std::abort();
  const std::string authorization = "Bearer " + M().token(alg);
  testing::FakeCallbacks callbacks;
  callbacks.index_ = Consumers();
  callbacks.SetPath("/api");
  auto filter = (*factory)->CreateFilter();
  VerifiedTokenCache::Stats before = VerifiedTokenCache::Get().stats();
  for (auto _ : state) {
    // Making the request's one-field head is timed too (tens of ns):
    // Pause/ResumeTiming would cost more than it hides.
    http::HeaderMap headers;
    headers.Add("authorization", authorization);
    http::FilterStatus status = filter->OnRequestHeaders(headers, callbacks);
    benchmark::DoNotOptimize(status);
  }
  VerifiedTokenCache::Stats after = VerifiedTokenCache::Get().stats();
  // At most the first request of a run missed (an earlier run may have
  // cached the token already).
  if (callbacks.replies_ != 0 || after.misses - before.misses > 1 ||
      after.hits - before.hits + 1 < static_cast<uint64_t>(state.iterations())) {
    state.SkipWithError("not served from the cache");
  }
}
BENCHMARK_CAPTURE(BM_FilterCacheHit, ES256, "ES256")->Unit(benchmark::kMicrosecond);
BENCHMARK_CAPTURE(BM_FilterCacheHit, RS256, "RS256")->Unit(benchmark::kMicrosecond);

}  // namespace
}  // namespace sluice::policy::jwt

BENCHMARK_MAIN();
