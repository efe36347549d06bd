"""The ``endpoint_picker.v1.EndpointPickerService`` servicer (grpc.aio), served on the ext_proc port.

It only reads what the picker already keeps: the decision log (a bounded ring plus live subscribers), the
datastore, the metrics store, the in-flight tracker and the prefix indexes of the scheduler's producer
plugins. Everything runs on the picker's event loop, so a state snapshot is consistent without locks.

Each ``StreamDecisions`` call subscribes a bounded queue to the decision log: a reader that falls behind
loses its oldest unsent records, routing never waits for it. The queue is unsubscribed when the call ends
for any reason (client cancel, limit reached, picker shutdown via :meth:`PickerApiServicer.close`).
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator

import grpc

from endpoint_picker.datalayer import MetricsStore
from endpoint_picker.datastore import Datastore
from endpoint_picker.decisions import DecisionLog, DecisionRecord
from endpoint_picker.inflight import InFlightTracker
from endpoint_picker.scheduling import FrameworkScheduler
from picker_api.convert import StateInputs, decision_to_proto, prefix_indexes_of, state_to_proto
from picker_api.stubs import SERVICE_NAME, picker_pb2_grpc
from picker_api.stubs import picker_pb2 as pb

# Put on a stream's queue to end it (identity-compared; never recorded anywhere).
_CLOSED = DecisionRecord("", "", 0, [])


class PickerApiServicer(picker_pb2_grpc.EndpointPickerServiceServicer):
    SERVICE_NAME = SERVICE_NAME

    def __init__(self, datastore: Datastore, scheduler: FrameworkScheduler, inflight: InFlightTracker,
                 metrics: MetricsStore, *, staleness_threshold: float = 2.0, stream_buffer: int = 256) -> None:
        self._datastore = datastore
        self._scheduler = scheduler
        self._inflight = inflight
        self._metrics = metrics
        self._staleness = staleness_threshold
        self._buffer = stream_buffer
        self._streams: set[asyncio.Queue[DecisionRecord]] = set()
        self._closed = False

    @property
    def decisions(self) -> DecisionLog:
        return self._scheduler.decisions

    @property
    def active_streams(self) -> int:
        return len(self._streams)

    def register(self, server: grpc.aio.Server) -> None:
        """Add this servicer to ``server`` (the hook :meth:`extproc.server.ExtProcServer.add_service` calls)."""
        picker_pb2_grpc.add_EndpointPickerServiceServicer_to_server(self, server)

    def close(self) -> None:
        """End every open ``StreamDecisions`` call (at drain) and refuse new ones."""
        self._closed = True
        for queue in self._streams:
            self.decisions.unsubscribe(queue)
            if queue.full():
                queue.get_nowait()
            queue.put_nowait(_CLOSED)

    async def Explain(self, request: pb.ExplainRequest, context: grpc.aio.ServicerContext) -> pb.ExplainResponse:
        if not request.request_id:
            await context.abort(grpc.StatusCode.INVALID_ARGUMENT, "request_id is required")
        record = self.decisions.get(request.request_id)
        if record is None:
            await context.abort(grpc.StatusCode.NOT_FOUND,
                                f"no decision recorded for request {request.request_id!r} (never scheduled by "
                                f"this picker, or older than the {len(self.decisions)} records it keeps)")
        assert record is not None
        return pb.ExplainResponse(decision=decision_to_proto(record))

    async def StreamDecisions(self, request: pb.StreamDecisionsRequest,
                              context: grpc.aio.ServicerContext) -> AsyncIterator[pb.StreamDecisionsResponse]:
        if self._closed:
            await context.abort(grpc.StatusCode.UNAVAILABLE, "the picker is shutting down")
        log = self.decisions
        model = request.model
        limit = request.limit
        # Subscribe before reading the recent records, so nothing made in between is missed.
        queue = log.subscribe(self._buffer)
        self._streams.add(queue)
        sent = 0
        try:
            if request.recent:
                recent = [r for r in log.recent() if not model or r.model == model][-request.recent:]
                for record in recent:
                    yield pb.StreamDecisionsResponse(decision=decision_to_proto(record))
                    sent += 1
                    if limit and sent >= limit:
                        return
            if request.recent_only:
                return
            while True:  # ends on cancel (CancelledError here), close() or the limit
                record = await queue.get()
                if record is _CLOSED:
                    return
                if model and record.model != model:
                    continue
                yield pb.StreamDecisionsResponse(decision=decision_to_proto(record))
                sent += 1
                if limit and sent >= limit:
                    return
        finally:
            self._streams.discard(queue)
            log.unsubscribe(queue)

    async def GetState(self, request: pb.GetStateRequest, context: grpc.aio.ServicerContext) -> pb.GetStateResponse:
        return pb.GetStateResponse(state=state_to_proto(self.state_inputs()))

    def state_inputs(self) -> StateInputs:
        datastore = self._datastore
        return StateInputs(
            pool=datastore.pool,
            synced=datastore.synced,
            endpoints=datastore.endpoints(),
            metrics=self._metrics.snapshot(),
            metrics_now=self._metrics.clock(),
            in_flight=self._inflight.snapshot(),
            prefix_indexes=prefix_indexes_of(self._scheduler.config.plugins.values()),
            staleness_threshold=self._staleness,
            decisions_recorded=len(self.decisions),
        )
