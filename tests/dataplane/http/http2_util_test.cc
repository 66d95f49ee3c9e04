// What both HTTP/2 codecs share: which fields go out, the send queue and the
// receive window bookkeeping.
#include "dataplane/http/http2_util.h"

#include <string>
#include <utility>
#include <vector>

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

FieldList Pairs(const nghttp2_nv* nva, size_t n) {
  FieldList out;
  for (size_t i = 0; i < n; ++i) {
    out.emplace_back(
        std::string(reinterpret_cast<const char*>(nva[i].name), nva[i].namelen),
        std::string(reinterpret_cast<const char*>(nva[i].value),
                    nva[i].valuelen));
  }
  return out;
}

// The builder makes exactly the array AddSendableField + ToNva make, in
// every section, for fields that are kept, dropped, lower-cased and
// rewritten (te), whatever the builder held before.
TEST(Http2UtilTest, HeaderBlockBuilderMatchesAddSendableFieldAndToNva) {
  const std::vector<FieldList> blocks = {
      {},
      {{"content-type", "text/plain"}, {"X-Upper", "Value"}},
      {{"Connection", "close"},
       {"keep-alive", "5"},
       {"Proxy-Connection", "x"},
       {"Transfer-Encoding", "chunked"},
       {"UPGRADE", "h2c"},
       {":authority", "a"},
       {":Status", "200"},
       {"", "empty name"},
       {"bad name", "v"},
       {"Bad Name", "v"},
       {"x-crlf", "a\r\nb"},
       {"X-Space", " padded"},
       {"x-nul", std::string("a\0b", 3)},
       {"Host", "h"},
       {"host", "h2"},
       {"TE", "gzip, Trailers ;q=1"},
       {"te", "trailers"},
       {"Te", "trailers"},
       {"X-Kept", "Value"},
       {"x-kept", ""},
       {"Content-Length", "12"},
       {"set-cookie", "a=1"},
       {"Set-Cookie", "b=2"}},
      {{"te", "gzip, deflate"},
       {"A-VERY-LONG-UPPER-CASE-FIELD-NAME-" + std::string(300, 'X'), "v"}},
  };
  HeaderBlockBuilder builder;
  for (FieldSection section :
       {FieldSection::kRequestHead, FieldSection::kResponseHead,
        FieldSection::kTrailers}) {
    for (const FieldList& block : blocks) {
      builder.Clear();
      builder.AddRaw(":status", "200");
      for (const auto& [name, value] : block) {
        builder.AddSendable(section, name, value);
      }
      const FieldList expected = Filter(section, block);
      const std::vector<nghttp2_nv> nva =
          ToNva({MakeNv(":status", "200")}, expected);
      EXPECT_EQ(Pairs(builder.data(), builder.size()),
                Pairs(nva.data(), nva.size()))
          << "section " << static_cast<int>(section) << ", " << block.size()
          << " fields";
    }
  }
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
