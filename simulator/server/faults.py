"""Fault injection for a simulated model server: errors, latency spikes, hangs and crashes.

Why it exists: a picker is judged as much by what it does when an endpoint misbehaves -- retries,
circuit breaking, staleness, failover -- as by its routing. Faults are set by ``--faults JSON`` at start
and changed at run time with ``POST /admin/faults`` (same JSON; it replaces the whole fault set,
``DELETE`` clears it, ``GET`` shows it). They apply to the inference endpoints (``/v1/completions``,
``/v1/chat/completions``), never to health, metrics or admin routes::

    {
      "error_rates": {"503": 0.2, "429": 0.05},  // per status code, fraction of requests (sum <= 1)
      "latency_spike_rate": 0.1,                 // fraction of requests delayed before processing
      "latency_spike_s": 2.0,                    // by this many model seconds (scaled by --time-scale)
      "hang_rate": 0.0,                          // fraction accepted and never answered
      "crash": false,                            // true: close the listener and every connection now
      "crash_after_s": null                      // crash this many real seconds after the faults are set
    }

Each request draws one number from the server's seeded RNG: it falls into an error code, a hang, or
neither; a spike is drawn independently.
"""

from __future__ import annotations

import random
from dataclasses import asdict, dataclass, field
from typing import Any, Literal

__all__ = ["FaultConfig", "FaultDecision", "decide", "parse_faults"]


@dataclass(frozen=True, slots=True)
class FaultConfig:
    error_rates: dict[int, float] = field(default_factory=dict)
    latency_spike_rate: float = 0.0
    latency_spike_s: float = 0.0
    hang_rate: float = 0.0
    crash: bool = False
    crash_after_s: float | None = None

    def __post_init__(self) -> None:
        for code, rate in self.error_rates.items():
            if not 400 <= code <= 599:
                raise ValueError(f"fault error code {code} is not an HTTP error status")
            if not 0.0 <= rate <= 1.0:
                raise ValueError(f"fault error rate for {code} must be in [0, 1]")
        if sum(self.error_rates.values()) + self.hang_rate > 1.0 + 1e-9:
            raise ValueError("fault error rates plus hang_rate must not exceed 1")
        for name in ("latency_spike_rate", "hang_rate"):
            if not 0.0 <= getattr(self, name) <= 1.0:
                raise ValueError(f"fault {name} must be in [0, 1]")
        if self.latency_spike_s < 0:
            raise ValueError("fault latency_spike_s must be >= 0")
        if self.crash_after_s is not None and self.crash_after_s < 0:
            raise ValueError("fault crash_after_s must be >= 0")

    @property
    def any_request_faults(self) -> bool:
        return bool(self.error_rates) or self.latency_spike_rate > 0 or self.hang_rate > 0

    def to_json(self) -> dict[str, Any]:
        data = asdict(self)
        data["error_rates"] = {str(k): v for k, v in self.error_rates.items()}
        return data


@dataclass(frozen=True, slots=True)
class FaultDecision:
    """What to do to one request."""

    action: Literal["serve", "error", "hang"] = "serve"
    status: int = 0
    delay_s: float = 0.0


SERVE = FaultDecision()


def decide(faults: FaultConfig, rng: random.Random) -> FaultDecision:
    if not faults.any_request_faults:
        return SERVE
    delay = 0.0
    if faults.latency_spike_rate > 0 and rng.random() < faults.latency_spike_rate:
        delay = faults.latency_spike_s
    draw = rng.random()
    acc = 0.0
    for code, rate in faults.error_rates.items():
        acc += rate
        if draw < acc:
            return FaultDecision("error", code, delay)
    if draw < acc + faults.hang_rate:
        return FaultDecision("hang", 0, delay)
    return FaultDecision("serve", 0, delay) if delay else SERVE


def parse_faults(data: Any) -> FaultConfig:
    """A FaultConfig from decoded JSON (unknown keys are an error)."""
    if data is None:
        return FaultConfig()
    if not isinstance(data, dict):
        raise ValueError("faults must be a JSON object")
    allowed = set(FaultConfig.__dataclass_fields__)
    unknown = sorted(set(data) - allowed)
    if unknown:
        raise ValueError(f"unknown fault keys: {', '.join(unknown)}")
    values = dict(data)
    rates = values.get("error_rates", {}) or {}
    if not isinstance(rates, dict):
        raise ValueError("error_rates must be an object of status code -> rate")
    try:
        values["error_rates"] = {int(k): float(v) for k, v in rates.items()}
    except (TypeError, ValueError) as exc:
        raise ValueError(f"error_rates: {exc}") from exc
    for key in ("latency_spike_rate", "latency_spike_s", "hang_rate"):
        if key in values:
            if isinstance(values[key], bool) or not isinstance(values[key], (int, float)):
                raise ValueError(f"{key} must be a number")
            values[key] = float(values[key])
    if "crash" in values and not isinstance(values["crash"], bool):
        raise ValueError("crash must be a boolean")
    if values.get("crash_after_s") is not None:
        if isinstance(values["crash_after_s"], bool) or not isinstance(values["crash_after_s"], (int, float)):
            raise ValueError("crash_after_s must be a number or null")
        values["crash_after_s"] = float(values["crash_after_s"])
    return FaultConfig(**values)
