"""Tests of testenv/fake_apiserver.py: each starts the real server process on
port 0 and talks HTTP to it. Standard library only (unittest, no pytest):

    testenv/.venv/bin/python -m unittest testenv/test_fake_apiserver.py
    python3 testenv/test_fake_apiserver.py
"""

import base64
import http.client
import json
import os
import re
import select
import signal
import socket
import subprocess
import sys
import tempfile
import threading
import time
import unittest

HERE = os.path.dirname(os.path.abspath(__file__))
SERVER = os.path.join(HERE, "fake_apiserver.py")
CR = "/apis/tessera.dev/v1alpha1"
RFC3339 = re.compile(r"^\d{4}-\d\d-\d\dT\d\d:\d\d:\d\dZ$")


class FakeApiServer:
    """One fake_apiserver.py process; restartable on the same --state file."""

    def __init__(self, workdir, *extra):
        self.workdir = workdir
        self.extra = list(extra)
        self.state = os.path.join(workdir, "state.json")
        self.port_file = os.path.join(workdir, "port")
        self.kubeconfig = os.path.join(workdir, "kubeconfig")
        self.proc = None
        self.port = None

    def start(self):
        self.stderr = open(os.path.join(self.workdir, "stderr.log"), "ab")
        self.proc = subprocess.Popen(
            [sys.executable, SERVER, "--port", "0", "--port-file", self.port_file, "--state", self.state,
             "--kubeconfig-out", self.kubeconfig, *self.extra],
            stdout=subprocess.PIPE, stderr=self.stderr)
        ready, _, _ = select.select([self.proc.stdout], [], [], 15)
        line = self.proc.stdout.readline().decode() if ready else ""
        if not line.startswith("READY "):
            self.proc.kill()
            raise RuntimeError(f"fake_apiserver did not start: {line!r}; stderr: {self.stderr_text()}")
        self.port = int(line.split()[1])
        return self

    def stderr_text(self):
        with open(os.path.join(self.workdir, "stderr.log"), encoding="utf-8", errors="replace") as f:
            return f.read()

    def stop(self):
        if self.proc and self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(10)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()
        if self.proc:
            self.proc.stdout.close()
            self.stderr.close()
        return self.proc.returncode if self.proc else None

    # -- HTTP ----------------------------------------------------------------
    def request(self, method, path, body=None, content_type="application/json", headers=None):
        conn = http.client.HTTPConnection("127.0.0.1", self.port, timeout=10)
        try:
            data = None
            if body is not None:
                data = body if isinstance(body, bytes) else json.dumps(body).encode()
            hdrs = dict(headers or {})
            if data is not None:
                hdrs["Content-Type"] = content_type
            conn.request(method, path, body=data, headers=hdrs)
            resp = conn.getresponse()
            raw = resp.read()
            try:
                parsed = json.loads(raw) if raw else None
            except ValueError:
                parsed = raw.decode()
            return resp.status, parsed, resp
        finally:
            conn.close()

    def ok(self, method, path, body=None, content_type="application/json", expect=(200, 201)):
        code, obj, _ = self.request(method, path, body, content_type)
        if code not in expect:
            raise AssertionError(f"{method} {path} -> {code} {obj}")
        return obj

    def watch(self, path, timeout=5):
        return WatchStream(self.port, path, timeout)

    def current_rv(self):
        return int(self.ok("GET", "/__control/health")["resourceVersion"])


class WatchStream:
    """A watch request on a raw socket, with its own chunked decoding, so that a
    clean end of stream (terminating chunk) and an abrupt close are told apart."""

    def __init__(self, port, path, timeout):
        self.sock = socket.create_connection(("127.0.0.1", port), timeout)
        self.sock.sendall(f"GET {path} HTTP/1.1\r\nHost: 127.0.0.1\r\nAccept: application/json\r\n"
                          "Authorization: Bearer x\r\n\r\n".encode())
        self.buf = b""
        self.body = b""
        self.ended = False
        deadline = time.monotonic() + timeout
        while b"\r\n\r\n" not in self.buf:
            self._fill(deadline)
        head, self.buf = self.buf.split(b"\r\n\r\n", 1)
        lines = head.decode("latin-1").split("\r\n")
        self.status = int(lines[0].split()[1])
        self.headers = {k.strip().lower(): v.strip() for k, v in (ln.split(":", 1) for ln in lines[1:])}
        if self.headers.get("transfer-encoding") != "chunked":
            n = int(self.headers.get("content-length", 0))
            while len(self.buf) < n:
                self._fill(deadline)
            self.error_body = json.loads(self.buf[:n])

    def _fill(self, deadline):
        left = deadline - time.monotonic()
        if left <= 0 or not select.select([self.sock], [], [], left)[0]:
            raise socket.timeout("no data from the watch")
        data = self.sock.recv(65536)
        if not data:
            raise ConnectionError("watch connection closed mid-stream (no terminating chunk)")
        self.buf += data

    def _parse_chunk(self):
        i = self.buf.find(b"\r\n")
        if i < 0:
            return False
        size = int(self.buf[:i].split(b";")[0], 16)
        if size == 0:
            if len(self.buf) < i + 4:
                return False
            self.buf = self.buf[i + 4:]
            self.ended = True
            return True
        if len(self.buf) < i + 2 + size + 2:
            return False
        self.body += self.buf[i + 2:i + 2 + size]
        self.buf = self.buf[i + 2 + size + 2:]
        return True

    def next(self, timeout=5):
        """The next event; None when the stream ended cleanly; socket.timeout
        when nothing came within timeout; ConnectionError when the connection
        was cut mid-stream."""
        deadline = time.monotonic() + timeout
        while b"\n" not in self.body:
            if self.ended:
                return None
            if not self._parse_chunk():
                self._fill(deadline)
        line, self.body = self.body.split(b"\n", 1)
        return json.loads(line)

    def take(self, n, timeout=5, skip_bookmarks=True):
        out = []
        while len(out) < n:
            ev = self.next(timeout)
            if ev is None:
                raise AssertionError(f"stream ended after {out}")
            if skip_bookmarks and ev["type"] == "BOOKMARK":
                continue
            out.append(ev)
        return out

    def assert_quiet(self, test, seconds):
        """No non-bookmark event for `seconds`."""
        deadline = time.monotonic() + seconds
        while True:
            left = deadline - time.monotonic()
            if left <= 0:
                return
            try:
                ev = self.next(left)
            except socket.timeout:
                return
            if ev is not None and ev["type"] != "BOOKMARK":
                test.fail(f"unexpected event {ev}")

    def close(self):
        self.sock.close()


def gateway(name, spec=None, labels=None, **meta):
    md = {"name": name}
    if labels:
        md["labels"] = labels
    md.update(meta)
    return {"apiVersion": "tessera.dev/v1alpha1", "kind": "Gateway", "metadata": md,
            "spec": spec if spec is not None else {"nodeCluster": "c", "listeners": []}}


def summary(events):
    return [(e["type"], e["object"]["metadata"].get("name")) for e in events]


class ServerCase(unittest.TestCase):
    """One server for the whole class; each test gets its own namespace."""

    extra_args = ("--bookmark-interval", "0.3")
    counter = 0

    @classmethod
    def setUpClass(cls):
        cls.tmp = tempfile.TemporaryDirectory(prefix="fake-apiserver-test-")
        cls.srv = FakeApiServer(cls.tmp.name, *cls.extra_args).start()

    @classmethod
    def tearDownClass(cls):
        code = cls.srv.stop()
        cls.tmp.cleanup()
        assert code == 0, f"fake_apiserver exited {code}"

    def setUp(self):
        ServerCase.counter += 1
        self.ns = f"t{ServerCase.counter}-{self._testMethodName.replace('_', '-')[:40].strip('-')}"
        self.srv.ok("POST", "/api/v1/namespaces", {"apiVersion": "v1", "kind": "Namespace",
                                                   "metadata": {"name": self.ns}})
        self.gw = f"{CR}/namespaces/{self.ns}/gateways"

    def create_gw(self, name, **kw):
        return self.srv.ok("POST", self.gw, gateway(name, **kw), expect=(201,))

    def assertStatus(self, resp, code, reason):
        c, obj, _ = resp
        self.assertEqual(c, code, obj)
        self.assertEqual(obj["kind"], "Status", obj)
        self.assertEqual(obj["apiVersion"], "v1")
        self.assertEqual(obj["status"], "Failure")
        self.assertEqual(obj["code"], code)
        self.assertEqual(obj["reason"], reason)
        self.assertIsInstance(obj["message"], str)
        return obj


# ---------------------------------------------------------------------------


class DiscoveryTest(ServerCase):
    def test_version(self):
        v = self.srv.ok("GET", "/version")
        for k in ("major", "minor", "gitVersion", "gitCommit", "gitTreeState", "buildDate", "goVersion",
                  "compiler", "platform"):
            self.assertIsInstance(v[k], str, k)

    def test_core_discovery(self):
        api = self.srv.ok("GET", "/api")
        self.assertEqual(api["kind"], "APIVersions")
        self.assertEqual(api["versions"], ["v1"])
        v1 = self.srv.ok("GET", "/api/v1")
        self.assertEqual((v1["kind"], v1["groupVersion"]), ("APIResourceList", "v1"))
        res = {r["name"]: r for r in v1["resources"]}
        self.assertEqual(res["secrets"]["kind"], "Secret")
        self.assertEqual(res["secrets"]["singularName"], "secret")
        self.assertTrue(res["secrets"]["namespaced"])
        self.assertIn("watch", res["secrets"]["verbs"])
        self.assertFalse(res["namespaces"]["namespaced"])
        self.assertEqual(res["namespaces/status"]["verbs"], ["get", "patch", "update"])

    def test_group_discovery(self):
        groups = self.srv.ok("GET", "/apis")
        self.assertEqual(groups["kind"], "APIGroupList")
        by_name = {g["name"]: g for g in groups["groups"]}
        self.assertEqual(by_name["tessera.dev"]["preferredVersion"],
                         {"groupVersion": "tessera.dev/v1alpha1", "version": "v1alpha1"})
        self.assertIn("coordination.k8s.io", by_name)
        self.assertEqual(self.srv.ok("GET", "/apis/tessera.dev")["kind"], "APIGroup")
        rl = self.srv.ok("GET", CR)
        self.assertEqual(rl["groupVersion"], "tessera.dev/v1alpha1")
        res = {r["name"]: r for r in rl["resources"]}
        expected = {"gateways": ("Gateway", "gateway"), "backends": ("Backend", "backend"),
                    "backendsecuritypolicies": ("BackendSecurityPolicy", "backendsecuritypolicy"),
                    "routes": ("Route", "route")}
        for plural, (kind, singular) in expected.items():
            self.assertEqual((res[plural]["kind"], res[plural]["singularName"]), (kind, singular))
            self.assertTrue(res[plural]["namespaced"])
            self.assertEqual(sorted(res[plural]["verbs"]), sorted(
                ["create", "delete", "deletecollection", "get", "list", "patch", "update", "watch"]))
            self.assertEqual(res[plural + "/status"]["kind"], kind)
            self.assertEqual(res[plural + "/status"]["verbs"], ["get", "patch", "update"])
        self.assertEqual(res["gateways"]["shortNames"], ["tgw"])
        leases = {r["name"]: r for r in self.srv.ok("GET", "/apis/coordination.k8s.io/v1")["resources"]}
        self.assertEqual((leases["leases"]["kind"], leases["leases"]["namespaced"]), ("Lease", True))

    def test_aggregated_discovery(self):
        accept = ("application/json;g=apidiscovery.k8s.io;v=v2;as=APIGroupDiscoveryList,"
                  "application/json;g=apidiscovery.k8s.io;v=v2beta1;as=APIGroupDiscoveryList,application/json")
        code, body, resp = self.srv.request("GET", "/apis", headers={"Accept": accept})
        self.assertEqual(code, 200)
        self.assertIn("as=APIGroupDiscoveryList", resp.getheader("Content-Type"))
        self.assertEqual(body["kind"], "APIGroupDiscoveryList")
        items = {i["metadata"]["name"]: i for i in body["items"]}
        gw = [r for r in items["tessera.dev"]["versions"][0]["resources"] if r["resource"] == "gateways"][0]
        self.assertEqual(gw["responseKind"], {"group": "tessera.dev", "version": "v1alpha1", "kind": "Gateway"})
        self.assertEqual(gw["scope"], "Namespaced")
        self.assertEqual(gw["subresources"][0]["subresource"], "status")
        _, core, _ = self.srv.request("GET", "/api", headers={"Accept": accept})
        self.assertEqual(core["items"][0]["versions"][0]["version"], "v1")

    def test_unknown_paths_are_404_status(self):
        self.assertStatus(self.srv.request("GET", "/apis/nope.dev/v1/things"), 404, "NotFound")
        self.assertStatus(self.srv.request("GET", f"{CR}/namespaces/{self.ns}/widgets"), 404, "NotFound")
        self.assertStatus(self.srv.request("GET", f"{CR}/gateways/x"), 404, "NotFound")
        self.assertStatus(self.srv.request("GET", f"/api/v1/namespaces/{self.ns}/secrets/x/status"), 404, "NotFound")

    def test_port_file_and_kubeconfig(self):
        with open(self.srv.port_file) as f:
            self.assertEqual(int(f.read()), self.srv.port)
        with open(self.srv.kubeconfig) as f:
            kc = f.read()
        self.assertIn(f"server: http://127.0.0.1:{self.srv.port}\n", kc)
        self.assertIn("current-context: tessera-fake\n", kc)
        self.assertIn("token: ", kc)


class CrudTest(ServerCase):
    def test_create_sets_server_fields(self):
        g = self.create_gw("a", status={"x": 1})
        md = g["metadata"]
        self.assertEqual((g["apiVersion"], g["kind"]), ("tessera.dev/v1alpha1", "Gateway"))
        self.assertEqual(md["namespace"], self.ns)
        self.assertRegex(md["uid"], r"^[0-9a-f-]{36}$")
        self.assertRegex(md["resourceVersion"], r"^\d+$")
        self.assertRegex(md["creationTimestamp"], RFC3339)
        self.assertEqual(md["generation"], 1)
        self.assertNotIn("status", g)  # status is dropped on create when /status exists
        self.assertEqual(self.srv.ok("GET", f"{self.gw}/a"), g)

    def test_already_exists_and_not_found(self):
        self.create_gw("a")
        st = self.assertStatus(self.srv.request("POST", self.gw, gateway("a")), 409, "AlreadyExists")
        self.assertEqual(st["message"], 'gateways.tessera.dev "a" already exists')
        st = self.assertStatus(self.srv.request("GET", f"{self.gw}/nope"), 404, "NotFound")
        self.assertEqual(st["message"], 'gateways.tessera.dev "nope" not found')
        self.assertEqual(st["details"], {"name": "nope", "group": "tessera.dev", "kind": "gateways"})
        st = self.assertStatus(self.srv.request("GET", f"/api/v1/namespaces/{self.ns}/secrets/nope"), 404, "NotFound")
        self.assertEqual(st["message"], 'secrets "nope" not found')

    def test_global_resource_version_is_monotonic(self):
        rvs = [int(self.create_gw("a")["metadata"]["resourceVersion"])]
        rvs.append(int(self.srv.ok("POST", f"/api/v1/namespaces/{self.ns}/secrets",
                                   {"metadata": {"name": "s"}})["metadata"]["resourceVersion"]))
        rvs.append(int(self.srv.ok("POST", f"/apis/coordination.k8s.io/v1/namespaces/{self.ns}/leases",
                                   {"metadata": {"name": "l"}, "spec": {}})["metadata"]["resourceVersion"]))
        rvs.append(int(self.srv.ok("PATCH", f"{self.gw}/a", {"metadata": {"labels": {"k": "v"}}},
                                   "application/merge-patch+json")["metadata"]["resourceVersion"]))
        self.assertEqual(rvs, sorted(set(rvs)))
        self.assertEqual(rvs, list(range(rvs[0], rvs[0] + 4)))
        lst = self.srv.ok("GET", self.gw)
        self.assertEqual(lst["metadata"]["resourceVersion"], str(rvs[-1]))
        self.assertEqual(lst["kind"], "GatewayList")

    def test_generation_bumps_only_on_spec_change(self):
        g = self.create_gw("a")
        g["metadata"]["labels"] = {"team": "x"}
        g2 = self.srv.ok("PUT", f"{self.gw}/a", g)
        self.assertEqual(g2["metadata"]["generation"], 1)
        self.assertGreater(int(g2["metadata"]["resourceVersion"]), int(g["metadata"]["resourceVersion"]))
        g2["spec"]["nodeCluster"] = "other"
        g3 = self.srv.ok("PUT", f"{self.gw}/a", g2)
        self.assertEqual(g3["metadata"]["generation"], 2)
        g4 = self.srv.ok("PUT", f"{self.gw}/a/status", dict(g3, status={"ok": True}))
        self.assertEqual(g4["metadata"]["generation"], 2)
        g5 = self.srv.ok("PATCH", f"{self.gw}/a", {"metadata": {"annotations": {"a": "b"}}},
                         "application/merge-patch+json")
        self.assertEqual(g5["metadata"]["generation"], 2)
        g6 = self.srv.ok("PATCH", f"{self.gw}/a", {"spec": {"listeners": [{"name": "l", "port": 1}]}},
                         "application/merge-patch+json")
        self.assertEqual(g6["metadata"]["generation"], 3)

    def test_noop_writes_keep_resource_version(self):
        g = self.create_gw("a")
        same = self.srv.ok("PUT", f"{self.gw}/a", g)
        self.assertEqual(same["metadata"]["resourceVersion"], g["metadata"]["resourceVersion"])
        same = self.srv.ok("PATCH", f"{self.gw}/a", {"spec": g["spec"]}, "application/merge-patch+json")
        self.assertEqual(same["metadata"]["resourceVersion"], g["metadata"]["resourceVersion"])

    def test_status_subresource_isolation(self):
        g = self.create_gw("a")
        g["status"] = {"ok": True}
        g = self.srv.ok("PUT", f"{self.gw}/a", g)
        self.assertNotIn("status", g)  # PUT on the main resource ignores status
        g["status"] = {"ok": True}
        g["spec"]["nodeCluster"] = "changed"
        g["metadata"]["labels"] = {"x": "y"}
        s = self.srv.ok("PUT", f"{self.gw}/a/status", g)
        self.assertEqual(s["status"], {"ok": True})
        self.assertEqual(s["spec"]["nodeCluster"], "c")  # /status ignores spec ...
        self.assertNotIn("labels", s["metadata"])  # ... and metadata
        self.assertEqual(s["metadata"]["generation"], 1)
        s2 = self.srv.ok("PATCH", f"{self.gw}/a/status", {"status": {"reason": "r"}, "spec": {"nodeCluster": "z"}},
                         "application/merge-patch+json")
        self.assertEqual(s2["status"], {"ok": True, "reason": "r"})
        self.assertEqual(s2["spec"]["nodeCluster"], "c")
        self.assertEqual(self.srv.ok("GET", f"{self.gw}/a/status"), s2)
        m = self.srv.ok("PATCH", f"{self.gw}/a", {"status": {"ok": False}}, "application/merge-patch+json")
        self.assertEqual(m["status"], {"ok": True, "reason": "r"})
        self.assertEqual(m["metadata"]["resourceVersion"], s2["metadata"]["resourceVersion"])

    def test_optimistic_concurrency(self):
        g = self.create_gw("a")
        fresh = self.srv.ok("PATCH", f"{self.gw}/a", {"metadata": {"labels": {"v": "1"}}},
                            "application/merge-patch+json")
        stale = dict(g, spec={"nodeCluster": "stale", "listeners": []})
        st = self.assertStatus(self.srv.request("PUT", f"{self.gw}/a", stale), 409, "Conflict")
        self.assertEqual(st["message"], 'Operation cannot be fulfilled on gateways.tessera.dev "a": the object has '
                                        'been modified; please apply your changes to the latest version and try again')
        self.assertStatus(self.srv.request("PUT", f"{self.gw}/a/status", dict(g, status={})), 409, "Conflict")
        no_rv = json.loads(json.dumps(fresh))
        del no_rv["metadata"]["resourceVersion"]
        st = self.assertStatus(self.srv.request("PUT", f"{self.gw}/a", no_rv), 422, "Invalid")
        self.assertIn("metadata.resourceVersion", st["message"])
        self.assertStatus(self.srv.request("PATCH", f"{self.gw}/a", {"metadata": {"resourceVersion": g["metadata"]["resourceVersion"]}, "spec": {"nodeCluster": "x"}},
                                           "application/merge-patch+json"), 409, "Conflict")
        self.srv.ok("PUT", f"{self.gw}/a", dict(fresh, spec={"nodeCluster": "ok", "listeners": []}))

    def test_put_errors(self):
        g = self.create_gw("a")
        self.assertStatus(self.srv.request("PUT", f"{self.gw}/b", g), 400, "BadRequest")
        self.assertStatus(self.srv.request("PUT", f"{self.gw}/zz", dict(g, metadata=dict(g["metadata"], name="zz"))),
                          404, "NotFound")
        self.assertStatus(self.srv.request("POST", f"{self.gw}/a", g), 405, "MethodNotAllowed")
        self.assertStatus(self.srv.request("POST", self.gw, b"{not json"), 400, "BadRequest")
        self.assertStatus(self.srv.request("POST", self.gw, gateway("Bad_Name")), 422, "Invalid")
        self.assertStatus(self.srv.request("POST", self.gw, dict(gateway("k"), kind="Route")), 400, "BadRequest")
        bad_ns = gateway("n", namespace="elsewhere")
        self.assertStatus(self.srv.request("POST", self.gw, bad_ns), 400, "BadRequest")
        gen = self.srv.ok("POST", self.gw, gateway("", generateName="gen-"))
        self.assertRegex(gen["metadata"]["name"], r"^gen-[a-z0-9]{5}$")

    def test_delete(self):
        g = self.create_gw("a")
        st = self.srv.ok("DELETE", f"{self.gw}/a")
        self.assertEqual((st["kind"], st["status"]), ("Status", "Success"))
        self.assertEqual(st["details"], {"name": "a", "group": "tessera.dev", "kind": "gateways",
                                         "uid": g["metadata"]["uid"]})
        self.assertStatus(self.srv.request("GET", f"{self.gw}/a"), 404, "NotFound")
        self.assertStatus(self.srv.request("DELETE", f"{self.gw}/a"), 404, "NotFound")
        g = self.create_gw("b")
        self.assertStatus(self.srv.request("DELETE", f"{self.gw}/b", {"preconditions": {"resourceVersion": "1"}}),
                          409, "Conflict")
        self.srv.ok("DELETE", f"{self.gw}/b", {"preconditions": {"uid": g["metadata"]["uid"]}})

    def test_finalizers_delay_deletion(self):
        g = self.create_gw("a", finalizers=["tessera.dev/cleanup"])
        d = self.srv.ok("DELETE", f"{self.gw}/a")
        self.assertEqual(d["kind"], "Gateway")
        self.assertRegex(d["metadata"]["deletionTimestamp"], RFC3339)
        self.assertEqual(d["metadata"]["generation"], 2)
        got = self.srv.ok("GET", f"{self.gw}/a")
        self.assertEqual(got, d)
        self.assertStatus(self.srv.request("PATCH", f"{self.gw}/a", {"metadata": {"finalizers": ["a/b", "tessera.dev/cleanup"]}},
                                           "application/merge-patch+json"), 422, "Invalid")
        gone = self.srv.ok("PATCH", f"{self.gw}/a", {"metadata": {"finalizers": None}}, "application/merge-patch+json")
        self.assertGreater(int(gone["metadata"]["resourceVersion"]), int(got["metadata"]["resourceVersion"]))
        self.assertStatus(self.srv.request("GET", f"{self.gw}/a"), 404, "NotFound")
        del g

    def test_merge_patch(self):
        self.create_gw("a", spec={"nodeCluster": "c", "listeners": [{"name": "x", "port": 1}],
                                  "extra": {"keep": 1, "drop": 2}})
        p = self.srv.ok("PATCH", f"{self.gw}/a", {"spec": {"listeners": [{"name": "y", "port": 2}],
                                                          "extra": {"drop": None, "new": 3}},
                                                 "metadata": {"labels": {"l": "1"}}},
                        "application/merge-patch+json")
        self.assertEqual(p["spec"], {"nodeCluster": "c", "listeners": [{"name": "y", "port": 2}],
                                     "extra": {"keep": 1, "new": 3}})
        self.assertEqual(p["metadata"]["labels"], {"l": "1"})
        self.assertEqual(p["metadata"]["generation"], 2)
        st = self.assertStatus(self.srv.request("PATCH", f"{self.gw}/a", {"spec": {}},
                                                "application/strategic-merge-patch+json"), 415, "UnsupportedMediaType")
        self.assertIn("application/merge-patch+json", st["message"])
        self.assertStatus(self.srv.request("PATCH", f"{self.gw}/a", {}, "application/json"), 415, "UnsupportedMediaType")
        self.assertStatus(self.srv.request("PATCH", f"{self.gw}/nope", {}, "application/merge-patch+json"),
                          404, "NotFound")

    def test_json_patch(self):
        self.create_gw("a")
        p = self.srv.ok("PATCH", f"{self.gw}/a", [
            {"op": "test", "path": "/spec/nodeCluster", "value": "c"},
            {"op": "replace", "path": "/spec/nodeCluster", "value": "d"},
            {"op": "add", "path": "/spec/listeners/-", "value": {"name": "l", "port": 80}},
            {"op": "add", "path": "/metadata/annotations", "value": {"tessera.dev/x": "1"}},
            {"op": "replace", "path": "/metadata/annotations/tessera.dev~1x", "value": "2"},
            {"op": "copy", "from": "/spec/nodeCluster", "path": "/spec/copied"},
            {"op": "remove", "path": "/spec/copied"},
        ], "application/json-patch+json")
        self.assertEqual(p["spec"], {"nodeCluster": "d", "listeners": [{"name": "l", "port": 80}]})
        self.assertEqual(p["metadata"]["annotations"], {"tessera.dev/x": "2"})
        self.assertEqual(p["metadata"]["generation"], 2)
        self.assertStatus(self.srv.request("PATCH", f"{self.gw}/a", [{"op": "test", "path": "/spec/nodeCluster",
                                                                      "value": "c"}], "application/json-patch+json"),
                          422, "Invalid")

    def test_server_side_apply(self):
        path = f"{self.gw}/a?fieldManager=tessera&force=true"
        body = gateway("a", spec={"nodeCluster": "c", "listeners": []})
        body["status"] = {"ignored": True}
        code, created, _ = self.srv.request("PATCH", path, body, "application/apply-patch+yaml")
        self.assertEqual(code, 201, created)  # apply creates an absent object
        self.assertEqual(created["metadata"]["generation"], 1)
        self.assertNotIn("status", created)
        again = self.srv.ok("PATCH", path, body, "application/apply-patch+yaml")
        self.assertEqual(again["metadata"]["resourceVersion"], created["metadata"]["resourceVersion"])
        body["spec"]["nodeCluster"] = "d"
        changed = self.srv.ok("PATCH", path, body, "application/apply-patch+yaml")
        self.assertEqual((changed["spec"]["nodeCluster"], changed["metadata"]["generation"]), ("d", 2))
        st = {"apiVersion": "tessera.dev/v1alpha1", "kind": "Gateway", "metadata": {"name": "a"},
              "status": {"conditions": [{"type": "Accepted", "status": "True"}]}}
        s = self.srv.ok("PATCH", f"{self.gw}/a/status?fieldManager=tessera&force=true", st,
                        "application/apply-patch+yaml")
        self.assertEqual(s["status"], st["status"])
        self.assertEqual(s["metadata"]["generation"], 2)
        self.assertEqual(s["spec"]["nodeCluster"], "d")
        self.assertStatus(self.srv.request("PATCH", f"{self.gw}/a", body, "application/apply-patch+yaml"),
                          422, "Invalid")  # fieldManager is required
        self.assertStatus(self.srv.request("PATCH", path, {"status": {}}, "application/apply-patch+yaml"),
                          400, "BadRequest")  # apiVersion/kind are required
        self.assertStatus(self.srv.request("PATCH", f"{self.gw}/nope/status?fieldManager=t", st | {"metadata": {}},
                                           "application/apply-patch+yaml"), 404, "NotFound")
        self.assertStatus(self.srv.request("PATCH", f"{self.gw}/a?force=true", {"spec": {}},
                                           "application/merge-patch+json"), 422, "Invalid")

    def test_secret_string_data_and_no_generation(self):
        path = f"/api/v1/namespaces/{self.ns}/secrets"
        s = self.srv.ok("POST", path, {"apiVersion": "v1", "kind": "Secret", "metadata": {"name": "s"},
                                       "data": {"a": base64.b64encode(b"from-data").decode(),
                                                "b": base64.b64encode(b"old").decode()},
                                       "stringData": {"b": "new", "c": "plain"}})
        self.assertNotIn("stringData", s)
        self.assertNotIn("generation", s["metadata"])
        self.assertEqual(s["type"], "Opaque")
        self.assertEqual({k: base64.b64decode(v).decode() for k, v in s["data"].items()},
                         {"a": "from-data", "b": "new", "c": "plain"})
        u = self.srv.ok("PATCH", f"{path}/s", {"stringData": {"a": "patched"}}, "application/merge-patch+json")
        self.assertEqual(base64.b64decode(u["data"]["a"]), b"patched")
        self.assertNotIn("stringData", self.srv.ok("GET", f"{path}/s"))
        u = self.srv.ok("PATCH", f"{path}/s", {"data": {"c": None}}, "application/strategic-merge-patch+json")
        self.assertNotIn("c", u["data"])
        self.assertStatus(self.srv.request("POST", path, {"metadata": {"name": "bad"}, "data": {"x": "not base64!"}}),
                          400, "BadRequest")
        items = self.srv.ok("GET", path)["items"]
        self.assertEqual([i["metadata"]["name"] for i in items], ["s"])
        self.assertNotIn("kind", items[0])  # typed lists omit kind/apiVersion on items, like the real server
        self.assertEqual(self.srv.ok("GET", f"{path}/s")["kind"], "Secret")
        all_ns = self.srv.ok("GET", "/api/v1/secrets")
        self.assertEqual(all_ns["kind"], "SecretList")
        self.assertIn(("s", self.ns), [(i["metadata"]["name"], i["metadata"]["namespace"]) for i in all_ns["items"]])

    def test_lease_leader_election(self):
        path = f"/apis/coordination.k8s.io/v1/namespaces/{self.ns}/leases"
        lease = {"apiVersion": "coordination.k8s.io/v1", "kind": "Lease", "metadata": {"name": "leader"},
                 "spec": {"holderIdentity": "a", "leaseDurationSeconds": 15,
                          "renewTime": "2025-01-01T00:00:00.000000Z"}}
        l1 = self.srv.ok("POST", path, lease, expect=(201,))
        self.assertNotIn("generation", l1["metadata"])
        self.assertStatus(self.srv.request("POST", path, lease), 409, "AlreadyExists")
        # two candidates race from the same read: exactly one wins
        a = json.loads(json.dumps(l1))
        b = json.loads(json.dumps(l1))
        a["spec"]["holderIdentity"] = "cand-a"
        b["spec"]["holderIdentity"] = "cand-b"
        won = self.srv.ok("PUT", f"{path}/leader", a)
        self.assertStatus(self.srv.request("PUT", f"{path}/leader", b), 409, "Conflict")
        self.assertEqual(self.srv.ok("GET", f"{path}/leader")["spec"]["holderIdentity"], "cand-a")
        # built-in types allow an unconditional PUT (no resourceVersion)
        del b["metadata"]["resourceVersion"]
        forced = self.srv.ok("PUT", f"{path}/leader", b)
        self.assertGreater(int(forced["metadata"]["resourceVersion"]), int(won["metadata"]["resourceVersion"]))

    def test_namespace_lifecycle(self):
        self.assertStatus(self.srv.request("POST", f"{CR}/namespaces/no-such-ns/gateways", gateway("a")),
                          404, "NotFound")
        ns = self.srv.ok("GET", f"/api/v1/namespaces/{self.ns}")
        self.assertEqual(ns["status"], {"phase": "Active"})
        self.assertEqual(ns["metadata"]["labels"]["kubernetes.io/metadata.name"], self.ns)
        self.create_gw("a")
        self.srv.ok("DELETE", f"/api/v1/namespaces/{self.ns}")
        self.assertStatus(self.srv.request("GET", f"{self.gw}/a"), 404, "NotFound")
        self.assertStatus(self.srv.request("GET", f"/api/v1/namespaces/{self.ns}"), 404, "NotFound")

    def test_label_selectors_on_list(self):
        self.create_gw("a", labels={"app": "x", "tier": "1"})
        self.create_gw("b", labels={"app": "y", "tier": "2"})
        self.create_gw("c", labels={"other": "z"})

        def names(sel):
            q = f"?labelSelector={sel}".replace(" ", "%20").replace("(", "%28").replace(")", "%29").replace("!", "%21")
            return [i["metadata"]["name"] for i in self.srv.ok("GET", self.gw + q)["items"]]

        self.assertEqual(names("app=x"), ["a"])
        self.assertEqual(names("app==x"), ["a"])
        self.assertEqual(names("app!=x"), ["b", "c"])
        self.assertEqual(names("app"), ["a", "b"])
        self.assertEqual(names("!app"), ["c"])
        self.assertEqual(names("app in (x,y)"), ["a", "b"])
        self.assertEqual(names("app notin (x)"), ["b", "c"])
        self.assertEqual(names("app,tier=2"), ["b"])
        self.assertEqual(names("app in (x, y),tier!=1"), ["b"])
        self.assertEqual(names("tier>1"), ["b"])
        self.assertEqual(names(""), ["a", "b", "c"])
        self.assertStatus(self.srv.request("GET", self.gw + "?labelSelector=app%20in%20%28x"), 400, "BadRequest")
        self.assertStatus(self.srv.request("GET", self.gw + "?labelSelector=%3Dx"), 400, "BadRequest")

    def test_field_selectors(self):
        self.create_gw("a")
        self.create_gw("b")
        items = self.srv.ok("GET", f"{CR}/gateways?fieldSelector=metadata.namespace%3D{self.ns},metadata.name%3Db")["items"]
        self.assertEqual([(i["metadata"]["namespace"], i["metadata"]["name"]) for i in items], [(self.ns, "b")])
        items = self.srv.ok("GET", f"{self.gw}?fieldSelector=metadata.name!%3Db")["items"]
        self.assertEqual([i["metadata"]["name"] for i in items], ["a"])
        st = self.assertStatus(self.srv.request("GET", f"{self.gw}?fieldSelector=spec.nodeCluster%3Dc"), 400, "BadRequest")
        self.assertIn("field label not supported", st["message"])

    def test_pagination_with_continue(self):
        for n in "abcde":
            self.create_gw(n)
        p1 = self.srv.ok("GET", f"{self.gw}?limit=2")
        self.assertEqual([i["metadata"]["name"] for i in p1["items"]], ["a", "b"])
        self.assertEqual(p1["metadata"]["remainingItemCount"], 3)
        rv = p1["metadata"]["resourceVersion"]
        # changes between pages are not seen: pages are a snapshot at the first page's RV
        self.srv.ok("DELETE", f"{self.gw}/c")
        self.srv.ok("PATCH", f"{self.gw}/e", {"metadata": {"labels": {"late": "1"}}}, "application/merge-patch+json")
        self.create_gw("cc")
        p2 = self.srv.ok("GET", f"{self.gw}?limit=2&continue={p1['metadata']['continue']}")
        self.assertEqual([i["metadata"]["name"] for i in p2["items"]], ["c", "d"])
        self.assertEqual(p2["metadata"]["resourceVersion"], rv)
        self.assertEqual(p2["metadata"]["remainingItemCount"], 1)
        p3 = self.srv.ok("GET", f"{self.gw}?limit=2&continue={p2['metadata']['continue']}")
        self.assertEqual([i["metadata"]["name"] for i in p3["items"]], ["e"])
        self.assertNotIn("labels", p3["items"][0]["metadata"])
        self.assertNotIn("continue", p3["metadata"])
        fresh = self.srv.ok("GET", f"{self.gw}?limit=500")
        self.assertEqual([i["metadata"]["name"] for i in fresh["items"]], ["a", "b", "cc", "d", "e"])
        # a continue token older than the compaction floor has expired
        self.srv.ok("POST", "/__control/compact")
        self.assertStatus(self.srv.request("GET", f"{self.gw}?limit=2&continue={p1['metadata']['continue']}"),
                          410, "Expired")
        self.assertStatus(self.srv.request("GET", f"{self.gw}?limit=2&continue=garbage"), 400, "BadRequest")

    def test_list_resource_version_params(self):
        a = self.create_gw("a")
        rv_a = a["metadata"]["resourceVersion"]
        self.create_gw("b")
        self.assertEqual(len(self.srv.ok("GET", f"{self.gw}?resourceVersion=0")["items"]), 2)
        self.assertEqual(len(self.srv.ok("GET", f"{self.gw}?resourceVersion={rv_a}&resourceVersionMatch=NotOlderThan")["items"]), 2)
        exact = self.srv.ok("GET", f"{self.gw}?resourceVersion={rv_a}&resourceVersionMatch=Exact")
        self.assertEqual(([i["metadata"]["name"] for i in exact["items"]], exact["metadata"]["resourceVersion"]),
                         (["a"], rv_a))
        self.assertStatus(self.srv.request("GET", f"{self.gw}?resourceVersionMatch=Exact"), 422, "Invalid")
        self.srv.ok("POST", "/__control/compact")
        self.assertStatus(self.srv.request("GET", f"{self.gw}?resourceVersion={rv_a}&resourceVersionMatch=Exact"),
                          410, "Expired")

    def test_too_large_resource_version(self):
        target = self.srv.current_rv() + 1
        got = {}
        t = threading.Thread(target=lambda: got.update(r=self.srv.request(
            "GET", f"{self.gw}?resourceVersion={target}&resourceVersionMatch=NotOlderThan")))
        t.start()
        time.sleep(0.2)
        self.create_gw("a")  # the store reaches the RV: the waiting list is served
        t.join(10)
        code, lst, _ = got["r"]
        self.assertEqual((code, lst["metadata"]["resourceVersion"]), (200, str(target)))
        t0 = time.monotonic()
        st = self.assertStatus(self.srv.request("GET", f"{self.gw}?resourceVersion={target + 100}"), 504, "Timeout")
        self.assertGreaterEqual(time.monotonic() - t0, 2.5)
        self.assertEqual(st["details"]["causes"][0]["reason"], "ResourceVersionTooLarge")

    def test_dry_run(self):
        rv = self.srv.current_rv()
        code, obj, _ = self.srv.request("POST", f"{self.gw}?dryRun=All", gateway("a"))
        self.assertEqual((code, obj["metadata"]["name"]), (201, "a"))
        self.assertStatus(self.srv.request("GET", f"{self.gw}/a"), 404, "NotFound")
        self.assertEqual(self.srv.current_rv(), rv)

    def test_delete_collection(self):
        self.create_gw("a", labels={"x": "1"})
        self.create_gw("b", labels={"x": "1"})
        self.create_gw("c")
        out = self.srv.ok("DELETE", f"{self.gw}?labelSelector=x%3D1")
        self.assertEqual(out["kind"], "GatewayList")
        self.assertEqual([i["metadata"]["name"] for i in out["items"]], ["a", "b"])
        self.assertEqual([i["metadata"]["name"] for i in self.srv.ok("GET", self.gw)["items"]], ["c"])

    def test_partial_object_metadata(self):
        g = self.create_gw("a", labels={"k": "v"})
        accept = {"Accept": "application/json;as=PartialObjectMetadata;g=meta.k8s.io;v=v1"}
        _, got, _ = self.srv.request("GET", f"{self.gw}/a", headers=accept)
        self.assertEqual(got, {"kind": "PartialObjectMetadata", "apiVersion": "meta.k8s.io/v1",
                               "metadata": g["metadata"]})
        _, lst, _ = self.srv.request("GET", self.gw, headers={
            "Accept": "application/json;as=PartialObjectMetadataList;g=meta.k8s.io;v=v1"})
        self.assertEqual(lst["kind"], "PartialObjectMetadataList")
        self.assertEqual(lst["items"][0]["metadata"], g["metadata"])
        self.assertNotIn("spec", lst["items"][0])

    def test_request_log(self):
        self.create_gw("a")
        self.srv.ok("DELETE", "/__control/requests")
        for i in range(2):
            self.srv.ok("PATCH", f"{self.gw}/a/status", {"status": {"n": i}}, "application/merge-patch+json")
        self.srv.ok("GET", f"{self.gw}?limit=1&labelSelector=x")
        log = self.srv.ok("GET", "/__control/requests")
        patches = [r for r in log if r["method"] == "PATCH" and r["path"].endswith("/status")]
        self.assertEqual(len(patches), 2)
        self.assertEqual(patches[0]["contentType"], "application/merge-patch+json")
        self.assertEqual(patches[0]["code"], 200)
        lst = [r for r in log if r["method"] == "GET"][-1]
        self.assertEqual(lst["params"], {"limit": "1", "labelSelector": "x"})
        self.assertEqual(lst["query"], "limit=1&labelSelector=x")
        self.assertFalse(any(r["path"].startswith("/__control") for r in log))
        self.srv.ok("DELETE", "/__control/requests")
        self.assertEqual(self.srv.ok("GET", "/__control/requests"), [])


class WatchTest(ServerCase):
    def test_watch_is_a_chunked_stream_of_json_lines(self):
        w = self.srv.watch(f"{self.gw}?watch=1&resourceVersion={self.srv.current_rv()}")
        self.assertEqual(w.status, 200)
        self.assertEqual(w.headers["transfer-encoding"], "chunked")
        self.assertEqual(w.headers["content-type"], "application/json")
        self.create_gw("a")
        ev = w.next()
        self.assertEqual(set(ev), {"type", "object"})
        self.assertEqual((ev["type"], ev["object"]["kind"]), ("ADDED", "Gateway"))
        w.close()

    def test_order_and_resume_from_resource_version(self):
        rv0 = self.srv.current_rv()
        a = self.create_gw("a")
        self.create_gw("b")
        self.srv.ok("PATCH", f"{self.gw}/a", {"spec": {"nodeCluster": "x"}}, "application/merge-patch+json")
        self.srv.ok("DELETE", f"{self.gw}/b")
        w = self.srv.watch(f"{self.gw}?watch=true&resourceVersion={rv0}&timeoutSeconds=30")
        evs = w.take(4)
        self.assertEqual(summary(evs), [("ADDED", "a"), ("ADDED", "b"), ("MODIFIED", "a"), ("DELETED", "b")])
        rvs = [int(e["object"]["metadata"]["resourceVersion"]) for e in evs]
        self.assertEqual(rvs, sorted(rvs))
        self.assertEqual(rvs[-1], self.srv.current_rv())  # DELETED carries the deletion's RV
        self.create_gw("c")  # live events follow the replay
        self.assertEqual(summary(w.take(1)), [("ADDED", "c")])
        w.close()
        w = self.srv.watch(f"{self.gw}?watch=true&resourceVersion={a['metadata']['resourceVersion']}")
        self.assertEqual(summary(w.take(4)), [("ADDED", "b"), ("MODIFIED", "a"), ("DELETED", "b"), ("ADDED", "c")])
        w.assert_quiet(self, 0.5)
        w.close()

    def test_other_namespaces_and_kinds_are_filtered(self):
        rv0 = self.srv.current_rv()
        self.srv.ok("POST", f"/api/v1/namespaces/{self.ns}/secrets", {"metadata": {"name": "s"}})
        self.srv.ok("POST", f"{CR}/namespaces/default/gateways", gateway(f"{self.ns}-elsewhere"))
        self.create_gw("mine")
        w = self.srv.watch(f"{self.gw}?watch=1&resourceVersion={rv0}")
        self.assertEqual(summary(w.take(1)), [("ADDED", "mine")])
        w.assert_quiet(self, 0.4)
        w.close()
        w = self.srv.watch(f"{CR}/gateways?watch=1&resourceVersion={rv0}")  # all namespaces
        self.assertEqual(summary(w.take(2)), [("ADDED", f"{self.ns}-elsewhere"), ("ADDED", "mine")])
        w.close()

    def test_initial_events_without_resource_version(self):
        self.create_gw("a")
        self.create_gw("b")
        self.srv.ok("PATCH", f"{self.gw}/a", {"spec": {"nodeCluster": "x"}}, "application/merge-patch+json")
        current = self.srv.ok("GET", self.gw)["items"]
        for i, q in enumerate(("watch=1", "watch=1&resourceVersion=0")):
            w = self.srv.watch(f"{self.gw}?{q}")
            initial = w.take(len(current))
            self.assertEqual([e["type"] for e in initial], ["ADDED"] * len(current))
            self.assertEqual([e["object"] for e in initial], current)  # the current state, as synthetic ADDEDs
            created = self.create_gw(f"c{i}")
            self.assertEqual(w.take(1)[0], {"type": "ADDED", "object": created})
            w.close()
            current.append(created)

    def test_send_initial_events(self):
        self.create_gw("a")
        w = self.srv.watch(f"{self.gw}?watch=true&sendInitialEvents=true&resourceVersionMatch=NotOlderThan"
                           "&allowWatchBookmarks=true&resourceVersion=")
        evs = w.take(2, skip_bookmarks=False)
        self.assertEqual(summary(evs), [("ADDED", "a"), ("BOOKMARK", None)])
        self.assertEqual(evs[1]["object"]["metadata"]["annotations"], {"k8s.io/initial-events-end": "true"})
        self.assertEqual(evs[1]["object"]["metadata"]["resourceVersion"], str(self.srv.current_rv()))
        w.close()
        self.assertStatus(self.srv.request("GET", f"{self.gw}?watch=true&sendInitialEvents=true"), 422, "Invalid")

    def test_label_selector_transitions(self):
        w = self.srv.watch(f"{self.gw}?watch=1&labelSelector=app%3Dweb&resourceVersion={self.srv.current_rv()}")
        self.create_gw("a")  # does not match: nothing
        self.srv.ok("PATCH", f"{self.gw}/a", {"metadata": {"labels": {"app": "web"}}}, "application/merge-patch+json")
        self.srv.ok("PATCH", f"{self.gw}/a", {"spec": {"nodeCluster": "z"}}, "application/merge-patch+json")
        last = self.srv.ok("PATCH", f"{self.gw}/a", {"metadata": {"labels": {"app": "api"}}},
                           "application/merge-patch+json")
        self.srv.ok("DELETE", f"{self.gw}/a")  # no longer matching: nothing
        self.create_gw("b", labels={"app": "web"})
        evs = w.take(4)
        self.assertEqual(summary(evs), [("ADDED", "a"), ("MODIFIED", "a"), ("DELETED", "a"), ("ADDED", "b")])
        # the DELETED for "stopped matching" carries the last matching state at the new RV
        self.assertEqual(evs[2]["object"]["metadata"]["labels"], {"app": "web"})
        self.assertEqual(evs[2]["object"]["metadata"]["resourceVersion"], last["metadata"]["resourceVersion"])
        w.assert_quiet(self, 0.4)
        w.close()

    def test_field_selector_on_watch(self):
        w = self.srv.watch(f"{self.gw}?watch=1&fieldSelector=metadata.name%3Db&resourceVersion={self.srv.current_rv()}")
        self.create_gw("a")
        self.create_gw("b")
        self.assertEqual(summary(w.take(1)), [("ADDED", "b")])
        w.close()

    def test_bookmarks(self):
        rv = self.srv.current_rv()
        w = self.srv.watch(f"{self.gw}?watch=1&allowWatchBookmarks=true&resourceVersion={rv}")
        t0 = time.monotonic()
        ev = w.next(5)
        self.assertLess(time.monotonic() - t0, 2)
        self.assertEqual(ev["type"], "BOOKMARK")
        self.assertEqual(ev["object"]["kind"], "Gateway")
        self.assertEqual(ev["object"]["apiVersion"], "tessera.dev/v1alpha1")
        self.assertEqual(ev["object"]["metadata"]["resourceVersion"], str(self.srv.current_rv()))
        # a write elsewhere moves the bookmark's RV on, with no event for this watch
        self.srv.ok("POST", f"/api/v1/namespaces/{self.ns}/secrets", {"metadata": {"name": "s"}})
        later = w.next(5)
        self.assertEqual(later["type"], "BOOKMARK")
        self.assertEqual(int(later["object"]["metadata"]["resourceVersion"]), self.srv.current_rv())
        w.close()
        w = self.srv.watch(f"{self.gw}?watch=1&resourceVersion={rv}")  # not asked for: none sent
        with self.assertRaises(socket.timeout):
            w.next(1)
        w.close()

    def test_timeout_seconds_ends_the_stream(self):
        t0 = time.monotonic()
        w = self.srv.watch(f"{self.gw}?watch=1&timeoutSeconds=1&resourceVersion={self.srv.current_rv()}")
        self.assertIsNone(w.next(5))  # clean end of the chunked stream
        self.assertLess(time.monotonic() - t0, 3)
        w.close()

    def test_410_after_compaction(self):
        old = self.create_gw("a")["metadata"]["resourceVersion"]
        self.create_gw("b")
        floor = self.srv.ok("POST", "/__control/compact")["compactedResourceVersion"]
        self.assertEqual(int(floor), self.srv.current_rv())
        w = self.srv.watch(f"{self.gw}?watch=1&resourceVersion={old}&allowWatchBookmarks=true")
        ev = w.next()
        self.assertEqual(ev["type"], "ERROR")
        self.assertEqual(ev["object"], {"kind": "Status", "apiVersion": "v1", "metadata": {}, "status": "Failure",
                                        "message": f"too old resource version: {old} ({floor})",
                                        "reason": "Expired", "code": 410})
        self.assertIsNone(w.next())  # and the stream ends
        w.close()
        w = self.srv.watch(f"{self.gw}?watch=1&resourceVersion={floor}")  # the floor itself is fine
        self.create_gw("c")
        self.assertEqual(summary(w.take(1)), [("ADDED", "c")])
        w.close()

    def test_drop_watches_closes_streams_abruptly(self):
        w = self.srv.watch(f"{self.gw}?watch=1&resourceVersion={self.srv.current_rv()}")
        for _ in range(50):
            if any(x["path"] == self.gw for x in self.srv.ok("GET", "/__control/watches")):
                break
            time.sleep(0.02)
        self.assertEqual(self.srv.ok("POST", "/__control/drop-watches")["dropped"], 1)
        with self.assertRaises(ConnectionError):
            w.next(5)
        w.close()
        for _ in range(50):
            if not self.srv.ok("GET", "/__control/watches"):
                break
            time.sleep(0.02)
        self.assertEqual(self.srv.ok("GET", "/__control/watches"), [])

    def test_expire_watches(self):
        w = self.srv.watch(f"{self.gw}?watch=1&resourceVersion={self.srv.current_rv()}")
        for _ in range(50):
            if self.srv.ok("GET", "/__control/watches"):
                break
            time.sleep(0.02)
        self.assertEqual(self.srv.ok("POST", "/__control/expire-watches")["expired"], 1)
        ev = w.next()
        self.assertEqual((ev["type"], ev["object"]["code"], ev["object"]["reason"]), ("ERROR", 410, "Expired"))
        self.assertIsNone(w.next())
        w.close()

    def test_client_disconnect_is_noticed(self):
        w = self.srv.watch(f"{self.gw}?watch=1&resourceVersion={self.srv.current_rv()}")
        for _ in range(50):
            if self.srv.ok("GET", "/__control/watches"):
                break
            time.sleep(0.02)
        w.close()
        deadline = time.monotonic() + 5
        while self.srv.ok("GET", "/__control/watches") and time.monotonic() < deadline:
            time.sleep(0.05)
        self.assertEqual(self.srv.ok("GET", "/__control/watches"), [])


class TokenTest(ServerCase):
    extra_args = ("--require-token", "--token", "sekrit")

    def setUp(self):
        pass

    def test_token_required(self):
        self.assertStatus(self.srv.request("GET", "/api/v1/namespaces"), 401, "Unauthorized")
        self.assertStatus(self.srv.request("GET", "/api/v1/namespaces", headers={"Authorization": "Bearer x"}),
                          401, "Unauthorized")
        code, lst, _ = self.srv.request("GET", "/api/v1/namespaces", headers={"Authorization": "Bearer sekrit"})
        self.assertEqual((code, lst["kind"]), (200, "NamespaceList"))
        with open(self.srv.kubeconfig) as f:
            self.assertIn("token: sekrit\n", f.read())
        self.assertEqual(self.srv.request("GET", "/healthz")[0], 200)


class RestartTest(unittest.TestCase):
    def setUp(self):
        self.tmp = tempfile.TemporaryDirectory(prefix="fake-apiserver-restart-")
        self.srv = FakeApiServer(self.tmp.name, "--bookmark-interval", "0.3")

    def tearDown(self):
        self.srv.stop()
        self.tmp.cleanup()

    def test_state_survives_restart(self):
        srv = self.srv.start()
        gw = f"{CR}/namespaces/default/gateways"
        a = srv.ok("POST", gw, gateway("a"))
        a = srv.ok("PATCH", f"{gw}/a", {"spec": {"nodeCluster": "z"}}, "application/merge-patch+json")
        a = srv.ok("PATCH", f"{gw}/a/status", {"status": {"ok": True}}, "application/merge-patch+json")
        s = srv.ok("POST", "/api/v1/namespaces/default/secrets", {"metadata": {"name": "s"}, "stringData": {"k": "v"}})
        srv.ok("POST", gw, gateway("gone"))
        srv.ok("DELETE", f"{gw}/gone")
        rv_before = srv.current_rv()
        mid_rv = a["metadata"]["resourceVersion"]
        with open(srv.state) as f:
            state = json.load(f)  # persisted after every write
        self.assertEqual(state["resourceVersion"], str(rv_before))
        self.assertEqual(srv.stop(), 0)  # SIGTERM exits cleanly

        srv.start()
        self.assertEqual(srv.ok("GET", f"{gw}/a"), a)  # same uid, RV, generation, status
        self.assertEqual(srv.ok("GET", "/api/v1/namespaces/default/secrets/s"), s)
        self.assertStatus404(srv.request("GET", f"{gw}/gone"))
        self.assertEqual(srv.current_rv(), rv_before)
        b = srv.ok("POST", gw, gateway("b"))
        self.assertEqual(int(b["metadata"]["resourceVersion"]), rv_before + 1)
        self.assertEqual(srv.ok("GET", gw)["metadata"]["resourceVersion"], str(rv_before + 1))
        # The event log is in memory only: a watch from before the restart gets
        # 410 (like a restarted API server's fresh watch cache) ...
        w = srv.watch(f"{gw}?watch=1&resourceVersion={mid_rv}")
        ev = w.next()
        self.assertEqual((ev["type"], ev["object"]["code"], ev["object"]["reason"]), ("ERROR", 410, "Expired"))
        self.assertEqual(ev["object"]["message"], f"too old resource version: {mid_rv} ({rv_before})")
        w.close()
        # ... while one from the RV current at restart resumes without a gap.
        w = srv.watch(f"{gw}?watch=1&resourceVersion={rv_before}")
        self.assertEqual(summary(w.take(1)), [("ADDED", "b")])
        w.close()

    def test_compaction_floor_is_persisted(self):
        srv = self.srv.start()
        gw = f"{CR}/namespaces/default/gateways"
        srv.ok("POST", gw, gateway("a"))
        floor = srv.ok("POST", "/__control/compact")["compactedResourceVersion"]
        self.assertEqual(srv.stop(), 0)
        with open(srv.state) as f:
            self.assertEqual(json.load(f)["compactedResourceVersion"], floor)
        srv.start()
        self.assertEqual(srv.ok("GET", "/__control/health")["compactedResourceVersion"], floor)

    def test_sigterm_with_open_watch(self):
        srv = self.srv.start()
        w = srv.watch("/apis/tessera.dev/v1alpha1/gateways?watch=1&allowWatchBookmarks=true")
        w.next()  # a bookmark: the stream is open
        t0 = time.monotonic()
        self.assertEqual(srv.stop(), 0)
        self.assertLess(time.monotonic() - t0, 5)
        w.close()

    def assertStatus404(self, resp):
        code, obj, _ = resp
        self.assertEqual((code, obj["kind"], obj["reason"]), (404, "Status", "NotFound"))


if __name__ == "__main__":
    unittest.main()
