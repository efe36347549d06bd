"""How a workload is driven: a request count at one arrival rate, or staged rates whose count follows.

Why it exists: every workload recipe (shared-prefix, the synthetic presets, multi-turn chat, mixed LoRA)
decides *what* its requests contain; *when* they arrive and *how many* there are is the same question for
all of them, answered here once. A workload holds ``num_requests`` and ``arrivals`` (a :data:`Load`):

- ``Arrivals`` with ``num_requests`` -- that many requests at one rate (the original behaviour, drawing the
  very same times as before);
- ``Stages`` with ``num_requests=None`` -- the count is the stages' ``rate x duration`` sum and every
  request carries the index of the stage it was sent in.
"""

from __future__ import annotations

import random
from collections.abc import Iterator

from simulator.fleet.arrivals import Arrivals
from simulator.fleet.stages import Stages

__all__ = ["Load", "check_load", "request_count", "schedule"]

Load = Arrivals | Stages


def check_load(num_requests: int | None, load: Load) -> None:
    """``ValueError`` unless the pair is valid (see the module docstring)."""
    if isinstance(load, Stages):
        if num_requests is not None and num_requests != load.num_requests:
            raise ValueError(f"with staged arrivals the request count follows from the stages "
                             f"({load.num_requests}); pass num_requests=None, not {num_requests}")
    elif isinstance(load, Arrivals):
        if num_requests is None:
            raise ValueError("num_requests is required with a single arrival rate (Arrivals)")
        if num_requests < 0:
            raise ValueError("num_requests must be >= 0")
    else:
        raise TypeError(f"arrivals must be Arrivals or Stages, not {type(load).__name__}")


def request_count(num_requests: int | None, load: Load) -> int:
    """How many requests the workload sends."""
    if isinstance(load, Stages):
        return load.num_requests
    assert num_requests is not None  # check_load ran in the workload's __post_init__
    return num_requests


def schedule(num_requests: int | None, load: Load, rng: random.Random) -> Iterator[tuple[float, int]]:
    """``(arrival time, stage index)`` per request, non-decreasing; stage 0 throughout for ``Arrivals``."""
    if isinstance(load, Stages):
        yield from load.times(rng)
        return
    times = load.times(rng)
    for _ in range(request_count(num_requests, load)):
        yield next(times), 0
