# Sourced by run_fuzzer.sh for the jwt target: the libraries it links, the
# seed corpus (${corpus}) and the dictionary (${work}/fuzz.dict).
# Seeds are made by PyJWT (Debian's python3-jwt under /usr/bin/python3):
# the first byte of an input selects the mode (see tests/fuzz/jwt_fuzzer.cc):
# 0 token parsing, 1 JWK Set parsing, 2 verification against the fuzzer's
# fixed keys (its HS256 secrets sign seeds that are accepted, so mutations
# start past the signature check).

# As bazel/system_libs.BUILD lists them for @system_libs//:simdjson,
# :openssl and :absl.
libs=(
  -lsimdjson -lcrypto
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

/usr/bin/python3 - "${corpus}" <<'PY'
import base64, json, os, sys
import jwt
from cryptography.hazmat.primitives.asymmetric import ec, ed25519, rsa
from cryptography.hazmat.primitives import serialization

corpus = sys.argv[1]
def seed(name, mode, text):
    with open(os.path.join(corpus, name), "wb") as f:
        f.write(bytes([mode]) + text.encode())
def b64(d): return base64.urlsafe_b64encode(d).rstrip(b"=").decode()
def uint(n, size=0): return b64(n.to_bytes(max(size, (n.bit_length() + 7) // 8), "big"))

claims = {"sub": "alice", "iss": "https://issuer.test", "aud": ["api", "x"], "exp": 1700003600,
          "nbf": 1699999990.5, "email": "a@example.com", "roles": ["r", 1, True],
          "org": {"id": [1, 2]}}
hs = b"sluice-fuzz-secret-0123456789abcdef"
hs_no_kid = b"sluice-fuzz-secret-without-a-kid!!"
seed("hs256", 2, jwt.encode(claims, hs, algorithm="HS256", headers={"kid": "hs"}))
seed("hs256_no_kid", 2, jwt.encode(claims, hs_no_kid, algorithm="HS256"))
seed("hs256_aud_string", 2, jwt.encode(dict(claims, aud="api"), hs, algorithm="HS256",
                                       headers={"kid": "hs"}))
r = rsa.generate_private_key(public_exponent=65537, key_size=2048)
e256 = ec.generate_private_key(ec.SECP256R1())
e384 = ec.generate_private_key(ec.SECP384R1())
ed = ed25519.Ed25519PrivateKey.generate()
for alg, key, kid in (("RS256", r, "r"), ("PS256", r, "r"), ("RS512", r, None),
                      ("ES256", e256, "p256"), ("ES384", e384, "p384"), ("EdDSA", ed, "ed")):
    token = jwt.encode(claims, key, algorithm=alg, headers={"kid": kid} if kid else None)
    seed("verify_" + alg, 2, token)
    seed("parse_" + alg, 0, token)
seed("parse_none", 0, b64(b'{"alg":"none"}') + "." + b64(json.dumps(claims).encode()) + ".")
seed("parse_crit", 0, b64(b'{"alg":"HS256","crit":["x"]}') + "." + b64(b'{}') + ".AAAA")

n = r.public_key().public_numbers()
p256 = e256.public_key().public_numbers()
p384 = e384.public_key().public_numbers()
keys = [{"kty": "RSA", "kid": "r", "alg": "RS256", "use": "sig", "n": uint(n.n), "e": uint(n.e)},
        {"kty": "EC", "kid": "p256", "crv": "P-256", "x": uint(p256.x, 32), "y": uint(p256.y, 32)},
        {"kty": "EC", "kid": "p384", "crv": "P-384", "x": uint(p384.x, 48), "y": uint(p384.y, 48),
         "key_ops": ["verify"]},
        {"kty": "OKP", "kid": "ed", "crv": "Ed25519",
         "x": b64(ed.public_key().public_bytes(serialization.Encoding.Raw,
                                               serialization.PublicFormat.Raw))},
        {"kty": "oct", "kid": "hs", "k": b64(hs)}]
seed("jwks", 1, json.dumps({"keys": keys}))
for k in keys:
    seed("jwk_" + k["kty"] + "_" + k["kid"], 1, json.dumps({"keys": [k]}))
PY

cat >"${work}/fuzz.dict" <<'DICT'
"."
"eyJ"
"eyJhbGciOiJIUzI1NiIsImtpZCI6ImhzIn0"
"\"alg\""
"\"kid\""
"\"typ\""
"\"crit\""
"\"exp\""
"\"nbf\""
"\"iss\""
"\"aud\""
"\"sub\""
"\"RS256\""
"\"PS256\""
"\"ES256\""
"\"ES384\""
"\"EdDSA\""
"\"HS256\""
"\"none\""
"\"keys\""
"\"kty\""
"\"RSA\""
"\"EC\""
"\"OKP\""
"\"oct\""
"\"crv\""
"\"P-256\""
"\"P-384\""
"\"Ed25519\""
"\"use\""
"\"sig\""
"\"key_ops\""
"\"n\""
"\"e\""
"\"x\""
"\"y\""
"\"k\""
"\"d\""
"\"AQAB\""
"1e300"
"-1"
"[[[["
DICT
