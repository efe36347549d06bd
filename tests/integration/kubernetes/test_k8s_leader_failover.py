"""Two picker replicas with leader election on one Lease in the emulator, behind one Envoy that health-checks both.

Only the leader is Ready, so Envoy sends every stream there; the standby watches the cluster all along (its
datastore follows pod changes while it is standby). When the leader is stopped (SIGTERM) it hands the Lease
over and no request fails; when it crashes (SIGKILL) the Lease must expire first, so requests fail for about a
lease duration. Either way the new leader routes at once to pods that appeared while it was standby.
"""

from __future__ import annotations

import re
import signal
import time

from stack.http_client import request
from stack.picker_process import PickerProcess
from stack.polling import wait_until
from tests.integration.kubernetes.conftest import KubeGateway, Traffic, served_set
from tests.kube_apiserver_emulator import LEASE, POOL_V1, inference_pool

# Envoy health-checks pickers every 0.5 s (healthy after one success, unhealthy after two failures): a 2 s
# handover grace gives 1 s of overlap and 1 s of NOT_SERVING-but-accepting.
HA_FLAGS = ("--ha-enable-leader-election", "--ha-lease-duration", "2", "--ha-renew-deadline", "1.5",
            "--ha-retry-period", "0.2", "--ha-handover-grace", "2")
LEASE_NAME = "epp-default-pool.gateway-api-inference-extension.sigs.k8s.io"


def ready_pods(picker: PickerProcess) -> int:
    text = request(picker.metrics_url + "/metrics", time_limit=2).text
    match = re.search(r'^inference_pool_ready_pods\{name="pool"\} ([0-9.]+)$', text, re.M)
    return int(float(match.group(1))) if match else -1


def roles(gw: KubeGateway) -> tuple[PickerProcess, PickerProcess]:
    """(leader, standby) by their readiness, once exactly one is SERVING."""
    def probe() -> tuple[PickerProcess, PickerProcess] | None:
        states = [gw.readiness(p) if p.running() else "DOWN" for p in gw.pickers]
        serving = [p for p, s in zip(gw.pickers, states, strict=True) if s == "SERVING"]
        others = [p for p, s in zip(gw.pickers, states, strict=True) if s == "NOT_SERVING"]
        return (serving[0], others[0]) if len(serving) == 1 and others else None
    return wait_until(probe, within=10, interval=0.05, what="one leader and one standby")


def holder(gw: KubeGateway) -> str | None:
    lease = gw.emu.get(LEASE, "default", LEASE_NAME)
    return lease["spec"].get("holderIdentity") if lease else None


def outage(traffic: Traffic, t0: float) -> tuple[float, int]:
    """(seconds from t0 to the last failed request's start, failures) for requests started after t0."""
    failed = [r for r in traffic.since(t0) if r.status != 200]
    return (max(r.started for r in failed) - t0 if failed else 0.0), len(failed)


def test_leader_failover_keeps_serving(kube_gateway: KubeGateway) -> None:
    gw = kube_gateway
    for ip in ("127.0.0.2", "127.0.0.3", "127.0.0.4"):
        gw.serve(ip)
    gw.emu.create(POOL_V1, inference_pool("pool", {"app": "model"}, [gw.port]))
    gw.add_pod("pod-a", "127.0.0.2")
    gw.add_pod("pod-b", "127.0.0.3")
    gw.start_pickers(2, extra=HA_FLAGS)
    leader, standby = roles(gw)
    wait_until(lambda: ready_pods(standby) == 2, within=5, what="the standby's datastore warm")
    gw.start_envoy()
    wait_until(lambda: sorted(gw.picker_health_in_envoy().values()) == ["/failed_active_hc", "healthy"],
               within=10, what="Envoy sees one healthy picker")

    with Traffic(gw.url) as traffic:
        traffic.wait_for(lambda rs: len(served_set(rs)) == 2, what="traffic through the leader")
        # A pod appears while the standby is standby: it must know it when it takes over.
        t_pod = gw.add_pod("pod-c", "127.0.0.4")
        wait_until(lambda: ready_pods(standby) == 3, within=1.0, what="standby follows pod changes")

        # 1. Graceful: SIGTERM; the leader releases the Lease and the standby takes over.
        t0 = time.monotonic()
        leader.process.signal(signal.SIGTERM)
        wait_until(lambda: holder(gw) == "picker-" + str(gw.pickers.index(standby)), within=3, interval=0.02,
                   what="standby holds the Lease")
        takeover = time.monotonic() - t0
        traffic.wait_for(lambda rs: any(r.status == 200 and r.started > t0 + 0.1 and
                                        r.served == "127.0.0.4:" + str(gw.port) for r in rs),
                         within=5, what="serving again through the new leader, including pod-c")
        assert traffic.since(t_pod) and takeover < 1.0
        assert gw.emu.call(leader.wait_exit(6)) == 0  # after the handover grace and the drain
        t_settle = time.monotonic()
        traffic.wait_for(lambda rs: sum(r.started > t_settle + 0.5 for r in rs) >= 50, what="steady again")
        gap, failed = outage(traffic, t0)
        assert failed == 0, f"{failed} requests failed in the {gap:.2f}s after SIGTERM: the handover must be seamless"

        # 2. Crash: bring the old replica back as the standby, then SIGKILL the leader; the Lease must expire.
        gw.emu.call(leader.process.start())
        new_leader, new_standby = roles(gw)
        assert new_standby is leader
        wait_until(lambda: ready_pods(new_standby) == 3, within=5, what="restarted standby warm")
        wait_until(lambda: sorted(gw.picker_health_in_envoy().values()) == ["/failed_active_hc", "healthy"],
                   within=10, what="Envoy sees the restarted standby as unhealthy")
        t1 = time.monotonic()
        new_leader.kill()
        wait_until(lambda: gw.readiness(new_standby) == "SERVING", within=5, interval=0.05,
                   what="the standby takes the expired Lease")
        traffic.wait_for(lambda rs: any(r.status == 200 and r.started > time.monotonic() - 0.2 for r in rs),
                         within=5, what="serving again after the crash")
        t_settle = time.monotonic()
        traffic.wait_for(lambda rs: sum(r.started > t_settle + 0.5 for r in rs) >= 50, what="steady again")
        crash_gap, crash_failed = outage(traffic, t1)
        # Nobody releases a crashed leader's Lease: it must expire (2 s), then Envoy's next check (0.5 s).
        assert crash_gap < 2.0 + 1.5, f"requests failed for {crash_gap:.2f}s after the crash"
    assert served_set(traffic.since(t_settle)) == {f"127.0.0.{i}:{gw.port}" for i in (2, 3, 4)}
    print(f"graceful failover: Lease taken over in {takeover:.2f}s, failures for {gap:.2f}s ({failed}); "
          f"crash: failures for {crash_gap:.2f}s ({crash_failed})")

