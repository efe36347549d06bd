"""A pool defined by InferencePool + Pods in the API-server emulator, served through the real Envoy.

While traffic flows, pods appear, vanish and flip readiness, the pool's selector and ports change, and the
watch loses its history (410): each time routing follows within a second, and no request fails (a removed
pod's server keeps running for that second, as a terminating pod drains, then stops).
"""

from __future__ import annotations

import hashlib
import time

import orjson
import pytest

from stack.envoy_bootstrap import BodyMode
from stack.http_client import request
from tests.integration.kubernetes.conftest import KubeGateway, Traffic, served_set
from tests.kube_apiserver_emulator import MODEL_REWRITE, POD, POOL_V1, inference_pool, set_pod_ready

FOLLOW_WITHIN = 1.0  # seconds: the issue's bound for routing to follow a change


def _bring_up(gw: KubeGateway, pods: dict[str, str], *, ports: tuple[int, ...] = ()) -> None:
    for ip in pods.values():
        gw.serve(ip)
    gw.emu.create(POOL_V1, inference_pool("pool", {"app": "model"}, ports or (gw.port,)))
    for name, ip in pods.items():
        gw.add_pod(name, ip)
    gw.start_pickers(1)
    gw.start_envoy()


def _first_served_after(traffic: Traffic, address: str, t0: float) -> float:
    """Seconds from ``t0`` until the first request that started after it was served by ``address``."""
    traffic.wait_for(lambda rs: any(r.served == address and r.started >= t0 for r in rs), within=5,
                     what=f"traffic reaching {address}")
    return min(r.started for r in traffic.since(t0) if r.served == address) - t0


def _stops_after(traffic: Traffic, address: str, t0: float) -> None:
    """No request that started more than FOLLOW_WITHIN after ``t0`` went to ``address`` (checked on 1 s of it)."""
    window = t0 + FOLLOW_WITHIN
    traffic.wait_for(lambda rs: sum(r.started >= window + 1.0 for r in rs) > 0, within=5,
                     what="a second of traffic after the window")
    late = [r for r in traffic.since(window) if r.served == address]
    assert not late, f"{len(late)} requests still went to {address} more than {FOLLOW_WITHIN}s after the change"


def test_pods_appear_vanish_and_flip_readiness_under_traffic(kube_gateway: KubeGateway) -> None:
    gw = kube_gateway
    pods = {"pod-a": "127.0.0.2", "pod-b": "127.0.0.3", "pod-c": "127.0.0.4"}
    _bring_up(gw, pods)
    a, b, c = (f"{ip}:{gw.port}" for ip in pods.values())
    with Traffic(gw.url) as traffic:
        traffic.wait_for(lambda rs: served_set(rs) == {a, b, c}, what="all three pods serving")

        gw.serve("127.0.0.5")
        t0 = gw.add_pod("pod-d", "127.0.0.5")
        d = f"127.0.0.5:{gw.port}"
        assert _first_served_after(traffic, d, t0) < FOLLOW_WITHIN

        gw.emu.modify(POD, "default", "pod-b", lambda o: set_pod_ready(o, False))
        _stops_after(traffic, b, time.monotonic())
        t1 = time.monotonic()
        gw.emu.modify(POD, "default", "pod-b", lambda o: set_pod_ready(o, True))
        assert _first_served_after(traffic, b, t1) < FOLLOW_WITHIN

        t2 = time.monotonic()
        gw.emu.delete(POD, "default", "pod-c")
        _stops_after(traffic, c, t2)
        gw.unserve(c)  # the pod is really gone now; nothing may be routed to it any more
        t3 = time.monotonic()
        traffic.wait_for(lambda rs: sum(r.started > t3 for r in rs) >= 50, what="traffic after pod-c stopped")
    assert served_set(traffic.since(t3)) == {a, b, d}
    assert traffic.failures() == [], traffic.failures()[:5]
    assert len(traffic.results) > 200


def test_pool_selector_and_target_ports_change(kube_gateway: KubeGateway) -> None:
    gw = kube_gateway
    _bring_up(gw, {"pod-a": "127.0.0.2", "pod-b": "127.0.0.3"})
    second_port = gw.port + 1 if gw.port < 65000 else gw.port - 1
    for ip in ("127.0.0.2", "127.0.0.3", "127.0.0.4"):
        gw.serve(ip, second_port)
    gw.serve("127.0.0.4")
    gw.add_pod("pod-n", "127.0.0.4", labels={"app": "model", "track": "new"})
    with Traffic(gw.url) as traffic:
        traffic.wait_for(lambda rs: len(served_set(rs)) == 3, what="three pods serving")

        # Selector: only the pod labelled track=new stays.
        t0 = time.monotonic()
        gw.emu.modify(POOL_V1, "default", "pool", lambda o: o["spec"]["selector"]["matchLabels"].update(track="new"))
        _stops_after(traffic, f"127.0.0.2:{gw.port}", t0)
        assert served_set(traffic.since(t0 + FOLLOW_WITHIN)) == {f"127.0.0.4:{gw.port}"}

        # Back to all pods, on both ports (each port a data-parallel rank), then only the second port.
        t1 = time.monotonic()
        gw.emu.modify(POOL_V1, "default", "pool", lambda o: o["spec"].update(
            selector={"matchLabels": {"app": "model"}}, targetPorts=[{"number": gw.port}, {"number": second_port}]))
        assert _first_served_after(traffic, f"127.0.0.2:{second_port}", t1) < FOLLOW_WITHIN
        t2 = time.monotonic()
        gw.emu.modify(POOL_V1, "default", "pool", lambda o: o["spec"].update(targetPorts=[{"number": second_port}]))
        for ip in ("127.0.0.2", "127.0.0.3", "127.0.0.4"):
            _stops_after(traffic, f"{ip}:{gw.port}", t2)
        assert {r.served for r in traffic.since(t2 + FOLLOW_WITHIN)} == {
            f"{ip}:{second_port}" for ip in ("127.0.0.2", "127.0.0.3", "127.0.0.4")}
    assert traffic.failures() == [], traffic.failures()[:5]


def test_watch_history_lost_relists_and_routing_follows(kube_gateway: KubeGateway) -> None:
    gw = kube_gateway
    _bring_up(gw, {"pod-a": "127.0.0.2"})
    gw.serve("127.0.0.3")
    with Traffic(gw.url) as traffic:
        traffic.wait_for(lambda rs: served_set(rs) == {f"127.0.0.2:{gw.port}"})
        pod_lists_before = sum(1 for r in gw.emu.emulator.requests_for("pods") if not r.is_watch)

        def lose_history() -> None:  # on the emulator's loop: nothing can reconnect in between
            emu = gw.emu.emulator
            emu.drop_watches()
            emu.create(POD, {"metadata": {"name": "pod-b", "labels": {"app": "model"}},
                             "status": {"podIP": "127.0.0.3", "conditions": [{"type": "Ready", "status": "True"}]}})
            emu.compact()

        gw.emu.run(lose_history)
        t0 = time.monotonic()
        assert _first_served_after(traffic, f"127.0.0.3:{gw.port}", t0) < FOLLOW_WITHIN
    pod_requests = gw.emu.emulator.requests_for("pods")
    assert sum(1 for r in pod_requests if not r.is_watch) == pod_lists_before + 1  # exactly one relist
    assert any(r.status == 200 and r.is_watch for r in pod_requests)
    assert traffic.failures() == []


def test_no_crd_mode_selects_pods_by_label(kube_gateway: KubeGateway) -> None:
    gw = kube_gateway
    for ip in ("127.0.0.2", "127.0.0.3"):
        gw.serve(ip)
    gw.add_pod("pod-a", "127.0.0.2", labels={"app": "model", "tier": "gpu"})
    gw.add_pod("pod-x", "127.0.0.3", labels={"app": "model"})
    gw.start_pickers(1, source=("--endpoint-selector", "app=model,tier=gpu", "--endpoint-target-ports",
                                str(gw.port)))
    gw.start_envoy()
    with Traffic(gw.url) as traffic:
        traffic.wait_for(lambda rs: len(rs) >= 20, what="traffic")
        t0 = time.monotonic()
        gw.emu.modify(POD, "default", "pod-x", lambda o: o["metadata"]["labels"].update(tier="gpu"))
        assert _first_served_after(traffic, f"127.0.0.3:{gw.port}", t0) < FOLLOW_WITHIN
    assert served_set(traffic.results[:20]) == {f"127.0.0.2:{gw.port}"}
    assert traffic.failures() == []
    assert {r.path.rsplit("/", 1)[-1] for r in gw.emu.emulator.requests} == {"pods"}  # no CRD is read


@pytest.mark.parametrize("body_mode", [BodyMode.FULL_DUPLEX_STREAMED, BodyMode.BUFFERED], ids=str)
def test_model_rewrite_through_envoy(kube_gateway: KubeGateway, body_mode: BodyMode) -> None:
    gw = kube_gateway
    gw.serve("127.0.0.2")
    gw.emu.create(POOL_V1, inference_pool("pool", {"app": "model"}, [gw.port]))
    gw.add_pod("pod-a", "127.0.0.2")
    gw.emu.create(MODEL_REWRITE, {"metadata": {"name": "canary"}, "spec": {"poolRef": {"name": "pool"}, "rules": [
        {"matches": [{"model": {"type": "Exact", "value": "public-name"}}],
         "targets": [{"modelRewrite": "served-lora-v2", "weight": 100}]}]}})
    gw.start_pickers(1)
    gw.start_envoy(body_mode)
    body = {"model": "public-name", "prompt": "hello rewrite", "max_tokens": 2}
    expected_upstream = orjson.dumps({**body, "model": "served-lora-v2"})
    r = request(gw.url + "/v1/completions", "POST", json_body=body, time_limit=10)
    assert r.status == 200, r.body
    assert r.headers["x-request-body-sha256"] == hashlib.sha256(expected_upstream).hexdigest()
    assert r.headers["x-request-body-length"] == str(len(expected_upstream))
    if body_mode is BodyMode.FULL_DUPLEX_STREAMED:  # the local gateway's BUFFERED mode sends no response body
        assert r.json()["model"] == "public-name"
        streamed = request(gw.url + "/v1/completions", "POST", json_body={**body, "stream": True}, time_limit=10)
        models = {orjson.loads(e)["model"] for e in streamed.sse_events() if e != "[DONE]"}
        assert models == {"public-name"}
