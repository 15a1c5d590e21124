#!/usr/bin/env bash
# A Docker engine for the kind path (hack/kind.sh): use the one that answers, else
# install Debian's docker.io (pinned in hack/versions.env) and start a dockerd of our own.
#
#   hack/docker.sh up      use an engine that answers (DOCKER_HOST, /var/run/docker.sock);
#                          else install docker.io if dockerd is missing (apt, as root) and
#                          start dockerd with its own socket, data-root and pidfile
#   hack/docker.sh down    stop the dockerd that `up` started (and only that one); its
#                          data-root (images) stays for the next `up`
#   hack/docker.sh status  exit 0 when an engine answers; print where
#   hack/docker.sh env     print `export DOCKER_HOST=...` for the engine in use
#
# Environment:
#   SERFLOW_DOCKER_STATE   state dir (default $XDG_CACHE_HOME/serflow/docker, ~/.cache if
#                          unset): socket, pidfile, daemon.json, logs, data-root. A cache:
#                          its images (base, node, Knative) serve every clone of the
#                          repository, and every clone finds the engine at one socket
# The dockerd started here runs containers through hack/docker/runc-bounded (its default
# runtime), which drops the capabilities the host's bounding set lacks, so --privileged
# containers (kind nodes) start on hosts that cannot grant every capability.
set -euo pipefail

HACK_DIR="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
# shellcheck source-path=SCRIPTDIR source=versions.env
source "$HACK_DIR/versions.env"
STATE_DIR="${SERFLOW_DOCKER_STATE:-${XDG_CACHE_HOME:-$HOME/.cache}/serflow/docker}"
SOCKET="$STATE_DIR/docker.sock"
OUR_HOST="unix://$SOCKET"

log() { printf 'docker.sh: %s\n' "$*" >&2; }
die() {
    log "error: $*"
    exit 1
}

answers() { # docker host URL
    command -v docker >/dev/null &&
        DOCKER_HOST="$1" timeout 10 docker version --format '{{.Server.Version}}' >/dev/null 2>&1
}

# The engine to use: ours when it runs, else the caller's DOCKER_HOST, else the system's.
engine() {
    local h
    for h in "$OUR_HOST" "${DOCKER_HOST:-}" unix:///var/run/docker.sock; do
        [[ -n "$h" ]] && answers "$h" && {
            echo "$h"
            return 0
        }
    done
    return 1
}

our_pid() { # the PID of the dockerd this script started, if it still runs
    local pid exe
    pid="$(cat "$STATE_DIR/dockerd.pid" 2>/dev/null)" || return 1
    exe="$(readlink "/proc/$pid/exe" 2>/dev/null)" || return 1
    [[ "$(basename "$exe")" == dockerd ]] &&
        tr '\0' ' ' <"/proc/$pid/cmdline" | grep -qF -- "-H $OUR_HOST" &&
        echo "$pid"
}

# apt_install COMMAND PACKAGE=VERSION: install the pinned package unless COMMAND exists
# (as root, from the Debian archive; `apt-get update` first when that version is unknown).
apt_install() {
    local cmd="$1" pkg="$2"
    command -v "$cmd" >/dev/null && return 0
    [[ "$(id -u)" == 0 ]] || die "$cmd is missing and not root: install $pkg first"
    command -v apt-get >/dev/null || die "$cmd is missing and no apt-get: install $pkg first"
    log "installing $pkg from the Debian archive ..."
    local logf="$STATE_DIR/apt.log"
    if ! apt-cache show "$pkg" >/dev/null 2>&1; then
        apt-get update >"$logf" 2>&1 || {
            tail -n 5 "$logf" >&2
            die "apt-get update failed (log: $logf)"
        }
    fi
    DEBIAN_FRONTEND=noninteractive apt-get install -y --no-install-recommends "$pkg" \
        >>"$logf" 2>&1 || {
        tail -n 5 "$logf" >&2
        die "apt-get install $pkg failed (log: $logf)"
    }
}

install_engine() { apt_install dockerd "docker.io=$DOCKER_IO_VERSION"; }

write_daemon_json() {
    cat >"$STATE_DIR/daemon.json" <<EOF
{
  "runtimes": {"runc-bounded": {"path": "$HACK_DIR/docker/runc-bounded"}},
  "default-runtime": "runc-bounded",
  "storage-driver": "overlay2",
  "log-driver": "json-file",
  "log-opts": {"max-size": "10m", "max-file": "2"},
  "features": {"buildkit": false}
}
EOF
}

do_up() {
    mkdir -p "$STATE_DIR"
    exec 9>"$STATE_DIR/.lock"
    flock -w 300 9 || die "another hack/docker.sh holds $STATE_DIR/.lock"
    # nft confines the kind network (hack/kind.sh), whichever engine runs it.
    apt_install nft "nftables=$NFTABLES_VERSION"
    local h
    if h="$(engine)"; then
        log "a Docker engine answers at $h"
        return 0
    fi
    install_engine
    # Installing may have started the system's engine (hosts with systemd).
    if h="$(engine)"; then
        log "a Docker engine answers at $h"
        return 0
    fi
    [[ "$(id -u)" == 0 ]] || die "no Docker engine answers and dockerd must start as root"
    command -v python3 >/dev/null || die "python3 is needed by hack/docker/runc-bounded"
    local pid
    if pid="$(our_pid)"; then
        log "dockerd $pid runs but does not answer; stopping it"
        stop_ours
    fi
    write_daemon_json
    mkdir -p "$STATE_DIR"/{data,exec,logs}
    local t0=$SECONDS
    # 9>&-: the daemon must not hold the state lock.
    setsid dockerd --config-file "$STATE_DIR/daemon.json" --data-root "$STATE_DIR/data" \
        --exec-root "$STATE_DIR/exec" --pidfile "$STATE_DIR/dockerd.pid" \
        -H "$OUR_HOST" --group root \
        >"$STATE_DIR/logs/dockerd.log" 2>&1 </dev/null 9>&- &
    local deadline=$((SECONDS + 60))
    until answers "$OUR_HOST"; do
        if ! kill -0 $! 2>/dev/null || ((SECONDS >= deadline)); then
            log "dockerd did not come up; last lines of $STATE_DIR/logs/dockerd.log:"
            tail -n 15 "$STATE_DIR/logs/dockerd.log" >&2 || true
            kill -TERM $! 2>/dev/null || true
            exit 1
        fi
        sleep 0.5
    done
    log "dockerd $(cat "$STATE_DIR/dockerd.pid") up in $((SECONDS - t0)) s at $OUR_HOST"
    log "use it with: eval \"\$($HACK_DIR/docker.sh env)\""
}

stop_ours() {
    local pid i
    pid="$(our_pid)" || return 0
    # dockerd stops its containers on SIGTERM (up to its shutdown timeout of 15 s).
    kill -TERM "$pid"
    for ((i = 0; i < 160; i++)); do
        kill -0 "$pid" 2>/dev/null || return 0
        sleep 0.25
    done
    log "dockerd $pid did not stop on SIGTERM; killing it"
    kill -KILL "$pid" 2>/dev/null || true
}

do_down() {
    [[ -d "$STATE_DIR" ]] || {
        log "not running"
        return 0
    }
    exec 9>"$STATE_DIR/.lock"
    flock -w 300 9 || log "warning: $STATE_DIR/.lock is still held; stopping anyway"
    if our_pid >/dev/null; then
        stop_ours
        log "down (data-root $STATE_DIR/data kept)"
    else
        log "no dockerd of ours runs"
    fi
    rm -f "$STATE_DIR/dockerd.pid" "$SOCKET"
}

do_status() {
    local h
    h="$(engine)" || {
        log "no Docker engine answers"
        return 1
    }
    if [[ "$h" == "$OUR_HOST" ]]; then
        echo "$h (dockerd $(our_pid || echo '?') started by hack/docker.sh)"
    else
        echo "$h"
    fi
}

do_env() {
    local h
    h="$(engine)" || die "no Docker engine answers (run: hack/docker.sh up)"
    echo "export DOCKER_HOST=$h"
}

case "${1:-}" in
up) do_up ;;
down) do_down ;;
status) do_status ;;
env) do_env ;;
*)
    echo "usage: $0 up|down|status|env" >&2
    exit 2
    ;;
esac
