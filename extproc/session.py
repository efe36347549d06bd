"""One ext_proc stream = one HTTP request: the state machine that turns Envoy's messages into answers.

Envoy opens a bidirectional stream per request and sends request headers, body and trailers, then response
headers, body and trailers. What the picker must answer, and when, depends on the body mode Envoy announces in
the first message's ``protocol_config``:

* FULL_DUPLEX_STREAMED (what gateways use): Envoy sends the body without waiting. The picker answers nothing
  until the body is complete, then sends the routing headers response, the body re-chunked as
  ``streamed_response`` pieces, and the trailers response if trailers came. Every answer keeps the order
  headers -> body -> trailers, and a plain body response is never sent (Envoy would fail the request).
* BUFFERED: one answer per message, at once. The headers are answered with CONTINUE; the routing header and
  metadata ride on the body response (the one place BUFFERED applies header mutations).
* NONE, or a request that ends with its headers: routed on the headers (no body means no scheduling).

When the director rewrote the request's model (an InferenceModelRewrite), the rewritten body is what goes out:
re-chunked in FULL_DUPLEX_STREAMED, a ``body_mutation`` with the matching ``content-length`` in BUFFERED. The
response's ``"model"`` members then get the client's name back (:mod:`extproc.model_name_restore`) as they pass.

Bad input is answered with an ImmediateResponse carrying a JSON error and a real status; after that every
further message is ignored. Unsupported modes are a protocol error (the servicer turns it into
INVALID_ARGUMENT) rather than a mis-sequenced answer.
"""

from __future__ import annotations

import enum
import logging
import time
from collections.abc import Callable

from envoy.extensions.filters.http.ext_proc.v3.processing_mode_pb2 import ProcessingMode
from envoy.service.ext_proc.v3.external_processor_pb2 import HttpHeaders, ProcessingRequest, ProcessingResponse

from endpoint_picker.director import Director
from endpoint_picker.errors import Internal, PayloadTooLarge, PickerError
from endpoint_picker.lifecycle import RoutedRequest
from endpoint_picker.request import REQUEST_ID_HEADER, InferenceRequest, attach_body, new_request
from extproc import messages
from extproc.constants import (
    DESTINATION_ENDPOINT_NAMESPACE,
    DESTINATION_ENDPOINT_SERVED_KEY,
    SUBSET_HINT_KEY,
    SUBSET_HINT_NAMESPACE,
)
from extproc.model_name_restore import ModelNameRestorer
from extproc.response_observer import ResponseObserver

log = logging.getLogger(__name__)

_BodyMode = ProcessingMode.BodySendMode
FULL_DUPLEX_STREAMED = _BodyMode.FULL_DUPLEX_STREAMED
BUFFERED = _BodyMode.BUFFERED
NONE = _BodyMode.NONE
_SUPPORTED_REQUEST_MODES = frozenset({FULL_DUPLEX_STREAMED, BUFFERED, NONE})

_NO_ANSWER: tuple[ProcessingResponse, ...] = ()


class ProtocolError(Exception):
    """The proxy asked for something this picker does not speak (e.g. an unsupported body mode)."""


class _Phase(enum.Enum):
    REQUEST_HEADERS = 0  # waiting for the first message
    REQUEST_BODY = 1  # collecting the request body
    ROUTED = 2  # endpoint chosen; following the response
    FINISHED = 3  # response complete
    REJECTED = 4  # an ImmediateResponse was sent: ignore the rest


class Session:
    """State for one stream. :meth:`handle` returns the answers to send for each message, in order."""

    __slots__ = ("_body", "_body_size", "_clock", "_director", "_max_body", "_observer", "_phase",
                 "_request", "_request_mode", "_response_mode", "_restorer", "_routed", "_saw_trailers")

    def __init__(self, director: Director, *, max_body_bytes: int, clock: Callable[[], float] = time.monotonic) -> None:
        self._director = director
        self._max_body = max_body_bytes
        self._clock = clock
        self._phase = _Phase.REQUEST_HEADERS
        self._request_mode = FULL_DUPLEX_STREAMED
        self._response_mode = NONE
        self._request: InferenceRequest | None = None
        self._routed: RoutedRequest | None = None
        self._body: list[bytes] = []
        self._body_size = 0
        self._saw_trailers = False
        self._observer: ResponseObserver | None = None
        self._restorer: ModelNameRestorer | None = None  # set when the request's model was rewritten

    @property
    def routed(self) -> RoutedRequest | None:
        return self._routed

    async def handle(self, msg: ProcessingRequest) -> tuple[ProcessingResponse, ...] | list[ProcessingResponse]:
        if self._phase is _Phase.REJECTED:
            return _NO_ANSWER
        kind = msg.WhichOneof("request")
        if kind == "request_headers":
            return await self._on_request_headers(msg)
        if kind == "request_body":
            return await self._on_request_body(msg.request_body.body, msg.request_body.end_of_stream)
        if kind == "request_trailers":
            return await self._on_request_trailers()
        if kind == "response_headers":
            return self._on_response_headers(msg)
        if kind == "response_body":
            return self._on_response_body(msg.response_body.body, msg.response_body.end_of_stream)
        if kind == "response_trailers":
            return self._on_response_trailers()
        raise ProtocolError(f"message without a known request kind: {kind!r}")

    def close(self, *, clean: bool = False) -> None:
        """The stream ended; release what we hold if the response did not finish.

        ``clean``: the proxy half-closed the stream normally. After routing that means it will tell us no more
        about the response (e.g. a gateway that skips response processing): the request counts as served,
        without usage. Otherwise (reset, client gone, proxy error) it counts as aborted.
        """
        routed = self._routed
        if routed is None or routed.finished:
            return
        if clean:
            self._finish()
        else:
            routed.abort("stream reset before the response completed")

    # --- request path -------------------------------------------------------------------------------------

    async def _on_request_headers(self, msg: ProcessingRequest) -> tuple[ProcessingResponse, ...]:
        if self._phase is not _Phase.REQUEST_HEADERS:
            raise ProtocolError("request headers received twice")
        if msg.HasField("protocol_config"):
            config = msg.protocol_config
            if config.request_body_mode not in _SUPPORTED_REQUEST_MODES:
                name = _BodyMode.Name(config.request_body_mode)
                raise ProtocolError(f"request body mode {name} is not supported "
                                    "(use FULL_DUPLEX_STREAMED, BUFFERED or NONE)")
            self._request_mode = config.request_body_mode
            self._response_mode = config.response_body_mode
        headers_msg = msg.request_headers
        request = new_request(_path(headers_msg), _header_map(headers_msg), _subset_hint(msg))
        self._request = request
        if headers_msg.end_of_stream or self._request_mode == NONE:
            # No body will follow: route now, on the headers alone.
            return await self._route(in_body=False)
        self._phase = _Phase.REQUEST_BODY
        if self._request_mode == BUFFERED:
            return (messages.REQUEST_HEADERS_CONTINUE,)  # answer at once, or Envoy deadlocks until its timeout
        return _NO_ANSWER

    async def _on_request_body(self, chunk: bytes, end_of_stream: bool) -> tuple[ProcessingResponse, ...]:
        if self._phase is not _Phase.REQUEST_BODY:
            raise ProtocolError(f"request body received in phase {self._phase.name}")
        if chunk:
            self._body_size += len(chunk)
            if self._body_size > self._max_body:
                return self._reject(PayloadTooLarge(f"request body exceeds {self._max_body} bytes"))
            self._body.append(chunk)
        if not end_of_stream:
            return _NO_ANSWER
        return await self._route(in_body=True)

    async def _on_request_trailers(self) -> tuple[ProcessingResponse, ...]:
        self._saw_trailers = True
        if self._phase is _Phase.REQUEST_BODY:
            # FULL_DUPLEX_STREAMED: trailers end a body that had no end_of_stream chunk.
            return await self._route(in_body=True)
        return (messages.REQUEST_TRAILERS_CONTINUE,)

    async def _route(self, *, in_body: bool) -> tuple[ProcessingResponse, ...]:
        request = self._request
        assert request is not None
        body = b"".join(self._body) if in_body else b""
        self._body = []
        if in_body:
            try:
                attach_body(request, body)
            except PickerError as exc:
                return self._reject(exc)
        try:
            routed = await self._director.route(request)
        except PickerError as exc:
            return self._reject(exc, counted=True)
        except Exception:
            log.exception("internal error while routing request %s", request.request_id)
            return self._reject(Internal("internal error in the endpoint picker"))
        self._routed = routed
        self._phase = _Phase.ROUTED
        extra = ((REQUEST_ID_HEADER, request.request_id),) if request.generated_request_id else ()
        destination = routed.destination
        rewritten = request.rewritten_body  # set when a model rewrite changed the body's "model"
        if not in_body or self._request_mode == FULL_DUPLEX_STREAMED:
            out = [messages.route_in_headers(destination, extra, routed.scores)]
            if in_body:
                out.extend(messages.streamed_chunks(body if rewritten is None else rewritten, request=True,
                                                    end_of_stream=not self._saw_trailers))
                if self._saw_trailers:
                    out.append(messages.REQUEST_TRAILERS_CONTINUE)
            return tuple(out)
        return (messages.route_in_body(destination, extra, routed.scores, body=rewritten),)

    def _reject(self, error: PickerError, *, counted: bool = False) -> tuple[ProcessingResponse, ...]:
        self._phase = _Phase.REJECTED
        self._body = []
        request = self._request
        if request is not None and not counted:
            self._director.reject(request, error)
        request_id = request.request_id if request else "-"
        log.info("request %s rejected with %d: %s", request_id, error.status, error.message)
        return (messages.immediate(error.status, error.message, error.code),)

    # --- response path ------------------------------------------------------------------------------------

    def _on_response_headers(self, msg: ProcessingRequest) -> tuple[ProcessingResponse, ...]:
        routed = self._routed
        if routed is not None and self._observer is None:
            headers = msg.response_headers
            status: int | None = None
            content_type = ""
            for h in headers.headers.headers:
                if h.key == ":status":
                    value = h.raw_value or h.value.encode()
                    status = int(value) if value.isdigit() else None
                elif h.key == "content-type":
                    content_type = (h.raw_value or h.value.encode()).decode("latin-1")
            routed.on_response_headers(status, _served_endpoint(msg))
            streaming = "text/event-stream" in content_type or routed.request.stream
            self._observer = ResponseObserver(streaming)
            request = routed.request
            if request.target_model and request.target_model != request.model and self._response_mode != NONE:
                self._restorer = ModelNameRestorer(request.target_model, request.model)
            # With response body mode NONE nothing more arrives: the headers are all we will see.
            if headers.end_of_stream or self._response_mode == NONE:
                self._finish()
        return (messages.RESPONSE_HEADERS_CONTINUE,)

    def _on_response_body(self, chunk: bytes, end_of_stream: bool) -> tuple[ProcessingResponse, ...] | list:
        observer = self._observer
        if observer is not None and chunk:
            observer.feed(chunk, self._clock())
        if end_of_stream:
            self._finish()
        restorer = self._restorer
        if self._response_mode == FULL_DUPLEX_STREAMED:
            if restorer is not None:
                chunk = restorer.feed(chunk, end_of_stream)
            return messages.streamed_chunks(chunk, request=False, end_of_stream=end_of_stream)
        if restorer is not None:  # BUFFERED: the whole body in one message
            restored = restorer.feed(chunk, True)
            if restored != chunk:
                return (messages.replace_response_body(restored),)
        return (messages.RESPONSE_BODY_CONTINUE,)

    def _on_response_trailers(self) -> tuple[ProcessingResponse, ...] | list[ProcessingResponse]:
        self._finish()
        restorer = self._restorer
        if restorer is not None and self._response_mode == FULL_DUPLEX_STREAMED:
            held = restorer.feed(b"", True)  # bytes held back for a possible split match: send before trailers
            if held:
                return [*messages.streamed_chunks(held, request=False, end_of_stream=False),
                        messages.RESPONSE_TRAILERS_CONTINUE]
        return (messages.RESPONSE_TRAILERS_CONTINUE,)

    def _finish(self) -> None:
        routed = self._routed
        if routed is None or routed.finished:
            return
        self._phase = _Phase.FINISHED
        observer = self._observer or ResponseObserver(streaming=False)
        routed.complete(observer.summary())


def _header_map(headers: HttpHeaders) -> dict[str, str]:
    out: dict[str, str] = {}
    for h in headers.headers.headers:
        raw = h.raw_value
        out[h.key] = raw.decode("latin-1") if raw else h.value
    return out


def _path(headers: HttpHeaders) -> str:
    for h in headers.headers.headers:
        if h.key == ":path":
            raw = h.raw_value
            return raw.decode("latin-1") if raw else h.value
    return "/"


def _subset_hint(msg: ProcessingRequest) -> tuple[str, ...] | None:
    """The proxy's subset hint: None when absent (whole pool), possibly empty when present."""
    filter_metadata = msg.metadata_context.filter_metadata
    if SUBSET_HINT_NAMESPACE not in filter_metadata:
        return None
    fields = filter_metadata[SUBSET_HINT_NAMESPACE].fields
    if SUBSET_HINT_KEY not in fields:
        return None
    value = fields[SUBSET_HINT_KEY]
    kind = value.WhichOneof("kind")
    if kind == "list_value":
        return tuple(v.string_value for v in value.list_value.values if v.string_value)
    if kind == "string_value":
        return tuple(s.strip() for s in value.string_value.split(",") if s.strip())
    return ()


def _served_endpoint(msg: ProcessingRequest) -> str | None:
    filter_metadata = msg.metadata_context.filter_metadata
    if DESTINATION_ENDPOINT_NAMESPACE not in filter_metadata:
        return None
    fields = filter_metadata[DESTINATION_ENDPOINT_NAMESPACE].fields
    if DESTINATION_ENDPOINT_SERVED_KEY not in fields:
        return None
    return fields[DESTINATION_ENDPOINT_SERVED_KEY].string_value or None
