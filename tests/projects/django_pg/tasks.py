"""A Django task that holds its connection for a while; the module queries at import, as projects do."""

import os
import time
from pathlib import Path

from django.db import connection

from outlast import task

SCRATCH = Path(os.environ["OUTLAST_TEST_SCRATCH"])


def _backend() -> int:
    with connection.cursor() as cursor:
        cursor.execute("SELECT pg_backend_pid()")
        return cursor.fetchone()[0]


(SCRATCH / "import-backend.txt").write_text(str(_backend()))  # a connection opened by the fork server


@task(id="dj-backend", retry={"max_attempts": 1})
def dj_backend(payload: dict) -> dict:
    first = _backend()
    time.sleep(payload.get("hold", 1))
    return {"first": first, "last": _backend(), "process": os.environ["OUTLAST_PROCESS_ID"]}
