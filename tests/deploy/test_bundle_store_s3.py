"""Bundles in S3 (moto's server, real HTTP): a deployed version is stored there, and once its files are
garbage-collected a rollback brings it back from the bucket."""

from __future__ import annotations

from collections.abc import Iterator

import boto3
import pytest

from outlast._deployments import Deployments
from tests.conftest import S3_ENV, RuntimeProcess, moto_s3, runtime_process, wait_for

from ._projects import cli, data_dir, deploy, deployed_version, write_project

BUCKET = "outlast-bundles"


@pytest.fixture(scope="module")
def s3_endpoint() -> Iterator[str]:
    with moto_s3(BUCKET) as endpoint:
        yield endpoint

@pytest.fixture
def runtime(tmp_path, s3_endpoint) -> Iterator[RuntimeProcess]:
    runtime = runtime_process(tmp_path, None, project=None, extra_env={
        "OUTLAST_BUNDLE_STORE": f"s3://{BUCKET}/deploys", "OUTLAST_S3_ENDPOINT_URL": s3_endpoint,
        "OUTLAST_DEPLOY_GC_INTERVAL": "1", **S3_ENV}).start()
    try:
        yield runtime
    finally:
        runtime.close()


def test_bundles_live_in_s3_and_a_collected_version_comes_back_from_there(runtime, s3_endpoint, tmp_path):
    s3 = boto3.client("s3", endpoint_url=s3_endpoint, aws_access_key_id="testing", aws_secret_access_key="testing",
                      region_name="us-east-1")
    client = runtime.client()
    first = deployed_version(deploy(runtime, write_project(tmp_path / "a", "first")))
    stored = s3.list_objects_v2(Bucket=BUCKET, Prefix="deploys/")["Contents"]
    assert [o["Key"] for o in stored] == [f"deploys/dev/{first}.tar.gz"]
    assert not (data_dir(runtime) / "bundles").exists()  # nothing kept locally but the unpacked version

    deploy(runtime, write_project(tmp_path / "b", "second"))
    wait_for(lambda: not (data_dir(runtime) / "versions" / first).exists(), timeout=60,
             message=f"{first} to be garbage-collected")
    assert cli(runtime, "versions", "rollback").returncode == 0
    handle = client.trigger("which")
    run = wait_for(lambda: (r := client.retrieve_run(handle.id)).status.is_final and r, timeout=120)
    assert (run.version, run.output["code"]) == (first, "first"), run.error
    assert Deployments(client).get(first).on_disk
