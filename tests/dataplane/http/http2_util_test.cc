// What both HTTP/2 codecs share: which fields go out, the send queue and the
// receive window bookkeeping.
#include "dataplane/http/http2_util.h"

#include <string>
#include <utility>

#include "gtest/gtest.h"

namespace sluice::http::http2 {
namespace {

FieldList Filter(FieldSection section, const FieldList& in) {
  FieldList out;
  for (const auto& [name, value] : in) {
    AddSendableField(section, name, value, &out);
  }
  return out;
}

TEST(Http2UtilTest, ConnectionSpecificAndInvalidFieldsAreDropped) {
  const FieldList in = {
      {"Connection", "close"},   {"keep-alive", "5"},
      {"Proxy-Connection", "x"}, {"Transfer-Encoding", "chunked"},
      {"upgrade", "h2c"},        {":authority", "a"},
      {"", "empty name"},        {"bad name", "v"},
      {"x-crlf", "a\r\nb"},      {"x-space", " padded"},
      {"X-Kept", "Value"}};
  for (FieldSection section :
       {FieldSection::kRequestHead, FieldSection::kResponseHead,
        FieldSection::kTrailers}) {
    EXPECT_EQ(Filter(section, in), (FieldList{{"x-kept", "Value"}}));
  }
}

TEST(Http2UtilTest, TeAndHostDependOnTheSection) {
  const FieldList in = {
      {"Host", "h"}, {"TE", "gzip, Trailers ;q=1"}, {"te", "trailers"}};
  EXPECT_EQ(Filter(FieldSection::kRequestHead, in),
            (FieldList{{"te", "trailers"}}));
  EXPECT_EQ(Filter(FieldSection::kResponseHead, in),
            (FieldList{{"host", "h"}}));
  EXPECT_TRUE(Filter(FieldSection::kTrailers, in).empty());
  EXPECT_TRUE(
      Filter(FieldSection::kRequestHead, {{"te", "gzip, deflate"}}).empty());
}

TEST(Http2UtilTest, ReceiveWindowBoundsWhatTheCallerHolds) {
  // Window 100, buffer 250: credit flows while held + window <= 250.
  ReceiveWindow w(100, 250);
  EXPECT_EQ(w.OnDelivered(100), 100u);  // held 100
  EXPECT_EQ(w.OnDelivered(100), 50u);   // held 200: 50 kept back
  EXPECT_EQ(w.OnDelivered(50), 0u);     // held 250: nothing more
  EXPECT_EQ(w.held(), 250u);
  // Held 130: everything kept back goes out (all 250 bytes credited).
  EXPECT_EQ(w.OnConsumed(120), 100u);
  EXPECT_EQ(w.OnConsumed(1000), 0u);  // clamps at what it holds
  EXPECT_EQ(w.held(), 0u);
  EXPECT_EQ(w.OnDelivered(10), 10u);
  // The buffer is at least one window.
  ReceiveWindow small(100, 10);
  EXPECT_EQ(small.OnDelivered(100), 0u);
  EXPECT_EQ(small.OnConsumed(100), 100u);
}

}  // namespace
}  // namespace sluice::http::http2
