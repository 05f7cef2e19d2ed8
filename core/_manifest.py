"""The build step of a deployment: import a bundle's tasks in a fresh process and record them.

    python -m outlast._manifest PROJECT_DIR MODULES OUT_FILE

Writes `{"tasks": [TaskManifest, ...]}` or `{"error": traceback}` to OUT_FILE (not stdout: the
project's own imports may print) and exits 0, or 3 when the import failed.
"""

from __future__ import annotations

import json
import os
import sys
import traceback


def main(argv: list[str]) -> int:
    project_dir, modules, out_file = argv
    sys.path.insert(0, project_dir)
    os.chdir(project_dir)
    try:
        from ._libraries import setup_django
        from ._process import import_tasks
        from ._tasks import registered_tasks

        setup_django()
        import_tasks([m for m in modules.split(",") if m])
        tasks = [t.manifest.model_dump(mode="json") for t in registered_tasks().values()]
    except BaseException as exc:
        with open(out_file, "w") as f:
            json.dump({"error": "".join(traceback.format_exception(exc))}, f)
        return 3
    with open(out_file, "w") as f:
        json.dump({"tasks": tasks}, f)
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
