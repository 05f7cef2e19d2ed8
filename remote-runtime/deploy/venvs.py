"""Virtual environments for deployed versions, one per distinct set of requirements.

Keyed by a hash of the requirements file's text and the runtime's Python version, so a deploy
with unchanged dependencies reuses the environment and takes seconds. A version without
requirements runs on the runtime's own interpreter.

The environment can always import `outlast` (and whatever else the runtime has installed): a
`.pth` file adds the runtime's site-packages after the environment's own, so the bundle's pinned
requirements win and the SDK comes from the runtime that runs it. `--system-site-packages` would
not do here: from inside a virtualenv it points at the base interpreter, not at this install.
"""

from __future__ import annotations

import hashlib
import os
import site
import subprocess
import sys
from pathlib import Path

from ..objects import staged_directory
from ..worker.host_environment import host_environment

PIP_TIMEOUT = 900


class EnvironmentBuildFailed(Exception):
    """pip (or venv) failed; the message carries its output."""


def requirements_hash(text: str) -> str:
    lines = [line.strip() for line in text.splitlines() if line.strip() and not line.strip().startswith("#")]
    digest = hashlib.sha256(f"python{sys.version_info.major}.{sys.version_info.minor}\n".encode())
    digest.update("\n".join(lines).encode())
    return digest.hexdigest()[:32]


def python_for(venvs_dir: Path, requirements: str, cwd: Path) -> tuple[str, bool]:
    """The interpreter for these requirements, building its environment if needed; (python, built now)."""
    if not requirements.strip():
        return sys.executable, False
    target = venvs_dir / requirements_hash(requirements)
    python = target / "bin" / "python"
    if python.exists():
        return str(python), False
    # keep_existing: a concurrent build of the same hash may have won; then its result is used.
    with staged_directory(target, keep_existing=True) as staging:
        _run([sys.executable, "-m", "venv", "--without-pip", str(staging)], cwd)
        _link_runtime_site(staging)
        req_file = staging / "requirements.txt"
        req_file.write_text(requirements)
        _run([sys.executable, "-m", "pip", "--python", str(staging / "bin" / "python"), "install",
              "--disable-pip-version-check", "--no-input", "-r", str(req_file)], cwd)
    return str(python), True


def _link_runtime_site(venv: Path) -> None:
    code = "import sysconfig; print(sysconfig.get_path('purelib'))"
    purelib = subprocess.run([str(venv / "bin" / "python"), "-c", code], capture_output=True, text=True,
                             check=True).stdout.strip()
    paths = [p for p in (*site.getsitepackages(), site.getusersitepackages()) if os.path.isdir(p)]
    lines = "".join(f"import site; site.addsitedir({p!r})\n" for p in paths)
    Path(purelib, "zz_outlast_runtime.pth").write_text(lines)


def _build_environment() -> dict[str, str]:
    """pip runs the requirements' build backends, which is user code: the tasks' allow-list, plus what pip
    itself is configured with (PIP_*, proxies), never the runtime's secrets."""
    wanted = ("PIP_", "HTTP_PROXY", "HTTPS_PROXY", "NO_PROXY", "http_proxy", "https_proxy", "no_proxy")
    return {**host_environment(), **{k: v for k, v in os.environ.items() if k.startswith(wanted)}}


def _run(argv: list[str], cwd: Path) -> None:
    try:
        done = subprocess.run(argv, cwd=cwd, capture_output=True, text=True, timeout=PIP_TIMEOUT,
                              env=_build_environment())
    except subprocess.TimeoutExpired as exc:
        raise EnvironmentBuildFailed(f"{' '.join(argv[:4])} took longer than {PIP_TIMEOUT}s") from exc
    if done.returncode != 0:
        output = (done.stdout + done.stderr).strip()[-4000:]
        raise EnvironmentBuildFailed(f"{' '.join(argv[2:4])} failed (exit {done.returncode}):\n{output}")
