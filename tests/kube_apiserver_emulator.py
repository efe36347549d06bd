"""A small Kubernetes API-server emulator on loopback, for the picker's Kubernetes tests.

Why this module exists: no kube-apiserver can run here, and the picker's watchers must be tested against the
HTTP behaviour they rely on, not against mocks of the client library. ``kmock`` was evaluated and does not
track resource versions (it answers ``resourceVersion: "..."``), label selectors, watch timeouts or 410 Gone,
so this emulator implements exactly that subset of the API server's contract, over real HTTP (aiohttp):

- **list** ``GET /api/v1/namespaces/{ns}/pods`` and ``GET /apis/{group}/{version}/namespaces/{ns}/{plural}``:
  a ``...List`` with ``metadata.resourceVersion`` (the store's current version);
- **watch** (``?watch=true``): chunked JSON lines ``{"type": ADDED|MODIFIED|DELETED|BOOKMARK|ERROR,
  "object": ...}``. Without ``resourceVersion`` (or ``0``) it starts with synthetic ADDED events for what
  exists; with one it replays the recorded history after it; a version older than the compaction horizon
  (:meth:`KubeApiEmulator.compact`) yields an ERROR event with a 410 ``Expired`` Status and the stream ends,
  as the real server does. ``timeoutSeconds`` ends the stream cleanly; ``allowWatchBookmarks`` enables
  :meth:`KubeApiEmulator.bookmark`;
- **labelSelector** (``k=v``, ``k==v``, ``k!=v``, ``k in (a,b)``, ``k notin (a,b)``, ``k``, ``!k``) and
  **fieldSelector** ``metadata.name=`` / ``metadata.namespace=`` on lists and watches. An object that stops
  matching a watch's selector is sent as DELETED, one that starts matching as ADDED (watch-cache semantics);
- **get / create / replace / delete** of single objects with optimistic concurrency (``PUT`` with a stale
  ``metadata.resourceVersion`` -> 409 Conflict; ``POST`` of an existing name -> 409 AlreadyExists) — enough
  for ``coordination.k8s.io/v1`` Leases;
- **dropped connections** (:meth:`KubeApiEmulator.drop_watches` aborts every open watch mid-stream),
  injected failures (:meth:`KubeApiEmulator.fail_requests`), 404 for kinds whose CRD is not installed, and
  bearer-token authentication (401 without the token written to the kubeconfig).

Everything the tests mutate goes through :meth:`create` / :meth:`replace` / :meth:`delete` on the emulator's
event loop; :class:`BackgroundEmulator` runs it on its own thread for tests that drive processes.
"""

from __future__ import annotations

import asyncio
import copy
import datetime
import itertools
import re
import threading
import urllib.parse
import uuid
from collections.abc import Callable, Coroutine, Iterable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, TypeVar

import orjson
import yaml
from aiohttp import web

T = TypeVar("T")

POD = ("", "v1", "pods")
LEASE = ("coordination.k8s.io", "v1", "leases")
POOL_V1 = ("inference.networking.k8s.io", "v1", "inferencepools")
POOL_V1ALPHA2 = ("inference.networking.x-k8s.io", "v1alpha2", "inferencepools")
OBJECTIVE = ("inference.networking.x-k8s.io", "v1alpha2", "inferenceobjectives")
MODEL_REWRITE = ("inference.networking.x-k8s.io", "v1alpha2", "inferencemodelrewrites")
INFERENCE_MODEL = ("inference.networking.x-k8s.io", "v1alpha2", "inferencemodels")

ResourceKey = tuple[str, str, str]  # (group, version, plural); group "" is the core API

_KINDS: dict[ResourceKey, str] = {
    POD: "Pod",
    LEASE: "Lease",
    POOL_V1: "InferencePool",
    POOL_V1ALPHA2: "InferencePool",
    OBJECTIVE: "InferenceObjective",
    MODEL_REWRITE: "InferenceModelRewrite",
    INFERENCE_MODEL: "InferenceModel",
}


# --- selectors ------------------------------------------------------------------------------------------------

_SET_RE = re.compile(r"^\s*([^\s!=]+)\s+(in|notin)\s+\(([^)]*)\)\s*$")


def _split_selector(text: str) -> list[str]:
    """Split on commas that are not inside parentheses."""
    parts: list[str] = []
    depth = 0
    current = ""
    for ch in text:
        if ch == "(":
            depth += 1
        elif ch == ")":
            depth -= 1
        if ch == "," and depth == 0:
            parts.append(current)
            current = ""
        else:
            current += ch
    parts.append(current)
    return [p.strip() for p in parts if p.strip()]


def label_selector_matcher(text: str | None) -> Callable[[Mapping[str, str]], bool]:
    """A predicate over a label map for a Kubernetes label selector string; raises ValueError if malformed."""
    if not text:
        return lambda _labels: True
    tests: list[Callable[[Mapping[str, str]], bool]] = []
    for term in _split_selector(text):
        m = _SET_RE.match(term)
        if m:
            key, op, values = m.group(1), m.group(2), {v.strip() for v in m.group(3).split(",") if v.strip()}
            if op == "in":
                tests.append(lambda labels, k=key, vs=values: labels.get(k) in vs)
            else:
                tests.append(lambda labels, k=key, vs=values: labels.get(k) not in vs)
        elif "!=" in term:
            key, value = (s.strip() for s in term.split("!=", 1))
            tests.append(lambda labels, k=key, v=value: labels.get(k) != v)
        elif "=" in term:
            key, value = (s.strip() for s in term.replace("==", "=").split("=", 1))
            if not key:
                raise ValueError(f"bad label selector term {term!r}")
            tests.append(lambda labels, k=key, v=value: labels.get(k) == v)
        elif term.startswith("!"):
            absent = term[1:].strip()
            tests.append(lambda labels, k=absent: k not in labels)
        elif re.fullmatch(r"[A-Za-z0-9./_-]+", term):
            tests.append(lambda labels, k=term: k in labels)
        else:
            raise ValueError(f"bad label selector term {term!r}")
    return lambda labels: all(t(labels) for t in tests)


def field_selector_matcher(text: str | None) -> Callable[[Mapping[str, Any]], bool]:
    """``metadata.name`` and ``metadata.namespace`` equality/inequality, as the real server supports for all kinds."""
    if not text:
        return lambda _obj: True
    tests: list[Callable[[Mapping[str, Any]], bool]] = []
    for term in _split_selector(text):
        negate = "!=" in term
        key, value = (s.strip() for s in term.replace("==", "=").replace("!=", "=").split("=", 1))
        if key not in ("metadata.name", "metadata.namespace"):
            raise ValueError(f"field selector {key!r} is not supported")
        attr = key.split(".", 1)[1]
        tests.append(lambda obj, a=attr, v=value, n=negate: (obj["metadata"].get(a) == v) != n)
    return lambda obj: all(t(obj) for t in tests)


# --- the store ------------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class _Event:
    rv: int
    key: ResourceKey
    type: str  # ADDED | MODIFIED | DELETED
    obj: dict[str, Any]
    old: dict[str, Any] | None  # the previous state, for MODIFIED and DELETED


@dataclass(eq=False)
class _Watch:
    key: ResourceKey
    namespace: str
    labels: Callable[[Mapping[str, str]], bool]
    fields: Callable[[Mapping[str, Any]], bool]
    queue: asyncio.Queue[_Event | str] = field(default_factory=asyncio.Queue)
    request: web.BaseRequest | None = None


@dataclass
class RecordedRequest:
    """One request the emulator received (recorded on arrival), for assertions (e.g. "relisted after 410")."""

    method: str
    path: str
    query: dict[str, str]
    status: int = 0  # filled in once answered (a watch: when it ends)

    @property
    def is_watch(self) -> bool:
        return self.query.get("watch") in ("true", "1")


@dataclass
class _Failure:
    pattern: str
    status: int
    remaining: int


def _now() -> str:
    return datetime.datetime.now(datetime.UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


def _status(code: int, reason: str, message: str) -> dict[str, Any]:
    return {"kind": "Status", "apiVersion": "v1", "metadata": {}, "status": "Failure", "message": message,
            "reason": reason, "code": code}


class KubeApiEmulator:
    """The emulated API server. Use on one event loop: ``await emu.start()`` ... ``await emu.stop()``."""

    def __init__(self, *, token: str | None = "emulator-token", host: str = "127.0.0.1",
                 installed: Iterable[ResourceKey] = tuple(_KINDS), history_limit: int = 10000) -> None:
        self.token = token
        self.host = host
        self.port = 0
        self._installed: set[ResourceKey] = set(installed)
        self._objects: dict[ResourceKey, dict[tuple[str, str], dict[str, Any]]] = {}
        self._rv = 100
        self._history: list[_Event] = []
        self._history_limit = history_limit
        self._compacted_rv = 0
        self._watches: set[_Watch] = set()
        self._failures: list[_Failure] = []
        self.requests: list[RecordedRequest] = []
        self._runner: web.AppRunner | None = None
        self._stopping = False
        self._watch_opened: asyncio.Condition | None = None

    # --- lifecycle ----------------------------------------------------------------------------------------

    @property
    def url(self) -> str:
        return f"http://{self.host}:{self.port}"

    async def start(self) -> None:
        app = web.Application()
        app.router.add_route("*", "/{tail:.*}", self._handle)
        self._runner = web.AppRunner(app, handle_signals=False, access_log=None, shutdown_timeout=0.5)
        await self._runner.setup()
        site = web.TCPSite(self._runner, self.host, self.port)
        await site.start()
        sockets = site._server.sockets if site._server else []  # type: ignore[union-attr]
        self.port = sockets[0].getsockname()[1]

    async def stop(self) -> None:
        self._stopping = True
        self.drop_watches()
        if self._runner is not None:
            await self._runner.cleanup()
            self._runner = None

    def write_kubeconfig(self, path: Path, namespace: str = "default") -> Path:
        user: dict[str, Any] = {"token": self.token} if self.token else {}
        doc = {
            "apiVersion": "v1",
            "kind": "Config",
            "clusters": [{"name": "emulator", "cluster": {"server": self.url}}],
            "users": [{"name": "emulator", "user": user}],
            "contexts": [{"name": "emulator", "context": {"cluster": "emulator", "user": "emulator",
                                                          "namespace": namespace}}],
            "current-context": "emulator",
        }
        path.write_text(yaml.safe_dump(doc))
        return path

    # --- state the tests drive ----------------------------------------------------------------------------

    @property
    def resource_version(self) -> int:
        return self._rv

    def install(self, key: ResourceKey) -> None:
        """Install a CRD (its kind starts answering instead of 404)."""
        self._installed.add(key)

    def uninstall(self, key: ResourceKey) -> None:
        self._installed.discard(key)

    def get(self, key: ResourceKey, namespace: str, name: str) -> dict[str, Any] | None:
        obj = self._objects.get(key, {}).get((namespace, name))
        return copy.deepcopy(obj) if obj is not None else None

    def list(self, key: ResourceKey, namespace: str | None = None) -> list[dict[str, Any]]:
        return [copy.deepcopy(o) for (ns, _), o in sorted(self._objects.get(key, {}).items())
                if namespace is None or ns == namespace]

    def create(self, key: ResourceKey, obj: Mapping[str, Any]) -> dict[str, Any]:
        obj = copy.deepcopy(dict(obj))
        meta = obj.setdefault("metadata", {})
        namespace = meta.setdefault("namespace", "default")
        name = meta["name"]
        store = self._objects.setdefault(key, {})
        if (namespace, name) in store:
            raise KeyError(f"{key[2]} {namespace}/{name} already exists")
        group, version, _ = key
        obj.setdefault("apiVersion", f"{group}/{version}" if group else version)
        obj.setdefault("kind", _KINDS.get(key, "Object"))
        meta.setdefault("uid", str(uuid.uuid4()))
        meta.setdefault("creationTimestamp", _now())
        self._rv += 1
        meta["resourceVersion"] = str(self._rv)
        store[(namespace, name)] = obj
        self._record(_Event(self._rv, key, "ADDED", copy.deepcopy(obj), None))
        return copy.deepcopy(obj)

    def replace(self, key: ResourceKey, obj: Mapping[str, Any], *, check_version: bool = False) -> dict[str, Any]:
        """Replace an object (tests: unconditionally; the HTTP PUT path: with optimistic concurrency)."""
        obj = copy.deepcopy(dict(obj))
        meta = obj.setdefault("metadata", {})
        namespace = meta.setdefault("namespace", "default")
        store = self._objects.setdefault(key, {})
        old = store.get((namespace, meta["name"]))
        if old is None:
            raise LookupError(f"{key[2]} {namespace}/{meta['name']} not found")
        if check_version and meta.get("resourceVersion") not in (None, "", old["metadata"]["resourceVersion"]):
            raise ValueError("conflict")
        for keep in ("uid", "creationTimestamp"):
            meta[keep] = old["metadata"][keep]
        obj.setdefault("apiVersion", old["apiVersion"])
        obj.setdefault("kind", old["kind"])
        self._rv += 1
        meta["resourceVersion"] = str(self._rv)
        store[(namespace, meta["name"])] = obj
        self._record(_Event(self._rv, key, "MODIFIED", copy.deepcopy(obj), old))
        return copy.deepcopy(obj)

    def modify(self, key: ResourceKey, namespace: str, name: str,
               change: Callable[[dict[str, Any]], None]) -> dict[str, Any]:
        """Apply ``change`` to a copy of the stored object and store it as a new version."""
        obj = self.get(key, namespace, name)
        if obj is None:
            raise LookupError(f"{key[2]} {namespace}/{name} not found")
        change(obj)
        return self.replace(key, obj)

    def delete(self, key: ResourceKey, namespace: str, name: str) -> dict[str, Any] | None:
        old = self._objects.get(key, {}).pop((namespace, name), None)
        if old is None:
            return None
        self._rv += 1
        gone = copy.deepcopy(old)
        gone["metadata"]["resourceVersion"] = str(self._rv)
        self._record(_Event(self._rv, key, "DELETED", gone, old))
        return gone

    def compact(self) -> int:
        """Forget all history up to now: a watch resuming from an older version gets 410 Gone."""
        self._compacted_rv = self._rv
        self._history.clear()
        return self._compacted_rv

    def drop_watches(self) -> int:
        """Abort every open watch connection mid-stream (no terminating chunk): a dropped connection."""
        dropped = 0
        for watch in list(self._watches):
            if watch.request is not None and watch.request.transport is not None:
                watch.request.transport.abort()
                dropped += 1
            watch.queue.put_nowait("drop")
        return dropped

    def bookmark(self) -> None:
        """Send a BOOKMARK with the current version to every watch that allowed bookmarks."""
        for watch in self._watches:
            watch.queue.put_nowait("bookmark")

    def fail_requests(self, pattern: str, status: int = 500, count: int = 1) -> None:
        """The next ``count`` requests whose (URL-decoded) path and query contain ``pattern`` get ``status``."""
        self._failures.append(_Failure(pattern, status, count))

    def clear_failures(self) -> None:
        self._failures.clear()

    @property
    def open_watches(self) -> int:
        return len(self._watches)

    def watch_count(self, plural: str | None = None) -> int:
        return sum(1 for w in self._watches if plural is None or w.key[2] == plural)

    async def wait_for_watches(self, count: int = 1, plural: str | None = None, within: float = 5.0) -> None:
        """Return once at least ``count`` watches (of ``plural``) are open; signalled by the watch handler."""
        if self._watch_opened is None:
            self._watch_opened = asyncio.Condition()
        cond = self._watch_opened

        async def _wait() -> None:
            async with cond:
                await cond.wait_for(lambda: self.watch_count(plural) >= count)
        await asyncio.wait_for(_wait(), within)

    def requests_for(self, plural: str) -> list[RecordedRequest]:
        return [r for r in self.requests if r.path.rstrip("/").split("/")[-1] == plural
                or f"/{plural}/" in r.path]

    def _record(self, event: _Event) -> None:
        self._history.append(event)
        if len(self._history) > self._history_limit:
            dropped = self._history[: len(self._history) - self._history_limit]
            del self._history[: len(dropped)]
            self._compacted_rv = max(self._compacted_rv, dropped[-1].rv)
        for watch in self._watches:
            if watch.key == event.key:
                watch.queue.put_nowait(event)

    # --- HTTP ---------------------------------------------------------------------------------------------

    async def _handle(self, request: web.Request) -> web.StreamResponse:
        record = RecordedRequest(request.method, request.path, dict(request.query))
        self.requests.append(record)
        response = await self._dispatch(request, record.query)
        record.status = response.status
        return response

    async def _dispatch(self, request: web.Request, query: dict[str, str]) -> web.StreamResponse:
        if self.token and request.headers.get("Authorization") != f"Bearer {self.token}":
            return web.json_response(_status(401, "Unauthorized", "Unauthorized"), status=401)
        target = urllib.parse.unquote(request.path_qs)  # clients encode selectors differently
        for failure in self._failures:
            if failure.remaining > 0 and failure.pattern in target:
                failure.remaining -= 1
                return web.json_response(_status(failure.status, "InternalError", "injected failure"),
                                         status=failure.status)
        parsed = _parse_path(request.path)
        if parsed is None:
            return web.json_response(_status(404, "NotFound", f"the server could not find {request.path}"),
                                     status=404)
        key, namespace, name = parsed
        if key not in self._installed:
            return web.json_response(_status(404, "NotFound", "the server could not find the requested resource"),
                                     status=404)
        try:
            labels = label_selector_matcher(query.get("labelSelector"))
            fields = field_selector_matcher(query.get("fieldSelector"))
        except ValueError as exc:
            return web.json_response(_status(400, "BadRequest", str(exc)), status=400)
        method = request.method
        if name is None and method == "GET":
            if query.get("watch") in ("true", "1"):
                return await self._watch(request, key, namespace, labels, fields, query)
            return self._list(key, namespace, labels, fields)
        if name is None and method == "POST":
            body = orjson.loads(await request.read())
            body.setdefault("metadata", {})["namespace"] = namespace
            try:
                return web.json_response(self.create(key, body), status=201)
            except KeyError:
                return web.json_response(_status(409, "AlreadyExists", f"{key[2]} {body['metadata']['name']} "
                                                 "already exists"), status=409)
        if name is not None and method == "GET":
            obj = self.get(key, namespace, name)
            if obj is None:
                return web.json_response(_status(404, "NotFound", f"{key[2]} {name!r} not found"), status=404)
            return web.json_response(obj)
        if name is not None and method == "PUT":
            body = orjson.loads(await request.read())
            body.setdefault("metadata", {}).update(namespace=namespace, name=name)
            try:
                return web.json_response(self.replace(key, body, check_version=True))
            except LookupError:
                return web.json_response(_status(404, "NotFound", f"{key[2]} {name!r} not found"), status=404)
            except ValueError:
                return web.json_response(_status(409, "Conflict", "the object has been modified; please apply "
                                                 "your changes to the latest version and try again"), status=409)
        if name is not None and method == "DELETE":
            gone = self.delete(key, namespace, name)
            if gone is None:
                return web.json_response(_status(404, "NotFound", f"{key[2]} {name!r} not found"), status=404)
            return web.json_response(gone)
        return web.json_response(_status(405, "MethodNotAllowed", method), status=405)

    def _matching(self, key: ResourceKey, namespace: str, labels: Callable[[Mapping[str, str]], bool],
                  fields: Callable[[Mapping[str, Any]], bool]) -> list[dict[str, Any]]:
        return [o for (ns, _), o in sorted(self._objects.get(key, {}).items())
                if ns == namespace and _matches(o, labels, fields)]

    def _list(self, key: ResourceKey, namespace: str, labels: Callable[[Mapping[str, str]], bool],
              fields: Callable[[Mapping[str, Any]], bool]) -> web.Response:
        group, version, _ = key
        body = {
            "kind": f"{_KINDS.get(key, 'Object')}List",
            "apiVersion": f"{group}/{version}" if group else version,
            "metadata": {"resourceVersion": str(self._rv)},
            "items": self._matching(key, namespace, labels, fields),
        }
        return web.Response(body=orjson.dumps(body), content_type="application/json")

    async def _watch(self, request: web.Request, key: ResourceKey, namespace: str,
                     labels: Callable[[Mapping[str, str]], bool], fields: Callable[[Mapping[str, Any]], bool],
                     query: dict[str, str]) -> web.StreamResponse:
        response = web.StreamResponse(headers={"Content-Type": "application/json"})
        response.enable_chunked_encoding()
        await response.prepare(request)
        watch = _Watch(key, namespace, labels, fields, request=request)
        bookmarks = query.get("allowWatchBookmarks") in ("true", "1")
        timeout = float(query["timeoutSeconds"]) if query.get("timeoutSeconds") else None
        start = query.get("resourceVersion", "")
        self._watches.add(watch)
        if self._watch_opened is not None:
            async with self._watch_opened:
                self._watch_opened.notify_all()
        try:
            if start in ("", "0"):
                for obj in self._matching(key, namespace, labels, fields):
                    await _send(response, "ADDED", obj)
            else:
                since = int(start)
                if since < self._compacted_rv:
                    status = _status(410, "Expired", f"too old resource version: {since} ({self._compacted_rv})")
                    await _send(response, "ERROR", status)
                    await response.write_eof()
                    return response
                for event in [e for e in self._history if e.rv > since and e.key == key]:
                    await self._deliver(response, watch, event)
            deadline = asyncio.get_running_loop().time() + timeout if timeout else None
            while not self._stopping:
                wait = None if deadline is None else deadline - asyncio.get_running_loop().time()
                if wait is not None and wait <= 0:
                    break
                try:
                    item = await asyncio.wait_for(watch.queue.get(), wait)
                except TimeoutError:
                    break
                if item == "drop":
                    return response
                if item == "bookmark":
                    if bookmarks:
                        group, version, _ = key
                        await _send(response, "BOOKMARK", {
                            "kind": _KINDS.get(key, "Object"),
                            "apiVersion": f"{group}/{version}" if group else version,
                            "metadata": {"resourceVersion": str(self._rv)}})
                    continue
                assert isinstance(item, _Event)
                await self._deliver(response, watch, item)
            await response.write_eof()
        except (ConnectionResetError, ConnectionError, asyncio.CancelledError):
            pass
        finally:
            self._watches.discard(watch)
        return response

    async def _deliver(self, response: web.StreamResponse, watch: _Watch, event: _Event) -> None:
        """Send ``event`` as this watch sees it through its selectors (watch-cache semantics)."""
        if event.obj["metadata"].get("namespace") != watch.namespace:
            return
        new_match = event.type != "DELETED" and _matches(event.obj, watch.labels, watch.fields)
        old_match = event.old is not None and _matches(event.old, watch.labels, watch.fields)
        if event.type == "ADDED" and new_match:
            await _send(response, "ADDED", event.obj)
        elif event.type == "MODIFIED":
            if new_match and old_match:
                await _send(response, "MODIFIED", event.obj)
            elif new_match:
                await _send(response, "ADDED", event.obj)
            elif old_match:
                await _send(response, "DELETED", event.obj)
        elif event.type == "DELETED" and old_match:
            await _send(response, "DELETED", event.obj)


def _matches(obj: Mapping[str, Any], labels: Callable[[Mapping[str, str]], bool],
             fields: Callable[[Mapping[str, Any]], bool]) -> bool:
    return labels(obj["metadata"].get("labels") or {}) and fields(obj)


async def _send(response: web.StreamResponse, kind: str, obj: Mapping[str, Any]) -> None:
    await response.write(orjson.dumps({"type": kind, "object": obj}) + b"\n")


def _parse_path(path: str) -> tuple[ResourceKey, str, str | None] | None:
    """``(resource key, namespace, name or None)`` for namespaced resource paths."""
    parts = [p for p in path.split("/") if p]
    if len(parts) >= 5 and parts[0] == "api" and parts[2] == "namespaces":
        version, namespace, plural = parts[1], parts[3], parts[4]
        name = parts[5] if len(parts) > 5 else None
        return ("", version, plural), namespace, name
    if len(parts) >= 6 and parts[0] == "apis" and parts[3] == "namespaces":
        group, version, namespace, plural = parts[1], parts[2], parts[4], parts[5]
        name = parts[6] if len(parts) > 6 else None
        return (group, version, plural), namespace, name
    return None


# --- object builders ------------------------------------------------------------------------------------------

_pod_counter = itertools.count(1)


def pod(name: str, ip: str | None, *, labels: Mapping[str, str] | None = None, ready: bool = True,
        namespace: str = "default", annotations: Mapping[str, str] | None = None,
        terminating: bool = False) -> dict[str, Any]:
    """A Pod with the fields the picker reads: labels, annotations, podIP and the Ready condition."""
    meta: dict[str, Any] = {"name": name, "namespace": namespace, "labels": dict(labels or {})}
    if annotations:
        meta["annotations"] = dict(annotations)
    if terminating:
        meta["deletionTimestamp"] = _now()
    status: dict[str, Any] = {"phase": "Running" if ip else "Pending",
                              "conditions": [{"type": "Ready", "status": "True" if ready else "False"}]}
    if ip:
        status["podIP"] = ip
        status["podIPs"] = [{"ip": ip}]
    return {"metadata": meta, "spec": {"containers": [{"name": "model-server", "image": "sim"}]}, "status": status}


def set_pod_ready(obj: dict[str, Any], ready: bool) -> None:
    for cond in obj["status"].setdefault("conditions", []):
        if cond["type"] == "Ready":
            cond["status"] = "True" if ready else "False"


def inference_pool(name: str, selector: Mapping[str, str], ports: Iterable[int], *, namespace: str = "default",
                   epp: str = "epp", app_protocol: str | None = None) -> dict[str, Any]:
    """An ``inference.networking.k8s.io/v1`` InferencePool."""
    spec: dict[str, Any] = {
        "selector": {"matchLabels": dict(selector)},
        "targetPorts": [{"number": p} for p in ports],
        "endpointPickerRef": {"name": epp, "port": {"number": 9002}, "failureMode": "FailClose"},
    }
    if app_protocol:
        spec["appProtocol"] = app_protocol
    return {"metadata": {"name": name, "namespace": namespace}, "spec": spec}


def inference_pool_v1alpha2(name: str, selector: Mapping[str, str], port: int, *,
                            namespace: str = "default") -> dict[str, Any]:
    """The older ``inference.networking.x-k8s.io/v1alpha2`` shape: plain selector map, one target port."""
    return {"metadata": {"name": name, "namespace": namespace},
            "spec": {"selector": dict(selector), "targetPortNumber": port,
                     "extensionRef": {"name": "epp", "portNumber": 9002, "failureMode": "FailClose"}}}


# --- on its own thread ----------------------------------------------------------------------------------------


class BackgroundEmulator:
    """The emulator on a dedicated event-loop thread, driven with blocking calls (for process-level tests)."""

    def __init__(self, **kwargs: Any) -> None:
        self._loop = asyncio.new_event_loop()
        self._thread = threading.Thread(target=self._loop.run_forever, name="kube-emulator", daemon=True)
        self.emulator = KubeApiEmulator(**kwargs)

    def call(self, coro: Coroutine[Any, Any, T], timeout: float = 10.0) -> T:
        return asyncio.run_coroutine_threadsafe(coro, self._loop).result(timeout)

    def run(self, fn: Callable[..., T], *args: Any, **kwargs: Any) -> T:
        """Run a plain emulator method on its loop (mutations must happen there)."""
        async def _call() -> T:
            return fn(*args, **kwargs)
        return self.call(_call())

    def start(self) -> BackgroundEmulator:
        self._thread.start()
        self.call(self.emulator.start())
        return self

    def stop(self) -> None:
        if self._thread.is_alive():
            try:
                self.call(self.emulator.stop())
            finally:
                self._loop.call_soon_threadsafe(self._loop.stop)
                self._thread.join(5.0)
        if not self._thread.is_alive() and not self._loop.is_closed():
            self._loop.close()

    def __enter__(self) -> BackgroundEmulator:
        return self.start()

    def __exit__(self, *exc_info: object) -> None:
        self.stop()

    # Thin blocking facades for the common mutations.
    def create(self, key: ResourceKey, obj: Mapping[str, Any]) -> dict[str, Any]:
        return self.run(self.emulator.create, key, obj)

    def replace(self, key: ResourceKey, obj: Mapping[str, Any]) -> dict[str, Any]:
        return self.run(self.emulator.replace, key, obj)

    def modify(self, key: ResourceKey, namespace: str, name: str,
               change: Callable[[dict[str, Any]], None]) -> dict[str, Any]:
        return self.run(self.emulator.modify, key, namespace, name, change)

    def delete(self, key: ResourceKey, namespace: str, name: str) -> dict[str, Any] | None:
        return self.run(self.emulator.delete, key, namespace, name)

    def get(self, key: ResourceKey, namespace: str, name: str) -> dict[str, Any] | None:
        return self.run(self.emulator.get, key, namespace, name)
