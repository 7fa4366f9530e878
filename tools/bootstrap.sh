#!/usr/bin/env bash
# Make this machine able to run the tests and the demo: install what it lacks, start dockerd.
# Idempotent and quiet when everything is there already. Needs root for apt-get and dockerd.
set -euo pipefail
cd "$(dirname "$0")/.."

missing=()
command -v dockerd >/dev/null || missing+=(docker.io)
command -v docker-registry >/dev/null || missing+=(docker-registry)
# The example runtime is built FROM scratch: it needs the static busybox, not the dynamic one.
dpkg-query -W -f='${Status}' busybox-static 2>/dev/null | grep -q "ok installed" || missing+=(busybox-static)
if [ ${#missing[@]} -gt 0 ]; then
  echo "bootstrap: installing ${missing[*]}"
  apt-get update -qq
  DEBIAN_FRONTEND=noninteractive apt-get install -y -qq "${missing[@]}" >/dev/null
fi

if ! python3 -c "import runner.schema, agent, pytest" 2>/dev/null; then
  echo "bootstrap: installing deployplan and its test dependencies"
  python3 -m pip install -q --disable-pip-version-check -e '.[test]'
fi

if ! docker info >/dev/null 2>&1; then
  echo "bootstrap: starting dockerd"
  log=$(mktemp -t deployplan-dockerd.XXXXXX.log)
  nohup dockerd >"$log" 2>&1 &
  for _ in $(seq 60); do
    docker info >/dev/null 2>&1 && break
    sleep 1
  done
  docker info >/dev/null 2>&1 || { echo "bootstrap: dockerd did not start; its log:"; tail -20 "$log"; exit 1; }
fi
