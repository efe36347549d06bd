"""The pure parts of benchmarks/peers.py: command lines, /workers parsing, metric counters, install stamps."""

from __future__ import annotations

from pathlib import Path

import pytest

import benchmarks.peers as peers
from benchmarks.peers import (
    MATCHED_THRESHOLDS,
    PEERS,
    PeerRouter,
    build_command,
    counter_by_label,
    ensure_installed,
    installed_python,
    not_ready,
    parse_workers,
    prefix_routing_counts,
    token_source_counts,
)

WORKERS = ["http://127.0.0.2:8000", "http://127.0.0.3:8000"]
PY = Path("/cache/venv/bin/python")


def test_pins_are_exact() -> None:
    assert PEERS["sglang-router"].pin == "sglang-router==0.3.2"
    assert PEERS["vllm-router"].pin == "vllm-router==0.1.17"


def test_sglang_command_binds_loopback_with_fair_defaults() -> None:
    cmd = build_command(PEERS["sglang-router"], PY, WORKERS, policy="cache_aware", host="127.0.0.1", port=41000,
                        metrics_port=41001)
    assert cmd == [
        str(PY), "-m", "sglang_router.launch_router",
        "--host", "127.0.0.1", "--port", "41000",
        "--worker-urls", *WORKERS,
        "--policy", "cache_aware",
        "--prometheus-host", "127.0.0.1", "--prometheus-port", "41001",
        "--log-level", "warn",
        "--health-check-interval-secs", "5", "--worker-startup-check-interval", "1",
    ]


def test_vllm_command_spells_its_log_level_and_appends_extra_args_last() -> None:
    cmd = build_command(PEERS["vllm-router"], PY, WORKERS, policy="round_robin", host="127.0.0.1", port=1,
                        metrics_port=2, extra_args=[*MATCHED_THRESHOLDS, "--health-check-interval-secs", "1"])
    assert cmd[:3] == [str(PY), "-m", "vllm_router.launch_router"]
    assert cmd[cmd.index("--log-level") + 1] == "warning"
    assert cmd[cmd.index("--policy") + 1] == "round_robin"
    assert cmd[-4:] == ["--balance-abs-threshold", "8", "--health-check-interval-secs", "1"]
    # argparse keeps the last value: the extra args override the fair default.
    assert cmd.index("--health-check-interval-secs") < len(cmd) - 2


def test_no_cache_aware_threshold_is_passed_by_default() -> None:
    for spec in PEERS.values():
        cmd = build_command(spec, PY, WORKERS, policy="cache_aware", host="127.0.0.1", port=1, metrics_port=2)
        assert not [a for a in cmd if a.startswith(("--cache-threshold", "--balance-"))]
        assert "--disable-retries" not in cmd and "--disable-circuit-breaker" not in cmd


@pytest.mark.parametrize("extra", [["--port", "30000"], ["--host=0.0.0.0"], ["--prometheus-port", "29000"],
                                   ["--prometheus-host", "0.0.0.0"], ["--worker-urls", "http://x"],
                                   ["--policy", "random"], ["--log-level", "info"]])
def test_managed_flags_are_refused_in_extra_args(extra: list[str]) -> None:
    with pytest.raises(ValueError, match="set by PeerRouter"):
        build_command(PEERS["vllm-router"], PY, WORKERS, policy="cache_aware", host="127.0.0.1", port=1,
                      metrics_port=2, extra_args=extra)
    with pytest.raises(ValueError, match="set by PeerRouter"):
        PeerRouter("vllm-router", PY, WORKERS, extra_args=extra, log_path=Path("/nonexistent/log"))


@pytest.mark.parametrize("host", ["0.0.0.0", "10.0.0.1", "localhost", ""])
def test_only_loopback_addresses(host: str) -> None:
    with pytest.raises(ValueError, match="loopback"):
        build_command(PEERS["sglang-router"], PY, WORKERS, policy="cache_aware", host=host, port=1, metrics_port=2)
    with pytest.raises(ValueError, match="loopback"):
        PeerRouter("sglang-router", PY, WORKERS, host=host, log_path=Path("/nonexistent/log"))


def test_other_invalid_commands() -> None:
    spec = PEERS["sglang-router"]
    with pytest.raises(ValueError, match="at least one worker"):
        build_command(spec, PY, [], policy="cache_aware", host="127.0.0.1", port=1, metrics_port=2)
    with pytest.raises(ValueError, match="must differ"):
        build_command(spec, PY, WORKERS, policy="cache_aware", host="127.0.0.1", port=7, metrics_port=7)
    with pytest.raises(ValueError, match="unknown peer router"):
        PeerRouter("nginx", PY, WORKERS, log_path=Path("/nonexistent/log"))


def test_router_not_started_has_no_pid() -> None:
    router = PeerRouter("vllm-router", PY, [w + "/" for w in WORKERS], log_path=Path("/nonexistent/log"))
    assert router.pid is None and not router.running
    assert router.worker_urls == WORKERS


# /workers answers as observed from sglang-router 0.3.2 and vllm-router 0.1.17 (trimmed).
SGLANG_WORKERS = {
    "workers": [
        {"id": "63b9", "url": "http://127.0.0.3:8000", "model_id": "m", "priority": 50, "cost": 1.0,
         "worker_type": "regular", "is_healthy": True, "load": 0, "connection_mode": "HTTP",
         "metadata": {"dp_size": "1"}, "disable_health_check": False},
    ],
    "total": 1, "stats": {"prefill_count": 0, "decode_count": 0, "regular_count": 1},
}
VLLM_WORKERS = {
    "workers": [
        {"url": "http://127.0.0.2:8000", "model_id": "unknown", "worker_type": "regular", "is_healthy": False,
         "load": 0, "connection_mode": "Http", "priority": 50, "cost": 1.0},
        {"url": "http://127.0.0.3:8000/", "model_id": "unknown", "worker_type": "regular", "is_healthy": True,
         "load": 0, "connection_mode": "Http", "priority": 50, "cost": 1.0},
    ],
    "total": 2, "stats": {"prefill_count": 0, "decode_count": 0, "regular_count": 2},
}


def test_parse_workers_both_shapes() -> None:
    assert parse_workers(SGLANG_WORKERS) == {"http://127.0.0.3:8000": True}
    assert parse_workers(VLLM_WORKERS) == {"http://127.0.0.2:8000": False, "http://127.0.0.3:8000": True}
    assert parse_workers({"workers": [], "total": 0}) == {}
    for garbage in ({"urls": []}, [], "x", {"workers": {}}):
        with pytest.raises(ValueError, match="not a /workers answer"):
            parse_workers(garbage)


def test_not_ready_lists_unregistered_and_unhealthy_workers() -> None:
    # sglang before registration: empty list -> nothing is ready (never vacuously true).
    assert not_ready(parse_workers({"workers": [], "total": 0}), WORKERS) == WORKERS
    assert not_ready(parse_workers(SGLANG_WORKERS), WORKERS) == ["http://127.0.0.2:8000"]
    assert not_ready(parse_workers(VLLM_WORKERS), WORKERS) == ["http://127.0.0.2:8000"]
    healthy = {"workers": [{"url": w, "is_healthy": True} for w in WORKERS]}
    assert not_ready(parse_workers(healthy), [w + "/" for w in WORKERS]) == []


VLLM_METRICS = """\
# TYPE vllm_router_prefix_routing_decisions_total counter
vllm_router_prefix_routing_decisions_total{policy="cache_aware",stage="regular",outcome="prefix_hit"} 12
vllm_router_prefix_routing_decisions_total{policy="cache_aware",stage="regular",outcome="prefix_miss"} 8
vllm_router_prefix_routing_decisions_total{policy="cache_aware",stage="prefill",outcome="prefix_miss"} 1
# TYPE vllm_router_kv_routing_inputs_total counter
vllm_router_kv_routing_inputs_total{transport="http",result="render"} 60
"""


def test_metric_counters() -> None:
    assert prefix_routing_counts(VLLM_METRICS) == {"prefix_hit": 12.0, "prefix_miss": 9.0}
    assert token_source_counts(VLLM_METRICS) == {"render": 60.0}
    assert counter_by_label(VLLM_METRICS, "vllm_router_kv_routing_inputs_total", "transport") == {"http": 60.0}
    assert prefix_routing_counts("") == {}


def _fake_install(cache: Path, name: str, pin: str | None) -> Path:
    python = cache / name / "venv" / "bin" / "python"
    python.parent.mkdir(parents=True)
    python.touch()
    if pin is not None:
        (cache / name / "installed-pin.txt").write_text(pin + "\n")
    return python


def test_installed_python_checks_the_stamp(tmp_path: Path) -> None:
    assert installed_python("vllm-router", tmp_path) is None
    python = _fake_install(tmp_path, "vllm-router", None)
    assert installed_python("vllm-router", tmp_path) is None  # pip never finished
    (tmp_path / "vllm-router" / "installed-pin.txt").write_text("vllm-router==0.1.16\n")
    assert installed_python("vllm-router", tmp_path) is None  # another version
    (tmp_path / "vllm-router" / "installed-pin.txt").write_text("vllm-router==0.1.17\n")
    assert installed_python("vllm-router", tmp_path) == python
    with pytest.raises(ValueError, match="unknown peer router"):
        installed_python("nginx", tmp_path)


def test_ensure_installed_reuses_a_stamped_venv(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    python = _fake_install(tmp_path, "sglang-router", "sglang-router==0.3.2")

    def no_run(cmd: list[str], log: Path, timeout: float) -> None:
        raise AssertionError(f"should not run {cmd}")

    monkeypatch.setattr(peers, "_run_logged", no_run)
    said: list[str] = []
    assert ensure_installed("sglang-router", tmp_path, progress=said.append) == python
    assert said == [f"sglang-router: sglang-router==0.3.2 already installed in {python.parent.parent}"]


def test_ensure_installed_creates_venv_then_pip_installs_the_pin(tmp_path: Path,
                                                                monkeypatch: pytest.MonkeyPatch) -> None:
    ran: list[list[str]] = []

    def fake_run(cmd: list[str], log: Path, timeout: float) -> None:
        ran.append(cmd)
        if cmd[1:3] == ["-m", "venv"]:
            python = Path(cmd[3]) / "bin" / "python"
            python.parent.mkdir(parents=True)
            python.touch()

    monkeypatch.setattr(peers, "_run_logged", fake_run)
    python = ensure_installed("vllm-router", tmp_path, progress=lambda _: None)
    assert python == tmp_path / "vllm-router" / "venv" / "bin" / "python"
    assert ran[0][1:] == ["-m", "venv", str(tmp_path / "vllm-router" / "venv")]
    assert ran[1][0] == str(python) and ran[1][-1] == "vllm-router==0.1.17" and "install" in ran[1]
    assert installed_python("vllm-router", tmp_path) == python
    # A failing pip leaves no stamp, so the next call tries again (into the existing venv).
    (tmp_path / "vllm-router" / "installed-pin.txt").write_text("vllm-router==0.1.16\n")

    def failing_pip(cmd: list[str], log: Path, timeout: float) -> None:
        ran.append(cmd)
        raise RuntimeError("pip failed")

    monkeypatch.setattr(peers, "_run_logged", failing_pip)
    with pytest.raises(RuntimeError, match="pip failed"):
        ensure_installed("vllm-router", tmp_path, progress=lambda _: None)
    assert ran[-1][1:3] == ["-m", "pip"]  # venv reused, only pip ran
    assert installed_python("vllm-router", tmp_path) is None


def test_main_rejects_unknown_names(capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit) as exit_info:
        peers.main(["install", "--cache-dir", "/nonexistent", "nginx"])
    assert exit_info.value.code == 2
    assert "unknown router(s) nginx" in capsys.readouterr().err


def test_ensure_installed_rechecks_under_the_lock(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """A caller that waited for another's install finds the stamp once it holds the lock and installs nothing."""
    python = tmp_path / "vllm-router" / "venv" / "bin" / "python"
    answers = [None, python]
    monkeypatch.setattr(peers, "installed_python", lambda name, cache_dir: answers.pop(0))

    def no_run(cmd: list[str], log: Path, timeout: float) -> None:
        raise AssertionError(f"should not run {cmd}")

    monkeypatch.setattr(peers, "_run_logged", no_run)
    said: list[str] = []
    assert ensure_installed("vllm-router", tmp_path, progress=said.append) == python
    assert said == [f"vllm-router: vllm-router==0.1.17 installed meanwhile in {python.parent.parent}"]
    assert (tmp_path / "vllm-router" / ".lock").exists()
