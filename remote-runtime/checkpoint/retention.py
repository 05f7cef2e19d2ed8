"""Deleting the checkpoint images of runs that will never resume (canceled while waiting, say)."""

from __future__ import annotations

import logging
from collections.abc import Sequence
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from .store import CheckpointStore

log = logging.getLogger("outlast.engine")


class ImageDeleter:
    """Deletes images from `store`; a failure is logged, never raised (the run has moved on already)."""

    def __init__(self, store: CheckpointStore | None) -> None:
        self.store = store

    def delete(self, keys: Sequence[str]) -> None:
        for key in keys:
            if self.store is None:
                log.warning("checkpoint image %s is not deleted: this runtime has no checkpoint store", key)
                continue
            try:
                self.store.delete(key)
            except Exception:
                log.exception("could not delete checkpoint image %s", key)
