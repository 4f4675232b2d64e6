#!/bin/sh
# Starts Ollama, pulls OLLAMA_MODEL on the first start only (it stays in the ollama volume),
# then waits on the server. A failed pull exits, so the container's restart policy retries it.
set -eu
MODEL="${OLLAMA_MODEL:-phi3}"
ollama serve &
server=$!
# As PID 1 the shell gets `docker stop`'s SIGTERM; the server must get it too to exit cleanly.
trap 'kill -TERM "$server" 2>/dev/null' TERM INT
until ollama list >/dev/null 2>&1; do
  kill -0 "$server" 2>/dev/null || { echo "ollama serve exited" >&2; exit 1; }
  sleep 1
done
if ollama list | awk 'NR > 1 {print $1}' | grep -qx -e "$MODEL" -e "$MODEL:latest"; then
  echo "model $MODEL already present"
else
  echo "pulling $MODEL (first start only)"
  ollama pull "$MODEL"
fi
status=0
wait "$server" || status=$?
# A trapped signal interrupts that wait (status above 128); the second one collects the
# server's own exit status.
if [ "$status" -gt 128 ]; then
  status=0
  wait "$server" || status=$?
fi
exit "$status"
