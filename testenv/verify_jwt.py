"""Verifies an RS256 JWT against a JWKS document, independently of the code under test.

Usage: verify_jwt.py JWKS_JSON_FILE AUDIENCE < token
Prints the claims as JSON and exits 0 when the signature verifies with a key of the JWKS,
the audience matches and the token is within its validity window; otherwise prints why and
exits 1.
"""

import base64
import json
import sys
import time

from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.asymmetric import padding, rsa


def b64d(part):
    return base64.urlsafe_b64decode(part + "=" * (-len(part) % 4))


def main():
    jwks = json.load(open(sys.argv[1]))
    audience = sys.argv[2]
    token = sys.stdin.read().strip()
    try:
        header_b64, payload_b64, sig_b64 = token.split(".")
    except ValueError:
        sys.exit("not a JWT")
    header = json.loads(b64d(header_b64))
    claims = json.loads(b64d(payload_b64))
    if header.get("alg") != "RS256":
        sys.exit(f"unexpected alg {header.get('alg')}")
    keys = [k for k in jwks["keys"] if k.get("kty") == "RSA" and k.get("kid") in (None, header.get("kid"))]
    for k in keys:
        public = rsa.RSAPublicNumbers(
            int.from_bytes(b64d(k["e"]), "big"), int.from_bytes(b64d(k["n"]), "big")
        ).public_key()
        try:
            public.verify(b64d(sig_b64), f"{header_b64}.{payload_b64}".encode(),
                          padding.PKCS1v15(), hashes.SHA256())
        except Exception:
            continue
        break
    else:
        sys.exit("signature does not verify with any JWKS key")
    auds = claims.get("aud") if isinstance(claims.get("aud"), list) else [claims.get("aud")]
    if audience not in auds:
        sys.exit(f"audience {claims.get('aud')!r} is not {audience!r}")
    now = time.time()
    if not claims.get("nbf", 0) - 5 <= now <= claims.get("exp", 0) + 5:
        sys.exit("token outside its validity window")
    print(json.dumps(claims))


if __name__ == "__main__":
    main()
