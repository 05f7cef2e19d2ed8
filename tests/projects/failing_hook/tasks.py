"""A project whose on_process_start hook raises. Used by tests/test_imported_resources.py."""

from outlast import on_process_start, task


@on_process_start
def open_pool() -> None:
    raise RuntimeError("the pool refused")


@task(id="never-starts", retry={"max_attempts": 1})
def never_starts(payload: dict) -> str:
    return "ran"
