// Http1Reader driven directly, whole and byte by byte.
#include "tests/harness/http_wire.h"

#include <gmock/gmock.h>
#include <gtest/gtest.h>

#include <algorithm>
#include <string>
#include <vector>

namespace sluice::testing {
namespace {

using ::testing::HasSubstr;
using Mode = Http1Reader::Mode;
using Result = Http1Reader::Result;

struct Outcome {
  std::vector<Http1Message> messages;
  std::string error;  // set if the reader failed
  bool closed = false;
};

// Feeds `bytes` in pieces of `step` bytes (0: all at once), then EOF.
Outcome Read(Mode mode, const std::string& bytes, size_t step,
             bool head = false) {
  Http1Reader reader(mode);
  Outcome out;
  auto drain = [&] {
    while (true) {
      Http1Message m;
      Result r = reader.Next(&m, head);
      if (r == Result::kMessage) {
        out.messages.push_back(std::move(m));
        continue;
      }
      if (r == Result::kError) out.error = reader.error();
      if (r == Result::kClosed) out.closed = true;
      return r == Result::kNeedMore;
    }
  };
  if (step == 0) step = bytes.size() + 1;
  for (size_t at = 0; at < bytes.size(); at += step) {
    reader.Feed(absl::string_view(bytes.data() + at,
                                  std::min(step, bytes.size() - at)));
    if (!drain()) return out;
  }
  reader.FeedEof();
  drain();
  return out;
}

class EveryStep : public ::testing::TestWithParam<size_t> {};

TEST_P(EveryStep, PipelinedRequests) {
  const std::string bytes =
      "\r\nGET /a?x=1 HTTP/1.1\r\nHost: h\r\nX-Dup: 1\r\nx-dup: 2\r\n\r\n"
      "POST /b HTTP/1.1\r\nhost: h\r\ncontent-length: 5\r\n\r\nhello"
      "PUT /c HTTP/1.0\r\nTransfer-Encoding: chunked\r\n\r\n"
      "3;ext=1\r\nabc\r\n2\r\nde\r\n0\r\ntrailer: t\r\n\r\n";
  Outcome out = Read(Mode::kRequest, bytes, GetParam());
  ASSERT_EQ(out.error, "");
  EXPECT_TRUE(out.closed);
  ASSERT_EQ(out.messages.size(), 3u);
  EXPECT_EQ(out.messages[0].method, "GET");
  EXPECT_EQ(out.messages[0].target, "/a?x=1");
  EXPECT_EQ(out.messages[0].Header("host"), "h");
  EXPECT_EQ(out.messages[0].Header("x-dup"), "1, 2");
  EXPECT_FALSE(out.messages[0].has_body_framing);
  EXPECT_TRUE(out.messages[0].KeepAlive());
  EXPECT_EQ(out.messages[1].body, "hello");
  EXPECT_TRUE(out.messages[1].has_body_framing);
  EXPECT_EQ(out.messages[2].body, "abcde");
  EXPECT_TRUE(out.messages[2].chunked);
  EXPECT_EQ(out.messages[2].trailers.size(), 1u);
  EXPECT_FALSE(out.messages[2].KeepAlive());  // HTTP/1.0 without keep-alive
}

TEST_P(EveryStep, Responses) {
  const std::string bytes =
      "HTTP/1.1 100 Continue\r\n\r\n"
      "HTTP/1.1 200 OK\r\ncontent-length: 3\r\n\r\nabc"
      "HTTP/1.1 204 No Content\r\n\r\n"
      "HTTP/1.1 200\r\ntransfer-encoding: chunked\r\n\r\n1\r\nz\r\n0\r\n\r\n"
      "HTTP/1.1 503 Service Unavailable\r\nconnection: close\r\n\r\nrest until "
      "close";
  Outcome out = Read(Mode::kResponse, bytes, GetParam());
  ASSERT_EQ(out.error, "");
  ASSERT_EQ(out.messages.size(), 5u);
  EXPECT_EQ(out.messages[0].status, 100);
  EXPECT_EQ(out.messages[1].body, "abc");
  EXPECT_EQ(out.messages[2].status, 204);
  EXPECT_EQ(out.messages[3].reason, "");
  EXPECT_EQ(out.messages[3].body, "z");
  EXPECT_EQ(out.messages[4].reason, "Service Unavailable");
  EXPECT_EQ(out.messages[4].body, "rest until close");
  EXPECT_FALSE(out.messages[4].KeepAlive());
}

INSTANTIATE_TEST_SUITE_P(Steps, EveryStep, ::testing::Values(0, 1, 2, 3, 7));

TEST(Http1ReaderTest, HeadResponseHasNoBody) {
  Outcome out = Read(Mode::kResponse,
                     "HTTP/1.1 200 OK\r\ncontent-length: 10\r\n\r\n"
                     "HTTP/1.1 200 OK\r\ncontent-length: 10\r\n\r\n",
                     0, /*head=*/true);
  ASSERT_EQ(out.error, "");
  EXPECT_EQ(out.messages.size(), 2u);
}

TEST(Http1ReaderTest, Errors) {
  struct Case {
    Mode mode;
    std::string bytes;
    std::string error;
  };
  for (const Case& c : std::vector<Case>{
           {Mode::kRequest, "GET / HTTP/1.1\nhost: a\n\n", "bare LF"},
           {Mode::kRequest, "GET  / HTTP/1.1\r\n\r\n",
            "malformed request line"},
           {Mode::kRequest, "GET / HTTP/1.1\r\nbad name: x\r\n\r\n",
            "invalid header name"},
           {Mode::kRequest, "GET / HTTP/1.1\r\nx: a\r\n b\r\n\r\n",
            "obsolete line folding"},
           {Mode::kRequest, "GET / HTTP/1.1\r\nx: a\x01\r\n\r\n",
            "control character"},
           {Mode::kRequest, "POST / HTTP/1.1\r\ncontent-length: -1\r\n\r\n",
            "invalid Content-Length"},
           {Mode::kRequest,
            "POST / HTTP/1.1\r\ncontent-length: 1\r\ncontent-length: 2\r\n\r\n",
            "invalid Content-Length"},
           {Mode::kRequest,
            "POST / HTTP/1.1\r\ntransfer-encoding: "
            "chunked\r\n\r\n2\r\nabc\r\n0\r\n\r\n",
            "chunk data not followed by CRLF"},
           {Mode::kResponse, "HTTP/1.1 200 OK\r\ncontent-length: 5\r\n\r\nab",
            "closed after 2 of 5 body bytes"},
           {Mode::kResponse, "HTTP/1.1 20 OK\r\n\r\n", "malformed status line"},
           {Mode::kResponse,
            "HTTP/1.1 200 OK\r\ntransfer-encoding: chunked\r\n\r\n5\r\nab",
            "closed inside a chunk"},
           {Mode::kResponse,
            "HTTP/1.1 200 OK\r\ntransfer-encoding: gzip, chunked\r\n\r\n",
            "unsupported transfer-encoding"},
           {Mode::kRequest, "GET / HTTP/1.1\r\nx: " + std::string(70000, 'a'),
            "larger than 64 KiB"},
       }) {
    Outcome out = Read(c.mode, c.bytes, 0);
    EXPECT_THAT(out.error, HasSubstr(c.error)) << c.bytes.substr(0, 80);
  }
}

TEST(Http1ReaderTest, ListContentLengthWithEqualValues) {
  Outcome out = Read(Mode::kRequest,
                     "POST / HTTP/1.1\r\ncontent-length: 2, 2\r\n\r\nok", 0);
  ASSERT_EQ(out.error, "");
  ASSERT_EQ(out.messages.size(), 1u);
  EXPECT_EQ(out.messages[0].body, "ok");
}

TEST(Http1ReaderTest, HeadInProgressWhileBodyArrives) {
  Http1Reader reader(Mode::kRequest);
  reader.Feed(
      "POST / HTTP/1.1\r\nexpect: 100-continue\r\ncontent-length: 4\r\n\r\nab");
  Http1Message m;
  EXPECT_EQ(reader.Next(&m), Result::kNeedMore);
  ASSERT_NE(reader.head_in_progress(), nullptr);
  EXPECT_TRUE(reader.head_in_progress()->HasToken("expect", "100-Continue"));
  reader.Feed("cd");
  EXPECT_EQ(reader.Next(&m), Result::kMessage);
  EXPECT_EQ(m.body, "abcd");
  EXPECT_EQ(reader.head_in_progress(), nullptr);
}

TEST(EncodeChunkedTest, RoundTrips) {
  std::string body(1000, 'q');
  Outcome out = Read(Mode::kRequest,
                     "POST / HTTP/1.1\r\ntransfer-encoding: chunked\r\n\r\n" +
                         EncodeChunked(body, 3),
                     0);
  ASSERT_EQ(out.error, "");
  ASSERT_EQ(out.messages.size(), 1u);
  EXPECT_EQ(out.messages[0].body, body);
  EXPECT_EQ(EncodeChunked("", 3), "0\r\n\r\n");
  EXPECT_EQ(EncodeChunked("abcde", 2), "3\r\nabc\r\n2\r\nde\r\n0\r\n\r\n");
}

}  // namespace
}  // namespace sluice::testing
