# Shared by the scripts: create .venv if needed and install the project with the given extras.
set -euo pipefail
ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
VENV="${OUTLAST_VENV:-$ROOT/.venv}"
PYTHON="${PYTHON:-python3}"

install_project() {  # $1: extras, e.g. "runtime" or "test"
  if [ ! -x "$VENV/bin/python" ]; then
    "$PYTHON" -m venv "$VENV"
  fi
  local log="$VENV/install.log"
  # pip and the build backend are chatty even with --quiet: keep their output for a failure.
  if ! { "$VENV/bin/python" -m pip install --quiet --upgrade pip &&
         "$VENV/bin/python" -m pip install --quiet -e "$ROOT[$1]"; } >"$log" 2>&1; then
    cat "$log" >&2
    echo "installing outlast[$1] failed (log above, also in $log)" >&2
    exit 1
  fi
}

ensure_postgres() {  # the test suite runs every engine test on PostgreSQL too
  if pg_isready -q -h 127.0.0.1 -p 5432 2>/dev/null; then
    return
  fi
  echo "PostgreSQL is not answering on 127.0.0.1:5432; starting it" >&2
  pg_ctlcluster --skip-systemctl-redirect "$(ls /etc/postgresql)" main start
  for _ in $(seq 1 30); do
    pg_isready -q -h 127.0.0.1 -p 5432 && return
    sleep 1
  done
  echo "PostgreSQL did not start" >&2
  exit 1
}

install_criu() {  # checkpointing needs CRIU >= 4.2; on hosts where it cannot run, waits stay in memory
  if [ "$(uname -s)" = "Linux" ]; then
    sh "$ROOT/scripts/install-criu.sh" || echo "CRIU could not be installed; checkpointing stays off" >&2
  fi
}

apt_install() {  # $1: Debian package, $2: a file it provides (installed already: nothing to do), $3: what needs it
  if [ -x "$2" ]; then
    return
  fi
  if ! command -v apt-get >/dev/null; then
    echo "no apt-get here: install $1 ($2) for $3" >&2
  # A fresh machine may have no package lists yet: refresh them once if the first try fails.
  elif ! out="$(DEBIAN_FRONTEND=noninteractive apt-get install -y "$1" 2>&1)" &&
       ! out="$(apt-get update 2>&1 && DEBIAN_FRONTEND=noninteractive apt-get install -y "$1" 2>&1)"; then
    echo "apt-get install $1 failed ($3 need it); apt-get said:" >&2
    echo "$out" | tail -n 5 >&2
  fi
}

install_chromium() {  # the dashboard tests drive Debian's Chromium (never a browser Playwright downloads)
  apt_install chromium /usr/bin/chromium "the dashboard and realtime browser tests (they skip without it)"
}

install_netns_tools() {  # the multi-node tests put each worker in a network namespace of its own
  apt_install iproute2 /usr/sbin/ip "the cluster tests (tests/cluster)"
}
