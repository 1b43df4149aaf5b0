#!/usr/bin/env python3
"""Fake Kubernetes API server for Tessera's tests (no real kube-apiserver here).

Speaks enough of the real API for the Rust `kube` crate (client, Api::namespaced
/ Api::all, patch_status with server-side apply or merge patch, Api<Lease>,
kube-runtime watcher + reflector, discovery) and for kubectl, over plain HTTP on
127.0.0.1. Standard library only.

Usage:
    fake_apiserver.py --port 0 --port-file PATH --state FILE
                      [--kubeconfig-out PATH] [--host 127.0.0.1]
                      [--bookmark-interval 1.0] [--watch-timeout 1800]
                      [--token TOKEN] [--require-token]
                      [--no-namespace-lifecycle] [--max-events 100000]
With --port 0 the kernel picks the port; it is written to --port-file
(atomically) and printed as "READY <port>" once listening; --kubeconfig-out
(written before READY) gets a kubeconfig whose current context points at
http://127.0.0.1:PORT with a dummy bearer token. SIGTERM/SIGINT: exit 0.

Resources (all with the usual verbs; CRs and namespaces have /status):
    tessera.dev/v1alpha1   gateways backends backendsecuritypolicies routes
    v1                     secrets, namespaces (cluster-scoped)
    coordination.k8s.io/v1 leases
Discovery: /api, /api/v1, /apis, /apis/{group}, /apis/{group}/{version}, both
legacy and aggregated (Accept: ...;as=APIGroupDiscoveryList); /version,
/healthz, /readyz, /livez.

Storage (--state FILE): objects, the global resourceVersion counter and the
compaction floor are written to FILE (JSON, atomic replace) after every write
and loaded at start. The event log used by watches lives in memory only: after
a restart, the floor is raised to the resourceVersion the store was loaded at,
so a watch (or a continue token) from an older resourceVersion gets 410 Expired
-- exactly what a restarted real API server (fresh watch cache) does. A watch
from the resourceVersion current at restart resumes without a gap.

Semantics follow the real API server where it matters to a client:
  * one global, monotonically increasing resourceVersion; writes that change
    nothing (same object after the update/patch) are no-ops: no new RV, no event
  * CRs: generation starts at 1 and is bumped only when something other than
    metadata/status changes; status is dropped on create and ignored by writes
    to the main resource; /status writes change only status; PUT needs
    metadata.resourceVersion (422 without, 409 when stale)
  * Secrets/Leases/Namespaces: no generation; PUT without resourceVersion is an
    unconditional update; Secret stringData is folded into data (base64)
  * PATCH: merge-patch+json, json-patch+json (RFC 6902), apply-patch+yaml
    (server-side apply, JSON body, treated as a merge patch that creates the
    object when absent; needs fieldManager; force ignored; no field-ownership
    conflicts), strategic-merge-patch+json on built-in types only (as merge
    patch; on CRs 415 like the real server)
  * delete: 200 with a Success Status (what the real server answers for CRs,
    Secrets and Leases); an object with finalizers gets a deletionTimestamp
    instead (200 with the object) and goes when its last finalizer is removed;
    deleting a namespace (200 with it, Terminating) deletes everything in it
  * creating a namespaced object in a namespace that does not exist is 404
    (NamespaceLifecycle); default, kube-system, kube-public, kube-node-lease
    exist in a new store (--no-namespace-lifecycle turns the check off)
  * list: label/field selectors, limit/continue with consistent snapshots,
    resourceVersion/resourceVersionMatch (Exact served from the event log)
  * watch: chunked JSON lines; resume from resourceVersion N (410 ERROR event
    if N is below the compaction floor); resourceVersion ""/"0" or
    sendInitialEvents=true start with synthetic ADDED events; bookmarks after
    --bookmark-interval seconds of idleness; timeoutSeconds; selector-aware
    (an object that stops/starts matching yields DELETED/ADDED)
  * every error is a metav1 Status with the real code/reason/message form
  * Accept: ...;as=PartialObjectMetadata[List] gets meta.k8s.io/v1 partial
    objects (kube's get_metadata/list_metadata/metadata_watcher)
Not modelled: OpenAPI schema validation/pruning/defaulting of CRs (no
/openapi: use kubectl --validate=false), admission webhooks, SSA field
ownership/conflicts and managedFields, Table output, protobuf request bodies
(so `kubectl create secret` fails; `kubectl apply -f` works), RBAC, the
garbage collector (propagationPolicy is ignored: deletes are immediate unless
metadata.finalizers is non-empty).

Control API for tests (not recorded in the request log):
    GET    /__control/health        {"resourceVersion", "compactedResourceVersion"}
    POST   /__control/compact       floor := current RV (or ?resourceVersion=N)
    POST   /__control/drop-watches  close every open watch stream abruptly (no
                                    terminating chunk); clients re-watch
    POST   /__control/expire-watches  send every open watch an ERROR 410 Expired
                                    event and end it: forces clients to re-list
    GET    /__control/watches       the open watch streams
    GET    /__control/requests      every API request: method, path, query,
                                    params, contentType, code, watch, time
    DELETE /__control/requests      forget them
"""

import argparse
import base64
import bisect
import copy
import json
import os
import random
import re
import select
import signal
import socket
import sys
import threading
import time
import traceback
import uuid
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from urllib.parse import parse_qs, unquote, urlsplit

STATE_FORMAT = "tessera-fake-apiserver/v1"
K8S_VERSION = {"major": "1", "minor": "33"}
ALL_VERBS = ["create", "delete", "deletecollection", "get", "list", "patch", "update", "watch"]
STATUS_VERBS = ["get", "patch", "update"]
DEFAULT_NAMESPACES = ["default", "kube-node-lease", "kube-public", "kube-system"]

MERGE_PATCH = "application/merge-patch+json"
JSON_PATCH = "application/json-patch+json"
STRATEGIC_PATCH = "application/strategic-merge-patch+json"
APPLY_PATCH = "application/apply-patch+yaml"
AGGREGATED_V2 = "application/json;g=apidiscovery.k8s.io;v=v2;as=APIGroupDiscoveryList"
AGGREGATED_V2BETA1 = "application/json;g=apidiscovery.k8s.io;v=v2beta1;as=APIGroupDiscoveryList"

TRUE_STRINGS = {"1", "t", "T", "true", "TRUE", "True"}


# --------------------------------------------------------------------------
# Resource types


class ResourceType:
    def __init__(self, group, version, plural, kind, singular, namespaced,
                 status=False, generation=False, short_names=(), verbs=ALL_VERBS,
                 custom=False, extra_subresources=()):
        self.group = group
        self.version = version
        self.plural = plural
        self.kind = kind
        self.singular = singular
        self.namespaced = namespaced
        self.has_status = status
        self.generation = generation
        self.short_names = list(short_names)
        self.verbs = list(verbs)
        self.custom = custom
        self.extra_subresources = list(extra_subresources)  # (name, verbs)
        self.api_version = f"{group}/{version}" if group else version
        self.key = f"{self.api_version}/{plural}"
        self.qualified = f"{plural}.{group}" if group else plural
        self.qualified_kind = f"{kind}.{group}" if group else kind

    def subresources(self):
        subs = [("status", STATUS_VERBS)] if self.has_status else []
        return subs + self.extra_subresources


RESOURCES = [
    ResourceType("tessera.dev", "v1alpha1", "gateways", "Gateway", "gateway", True,
                 status=True, generation=True, short_names=["tgw"], custom=True),
    ResourceType("tessera.dev", "v1alpha1", "backends", "Backend", "backend", True,
                 status=True, generation=True, custom=True),
    ResourceType("tessera.dev", "v1alpha1", "backendsecuritypolicies", "BackendSecurityPolicy",
                 "backendsecuritypolicy", True, status=True, generation=True,
                 short_names=["bsp"], custom=True),
    ResourceType("tessera.dev", "v1alpha1", "routes", "Route", "route", True,
                 status=True, generation=True, custom=True),
    ResourceType("", "v1", "namespaces", "Namespace", "namespace", False, status=True,
                 short_names=["ns"], verbs=["create", "delete", "get", "list", "patch", "update", "watch"],
                 extra_subresources=[("finalize", ["update"])]),
    ResourceType("", "v1", "secrets", "Secret", "secret", True),
    ResourceType("coordination.k8s.io", "v1", "leases", "Lease", "lease", True),
]
BY_GVR = {(rt.group, rt.version, rt.plural): rt for rt in RESOURCES}
BY_KEY = {rt.key: rt for rt in RESOURCES}
NAMESPACES = BY_GVR[("", "v1", "namespaces")]
SECRETS = BY_GVR[("", "v1", "secrets")]
GROUP_VERSIONS = {}  # (group, version) -> [ResourceType]
for _rt in RESOURCES:
    GROUP_VERSIONS.setdefault((_rt.group, _rt.version), []).append(_rt)


# --------------------------------------------------------------------------
# Errors: every one is a metav1 Status


class ApiError(Exception):
    def __init__(self, code, reason, message, details=None):
        super().__init__(message)
        self.code = code
        self.reason = reason
        self.message = message
        self.details = details

    def status(self):
        return status_object(self.code, self.reason, self.message, self.details)


def status_object(code, reason, message, details=None):
    st = {"kind": "Status", "apiVersion": "v1", "metadata": {}, "status": "Failure",
          "message": message, "reason": reason}
    if details is not None:
        st["details"] = details
    st["code"] = code
    return st


def _details(rt, name, kind=None):
    d = {"name": name}
    if rt.group:
        d["group"] = rt.group
    d["kind"] = kind or rt.plural
    return d


def not_found(rt, name):
    return ApiError(404, "NotFound", f'{rt.qualified} "{name}" not found', _details(rt, name))


def generic_not_found():
    return ApiError(404, "NotFound", "the server could not find the requested resource", {})


def already_exists(rt, name):
    return ApiError(409, "AlreadyExists", f'{rt.qualified} "{name}" already exists', _details(rt, name))


def conflict(rt, name, why="the object has been modified; please apply your changes to the latest version and try again"):
    return ApiError(409, "Conflict", f'Operation cannot be fulfilled on {rt.qualified} "{name}": {why}',
                    _details(rt, name))


def bad_request(message):
    return ApiError(400, "BadRequest", message)


def invalid(rt, name, causes):
    """causes: [(field, message)] -> 422 Invalid, formatted like the real server."""
    parts = [f"{f}: {m}" if f else m for f, m in causes]
    joined = parts[0] if len(parts) == 1 else "[" + ", ".join(parts) + "]"
    details = _details(rt, name, kind=rt.kind)
    details["causes"] = [{"reason": "FieldValueInvalid", "message": m, "field": f} for f, m in causes]
    return ApiError(422, "Invalid", f'{rt.qualified_kind} "{name}" is invalid: {joined}', details)


def expired(message):
    return ApiError(410, "Expired", message)


def method_not_allowed():
    return ApiError(405, "MethodNotAllowed", "the server does not allow this method on the requested resource")


def unsupported_patch(rt=None):
    accepted = "application/json-patch+json, application/merge-patch+json, application/apply-patch+yaml"
    if rt is None or not rt.custom:
        accepted = accepted.replace("merge-patch+json, ", "merge-patch+json, application/strategic-merge-patch+json, ")
    return ApiError(415, "UnsupportedMediaType",
                    f"the body of the request was in an unknown format - accepted media types include: {accepted}")


# --------------------------------------------------------------------------
# Validation helpers

DNS1123_LABEL = re.compile(r"^[a-z0-9]([-a-z0-9]*[a-z0-9])?$")
DNS1123_SUBDOMAIN = re.compile(r"^[a-z0-9]([-a-z0-9]*[a-z0-9])?(\.[a-z0-9]([-a-z0-9]*[a-z0-9])?)*$")
QUALIFIED_NAME = re.compile(r"^([A-Za-z0-9][-A-Za-z0-9_.]*)?[A-Za-z0-9]$")
LABEL_VALUE = re.compile(r"^(([A-Za-z0-9][-A-Za-z0-9_.]*)?[A-Za-z0-9])?$")
SECRET_KEY = re.compile(r"^[-._a-zA-Z0-9]+$")


def qualified_name_error(key):
    if not isinstance(key, str) or not key:
        return "name part must be non-empty"
    prefix, _, name = key.rpartition("/")
    if "/" in key:
        if not prefix or len(prefix) > 253 or not DNS1123_SUBDOMAIN.match(prefix):
            return "prefix part must be a lowercase RFC 1123 subdomain"
    if not name or len(name) > 63 or not QUALIFIED_NAME.match(name):
        return ("name part must consist of alphanumeric characters, '-', '_' or '.', and must start "
                "and end with an alphanumeric character")
    return None


def label_value_error(value):
    if not isinstance(value, str):
        return "must be a string"
    if len(value) > 63 or not LABEL_VALUE.match(value):
        return ("a valid label must be an empty string or consist of alphanumeric characters, '-', '_' "
                "or '.', and must start and end with an alphanumeric character")
    return None


def validate_name(rt, name):
    if rt is NAMESPACES:
        ok = len(name) <= 63 and DNS1123_LABEL.match(name)
        what = "a lowercase RFC 1123 label must consist of lower case alphanumeric characters or '-', and must start and end with an alphanumeric character"
    else:
        ok = len(name) <= 253 and DNS1123_SUBDOMAIN.match(name)
        what = "a lowercase RFC 1123 subdomain must consist of lower case alphanumeric characters, '-' or '.', and must start and end with an alphanumeric character"
    if not ok:
        raise invalid(rt, name, [("metadata.name", f'Invalid value: "{name}": {what}')])


def validate_meta(rt, name, meta):
    causes = []
    labels = meta.get("labels")
    if labels is not None:
        if not isinstance(labels, dict):
            raise bad_request("json: cannot unmarshal metadata.labels into Go value of type map[string]string")
        for k, v in labels.items():
            if not isinstance(v, str):
                raise bad_request(f"json: cannot unmarshal label {k!r} into Go value of type string")
            err = qualified_name_error(k)
            if err:
                causes.append(("metadata.labels", f'Invalid value: "{k}": {err}'))
            err = label_value_error(v)
            if err:
                causes.append(("metadata.labels", f'Invalid value: "{v}": {err}'))
    annotations = meta.get("annotations")
    if annotations is not None:
        if not isinstance(annotations, dict) or not all(isinstance(v, str) for v in annotations.values()):
            raise bad_request("json: cannot unmarshal metadata.annotations into Go value of type map[string]string")
        for k in annotations:
            err = qualified_name_error(k)
            if err:
                causes.append(("metadata.annotations", f'Invalid value: "{k}": {err}'))
    finalizers = meta.get("finalizers")
    if finalizers is not None:
        if not isinstance(finalizers, list) or not all(isinstance(f, str) for f in finalizers):
            raise bad_request("json: cannot unmarshal metadata.finalizers into Go value of type []string")
        for f in finalizers:
            err = qualified_name_error(f)
            if err:
                causes.append(("metadata.finalizers", f'Invalid value: "{f}": {err}'))
    if causes:
        raise invalid(rt, name, causes)


def normalize_meta(meta):
    """Drop what Go's omitempty would drop from ObjectMeta."""
    for k in ("labels", "annotations", "finalizers", "ownerReferences", "managedFields"):
        if k in meta and not meta[k]:
            del meta[k]
    for k in ("selfLink", "generateName", "managedFields"):
        if k in meta and meta[k] in (None, ""):
            del meta[k]
    meta.pop("managedFields", None)
    meta.pop("selfLink", None)
    for k in [k for k, v in meta.items() if v is None]:
        del meta[k]


def now_rfc3339():
    return time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime())


def order_object(rt, obj):
    """apiVersion, kind, metadata first, like the real server's JSON."""
    out = {"apiVersion": rt.api_version, "kind": rt.kind, "metadata": obj.get("metadata", {})}
    for k, v in obj.items():
        if k not in out:
            out[k] = v
    return out


def check_body(rt, body, ns):
    """A request body as an object of type rt: kind/apiVersion checked and set,
    metadata a dict, namespace checked against the URL's and set."""
    if not isinstance(body, dict):
        raise bad_request(f"Object of type {type(body).__name__} is not a {rt.kind}")
    obj = copy.deepcopy(body)
    av, kind = obj.get("apiVersion"), obj.get("kind")
    if av and av != rt.api_version:
        raise bad_request(f"the API version in the data ({av}) does not match the expected API version ({rt.api_version})")
    if kind and kind != rt.kind:
        raise bad_request(f"the kind in the data ({kind}) does not match the expected kind ({rt.kind})")
    meta = obj.get("metadata")
    if meta is None:
        meta = obj["metadata"] = {}
    if not isinstance(meta, dict):
        raise bad_request("json: cannot unmarshal metadata into Go value of type v1.ObjectMeta")
    if rt.namespaced:
        mns = meta.get("namespace")
        if mns and ns and mns != ns:
            raise bad_request("the namespace of the provided object does not match the namespace sent on the request")
        meta["namespace"] = ns
    else:
        meta.pop("namespace", None)
    return order_object(rt, obj)


def b64(data):
    return base64.b64encode(data).decode("ascii")


def prepare_secret(rt, name, obj, old=None):
    data = obj.get("data")
    if data is not None and not isinstance(data, dict):
        raise bad_request("json: cannot unmarshal data into Go struct field Secret.data of type map[string][]uint8")
    out = {}
    for k, v in (data or {}).items():
        if v is None:
            v = ""
        if not isinstance(v, str):
            raise bad_request(f"json: cannot unmarshal data[{k!r}] into Go struct field Secret.data of type []uint8")
        try:
            out[k] = b64(base64.b64decode(v, validate=True))
        except (ValueError, TypeError):
            raise bad_request(f"illegal base64 data in Secret.data[{k!r}]")
    sd = obj.pop("stringData", None)
    if sd is not None:
        if not isinstance(sd, dict) or not all(isinstance(v, str) for v in sd.values()):
            raise bad_request("json: cannot unmarshal stringData into Go struct field Secret.stringData of type map[string]string")
        for k, v in sd.items():
            out[k] = b64(v.encode("utf-8"))
    causes = [(f"data[{k}]", f'Invalid value: "{k}": a valid config key must consist of alphanumeric characters, '
               "'-', '_' or '.'") for k in out if not SECRET_KEY.match(k)]
    if causes:
        raise invalid(rt, name, causes)
    if out:
        obj["data"] = out
    else:
        obj.pop("data", None)
    if not obj.get("type"):
        obj["type"] = "Opaque"
    if old is not None:
        if obj["type"] != old.get("type", "Opaque"):
            raise invalid(rt, name, [("type", f'Invalid value: "{obj["type"]}": field is immutable')])
        if old.get("immutable"):
            if obj.get("data") != old.get("data") or obj.get("immutable") is not True:
                raise invalid(rt, name, [("data", "Forbidden: field is immutable when `immutable` is set")])


# --------------------------------------------------------------------------
# Selectors


class Selector:
    def __init__(self, labels=(), fields=()):
        self.labels = list(labels)  # (key, op, [values])
        self.fields = list(fields)  # (field, op, value)

    def matches(self, rt, obj):
        meta = obj.get("metadata") or {}
        labels = meta.get("labels") or {}
        for key, op, vals in self.labels:
            has = key in labels
            v = labels.get(key)
            if op == "exists":
                ok = has
            elif op == "!":
                ok = not has
            elif op == "=":
                ok = has and v == vals[0]
            elif op == "!=":
                ok = not has or v != vals[0]
            elif op == "in":
                ok = has and v in vals
            elif op == "notin":
                ok = not has or v not in vals
            else:  # gt / lt
                try:
                    n = int(v) if has else None
                except ValueError:
                    n = None
                ok = n is not None and (n > int(vals[0]) if op == ">" else n < int(vals[0]))
            if not ok:
                return False
        for field, op, value in self.fields:
            actual = field_value(rt, obj, field)
            if (actual == value) != (op == "="):
                return False
        return True


def field_value(rt, obj, field):
    meta = obj.get("metadata") or {}
    if field == "metadata.name":
        return meta.get("name", "")
    if field == "metadata.namespace":
        return meta.get("namespace", "")
    if field == "type":
        return obj.get("type", "")
    if field == "status.phase":
        return (obj.get("status") or {}).get("phase", "")
    return ""


def split_top_level(s):
    parts, depth, cur = [], 0, []
    for ch in s:
        if ch == "(":
            depth += 1
        elif ch == ")":
            depth -= 1
        if ch == "," and depth == 0:
            parts.append("".join(cur))
            cur = []
        else:
            cur.append(ch)
    parts.append("".join(cur))
    return parts


LABEL_TERM = re.compile(r"^([^\s!=<>(),]+)\s*(.*)$", re.S)
SET_TERM = re.compile(r"^(in|notin)\s*\((.*)\)$", re.S)


def parse_label_selector(s):
    s = (s or "").strip()
    if not s:
        return []
    reqs = []
    for term in split_top_level(s):
        t = term.strip()
        if not t:
            raise bad_request(f"unable to parse requirement: found '', expected: !, identifier, or 'end of string' in {s!r}")
        if t.startswith("!"):
            key = t[1:].strip()
            _check_label_key(key, s)
            reqs.append((key, "!", []))
            continue
        m = LABEL_TERM.match(t)
        if not m:
            raise bad_request(f"unable to parse requirement: invalid label selector {s!r}")
        key, rest = m.group(1), m.group(2).strip()
        _check_label_key(key, s)
        if rest == "":
            reqs.append((key, "exists", []))
            continue
        sm = SET_TERM.match(rest)
        if sm:
            vals = [v.strip() for v in sm.group(2).split(",")]
            if sm.group(2).strip() == "":
                raise bad_request(f"unable to parse requirement: for 'in', 'notin' operators, values set can't be empty in {s!r}")
            for v in vals:
                _check_label_value(v, s)
            reqs.append((key, sm.group(1), vals))
            continue
        for op_text, op in (("==", "="), ("!=", "!="), ("=", "="), (">", ">"), ("<", "<")):
            if rest.startswith(op_text):
                value = rest[len(op_text):].strip()
                if op in (">", "<"):
                    if not re.match(r"^-?\d+$", value):
                        raise bad_request(f"unable to parse requirement: for 'Gt', 'Lt' operators, the value must be an integer in {s!r}")
                else:
                    _check_label_value(value, s)
                reqs.append((key, op, [value]))
                break
        else:
            raise bad_request(f"unable to parse requirement: found '{rest}', expected: in, notin, =, ==, !=, gt, lt in {s!r}")
    return reqs


def _check_label_key(key, s):
    err = qualified_name_error(key)
    if err:
        raise bad_request(f"unable to parse requirement: invalid label key \"{key}\": {err}")


def _check_label_value(value, s):
    if value and (" " in value or "(" in value or ")" in value):
        raise bad_request(f"unable to parse requirement: invalid label selector {s!r}")
    err = label_value_error(value)
    if err:
        raise bad_request(f"unable to parse requirement: invalid label value: \"{value}\": {err}")


def parse_field_selector(rt, s):
    s = (s or "").strip()
    if not s:
        return []
    supported = {"metadata.name", "metadata.namespace"}
    if rt is SECRETS:
        supported.add("type")
    if rt is NAMESPACES:
        supported.add("status.phase")
    reqs = []
    for term in s.split(","):
        t = term.strip()
        for op_text, op in (("!=", "!="), ("==", "="), ("=", "=")):
            i = t.find(op_text)
            if i > 0:
                field, value = t[:i].strip(), t[i + len(op_text):].strip()
                break
        else:
            raise bad_request(f"invalid selector: '{s}'; can't understand '{t}'")
        if field not in supported:
            raise bad_request(f'field label not supported: {field}')
        reqs.append((field, op, value))
    return reqs


# --------------------------------------------------------------------------
# Patches


class PatchError(Exception):
    pass


def merge_patch(target, patch):
    """RFC 7386 JSON merge patch (returns a new document)."""
    if not isinstance(patch, dict):
        return copy.deepcopy(patch)
    result = copy.deepcopy(target) if isinstance(target, dict) else {}
    for k, v in patch.items():
        if v is None:
            result.pop(k, None)
        else:
            result[k] = merge_patch(result.get(k), v)
    return result


def _pointer(path):
    if not isinstance(path, str):
        raise PatchError("path must be a string")
    if path == "":
        return []
    if not path.startswith("/"):
        raise PatchError(f"invalid JSON pointer {path!r}")
    return [p.replace("~1", "/").replace("~0", "~") for p in path[1:].split("/")]


def _index(container, token, for_add=False):
    if token == "-" and for_add:
        return len(container)
    if not re.match(r"^(0|[1-9]\d*)$", token):
        raise PatchError(f"invalid array index {token!r}")
    i = int(token)
    if i > len(container) or (i == len(container) and not for_add):
        raise PatchError(f"array index {i} out of bounds")
    return i


def _get(doc, path):
    cur = doc
    for tok in path:
        if isinstance(cur, dict):
            if tok not in cur:
                raise PatchError(f"doc is missing path: /{'/'.join(path)}")
            cur = cur[tok]
        elif isinstance(cur, list):
            cur = cur[_index(cur, tok)]
        else:
            raise PatchError(f"doc is missing path: /{'/'.join(path)}")
    return cur


def _add(doc, path, value):
    if not path:
        return value
    parent = _get(doc, path[:-1])
    last = path[-1]
    if isinstance(parent, dict):
        parent[last] = value
    elif isinstance(parent, list):
        parent.insert(_index(parent, last, for_add=True), value)
    else:
        raise PatchError(f"doc is missing path: /{'/'.join(path)}")
    return doc


def _remove(doc, path):
    if not path:
        raise PatchError("cannot remove the root")
    parent = _get(doc, path[:-1])
    last = path[-1]
    if isinstance(parent, dict):
        if last not in parent:
            raise PatchError(f"unable to remove nonexistent key: {last}: missing value")
        return parent.pop(last)
    if isinstance(parent, list):
        return parent.pop(_index(parent, last))
    raise PatchError(f"doc is missing path: /{'/'.join(path)}")


def json_patch(doc, ops):
    """RFC 6902 JSON patch (returns a new document)."""
    if not isinstance(ops, list):
        raise PatchError("json patch must be an array of operations")
    doc = copy.deepcopy(doc)
    for op in ops:
        if not isinstance(op, dict):
            raise PatchError("json patch operation must be an object")
        kind = op.get("op")
        path = _pointer(op.get("path"))
        if kind == "add":
            doc = _add(doc, path, copy.deepcopy(op.get("value")))
        elif kind == "remove":
            _remove(doc, path)
        elif kind == "replace":
            _get(doc, path)
            if path:
                _remove(doc, path)
            doc = _add(doc, path, copy.deepcopy(op.get("value")))
        elif kind == "move":
            src = _pointer(op.get("from"))
            value = _remove(doc, src)
            doc = _add(doc, path, value)
        elif kind == "copy":
            src = _pointer(op.get("from"))
            doc = _add(doc, path, copy.deepcopy(_get(doc, src)))
        elif kind == "test":
            if _get(doc, path) != op.get("value"):
                raise PatchError(f"testing value {op.get('path')} failed: test failed")
        else:
            raise PatchError(f"Unexpected kind: {kind}")
    return doc


# --------------------------------------------------------------------------
# The store


class LogEntry:
    __slots__ = ("rv", "rkey", "key", "type", "obj", "prev")

    def __init__(self, rv, rkey, key, type_, obj, prev):
        self.rv, self.rkey, self.key, self.type, self.obj, self.prev = rv, rkey, key, type_, obj, prev


class Watch:
    def __init__(self, wid, rt, ns, selector, conn, path, query):
        self.id = wid
        self.rt = rt
        self.ns = ns
        self.selector = selector
        self.conn = conn
        self.path = path
        self.query = query
        self.last_rv = 0
        self.dropped = False
        self.expire = False
        self.started = time.time()


def okey(rt, ns, name):
    return f"{ns}/{name}" if rt.namespaced else name


def with_rv(obj, rv):
    out = dict(obj)
    out["metadata"] = dict(obj.get("metadata") or {}, resourceVersion=str(rv))
    return out


def spec_part(obj):
    return {k: v for k, v in obj.items() if k not in ("metadata", "status", "apiVersion", "kind")}


class Store:
    """All objects, the global resourceVersion and the in-memory event log.
    Stored objects are never mutated in place: every write stores a new dict."""

    def __init__(self, path=None, namespace_lifecycle=True, max_events=100000):
        self.cond = threading.Condition(threading.RLock())
        self.path = path
        self.namespace_lifecycle = namespace_lifecycle
        self.max_events = max_events
        self.rv = 0
        self.floor = 0          # compaction floor: watches from RV < floor get 410
        self.log = []           # LogEntry, ascending rv
        self.log_rvs = []
        self.log_start = 0      # the log holds every event with rv > log_start
        self.objects = {rt.key: {} for rt in RESOURCES}
        self.watches = {}
        self._next_watch = 0
        if path and os.path.exists(path):
            self._load()
        else:
            for ns in DEFAULT_NAMESPACES:
                self.create(NAMESPACES, None, {"metadata": {"name": ns}})
            self._persist()

    # -- persistence ------------------------------------------------------
    def _load(self):
        with open(self.path, encoding="utf-8") as f:
            state = json.load(f)
        if state.get("format") != STATE_FORMAT:
            raise SystemExit(f"fake_apiserver: {self.path}: not a state file of format {STATE_FORMAT}")
        self.rv = int(state["resourceVersion"])
        for rkey, objs in state.get("objects", {}).items():
            rt = BY_KEY.get(rkey)
            if rt is None:
                continue
            for obj in objs:
                meta = obj["metadata"]
                self.objects[rkey][okey(rt, meta.get("namespace"), meta["name"])] = obj
        # The event log is not persisted: like a restarted API server's fresh
        # watch cache, nothing older than the RV at start can be replayed.
        self.floor = max(int(state.get("compactedResourceVersion", 0)), self.rv)
        self.log_start = self.rv

    def _persist(self):
        if not self.path:
            return
        state = {
            "format": STATE_FORMAT,
            "resourceVersion": str(self.rv),
            "compactedResourceVersion": str(self.floor),
            "objects": {rkey: [objs[k] for k in sorted(objs)] for rkey, objs in self.objects.items()},
        }
        write_atomic(self.path, json.dumps(state, indent=1, sort_keys=False) + "\n")

    # -- the write path ---------------------------------------------------
    def _commit(self, rt, key, type_, obj, prev):
        """obj already carries metadata.resourceVersion == self.rv."""
        if type_ == "DELETED":
            self.objects[rt.key].pop(key, None)
        else:
            self.objects[rt.key][key] = obj
        self.log.append(LogEntry(self.rv, rt.key, key, type_, obj, prev))
        self.log_rvs.append(self.rv)
        if self.max_events and len(self.log) > self.max_events:
            cut = len(self.log) - self.max_events
            self.log_start = self.log_rvs[cut - 1]
            self.floor = max(self.floor, self.log_start)
            del self.log[:cut]
            del self.log_rvs[:cut]
        self._persist()
        self.cond.notify_all()

    def _bump(self):
        self.rv += 1
        return self.rv

    def wait_for_rv(self, rv, seconds=3.0):
        """Like the watch cache: a request for a resourceVersion the store has
        not reached waits a little, then fails with 504 ResourceVersionTooLarge."""
        with self.cond:
            deadline = time.monotonic() + seconds
            while self.rv < rv and time.monotonic() < deadline:
                self.cond.wait(deadline - time.monotonic())
            if self.rv < rv:
                raise too_large(rv, self.rv)

    def compact(self, rv=None):
        with self.cond:
            target = self.rv if rv is None else min(int(rv), self.rv)
            self.floor = max(self.floor, target)
            self._persist()
            self.cond.notify_all()
            return self.floor

    # -- reads ------------------------------------------------------------
    def get(self, rt, ns, name):
        with self.cond:
            obj = self.objects[rt.key].get(okey(rt, ns, name))
            if obj is None:
                raise not_found(rt, name)
            return obj

    def _snapshot(self, rt, rv):
        """{key: obj} of rt as it was at resourceVersion rv (rv >= log_start)."""
        objs = dict(self.objects[rt.key])
        if rv >= self.rv:
            return objs
        i = len(self.log)
        while i > 0 and self.log_rvs[i - 1] > rv:
            i -= 1
            e = self.log[i]
            if e.rkey != rt.key:
                continue
            if e.type == "ADDED":
                objs.pop(e.key, None)
            else:
                objs[e.key] = e.prev
        return objs

    def list(self, rt, ns, params):
        sel = Selector(parse_label_selector(params.get("labelSelector")),
                       parse_field_selector(rt, params.get("fieldSelector")))
        try:
            limit = int(params.get("limit") or 0)
        except ValueError:
            raise bad_request(f"invalid limit: {params.get('limit')!r}")
        cont = params.get("continue") or ""
        rvp = params.get("resourceVersion") or ""
        rvm = params.get("resourceVersionMatch") or ""
        if rvm and rvm not in ("NotOlderThan", "Exact"):
            raise invalid_list(f'resourceVersionMatch: Unsupported value: "{rvm}": supported values: "Exact", "NotOlderThan"')
        if rvm and not rvp:
            raise invalid_list("resourceVersionMatch: Forbidden: resourceVersionMatch is forbidden unless resourceVersion is provided")
        if cont and rvp and rvp != "0":
            raise invalid_list("resourceVersion: Forbidden: specifying resource version is not allowed when using continue")
        if rvm == "Exact" and rvp == "0":
            raise invalid_list('resourceVersionMatch: Forbidden: resourceVersionMatch "exact" is forbidden for resourceVersion "0"')
        rv_req = parse_rv(rvp) if rvp else None
        start = ""
        with self.cond:
            if cont:
                rv, start = decode_continue(cont)
                if rv < self.floor or rv < self.log_start:
                    raise expired(
                        "The provided continue parameter is too old to display a consistent list result. You can "
                        "start a new list without the continue parameter, or use the continue token in this "
                        "response to retrieve the remainder of the results. Continuing with the provided token "
                        "results in an inconsistent list - objects that were created, modified, or deleted between "
                        "the time the first chunk was returned and now may show up in the list.")
            elif rvm == "Exact":
                rv = rv_req
                if rv < self.floor or rv < self.log_start:
                    raise expired(f"too old resource version: {rv} ({self.floor})")
            else:
                rv = None
            if rv_req and rv is None:
                self.wait_for_rv(rv_req)
            if rv is not None and rv > self.rv:
                raise too_large(rv, self.rv)
            if rv is None:
                rv = self.rv
            objs = self._snapshot(rt, rv)
        keys = sorted(k for k, o in objs.items()
                      if k >= start and (ns is None or o["metadata"].get("namespace") == ns) and sel.matches(rt, o))
        meta = {"resourceVersion": str(rv)}
        if limit > 0 and len(keys) > limit:
            page = keys[:limit]
            meta["continue"] = encode_continue(rv, page[-1] + "\x00")
            if not sel.labels and not sel.fields:
                meta["remainingItemCount"] = len(keys) - limit
        else:
            page = keys
        items = [objs[k] for k in page]
        if not rt.custom:  # typed lists omit apiVersion/kind on items
            items = [{k: v for k, v in o.items() if k not in ("apiVersion", "kind")} for o in items]
        return {"kind": rt.kind + "List", "apiVersion": rt.api_version, "metadata": meta, "items": items}

    # -- writes -----------------------------------------------------------
    def _check_namespace(self, ns):
        if self.namespace_lifecycle and ns not in self.objects[NAMESPACES.key]:
            raise ApiError(404, "NotFound", f'namespaces "{ns}" not found', {"name": ns, "kind": "namespaces"})
        nso = self.objects[NAMESPACES.key].get(ns)
        if nso is not None and (nso["metadata"].get("deletionTimestamp")):
            raise ApiError(403, "Forbidden", f"unable to create new content in namespace {ns} because it is being terminated",
                           {"name": ns, "kind": "namespaces"})

    def create(self, rt, ns, body, dry_run=False, from_apply=False):
        obj = check_body(rt, body, ns)
        meta = obj["metadata"]
        if from_apply:
            meta.pop("resourceVersion", None)
        with self.cond:
            name = meta.get("name") or ""
            if not name:
                gn = meta.get("generateName")
                if not gn:
                    raise invalid(rt, "", [("metadata.name", "Required value: name or generateName is required")])
                while True:
                    name = gn + "".join(random.choice("bcdfghjklmnpqrstvwxz2456789") for _ in range(5))
                    if okey(rt, ns, name) not in self.objects[rt.key]:
                        break
                meta["name"] = name
            validate_name(rt, name)
            validate_meta(rt, name, meta)
            if meta.get("resourceVersion"):
                raise ApiError(500, "InternalError",
                               "Internal error occurred: resourceVersion should not be set on objects to be created",
                               {"causes": [{"message": "resourceVersion should not be set on objects to be created"}]})
            if rt.namespaced:
                self._check_namespace(ns)
            key = okey(rt, ns, name)
            if key in self.objects[rt.key]:
                raise already_exists(rt, name)
            for k in ("uid", "creationTimestamp", "deletionTimestamp", "deletionGracePeriodSeconds",
                      "generation", "resourceVersion"):
                meta.pop(k, None)
            meta["uid"] = str(uuid.uuid4())
            meta["creationTimestamp"] = now_rfc3339()
            if rt.generation:
                meta["generation"] = 1
            if rt.custom and rt.has_status:
                obj.pop("status", None)
            if rt is SECRETS:
                prepare_secret(rt, name, obj)
            if rt is NAMESPACES:
                meta.setdefault("labels", {})["kubernetes.io/metadata.name"] = name
                obj["spec"] = {"finalizers": ["kubernetes"]}
                obj["status"] = {"phase": "Active"}
            normalize_meta(meta)
            if dry_run:
                return obj
            meta["resourceVersion"] = str(self._bump())
            self._commit(rt, key, "ADDED", obj, None)
            return obj

    def update(self, rt, ns, name, body, sub=None, dry_run=False):
        obj = check_body(rt, body, ns)
        meta = obj["metadata"]
        if meta.get("name") != name:
            raise bad_request(f"the name of the object ({meta.get('name') or ''}) does not match the name on the URL ({name})")
        with self.cond:
            key = okey(rt, ns, name)
            old = self.objects[rt.key].get(key)
            if old is None:
                raise not_found(rt, name)
            self._check_preconditions(rt, name, old, meta, unconditional_ok=not rt.custom)
            return self._update_locked(rt, key, old, obj, sub, dry_run)

    def _check_preconditions(self, rt, name, old, meta, unconditional_ok):
        om = old["metadata"]
        if meta.get("uid") and meta["uid"] != om["uid"]:
            raise conflict(rt, name, f"Precondition failed: UID in precondition: {meta['uid']}, UID in object meta: {om['uid']}")
        rv = meta.get("resourceVersion")
        if rv:
            if rv != om["resourceVersion"]:
                raise conflict(rt, name)
        elif not unconditional_ok:
            raise invalid(rt, name, [("metadata.resourceVersion", "Invalid value: 0x0: must be specified for an update")])

    def _update_locked(self, rt, key, old, obj, sub, dry_run):
        name = old["metadata"]["name"]
        om = old["metadata"]
        if sub == "finalize":  # namespaces/finalize: only spec.finalizers
            new = copy.deepcopy(old)
            new["spec"] = {"finalizers": list((obj.get("spec") or {}).get("finalizers") or [])}
        elif sub == "status":
            new = copy.deepcopy(old)
            if "status" in obj:
                new["status"] = copy.deepcopy(obj["status"])
            else:
                new.pop("status", None)
            if rt is NAMESPACES and not new.get("status"):
                new["status"] = {"phase": "Active"}
        else:
            new = copy.deepcopy(obj)
            nm = new["metadata"]
            validate_meta(rt, name, nm)
            for k in ("uid", "creationTimestamp", "deletionTimestamp", "deletionGracePeriodSeconds",
                      "generation", "name", "namespace"):
                if k in om:
                    nm[k] = om[k]
                else:
                    nm.pop(k, None)
            if rt.has_status:
                if "status" in old:
                    new["status"] = old["status"]
                else:
                    new.pop("status", None)
            if rt is SECRETS:
                prepare_secret(rt, name, new, old)
            if rt is NAMESPACES:
                new.setdefault("metadata", {}).setdefault("labels", {})["kubernetes.io/metadata.name"] = name
                if "spec" not in new:
                    new["spec"] = old.get("spec", {})
            if rt.generation and spec_part(new) != spec_part(old):
                nm["generation"] = om.get("generation", 0) + 1
            if om.get("deletionTimestamp"):
                added = [f for f in nm.get("finalizers") or [] if f not in (om.get("finalizers") or [])]
                if added:
                    raise invalid(rt, name, [("metadata.finalizers", "Forbidden: no new finalizers can be added if "
                                              f"the object is being deleted, found new finalizers {json.dumps(added)}")])
        normalize_meta(new["metadata"])
        new["metadata"]["resourceVersion"] = om["resourceVersion"]
        new = order_object(rt, new)
        if new == old:
            return old  # no-op: no new resourceVersion, no event
        if dry_run:
            return new
        rv = self._bump()
        if new["metadata"].get("deletionTimestamp") and not new["metadata"].get("finalizers"):
            final = with_rv(new, rv)
            self._commit(rt, key, "DELETED", final, old)
            return final
        new["metadata"]["resourceVersion"] = str(rv)
        self._commit(rt, key, "MODIFIED", new, old)
        return new

    def patch(self, rt, ns, name, raw, content_type, sub=None, params=None, dry_run=False):
        """Returns (object, http_code)."""
        params = params or {}
        ptype = (content_type or "").split(";")[0].strip().lower()
        if ptype not in (MERGE_PATCH, JSON_PATCH, STRATEGIC_PATCH, APPLY_PATCH):
            raise unsupported_patch(rt)
        if ptype == STRATEGIC_PATCH and rt.custom:
            raise unsupported_patch(rt)
        if ptype == APPLY_PATCH:
            if not params.get("fieldManager"):
                raise ApiError(422, "Invalid", 'PatchOptions.meta.k8s.io "" is invalid: fieldManager: Required value: '
                                               "is required for apply patch",
                               {"group": "meta.k8s.io", "kind": "PatchOptions",
                                "causes": [{"reason": "FieldValueRequired", "message": "Required value: is required for apply patch",
                                            "field": "fieldManager"}]})
        elif params.get("force") not in (None, ""):
            raise ApiError(422, "Invalid", 'PatchOptions.meta.k8s.io "" is invalid: force: Forbidden: may not be '
                                           "specified for non-apply patch",
                           {"group": "meta.k8s.io", "kind": "PatchOptions"})
        try:
            patch = json.loads(raw or b"null")
        except ValueError as e:
            if ptype == APPLY_PATCH:
                raise bad_request(f"error decoding YAML: this fake API server accepts apply patches as JSON only ({e})")
            raise bad_request(f"error decoding patch: {e}")
        if ptype == APPLY_PATCH:
            if not isinstance(patch, dict):
                raise bad_request("apply patch must be an object")
            av, kind = patch.get("apiVersion"), patch.get("kind")
            if not av or not kind:
                raise bad_request(f"invalid object type: {av or ''}, Kind={kind or ''}")
            if av != rt.api_version or kind != rt.kind:
                raise bad_request(f"the API version in the data ({av}) and kind ({kind}) do not match the "
                                  f"resource ({rt.api_version}, {rt.kind})")
            pm = patch.get("metadata") or {}
            if pm.get("name") and pm["name"] != name:
                raise bad_request(f"the name of the object ({pm['name']}) does not match the name on the URL ({name})")
            if pm.get("managedFields"):
                raise bad_request("metadata.managedFields must be nil")
        elif ptype in (MERGE_PATCH, STRATEGIC_PATCH) and not isinstance(patch, dict):
            raise bad_request("error decoding patch: a merge patch must be a JSON object")
        with self.cond:
            key = okey(rt, ns, name)
            old = self.objects[rt.key].get(key)
            if old is None:
                if ptype == APPLY_PATCH and sub is None:
                    body = copy.deepcopy(patch)
                    body.setdefault("metadata", {})["name"] = name
                    return self.create(rt, ns, body, dry_run=dry_run, from_apply=True), 201
                raise not_found(rt, name)
            try:
                if ptype == JSON_PATCH:
                    patched = json_patch(old, patch)
                else:
                    patched = merge_patch(old, patch)
            except PatchError as e:
                raise ApiError(422, "Invalid", str(e))
            if not isinstance(patched, dict):
                raise bad_request("the patched object is not a JSON object")
            pmeta = patched.get("metadata")
            if not isinstance(pmeta, dict):
                raise bad_request("the patched object has no metadata")
            if pmeta.get("name") != name:
                raise bad_request(f"the name of the object ({pmeta.get('name')}) does not match the name on the URL ({name})")
            if rt.namespaced and pmeta.get("namespace") != ns:
                raise bad_request("the namespace of the provided object does not match the namespace sent on the request")
            patched = check_body(rt, patched, ns)
            # a resourceVersion in the patch is a precondition, like in the real server
            self._check_preconditions(rt, name, old, patched["metadata"], unconditional_ok=True)
            return self._update_locked(rt, key, old, patched, sub, dry_run), 200

    def delete(self, rt, ns, name, options=None, dry_run=False):
        """Returns (response_body, http_code)."""
        options = options or {}
        with self.cond:
            key = okey(rt, ns, name)
            old = self.objects[rt.key].get(key)
            if old is None:
                raise not_found(rt, name)
            om = old["metadata"]
            pre = options.get("preconditions") or {}
            if pre.get("uid") and pre["uid"] != om["uid"]:
                raise conflict(rt, name, f"Precondition failed: UID in precondition: {pre['uid']}, UID in object meta: {om['uid']}")
            if pre.get("resourceVersion") and pre["resourceVersion"] != om["resourceVersion"]:
                raise conflict(rt, name, f"Precondition failed: ResourceVersion in precondition: {pre['resourceVersion']}, "
                                         f"ResourceVersion in object meta: {om['resourceVersion']}")
            return self._delete_locked(rt, key, old, dry_run)

    def _delete_locked(self, rt, key, old, dry_run):
        om = old["metadata"]
        if om.get("finalizers"):
            if om.get("deletionTimestamp"):
                return old, 200
            new = copy.deepcopy(old)
            new["metadata"]["deletionTimestamp"] = now_rfc3339()
            new["metadata"]["deletionGracePeriodSeconds"] = 0
            if rt.generation:
                new["metadata"]["generation"] = om.get("generation", 0) + 1
            if dry_run:
                return new, 200
            new["metadata"]["resourceVersion"] = str(self._bump())
            self._commit(rt, key, "MODIFIED", new, old)
            return new, 200
        if dry_run:
            return self._success(rt, old), 200
        final = with_rv(old, self._bump())
        if rt is NAMESPACES:
            final["metadata"]["deletionTimestamp"] = now_rfc3339()
            final["status"] = {"phase": "Terminating"}
        self._commit(rt, key, "DELETED", final, old)
        if rt is NAMESPACES:
            ns = om["name"]
            for other in RESOURCES:
                if not other.namespaced:
                    continue
                for k in sorted(k for k, o in self.objects[other.key].items() if o["metadata"].get("namespace") == ns):
                    o = self.objects[other.key][k]
                    self._commit(other, k, "DELETED", with_rv(o, self._bump()), o)
            return final, 200
        return self._success(rt, old), 200

    @staticmethod
    def _success(rt, old):
        details = _details(rt, old["metadata"]["name"])
        details["uid"] = old["metadata"]["uid"]
        return {"kind": "Status", "apiVersion": "v1", "metadata": {}, "status": "Success", "details": details}

    def delete_collection(self, rt, ns, params, dry_run=False):
        sel = Selector(parse_label_selector(params.get("labelSelector")),
                       parse_field_selector(rt, params.get("fieldSelector")))
        with self.cond:
            deleted = []
            for k in sorted(self.objects[rt.key]):
                o = self.objects[rt.key].get(k)
                if o is None or (ns is not None and o["metadata"].get("namespace") != ns) or not sel.matches(rt, o):
                    continue
                body, _ = self._delete_locked(rt, k, o, dry_run)
                deleted.append(body if body.get("kind") != "Status" else o)
            return {"kind": rt.kind + "List", "apiVersion": rt.api_version,
                    "metadata": {"resourceVersion": str(self.rv)}, "items": deleted}

    # -- watches ----------------------------------------------------------
    def add_watch(self, rt, ns, selector, conn, path, query):
        with self.cond:
            self._next_watch += 1
            w = Watch(self._next_watch, rt, ns, selector, conn, path, query)
            self.watches[w.id] = w
            return w

    def remove_watch(self, w):
        with self.cond:
            self.watches.pop(w.id, None)

    def drop_watches(self):
        with self.cond:
            ws = list(self.watches.values())
            for w in ws:
                w.dropped = True
            self.cond.notify_all()
        for w in ws:
            try:
                w.conn.shutdown(socket.SHUT_RDWR)
            except OSError:
                pass
        return len(ws)

    def expire_watches(self):
        with self.cond:
            for w in self.watches.values():
                w.expire = True
            self.cond.notify_all()
            return len(self.watches)

    def watch_events(self, w):
        """Events for w after w.last_rv (call with the lock held); advances
        w.last_rv to the current RV. None when w.last_rv is no longer covered
        by the log (the caller sends 410)."""
        if w.last_rv < self.log_start or w.expire:
            return None
        out = []
        i = bisect.bisect_right(self.log_rvs, w.last_rv)
        for e in self.log[i:]:
            if e.rkey != w.rt.key:
                continue
            obj = e.obj
            prev = e.prev
            if w.ns is not None and (obj or prev)["metadata"].get("namespace") != w.ns:
                continue
            sel = w.selector
            if e.type == "ADDED":
                if sel.matches(w.rt, obj):
                    out.append(("ADDED", obj))
            elif e.type == "DELETED":
                if sel.matches(w.rt, prev):
                    out.append(("DELETED", obj))
            else:
                now_m, was_m = sel.matches(w.rt, obj), sel.matches(w.rt, prev)
                if now_m and was_m:
                    out.append(("MODIFIED", obj))
                elif now_m:
                    out.append(("ADDED", obj))
                elif was_m:
                    out.append(("DELETED", with_rv(prev, e.rv)))
        w.last_rv = max(w.last_rv, self.rv)
        return out


def too_large(rv, current):
    return ApiError(504, "Timeout", f"Too large resource version: {rv}, current: {current}",
                    {"causes": [{"reason": "ResourceVersionTooLarge", "message": "Too large resource version"}],
                     "retryAfterSeconds": 1})


def invalid_list(message):
    return ApiError(422, "Invalid", f'ListOptions.meta.k8s.io "" is invalid: {message}',
                    {"group": "meta.k8s.io", "kind": "ListOptions"})


def parse_rv(value):
    try:
        n = int(value)
        if n < 0:
            raise ValueError
        return n
    except (TypeError, ValueError):
        raise bad_request(f'invalid resource version "{value}"')


def encode_continue(rv, start):
    raw = json.dumps({"v": "meta.k8s.io/v1", "rv": rv, "start": start}, separators=(",", ":"))
    return base64.urlsafe_b64encode(raw.encode()).decode().rstrip("=")


def decode_continue(token):
    try:
        raw = base64.urlsafe_b64decode(token + "=" * (-len(token) % 4))
        d = json.loads(raw)
        if d.get("v") != "meta.k8s.io/v1":
            raise ValueError
        return int(d["rv"]), str(d["start"])
    except (ValueError, KeyError, TypeError):
        raise bad_request("continue key is not valid: incorrect encoded start resourceVersion (version meta.k8s.io/v1)")


def write_atomic(path, text):
    d = os.path.dirname(os.path.abspath(path))
    tmp = os.path.join(d, f".{os.path.basename(path)}.{os.getpid()}.{threading.get_ident()}.tmp")
    with open(tmp, "w", encoding="utf-8") as f:
        f.write(text)
    os.replace(tmp, path)


# --------------------------------------------------------------------------
# Discovery documents


def partial_metadata(obj):
    return {"kind": "PartialObjectMetadata", "apiVersion": "meta.k8s.io/v1", "metadata": obj.get("metadata", {})}


def api_resource_list(group, version):
    resources = []
    for rt in GROUP_VERSIONS[(group, version)]:
        entry = {"name": rt.plural, "singularName": rt.singular, "namespaced": rt.namespaced,
                 "kind": rt.kind, "verbs": rt.verbs}
        if rt.short_names:
            entry["shortNames"] = rt.short_names
        resources.append(entry)
        for sub, verbs in rt.subresources():
            resources.append({"name": f"{rt.plural}/{sub}", "singularName": "", "namespaced": rt.namespaced,
                              "kind": rt.kind, "verbs": verbs})
    gv = f"{group}/{version}" if group else version
    return {"kind": "APIResourceList", "apiVersion": "v1", "groupVersion": gv, "resources": resources}


def api_groups():
    groups = {}
    for (group, version) in GROUP_VERSIONS:
        if group:
            groups.setdefault(group, []).append(version)
    out = []
    for group in sorted(groups):
        versions = [{"groupVersion": f"{group}/{v}", "version": v} for v in groups[group]]
        out.append({"name": group, "versions": versions, "preferredVersion": versions[0]})
    return out


def aggregated_discovery(core, api_version):
    by_group = {}
    for (group, version), rts in GROUP_VERSIONS.items():
        if (group == "") != core:
            continue
        resources = []
        for rt in rts:
            gvk = {"group": rt.group, "version": rt.version, "kind": rt.kind}
            r = {"resource": rt.plural, "responseKind": gvk,
                 "scope": "Namespaced" if rt.namespaced else "Cluster",
                 "singularResource": rt.singular, "verbs": rt.verbs}
            if rt.short_names:
                r["shortNames"] = rt.short_names
            subs = [{"subresource": s, "responseKind": gvk, "verbs": v} for s, v in rt.subresources()]
            if subs:
                r["subresources"] = subs
            resources.append(r)
        by_group.setdefault(group, []).append({"version": version, "resources": resources, "freshness": "Current"})
    items = []
    for group in sorted(by_group):
        meta = {"creationTimestamp": None}
        if group:
            meta["name"] = group
        items.append({"metadata": meta, "versions": by_group[group]})
    return {"kind": "APIGroupDiscoveryList", "apiVersion": api_version, "metadata": {}, "items": items}


# --------------------------------------------------------------------------
# HTTP


class Server(ThreadingHTTPServer):
    daemon_threads = True
    allow_reuse_address = True
    request_queue_size = 256

    def __init__(self, address, store, args):
        super().__init__(address, Handler)
        self.store = store
        self.args = args
        self.requests = []
        self.requests_lock = threading.Lock()
        self.stopping = False

    def handle_error(self, request, client_address):
        exc = sys.exc_info()[1]
        if isinstance(exc, (ConnectionError, OSError)):
            return
        print(f"fake_apiserver: error serving {client_address}: {exc!r}", file=sys.stderr)


class Handler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"
    disable_nagle_algorithm = True
    server_version = "tessera-fake-apiserver"
    sys_version = ""

    def log_message(self, format, *args):
        pass

    def do_GET(self):
        self._handle("GET")

    def do_POST(self):
        self._handle("POST")

    def do_PUT(self):
        self._handle("PUT")

    def do_PATCH(self):
        self._handle("PATCH")

    def do_DELETE(self):
        self._handle("DELETE")

    # -- plumbing ---------------------------------------------------------
    def _read_body(self):
        if "chunked" in self.headers.get("Transfer-Encoding", "").lower():
            chunks = []
            while True:
                size = int(self.rfile.readline().split(b";")[0].strip() or b"0", 16)
                if size == 0:
                    while self.rfile.readline() not in (b"\r\n", b"\n", b""):
                        pass
                    return b"".join(chunks)
                chunks.append(self.rfile.read(size))
                self.rfile.readline()
        n = int(self.headers.get("Content-Length") or 0)
        return self.rfile.read(n) if n else b""

    def _send(self, code, body, content_type="application/json", extra=()):
        if self._entry is not None:
            self._entry["code"] = code
        self.send_response(code)
        self.send_header("Content-Type", content_type)
        self.send_header("Content-Length", str(len(body)))
        self.send_header("Cache-Control", "no-cache, private")
        for k, v in extra:
            self.send_header(k, v)
        self.end_headers()
        self.wfile.write(body)

    def _send_json(self, code, obj, content_type="application/json", extra=()):
        self._send(code, json.dumps(obj, separators=(",", ":")).encode(), content_type, extra)

    def _handle(self, method):
        self._entry = None
        self._meta_only = False
        url = urlsplit(self.path)
        path = unquote(url.path)
        params = {k: v[-1] for k, v in parse_qs(url.query, keep_blank_values=True).items()}
        try:
            body = self._read_body()
        except (ValueError, OSError):
            self.close_connection = True
            return
        try:
            if path.startswith("/__control/"):
                return self._control(method, path, params)
            self._entry = {"method": method, "path": path, "query": url.query, "params": params,
                           "contentType": self.headers.get("Content-Type"), "code": None,
                           "watch": False, "time": time.time()}
            with self.server.requests_lock:
                self.server.requests.append(self._entry)
            args = self.server.args
            if args.require_token and path not in ("/healthz", "/readyz", "/livez") and \
                    self.headers.get("Authorization") != f"Bearer {args.token}":
                raise ApiError(401, "Unauthorized", "Unauthorized")
            self._route(method, path, params, body)
        except ApiError as e:
            self._send_json(e.code, e.status())
        except (BrokenPipeError, ConnectionResetError):
            self.close_connection = True
        except Exception as e:  # a bug here: say so, like the real server's 500
            traceback.print_exc()
            try:
                self._send_json(500, status_object(500, "InternalError", f"Internal error occurred: {e!r}"))
            except OSError:
                self.close_connection = True

    def _json_body(self, body):
        ctype = (self.headers.get("Content-Type") or "application/json").split(";")[0].strip().lower()
        if body and ctype not in ("application/json", "application/yaml", "text/plain", "*/*"):
            raise ApiError(415, "UnsupportedMediaType",
                           f"the body of the request was in an unknown format - accepted media types include: "
                           f"application/json, application/yaml (this fake API server: JSON only; got {ctype})")
        try:
            return json.loads(body) if body else None
        except ValueError as e:
            raise bad_request(f"couldn't get version/kind; json parse error: {e}")

    # -- control API ------------------------------------------------------
    def _control(self, method, path, params):
        store = self.server.store
        name = path[len("/__control/"):].strip("/")
        if name == "health" and method == "GET":
            with store.cond:
                return self._send_json(200, {"resourceVersion": str(store.rv),
                                             "compactedResourceVersion": str(store.floor)})
        if name == "compact" and method == "POST":
            rv = params.get("resourceVersion")
            floor = store.compact(parse_rv(rv) if rv else None)
            return self._send_json(200, {"compactedResourceVersion": str(floor)})
        if name == "drop-watches" and method == "POST":
            return self._send_json(200, {"dropped": store.drop_watches()})
        if name == "expire-watches" and method == "POST":
            return self._send_json(200, {"expired": store.expire_watches()})
        if name == "watches" and method == "GET":
            with store.cond:
                ws = [{"id": w.id, "resource": w.rt.key, "namespace": w.ns, "path": w.path, "query": w.query,
                       "resourceVersion": str(w.last_rv), "started": w.started} for w in store.watches.values()]
            return self._send_json(200, ws)
        if name == "requests" and method == "GET":
            with self.server.requests_lock:
                reqs = list(self.server.requests)
            return self._send_json(200, reqs)
        if name == "requests" and method == "DELETE":
            with self.server.requests_lock:
                self.server.requests.clear()
            return self._send_json(200, {})
        raise generic_not_found()

    # -- routing ----------------------------------------------------------
    def _route(self, method, path, params, body):
        accept = self.headers.get("Accept", "")
        if path in ("/healthz", "/readyz", "/livez"):
            return self._send(200, b"ok", "text/plain; charset=utf-8")
        if path == "/version":
            info = dict(K8S_VERSION, gitVersion=f"v{K8S_VERSION['major']}.{K8S_VERSION['minor']}.0",
                        gitCommit="0000000000000000000000000000000000000000", gitTreeState="clean",
                        buildDate="2025-01-01T00:00:00Z", goVersion="go1.24.0", compiler="gc",
                        platform="linux/amd64")
            return self._send_json(200, info)
        if path in ("/api", "/apis"):
            if method != "GET":
                raise method_not_allowed()
            if "as=APIGroupDiscoveryList" in accept:
                beta = "v=v2;" not in accept.replace(" ", "")
                ct = AGGREGATED_V2BETA1 if beta else AGGREGATED_V2
                av = "apidiscovery.k8s.io/v2beta1" if beta else "apidiscovery.k8s.io/v2"
                return self._send_json(200, aggregated_discovery(path == "/api", av), ct, [("Vary", "Accept")])
            if path == "/api":
                host, port = self.server.server_address[:2]
                return self._send_json(200, {"kind": "APIVersions", "versions": ["v1"],
                                             "serverAddressByClientCIDRs": [{"clientCIDR": "0.0.0.0/0",
                                                                             "serverAddress": f"{host}:{port}"}]},
                                       extra=[("Vary", "Accept")])
            return self._send_json(200, {"kind": "APIGroupList", "apiVersion": "v1", "groups": api_groups()},
                                   extra=[("Vary", "Accept")])
        parts = [p for p in path.split("/") if p]
        if len(parts) >= 2 and parts[0] == "api":
            group, version, rest = "", parts[1], parts[2:]
        elif len(parts) == 2 and parts[0] == "apis":
            for g in api_groups():
                if g["name"] == parts[1]:
                    return self._send_json(200, dict({"kind": "APIGroup", "apiVersion": "v1"}, **g))
            raise generic_not_found()
        elif len(parts) >= 3 and parts[0] == "apis":
            group, version, rest = parts[1], parts[2], parts[3:]
        else:
            raise generic_not_found()
        if (group, version) not in GROUP_VERSIONS:
            raise generic_not_found()
        if not rest:
            if method != "GET":
                raise method_not_allowed()
            return self._send_json(200, api_resource_list(group, version))
        watch = params.get("watch") in TRUE_STRINGS
        if rest[0] == "watch":  # the deprecated /watch/ path prefix
            watch, rest = True, rest[1:]
        ns = None
        if rest and rest[0] == "namespaces" and len(rest) >= 3 and not (
                len(rest) == 3 and rest[2] in ("status", "finalize")):
            ns, rest = rest[1], rest[2:]
        if not rest:
            raise generic_not_found()
        rt = BY_GVR.get((group, version, rest[0]))
        if rt is None or (ns is not None and not rt.namespaced):
            raise generic_not_found()
        tail = rest[1:]
        if len(tail) > 2:
            raise generic_not_found()
        name = tail[0] if tail else None
        sub = tail[1] if len(tail) > 1 else None
        if name is not None and rt.namespaced and ns is None:
            raise generic_not_found()
        if sub is not None and sub not in [s for s, _ in rt.subresources()]:
            raise generic_not_found()
        store = self.server.store
        self._meta_only = "as=PartialObjectMetadata" in self.headers.get("Accept", "")
        dry_run = bool(params.get("dryRun"))
        if name is None:
            if method == "GET":
                if watch:
                    return self._watch(rt, ns, params, path)
                return self._send_json(200, self._present(store.list(rt, ns, params)))
            if method == "POST":
                if rt.namespaced and ns is None:
                    raise method_not_allowed()
                obj = store.create(rt, ns, self._json_body(body), dry_run=dry_run)
                return self._send_json(201, self._present(obj))
            if method == "DELETE" and "deletecollection" in rt.verbs:
                return self._send_json(200, self._present(store.delete_collection(rt, ns, params, dry_run=dry_run)))
            raise method_not_allowed()
        if sub == "finalize" and method != "PUT":
            raise method_not_allowed()
        if method == "GET":
            return self._send_json(200, self._present(store.get(rt, ns, name)))
        if method == "PUT":
            return self._send_json(200, self._present(store.update(rt, ns, name, self._json_body(body), sub, dry_run)))
        if method == "PATCH":
            obj, code = store.patch(rt, ns, name, body, self.headers.get("Content-Type"), sub, params, dry_run)
            return self._send_json(code, self._present(obj))
        if method == "DELETE" and sub is None:
            options = self._json_body(body) or {}
            if not isinstance(options, dict):
                raise bad_request("DeleteOptions must be an object")
            obj, code = store.delete(rt, ns, name, options, dry_run)
            return self._send_json(code, self._present(obj))
        raise method_not_allowed()

    def _present(self, obj):
        """Objects as the client asked for them: whole, or as meta.k8s.io/v1
        PartialObjectMetadata (kube's *_metadata calls and metadata_watcher)."""
        if not self._meta_only or obj.get("kind") == "Status":
            return obj
        if "items" in obj and obj.get("kind", "").endswith("List"):
            return {"kind": "PartialObjectMetadataList", "apiVersion": "meta.k8s.io/v1", "metadata": obj["metadata"],
                    "items": [partial_metadata(i) for i in obj["items"]]}
        return partial_metadata(obj)

    # -- watch ------------------------------------------------------------
    def _watch(self, rt, ns, params, path):
        store = self.server.store
        args = self.server.args
        sel = Selector(parse_label_selector(params.get("labelSelector")),
                       parse_field_selector(rt, params.get("fieldSelector")))
        rvp = params.get("resourceVersion") or ""
        rvm = params.get("resourceVersionMatch") or ""
        initial = params.get("sendInitialEvents") in TRUE_STRINGS
        bookmarks = params.get("allowWatchBookmarks") in TRUE_STRINGS
        if initial:
            if rvm != "NotOlderThan":
                raise invalid_list("resourceVersionMatch: Forbidden: sendInitialEvents requires setting "
                                   "resourceVersionMatch to NotOlderThan")
            if not bookmarks:
                raise invalid_list("allowWatchBookmarks: Forbidden: sendInitialEvents requires setting "
                                   "allowWatchBookmarks to true")
        elif rvm:
            raise invalid_list("resourceVersionMatch: Forbidden: resourceVersionMatch is forbidden for watch "
                               "unless sendInitialEvents is provided")
        rv_req = parse_rv(rvp) if rvp else None
        if rv_req and not initial:
            store.wait_for_rv(rv_req)
        try:
            timeout = float(params.get("timeoutSeconds") or args.watch_timeout)
        except ValueError:
            raise bad_request(f"invalid timeoutSeconds: {params.get('timeoutSeconds')!r}")
        self._entry["watch"] = True
        self._entry["code"] = 200
        self.send_response(200)
        self.send_header("Content-Type", "application/json")
        self.send_header("Transfer-Encoding", "chunked")
        self.send_header("Cache-Control", "no-cache, private")
        self.end_headers()
        w = store.add_watch(rt, ns, sel, self.connection, path, self.path.partition("?")[2])
        try:
            self._watch_loop(store, w, rt, sel, rv_req, initial, bookmarks, timeout)
        except OSError:
            self.close_connection = True
        except Exception:  # a bug: the headers are out, so no Status; cut the stream
            traceback.print_exc()
            self.close_connection = True
        finally:
            store.remove_watch(w)

    def _chunk(self, event):
        data = json.dumps(event, separators=(",", ":")).encode() + b"\n"
        self.wfile.write(b"%x\r\n%s\r\n" % (len(data), data))

    def _bookmark(self, rt, rv, initial_end=False):
        meta = {"resourceVersion": str(rv), "creationTimestamp": None}
        if initial_end:
            meta["annotations"] = {"k8s.io/initial-events-end": "true"}
        if self._meta_only:
            return {"type": "BOOKMARK", "object": partial_metadata({"metadata": meta})}
        return {"type": "BOOKMARK", "object": {"kind": rt.kind, "apiVersion": rt.api_version, "metadata": meta}}

    def _client_gone(self):
        try:
            r, _, _ = select.select([self.connection], [], [], 0)
            return bool(r) and self.connection.recv(1, socket.MSG_PEEK) == b""
        except OSError:
            return True

    def _watch_loop(self, store, w, rt, sel, rv_req, initial, bookmarks, timeout):
        interval = self.server.args.bookmark_interval
        deadline = time.monotonic() + timeout
        out = []
        too_old = False
        with store.cond:
            if rv_req in (None, 0) or initial:
                objs = store.objects[rt.key]
                for k in sorted(objs):
                    o = objs[k]
                    if (w.ns is None or o["metadata"].get("namespace") == w.ns) and sel.matches(rt, o):
                        out.append({"type": "ADDED", "object": self._present(o)})
                w.last_rv = store.rv
                if initial:
                    out.append(self._bookmark(rt, store.rv, initial_end=True))
            elif rv_req < store.floor or rv_req < store.log_start:
                out.append({"type": "ERROR", "object": expired(
                    f"too old resource version: {rv_req} ({max(store.floor, store.log_start)})").status()})
                too_old = True  # the stream ends (cleanly) after the error
            else:
                w.last_rv = rv_req
        for ev in out:
            self._chunk(ev)
        last_send = time.monotonic()
        if too_old:
            self.wfile.write(b"0\r\n\r\n")
            return
        while True:
            events, mark, gone = None, None, False
            with store.cond:
                while True:
                    if w.dropped or self.server.stopping:
                        break
                    events = store.watch_events(w)
                    if events is None or events:
                        break
                    now = time.monotonic()
                    if now >= deadline:
                        break
                    if bookmarks and now - last_send >= interval:
                        mark = w.last_rv
                        break
                    wait = min(deadline - now, 1.0)
                    if bookmarks:
                        wait = min(wait, last_send + interval - now)
                    store.cond.wait(max(wait, 0.01))
                    if self._client_gone():
                        gone = True
                        break
            if gone:
                self.close_connection = True
                return
            if w.dropped or self.server.stopping:
                self.close_connection = True  # abrupt: no terminating chunk
                try:
                    self.connection.shutdown(socket.SHUT_RDWR)
                except OSError:
                    pass
                return
            if events is None:
                with store.cond:
                    floor = max(store.floor, store.log_start, w.last_rv + 1 if w.expire else 0)
                self._chunk({"type": "ERROR", "object": expired(
                    f"too old resource version: {w.last_rv} ({floor})").status()})
                self.wfile.write(b"0\r\n\r\n")
                return
            if events:
                for type_, obj in events:
                    self._chunk({"type": type_, "object": self._present(obj)})
                last_send = time.monotonic()
            elif mark is not None:
                self._chunk(self._bookmark(rt, mark))
                last_send = time.monotonic()
            if time.monotonic() >= deadline:
                self.wfile.write(b"0\r\n\r\n")
                return


# --------------------------------------------------------------------------
# Main


def kubeconfig_text(host, port, token):
    return (
        "apiVersion: v1\n"
        "kind: Config\n"
        "clusters:\n"
        "- name: tessera-fake\n"
        "  cluster:\n"
        f"    server: http://{host}:{port}\n"
        "users:\n"
        "- name: tessera-fake\n"
        "  user:\n"
        f"    token: {token}\n"
        "contexts:\n"
        "- name: tessera-fake\n"
        "  context:\n"
        "    cluster: tessera-fake\n"
        "    user: tessera-fake\n"
        "    namespace: default\n"
        "current-context: tessera-fake\n"
        "preferences: {}\n"
    )


def main(argv=None):
    p = argparse.ArgumentParser(description="Fake Kubernetes API server for Tessera's tests")
    p.add_argument("--host", default="127.0.0.1")
    p.add_argument("--port", type=int, default=0)
    p.add_argument("--port-file")
    p.add_argument("--state", help="JSON file the store is persisted to and loaded from")
    p.add_argument("--kubeconfig-out")
    p.add_argument("--token", default="tessera-fake-token", help="bearer token written to the kubeconfig")
    p.add_argument("--require-token", action="store_true", help="answer 401 to requests without that token")
    p.add_argument("--bookmark-interval", type=float, default=1.0,
                   help="seconds of idleness after which a watch with allowWatchBookmarks gets a BOOKMARK")
    p.add_argument("--watch-timeout", type=float, default=1800.0,
                   help="watch duration when the request has no timeoutSeconds")
    p.add_argument("--max-events", type=int, default=100000,
                   help="event log length; older events are compacted away (0: unbounded)")
    p.add_argument("--no-namespace-lifecycle", action="store_true",
                   help="allow creating objects in namespaces that do not exist")
    args = p.parse_args(argv)

    store = Store(args.state, namespace_lifecycle=not args.no_namespace_lifecycle, max_events=args.max_events)
    server = Server((args.host, args.port), store, args)
    port = server.server_address[1]
    if args.kubeconfig_out:
        write_atomic(args.kubeconfig_out, kubeconfig_text(args.host, port, args.token))
    if args.port_file:
        write_atomic(args.port_file, f"{port}\n")

    stop = threading.Event()
    signal.signal(signal.SIGTERM, lambda *_: stop.set())
    signal.signal(signal.SIGINT, lambda *_: stop.set())
    thread = threading.Thread(target=server.serve_forever, kwargs={"poll_interval": 0.1}, daemon=True)
    thread.start()
    print(f"READY {port}", flush=True)
    while not stop.wait(0.5):
        pass
    server.stopping = True
    store.drop_watches()
    server.shutdown()
    server.server_close()
    return 0


if __name__ == "__main__":
    sys.exit(main())
