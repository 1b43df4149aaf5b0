"""Mints RS256 JWTs for Tessera's client-authentication tests with a fresh key.

Prints one JSON object: {"jwks": {...}, "tokens": {name: jwt}} for the claims given as
NAME=JSON arguments (JSON object of claims; "exp"/"iat" relative to now when they are
strings such as "+300" or "-3600").
Usage: mint_jwts.py --issuer URL valid='{"sub":"team-c","aud":"ai-gateway","exp":"+300"}' ...
"""

import argparse
import base64
import json
import time

from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.asymmetric import padding, rsa


def b64(data):
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode()


def main():
    p = argparse.ArgumentParser()
    p.add_argument("--issuer", required=True)
    p.add_argument("claims", nargs="*")
    args = p.parse_args()
    key = rsa.generate_private_key(public_exponent=65537, key_size=2048)
    numbers = key.public_key().public_numbers()
    n = numbers.n.to_bytes((numbers.n.bit_length() + 7) // 8, "big")
    jwk = {"kty": "RSA", "kid": "test", "alg": "RS256", "use": "sig",
           "n": b64(n), "e": b64(numbers.e.to_bytes(3, "big"))}
    now = int(time.time())
    tokens = {}
    for arg in args.claims:
        name, raw = arg.split("=", 1)
        claims = {"iss": args.issuer, "iat": now}
        for k, v in json.loads(raw).items():
            claims[k] = now + int(v) if isinstance(v, str) and v[:1] in "+-" else v
        header = b64(json.dumps({"alg": "RS256", "typ": "JWT", "kid": "test"}).encode())
        body = b64(json.dumps(claims).encode())
        signed = f"{header}.{body}".encode()
        sig = key.sign(signed, padding.PKCS1v15(), hashes.SHA256())
        tokens[name] = f"{header}.{body}.{b64(sig)}"
    print(json.dumps({"jwks": {"keys": [jwk]}, "tokens": tokens}))


if __name__ == "__main__":
    main()
