"""A PEP 517 build backend that records its environment (a requirement's build step is
user code, run by pip while a deployment is built) and builds an empty wheel. Used by
tests/waits/test_task_environment.py; it writes `build-environment.json` into $ENVPROBE_OUT."""

import json
import os
import zipfile

NAME, VERSION = "envprobe", "0.1"


def _record() -> None:
    with open(os.path.join(os.environ.get("ENVPROBE_OUT", "."), "build-environment.json"), "w") as out:
        json.dump(dict(os.environ), out)


def get_requires_for_build_wheel(config_settings=None):
    _record()
    return []


def build_wheel(wheel_directory, config_settings=None, metadata_directory=None):
    _record()
    info = f"{NAME}-{VERSION}.dist-info"
    files = {f"{info}/METADATA": f"Metadata-Version: 2.1\nName: {NAME}\nVersion: {VERSION}\n",
             f"{info}/WHEEL": "Wheel-Version: 1.0\nGenerator: envprobe\nRoot-Is-Purelib: true\nTag: py3-none-any\n"}
    name = f"{NAME}-{VERSION}-py3-none-any.whl"
    with zipfile.ZipFile(os.path.join(wheel_directory, name), "w") as wheel:
        for path, text in files.items():
            wheel.writestr(path, text)
        wheel.writestr(f"{info}/RECORD", "".join(f"{path},,\n" for path in [*files, f"{info}/RECORD"]))
    return name
