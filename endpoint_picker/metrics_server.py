"""The HTTP side of observability on ``--metrics-port``: Prometheus text at ``/metrics`` and recent scheduling
decisions as JSON at ``/debug/decisions`` (``?request_id=ID`` for one, ``?limit=N`` for the last N).
"""

from __future__ import annotations

import orjson
from aiohttp import web
from prometheus_client import CONTENT_TYPE_LATEST

from endpoint_picker.decisions import DecisionLog
from endpoint_picker.metrics import PickerMetrics


class MetricsServer:
    def __init__(self, metrics: PickerMetrics, host: str, port: int, decisions: DecisionLog | None = None) -> None:
        self._metrics = metrics
        self._decisions = decisions or DecisionLog()
        self._host = host
        self._port = port
        app = web.Application()
        app.router.add_get("/metrics", self._serve_metrics)
        app.router.add_get("/healthz", self._serve_health)
        app.router.add_get("/debug/decisions", self._serve_decisions)
        self._runner = web.AppRunner(app, access_log=None)
        self.port = 0

    async def start(self) -> None:
        await self._runner.setup()
        site = web.TCPSite(self._runner, self._host, self._port, reuse_port=False)
        await site.start()
        server = site._server  # aiohttp exposes the bound socket only here
        sockets = getattr(server, "sockets", None) or []
        self.port = sockets[0].getsockname()[1] if sockets else self._port

    async def stop(self) -> None:
        await self._runner.cleanup()

    async def _serve_metrics(self, _request: web.Request) -> web.Response:
        body = self._metrics.render()
        return web.Response(body=body, headers={"Content-Type": CONTENT_TYPE_LATEST})

    async def _serve_health(self, _request: web.Request) -> web.Response:
        return web.Response(text="ok\n")

    async def _serve_decisions(self, request: web.Request) -> web.Response:
        request_id = request.query.get("request_id")
        if request_id is not None:
            record = self._decisions.get(request_id)
            if record is None:
                return web.json_response({"error": f"no decision recorded for request {request_id!r}"}, status=404)
            return web.Response(body=orjson.dumps(record.to_dict()), content_type="application/json")
        try:
            limit = int(request.query.get("limit", "100"))
        except ValueError:
            return web.json_response({"error": "limit must be an integer"}, status=400)
        records = self._decisions.recent(max(0, limit))
        body = orjson.dumps({"decisions": [r.to_dict() for r in records]})
        return web.Response(body=body, content_type="application/json")
