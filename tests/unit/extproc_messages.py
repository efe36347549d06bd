"""Builders of the ProcessingRequest messages Envoy sends, for driving a Session in unit tests."""

from __future__ import annotations

from envoy.extensions.filters.http.ext_proc.v3.processing_mode_pb2 import ProcessingMode
from envoy.service.ext_proc.v3.external_processor_pb2 import ProcessingRequest, ProcessingResponse

FDS = ProcessingMode.BodySendMode.FULL_DUPLEX_STREAMED
BUFFERED = ProcessingMode.BodySendMode.BUFFERED
NONE = ProcessingMode.BodySendMode.NONE
STREAMED = ProcessingMode.BodySendMode.STREAMED


def request_headers(path: str = "/v1/completions", *, mode: int | None = FDS, response_mode: int | None = None,
                    end_of_stream: bool = False, extra: dict[str, str] | None = None,
                    subset: list[str] | None = None) -> ProcessingRequest:
    msg = ProcessingRequest()
    hdrs = msg.request_headers
    hdrs.end_of_stream = end_of_stream
    base = {":method": "POST" if not end_of_stream else "GET", ":path": path, ":authority": "gw",
            "content-type": "application/json", "x-request-id": "req-1"}
    base.update(extra or {})
    for k, v in base.items():
        h = hdrs.headers.headers.add()
        h.key = k
        h.raw_value = v.encode()
    if mode is not None:
        msg.protocol_config.request_body_mode = mode
        msg.protocol_config.response_body_mode = response_mode if response_mode is not None else mode
    if subset is not None:
        value = msg.metadata_context.filter_metadata["envoy.lb.subset_hint"].fields[
            "x-gateway-destination-endpoint-subset"]
        value.list_value.SetInParent()
        for item in subset:
            value.list_value.values.add().string_value = item
    return msg


def request_body(body: bytes, end_of_stream: bool = True) -> ProcessingRequest:
    msg = ProcessingRequest()
    msg.request_body.body = body
    msg.request_body.end_of_stream = end_of_stream
    return msg


def request_trailers() -> ProcessingRequest:
    msg = ProcessingRequest()
    msg.request_trailers.SetInParent()
    return msg


def response_headers(status: int = 200, content_type: str = "application/json", *, served: str | None = None,
                     end_of_stream: bool = False) -> ProcessingRequest:
    msg = ProcessingRequest()
    hdrs = msg.response_headers
    hdrs.end_of_stream = end_of_stream
    for k, v in ((":status", str(status)), ("content-type", content_type)):
        h = hdrs.headers.headers.add()
        h.key = k
        h.raw_value = v.encode()
    if served is not None:
        msg.metadata_context.filter_metadata["envoy.lb"].fields[
            "x-gateway-destination-endpoint-served"].string_value = served
    return msg


def response_body(body: bytes, end_of_stream: bool = False) -> ProcessingRequest:
    msg = ProcessingRequest()
    msg.response_body.body = body
    msg.response_body.end_of_stream = end_of_stream
    return msg


def response_trailers() -> ProcessingRequest:
    msg = ProcessingRequest()
    msg.response_trailers.SetInParent()
    return msg


def destination_of(resp: ProcessingResponse) -> tuple[str, str]:
    """(header value, envoy.lb metadata value) of a routing answer."""
    kind = resp.WhichOneof("response")
    common = getattr(resp, kind).response
    header = next(o.header.raw_value.decode() for o in common.header_mutation.set_headers
                  if o.header.key == "x-gateway-destination-endpoint")
    md = resp.dynamic_metadata.fields["envoy.lb"].struct_value.fields["x-gateway-destination-endpoint"].string_value
    assert common.clear_route_cache
    return header, md
