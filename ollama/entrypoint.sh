#!/bin/sh
# Starts Ollama, pulls the configured model once (kept in the ollama volume), then stays up.
set -eu
MODEL="${OLLAMA_MODEL:-phi3}"
ollama serve &
server=$!
until ollama list >/dev/null 2>&1; do sleep 1; done
if ! ollama list | awk 'NR > 1 {print $1}' | grep -qx -e "$MODEL" -e "$MODEL:latest"; then
  echo "pulling $MODEL (first start only)"
  ollama pull "$MODEL"
fi
wait "$server"
