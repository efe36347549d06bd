"""The fleet simulator: many engine cores driven in virtual time by a workload and a routing policy.

Why it exists: routers are judged at fleet scale -- hundreds of endpoints, thousands of requests per
second -- where no test bench reaches and sockets would only add noise. Here the same engine core the
HTTP simulator wraps runs in a discrete-event loop with no I/O, so a policy's TTFT / TPOT / throughput /
cache-hit numbers come out in seconds and identically on every run. ``cli`` is ``endpoint-picker fleet-sim``.

    from simulator.fleet import Arrivals, FleetReport, FleetSimulation, LeastLoaded, SyntheticWorkload, uniform_fleet
    workload = SyntheticWorkload.preset("mixed", 2000, Arrivals(rate=100))
    run = FleetSimulation(uniform_fleet(8), LeastLoaded()).run(workload.requests())
    print(FleetReport.of(run, workload.name).ttft.p99)
"""

from simulator.fleet.arrivals import Arrivals
from simulator.fleet.load import Load
from simulator.fleet.lora import LoraWorkload
from simulator.fleet.multi_turn import MultiTurnWorkload
from simulator.fleet.policies import POLICIES, LeastLoaded, RandomChoice, RoundRobin, make_policy
from simulator.fleet.policy import EndpointState, RoutingPolicy
from simulator.fleet.records import EndpointSummary, RequestRecord
from simulator.fleet.report import Distribution, FleetReport, Slo, Spread, markdown_table, percentile
from simulator.fleet.shared_prefix import SharedPrefixWorkload
from simulator.fleet.simulation import EndpointSpec, FleetRun, FleetSimulation, uniform_fleet
from simulator.fleet.stages import Stage, Stages
from simulator.fleet.synthetic import PRESETS, RequestClass, SyntheticWorkload
from simulator.fleet.workload import FleetRequest, Length, Workload

__all__ = [
    "POLICIES",
    "PRESETS",
    "Arrivals",
    "Distribution",
    "EndpointSpec",
    "EndpointState",
    "EndpointSummary",
    "FleetReport",
    "FleetRequest",
    "FleetRun",
    "FleetSimulation",
    "LeastLoaded",
    "Length",
    "Load",
    "LoraWorkload",
    "MultiTurnWorkload",
    "RandomChoice",
    "RequestClass",
    "RequestRecord",
    "RoundRobin",
    "RoutingPolicy",
    "SharedPrefixWorkload",
    "Slo",
    "Spread",
    "Stage",
    "Stages",
    "SyntheticWorkload",
    "Workload",
    "make_policy",
    "markdown_table",
    "percentile",
    "uniform_fleet",
]
