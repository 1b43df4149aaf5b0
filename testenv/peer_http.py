"""HTTP plumbing shared by the Python test peers (mock provider, AWS peers, OIDC issuer).

Every peer needs the same things from http.server: keep-alive with Content-Length, no
Nagle delay (else Nagle + delayed ACK add ~40 ms to every measured request), a deep accept
backlog, TLS handshakes off the accept loop, no log line per request, and chunked bodies.
"""

import ssl
import sys
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer


class PeerServer(ThreadingHTTPServer):
    daemon_threads = True  # hung or keep-alive handlers never block exit
    request_queue_size = 256  # the default backlog of 5 drops bursts of connects
    label = "peer"  # names the peer in error lines

    def handle_error(self, request, client_address):
        print(f"{self.label}: error serving {client_address}: {sys.exc_info()[1]!r}",
              file=sys.stderr)


class PeerHandler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"  # keep-alive; every response has Content-Length
    disable_nagle_algorithm = True

    def setup(self):
        if isinstance(self.request, ssl.SSLSocket):
            self.request.do_handshake()  # in this worker thread, not the accept loop
        super().setup()

    def log_message(self, format, *args):
        pass  # silent: no line per request

    def read_body(self):
        if "chunked" in self.headers.get("Transfer-Encoding", "").lower():
            chunks = []
            while True:
                size = int(self.rfile.readline().split(b";")[0].strip(), 16)
                if size == 0:
                    while self.rfile.readline() not in (b"\r\n", b"\n", b""):
                        pass  # trailers
                    return b"".join(chunks)
                chunks.append(self.rfile.read(size))
                self.rfile.readline()  # CRLF after each chunk
        return self.rfile.read(int(self.headers.get("Content-Length") or 0))
