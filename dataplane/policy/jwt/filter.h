// The `jwt` policy's filter, for the registry (filter.cc registers it with
// the real clock) and for tests, which give their own clock.
//
// The filter takes the token from the configured header, cookie or query
// parameter (in that order), removes it from the request unless
// keep_token, and accepts it through the verified-token cache
// (verified_token_cache.h) or a TokenVerifier (verifier.h): the check runs
// on the worker (measured: 17 us RS256, 46 us ES256, 66 us EdDSA, 0.46 ms
// ES384; not the tens of milliseconds that call for basic-auth's verifier
// thread; a cache hit is under 1 us for the whole hook). Then the
// consumer named by `consumer_claim` is looked up and set, and the claim
// headers are set (the client's own headers of those names having been
// removed first). A refusal is a 401 with an RFC 6750 challenge, or the
// `anonymous` consumer.
//
// The factory is immutable and shared by the workers; each filter lives on
// its request's worker.
#ifndef SLUICE_DATAPLANE_POLICY_JWT_FILTER_H_
#define SLUICE_DATAPLANE_POLICY_JWT_FILTER_H_

#include <cstdint>
#include <functional>
#include <memory>

#include "absl/status/statusor.h"
#include "dataplane/http/filter.h"
#include "dataplane/policy/jwt/jwt_config.pb.h"
#include "dataplane/policy/jwt/verified_token_cache.h"

namespace sluice::policy::jwt {

// Milliseconds since the Unix epoch. Called on workers: thread-safe.
using Clock = std::function<int64_t()>;

// `config` has passed the policy's validator. Config thread.
absl::StatusOr<std::shared_ptr<const http::FilterFactory>> CompileJwtFilter(
    const v1::JwtConfig& config, Clock clock);

}  // namespace sluice::policy::jwt

#endif  // SLUICE_DATAPLANE_POLICY_JWT_FILTER_H_
