"""host_environment: the allow-list, and what OUTLAST_TASK_PASS_ENV may and may not add to it."""

from __future__ import annotations

from outlast.runtime.worker.host_environment import RUNTIME_SECRETS, host_environment

HOST = {"PATH": "/usr/bin", "HOME": "/home/op", "LANG": "C.UTF-8", "LC_TIME": "fr_FR.UTF-8", "TZ": "UTC",
        "PYTHONHASHSEED": "0", "SSL_CERT_FILE": "/etc/ssl/cert.pem"}
RUNTIME_ONLY = {"OUTLAST_ENCRYPTION_KEY": "k", "OUTLAST_DATABASE_URL": "postgresql://x", "AWS_SECRET_ACCESS_KEY": "s",
                "AWS_ACCESS_KEY_ID": "a", "OUTLAST_CHECKPOINT_STORE": "s3://b", "SOME_RUNTIME_ONLY_VAR": "r",
                "PYTHONPATH": "/runtime", "HTTPS_PROXY": "http://u:p@proxy", "DJANGO_SECRET_KEY": "d"}


def test_only_the_allow_list_passes_by_default():
    assert host_environment({**HOST, **RUNTIME_ONLY}) == HOST


def test_named_and_matching_variables_pass_but_never_the_runtime_secrets():
    environ = {**HOST, **RUNTIME_ONLY, "MYAPP_TOKEN": "t", "MYAPP_URL": "u", "OUTLAST_TEST_SCRATCH": "/s",
               "OUTLAST_TASK_PASS_ENV": " HTTPS_PROXY ,MYAPP_*, AWS_*, OUTLAST_*, *, OUTLAST_TEST_SCRATCH,,"
                                        + ",".join(RUNTIME_SECRETS)}
    passed = host_environment(environ)
    assert passed["HTTPS_PROXY"] == "http://u:p@proxy" and passed["MYAPP_TOKEN"] == "t"
    assert passed["OUTLAST_TEST_SCRATCH"] == "/s", "an OUTLAST_* variable passes by its exact name"
    assert not RUNTIME_SECRETS & set(passed), "not even when named"
    assert not {name for name in passed if name.startswith("OUTLAST_")} - {"OUTLAST_TEST_SCRATCH"}, \
        "patterns never match the runtime's own settings"
    assert passed["SOME_RUNTIME_ONLY_VAR"] == "r", "'*' is the operator's explicit choice"
