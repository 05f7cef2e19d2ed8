#!/usr/bin/env bash
# Install what the tests need into .venv, then lint and run the whole suite (SQLite and PostgreSQL) in parallel.
source "$(dirname "${BASH_SOURCE[0]}")/_env.sh"
install_project test
install_criu
install_chromium
install_netns_tools
ensure_postgres
cd "$ROOT"
"$VENV/bin/ruff" check .
# Two workers (one per core here), each test file on one worker: most tests wait on real runtimes.
"$VENV/bin/python" -m pytest -n auto --dist loadfile "$@"
