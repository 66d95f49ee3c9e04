// Keys and tokens for the jwt policy's tests, made at test time by
// jwt_tokens.py (PyJWT and python3-cryptography under /usr/bin/python3):
// fresh keys on every run, claims relative to a `now` the test chooses.
//
// Main test thread only.
#ifndef SLUICE_TESTS_DATAPLANE_POLICY_JWT_MATERIAL_H_
#define SLUICE_TESTS_DATAPLANE_POLICY_JWT_MATERIAL_H_

#include <cstdint>
#include <map>
#include <string>

namespace sluice::testing {

struct JwtMaterial {
  int64_t now = 0;
  std::map<std::string, std::string> jwks;      // all, es256, es256_rotated
  std::map<std::string, std::string> pem;       // rsa, ec256, ed25519, rsa1024
  std::map<std::string, std::string> bad_jwks;  // rsa1024, bad_point, private
  std::map<std::string, std::string> tokens;    // see jwt_tokens.py
  std::string error;  // why the script failed; empty when it ran

  // The token of that name; "" (which no test accepts) when there is none.
  std::string token(const std::string& name) const;
};

// Runs jwt_tokens.py (a data dependency of //tests/dataplane/policy:jwt_material).
JwtMaterial MakeJwtMaterial(int64_t now);

}  // namespace sluice::testing

#endif  // SLUICE_TESTS_DATAPLANE_POLICY_JWT_MATERIAL_H_
