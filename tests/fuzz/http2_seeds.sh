# Sourced by run_fuzzer.sh for the HTTP/2 codec targets: the libraries they
# link, the seed corpus (${corpus}) and the dictionary (${work}/fuzz.dict).
# FUZZER_NAME containing "client" seeds what an upstream sends (responses),
# else what a client sends (requests).

# The system libraries the codec links, as bazel/system_libs.BUILD lists them
# for @system_libs//:nghttp2 and @system_libs//:absl (common/log.cc uses
# absl strings and time).
libs=(
  -lnghttp2
  -labsl_statusor -labsl_status -labsl_cord -labsl_cordz_info
  -labsl_cord_internal -labsl_cordz_functions -labsl_cordz_handle
  -labsl_cordz_sample_token -labsl_exponential_biased
  -labsl_str_format_internal -labsl_synchronization
  -labsl_graphcycles_internal -labsl_stacktrace -labsl_symbolize
  -labsl_debugging_internal -labsl_demangle_internal -labsl_malloc_internal
  -labsl_time -labsl_civil_time -labsl_time_zone -labsl_strings
  -labsl_strings_internal -labsl_hash -labsl_city -labsl_low_level_hash
  -labsl_raw_hash_set -labsl_hashtablez_sampler -labsl_strerror
  -labsl_bad_optional_access -labsl_bad_variant_access -labsl_int128
  -labsl_base -labsl_spinlock_wait -labsl_throw_delegate
  -labsl_raw_logging_internal -labsl_log_severity -pthread
)

# Seeds. The first two bytes of an input are options for the driver (see
# tests/fuzz/http2_server_fuzzer.cc and http2_client_fuzzer.cc): byte 0 flags
# (0x01: the driver sends the client preface, or the server's SETTINGS),
# byte 1 the split seed. The rest are frames.

# frame TYPE FLAGS STREAM_ID PAYLOAD: writes one frame; PAYLOAD in printf %b
# escapes.
frame() {
  local payload="${work}/payload"
  printf '%b' "$4" >"${payload}"
  local len
  len=$(wc -c <"${payload}")
  printf "$(printf '\\x%02x' $(((len >> 16) & 255)) $(((len >> 8) & 255)) \
    $((len & 255)) "$1" "$2" $((($3 >> 24) & 127)) $((($3 >> 16) & 255)) \
    $((($3 >> 8) & 255)) $(($3 & 255)))"
  cat "${payload}"
}
# HEADERS=1 DATA=0 RST_STREAM=3 SETTINGS=4 PING=6 GOAWAY=7 WINDOW_UPDATE=8
# CONTINUATION=9 PRIORITY=2; END_STREAM=1 END_HEADERS=4 PADDED=8 ACK=1.
# HPACK: \x82 GET, \x83 POST, \x84 /, \x86 http, \x87 https,
# \x01\x01a :authority "a" (literal, not indexed).
if [[ "${name}" == *client* ]]; then
  # Responses to the driver's requests on streams 1, 3 and 5. HPACK: \x88
  # :status 200, \x89 :status 204, \x08\x03100 :status 100 (literal),
  # \x0f\x0d\x015 content-length: 5 (static 28).
  { printf '\x01\x07'; frame 1 5 1 '\x88'; frame 1 4 3 '\x88\x0f\x0d\x015';
    frame 0 1 3 'hello'; frame 1 5 5 '\x89'; } >"${corpus}/responses"
  { printf '\x09\x03'; frame 1 4 1 '\x88\x00\x0ccontent-type\x10application/grpc';
    frame 0 0 1 'body'; frame 1 5 1 '\x00\x0bgrpc-status\x010'; } >"${corpus}/trailers"
  { printf '\x01\x05'; frame 1 4 1 '\x08\x03100'; frame 1 4 1 '\x08\x03103\x00\x04link\x01a';
    frame 1 5 1 '\x88'; } >"${corpus}/interim"
  { printf '\x01\x02'; frame 1 5 1 '\x88'; frame 7 0 0 '\x00\x00\x00\x03\x00\x00\x00\x00';
    frame 1 5 3 '\x88'; } >"${corpus}/goaway"
  { printf '\x41\x0b'; frame 4 0 0 '\x00\x03\x00\x00\x00\x01\x00\x04\x00\x00\x40\x00';
    frame 3 0 3 '\x00\x00\x00\x07'; frame 6 0 0 '12345678'; frame 6 1 0 'sluicepi';
    frame 8 0 0 '\x00\x01\x00\x00'; frame 1 4 1 '\x88'; frame 0 0 1 'part';
    frame 3 0 1 '\x00\x00\x00\x08'; frame 1 5 5 '\x88'; } >"${corpus}/mixed"
  { printf '\x03\x02'; frame 1 5 1 '\x88\x40\x06x-dyna\x05value';
    frame 1 5 3 '\x88\xbe\xbe\xbe'; } >"${corpus}/hpack_dynamic"
  { printf '\x01\x03'; frame 1 0 1 '\x88'; frame 9 4 1 '\x00\x01x\x01y'; frame 0 1 1 ''; } \
    >"${corpus}/continuation"
  { printf '\x0f\x09'; frame 1 4 1 '\x88'; frame 0 0 1 "$(printf '%03000d' 0)";
    frame 0 9 1 '\x03data\x00\x00\x00'; } >"${corpus}/flow_control"
  { printf '\x00\x01'; frame 4 0 0 ''; frame 1 5 1 '\x88\x00\x0aconnection\x05close';
    frame 1 5 3 '\x88\x0f\x0d\x015'; frame 1 5 5 '\x88'; } >"${corpus}/malformed"
else
  get='\x82\x86\x84\x01\x01a'
  post='\x83\x87\x84\x01\x01a\x0f\x0d\x015'  # content-length: 5 (static 28)
  preface='PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n'

  { printf '\x01\x07'; frame 1 5 1 "${get}"; } >"${corpus}/get"
  { printf '\x01\x00'; frame 1 4 1 "${post}"; frame 0 0 1 'he'; frame 0 1 1 'llo'; } \
    >"${corpus}/post"
  { printf '\x09\x05'; frame 1 4 1 '\x83\x86\x84\x01\x01a\x00\x02te\x08trailers';
    frame 0 0 1 'body'; frame 1 5 1 '\x00\x01x\x01y'; } >"${corpus}/trailers"
  { printf '\x01\x03'; frame 1 1 1 '\x82\x86'; frame 9 4 1 '\x84\x01\x01a';
    frame 1 5 3 "${get}"; } >"${corpus}/continuation"
  { printf '\x41\x0b'; for id in 1 3 5 7 9; do frame 1 5 "${id}" "${get}"; done;
    frame 3 0 3 '\x00\x00\x00\x08'; frame 6 0 0 '12345678';
    frame 8 0 0 '\x00\x01\x00\x00'; frame 4 0 0 '\x00\x04\x00\x00\x40\x00';
    frame 2 0 11 '\x00\x00\x00\x01\x10'; frame 7 0 0 '\x00\x00\x00\x09\x00\x00\x00\x00'; } \
    >"${corpus}/mixed"
  { printf '\x00\x11%b' "${preface}"; frame 4 0 0 ''; frame 1 5 1 "${get}"; } \
    >"${corpus}/own_preface"
  { printf '\x03\x02'; frame 1 5 1 '\x82\x86\x84\x01\x01a\x40\x06x-dyna\x05value';
    frame 1 5 3 '\x82\x86\x84\x01\x01a\xbe\xbe\xbe'; } >"${corpus}/hpack_dynamic"
  { printf '\x05\x09'; frame 1 4 1 "${post}"; frame 0 9 1 '\x03hello\x00\x00\x00'; } \
    >"${corpus}/padded"
  { printf '\x21\x01'; frame 1 5 1 '\x82\x86\x04\x0c/a?b=c&d=e/f\x01\x01a\x00\x06cookie\x03a=1\x00\x06cookie\x03b=2';
    frame 1 5 3 '\x02\x07CONNECT\x01\x05a:443'; } >"${corpus}/cookie_connect"
fi

# Tokens that matter to the framing and to HPACK.
cat >"${work}/fuzz.dict" <<'DICT'
"PRI * HTTP/2.0\x0d\x0a\x0d\x0aSM\x0d\x0a\x0d\x0a"
"\x00\x00\x00\x04\x00\x00\x00\x00\x00"
"\x00\x00\x00\x04\x01\x00\x00\x00\x00"
"\x00\x00\x08\x06\x00\x00\x00\x00\x00"
"\x00\x00\x04\x08\x00\x00\x00\x00\x00"
"\x00\x00\x04\x03\x00\x00\x00\x00\x01"
"\x00\x00\x06\x01\x05\x00\x00\x00\x01"
"\x00\x00\x06\x01\x05\x00\x00\x00\x03"
"\x00\x00\x00\x09\x04\x00\x00\x00\x01"
"\x00\x00\x05\x00\x01\x00\x00\x00\x01"
"\x82\x86\x84\x01\x01a"
"\x83\x87\x84"
"\x0f\x0d"
"\x00\x02te\x08trailers"
"\x00\x0aconnection\x05close"
"\x00\x06cookie"
"\x00\x0etransfer-encoding"
"\x3f\xe1\x1f"
"\x20"
"\xbe"
"\x40"
"CONNECT"
"\x88"
"\x08\x03100"
"\x00\x0bgrpc-status\x010"
"\x00\x00\x00\x07"
"\x00\x00\x00\x08"
"\x00\x00\x08\x07\x00\x00\x00\x00\x00"
DICT

