"""Builders for the ProcessingResponse messages the picker sends back to Envoy.

Messages that never vary are built once at import time and shared by every stream (they are never mutated
after construction); the rest are built with as few field writes as possible, since they are on the hot path.
"""

from __future__ import annotations

import orjson
from envoy.config.core.v3.base_pb2 import HeaderValueOption
from envoy.service.ext_proc.v3.external_processor_pb2 import (
    CommonResponse,
    ProcessingResponse,
)

from extproc.constants import (
    BODY_BYTE_LIMIT,
    DESTINATION_ENDPOINT_KEY,
    DESTINATION_ENDPOINT_NAMESPACE,
    DESTINATION_ENDPOINT_SCORES_KEY,
)

_OVERWRITE = HeaderValueOption.HeaderAppendAction.OVERWRITE_IF_EXISTS_OR_ADD

REQUEST_HEADERS_CONTINUE = ProcessingResponse()
REQUEST_HEADERS_CONTINUE.request_headers.SetInParent()
RESPONSE_HEADERS_CONTINUE = ProcessingResponse()
RESPONSE_HEADERS_CONTINUE.response_headers.SetInParent()
REQUEST_TRAILERS_CONTINUE = ProcessingResponse()
REQUEST_TRAILERS_CONTINUE.request_trailers.SetInParent()
RESPONSE_TRAILERS_CONTINUE = ProcessingResponse()
RESPONSE_TRAILERS_CONTINUE.response_trailers.SetInParent()
RESPONSE_BODY_CONTINUE = ProcessingResponse()
RESPONSE_BODY_CONTINUE.response_body.SetInParent()


def _set_destination(common: CommonResponse, resp: ProcessingResponse, destination: str,
                     extra_headers: tuple[tuple[str, str], ...], scores: str | None) -> None:
    common.clear_route_cache = True
    set_headers = common.header_mutation.set_headers
    opt = set_headers.add()
    opt.header.key = DESTINATION_ENDPOINT_KEY
    opt.header.raw_value = destination.encode()
    opt.append_action = _OVERWRITE
    for key, value in extra_headers:
        opt = set_headers.add()
        opt.header.key = key
        opt.header.raw_value = value.encode()
        opt.append_action = _OVERWRITE
    fields = resp.dynamic_metadata.fields[DESTINATION_ENDPOINT_NAMESPACE].struct_value.fields
    fields[DESTINATION_ENDPOINT_KEY].string_value = destination
    if scores is not None:
        fields[DESTINATION_ENDPOINT_SCORES_KEY].string_value = scores


def route_in_headers(destination: str, extra_headers: tuple[tuple[str, str], ...] = (),
                     scores: str | None = None) -> ProcessingResponse:
    """The request-headers answer that routes (FULL_DUPLEX_STREAMED, and header-only requests)."""
    resp = ProcessingResponse()
    _set_destination(resp.request_headers.response, resp, destination, extra_headers, scores)
    return resp


def route_in_body(destination: str, extra_headers: tuple[tuple[str, str], ...] = (),
                  scores: str | None = None, body: bytes | None = None) -> ProcessingResponse:
    """The request-body answer that routes in BUFFERED mode (header mutations in a body response).

    ``body``: replace the request body (a model rewrite) and set the matching ``content-length``, without which
    Envoy rejects a body mutation when it has sent the request headers.
    """
    resp = ProcessingResponse()
    if body is not None:
        extra_headers = (*extra_headers, ("content-length", str(len(body))))
        resp.request_body.response.body_mutation.body = body
    _set_destination(resp.request_body.response, resp, destination, extra_headers, scores)
    return resp


def replace_response_body(body: bytes) -> ProcessingResponse:
    """A BUFFERED response-body answer that replaces the body, with the matching ``content-length``."""
    resp = ProcessingResponse()
    common = resp.response_body.response
    common.body_mutation.body = body
    opt = common.header_mutation.set_headers.add()
    opt.header.key = "content-length"
    opt.header.raw_value = str(len(body)).encode()
    opt.append_action = _OVERWRITE
    return resp


def streamed_chunks(body: bytes, *, request: bool, end_of_stream: bool) -> list[ProcessingResponse]:
    """Re-emit ``body`` as FULL_DUPLEX_STREAMED body responses of at most BODY_BYTE_LIMIT bytes each.

    An empty body with ``end_of_stream`` still yields one (empty, final) chunk, so the proxy sees the end.
    """
    out: list[ProcessingResponse] = []
    n = len(body)
    if n == 0:
        if end_of_stream:
            out.append(_streamed(b"", request=request, end_of_stream=True))
        return out
    for start in range(0, n, BODY_BYTE_LIMIT):
        piece = body[start : start + BODY_BYTE_LIMIT]
        last = start + BODY_BYTE_LIMIT >= n
        out.append(_streamed(piece, request=request, end_of_stream=end_of_stream and last))
    return out


def _streamed(piece: bytes, *, request: bool, end_of_stream: bool) -> ProcessingResponse:
    resp = ProcessingResponse()
    body_response = resp.request_body if request else resp.response_body
    streamed = body_response.response.body_mutation.streamed_response
    streamed.body = piece
    streamed.end_of_stream = end_of_stream
    return resp


def immediate(status: int, message: str, error_type: str) -> ProcessingResponse:
    """An ImmediateResponse with an OpenAI-style JSON error body and a real HTTP status.

    ``details`` lands in Envoy's %RESPONSE_CODE_DETAILS% so operators can tell picker rejections apart.
    """
    resp = ProcessingResponse()
    ir = resp.immediate_response
    ir.status.code = status  # envoy.type.v3.StatusCode values are the HTTP codes themselves
    ir.body = orjson.dumps({"error": {"message": message, "type": error_type, "code": status}})
    opt = ir.headers.set_headers.add()
    opt.header.key = "content-type"
    opt.header.raw_value = b"application/json"
    opt.append_action = _OVERWRITE
    ir.details = f"epp_{error_type}"
    return resp
