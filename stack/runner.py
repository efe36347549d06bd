"""``endpoint-picker stack``: bring up the local gateway, show routing, run until Ctrl-C.

Why this module exists: the fastest way to *see* the picker work is one command that starts real Envoy, the
picker and a few model servers (simulated vLLM servers by default, or the minimal stand-ins), sends some
OpenAI requests through the gateway and prints which server answered each one and what the picker decided —
then leaves the gateway running for ``curl``. On simulated servers the demo also sends one long prompt twice:
``cached_tokens`` in the second answer's usage shows whether it landed where its prefix was cached.
"""

from __future__ import annotations

import asyncio
import contextlib
import signal
import sys
import time
import uuid
from dataclasses import dataclass, field
from typing import Any

import aiohttp

from stack.access_log import AccessLogEntry, read_access_log
from stack.envoy_bootstrap import BodyMode, FailureMode
from stack.gateway import GatewayStack, StackOptions
from stack.http_client import HttpResult, async_request
from stack.model_servers import ModelServerKind


@dataclass
class RunnerOptions:
    stack: StackOptions = field(default_factory=StackOptions)
    demo: bool = True
    keep_running: bool = True


def _say(message: str) -> None:
    print(f"[stack] {message}", flush=True)


# A prompt long enough to fill many KV blocks, so a prefix-cache hit shows in usage.cached_tokens.
_LONG_PROMPT = " ".join(f"paragraph {i} of a long shared document about routing inference traffic." for i in range(60))


def demo_requests(model: str, *, simulated: bool) -> list[tuple[str, dict[str, Any]]]:
    """The demo's (path, body) pairs for servers serving ``model``."""
    requests: list[tuple[str, dict[str, Any]]] = [
        ("/v1/completions", {"model": model, "prompt": "Say hello to the gateway", "max_tokens": 8}),
        ("/v1/chat/completions",
         {"model": model, "messages": [{"role": "user", "content": "Which server am I talking to?"}],
          "max_tokens": 8}),
        ("/v1/completions", {"model": model, "prompt": "Another prompt, another pick", "max_tokens": 4}),
        ("/v1/chat/completions",
         {"model": model, "messages": [{"role": "user", "content": "Stream me some tokens"}],
          "max_tokens": 6, "stream": True, "stream_options": {"include_usage": True}}),
        ("/v1/completions", {"model": model, "prompt": "One more for the road", "max_tokens": 4}),
    ]
    if simulated:
        long = {"model": model, "prompt": _LONG_PROMPT, "max_tokens": 4}
        requests += [("/v1/completions", long), ("/v1/completions", long)]
    else:
        requests.append(("/v1/embeddings", {"model": model, "input": "embed this"}))
    return requests


def _summary(result: HttpResult, streaming: bool) -> str:
    if result.status != 200:
        return result.text[:120].replace("\n", " ")
    if streaming:
        events = result.sse_events()
        return f"{len(events)} SSE events, last {events[-1] if events else None!r}"
    with contextlib.suppress(ValueError):
        usage = result.json().get("usage", {})
        return f"usage {usage}"
    return f"{len(result.body)} bytes"


async def _entry(stack: GatewayStack, request_id: str, within: float = 2.0) -> AccessLogEntry | None:
    deadline = time.monotonic() + within
    while time.monotonic() < deadline:
        for entry in read_access_log(stack.access_log_path):
            if entry.request_id == request_id:
                return entry
        await asyncio.sleep(0.05)
    return None


async def run_demo(stack: GatewayStack) -> int:
    """Send the demo requests; print who served each. Returns the number of failed requests."""
    demo = demo_requests(stack.model_name, simulated=bool(stack.sims))
    _say(f"demo: {len(demo)} requests through {stack.gateway_url}")
    failures = 0
    async with aiohttp.ClientSession(auto_decompress=False) as session:
        for path, body in demo:
            request_id = str(uuid.uuid4())
            streaming = bool(body.get("stream"))
            try:
                result = await async_request(
                    stack.gateway_url + path, "POST", json_body=body, headers={"x-request-id": request_id},
                    time_limit=30.0, session=session,
                )
            except (aiohttp.ClientError, TimeoutError) as exc:
                failures += 1
                _say(f"  POST {path:<22} -> failed: {exc!r}")
                continue
            failures += result.status != 200
            entry = await _entry(stack, request_id)
            decided = ""
            if entry and entry.destination:
                primary, *fallbacks = entry.destination.split(",")
                decided = f"; picker chose {primary}" + (f" (+{len(fallbacks)} fallbacks)" if fallbacks else "")
            _say(
                f"  POST {path:<22}{' (stream)' if streaming else '':<9} -> {result.status} served by "
                f"{result.served_by or '-'} ({result.served_by_address or '-'}){decided}; {_summary(result, streaming)}"
            )
    return failures


def _print_usage_hint(stack: GatewayStack) -> None:
    _say("try it:")
    print(
        f"  curl -s {stack.gateway_url}/v1/completions -H 'content-type: application/json' "
        f"-d '{{\"model\":\"{stack.model_name}\",\"prompt\":\"hi\",\"max_tokens\":5}}' -D - -o /dev/null "
        "| grep -i x-served-by",
        flush=True,
    )
    if stack.sims:
        _say(f"simulated servers' vLLM metrics: curl -s {stack.sims[0].url}/metrics | grep -E "
             "'vllm:(num_requests|kv_cache|prefix_cache)'")
    _say(f"endpoints file (labels the picker reads): {stack.endpoints_file}")
    _say(f"logs (removed on exit): envoy access {stack.access_log_path}, envoy {stack.envoy_log_path}, "
         f"picker {stack.picker_log_path}")


async def run_stack(options: RunnerOptions) -> int:
    """Start everything, optionally demo, then wait for SIGINT/SIGTERM (or exit after the demo)."""
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    installed: list[int] = []
    for sig in (signal.SIGINT, signal.SIGTERM):
        with contextlib.suppress(NotImplementedError, RuntimeError):
            loop.add_signal_handler(sig, stop.set)
            installed.append(sig)
    stack = GatewayStack(options.stack, progress=_say)
    o = options.stack
    kind = "simulated vLLM" if o.model_servers == "sim" else "stand-in"
    split = f" ({o.prefill_replicas} prefill + {o.replicas} decode)" if o.prefill_replicas else ""
    _say(f"starting {o.total_servers} {kind} model servers{split}, the picker and envoy (work dir {stack.work_dir})")
    if o.prefill_replicas:
        _say("note: the picker does not route prefill/decode pairs yet (that comes with the scheduler); servers are "
             "labelled llm-d.ai/role in the endpoints file and any of them may serve a whole request")
    try:
        await stack.start()
    except Exception as exc:
        _say(f"failed to start: {exc}")
        _say(f"logs kept in {stack.work_dir}")
        return 1
    code = 0
    try:
        if options.demo and not stop.is_set():
            failures = await run_demo(stack)
            code = 1 if failures else 0
        _print_usage_hint(stack)
        if options.keep_running:
            _say("running; Ctrl-C to stop")
            await stop.wait()
    finally:
        _say("stopping envoy, picker and model servers")
        await stack.stop()
        for sig in installed:
            loop.remove_signal_handler(sig)
        _say("stopped")
    return code


def options_from(
    *,
    replicas: int,
    port: int,
    body_mode: str,
    failure_mode: str,
    secure_serving: bool,
    demo: bool,
    keep_running: bool,
    log_level: str = "info",
    model_servers: ModelServerKind = "sim",
    prefill_replicas: int = 0,
    topology: str | None = None,
    time_scale: float = 1.0,
) -> RunnerOptions:
    return RunnerOptions(
        stack=StackOptions(
            replicas=replicas,
            model_servers=model_servers,
            prefill_replicas=prefill_replicas,
            topology=topology,
            time_scale=time_scale,
            listener_port=port,
            body_mode=BodyMode(body_mode),
            failure_mode=FailureMode(failure_mode),
            picker_tls=secure_serving,
            picker_log_level=log_level,
        ),
        demo=demo,
        keep_running=keep_running,
    )


if __name__ == "__main__":  # pragma: no cover - convenience: python -m stack.runner
    sys.exit(asyncio.run(run_stack(RunnerOptions())))
