"""AWS test peers for Tessera's Bedrock integration tests: moto's STS and a
SigV4-checking mock of the Bedrock runtime, in one process on two ports.

STS port: moto 5.2.5's real STS (its Flask app, in-process, behind a small
WSGI bridge), for AssumeRoleWithWebIdentity and friends. Changes to moto:
  * Expiration: with a lifetime set (--lifetime, or "lifetime" through the
    control API) every AssumeRole/AssumeRoleWithWebIdentity credential expires
    that many seconds after issue, rounded DOWN to a whole second (real STS
    prints whole seconds), so it lives for (lifetime-1, lifetime] seconds.
    Without one, moto's own DurationSeconds expiry is used, also rounded down.
    The expiry is patched on moto's stored AssumedRole, so the Bedrock mock
    sees the same instant the STS response carried.
  * Validation that real STS does and moto 5.2.5 skips: DurationSeconds in
    900..43200, RoleSessionName 2..64 chars of [\\w+=,.@-], RoleArn and
    WebIdentityToken present -> 400 ValidationError (AWS XML).
  * Modes: "up" (normal), "down" (503 AWS XML error ServiceUnavailable),
    "hang" (read the request, then never answer; when the mode leaves "hang",
    held requests are dropped by closing the connection without a response).

Bedrock port: every request outside /__control/ must carry a valid SigV4
Authorization header (AWS4-HMAC-SHA256, service "bedrock", any region) made
with credentials this process's moto STS issued (access key looked up in
moto's STS backend), with X-Amz-Security-Token equal to their session token
and signed, and not expired. The signature is recomputed independently with
botocore's SigV4Auth from the request exactly as received (raw path, query,
the SignedHeaders' values, body, X-Amz-Date). Accepted -> 200
    {"provider": "bedrock", "method", "path", "access_key_id", "region",
     "headers": {lowercased name: value}}
rejected -> 403 {"message": ...} with an x-amzn-ErrorType header; an expired
credential gets exactly "The security token included in the request is
expired"; a signature mismatch also returns "canonical_request" and
"string_to_sign" as computed here.

Control API (on the Bedrock port; JSON in and out):
  POST   /__control/sts       {"mode": "up"|"down"|"hang", "lifetime": N|null}
                              (both optional; "lifetime": null = moto's own)
  GET    /__control/sts       {"mode", "lifetime", "calls": STS requests
                               received in any mode, "issued": [{"access_key_id",
                               "issued_at", "expires_at", "role_arn",
                               "session_name", "web_identity_token", "action"}]}
                              issued_at = time.time() right after the response
                              bytes were handed to the kernel (and before the
                              record is appended); expires_at = the patched
                              Expiration as a unix float. Successful
                              AssumeRoleWithWebIdentity (and AssumeRole) only.
  DELETE /__control/sts       forget "issued" and "calls"
  GET    /__control/requests  every Bedrock request, accepted or not: {"time"
                              (unix float, on arrival), "method", "path",
                              "access_key_id" (null if none), "region",
                              "status", "error" (rejected only), "headers",
                              "body", "payload_signed"}
  DELETE /__control/requests  forget them
  GET    /__control/health    200 {"status": "ok"}

Usage:
    aws_peers.py [--host 127.0.0.1] [--sts-port 0] [--bedrock-port 0]
                 [--port-file PATH] [--lifetime SECONDS]
                 [--tls-cert PEM --tls-key PEM]    (Bedrock port only)
    aws_peers.py --self-test
With port 0 the kernel picks; the ports go to --port-file (atomically) as JSON
{"sts": P, "bedrock": Q}, and "READY {"sts": P, "bedrock": Q}" is printed once
both listen. SIGTERM exits cleanly.
"""

import argparse
import calendar
import datetime
import hashlib
import hmac
import io
import json
import os
import re
import signal
import ssl
import sys
import threading
import time
import urllib.parse
import uuid

from xml.sax.saxutils import escape

from peer_http import PeerHandler, PeerServer

from botocore.auth import SigV4Auth
from botocore.awsrequest import AWSRequest, HTTPHeaders
from botocore.credentials import Credentials

from moto.server import create_backend_app
from moto.sts.models import STSBackend, sts_backends

SIGV4_ALGORITHM = "AWS4-HMAC-SHA256"
SIGV4_TIMESTAMP = "%Y%m%dT%H%M%SZ"
SERVICE = "bedrock"
MAX_CLOCK_SKEW = 300  # seconds; AWS rejects SigV4 requests older/newer than 5 min
UNSIGNED_PAYLOAD = "UNSIGNED-PAYLOAD"
EXPIRED_MESSAGE = "The security token included in the request is expired"
INVALID_TOKEN_MESSAGE = "The security token included in the request is invalid."
MISMATCH_MESSAGE = (
    "The request signature we calculated does not match the signature you "
    "provided. Check your AWS Secret Access Key and signing method.")


# --------------------------------------------------------------------------
# Shared HTTP plumbing


class Server(PeerServer):
    def __init__(self, address, handler, peers, label):
        super().__init__(address, handler)
        self.peers = peers
        self.label = f"aws_peers {label}"


class Handler(PeerHandler):
    def send(self, status, body, content_type, headers=(), reason=None):
        self.send_response(status, reason)
        self.send_header("Content-Type", content_type)
        self.send_header("Content-Length", str(len(body)))
        for name, value in headers:
            self.send_header(name, value)
        self.end_headers()
        if self.command != "HEAD":
            self.wfile.write(body)

    def reply(self, status, payload, headers=()):
        self.send(status, json.dumps(payload).encode(), "application/json", headers)

    def split_target(self):
        """(raw path, raw query) of the request-target, percent-encoding kept."""
        target = self.path
        if target.startswith(("http://", "https://")):  # absolute-form
            parts = urllib.parse.urlsplit(target)
            target = parts.path + (f"?{parts.query}" if parts.query else "")
        path, _, query = target.partition("?")
        return path, query

    def joined_headers(self):
        joined = {}
        for k, v in self.headers.items():
            k = k.lower()
            joined[k] = f"{joined[k]}, {v}" if k in joined else v
        return joined


# --------------------------------------------------------------------------
# STS: moto behind a WSGI bridge, with modes and a patched expiry


class StsState:
    """What the control API changes and reports. One per process, because the
    moto hooks it installs are process-wide."""

    def __init__(self, lifetime):
        self.cond = threading.Condition()  # guards everything below
        self.mode = "up"
        self.lifetime = lifetime  # seconds, or None for moto's DurationSeconds
        self.calls = 0
        self.issued = []
        self.local = threading.local()  # roles moto created in this request
        self._install_moto_hooks()

    def _install_moto_hooks(self):
        original = STSBackend.assume_role  # AssumeRoleWithWebIdentity goes through it
        state = self

        def assume_role(backend, *args, **kwargs):
            role = original(backend, *args, **kwargs)
            with state.cond:
                lifetime = state.lifetime
            expiry = role.expiration  # naive UTC: issue time + DurationSeconds
            if lifetime is not None:
                now = datetime.datetime.now(datetime.timezone.utc).replace(tzinfo=None)
                expiry = now + datetime.timedelta(seconds=lifetime)
            role.expiration = expiry.replace(microsecond=0)  # what moto stores and prints
            created = getattr(state.local, "roles", None)
            if created is not None:
                created.append(role)
            return role

        STSBackend.assume_role = assume_role

    def set(self, mode=None, lifetime=...):
        with self.cond:
            if mode is not None:
                self.mode = mode
            if lifetime is not ...:
                self.lifetime = lifetime
            self.cond.notify_all()  # wakes hung handlers to re-check the mode

    def snapshot(self):
        with self.cond:
            return {"mode": self.mode, "lifetime": self.lifetime,
                    "calls": self.calls, "issued": list(self.issued)}


def find_assumed_role(access_key_id):
    """The AssumedRole moto's STS issued for this key, from any account."""
    for by_partition in list(sts_backends.values()):
        for backend in list(by_partition.values()):
            role = backend.get_assumed_role_from_access_key(access_key_id)
            if role is not None:
                return role
    return None


def unix_time(naive_utc):
    return calendar.timegm(naive_utc.timetuple()) + naive_utc.microsecond / 1e6


def sts_error_xml(code, message, sender=True):
    request_id = str(uuid.uuid4())
    kind = "Sender" if sender else "Receiver"
    return (f'<ErrorResponse xmlns="https://sts.amazonaws.com/doc/2011-06-15/">'
            f"<Error><Type>{kind}</Type><Code>{code}</Code>"
            f"<Message>{escape(message)}</Message></Error>"
            f"<RequestId>{request_id}</RequestId></ErrorResponse>").encode()


SESSION_NAME_RE = re.compile(r"[\w+=,.@-]{2,64}", re.ASCII)


def sts_validation_error(params):
    """What real STS rejects and moto 5.2.5 lets through (None if fine)."""
    action = params.get("Action", "")
    if action not in ("AssumeRole", "AssumeRoleWithWebIdentity"):
        return None

    def bad(value, field, constraint):
        return (f"1 validation error detected: Value '{value}' at '{field}' "
                f"failed to satisfy constraint: {constraint}")

    required = ["RoleArn", "RoleSessionName"]
    if action == "AssumeRoleWithWebIdentity":
        required.append("WebIdentityToken")
    for name in required:
        if not params.get(name):
            return bad("null", name[0].lower() + name[1:], "Member must not be null")
    duration = params.get("DurationSeconds")
    if duration is not None:
        if not duration.isdigit():
            return bad(duration, "durationSeconds", "Member must be an integer")
        if int(duration) < 900:
            return bad(duration, "durationSeconds",
                       "Member must have value greater than or equal to 900")
        if int(duration) > 43200:
            return bad(duration, "durationSeconds",
                       "Member must have value less than or equal to 43200")
    session = params["RoleSessionName"]
    if not SESSION_NAME_RE.fullmatch(session):
        return bad(session, "roleSessionName",
                   "Member must have length between 2 and 64 and satisfy "
                   "regular expression pattern: [\\w+=,.@-]*")
    return None


class StsHandler(Handler):
    def handle_any(self):
        body = self.read_body()
        state = self.server.peers.sts
        with state.cond:
            state.calls += 1
            if state.mode == "hang":
                while state.mode == "hang":
                    state.cond.wait()
                self.close_connection = True  # drop: no response, ever
                return
            mode = state.mode
        if mode == "down":
            return self.send(503, sts_error_xml(
                "ServiceUnavailable", "Service is unavailable (aws_peers: mode down)",
                sender=False), "text/xml")

        path, query = self.split_target()
        params = {k: v[0] for k, v in urllib.parse.parse_qs(query).items()}
        if "x-www-form-urlencoded" in self.headers.get("Content-Type", ""):
            form = urllib.parse.parse_qs(body.decode("utf-8", errors="replace"))
            params.update({k: v[0] for k, v in form.items()})
        problem = sts_validation_error(params)
        if problem:
            return self.send(400, sts_error_xml("ValidationError", problem), "text/xml")

        state.local.roles = []
        try:
            status, headers, data = self.call_moto(path, query, body)
            roles, state.local.roles = state.local.roles, None
        except Exception as e:  # moto bug: answer like AWS would, keep serving
            state.local.roles = None
            print(f"aws_peers sts: moto raised {e!r}", file=sys.stderr)
            return self.send(500, sts_error_xml("InternalFailure", repr(e), sender=False),
                             "text/xml")
        self.send(status, data, headers.pop("content-type", "text/xml"),
                  headers.items())
        sent_at = time.time()
        if status == 200:
            records = [{
                "access_key_id": role.access_key_id,
                "issued_at": sent_at,
                "expires_at": unix_time(role.expiration),
                "role_arn": role.role_arn,
                "session_name": role.session_name,
                "web_identity_token": params.get("WebIdentityToken"),
                "action": params.get("Action"),
            } for role in roles]
            with state.cond:
                state.issued.extend(records)

    def call_moto(self, path, query, body):
        """Run moto's Flask app on this request; (status, headers, body)."""
        host = self.headers.get("Host", "%s:%s" % self.server.server_address[:2])
        server_name, _, server_port = host.partition(":")
        environ = {
            "REQUEST_METHOD": self.command,
            "SCRIPT_NAME": "",
            "PATH_INFO": urllib.parse.unquote_to_bytes(path).decode("latin-1"),
            "QUERY_STRING": query,
            "SERVER_NAME": server_name,
            "SERVER_PORT": server_port or "80",
            "SERVER_PROTOCOL": self.request_version,
            "REMOTE_ADDR": self.client_address[0],
            "CONTENT_LENGTH": str(len(body)),
            "wsgi.version": (1, 0),
            "wsgi.url_scheme": "http",
            "wsgi.input": io.BytesIO(body),
            "wsgi.errors": sys.stderr,
            "wsgi.multithread": True,
            "wsgi.multiprocess": False,
            "wsgi.run_once": False,
        }
        for name, value in self.headers.items():
            key = name.upper().replace("-", "_")
            if key in ("CONTENT_LENGTH", "TRANSFER_ENCODING"):
                continue
            if key != "CONTENT_TYPE":
                key = "HTTP_" + key
            environ[key] = f"{environ[key]},{value}" if key in environ else value

        started = {}

        def start_response(status, headers, exc_info=None):
            started["status"], started["headers"] = status, headers
            return lambda data: chunks.append(data)

        chunks = []
        result = self.server.peers.moto_app(environ, start_response)
        try:
            chunks.extend(result)
        finally:
            if hasattr(result, "close"):
                result.close()
        headers = {k.lower(): v for k, v in started["headers"]
                   if k.lower() not in ("content-length", "connection",
                                        "transfer-encoding", "date", "server")}
        return int(started["status"].split()[0]), headers, b"".join(chunks)

    do_GET = do_POST = do_PUT = do_DELETE = do_PATCH = handle_any


# --------------------------------------------------------------------------
# Bedrock: SigV4 verification


class Reject(Exception):
    """A request the Bedrock mock refuses: 403 with AWS's error type."""

    def __init__(self, error_type, message, **detail):
        super().__init__(message)
        self.error_type = error_type
        self.message = message
        self.detail = detail


class _Recompute(SigV4Auth):
    """botocore's SigV4 with the signed header set taken from the request's
    SignedHeaders (botocore would otherwise pick its own, e.g. drop
    user-agent) and their values exactly as received."""

    def __init__(self, credentials, region, signed_pairs):
        super().__init__(credentials, SERVICE, region)
        self._signed_pairs = signed_pairs

    def headers_to_sign(self, request):
        headers = HTTPHeaders()
        for name, value in self._signed_pairs:
            headers[name] = value  # appends: repeated headers keep every value
        return headers


def parse_authorization(value):
    algorithm, _, rest = value.strip().partition(" ")
    if algorithm != SIGV4_ALGORITHM:
        raise Reject("IncompleteSignatureException",
                     f"Authorization header algorithm is {algorithm!r}; this mock "
                     f"accepts only {SIGV4_ALGORITHM}")
    fields = {}
    for part in rest.split(","):
        key, sep, val = part.strip().partition("=")
        if not sep:
            raise Reject("IncompleteSignatureException",
                         f"Authorization header component {part.strip()!r} is not key=value")
        fields[key] = val
    for key in ("Credential", "SignedHeaders", "Signature"):
        if key not in fields:
            raise Reject("IncompleteSignatureException",
                         f"Authorization header has no {key}= component")
    scope = fields["Credential"].split("/")
    if len(scope) != 5:
        raise Reject("IncompleteSignatureException",
                     f"Credential {fields['Credential']!r} is not "
                     "ACCESSKEY/YYYYMMDD/REGION/SERVICE/aws4_request")
    signed = fields["SignedHeaders"].split(";")
    if signed != sorted(set(signed)) or any(h != h.lower() or not h for h in signed):
        raise Reject("IncompleteSignatureException",
                     f"SignedHeaders {fields['SignedHeaders']!r} must be lowercase "
                     "names, sorted, unique, separated by ';'")
    return scope, signed, fields["Signature"]


def verify_sigv4(method, raw_path, raw_query, header_pairs, body, now=None):
    """Check one Bedrock request. Returns (access_key_id, region,
    payload_signed); raises Reject. header_pairs: [(name, value)] as received."""
    now = time.time() if now is None else now
    lower = {}
    for name, value in header_pairs:
        lower.setdefault(name.lower(), []).append(value)

    auths = lower.get("authorization", [])
    if not auths:
        if "X-Amz-Signature=" in raw_query:
            raise Reject("MissingAuthenticationTokenException",
                         "Missing Authentication Token: query-string (presigned) "
                         "SigV4 is not supported by this mock; use the Authorization header")
        raise Reject("MissingAuthenticationTokenException",
                     "Missing Authentication Token: no Authorization header")
    if len(auths) > 1:
        raise Reject("IncompleteSignatureException", "more than one Authorization header")
    (access_key_id, scope_date, region, service, terminator), signed, signature = \
        parse_authorization(auths[0])
    if terminator != "aws4_request":
        raise Reject("IncompleteSignatureException",
                     f"Credential scope ends in {terminator!r}, not 'aws4_request'")
    if service != SERVICE:
        raise Reject("InvalidSignatureException",
                     f"Credential should be scoped to correct service: '{SERVICE}' "
                     f"(scope names {service!r})")
    for required in ("host", "x-amz-date", "x-amz-security-token"):
        if required not in signed:
            raise Reject("InvalidSignatureException",
                         f"'{required}' must be among SignedHeaders "
                         f"(got {';'.join(signed)})")
    for name in signed:
        if name not in lower:
            raise Reject("InvalidSignatureException",
                         f"SignedHeaders lists '{name}' but the request has no such header")

    amz_date = lower["x-amz-date"][0].strip()
    try:
        signed_at = calendar.timegm(time.strptime(amz_date, SIGV4_TIMESTAMP))
    except ValueError:
        raise Reject("IncompleteSignatureException",
                     f"X-Amz-Date {amz_date!r} is not in the form YYYYMMDDTHHMMSSZ")
    if scope_date != amz_date[:8]:
        raise Reject("InvalidSignatureException",
                     f"Date in Credential scope ({scope_date}) does not match "
                     f"X-Amz-Date ({amz_date})")

    role = find_assumed_role(access_key_id)
    if role is None:
        raise Reject("UnrecognizedClientException",
                     f"{INVALID_TOKEN_MESSAGE} (access key id {access_key_id!r} was not "
                     "issued by this STS)")
    tokens = lower.get("x-amz-security-token", [])
    if len(tokens) != 1 or tokens[0].strip() != role.session_token:
        raise Reject("UnrecognizedClientException",
                     f"{INVALID_TOKEN_MESSAGE} (X-Amz-Security-Token is not the session "
                     f"token STS issued with access key id {access_key_id})")
    expires_at = unix_time(role.expiration)
    if now >= expires_at:
        raise Reject("ExpiredTokenException", EXPIRED_MESSAGE,
                     expired_seconds_ago=round(now - expires_at, 3))

    if abs(now - signed_at) > MAX_CLOCK_SKEW:
        raise Reject("InvalidSignatureException",
                     f"Signature expired: X-Amz-Date {amz_date} is more than "
                     f"{MAX_CLOCK_SKEW} s away from the mock's clock "
                     f"({time.strftime(SIGV4_TIMESTAMP, time.gmtime(now))})")

    body_sha = hashlib.sha256(body).hexdigest()
    declared = lower.get("x-amz-content-sha256", [None])[0]
    payload_signed = declared is None or declared.strip() != UNSIGNED_PAYLOAD
    if declared is not None and payload_signed and declared.strip() != body_sha:
        raise Reject("InvalidSignatureException",
                     f"X-Amz-Content-SHA256 {declared.strip()!r} does not match the "
                     f"body's SHA-256 {body_sha!r}")

    # Recompute with botocore from the request exactly as received.
    signed_pairs = [(n.lower(), v) for n, v in header_pairs if n.lower() in signed]
    request = AWSRequest(method=method, url=f"http://signed-host{raw_path}", data=body)
    if raw_query:
        # Query pairs decoded here; botocore re-encodes them canonically.
        request.params = [
            (urllib.parse.unquote(k), urllib.parse.unquote(v))
            for k, _, v in (p.partition("=") for p in raw_query.split("&"))]
    request.headers = HTTPHeaders()
    for name, value in signed_pairs:
        request.headers[name] = value
    request.context["timestamp"] = amz_date
    creds = Credentials(role.access_key_id, role.secret_access_key, role.session_token)
    signer = _Recompute(creds, region, signed_pairs)
    canonical_request = signer.canonical_request(request)
    string_to_sign = signer.string_to_sign(request, canonical_request)
    expected = signer.signature(string_to_sign, request)
    if not hmac.compare_digest(expected, signature.strip()):
        raise Reject("InvalidSignatureException", MISMATCH_MESSAGE,
                     canonical_request=canonical_request, string_to_sign=string_to_sign)
    return access_key_id, region, payload_signed


class BedrockHandler(Handler):
    def handle_any(self):
        received = time.time()
        body = self.read_body()
        peers = self.server.peers
        path, query = self.split_target()
        if path.startswith("/__control/"):
            return self.control(path, body)

        headers = self.joined_headers()
        record = {"time": received, "method": self.command, "path": self.path,
                  "access_key_id": None, "region": None, "headers": headers,
                  "body": body.decode("utf-8", errors="replace")}
        try:
            access_key_id, region, payload_signed = verify_sigv4(
                self.command, path, query, list(self.headers.items()), body)
        except Reject as r:
            credential = re.search(r"Credential=([^/,\s]+)/\d{8}/([^/]+)/",
                                   headers.get("authorization", ""))
            if credential:
                record["access_key_id"], record["region"] = credential.groups()
            record.update(status=403, error=r.message, **r.detail)
            with peers.lock:
                peers.requests.append(record)
            return self.reply(403, {"message": r.message, **r.detail},
                              [("x-amzn-ErrorType", r.error_type),
                               ("x-amzn-RequestId", str(uuid.uuid4()))])
        record.update(status=200, access_key_id=access_key_id, region=region,
                      payload_signed=payload_signed)
        with peers.lock:
            peers.requests.append(record)
        self.reply(200, {"provider": "bedrock", "method": self.command,
                         "path": self.path, "access_key_id": access_key_id,
                         "region": region, "headers": headers},
                   [("x-amzn-RequestId", str(uuid.uuid4()))])

    def control(self, path, body):
        peers = self.server.peers
        route = (self.command, path.rstrip("/"))
        if route == ("GET", "/__control/health"):
            return self.reply(200, {"status": "ok"})
        if route == ("GET", "/__control/requests"):
            with peers.lock:
                return self.reply(200, list(peers.requests))
        if route == ("DELETE", "/__control/requests"):
            with peers.lock:
                peers.requests.clear()
            return self.reply(200, {})
        if route == ("GET", "/__control/sts"):
            return self.reply(200, peers.sts.snapshot())
        if route == ("DELETE", "/__control/sts"):
            with peers.sts.cond:
                peers.sts.issued.clear()
                peers.sts.calls = 0
            return self.reply(200, {})
        if route == ("POST", "/__control/sts"):
            try:
                change = json.loads(body or b"{}")
                mode = change.get("mode")
                if mode not in (None, "up", "down", "hang"):
                    raise ValueError(f"mode must be up, down or hang, not {mode!r}")
                lifetime = change.get("lifetime", ...)
                if lifetime not in (None, ...) and (
                        isinstance(lifetime, bool) or not isinstance(lifetime, (int, float))
                        or lifetime < 0):
                    raise ValueError(f"lifetime must be seconds >= 0 or null, not {lifetime!r}")
            except (ValueError, AttributeError) as e:
                return self.reply(400, {"error": str(e)})
            peers.sts.set(mode, lifetime)
            snapshot = peers.sts.snapshot()
            del snapshot["issued"]
            return self.reply(200, snapshot)
        return self.reply(404, {"error": f"no control route {self.command} {path}"})

    do_GET = do_POST = do_PUT = do_DELETE = do_PATCH = handle_any


# --------------------------------------------------------------------------
# Process


class Peers:
    """Both servers and their shared state."""

    def __init__(self, host="127.0.0.1", sts_port=0, bedrock_port=0, lifetime=None,
                 tls=None):
        self.sts = StsState(lifetime)
        self.moto_app = create_backend_app("sts")
        self.lock = threading.Lock()
        self.requests = []
        self.sts_server = Server((host, sts_port), StsHandler, self, "sts")
        self.bedrock_server = Server((host, bedrock_port), BedrockHandler, self, "bedrock")
        if tls:
            ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
            ctx.load_cert_chain(*tls)
            ctx.set_alpn_protocols(["http/1.1"])
            self.bedrock_server.socket = ctx.wrap_socket(
                self.bedrock_server.socket, server_side=True,
                do_handshake_on_connect=False)
        self.ports = {"sts": self.sts_server.server_address[1],
                      "bedrock": self.bedrock_server.server_address[1]}

    def start(self):
        for server in (self.sts_server, self.bedrock_server):
            threading.Thread(target=server.serve_forever, daemon=True).start()

    def close(self):
        self.sts.set("up")  # release hung handlers
        for server in (self.sts_server, self.bedrock_server):
            server.shutdown()
            server.server_close()


def main():
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--host", default="127.0.0.1")
    p.add_argument("--sts-port", type=int, default=0)
    p.add_argument("--bedrock-port", type=int, default=0)
    p.add_argument("--port-file")
    p.add_argument("--lifetime", type=float,
                   help="seconds every issued credential lives (default: DurationSeconds)")
    p.add_argument("--tls-cert")
    p.add_argument("--tls-key")
    p.add_argument("--self-test", action="store_true",
                   help="run the built-in checks against in-process peers and exit")
    args = p.parse_args()
    if bool(args.tls_cert) != bool(args.tls_key):
        p.error("--tls-cert and --tls-key go together")
    if args.self_test:
        sys.exit(self_test())

    peers = Peers(args.host, args.sts_port, args.bedrock_port, args.lifetime,
                  (args.tls_cert, args.tls_key) if args.tls_cert else None)
    peers.start()
    if args.port_file:
        tmp = f"{args.port_file}.tmp.{os.getpid()}"
        with open(tmp, "w") as f:
            f.write(json.dumps(peers.ports) + "\n")
        os.replace(tmp, args.port_file)

    stop = threading.Event()
    signal.signal(signal.SIGTERM, lambda *_: stop.set())
    signal.signal(signal.SIGINT, lambda *_: stop.set())
    print(f"READY {json.dumps(peers.ports)}", flush=True)
    while not stop.wait(3600):
        pass
    for server in (peers.sts_server, peers.bedrock_server):
        server.server_close()  # daemon threads (incl. hung ones) die with us


# --------------------------------------------------------------------------
# Self-test: botocore as the client, over real HTTP connections


def self_test():
    import http.client

    import botocore.session
    from botocore import UNSIGNED
    from botocore.config import Config
    from botocore.exceptions import ClientError, ReadTimeoutError

    peers = Peers(lifetime=3)
    peers.start()
    sts_url = f"http://127.0.0.1:{peers.ports['sts']}"
    bedrock = ("127.0.0.1", peers.ports["bedrock"])
    session = botocore.session.get_session()
    failures = []

    def check(name, ok, info=""):
        print(f"{'PASS' if ok else 'FAIL'} {name}{'' if ok else ': ' + str(info)}")
        if not ok:
            failures.append(name)

    def sts_client(timeout=5):
        return session.create_client(
            "sts", endpoint_url=sts_url, region_name="us-east-1",
            config=Config(signature_version=UNSIGNED, read_timeout=timeout,
                          connect_timeout=timeout, retries={"total_max_attempts": 1}))

    def assume(client=None, **kw):
        return (client or sts_client()).assume_role_with_web_identity(
            RoleArn="arn:aws:iam::123456789012:role/bedrock-invoker",
            RoleSessionName="tessera-selftest", WebIdentityToken="header.payload.sig",
            DurationSeconds=900, **kw)["Credentials"]

    def call(method, path, body=b"", headers=None):
        conn = http.client.HTTPConnection(*bedrock, timeout=5)
        try:
            conn.request(method, path, body=body, headers=headers or {})
            resp = conn.getresponse()
            return resp.status, json.loads(resp.read() or b"null")
        finally:
            conn.close()

    model_path = "/model/anthropic.claude-3-haiku-20240307-v1%3A0/invoke"
    payload = json.dumps({"anthropic_version": "bedrock-2023-05-31", "max_tokens": 10,
                          "messages": [{"role": "user", "content": "hi"}]}).encode()

    def signed(creds, path=model_path, body=payload, extra=None, secret=None, token=None,
               sign_content_sha=False):
        headers = {"Host": f"{bedrock[0]}:{bedrock[1]}", "Content-Type": "application/json",
                   "Accept": "application/json", "User-Agent": "selftest/1"}
        if sign_content_sha:
            headers["X-Amz-Content-SHA256"] = hashlib.sha256(body).hexdigest()
        headers.update(extra or {})
        request = AWSRequest(method="POST", url=f"http://{bedrock[0]}:{bedrock[1]}{path}",
                             data=body, headers=headers)
        SigV4Auth(Credentials(creds["AccessKeyId"], secret or creds["SecretAccessKey"],
                              token or creds["SessionToken"]),
                  "bedrock", "us-east-1").add_auth(request)
        return dict(request.headers.items())

    try:
        t0 = time.time()
        creds = assume()
        expiry = creds["Expiration"].timestamp()
        check("STS Expiration reflects --lifetime 3", t0 + 1.9 <= expiry <= t0 + 3.1,
              f"{expiry - t0:.3f}s")
        issued = peers.sts.snapshot()["issued"]
        check("issued record", len(issued) == 1
              and issued[0]["access_key_id"] == creds["AccessKeyId"]
              and issued[0]["web_identity_token"] == "header.payload.sig"
              and issued[0]["expires_at"] == expiry, issued)

        status, echo = call("POST", model_path, payload, signed(creds))
        check("botocore-signed request accepted", status == 200
              and echo["access_key_id"] == creds["AccessKeyId"], (status, echo))
        status, echo = call("POST", model_path + "?b=2&a=x%2Fy", payload,
                            signed(creds, path=model_path + "?b=2&a=x%2Fy"))
        check("signed request with query string accepted", status == 200, (status, echo))
        status, echo = call("POST", model_path, payload,
                            signed(creds, sign_content_sha=True))
        check("signed X-Amz-Content-SHA256 accepted", status == 200, (status, echo))
        h = signed(creds)
        h["X-Unsigned-Extra"] = "fine"
        status, echo = call("POST", model_path, payload, h)
        check("extra unsigned header accepted", status == 200, (status, echo))

        runtime = session.create_client(
            "bedrock-runtime", endpoint_url=f"http://{bedrock[0]}:{bedrock[1]}",
            region_name="eu-west-1", aws_access_key_id=creds["AccessKeyId"],
            aws_secret_access_key=creds["SecretAccessKey"],
            aws_session_token=creds["SessionToken"],
            config=Config(retries={"total_max_attempts": 1}))
        out = runtime.invoke_model(modelId="anthropic.claude-3-haiku-20240307-v1:0",
                                   body=payload, contentType="application/json")
        echo = json.loads(out["body"].read())
        check("botocore bedrock-runtime InvokeModel accepted (path %3A, eu-west-1)",
              echo["path"] == model_path and echo["region"] == "eu-west-1", echo)

        def rejected(name, headers, body=payload, path=model_path, expect=""):
            status, answer = call("POST", path, body, headers)
            check(name, status == 403 and expect in answer.get("message", ""),
                  (status, answer))

        h = signed(creds)
        h["Content-Type"] = "text/plain"
        rejected("changed signed header rejected", h, expect="does not match")
        rejected("changed body rejected", signed(creds), body=payload + b" ",
                 expect="does not match")
        rejected("changed body with X-Amz-Content-SHA256 rejected",
                 signed(creds, sign_content_sha=True), body=payload + b" ",
                 expect="X-Amz-Content-SHA256")
        rejected("changed path rejected", signed(creds),
                 path=model_path.replace("haiku", "sonnet"), expect="does not match")
        rejected("wrong secret rejected", signed(creds, secret="x" * 40),
                 expect="does not match")
        rejected("wrong session token rejected", signed(creds, token="bogus"),
                 expect="X-Amz-Security-Token")
        rejected("unknown access key rejected",
                 signed(dict(creds, AccessKeyId="ASIAUNKNOWN000000000")),
                 expect="was not issued")
        rejected("unsigned request rejected", {"Content-Type": "application/json"},
                 expect="Missing Authentication Token")

        time.sleep(max(0.0, expiry - time.time()) + 0.2)
        status, answer = call("POST", model_path, payload, signed(creds))
        check("expired credentials rejected",
              status == 403 and answer["message"] == EXPIRED_MESSAGE, (status, answer))
        recorded = call("GET", "/__control/requests")[1]
        check("requests recorded (accepted and rejected)",
              len(recorded) == 14 and recorded[-1]["status"] == 403
              and recorded[-1]["error"] == EXPIRED_MESSAGE, len(recorded))

        call("POST", "/__control/sts", json.dumps({"mode": "down"}).encode())
        try:
            assume()
            check("STS down -> 503 ServiceUnavailable", False, "no error")
        except ClientError as e:
            check("STS down -> 503 ServiceUnavailable",
                  e.response["Error"]["Code"] == "ServiceUnavailable"
                  and e.response["ResponseMetadata"]["HTTPStatusCode"] == 503, e.response)

        call("POST", "/__control/sts", json.dumps({"mode": "hang"}).encode())
        started = time.time()
        try:
            assume(sts_client(timeout=1))
            check("STS hang -> client times out", False, "answered")
        except ReadTimeoutError:
            check("STS hang -> client times out", 0.9 < time.time() - started < 3,
                  time.time() - started)
        held = {}
        holder = threading.Thread(target=lambda: held.setdefault(
            "result", _catch(lambda: assume(sts_client(timeout=30)))))
        holder.start()
        time.sleep(0.3)
        status, state = call("GET", "/__control/sts")
        check("control answers while STS hangs", status == 200 and state["mode"] == "hang")

        call("POST", "/__control/sts", json.dumps({"mode": "up", "lifetime": 60}).encode())
        holder.join(5)
        check("hung request dropped when mode leaves hang",
              not holder.is_alive() and isinstance(held.get("result"), Exception),
              held)
        t0 = time.time()
        creds = assume()
        check("STS up again, lifetime 60 via control",
              abs(creds["Expiration"].timestamp() - (t0 + 60)) <= 1.1)
        status, echo = call("POST", model_path, payload, signed(creds))
        check("new credentials accepted", status == 200, (status, echo))
        state = call("GET", "/__control/sts")[1]
        check("issued lists both successes only", len(state["issued"]) == 2
              and state["calls"] == 5, state)
    finally:
        peers.close()
    print("self-test", "FAILED: " + ", ".join(failures) if failures else "passed")
    return 1 if failures else 0


def _catch(fn):
    try:
        return fn()
    except Exception as e:
        return e


if __name__ == "__main__":
    main()
