"""The few variables of the runtime's own environment that task code may see.

Task code is user code, and the runtime's environment holds its secrets (the encryption key, the
database URL, S3 credentials, the dashboard and token secrets) next to whatever else its host set.
So nothing is inherited by default: a task process (and a fork server, and the import step of a
deployment) starts from the allow-list below, then gets its project's `[tool.outlast.env]` and its
environment's variables, then the task protocol's OUTLAST_* variables. The allow-list is what an
interpreter and ordinary libraries need to behave as they do in a shell (`env -i` with these is
how sudo's env_reset, systemd units and Turborepo's strict mode start programs too):

- PATH, HOME, USER, LOGNAME, SHELL: finding programs and the user's files;
- LANG, LANGUAGE, LC_*, TZ: text encoding and time zone;
- TMPDIR, TEMP, TMP: where temporary files go;
- SSL_CERT_FILE, SSL_CERT_DIR, REQUESTS_CA_BUNDLE, CURL_CA_BUNDLE: trusted roots (public, not
  secrets; without them outbound TLS fails behind a corporate CA);
- VIRTUAL_ENV, LD_LIBRARY_PATH: an interpreter that needs them to start;
- the PYTHON* switches that change how the interpreter runs, not what it imports (PYTHONHASHSEED,
  PYTHONUTF8, PYTHONIOENCODING, PYTHONWARNINGS, PYTHONDEVMODE, PYTHONFAULTHANDLER,
  PYTHONTRACEMALLOC, PYTHONMALLOC, PYTHONDONTWRITEBYTECODE, PYTHONPYCACHEPREFIX, PYTHONNOUSERSITE,
  PYTHONSAFEPATH). PYTHONPATH and PYTHONHOME are not passed: they point at the runtime's packages,
  while a deployed version has a virtualenv of its own.

Proxy variables (HTTP_PROXY...) are not on the list: their URLs often carry credentials. An operator
who wants a host variable to reach tasks names it in OUTLAST_TASK_PASS_ENV (comma-separated names
or shell-style patterns, `HTTPS_PROXY,MYAPP_*`); the runtime's own secrets are never passed, even
when a pattern matches them.
"""

from __future__ import annotations

import fnmatch
import os
from collections.abc import Mapping

HOST_VARIABLES = frozenset({
    "PATH", "HOME", "USER", "LOGNAME", "SHELL", "LANG", "LANGUAGE", "TZ", "TMPDIR", "TEMP", "TMP",
    "SSL_CERT_FILE", "SSL_CERT_DIR", "REQUESTS_CA_BUNDLE", "CURL_CA_BUNDLE", "VIRTUAL_ENV", "LD_LIBRARY_PATH",
    "PYTHONHASHSEED", "PYTHONUTF8", "PYTHONIOENCODING", "PYTHONWARNINGS", "PYTHONDEVMODE", "PYTHONFAULTHANDLER",
    "PYTHONTRACEMALLOC", "PYTHONMALLOC", "PYTHONDONTWRITEBYTECODE", "PYTHONPYCACHEPREFIX", "PYTHONNOUSERSITE",
    "PYTHONSAFEPATH",
})
HOST_PREFIXES = ("LC_",)
PASS_ENV_SETTING = "OUTLAST_TASK_PASS_ENV"
# Never passed, whatever OUTLAST_TASK_PASS_ENV says: the runtime's database, keys, stores and their
# credentials. Every other OUTLAST_* variable configures the runtime and is not passed by a pattern.
RUNTIME_SECRETS = frozenset({
    "OUTLAST_DATABASE_URL", "OUTLAST_SECRET_KEY", "OUTLAST_ENCRYPTION_KEY", "OUTLAST_DASHBOARD_SECRET",
    "OUTLAST_PUBLIC_TOKEN_SECRET", "OUTLAST_WEBHOOK_SECRET", "OUTLAST_WEBHOOK_SECRET_PREVIOUS",
    "AWS_ACCESS_KEY_ID", "AWS_SECRET_ACCESS_KEY", "AWS_SESSION_TOKEN", "AWS_SECURITY_TOKEN",
})


def passed_names(setting: str) -> list[str]:
    """The patterns of OUTLAST_TASK_PASS_ENV, blanks dropped."""
    return [part.strip() for part in setting.split(",") if part.strip()]


def _allowed(name: str, patterns: list[str]) -> bool:
    if name in RUNTIME_SECRETS:
        return False
    if name in HOST_VARIABLES or name.startswith(HOST_PREFIXES):
        return True
    # A pattern names the operator's variables; the runtime's own settings pass only by their exact name.
    return any(name == pattern or (not name.startswith("OUTLAST_") and fnmatch.fnmatchcase(name, pattern))
               for pattern in patterns)


def host_environment(environ: Mapping[str, str] | None = None) -> dict[str, str]:
    """The part of the runtime's environment (`environ`, default os.environ) a task process starts with."""
    environ = os.environ if environ is None else environ
    patterns = passed_names(environ.get(PASS_ENV_SETTING, ""))
    return {name: value for name, value in environ.items() if _allowed(name, patterns)}
