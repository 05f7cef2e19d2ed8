#!/usr/bin/env bash
# Install outlast into .venv, start the embedded runtime with the example project, trigger the
# example task, print its result, and leave the runtime running (Ctrl-C stops it).
source "$(dirname "${BASH_SOURCE[0]}")/_env.sh"
install_project runtime
install_criu
cd "$ROOT/examples/quickstart"

PORT="${OUTLAST_PORT:-7070}"
export OUTLAST_API_URL="http://127.0.0.1:$PORT"
# The quickstart's store and its dev key live together: the key seeds the store on its first
# start, so a store without its key file is started afresh.
DATA_DIR=".outlast/quickstart"
KEY_FILE="$DATA_DIR.key"
if [ ! -f "$KEY_FILE" ]; then
  rm -rf "$DATA_DIR"
  mkdir -p .outlast
  echo "ol_dev_$("$VENV/bin/python" -c 'import secrets; print(secrets.token_urlsafe(24))')" > "$KEY_FILE"
fi
export OUTLAST_SECRET_KEY="$(cat "$KEY_FILE")"

"$VENV/bin/outlast" dev --port "$PORT" --data-dir "$DATA_DIR" &
RUNTIME_PID=$!
trap 'kill $RUNTIME_PID 2>/dev/null; wait $RUNTIME_PID 2>/dev/null' INT TERM EXIT

for _ in $(seq 1 100); do
  if "$VENV/bin/python" -c "import httpx,os,sys; r=httpx.get(os.environ['OUTLAST_API_URL']+'/api/v1/tasks', headers={'Authorization':'Bearer '+os.environ['OUTLAST_SECRET_KEY']}); sys.exit(0 if r.status_code==200 and r.json() else 1)" 2>/dev/null; then
    break
  fi
  kill -0 $RUNTIME_PID 2>/dev/null || { echo "the runtime exited; see the output above" >&2; exit 1; }
  sleep 0.2
done

echo
echo "Triggering hello-world and waiting for it:"
"$VENV/bin/outlast" trigger hello-world --payload '{"name": "outlast"}' --wait
echo
cat <<TXT
The runtime keeps running. In another terminal:
  cd $ROOT/examples/quickstart && source $VENV/bin/activate
  export OUTLAST_API_URL=$OUTLAST_API_URL OUTLAST_SECRET_KEY=$OUTLAST_SECRET_KEY
  outlast trigger resize-image --payload '{"url": "https://example.com/a.png", "width": 800}' --wait
  outlast runs ls
  open $OUTLAST_API_URL/api/v1/docs for the HTTP API
Edit examples/quickstart/tasks.py and the worker reloads. Ctrl-C stops the runtime.
TXT
wait $RUNTIME_PID
