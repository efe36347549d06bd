"""LoRA adapter residency: ``max_loras`` GPU slots backed by a ``max_cpu_loras`` host cache.

Why it exists: with multi-LoRA serving, which adapters an engine has loaded -- and how long it takes to
load another -- decides where an adapter's requests should go (``vllm:lora_requests_info``). This mirrors
vLLM's worker-side LRU adapter managers: a step's batch may use at most ``max_loras`` distinct adapters
(the scheduler enforces that); before the forward runs, every adapter of the batch must sit in a GPU slot.
Activating one already in host memory costs ``activate_s``; one not in host memory must first be loaded
from storage (``load_s``). Both caches evict least-recently-used adapters that the batch does not need.
The cost is paid inside the step, stretching it, as vLLM's synchronous ``set_active_adapters`` does.
"""

from __future__ import annotations

from collections import OrderedDict
from collections.abc import Iterable

__all__ = ["LoraSlots"]


class LoraSlots:
    __slots__ = ("_cpu", "_gpu", "activate_s", "load_s", "loads", "max_cpu_loras", "max_loras")

    def __init__(self, max_loras: int, max_cpu_loras: int, load_s: float, activate_s: float) -> None:
        if max_loras < 1 or max_cpu_loras < max_loras:
            raise ValueError("need 1 <= max_loras <= max_cpu_loras")
        self.max_loras = max_loras
        self.max_cpu_loras = max_cpu_loras
        self.load_s = load_s
        self.activate_s = activate_s
        self._gpu: OrderedDict[str, None] = OrderedDict()
        self._cpu: OrderedDict[str, None] = OrderedDict()
        # Adapters loaded from storage so far.
        self.loads = 0

    @property
    def gpu_resident(self) -> list[str]:
        """Adapters in GPU slots, least recently used first."""
        return list(self._gpu)

    @property
    def cpu_resident(self) -> list[str]:
        return list(self._cpu)

    def preload(self, name: str) -> float:
        """Bring an adapter into host memory ahead of use (``/v1/load_lora_adapter``); returns the cost."""
        if name in self._cpu:
            self._cpu.move_to_end(name)
            return 0.0
        self._insert(self._cpu, name, self.max_cpu_loras, keep=())
        self.loads += 1
        return self.load_s

    def unload(self, name: str) -> None:
        self._gpu.pop(name, None)
        self._cpu.pop(name, None)

    def activate(self, names: Iterable[str]) -> float:
        """Make every adapter of a batch GPU-resident; returns the time it costs the step."""
        wanted = list(dict.fromkeys(names))
        cost = 0.0
        keep = set(wanted)
        for name in wanted:
            if name in self._gpu:
                self._gpu.move_to_end(name)
                if name in self._cpu:
                    self._cpu.move_to_end(name)
                continue
            if name in self._cpu:
                self._cpu.move_to_end(name)
            else:
                self._insert(self._cpu, name, self.max_cpu_loras, keep)
                self.loads += 1
                cost += self.load_s
            self._insert(self._gpu, name, self.max_loras, keep)
            cost += self.activate_s
        return cost

    def _insert(self, cache: OrderedDict[str, None], name: str, capacity: int, keep: Iterable[str]) -> None:
        keep_set = set(keep)
        while len(cache) >= capacity:
            victim = next((n for n in cache if n not in keep_set), None)
            if victim is None:
                break
            del cache[victim]
            if cache is self._cpu:
                # An adapter dropped from host memory is unregistered, so it leaves its GPU slot too.
                self._gpu.pop(victim, None)
        cache[name] = None
