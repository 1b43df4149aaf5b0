"""Small OIDC issuer for Tessera's integration tests: client-credentials grant
with RS256-signed JWTs, the web identity Tessera trades at STS.

Endpoints (issuer = http://HOST:PORT unless --issuer says otherwise):
  GET  /.well-known/openid-configuration   discovery (issuer, token_endpoint
                                           = ISSUER/oauth2/token, jwks_uri =
                                           ISSUER/jwks, ...)
  GET  /jwks                               {"keys": [RSA public key, RS256,
                                           "kid" = its RFC 7638 thumbprint]}
  POST /oauth2/token                       form grant_type=client_credentials,
      client_id + client_secret in the form or HTTP Basic (RFC 6749 2.3.1),
      optional scope, optional audience. 200 {"access_token": JWT, "id_token":
      the same JWT, "token_type": "Bearer", "expires_in": N, "scope"?}.
      JWT claims: iss, sub = client_id, aud = audience (default
      sts.amazonaws.com), iat, exp = iat + --token-lifetime, jti, client_id,
      scope (only when requested). Errors (RFC 6749 5.2): unknown client or
      wrong secret -> 401 {"error": "invalid_client"}; other grant types ->
      400 unsupported_grant_type; missing fields -> 400 invalid_request.
Control API (JSON):
  POST /__control/client   {"client_id": ID, "mode": "ok"|"fail"|"hang"}
      fail -> that client's token requests get 500 {"error": "server_error"};
      hang -> read, then never answered; when the mode leaves "hang", held
      requests are dropped (connection closed, no response). Applies before
      the secret is checked; any client_id may be given.
  POST /__control/config   {"token_lifetime": N}  for tokens issued from now on
  GET  /__control/calls    {client_id: token requests received (any outcome)}
  GET  /__control/tokens   issued tokens in order: {"client_id", "jti", "iat",
                           "exp", "aud", "scope", "token"}
  DELETE /__control/calls  forget calls and tokens
Usage:
    oidc_issuer.py --client ID:SECRET [--client ID:SECRET ...] --port PORT
                   [--host 127.0.0.1] [--port-file PATH] [--issuer URL]
                   [--token-lifetime 300]
    oidc_issuer.py --self-test
With --port 0 the kernel picks the port; it is written to --port-file
(atomically) and printed as "READY <port>" once listening. SIGTERM exits.
"""

import argparse
import base64
import binascii
import hashlib
import hmac
import json
import os
import signal
import sys
import threading
import time
import urllib.parse
import uuid

from peer_http import PeerHandler, PeerServer

from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.asymmetric import padding, rsa

DEFAULT_AUDIENCE = "sts.amazonaws.com"


def b64url(data):
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode("ascii")


def b64url_uint(n):
    return b64url(n.to_bytes((n.bit_length() + 7) // 8, "big"))


def compact_json(obj):
    return json.dumps(obj, separators=(",", ":"), sort_keys=True).encode()


class Issuer:
    """Signing key, clients, modes and counters."""

    def __init__(self, clients, token_lifetime):
        self.key = rsa.generate_private_key(public_exponent=65537, key_size=2048)
        numbers = self.key.public_key().public_numbers()
        jwk = {"e": b64url_uint(numbers.e), "kty": "RSA", "n": b64url_uint(numbers.n)}
        self.kid = b64url(hashlib.sha256(compact_json(jwk)).digest())  # RFC 7638
        self.jwk = dict(jwk, kid=self.kid, alg="RS256", use="sig")
        self.clients = clients  # {client_id: secret}
        self.token_lifetime = token_lifetime
        self.cond = threading.Condition()  # guards modes, calls, tokens
        self.modes = {}
        self.calls = {}
        self.tokens = []

    def sign(self, claims):
        header = {"alg": "RS256", "typ": "JWT", "kid": self.kid}
        signing_input = f"{b64url(compact_json(header))}.{b64url(compact_json(claims))}"
        signature = self.key.sign(signing_input.encode("ascii"),
                                  padding.PKCS1v15(), hashes.SHA256())
        return f"{signing_input}.{b64url(signature)}"


class Server(PeerServer):
    label = "oidc_issuer"

    def __init__(self, address, issuer, issuer_url=None):
        super().__init__(address, Handler)
        self.issuer = issuer
        self.issuer_url = issuer_url or "http://%s:%d" % self.server_address[:2]


class Handler(PeerHandler):
    def reply(self, status, payload, headers=()):
        data = json.dumps(payload).encode()
        self.send_response(status)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(data)))
        self.send_header("Cache-Control", "no-store")
        for name, value in headers:
            self.send_header(name, value)
        self.end_headers()
        if self.command != "HEAD":
            self.wfile.write(data)

    def handle_any(self):
        body = self.read_body()
        path = urllib.parse.urlsplit(self.path).path
        route = (self.command, path.rstrip("/") or "/")
        issuer, base = self.server.issuer, self.server.issuer_url
        if route == ("GET", "/.well-known/openid-configuration"):
            return self.reply(200, {
                "issuer": base,
                "token_endpoint": f"{base}/oauth2/token",
                "jwks_uri": f"{base}/jwks",
                "response_types_supported": ["token", "id_token"],
                "subject_types_supported": ["public"],
                "id_token_signing_alg_values_supported": ["RS256"],
                "grant_types_supported": ["client_credentials"],
                "token_endpoint_auth_methods_supported":
                    ["client_secret_basic", "client_secret_post"],
                "claims_supported": ["iss", "sub", "aud", "iat", "exp", "jti",
                                     "scope", "client_id"],
            })
        if route == ("GET", "/jwks"):
            return self.reply(200, {"keys": [issuer.jwk]})
        if route == ("POST", "/oauth2/token"):
            return self.token(body)
        if path.startswith("/__control/"):
            return self.control(route, body)
        return self.reply(404, {"error": f"no route {self.command} {path}"})

    def token(self, body):
        issuer = self.server.issuer
        form = {k: v[0] for k, v in urllib.parse.parse_qs(
            body.decode("utf-8", errors="replace"), keep_blank_values=True).items()}
        client_id, secret = form.get("client_id"), form.get("client_secret")
        auth = self.headers.get("Authorization", "")
        if auth[:6].lower() == "basic ":
            try:
                decoded = base64.b64decode(auth[6:].strip(), validate=True).decode()
                basic_id, _, basic_secret = decoded.partition(":")
            except (binascii.Error, UnicodeDecodeError):
                return self.reply(401, {"error": "invalid_client",
                                        "error_description": "malformed Basic credentials"},
                                  [("WWW-Authenticate", 'Basic realm="oidc_issuer"')])
            basic_id = urllib.parse.unquote_plus(basic_id)
            if client_id not in (None, basic_id):
                return self.reply(400, {"error": "invalid_request", "error_description":
                                        "client_id in form differs from Basic auth"})
            client_id, secret = basic_id, urllib.parse.unquote_plus(basic_secret)
        if not client_id:
            return self.reply(401, {"error": "invalid_client",
                                    "error_description": "no client authentication"},
                              [("WWW-Authenticate", 'Basic realm="oidc_issuer"')])

        with issuer.cond:
            issuer.calls[client_id] = issuer.calls.get(client_id, 0) + 1
            if issuer.modes.get(client_id) == "hang":
                while issuer.modes.get(client_id) == "hang":
                    issuer.cond.wait()
                self.close_connection = True  # drop: no response, ever
                return
            mode = issuer.modes.get(client_id, "ok")
            lifetime = issuer.token_lifetime
        if mode == "fail":
            return self.reply(500, {"error": "server_error",
                                    "error_description": "mode fail (oidc_issuer control)"})

        expected = issuer.clients.get(client_id)
        if expected is None or secret is None or not hmac.compare_digest(
                expected.encode(), secret.encode()):
            return self.reply(401, {"error": "invalid_client",
                                    "error_description": "unknown client or wrong secret"},
                              [("WWW-Authenticate", 'Basic realm="oidc_issuer"')])
        grant = form.get("grant_type")
        if not grant:
            return self.reply(400, {"error": "invalid_request",
                                    "error_description": "grant_type is required"})
        if grant != "client_credentials":
            return self.reply(400, {"error": "unsupported_grant_type",
                                    "error_description": f"{grant!r} is not supported"})

        now = int(time.time())
        claims = {"iss": self.server.issuer_url, "sub": client_id, "client_id": client_id,
                  "aud": form.get("audience") or DEFAULT_AUDIENCE, "iat": now,
                  "exp": now + lifetime, "jti": uuid.uuid4().hex}
        if form.get("scope"):
            claims["scope"] = form["scope"]
        jwt = issuer.sign(claims)
        with issuer.cond:
            issuer.tokens.append({"client_id": client_id, "jti": claims["jti"],
                                  "iat": now, "exp": claims["exp"], "aud": claims["aud"],
                                  "scope": claims.get("scope"), "token": jwt})
        answer = {"access_token": jwt, "id_token": jwt, "token_type": "Bearer",
                  "expires_in": lifetime}
        if "scope" in claims:
            answer["scope"] = claims["scope"]
        self.reply(200, answer, [("Pragma", "no-cache")])

    def control(self, route, body):
        issuer = self.server.issuer
        if route == ("GET", "/__control/calls"):
            with issuer.cond:
                return self.reply(200, dict(issuer.calls))
        if route == ("GET", "/__control/tokens"):
            with issuer.cond:
                return self.reply(200, list(issuer.tokens))
        if route == ("DELETE", "/__control/calls"):
            with issuer.cond:
                issuer.calls.clear()
                issuer.tokens.clear()
            return self.reply(200, {})
        if route in (("POST", "/__control/client"), ("POST", "/__control/config")):
            try:
                change = json.loads(body or b"{}")
                if route[1] == "/__control/client":
                    client_id, mode = change["client_id"], change["mode"]
                    if mode not in ("ok", "fail", "hang"):
                        raise ValueError(f"mode must be ok, fail or hang, not {mode!r}")
                else:
                    lifetime = change["token_lifetime"]
                    if isinstance(lifetime, bool) or not isinstance(lifetime, int) \
                            or lifetime < 1:
                        raise ValueError("token_lifetime must be an integer >= 1")
            except (ValueError, KeyError, TypeError) as e:
                return self.reply(400, {"error": f"bad control request: {e!r}"})
            with issuer.cond:
                if route[1] == "/__control/client":
                    issuer.modes[client_id] = mode
                else:
                    issuer.token_lifetime = lifetime
                issuer.cond.notify_all()  # wakes hung handlers to re-check
                return self.reply(200, {"modes": dict(issuer.modes),
                                        "token_lifetime": issuer.token_lifetime})
        return self.reply(404, {"error": f"no control route {route[0]} {route[1]}"})

    do_GET = do_POST = do_PUT = do_DELETE = do_PATCH = handle_any


def parse_client(value):
    client_id, sep, secret = value.partition(":")
    if not sep or not client_id:
        raise argparse.ArgumentTypeError(f"--client wants ID:SECRET, got {value!r}")
    return client_id, secret


def main():
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--client", type=parse_client, action="append", default=[],
                   metavar="ID:SECRET", help="a client it accepts (repeatable)")
    p.add_argument("--port", type=int)
    p.add_argument("--host", default="127.0.0.1")
    p.add_argument("--port-file")
    p.add_argument("--issuer", help="issuer URL (default http://HOST:PORT)")
    p.add_argument("--token-lifetime", type=int, default=300, help="seconds (default 300)")
    p.add_argument("--self-test", action="store_true",
                   help="run the built-in checks against an in-process issuer and exit")
    args = p.parse_args()
    if args.self_test:
        sys.exit(self_test())
    if args.port is None or not args.client:
        p.error("--port and at least one --client are required")

    server = Server((args.host, args.port), Issuer(dict(args.client), args.token_lifetime),
                    args.issuer)
    port = server.server_address[1]
    if args.port_file:
        tmp = f"{args.port_file}.tmp.{os.getpid()}"
        with open(tmp, "w") as f:
            f.write(f"{port}\n")
        os.replace(tmp, args.port_file)

    signal.signal(signal.SIGTERM, lambda *_: sys.exit(0))
    print(f"READY {port}", flush=True)
    try:
        server.serve_forever()
    except KeyboardInterrupt:
        pass
    finally:
        server.server_close()


def self_test():
    import http.client

    from cryptography.hazmat.primitives.asymmetric.rsa import RSAPublicNumbers

    server = Server(("127.0.0.1", 0), Issuer({"tessera": "s3cret"}, 300))
    threading.Thread(target=server.serve_forever, daemon=True).start()
    port = server.server_address[1]
    failures = []

    def check(name, ok, info=""):
        print(f"{'PASS' if ok else 'FAIL'} {name}{'' if ok else ': ' + str(info)}")
        if not ok:
            failures.append(name)

    def call(method, path, body=None, headers=None, timeout=5):
        conn = http.client.HTTPConnection("127.0.0.1", port, timeout=timeout)
        try:
            if isinstance(body, dict):
                body = urllib.parse.urlencode(body)
                headers = dict(headers or {},
                               **{"Content-Type": "application/x-www-form-urlencoded"})
            conn.request(method, path, body=body, headers=headers or {})
            resp = conn.getresponse()
            return resp.status, json.loads(resp.read())
        finally:
            conn.close()

    def unb64(s):
        return base64.urlsafe_b64decode(s + "=" * (-len(s) % 4))

    try:
        status, disco = call("GET", "/.well-known/openid-configuration")
        base = f"http://127.0.0.1:{port}"
        check("discovery", status == 200 and disco["issuer"] == base
              and disco["token_endpoint"] == f"{base}/oauth2/token", disco)
        jwk = call("GET", "/jwks")[1]["keys"][0]
        public = RSAPublicNumbers(int.from_bytes(unb64(jwk["e"]), "big"),
                                  int.from_bytes(unb64(jwk["n"]), "big")).public_key()

        status, tok = call("POST", "/oauth2/token", {
            "grant_type": "client_credentials", "client_id": "tessera",
            "client_secret": "s3cret", "scope": "bedrock"})
        header_b64, claims_b64, sig_b64 = tok["access_token"].split(".")
        public.verify(unb64(sig_b64), f"{header_b64}.{claims_b64}".encode(),
                      padding.PKCS1v15(), hashes.SHA256())  # raises if wrong
        header, claims = json.loads(unb64(header_b64)), json.loads(unb64(claims_b64))
        check("token (form auth) verifies against JWKS",
              status == 200 and header["kid"] == jwk["kid"] and claims["sub"] == "tessera"
              and claims["aud"] == DEFAULT_AUDIENCE and claims["iss"] == base
              and claims["exp"] - claims["iat"] == 300 and claims["scope"] == "bedrock"
              and tok["id_token"] == tok["access_token"] and tok["expires_in"] == 300,
              (header, claims, tok))

        basic = "Basic " + base64.b64encode(b"tessera:s3cret").decode()
        status, tok = call("POST", "/oauth2/token",
                           {"grant_type": "client_credentials", "audience": "custom"},
                           {"Authorization": basic})
        claims = json.loads(unb64(tok["access_token"].split(".")[1]))
        check("token (Basic auth, audience)", status == 200 and claims["aud"] == "custom"
              and "scope" not in claims, (status, tok))

        status, err = call("POST", "/oauth2/token", {
            "grant_type": "client_credentials", "client_id": "tessera",
            "client_secret": "wrong"})
        check("wrong secret -> 401 invalid_client",
              status == 401 and err["error"] == "invalid_client", (status, err))

        call("POST", "/__control/client", json.dumps({"client_id": "tessera",
                                                      "mode": "fail"}))
        status, err = call("POST", "/oauth2/token", {
            "grant_type": "client_credentials", "client_id": "tessera",
            "client_secret": "s3cret"})
        check("mode fail -> 500 server_error",
              status == 500 and err["error"] == "server_error", (status, err))

        call("POST", "/__control/client", json.dumps({"client_id": "tessera",
                                                      "mode": "hang"}))
        started = time.time()
        try:
            call("POST", "/oauth2/token", {"grant_type": "client_credentials",
                                           "client_id": "tessera",
                                           "client_secret": "s3cret"}, timeout=1)
            check("mode hang -> client times out", False, "answered")
        except TimeoutError:
            check("mode hang -> client times out", time.time() - started < 3)
        status, calls = call("GET", "/__control/calls")
        check("control answers while hung; calls counted",
              status == 200 and calls == {"tessera": 5}, calls)
        call("POST", "/__control/client", json.dumps({"client_id": "tessera",
                                                      "mode": "ok"}))
        status, tok = call("POST", "/oauth2/token", {
            "grant_type": "client_credentials", "client_id": "tessera",
            "client_secret": "s3cret"})
        check("mode ok again", status == 200 and "access_token" in tok, (status, tok))
    finally:
        server.shutdown()
        server.server_close()
    print("self-test", "FAILED: " + ", ".join(failures) if failures else "passed")
    return 1 if failures else 0


if __name__ == "__main__":
    main()
