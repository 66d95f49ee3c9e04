# Sourced by run_fuzzer.sh for the HTTP/1 parser targets: writes the seed
# corpus into ${corpus} and the dictionary into ${work}/fuzz.dict. The HTTP/1
# targets link no system library (libs stays empty).
# FUZZER_NAME containing "response" seeds HTTP responses, else requests.
libs=()

# Seeds. The first two bytes of an input are options for the driver (see
# tests/fuzz/http1_fuzz_driver.h): byte 0 flags, byte 1 the split seed.
seed() {
  printf '%b' "$2" >"${corpus}/$1"
}
if [[ "${name}" == *response* ]]; then
  seed ok '\x00\x07HTTP/1.1 200 OK\r\nContent-Length: 5\r\nServer: s\r\n\r\nhello'
  seed chunked '\x00\x03HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n4;x=y\r\nWiki\r\n5\r\npedia\r\n0\r\nExpires: never\r\n\r\n'
  seed interim '\x00\x00HTTP/1.1 100 Continue\r\n\r\nHTTP/1.1 204 No Content\r\n\r\nHTTP/1.0 304 Not Modified\r\nConnection: keep-alive\r\nContent-Length: 9\r\n\r\n'
  seed head '\x02\x05HTTP/1.1 200 OK\r\nContent-Length: 10\r\n\r\nHTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\nhi'
  seed close '\x00\x09HTTP/1.1 200 OK\r\nContent-Type: text/plain\r\n\r\nuntil the connection closes'
  seed upgrade '\x04\x02HTTP/1.1 101 Switching Protocols\r\nConnection: Upgrade\r\nUpgrade: websocket\r\n\r\n\x81\x02hi'
  seed small_limits '\x31\x01HTTP/1.1 200 OK\r\nA: 1\r\nB: 2\r\nTransfer-Encoding: chunked\r\n\r\n1\r\nx\r\n0\r\nT: v\r\n\r\n'
else
  seed get '\x00\x07GET /index.html?q=1 HTTP/1.1\r\nHost: example.com\r\nAccept: */*\r\nConnection: keep-alive\r\n\r\n'
  seed post '\x00\x03POST /submit HTTP/1.1\r\nHost: a\r\nContent-Length: 11\r\nExpect: 100-continue\r\n\r\nhello world'
  seed chunked '\x00\x00POST /up HTTP/1.1\r\nHost: a\r\nTransfer-Encoding: chunked\r\n\r\n5;n=v\r\nhello\r\n0\r\nX-Sum: 1\r\n\r\n'
  seed pipeline '\x04\x0b\r\nGET /1 HTTP/1.1\r\nHost: a\r\n\r\nHEAD /2 HTTP/1.0\r\nConnection: keep-alive\r\n\r\nDELETE /3 HTTP/1.1\r\nHost: a\r\nContent-Length: 0\r\n\r\n'
  seed upgrade '\x00\x05GET /ws HTTP/1.1\r\nHost: a\r\nConnection: Upgrade\r\nUpgrade: websocket\r\n\r\nGET / HTTP/1.1\r\nHost: a\r\n\r\n'
  seed connect '\x00\x04CONNECT a.example:443 HTTP/1.1\r\nHost: a.example:443\r\n\r\n'
  seed small_limits '\x31\x01POST / HTTP/1.1\r\nHost: a\r\nTransfer-Encoding: chunked\r\n\r\n1\r\nx\r\n0\r\nT: v\r\n\r\n'
  # A wrong request line in a head past the limit, or before a bare LF: the
  # same error whole or in pieces (the request line's, checked first).
  seed bad_line_over_limit '\x21\x20HTTP/1.1\r\nHost: a\r\nX: aaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaa\r\n\r\n'
  seed bad_line_bare_lf '\x00\x03GET / HTTP/2.0\r\nHost: a\nX: 1\r\n\r\n'
  seed http09 '\x00\x00GET /\r\n'
fi

# Tokens that matter to the grammar, so mutations reach the interesting paths.
cat >"${work}/fuzz.dict" <<'EOF'
"\x0d\x0a"
"\x0d\x0a\x0d\x0a"
"HTTP/1.1"
"HTTP/1.0"
" 200 OK"
" 100 Continue"
" 101 "
" 204 "
" 304 "
"GET "
"HEAD "
"CONNECT "
"Host: "
"Content-Length: "
"Transfer-Encoding: "
"chunked"
"gzip"
"Connection: "
"close"
"keep-alive"
"Upgrade"
"Expect: 100-continue"
"0\x0d\x0a\x0d\x0a"
";ext=val"
"ffffffffffffffff"
"18446744073709551616"
", "
EOF

