"""InferencePool shapes (v1, v1alpha2, flags) and the pod -> endpoint rules (readiness, ranks, active ports)."""

from __future__ import annotations

import pytest

from endpoint_picker.datastore.kubernetes.pods import endpoints_for, pod_endpoints, pod_is_ready
from endpoint_picker.datastore.kubernetes.pool import (
    PoolSpec,
    PoolSpecError,
    parse_pool,
    parse_ports_flag,
    parse_selector_flag,
    pool_resource,
    standalone_pool,
)
from tests.kube_apiserver_emulator import inference_pool, inference_pool_v1alpha2, pod

POOL = PoolSpec("p", "default", (("app", "m"),), (8000, 8001, 8002))


def test_parse_v1_pool() -> None:
    obj = inference_pool("p", {"app": "m", "tier": "gpu"}, [8000, 8002], app_protocol="http")
    obj["apiVersion"] = "inference.networking.k8s.io/v1"
    spec = parse_pool(obj)
    assert spec.selector == (("app", "m"), ("tier", "gpu"))
    assert spec.target_ports == (8000, 8002)
    assert spec.label_selector == "app=m,tier=gpu"
    assert spec.app_protocol == "http"


def test_parse_v1alpha2_pool() -> None:
    obj = inference_pool_v1alpha2("p", {"app": "m"}, 9000)
    obj["apiVersion"] = "inference.networking.x-k8s.io/v1alpha2"
    spec = parse_pool(obj)
    assert spec.selector == (("app", "m"),) and spec.target_ports == (9000,)


@pytest.mark.parametrize(("spec", "field"), [
    ({"selector": {"matchLabels": {}}, "targetPorts": [{"number": 8000}]}, "spec.selector.matchLabels"),
    ({"selector": {"matchLabels": {"a": "b"}}, "targetPorts": []}, "spec.targetPorts"),
    ({"selector": {"matchLabels": {"a": "b"}}, "targetPorts": [{"number": 8000}, {"number": 8000}]},
     "twice"),
    ({"selector": {"matchLabels": {"a": "b"}}, "targetPorts": [{"number": p} for p in range(8000, 8009)]},
     "1 to 8"),
    ({"selector": {"matchLabels": {"a": "b"}}, "targetPorts": [{"number": 70000}]}, "invalid port"),
])
def test_invalid_pools_name_the_field(spec: dict, field: str) -> None:
    with pytest.raises(PoolSpecError, match=field):
        parse_pool({"metadata": {"name": "p"}, "spec": spec})


def test_pool_group_and_flags() -> None:
    assert pool_resource("inference.networking.x-k8s.io").version == "v1alpha2"
    with pytest.raises(PoolSpecError):
        pool_resource("example.com")
    assert parse_selector_flag("app=m, tier==gpu") == {"app": "m", "tier": "gpu"}
    for bad in ("app", "", "app!=m"):
        with pytest.raises(PoolSpecError):
            parse_selector_flag(bad)
    assert parse_ports_flag(["8000,8001", "8002"]) == (8000, 8001, 8002)
    with pytest.raises(PoolSpecError):
        parse_ports_flag(["80x"])
    spec = standalone_pool("s", "ns", {"app": "m"}, (8000,))
    assert spec.label_selector == "app=m" and spec.namespace == "ns"


def test_readiness_rules() -> None:
    assert pod_is_ready(pod("a", "10.0.0.1"))
    assert not pod_is_ready(pod("a", "10.0.0.1", ready=False))
    assert not pod_is_ready(pod("a", None))
    assert not pod_is_ready(pod("a", "10.0.0.1", terminating=True))
    no_conditions = pod("a", "10.0.0.1")
    no_conditions["status"]["conditions"] = []
    assert not pod_is_ready(no_conditions)


def test_each_target_port_is_a_rank_with_pod_labels() -> None:
    labels = {"app": "m", "inference.networking.k8s.io/engine-type": "sglang", "llm-d.ai/role": "decode"}
    eps = pod_endpoints(pod("vllm-0", "10.0.0.1", labels=labels), POOL)
    assert [(e.name, e.key) for e in eps] == [
        ("vllm-0-rank-0", "10.0.0.1:8000"), ("vllm-0-rank-1", "10.0.0.1:8001"), ("vllm-0-rank-2", "10.0.0.1:8002")]
    assert eps[0].labels["inference.networking.k8s.io/engine-type"] == "sglang"
    assert eps[0].labels["llm-d.ai/role"] == "decode"


def test_active_ports_annotation_limits_ranks() -> None:
    p = pod("vllm-0", "10.0.0.1", labels={"app": "m"},
            annotations={"inference.networking.k8s.io/active-ports": "8002, 8000, 9999, x"})
    assert [(e.name, e.port) for e in pod_endpoints(p, POOL)] == [("vllm-0-rank-0", 8000), ("vllm-0-rank-2", 8002)]
    none = pod("vllm-1", "10.0.0.2", labels={"app": "m"},
               annotations={"inference.networking.k8s.io/active-ports": ""})
    assert pod_endpoints(none, POOL) == []


def test_selector_and_ipv6() -> None:
    pods = [pod("a", "10.0.0.1", labels={"app": "m"}), pod("b", "10.0.0.2", labels={"app": "x"}),
            pod("c", "fd00::3", labels={"app": "m"})]
    single = PoolSpec("p", "default", (("app", "m"),), (8000,))
    assert [e.key for e in endpoints_for(pods, single)] == ["10.0.0.1:8000", "[fd00::3]:8000"]
