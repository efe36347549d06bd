"""The ``envoy.service.ext_proc.v3.ExternalProcessor`` gRPC servicer: one :class:`Session` per stream."""

from __future__ import annotations

import logging
from collections.abc import AsyncIterator

import grpc
from envoy.service.ext_proc.v3 import external_processor_pb2_grpc
from envoy.service.ext_proc.v3.external_processor_pb2 import ProcessingRequest, ProcessingResponse

from endpoint_picker.director import Director
from extproc.session import ProtocolError, Session

log = logging.getLogger(__name__)


class ExternalProcessor(external_processor_pb2_grpc.ExternalProcessorServicer):
    def __init__(self, director: Director, *, max_body_bytes: int) -> None:
        self._director = director
        self._max_body_bytes = max_body_bytes
        self.active_streams = 0

    async def Process(
        self, request_iterator: AsyncIterator[ProcessingRequest], context: grpc.aio.ServicerContext
    ) -> AsyncIterator[ProcessingResponse]:
        session = Session(self._director, max_body_bytes=self._max_body_bytes)
        self.active_streams += 1
        clean = False
        try:
            async for msg in request_iterator:
                for answer in await session.handle(msg):
                    yield answer
            clean = True
        except ProtocolError as exc:
            log.warning("ext_proc protocol error: %s", exc)
            await context.abort(grpc.StatusCode.INVALID_ARGUMENT, str(exc))
        finally:
            # Runs on normal end, on error and when the proxy resets the stream (client disconnect).
            session.close(clean=clean)
            self.active_streams -= 1
