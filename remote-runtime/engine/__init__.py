"""The run engine: every transition of a run, in one transaction each."""

from .facade import RunEngine

__all__ = ["RunEngine"]
