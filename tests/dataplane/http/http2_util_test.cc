// What both HTTP/2 codecs share: which fields go out, the send queue and the
// receive window bookkeeping.
#include "dataplane/http/http2_util.h"

#include <cctype>
#include <string>
#include <utility>
#include <vector>

#include "dataplane/http/http1_parser.h"
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

// The fields of one response head the HTTP/1 parser accepted, or an empty
// list when it refused the head.
class HeadFields : public Http1Callbacks {
 public:
  explicit HeadFields(const std::string& field_line) {
    Http1Parser parser(Http1Parser::Mode::kResponse, this);
    const std::string head =
        "HTTP/1.1 200 OK\r\n" + field_line + "\r\ncontent-length: 0\r\n\r\n";
    if (parser.Feed(head).error != ParseError::kNone) fields.clear();
  }
  void OnHead(const MessageHead& head) override {
    for (const HeaderField& f : head.headers) {
      fields.emplace_back(std::string(f.name), std::string(f.value));
    }
  }
  void OnBody(std::string_view) override {}
  void OnMessageComplete() override {}
  FieldList fields;
};

// AddSendable(syntax_checked) skips nghttp2's check of the bytes for fields
// the HTTP/1 parser accepted: every name and value it accepts (each byte
// in each position) must be one nghttp2's checks pass, once lower-cased.
TEST(Http2UtilTest, WhatTheHttp1ParserAcceptsNghttp2AcceptsToo) {
  int names = 0;
  int values = 0;
  for (int b = 0; b < 256; ++b) {
    const char c = static_cast<char>(b);
    for (const std::string& name : {std::string(1, c), "x" + std::string(1, c) + "y"}) {
      HeadFields parsed(name + ": v");
      if (parsed.fields.empty()) continue;
      ++names;
      std::string lower = parsed.fields[0].first;
      for (char& l : lower) l = static_cast<char>(std::tolower(static_cast<unsigned char>(l)));
      EXPECT_TRUE(nghttp2_check_header_name(reinterpret_cast<const uint8_t*>(lower.data()),
                                            lower.size()))
          << "byte " << b << " in a name";
    }
    for (const std::string& value :
         {std::string(1, c), "a" + std::string(1, c) + "b", " " + std::string(1, c) + "\t",
          std::string(1, c) + "b"}) {
      HeadFields parsed("x-v: " + value);
      if (parsed.fields.empty()) continue;
      ++values;
      const std::string& v = parsed.fields[0].second;
      EXPECT_TRUE(nghttp2_check_header_value_rfc9113(reinterpret_cast<const uint8_t*>(v.data()),
                                                     v.size()))
          << "byte " << b << " in the value \"" << value << "\"";
    }
  }
  // The parser accepts the 77 token characters in both names (and "x:y",
  // as the name x) and the field-vchars: the loop above did check something.
  EXPECT_EQ(names, 2 * 77 + 1);
  EXPECT_GT(values, 4 * 180);
}

// Checked fields still go by the rules by name: connection-specific ones
// and pseudo-header names are dropped, te only as "trailers" in a request,
// names lower-cased.
TEST(Http2UtilTest, SyntaxCheckedFieldsStillFollowTheRulesByName) {
  const FieldList block = {{"Connection", "close"}, {"Keep-Alive", "5"},  {"TE", "trailers"},
                           {"Host", "h"},           {"X-Upper", "Value"}, {"date", "today"}};
  HeaderBlockBuilder builder;
  for (FieldSection section : {FieldSection::kRequestHead, FieldSection::kResponseHead}) {
    builder.Clear();
    for (const auto& [name, value] : block) {
      builder.AddSendable(section, name, value, /*syntax_checked=*/true);
    }
    const FieldList expected = Filter(section, block);
    const std::vector<nghttp2_nv> nva = ToNva({}, expected);
    EXPECT_EQ(Pairs(builder.data(), builder.size()), Pairs(nva.data(), nva.size()))
        << "section " << static_cast<int>(section);
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
