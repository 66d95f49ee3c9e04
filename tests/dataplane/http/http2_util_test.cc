// What both HTTP/2 codecs share: which fields go out, the send queue and the
// receive window bookkeeping.
#include "dataplane/http/http2_util.h"

#include <cctype>
#include <string>
#include <utility>
#include <vector>

#include "dataplane/http/http1_parser.h"
#include "tests/harness/http_wire.h"
#include "gtest/gtest.h"

namespace sluice::http::http2 {
namespace {

using ::sluice::testing::Http2Frame;

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

// Fed a byte at a time: pending from a frame's first byte until its 9-byte
// header is in; then for HEADERS, PUSH_PROMISE and CONTINUATION frames
// until the end of the frame that carries END_HEADERS; zero-length frames
// and padding (inside the length) included.
TEST(Http2UtilTest, ClientFrameWatchFollowsFramesAndBlocks) {
  struct Piece {
    std::string bytes;
    bool header_frame;  // pending through its payload
    bool pending_after;
  };
  const uint8_t kEndHeaders = NGHTTP2_FLAG_END_HEADERS;
  const std::vector<Piece> pieces = {
      {"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n", false, false},
      {Http2Frame(NGHTTP2_SETTINGS, 0, 0, ""), false, false},
      {Http2Frame(NGHTTP2_HEADERS, kEndHeaders, 1, "block"), true, false},
      {Http2Frame(NGHTTP2_DATA, 0, 1, std::string(20, 'd')), false, false},
      {Http2Frame(NGHTTP2_HEADERS, NGHTTP2_FLAG_PADDED, 3, std::string("\x02" "ab\0\0", 5)), true,
       true},
      {Http2Frame(NGHTTP2_CONTINUATION, 0, 3, ""), true, true},
      {Http2Frame(NGHTTP2_CONTINUATION, 0, 3, "more"), true, true},
      {Http2Frame(NGHTTP2_CONTINUATION, kEndHeaders, 3, "end"), true, false},
      {Http2Frame(NGHTTP2_PING, 0, 0, std::string(8, 'p')), false, false},
      {Http2Frame(NGHTTP2_PUSH_PROMISE, 0, 5, "pp"), true, true},
      {Http2Frame(NGHTTP2_CONTINUATION, kEndHeaders, 5, ""), true, false},
      {Http2Frame(0xee, 0, 0, "unknown"), false, false},
  };
  ClientFrameWatch tracker;
  bool in_block = false;  // a block left open by the pieces before
  for (size_t p = 0; p < pieces.size(); ++p) {
    const Piece& piece = pieces[p];
    const bool preface = p == 0;
    for (size_t i = 0; i < piece.bytes.size(); ++i) {
      EXPECT_EQ(tracker.Feed(piece.bytes.substr(i, 1)), std::string_view::npos);
      bool expected;
      if (i + 1 == piece.bytes.size()) {
        expected = piece.pending_after;
      } else if (preface) {
        expected = false;
      } else if (i < 8) {
        expected = true;  // a frame header is coming in
      } else {
        expected = piece.header_frame || in_block;
      }
      EXPECT_EQ(tracker.head_pending(), expected) << "piece " << p << " byte " << i;
    }
    in_block = piece.pending_after;
  }
  // The same bytes in one read end where the last piece does.
  ClientFrameWatch whole;
  std::string all;
  for (const Piece& piece : pieces) all += piece.bytes;
  EXPECT_EQ(whole.Feed(all.substr(0, all.size() - pieces.back().bytes.size() - 3)),
            std::string_view::npos);
  EXPECT_TRUE(whole.head_pending());  // inside the last CONTINUATION's header
  whole.Feed(all.substr(all.size() - pieces.back().bytes.size() - 3));
  EXPECT_FALSE(whole.head_pending());
}

// The PRIORITY rules: the offset returned is where the breaking frame
// starts in this call's bytes (0 when it began in an earlier call), and
// nothing is followed after it.
TEST(Http2UtilTest, ClientFrameWatchFindsPriorityFramesBreakingRfc9113) {
  const std::string preface = "PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n";
  const std::string settings = Http2Frame(NGHTTP2_SETTINGS, 0, 0, "");
  const std::string fine = Http2Frame(NGHTTP2_PRIORITY, 0, 3, std::string("\x00\x00\x00\x01\x10", 5));
  const std::string on_0 = Http2Frame(NGHTTP2_PRIORITY, 0, 0, std::string("\x00\x00\x00\x01\x10", 5));
  const std::string on_itself =
      Http2Frame(NGHTTP2_PRIORITY, 0, 7, std::string("\x80\x00\x00\x07\x10", 5));
  {
    ClientFrameWatch watch;
    const std::string bytes = preface + settings + fine + on_0 + fine;
    EXPECT_EQ(watch.Feed(bytes), preface.size() + settings.size() + fine.size());
    EXPECT_STREQ(watch.violation(), "PRIORITY on stream 0");
    EXPECT_EQ(watch.Feed(fine), std::string_view::npos);
  }
  {
    // Split inside the dependency: found in the second call, at offset 0.
    ClientFrameWatch watch;
    const std::string bytes = preface + settings + fine + on_itself;
    const size_t cut = bytes.size() - 3;
    EXPECT_EQ(watch.Feed(bytes.substr(0, cut)), std::string_view::npos);
    EXPECT_EQ(watch.Feed(bytes.substr(cut)), 0u);
    EXPECT_STREQ(watch.violation(), "PRIORITY: a stream depends on itself");
  }
  {
    ClientFrameWatch watch;
    EXPECT_EQ(watch.Feed(preface + settings + fine + fine), std::string_view::npos);
    EXPECT_STREQ(watch.violation(), "");
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
