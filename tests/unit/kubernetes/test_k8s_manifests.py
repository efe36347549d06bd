"""The kustomize manifests agree with the code: the Deployment's args parse and pass serve's validation, the
ConfigMap loads as an EndpointPickerConfig, the InferencePool parses and points at the Service, RBAC grants
exactly what the watchers read, the security context matches the image, and each gateway example wires the
pool the way its gateway needs.

Rendering uses a small kustomize subset (resources, components, inline JSON6902 patches, labels, images) so the
test needs no binary; where ``kubectl`` is installed its ``kustomize`` output is compared with it.
"""

from __future__ import annotations

import argparse
import os
import re
import shutil
import subprocess
from pathlib import Path
from typing import Any

import pytest
import yaml

from endpoint_picker.cli import discovery
from endpoint_picker.cli.serve import add_arguments
from endpoint_picker.datastore import Datastore
from endpoint_picker.datastore.kubernetes.api import LEASES, PODS
from endpoint_picker.datastore.kubernetes.objective_resources import (
    INFERENCE_MODEL,
    OBJECTIVE_GROUP,
    model_rewrite_resource,
    objective_resource,
)
from endpoint_picker.datastore.kubernetes.pool import POOL_GROUP, parse_pool, pool_resource
from endpoint_picker.scheduling import load_config_text

ROOT = Path(__file__).resolve().parents[3]
MANIFESTS = ROOT / "manifests"
EXAMPLES = ["envoy-gateway", "istio", "kgateway"]


# --- a kustomize subset ---------------------------------------------------------------------------------------


def _json_patch(doc: dict[str, Any], ops: list[dict[str, Any]]) -> None:
    for op in ops:
        *parents, last = [p.replace("~1", "/").replace("~0", "~") for p in op["path"].lstrip("/").split("/")]
        target: Any = doc
        for part in parents:
            target = target[int(part)] if isinstance(target, list) else target[part]
        if op["op"] == "add" and isinstance(target, list):
            target.insert(len(target) if last == "-" else int(last), op["value"])
        elif op["op"] in ("add", "replace"):
            if isinstance(target, list):
                target[int(last)] = op["value"]
            else:
                if op["op"] == "replace":
                    assert last in target, f"replace of missing {op['path']}"
                target[last] = op["value"]
        else:
            raise NotImplementedError(op["op"])


def render(directory: Path) -> list[dict[str, Any]]:
    k = yaml.safe_load((directory / "kustomization.yaml").read_text())
    docs: list[dict[str, Any]] = []
    for entry in k.get("resources", []):
        path = directory / entry
        docs.extend(render(path) if path.is_dir() else [d for d in yaml.safe_load_all(path.read_text()) if d])
    for entry in k.get("components", []):
        component = yaml.safe_load((directory / entry / "kustomization.yaml").read_text())
        assert component["kind"] == "Component"
        _apply_patches(docs, component.get("patches", []))
    _apply_patches(docs, k.get("patches", []))
    for label in k.get("labels", []):
        for d in docs:
            d.setdefault("metadata", {}).setdefault("labels", {}).update(label["pairs"])
    for image in k.get("images", []):
        for d in docs:
            for c in d.get("spec", {}).get("template", {}).get("spec", {}).get("containers", []):
                if c["image"] == image["name"]:
                    c["image"] = f"{image['newName']}:{image['newTag']}"
    return docs


def _apply_patches(docs: list[dict[str, Any]], patches: list[dict[str, Any]]) -> None:
    for patch in patches:
        target = patch["target"]
        matched = [d for d in docs if d["kind"] == target["kind"] and d["metadata"]["name"] == target["name"]]
        assert matched, f"patch target {target} not found"
        for d in matched:
            _json_patch(d, yaml.safe_load(patch["patch"]))


def find(docs: list[dict[str, Any]], kind: str, name: str | None = None) -> dict[str, Any]:
    found = [d for d in docs if d["kind"] == kind and (name is None or d["metadata"]["name"] == name)]
    assert len(found) == 1, f"expected one {kind} {name or ''}, found {len(found)}"
    return found[0]


def with_ha(tmp_path: Path) -> Path:
    tmp_path.mkdir(parents=True, exist_ok=True)
    (tmp_path / "kustomization.yaml").write_text(yaml.safe_dump({
        "resources": [os.path.relpath(MANIFESTS / "base", tmp_path)],
        "components": [os.path.relpath(MANIFESTS / "components" / "ha", tmp_path)]}))
    return tmp_path


def serve_args(container: dict[str, Any]) -> argparse.Namespace:
    env = {"NAMESPACE": "inference"}
    args = [re.sub(r"\$\((\w+)\)", lambda m: env[m.group(1)], a) for a in container["args"]]
    parser = argparse.ArgumentParser()
    add_arguments(parser)
    return parser.parse_args(args)


# --- tests ----------------------------------------------------------------------------------------------------


@pytest.mark.skipif(shutil.which("kubectl") is None, reason="kubectl (kustomize) not installed")
@pytest.mark.parametrize("directory", ["base", *(f"examples/{e}" for e in EXAMPLES), "examples/sim-model-servers",
                                       "ha"])
def test_subset_renderer_matches_kustomize(directory: str, tmp_path: Path) -> None:
    path = with_ha(tmp_path / "ha") if directory == "ha" else MANIFESTS / directory
    out = subprocess.run(["kubectl", "kustomize", str(path)], capture_output=True, text=True, timeout=60, check=True)

    def key(d: dict[str, Any]) -> tuple[str, str]:
        return d["kind"], d["metadata"]["name"]
    assert sorted(yaml.safe_load_all(out.stdout), key=key) == sorted(render(path), key=key)


def test_deployment_runs_non_root_read_only_with_probes_and_valid_args() -> None:
    docs = render(MANIFESTS / "base")
    pod = find(docs, "Deployment", "endpoint-picker")["spec"]["template"]["spec"]
    container = pod["containers"][0]
    assert pod["securityContext"]["runAsNonRoot"] is True
    assert container["securityContext"] == {"allowPrivilegeEscalation": False, "readOnlyRootFilesystem": True,
                                            "capabilities": {"drop": ["ALL"]}}
    assert container["livenessProbe"]["grpc"] == {"port": 9003, "service": "liveness"}
    assert container["readinessProbe"]["grpc"] == {"port": 9003, "service": "readiness"}
    assert container["resources"]["requests"] and container["resources"]["limits"]["memory"]
    assert {v["mountPath"] for v in container["volumeMounts"]} >= {"/tmp", "/etc/endpoint-picker"}
    args = serve_args(container)
    discovery.Discovery(args, Datastore())  # exactly one source, flags consistent
    assert args.pool_name == "vllm-pool" and args.pool_namespace == "inference"
    assert args.grpc_port == 9002 and args.grpc_health_port == 9003 and args.metrics_port == 9090
    config = find(docs, "ConfigMap", "endpoint-picker-config")
    mount = next(v for v in container["volumeMounts"] if v["name"] == "config")["mountPath"]
    assert str(args.config_file) == f"{mount}/config.yaml"
    load_config_text(config["data"]["config.yaml"], source="configmap")
    dockerfile = (ROOT / "Dockerfile").read_text()
    uid = re.search(r"^USER (\d+):(\d+)$", dockerfile, re.M)
    assert uid and int(uid.group(1)) == pod["securityContext"]["runAsUser"] != 0


def test_service_pool_and_ports_line_up() -> None:
    docs = render(MANIFESTS / "base")
    service = find(docs, "Service", "endpoint-picker")
    container = find(docs, "Deployment")["spec"]["template"]["spec"]["containers"][0]
    named = {p["name"]: p["containerPort"] for p in container["ports"]}
    ports = {p["name"]: p for p in service["spec"]["ports"]}
    assert ports["grpc-ext-proc"]["port"] == 9002 and ports["grpc-ext-proc"]["appProtocol"] == "http2"
    assert ports["http-metrics"]["port"] == 9090
    assert all(p["targetPort"] in named for p in service["spec"]["ports"])
    pool_obj = find(docs, "InferencePool", "vllm-pool")
    pool = parse_pool(pool_obj)
    ref = pool_obj["spec"]["endpointPickerRef"]
    assert ref["name"] == service["metadata"]["name"] and ref["port"]["number"] == 9002
    sim = find(render(MANIFESTS / "examples" / "sim-model-servers"), "Deployment")["spec"]["template"]
    assert pool.selects(sim["metadata"]["labels"])
    assert [p["containerPort"] for p in sim["spec"]["containers"][0]["ports"]] == list(pool.target_ports)


def _rules(role: dict[str, Any]) -> set[tuple[str, str, str]]:
    return {(g, r, v) for rule in role["rules"] for g in rule["apiGroups"] for r in rule["resources"]
            for v in rule["verbs"]}


def test_rbac_is_read_only_and_covers_every_watch(tmp_path: Path) -> None:
    base = _rules(find(render(MANIFESTS / "base"), "Role"))
    assert {verb for _, _, verb in base} == {"get", "list", "watch"}
    watched = [pool_resource(POOL_GROUP), PODS, objective_resource(OBJECTIVE_GROUP),
               model_rewrite_resource(OBJECTIVE_GROUP), INFERENCE_MODEL]
    for resource in watched:
        for verb in ("list", "watch"):
            assert (resource.group, resource.plural, verb) in base, resource
    ha = _rules(find(render(with_ha(tmp_path)), "Role"))
    assert ha - base == {(LEASES.group, LEASES.plural, v) for v in ("get", "create", "update")}
    ha_container = find(render(with_ha(tmp_path)), "Deployment")["spec"]["template"]["spec"]["containers"][0]
    args = serve_args(ha_container)
    assert args.ha_enable_leader_election is True
    ha_deployment = find(render(with_ha(tmp_path)), "Deployment")["spec"]
    assert ha_deployment["replicas"] == 2
    # Only the leader is Ready: a RollingUpdate would never see a new pod Ready and never stop the old leader.
    assert ha_deployment["strategy"] == {"type": "Recreate"}


@pytest.mark.parametrize("example", EXAMPLES)
def test_gateway_examples_route_to_the_pool(example: str) -> None:
    docs = render(MANIFESTS / "examples" / example)
    gateway = find(docs, "Gateway")
    route = find(docs, "HTTPRoute")
    assert route["spec"]["parentRefs"][0]["name"] == gateway["metadata"]["name"]
    backend = route["spec"]["rules"][0]["backendRefs"][0]
    assert (backend["group"], backend["kind"]) == ("inference.networking.k8s.io", "InferencePool")
    pool = find(docs, "InferencePool", backend["name"])
    mode = pool["spec"]["endpointPickerRef"]["failureMode"]
    if example == "istio":
        assert mode == "FailOpen"  # Istio's override_host fallback makes fail-open real
        rule = find(docs, "DestinationRule")
        assert rule["spec"]["host"] == find(docs, "Service")["metadata"]["name"]
        assert rule["spec"]["trafficPolicy"]["tls"] == {"mode": "SIMPLE", "insecureSkipVerify": True}
    else:
        assert mode == "FailClose"  # these gateways fail closed whatever the pool says
    if example == "envoy-gateway":
        assert pool["metadata"]["annotations"]["aigateway.envoyproxy.io/processing-body-mode"] == "duplex"


def test_every_manifest_is_yaml_with_a_kind() -> None:
    for path in MANIFESTS.rglob("*.yaml"):
        if "local-gateway" not in path.parts:
            assert all(doc and "kind" in doc for doc in yaml.safe_load_all(path.read_text())), path
