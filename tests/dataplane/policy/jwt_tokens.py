#!/usr/bin/python3
"""Keys and JSON Web Tokens for the jwt policy's tests, made at test time by
a real library: Debian's python3-jwt (PyJWT) with python3-cryptography.

  jwt_tokens.py --now SECONDS

Prints one JSON object:
  "jwks":        JWK Sets (JSON text): "all" with one key of each type, kids
                 rsa-1, ec-256, ec-256-b (a second P-256 key), ec-384, ed-1,
                 hs-1; "es256" with only ec-256; "es256_rotated" with kid
                 ec-256 naming ec-256-b's key.
  "pem":         {"rsa", "ec256", "ed25519"}: the public keys in PEM.
  "bad_jwks":    {name: JWK Set text} of keys the policy must refuse.
  "tokens":      {name: compact JWS}; claims are relative to --now (see
                 CLAIMS below). Fresh keys every run.
"""
import argparse
import base64
import hashlib
import hmac
import json
import os
import sys

import jwt
from jwt import algorithms
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec, ed25519, rsa


def b64(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode()


def uint(n: int, size: int = 0) -> str:
    length = max(size, (n.bit_length() + 7) // 8)
    return b64(n.to_bytes(length, "big"))


def public_pem(key) -> str:
    return key.public_key().public_bytes(
        serialization.Encoding.PEM,
        serialization.PublicFormat.SubjectPublicKeyInfo).decode()


def rsa_jwk(key, kid):
    n = key.public_key().public_numbers()
    return {"kty": "RSA", "kid": kid, "use": "sig", "n": uint(n.n), "e": uint(n.e)}


def ec_jwk(key, kid, crv, size):
    n = key.public_key().public_numbers()
    return {"kty": "EC", "kid": kid, "crv": crv, "x": uint(n.x, size), "y": uint(n.y, size)}


def ed_jwk(key, kid):
    raw = key.public_key().public_bytes(serialization.Encoding.Raw,
                                        serialization.PublicFormat.Raw)
    return {"kty": "OKP", "kid": kid, "crv": "Ed25519", "x": b64(raw)}


def compact(header, payload, alg, key) -> str:
    """A JWS framed by hand (for headers and payloads PyJWT will not write),
    signed by PyJWT's own algorithm implementation."""
    h = header if isinstance(header, bytes) else json.dumps(header).encode()
    p = payload if isinstance(payload, bytes) else json.dumps(payload).encode()
    signing_input = (b64(h) + "." + b64(p)).encode()
    impl = algorithms.get_default_algorithms()[alg]
    signature = impl.sign(signing_input, impl.prepare_key(key))
    return signing_input.decode() + "." + b64(signature)


def main():
    parser = argparse.ArgumentParser()
    parser.add_argument("--now", type=int, required=True)
    now = parser.parse_args().now

    rsa_key = rsa.generate_private_key(public_exponent=65537, key_size=2048)
    ec256 = ec.generate_private_key(ec.SECP256R1())
    ec256_b = ec.generate_private_key(ec.SECP256R1())
    ec256_other = ec.generate_private_key(ec.SECP256R1())  # in no key set
    ec384 = ec.generate_private_key(ec.SECP384R1())
    ed = ed25519.Ed25519PrivateKey.generate()
    secret = os.urandom(32)

    keys = [rsa_jwk(rsa_key, "rsa-1"), ec_jwk(ec256, "ec-256", "P-256", 32),
            ec_jwk(ec256_b, "ec-256-b", "P-256", 32), ec_jwk(ec384, "ec-384", "P-384", 48),
            ed_jwk(ed, "ed-1"), {"kty": "oct", "kid": "hs-1", "k": b64(secret)}]

    # CLAIMS: every well-formed token carries these unless it says otherwise.
    claims = {"sub": "alice", "iss": "https://issuer.test", "aud": ["api", "other"],
              "iat": now, "nbf": now - 10, "exp": now + 3600, "email": "alice@example.com",
              "roles": ["admin", "dev"], "level": 3, "ratio": 1.5, "active": True,
              "org": {"id": 7}}

    def token(alg, key, kid, **changes):
        payload = dict(claims)
        for name, value in changes.items():
            if value is None:
                payload.pop(name, None)
            else:
                payload[name] = value
        headers = {"kid": kid} if kid else None
        return jwt.encode(payload, key, algorithm=alg, headers=headers)

    tokens = {
        "RS256": token("RS256", rsa_key, "rsa-1"),
        "RS384": token("RS384", rsa_key, "rsa-1"),
        "RS512": token("RS512", rsa_key, "rsa-1"),
        "PS256": token("PS256", rsa_key, "rsa-1"),
        "ES256": token("ES256", ec256, "ec-256"),
        "ES384": token("ES384", ec384, "ec-384"),
        "EdDSA": token("EdDSA", ed, "ed-1"),
        "HS256": token("HS256", secret, "hs-1"),
        # kid selection
        "es256_key_b": token("ES256", ec256_b, "ec-256-b"),
        "es256_key_b_no_kid": token("ES256", ec256_b, None),
        "es256_key_b_wrong_kid": token("ES256", ec256_b, "ec-256"),
        "es256_unknown_kid": token("ES256", ec256, "nope"),
        "es256_other_key": token("ES256", ec256_other, "ec-256"),
        "rs256_no_kid": token("RS256", rsa_key, None),
        # times: accepted from now+1000-leeway to now+2000+leeway
        "window": token("ES256", ec256, "ec-256", nbf=now + 1000, exp=now + 2000),
        # NumericDates may have fractions (RFC 7519 2)
        "fractional_window": token("ES256", ec256, "ec-256", nbf=now + 1000.25,
                                   exp=now + 2000.5),
        "expired": token("ES256", ec256, "ec-256", exp=now - 3600, nbf=None),
        "no_exp": token("ES256", ec256, "ec-256", exp=None),
        "no_iss_no_aud": token("ES256", ec256, "ec-256", iss=None, aud=None),
        "aud_string": token("ES256", ec256, "ec-256", aud="api"),
        # consumers and claims
        "sub_bob": token("ES256", ec256, "ec-256", sub="bob"),
        "sub_mallory": token("ES256", ec256, "ec-256", sub="mallory"),
        "sub_number": token("ES256", ec256, "ec-256", sub=42),
        "evil_claim": token("ES256", ec256, "ec-256", email="a@b\r\nx-admin: yes"),
        "comma_role": token("ES256", ec256, "ec-256", roles=["user,admin"]),
        "spaced_role": token("ES256", ec256, "ec-256", roles=["user", " admin"]),
        "empty_roles": token("ES256", ec256, "ec-256", roles=[]),
        "empty_string_role": token("ES256", ec256, "ec-256", roles=""),
        # refused by construction
        "alg_none": b64(json.dumps({"alg": "none", "typ": "JWT"}).encode()) + "." +
                    b64(json.dumps(claims).encode()) + ".",
        # algorithm confusion: HS256 keyed with the RSA public key's PEM bytes
        "hs256_rsa_pem_secret": None,
        "hs256_rsa_pem_secret_no_kid": None,
        "crit": compact({"alg": "ES256", "kid": "ec-256", "crit": ["exp"]}, claims, "ES256", ec256),
        "duplicate_alg": compact(b'{"alg":"ES256","kid":"ec-256","alg":"HS256"}', claims, "ES256",
                                 ec256),
        "deep_header": compact(("{\"alg\":\"ES256\",\"kid\":\"ec-256\",\"x\":" + "[" * 40 +
                                "]" * 40 + "}").encode(), claims, "ES256", ec256),
        "payload_not_json": compact({"alg": "ES256", "kid": "ec-256"}, b"not json", "ES256",
                                    ec256),
        "payload_exp_string": compact({"alg": "ES256", "kid": "ec-256"},
                                      dict(claims, exp="tomorrow"), "ES256", ec256),
        "duplicate_claim": compact({"alg": "ES256", "kid": "ec-256"},
                                   b'{"sub":"alice","exp":%d,"sub":"bob"}' % (now + 3600),
                                   "ES256", ec256),
    }
    pem_bytes = public_pem(rsa_key).encode()
    for name, kid in (("hs256_rsa_pem_secret", "rsa-1"), ("hs256_rsa_pem_secret_no_kid", None)):
        header = {"alg": "HS256", "typ": "JWT"}
        if kid:
            header["kid"] = kid
        signing_input = b64(json.dumps(header).encode()) + "." + b64(json.dumps(claims).encode())
        mac = hmac.new(pem_bytes, signing_input.encode(), hashlib.sha256).digest()
        tokens[name] = signing_input + "." + b64(mac)

    small_rsa = rsa.generate_private_key(public_exponent=65537, key_size=1024)
    bad_point = ec_jwk(ec256, "bad-point", "P-256", 32)
    y = bytearray(base64.urlsafe_b64decode(bad_point["y"] + "=="))
    y[-1] ^= 1
    bad_point["y"] = b64(bytes(y))
    rsa_private = rsa_jwk(rsa_key, "private")
    rsa_private["d"] = uint(rsa_key.private_numbers().d)

    out = {
        "now": now,
        "jwks": {
            "all": json.dumps({"keys": keys}),
            "es256": json.dumps({"keys": [keys[1]]}),
            # kid ec-256 now names the other P-256 key (ec-256-b's)
            "es256_rotated": json.dumps({"keys": [dict(keys[2], kid="ec-256")]}),
        },
        "pem": {"rsa": public_pem(rsa_key), "ec256": public_pem(ec256),
                "ed25519": public_pem(ed), "rsa1024": public_pem(small_rsa)},
        "bad_jwks": {
            "rsa1024": json.dumps({"keys": [rsa_jwk(small_rsa, "small")]}),
            "bad_point": json.dumps({"keys": [bad_point]}),
            "private": json.dumps({"keys": [rsa_private]}),
        },
        "tokens": tokens,
    }
    json.dump(out, sys.stdout)


if __name__ == "__main__":
    main()
