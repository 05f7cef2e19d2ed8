"""Machine presets: the CPU and memory an attempt gets, with Trigger.dev's names and sizes."""

from __future__ import annotations

from dataclasses import dataclass

GIB = 1024**3
OUT_OF_MEMORY_ERROR = "TaskOutOfMemoryError"  # run.error.type of an attempt its machine's memory limit ended


@dataclass(frozen=True)
class Machine:
    name: str
    cpus: float  # vCPUs: the CPU quota, in cores
    memory_gb: float  # memory limit in GiB, swap included (none)

    @property
    def memory_bytes(self) -> int:
        return int(self.memory_gb * GIB)

    def describe(self) -> str:
        return f"{self.name} ({self.cpus:g} vCPU, {self.memory_gb:g} GB)"


MACHINES: dict[str, Machine] = {m.name: m for m in (
    Machine("micro", 0.25, 0.25),
    Machine("small-1x", 0.5, 0.5),
    Machine("small-2x", 1, 1),
    Machine("medium-1x", 1, 2),
    Machine("medium-2x", 2, 4),
    Machine("large-1x", 4, 8),
    Machine("large-2x", 8, 16),
)}
DEFAULT_MACHINE = "small-1x"


def machine_preset(name: str | None) -> Machine:
    """The preset called `name` (None: the default); ValueError naming the valid ones otherwise."""
    try:
        return MACHINES[name or DEFAULT_MACHINE]
    except KeyError:
        raise ValueError(f"unknown machine preset {name!r}; choose one of {', '.join(MACHINES)}") from None


def machine_name(value: str | None) -> str | None:
    """A pydantic validator: the preset's name itself, or ValueError naming the valid ones."""
    if value is not None:
        machine_preset(value)
    return value
