"""The picker's narrow view of the Kubernetes API: list, watch and read/write single objects, as plain dicts.

Why this module exists: the watchers need four verbs over a handful of resources, with exact control of
``resourceVersion``, selectors and timeouts, and without building typed models for every pod event. It uses
the official client's asyncio flavour (``kubernetes.aio``, shipped in the ``kubernetes`` package since v37)
for what a client library is for — kubeconfig and in-cluster configuration, TLS, bearer tokens and their
refresh, exec auth plugins — and reads responses itself: lists are decoded with orjson, watches are read as
JSON lines straight off the chunked response. Being native asyncio, a watch never holds a thread and is
cancelled like any other task (the synchronous client would need a thread per watch that cannot be
interrupted while blocked on a read).
"""

from __future__ import annotations

import contextlib
import os
from collections.abc import AsyncIterator, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import aiohttp
import orjson
from kubernetes.aio import client as kclient
from kubernetes.aio import config as kconfig

_JSON = {"Accept": "application/json", "Content-Type": "application/json"}
_AUTH = ["BearerToken"]


@dataclass(frozen=True, slots=True)
class Resource:
    """A namespaced resource kind: ``group`` is ``""`` for the core API (pods)."""

    group: str
    version: str
    plural: str
    kind: str

    @property
    def api_version(self) -> str:
        return f"{self.group}/{self.version}" if self.group else self.version

    def collection_path(self, namespace: str) -> str:
        prefix = f"/apis/{self.group}/{self.version}" if self.group else f"/api/{self.version}"
        return f"{prefix}/namespaces/{namespace}/{self.plural}"

    def __str__(self) -> str:
        return f"{self.plural}.{self.group or 'core'}/{self.version}"


PODS = Resource("", "v1", "pods", "Pod")
LEASES = Resource("coordination.k8s.io", "v1", "leases", "Lease")


class ApiError(Exception):
    """A non-success answer from the API server (or a Status object inside a watch stream)."""

    def __init__(self, status: int, reason: str, message: str) -> None:
        super().__init__(f"{status} {reason}: {message}")
        self.status = status
        self.reason = reason
        self.message = message


class Gone(ApiError):
    """410: the resourceVersion we resume from was compacted away; only a fresh list helps."""


@dataclass(frozen=True, slots=True)
class ObjectList:
    items: list[dict[str, Any]]
    resource_version: str


@dataclass(frozen=True, slots=True)
class WatchEvent:
    type: str  # ADDED, MODIFIED, DELETED, BOOKMARK
    object: dict[str, Any]

    @property
    def resource_version(self) -> str:
        return str(self.object.get("metadata", {}).get("resourceVersion", ""))


def _error_from(status: int, body: bytes) -> ApiError:
    reason, message = "", body[:300].decode("utf-8", "replace")
    with contextlib.suppress(ValueError, AttributeError):
        doc = orjson.loads(body)
        reason, message = str(doc.get("reason", "")), str(doc.get("message", message))
    return (Gone if status == 410 else ApiError)(status, reason, message)


class KubeApi:
    """A connection to one API server; ``close()`` it when done."""

    def __init__(self, api_client: kclient.ApiClient) -> None:
        self._client = api_client

    @classmethod
    async def connect(cls, kubeconfig: Path | None = None, context: str | None = None) -> KubeApi:
        """Configure from ``kubeconfig`` if given, else in-cluster when running in a pod, else ``$KUBECONFIG`` /
        ``~/.kube/config``."""
        configuration = kclient.Configuration()
        if kubeconfig is None and os.environ.get("KUBERNETES_SERVICE_HOST"):
            kconfig.load_incluster_config(client_configuration=configuration)
        else:
            await kconfig.load_kube_config(config_file=str(kubeconfig) if kubeconfig else None, context=context,
                                           client_configuration=configuration, persist_config=False)
        return cls(kclient.ApiClient(configuration=configuration))

    @property
    def host(self) -> str:
        return str(self._client.configuration.host)

    async def close(self) -> None:
        await self._client.close()

    async def _request(self, method: str, path: str, query: Mapping[str, Any] | None = None,
                       body: Any = None, request_timeout: float = 30.0) -> Any:
        params = [(k, v) for k, v in (query or {}).items() if v is not None]
        serialized = await self._client.param_serialize(method=method, resource_path=path, query_params=params,
                                                        header_params=dict(_JSON), body=body,
                                                        auth_settings=_AUTH)
        response = await self._client.call_api(*serialized, _request_timeout=request_timeout)
        return response.response  # the aiohttp.ClientResponse, unread

    async def list(self, resource: Resource, namespace: str, *, label_selector: str | None = None,
                   field_selector: str | None = None, request_timeout: float = 30.0) -> ObjectList:
        query = {"labelSelector": label_selector, "fieldSelector": field_selector}
        raw = await self._request("GET", resource.collection_path(namespace), query, request_timeout=request_timeout)
        async with raw:
            body = await raw.read()
            if raw.status != 200:
                raise _error_from(raw.status, body)
        doc = orjson.loads(body)
        items = doc.get("items") or []
        for item in items:  # list items of core kinds carry no kind/apiVersion
            item.setdefault("kind", resource.kind)
            item.setdefault("apiVersion", resource.api_version)
        return ObjectList(items, str(doc.get("metadata", {}).get("resourceVersion", "")))

    async def watch(self, resource: Resource, namespace: str, *, resource_version: str,
                    label_selector: str | None = None, field_selector: str | None = None,
                    timeout_seconds: int = 300) -> AsyncIterator[WatchEvent]:
        """Events after ``resource_version`` until the server ends the stream (cleanly after ``timeout_seconds``).

        Raises :class:`Gone` when the version is too old, :class:`ApiError` for other failures, and
        ``aiohttp.ClientError`` / ``TimeoutError`` when the connection drops.
        """
        query = {"watch": "true", "resourceVersion": resource_version, "allowWatchBookmarks": "true",
                 "timeoutSeconds": str(timeout_seconds), "labelSelector": label_selector,
                 "fieldSelector": field_selector}
        raw: aiohttp.ClientResponse = await self._request("GET", resource.collection_path(namespace), query,
                                                          request_timeout=timeout_seconds + 30.0)
        async with raw:
            if raw.status != 200:
                raise _error_from(raw.status, await raw.read())
            while True:
                line = await raw.content.readline()
                if not line:
                    return  # the server ended the watch (its timeout): resume from the last version
                if not line.strip():
                    continue
                event = orjson.loads(line)
                kind, obj = event.get("type"), event.get("object") or {}
                if kind == "ERROR":
                    raise _error_from(int(obj.get("code", 500)), orjson.dumps(obj))
                yield WatchEvent(str(kind), obj)

    async def get(self, resource: Resource, namespace: str, name: str,
                  request_timeout: float = 10.0) -> dict[str, Any]:
        path = f"{resource.collection_path(namespace)}/{name}"
        raw = await self._request("GET", path, request_timeout=request_timeout)
        return await _object_from(raw)

    async def create(self, resource: Resource, namespace: str, obj: Mapping[str, Any],
                     request_timeout: float = 10.0) -> dict[str, Any]:
        raw = await self._request("POST", resource.collection_path(namespace), body=dict(obj),
                                  request_timeout=request_timeout)
        return await _object_from(raw)

    async def replace(self, resource: Resource, namespace: str, name: str, obj: Mapping[str, Any],
                      request_timeout: float = 10.0) -> dict[str, Any]:
        """PUT; the server answers 409 if ``metadata.resourceVersion`` is no longer current."""
        raw = await self._request("PUT", f"{resource.collection_path(namespace)}/{name}", body=dict(obj),
                                  request_timeout=request_timeout)
        return await _object_from(raw)


async def _object_from(raw: aiohttp.ClientResponse) -> dict[str, Any]:
    async with raw:
        body = await raw.read()
        if not 200 <= raw.status < 300:
            raise _error_from(raw.status, body)
    return orjson.loads(body)
