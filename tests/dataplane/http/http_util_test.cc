#include "dataplane/http/http_util.h"

#include <gtest/gtest.h>

#include <string>
#include <vector>

#include "dataplane/http/header_map.h"

namespace sluice::http {
namespace {

TEST(ConnectionTokensTest, NamesListedInConnectionAreHopByHop) {
  std::vector<HeaderField> headers = {{"Connection", "close, X-Hop ,keep-alive"},
                                      {"connection", "Other"}};
  ConnectionTokens tokens(headers);
  EXPECT_TRUE(IsHopByHop("x-hop", tokens));
  EXPECT_TRUE(IsHopByHop("X-HOP", tokens));
  EXPECT_TRUE(IsHopByHop("other", tokens));
  EXPECT_FALSE(IsHopByHop("close", tokens));  // an option, not a field name
  EXPECT_FALSE(IsHopByHop("x-kept", tokens));
  // The fixed hop-by-hop fields, whatever Connection says.
  EXPECT_TRUE(IsHopByHop("Transfer-Encoding", ConnectionTokens()));
  EXPECT_TRUE(IsHopByHop("te", ConnectionTokens()));
  // An h2c upgrade's settings, even when Connection does not name them
  // (before: forwarded upstream).
  EXPECT_TRUE(IsHopByHop("HTTP2-Settings", ConnectionTokens()));
  // Trailer announces the trailer fields end to end (RFC 9110 6.6.2);
  // before, it was dropped both ways.
  EXPECT_FALSE(IsHopByHop("Trailer", ConnectionTokens()));
}

TEST(IsTokenTest, Rfc9110Tokens) {
  EXPECT_TRUE(IsToken("GET"));
  EXPECT_TRUE(IsToken("x-a.b_c~!#$%&'*+^`|"));
  EXPECT_FALSE(IsToken(""));
  EXPECT_FALSE(IsToken("a b"));
  EXPECT_FALSE(IsToken("a:b"));
  EXPECT_FALSE(IsToken("a\x80"));
}

TEST(ConnectionTokensTest, NeverHostOrFraming) {
  std::vector<HeaderField> headers = {{"connection", "host, content-length, transfer-encoding"}};
  ConnectionTokens tokens(headers);
  EXPECT_TRUE(tokens.empty());
  EXPECT_FALSE(IsHopByHop("host", tokens));
  EXPECT_FALSE(IsHopByHop("content-length", tokens));
}

TEST(ConnectionTokensTest, ManyTokensAndManyFieldsStayCheap) {
  // 10,000 tokens and 200 fields: a lookup per field, not a scan of the
  // tokens (the old cost was fields x tokens comparisons).
  std::string list;
  for (int i = 0; i < 10000; ++i) list += "x-token-" + std::to_string(i) + ",";
  std::vector<HeaderField> headers = {{"connection", list}};
  std::vector<std::string> names;
  for (int i = 0; i < 200; ++i) names.push_back("x-field-" + std::to_string(i));
  ConnectionTokens tokens(headers);
  int hop = 0;
  for (int round = 0; round < 100; ++round) {
    for (const std::string& name : names) hop += IsHopByHop(name, tokens) ? 1 : 0;
  }
  EXPECT_EQ(hop, 0);
  EXPECT_TRUE(IsHopByHop("X-Token-9999", tokens));
  // Longer names than the stack buffer still compare.
  std::string long_name(100, 'a');
  std::vector<HeaderField> long_headers = {{"connection", long_name}};
  EXPECT_TRUE(IsHopByHop(std::string(100, 'A'), ConnectionTokens(long_headers)));
}

TEST(HasTokenTest, ListMembership) {
  EXPECT_TRUE(HasToken("gzip, Trailers;q=1", "trailers"));
  EXPECT_FALSE(HasToken("gzip, deflate", "trailers"));
  EXPECT_FALSE(HasToken("", "trailers"));
}

TEST(GrpcContentTypeTest, GrpcAndGrpcWebEndOrTakeAFormatOrParameters) {
  using T = GrpcContentType;
  EXPECT_EQ(ClassifyGrpcContentType("application/grpc"), T::kGrpc);
  EXPECT_EQ(ClassifyGrpcContentType("Application/gRPC+proto"), T::kGrpc);
  EXPECT_EQ(ClassifyGrpcContentType("application/grpc;charset=utf-8"), T::kGrpc);
  EXPECT_EQ(ClassifyGrpcContentType("application/grpc-web"), T::kGrpcWeb);
  EXPECT_EQ(ClassifyGrpcContentType("application/grpc-Web+json"), T::kGrpcWeb);
  EXPECT_EQ(ClassifyGrpcContentType("application/grpc-web-text"), T::kGrpcWebText);
  EXPECT_EQ(ClassifyGrpcContentType("application/grpc-web-text+proto"), T::kGrpcWebText);
  EXPECT_EQ(ClassifyGrpcContentType("text/html"), T::kNone);
  EXPECT_EQ(ClassifyGrpcContentType("application/grpcx"), T::kNone);
  EXPECT_EQ(ClassifyGrpcContentType("application/grpc-foo"), T::kNone);
  EXPECT_EQ(ClassifyGrpcContentType("application/grpc-webx"), T::kNone);
  EXPECT_EQ(ClassifyGrpcContentType("application/grpc-web-textual"), T::kNone);
  EXPECT_EQ(ClassifyGrpcContentType("application/grp"), T::kNone);
}

TEST(ReasonPhraseTest, RegisteredCodesHaveTheirNames) {
  EXPECT_EQ(ReasonPhrase(415), "Unsupported Media Type");
  EXPECT_EQ(ReasonPhrase(451), "Unavailable For Legal Reasons");
  EXPECT_EQ(ReasonPhrase(422), "Unprocessable Content");
  EXPECT_EQ(ReasonPhrase(102), "Processing");  // RFC 2518: relayed from upstreams
  EXPECT_EQ(ReasonPhrase(103), "Early Hints");
  EXPECT_EQ(ReasonPhrase(207), "Multi-Status");
  EXPECT_EQ(ReasonPhrase(508), "Loop Detected");
  EXPECT_EQ(ReasonPhrase(299), "Unknown");
}

// One variable to CGI, WSGI, Rack and PHP: '-' and '_' alike, any case.
TEST(HttpUtilTest, SameCgiNameAndOtherSpellingsAreRemoved) {
  EXPECT_TRUE(SameCgiName("x-tenant-id", "X_Tenant-ID"));
  EXPECT_TRUE(SameCgiName("x_user", "x-user"));
  EXPECT_FALSE(SameCgiName("x-tenant", "x-tenantx"));
  EXPECT_FALSE(SameCgiName("x-a", "x.a"));
  HeaderMap headers;
  for (const char* name : {"x-tenant-id", "x-tenant_id", "X_Tenant-Id", "x_tenant_id", "X-TENANT-ID",
                           "x-other"}) {
    headers.Add(name, "v");
  }
  EXPECT_EQ(headers.RemoveOtherCgiSpellings("x-tenant-id"), 3u);
  ASSERT_EQ(headers.size(), 3u);
  EXPECT_EQ(headers.fields()[0].name, "x-tenant-id");
  EXPECT_EQ(headers.fields()[1].name, "X-TENANT-ID");  // the same name in another case stays
  EXPECT_EQ(headers.fields()[2].name, "x-other");
}

}  // namespace
}  // namespace sluice::http
