#!/usr/bin/env bash
# Install what the tests need into .venv, then lint and run the whole suite (SQLite and PostgreSQL).
source "$(dirname "${BASH_SOURCE[0]}")/_env.sh"
install_project test
install_criu
ensure_postgres
cd "$ROOT"
"$VENV/bin/ruff" check .
"$VENV/bin/python" -m pytest "$@"
