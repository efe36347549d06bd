"""Names on the wire of the Endpoint Picker Protocol (GIE proposal 004) and limits the proxy imposes."""

from __future__ import annotations

# EPP -> proxy: the picked endpoint(s), as a request header and as envoy.lb dynamic metadata (same value).
DESTINATION_ENDPOINT_KEY = "x-gateway-destination-endpoint"
DESTINATION_ENDPOINT_NAMESPACE = "envoy.lb"

# EPP -> proxy (optional, --emit-endpoint-scores): the primary profile's total score per endpoint, as JSON.
DESTINATION_ENDPOINT_SCORES_KEY = "x-gateway-destination-endpoint-scores"

# Proxy -> EPP: the subset of the pool the proxy allows (filter metadata on the request).
SUBSET_HINT_NAMESPACE = "envoy.lb.subset_hint"
SUBSET_HINT_KEY = "x-gateway-destination-endpoint-subset"

# Proxy -> EPP: the endpoint actually used after retries (metadata on response-path messages).
DESTINATION_ENDPOINT_SERVED_KEY = "x-gateway-destination-endpoint-served"

# Keys a client must never be able to set on the request the picker forwards (system-owned).
SYSTEM_OWNED_HEADERS = frozenset({
    DESTINATION_ENDPOINT_KEY,
    SUBSET_HINT_KEY,
    DESTINATION_ENDPOINT_SERVED_KEY,
})

# Re-emitted body chunks stay below gRPC/Envoy's 64 KiB frame comfort zone, as the reference EPP does.
BODY_BYTE_LIMIT = 62_000

EXT_PROC_SERVICE_NAME = "envoy.service.ext_proc.v3.ExternalProcessor"
