"""Task projects written on the fly for deployment tests: same task ids, different code per version."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

from tests.conftest import SECRET_KEY, RuntimeProcess

TASKS = '''
import hashlib
import os
import sys
import time
from pathlib import Path

from outlast import task, wait

CODE = {code!r}
SCRATCH = Path(os.environ["OUTLAST_TEST_SCRATCH"])


@task(id="which")
def which(payload, ctx):
    secret = os.environ.get("DEPLOY_SECRET")  # only its hash: the output is stored in plain text
    return {{"code": CODE, "version": ctx.version, "secret": secret and hashlib.sha256(secret.encode()).hexdigest(),
            "python": sys.executable, "cwd": os.getcwd()}}


@task(id="hold")
def hold(payload, ctx):
    """Runs until the test drops its marker file, then waits for a child run."""
    marker = SCRATCH / payload["marker"]
    (SCRATCH / (payload["marker"] + ".started")).write_text(CODE)
    while not marker.exists():
        time.sleep(0.05)
    child = which.trigger_and_wait({{}})
    return {{"code": CODE, "version": ctx.version, "child": child.unwrap()}}


@task(id="await-token")
async def await_token(payload, ctx):
    """Waits for a token the test completes: suspended (checkpointed where CRIU works), then resumed."""
    token = await wait.for_token(payload["token"])
    return {{"code": CODE, "version": ctx.version, "data": token.output}}
'''


def write_project(root: Path, code: str, *, extra: str = "", requirements: str | None = None) -> Path:
    root.mkdir(parents=True, exist_ok=True)
    (root / "tasks.py").write_text(TASKS.format(code=code) + extra)
    if requirements is not None:
        (root / "requirements.txt").write_text(requirements)
    return root


def cli(runtime: RuntimeProcess, *args: str, key: str = SECRET_KEY, env: dict[str, str] | None = None,
        ) -> subprocess.CompletedProcess[str]:
    environ = {**os.environ, "OUTLAST_API_URL": runtime.url, "OUTLAST_SECRET_KEY": key, "COLUMNS": "200",
               **(env or {})}
    return subprocess.run([sys.executable, "-m", "outlast.cli", *args], env=environ, capture_output=True,
                          text=True, timeout=300)


def deploy(runtime: RuntimeProcess, project: Path, *args: str, env: dict[str, str] | None = None,
           check: bool = True) -> subprocess.CompletedProcess[str]:
    done = cli(runtime, "deploy", "--project", str(project), *args, env=env)
    if check:
        assert done.returncode == 0, done.stdout + done.stderr + runtime.log()[-3000:]
    return done


def deployed_version(done: subprocess.CompletedProcess[str]) -> str:
    return next(line.split()[1] for line in done.stdout.splitlines() if line.startswith("version "))


def data_dir(runtime: RuntimeProcess) -> Path:
    return Path(runtime.args[runtime.args.index("--data-dir") + 1])
