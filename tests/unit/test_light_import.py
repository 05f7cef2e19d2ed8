"""A web app that only triggers tasks imports the SDK, never the runtime or a database layer."""

import subprocess
import sys


def test_importing_the_sdk_loads_no_runtime_database_or_web_server():
    code = (
        "import sys, outlast\n"
        "from outlast import tasks, runs, task, schema_task, Client\n"
        "heavy = [m for m in ('outlast.runtime', 'sqlalchemy', 'alembic', 'fastapi', 'uvicorn', 'psycopg',"
        " 'jsonschema') if m in sys.modules]\n"
        "print(','.join(heavy))\n"
    )
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert result.stdout.strip() == ""
