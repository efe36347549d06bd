"""The generated modules, imported in one place so that a checkout without them fails with a hint."""

from __future__ import annotations

try:
    from picker_api.v1 import picker_pb2, picker_pb2_grpc
except ModuleNotFoundError as exc:  # pragma: no cover - only in a checkout that was never installed
    if not (exc.name or "").startswith("picker_api.v1."):
        raise
    raise ImportError(f"{exc}: the gRPC stubs of protos/endpoint_picker/v1 are generated when the project is "
                      "built or installed; run `pip install -e .` (or `make test`) in the repository") from exc

SERVICE_NAME: str = picker_pb2.DESCRIPTOR.services_by_name["EndpointPickerService"].full_name

__all__ = ["SERVICE_NAME", "picker_pb2", "picker_pb2_grpc"]
