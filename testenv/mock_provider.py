"""Mock LLM provider for Tessera's integration tests.

Stands in for an upstream such as OpenAI, Anthropic or Bedrock behind Envoy.
Every request is recorded exactly as it arrived (raw path, header pairs with
lowercased names, body) and answered with 200 and a JSON echo:
    {"provider": NAME, "method": ..., "path": ..., "headers": {name: value}}
The echo also carries the fields the official SDKs read (OpenAI chat completion and
embeddings, Anthropic message), so an unmodified SDK parses it. A chat completion asked
with "stream": true is answered as SSE, one chunk every 100 ms; the recorded request then
has "chunks_sent_at" (time.time() of each chunk, the last one included).
Control paths, answered directly and never recorded:
    GET /__requests     the recorded requests, as a JSON list
    DELETE /__requests  forget them (200, {})
    GET /__health       200
    POST /__fail        {"mode": "503" | "429" | "close" | "ok"}: answer every later
                        request (still recorded) with that status, by closing the
                        connection without an answer, or normally again
Standard library only. Usage:
    mock_provider.py --name NAME --port PORT [--host 127.0.0.1]
                     [--tls-cert PEM --tls-key PEM] [--port-file PATH]
With --port 0 the kernel picks the port; the actual one is written to
--port-file (atomically) and printed as "READY <port>" once listening.
"""

import argparse
import json
import os
import signal
import ssl
import sys
import threading
import time

from peer_http import PeerHandler, PeerServer


class Server(PeerServer):
    def __init__(self, address, name):
        super().__init__(address, Handler)
        self.name = name
        self.label = f"mock_provider {name}"
        self.recorded = []
        self.lock = threading.Lock()
        self.fail = "ok"


class Handler(PeerHandler):
    def reply(self, status, payload):
        data = json.dumps(payload).encode()
        self.send_response(status)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(data)))
        self.end_headers()
        if self.command != "HEAD":
            self.wfile.write(data)

    def handle_any(self):
        body = self.read_body()
        server = self.server
        if self.path == "/__requests" and self.command == "GET":
            with server.lock:
                return self.reply(200, list(server.recorded))
        if self.path == "/__requests" and self.command == "DELETE":
            with server.lock:
                server.recorded.clear()
            return self.reply(200, {})
        if self.path == "/__health" and self.command == "GET":
            return self.reply(200, {"provider": server.name, "status": "ok"})
        if self.path == "/__fail" and self.command == "POST":
            server.fail = json.loads(body)["mode"]
            return self.reply(200, {})

        pairs = [[k.lower(), v] for k, v in self.headers.items()]
        joined = {}
        for k, v in pairs:
            joined[k] = f"{joined[k]}, {v}" if k in joined else v
        entry = {
            "method": self.command,
            "path": self.path,  # raw request-target, not percent-decoded
            "headers": pairs,
            "body": body.decode("utf-8", errors="replace"),
        }
        with server.lock:
            server.recorded.append(entry)
        if server.fail == "close":
            self.close_connection = True
            return
        if server.fail in ("503", "429"):
            return self.reply(int(server.fail), {"error": {
                "message": f"{server.name} is failing with {server.fail}",
                "type": "server_error", "code": server.fail}})
        echo = {"provider": server.name, "method": self.command,
                "path": self.path, "headers": joined}
        try:
            request = json.loads(body) if body else {}
        except ValueError:
            request = {}
        if not isinstance(request, dict):
            request = {}
        if request.get("stream") is True and self.path.endswith("/chat/completions"):
            return self.stream(entry, request)
        echo.update(sdk_shape(server.name, self.path, request))
        self.reply(200, echo)

    def stream(self, entry, request):
        self.send_response(200)
        self.send_header("Content-Type", "text/event-stream")
        self.send_header("Transfer-Encoding", "chunked")
        self.end_headers()
        sent = []
        entry["chunks_sent_at"] = sent
        for i in range(4):
            if i:
                time.sleep(0.1)
            chunk = {"id": "chatcmpl-mock", "object": "chat.completion.chunk",
                     "created": int(time.time()), "model": request.get("model", ""),
                     "choices": [{"index": 0, "delta": {"content": f"{self.server.name}-{i} "},
                                  "finish_reason": None}]}
            self.write_chunk(f"data: {json.dumps(chunk)}\n\n".encode())
            sent.append(time.time())
        self.write_chunk(b"data: [DONE]\n\n")
        self.write_chunk(b"")

    def write_chunk(self, data):
        self.wfile.write(f"{len(data):x}\r\n".encode() + data + b"\r\n")
        self.wfile.flush()

    do_GET = do_POST = do_PUT = do_PATCH = do_DELETE = handle_any
    do_HEAD = do_OPTIONS = handle_any


def sdk_shape(name, path, request):
    """The fields an official SDK reads from a response to `path`."""
    model = request.get("model", "")
    text = f"from {name}"
    if path.endswith("/embeddings"):
        return {"object": "list", "model": model,
                "data": [{"object": "embedding", "index": 0, "embedding": [0.25, 0.5]}],
                "usage": {"prompt_tokens": 1, "total_tokens": 1}}
    if path.endswith("/messages"):
        return {"id": "msg_mock", "type": "message", "role": "assistant", "model": model,
                "content": [{"type": "text", "text": text}], "stop_reason": "end_turn",
                "stop_sequence": None, "usage": {"input_tokens": 1, "output_tokens": 1}}
    return {"id": "chatcmpl-mock", "object": "chat.completion", "created": 0, "model": model,
            "choices": [{"index": 0, "finish_reason": "stop",
                         "message": {"role": "assistant", "content": text}}],
            "usage": {"prompt_tokens": 1, "completion_tokens": 1, "total_tokens": 2}}


def main():
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--name", required=True)
    p.add_argument("--port", type=int, required=True)
    p.add_argument("--host", default="127.0.0.1")
    p.add_argument("--tls-cert")
    p.add_argument("--tls-key")
    p.add_argument("--port-file")
    args = p.parse_args()
    if bool(args.tls_cert) != bool(args.tls_key):
        p.error("--tls-cert and --tls-key go together")

    server = Server((args.host, args.port), args.name)
    if args.tls_cert:
        ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
        ctx.load_cert_chain(args.tls_cert, args.tls_key)
        ctx.set_alpn_protocols(["http/1.1"])
        server.socket = ctx.wrap_socket(server.socket, server_side=True,
                                        do_handshake_on_connect=False)
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


if __name__ == "__main__":
    main()
