// The filter chain's interface: what a policy (dataplane/policy/<name>/)
// implements to see and change an exchange. Protocol-neutral: the same
// filters run for every codec.
//
// A route's chain is compiled once per config version into FilterFactory
// objects (immutable, shared by the workers); each request gets fresh Filter
// instances from them. The request-head hook runs in chain order before the
// request is routed to its action (upstream, redirect or direct response);
// request-body hooks run in chain order on each piece of the body before it
// goes upstream; response hooks run in reverse order on every response of
// the route, upstream or made by the gateway.
//
// Chains run in phase order (FilterPhase), whatever order the policies are
// written in; within a phase, in the written order. Several authentication
// policies on one route mean "any of them": the chain compiler groups them
// (dataplane/policy/chain.h).
//
// A request-head hook may pause the chain for asynchronous work
// (kStopIteration) and resume it later from the worker thread
// (ContinueRequest, through a ResumeHandle); the request body that arrives
// meanwhile is held, bounded, and reading stops beyond the bound.
//
// A filter may have the whole request body held for it (OnRequestBody,
// bounded by its factory's request_body_limit()), and the whole response
// body of an upstream response (OnResponseBody, response_body_limit()).
//
// Worker thread only (a Filter lives on its request's worker).
#ifndef SLUICE_DATAPLANE_HTTP_FILTER_H_
#define SLUICE_DATAPLANE_HTTP_FILTER_H_

#include <functional>
#include <memory>
#include <string>
#include <string_view>
#include <vector>

#include "absl/time/time.h"
#include "dataplane/http/header_map.h"

namespace sluice::auth {
struct Consumer;
class ConsumerIndex;
}  // namespace sluice::auth

namespace sluice::http {

// Where a policy runs in a chain. Lower runs first.
enum class FilterPhase {
  kPreflight = 0,       // answered before anyone is identified (cors)
  kAccess = 1,          // by the client's address, before credentials (ip-restriction)
  kAuthentication = 2,  // who is calling (key-auth, basic-auth, jwt)
  kAuthorization = 3,   // may they (acl)
  kRateLimit = 4,
  kValidation = 5,      // request-validation, request-size-limit
  kTransformation = 6,  // headers, transformers
  kCache = 7,
};

// What a filter may read about the exchange. Valid during the hook.
struct StreamInfo {
  std::string_view request_id;
  std::string_view client_ip;
  std::string_view scheme;  // "http" or "https"
  std::string_view method;
  std::string_view path;  // path and query as the client sent it
  std::string_view route_name;
  // Where the route is: its RouteTable's name and its virtual host's label
  // (name, or index when unnamed). Route names are unique only within a
  // virtual host: state keyed by route (rate-limit counters, cache entries)
  // takes all three.
  std::string_view route_table;
  std::string_view virtual_host;
  // TLS; empty over plain connections.
  std::string_view tls_version;
  std::string_view tls_cipher;
  std::string_view tls_sni;
  std::string_view tls_peer_subject;
  // The request body's declared length (Content-Length), -1 when it has
  // none (chunked, or HTTP/2 without content-length); 0 for no body.
  int64_t request_content_length = -1;
  // The consumer an authentication policy identified (nullptr: none yet);
  // valid for the request's lifetime. `anonymous`: the policy's anonymous
  // consumer, given when no credential matched.
  const auth::Consumer* consumer = nullptr;
  bool anonymous_consumer = false;
  // Credentials, as the client sent them: `client_authorization`, the
  // request came with an Authorization field (a policy may have removed it
  // since); `authenticated`, an authentication policy accepted a credential
  // (with or without a consumer: jwt without consumer_claim).
  bool client_authorization = false;
  bool authenticated = false;
  // What an authentication policy told the upstream about the caller
  // beyond the consumer (jwt's claims_to_headers, as `header=value` lines):
  // a cache keyed by consumer keys on it too (SetConsumerClaims).
  std::string consumer_claims;
  // A detached exchange the gateway started itself (StartBackgroundRefresh):
  // no client waits for its response.
  bool background = false;
  // A WebSocket upgrade the route forwards (`websocket: true`): the client
  // asks to switch protocols, not for a stored representation.
  bool upgrade = false;
};

enum class FilterStatus {
  kContinue,  // the next filter runs
  // The filter answered with SendLocalReply(): nothing after it runs.
  kStopLocalReply,
  // OnRequestHeaders only: the filter is waiting for asynchronous work.
  // The chain resumes with the next filter when the filter calls
  // ContinueRequest(), or ends when it calls SendLocalReply() (either on
  // the worker thread, e.g. from a ResumeHandle's Post). The route
  // timeout bounds the wait (504).
  kStopIteration,
};

// Brings asynchronous work back to the request's worker thread.
// Thread-safe; may outlive the request, its filters and the worker.
class ResumeHandle {
 public:
  virtual ~ResumeHandle() = default;
  // Runs `fn` on the request's worker thread, unless the request is over by
  // then (the client left, the route timeout answered, the proxy stops):
  // then `fn` is destroyed without running, on any thread.
  virtual void Post(std::function<void()> fn) = 0;
  // False once the request is over (a Post would not run): work for it may
  // be skipped (a password check for a client that reset its stream).
  virtual bool Alive() const { return true; }
};

class FilterCallbacks {
 public:
  virtual ~FilterCallbacks() = default;
  virtual const StreamInfo& info() const = 0;
  // Answers the request with a gateway-made response: `status` and a JSON
  // error body {"error": message, "request_id": ...}; `headers` are added to
  // it (e.g. WWW-Authenticate). The hook then returns kStopLocalReply.
  virtual void SendLocalReply(int status, std::string_view message,
                              const HeaderMap& headers) = 0;
  // SendLocalReply for a request refused as malformed whatever else might
  // let it through (two credentials, a credential where an upstream may
  // read another): in a group of authentication policies it is the answer,
  // however another policy or an anonymous consumer would have taken it.
  virtual void RejectRequest(int status, std::string_view message, const HeaderMap& headers) {
    SendLocalReply(status, message, headers);
  }
  // Answers the request with a response the filter makes whole (e.g. a
  // CORS preflight's 204): `status`, `headers` (a content-type among them
  // is used; without one the response has none) and `body`. 204 and 304
  // carry no body.
  // The hook then returns kStopLocalReply. gRPC requests get it as is.
  virtual void SendResponse(int status, const HeaderMap& headers, std::string_view body) = 0;
  // After kStopIteration: runs the rest of the chain and the route.
  virtual void ContinueRequest() = 0;
  virtual std::shared_ptr<ResumeHandle> MakeResumeHandle() = 0;
  // This config version's consumers (never nullptr; maybe empty).
  virtual const auth::ConsumerIndex& consumers() const = 0;
  // Records who is calling (authentication policies): the upstream gets
  // x-consumer-name and x-consumer-groups (and x-anonymous-consumer: true
  // for an anonymous one); what the client sent in those fields never goes
  // upstream. `consumer` must come from consumers(), or be nullptr with
  // `anonymous` false: a credential was accepted that names no consumer.
  virtual void SetConsumer(const auth::Consumer* consumer, bool anonymous) = 0;
  // Records the fields about the caller a policy set for the upstream to
  // trust (jwt claims), which the answer may depend on: info().consumer_claims.
  virtual void SetConsumerClaims(std::string claims) = 0;
  // The path and query that go upstream from here on (routing has already
  // happened), e.g. with a credential removed from the query.
  virtual void SetPath(std::string path_and_query) = 0;
  // Sends this request again in the background, once this exchange is
  // answered: a detached exchange through the same listener, route and
  // policies with the request head as the client sent it (no body), whose
  // response no client sees (its filters see info().background). For a
  // cache's stale-while-revalidate. Ignored for a request with a body and
  // for a background exchange itself.
  virtual void StartBackgroundRefresh() = 0;
  // Names the policy whose answer the next SendLocalReply or SendResponse
  // is, when not the calling filter's own: a group of authentication
  // policies answers with its first refusal, labelled with that policy's
  // name (response_flag, sluice_policy_responses_total). `policy` must
  // outlive the exchange (a factory's policy_name()).
  virtual void SetAnsweringPolicy(std::string_view policy) {}
  // The cache's status for the response (its X-Cache-Status: "Hit",
  // "Miss", ...), for the access log's cache_status. `status` must outlive
  // the exchange (a literal).
  virtual void SetCacheStatus(std::string_view status) {}
  // A query parameter holding a credential that goes upstream (key-auth's
  // keep_credentials, jwt's keep_token): left out of the path the access
  // log writes.
  virtual void HideQueryParameterFromLog(std::string_view name) {}
  // The filter pausing the request bounds the pause itself, within `limit`
  // (a cache waiter's lock_timeout): the route timeout, which bounds a
  // policy's pause, then ends it no sooner than `limit` (and a margin).
  // Called before returning kStopIteration. The route timeout, the
  // upstream's time to answer, starts anew once the pause is over.
  virtual void SetPauseLimit(absl::Duration limit) {}
};

class Filter {
 public:
  virtual ~Filter() = default;
  // The request head: `headers` as they will go upstream (hop-by-hop and
  // framing fields removed; x-forwarded-* and x-request-id set). The map
  // lives as long as the exchange (a filter may keep a pointer to it for
  // its response hooks); filters after this one may still change it.
  virtual FilterStatus OnRequestHeaders(HeaderMap& headers, FilterCallbacks& callbacks) {
    return FilterStatus::kContinue;
  }
  // A piece of the request body (framing removed), before it goes upstream;
  // `end_stream` on the last call, which may carry no bytes. Called only
  // for filters whose OnRequestHeaders let the request through.
  // kStopLocalReply: the filter answered with SendLocalReply(); the request
  // is cut (what went upstream is abandoned) and, the rest of the body being
  // unread, an HTTP/1 connection closes after the answer (HTTP/2: the
  // stream ends).
  virtual FilterStatus OnRequestData(std::string_view data, bool end_stream,
                                     FilterCallbacks& callbacks) {
    return FilterStatus::kContinue;
  }
  // The whole request body, for filters whose factory asks for it
  // (request_body_limit() > 0). The stream holds the body until it is
  // complete -- a body over the smallest limit of the chain gets 413 -- and
  // then calls this in chain order, before anything goes upstream. The
  // filter may change `body` (the upstream gets it with its new length) or
  // answer (SendLocalReply, kStopLocalReply). Not called for a request
  // that declares no body (no body, or Content-Length: 0: OnRequestHeaders
  // sees request_content_length == 0); a chunked or HTTP/2 body of zero
  // bytes comes here empty. While the body is held, the route's
  // idle_timeout bounds a stalled upload (408); the route timeout starts
  // when the request goes upstream. Trailers that came with the body still
  // go upstream (an HTTP/1 upstream then gets the body chunked).
  // OnRequestData hooks see the body after this, as it goes upstream.
  virtual FilterStatus OnRequestBody(std::string& body, FilterCallbacks& callbacks) {
    return FilterStatus::kContinue;
  }
  // Asked, for a filter whose factory has a request_body_limit(), after
  // the request-head hooks: whether this request's body is to be held for
  // it. When no filter wants it, the body streams (an upload that is not
  // JSON, say); OnRequestBody is called only on filters that wanted it.
  virtual bool WantsRequestBody(const HeaderMap& headers) { return true; }
  // The same for a held response (response_body_limit()), asked at the
  // upstream response head: false lets it stream (a text/event-stream, a
  // response that is not JSON).
  virtual bool WantsResponseBody(int status, const HeaderMap& headers) { return true; }
  // The whole body of an upstream response, for filters whose factory asks
  // for it (response_body_limit() > 0). The stream holds the response --
  // head and body -- until it is complete, then calls this in reverse chain
  // order (filters that saw the request), then OnResponseHeaders as for any
  // response; the client gets `body` with its new length, and the
  // upstream's trailers. Not called (the response streams unheld) for a
  // response without a body (HEAD, 204, 304), a gRPC response, a WebSocket
  // upgrade, or one over the chain's smallest limit (passed through as it
  // is once the limit is passed). An upstream failure while held is a 502.
  virtual void OnResponseBody(int status, HeaderMap& headers, std::string& body,
                              FilterCallbacks& callbacks) {}
  // The response head, upstream or gateway-made, before it goes to the
  // client (hop-by-hop and framing fields removed). Filters may change
  // headers here, not answer instead.
  virtual void OnResponseHeaders(int status, HeaderMap& headers, FilterCallbacks& callbacks) {}
  // An authentication filter of a group of several (any one of them lets a
  // caller in) whose OnRequestHeaders did not run, because another one
  // identified the caller first: it removes what its hook would have
  // removed (the credentials it reads, the fields it sets), so that a
  // client's copies do not reach the upstream.
  virtual void OnSkippedInGroup(HeaderMap& headers, FilterCallbacks& callbacks) {}

  // The hooks below run only for filters whose factory observes_upstream().
  //
  // The upstream's response head, once no retry follows, before anything of
  // it goes to the client: the filter may answer instead (SendResponse(),
  // then kStopLocalReply) and the upstream's response is discarded -- a
  // cache that revalidated (304) or serves stale over a 5xx. Reverse chain
  // order; `headers` are the end-to-end fields (no framing). Not called for
  // a 101 (WebSocket) or a gRPC response.
  virtual FilterStatus OnUpstreamHeaders(int status, const HeaderMap& headers,
                                         FilterCallbacks& callbacks) {
    return FilterStatus::kContinue;
  }
  // The route's upstream could not answer before the response began (no
  // healthy endpoint, breaker open, connect failure, reset, timeout): the
  // gateway is about to answer `status` (502, 503 or 504). The filter may
  // answer instead (SendResponse(), kStopLocalReply). Reverse chain order.
  virtual FilterStatus OnUpstreamError(int status, FilterCallbacks& callbacks) {
    return FilterStatus::kContinue;
  }
  // The body of the upstream's response, piece by piece, as the response
  // reaches this filter on its way back (the chain's reverse order): a held
  // body after the OnResponseBody hooks of the filters after this one in the
  // chain, before those of the filters before it.
  // Read-only. OnResponseEnd follows when the response went out whole; a
  // response cut short (upstream reset, client gone) gets none -- the
  // filter is destroyed without it.
  virtual void OnResponseData(std::string_view data, FilterCallbacks& callbacks) {}
  virtual void OnResponseEnd(FilterCallbacks& callbacks) {}
};

// One policy instance in a compiled route chain. Thread-safe (immutable).
class FilterFactory {
 public:
  virtual ~FilterFactory() = default;
  virtual std::unique_ptr<Filter> CreateFilter() const = 0;
  virtual std::string_view policy_name() const = 0;
  virtual FilterPhase phase() const { return FilterPhase::kTransformation; }
  // Bytes of request body this policy's OnRequestBody may need held; 0:
  // it has no OnRequestBody (the body streams).
  virtual uint64_t request_body_limit() const { return 0; }
  // The most request body this policy lets through (request-size-limit's
  // max_bytes); 0: no bound. A body held for another policy is held no
  // further than this, and one over it gets this policy's 413 first.
  virtual uint64_t request_body_max() const { return 0; }
  // Bytes of response body this policy's OnResponseBody may need held; 0:
  // it has no OnResponseBody.
  virtual uint64_t response_body_limit() const { return 0; }
  // The filter implements OnUpstreamHeaders, OnUpstreamError,
  // OnResponseData and OnResponseEnd (streams of other routes never pay
  // for them).
  virtual bool observes_upstream() const { return false; }
  // The filter's OnResponseHeaders runs on every answer of the route, also
  // one a policy of an earlier phase made before this filter's request hook
  // ran (an authentication policy's 401): for policies that only edit
  // response fields (security headers belong on a refusal too), as Kong's
  // header_filter runs on kong.response.exit answers.
  virtual bool edits_every_answer() const { return false; }
  // The policy may take a credential from the query (key-auth's key, a
  // jwt query_parameter) and takes it out of the path the access log
  // writes: until its request hook has run, the logged path leaves the
  // whole query out (a request another policy, or the gateway, refused
  // first would log the key in clear).
  virtual bool reads_query_credential() const { return false; }
  // The response fields this policy adds (rate-limit's RateLimit-*) come
  // before any policy edits the response: its OnResponseHeaders runs first,
  // not in reverse chain order, so the later phases' `headers` and
  // `response-transformer` can remove or rewrite what it adds.
  virtual bool adds_response_fields_first() const { return false; }
  // The body a filter's WantsResponseBody() takes may come out changed (not
  // only held and read): a HEAD response then declares no Content-Length,
  // since the length its GET would get is unknown (RFC 9110 9.3.2 lets a
  // HEAD response leave it out).
  virtual bool edits_response_body() const { return false; }
  // Request fields an upstream may trust because this policy sets them (a
  // jwt claim's header): a client's copy must reach it in no form, a request
  // trailer included, nor under another spelling (http::SameCgiName).
  virtual std::vector<std::string> trusted_request_fields() const { return {}; }
  // Fields this policy removes from requests (from responses): a trailer of
  // that name is dropped too, since an upstream (a client) that merges
  // trailers into the header section would find the field there after all.
  virtual const std::vector<std::string>& removed_request_fields() const { return NoFields(); }
  virtual const std::vector<std::string>& removed_response_fields() const { return NoFields(); }

 protected:
  static const std::vector<std::string>& NoFields() {
    static const std::vector<std::string> none;
    return none;
  }
};

}  // namespace sluice::http

#endif  // SLUICE_DATAPLANE_HTTP_FILTER_H_
