#!/usr/bin/env bash
# Make a Docker Engine answer on this machine and build the worker image, for the `docker` runtime's
# tests (`make docker-ready`; usage: docker_ready.sh [PYTHON]).
#
# Idempotent and quiet when everything is there already.  As root on Debian it installs
# docker.io and debootstrap when they are missing, and starts dockerd in the background when
# `docker info` does not answer, then waits (bounded) until it does.  Then PYTHON (default
# python3) builds the local base image (debootstrap, once per machine) and the worker image on it
# (only when its inputs changed).  Where no engine can be started it says why and exits 0: the
# docker tests then skip, visibly, with that reason.
set -u
PY=${1:-python3}
LOG=${DOCKERD_LOG:-/var/log/jupyter-gpu-dockerd.log}
# Debian's CLI matches Debian's daemon; a newer client elsewhere on the PATH may not
DOCKER=$([ -x /usr/bin/docker ] && echo /usr/bin/docker || command -v docker || true)

unavailable() { echo "docker-ready: no Docker Engine here ($1); the docker runtime tests will be skipped" >&2; exit 0; }
answers() { [ -n "$DOCKER" ] && timeout 10 "$DOCKER" info >/dev/null 2>&1; }

if ! command -v dockerd >/dev/null || ! command -v debootstrap >/dev/null; then
    if [ "$(id -u)" = 0 ] && command -v apt-get >/dev/null; then
        echo "docker-ready: installing docker.io and debootstrap" >&2
        export DEBIAN_FRONTEND=noninteractive
        apt-get update -qq </dev/null >/dev/null &&
            apt-get install -y -qq --no-install-recommends docker.io debootstrap </dev/null >/dev/null ||
            unavailable "apt-get install docker.io debootstrap failed"
        DOCKER=$([ -x /usr/bin/docker ] && echo /usr/bin/docker || command -v docker || true)
    else
        command -v dockerd >/dev/null || unavailable "dockerd is not installed and this is not a root Debian shell"
    fi
fi

if ! answers; then
    [ "$(id -u)" = 0 ] || unavailable "docker info does not answer and only root may start dockerd"
    echo "docker-ready: starting dockerd (log: $LOG)" >&2
    nohup dockerd >>"$LOG" 2>&1 </dev/null &
    pid=$!
    deadline=$((SECONDS + 60))
    until answers; do
        kill -0 "$pid" 2>/dev/null || unavailable "dockerd exited: $(tail -n 3 "$LOG" | tr '\n' ' ')"
        [ $SECONDS -lt $deadline ] || unavailable "dockerd did not answer within 60 s"
    done
fi

# the base once per machine; the worker image only when its inputs changed (its tag is their hash)
"$PY" -m jupyter_gpu_backend.runtimes.docker_image base &&
    "$PY" -m jupyter_gpu_backend.runtimes.docker_image worker --base jupyter-gpu-base:bookworm --quiet >/dev/null ||
    echo "docker-ready: building the worker image failed (above); the docker tests will build it again and say why" >&2
