"""A model-server stand-in that costs (almost) nothing: Envoy answering every request with ``direct_response``.

Why this module exists: the overhead benchmark compares Envoy alone with Envoy + picker, so whatever sits
behind the pool must add neither latency nor noise. A Python server (``stack/standin_server.py``) costs
several hundred microseconds and a good share of one of the machine's two cores per request; a second
Envoy whose listeners return a fixed small OpenAI completion body with 200 costs ~0.1 ms and serves tens of
thousands of requests per second on one worker, far above what the gateway under test reaches. One backend
Envoy process carries one listener per pool endpoint, so the picker and Envoy's round robin still see a pool
of distinct ``ip:port`` addresses.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import Any

import orjson
import yaml

from stack.envoy_bootstrap import HostPort, parse_bootstrap
from stack.envoy_process import EnvoyProcess

_HCM_TYPE = "type.googleapis.com/envoy.extensions.filters.network.http_connection_manager.v3.HttpConnectionManager"
_ROUTER_TYPE = "type.googleapis.com/envoy.extensions.filters.http.router.v3.Router"

# What a non-streaming /v1/completions answer with max_tokens=1 looks like (the picker reads ``usage``).
COMPLETION_BODY: bytes = orjson.dumps(
    {
        "id": "cmpl-bench",
        "object": "text_completion",
        "created": 0,
        "model": "m",
        "choices": [{"index": 0, "text": " hi", "logprobs": None, "finish_reason": "length"}],
        "usage": {"prompt_tokens": 2, "completion_tokens": 1, "total_tokens": 3},
    }
)


def _listener(index: int, host: HostPort, body: bytes) -> dict[str, Any]:
    name = f"backend_{index}"
    return {
        "name": name,
        "address": {"socket_address": {"address": host.host, "port_value": host.port}},
        "filter_chains": [
            {
                "filters": [
                    {
                        "name": "envoy.filters.network.http_connection_manager",
                        "typed_config": {
                            "@type": _HCM_TYPE,
                            "stat_prefix": name,
                            "codec_type": "AUTO",
                            "route_config": {
                                "name": name,
                                "virtual_hosts": [
                                    {
                                        "name": "all",
                                        "domains": ["*"],
                                        "routes": [
                                            {
                                                "match": {"prefix": "/"},
                                                "direct_response": {
                                                    "status": 200,
                                                    "body": {"inline_string": body.decode()},
                                                },
                                                "response_headers_to_add": [
                                                    {"header": {"key": "content-type", "value": "application/json"}},
                                                    {"header": {"key": "x-served-by", "value": name}},
                                                ],
                                            }
                                        ],
                                    }
                                ],
                            },
                            "http_filters": [
                                {"name": "envoy.filters.http.router", "typed_config": {"@type": _ROUTER_TYPE}}
                            ],
                        },
                    }
                ]
            }
        ],
    }


def backend_bootstrap(
    endpoints: Sequence[HostPort], *, admin_port: int, body: bytes = COMPLETION_BODY
) -> dict[str, Any]:
    """A bootstrap with one ``direct_response`` listener per endpoint; checked by the stack's typed parser."""
    doc: dict[str, Any] = {
        "admin": {"address": {"socket_address": {"address": "127.0.0.1", "port_value": admin_port}}},
        "static_resources": {"listeners": [_listener(i, h, body) for i, h in enumerate(endpoints)]},
    }
    parse_bootstrap(doc)
    return doc


def backend_envoy(
    endpoints: Sequence[HostPort], *, admin_port: int, work_dir: Path, body: bytes = COMPLETION_BODY
) -> EnvoyProcess:
    """The backend Envoy (not started): config written to ``work_dir/backend.yaml``, log beside it."""
    path = work_dir / "backend.yaml"
    path.write_text(yaml.safe_dump(backend_bootstrap(endpoints, admin_port=admin_port, body=body), sort_keys=False))
    return EnvoyProcess(path, admin_address="127.0.0.1", admin_port=admin_port, log_path=work_dir / "backend.log")
