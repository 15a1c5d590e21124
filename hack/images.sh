#!/usr/bin/env bash
# Local base images, made from the Debian archive on this machine, so that no image is
# ever pulled: a Debian minbase root filesystem by debootstrap, imported into the Docker
# engine of hack/docker.sh. Names start with localhost/ so that a pull, if one were ever
# tried, would go to 127.0.0.1 and not to a public registry.
#
#   hack/images.sh build          both base images below (each skipped when present)
#   hack/images.sh debian         localhost/serflow/debian:$DEBIAN_SUITE (minbase)
#   hack/images.sh python         localhost/serflow/python:3.11: Debian's python3 in a venv
#                                 at /opt/venv, first on PATH (so `pip install` works),
#                                 trusting the host's CAs in /usr/local/share/ca-certificates
#   hack/images.sh rootfs NAME [PACKAGE...]
#                                 print the path of a cached rootfs tarball: minbase plus
#                                 the packages (built on first use); used by hack/kind.sh
#   hack/images.sh push REGISTRY IMAGE...
#                                 tag local images REGISTRY/serflow/<name>, push them and
#                                 print `NAME REGISTRY/serflow/<name>@sha256:...` each
#   hack/images.sh publish REGISTRY NAME...
#                                 build serflow's Dockerfile.NAME FROM the Python base by
#                                 its digest in REGISTRY (pushed first), push each as
#                                 REGISTRY/serflow/NAME:$SERFLOW_IMAGE_TAG (default local)
#                                 and print `NAME REFERENCE-BY-DIGEST` (`make images`)
#   hack/images.sh key            print the cache key
#
# Environment:
#   XDG_CACHE_HOME          cache root (default ~/.cache): rootfs tarballs and .debs in
#                           serflow/images/<key>/
#   SERFLOW_DEBIAN_MIRROR   Debian mirror (default: the first deb.debian.org-style URI in
#                           /etc/apt, else http://deb.debian.org/debian)
# Needs root (debootstrap, chroot) and an engine (eval "$(hack/docker.sh env)").
set -euo pipefail

HACK_DIR="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
# shellcheck source-path=SCRIPTDIR source=versions.env
source "$HACK_DIR/versions.env"

# Bump when the way images are made changes, so the cache key changes with it.
BUILD_RECIPE=1
CACHE_KEY="$(
    {
        echo "recipe=$BUILD_RECIPE"
        grep -E '^(DEBIAN_|DEBOOTSTRAP_)' "$HACK_DIR/versions.env"
    } | sha256sum | cut -c1-16
)"
CACHE_DIR="${XDG_CACHE_HOME:-$HOME/.cache}/serflow/images/$CACHE_KEY"
DEBIAN_IMAGE="localhost/serflow/debian:$DEBIAN_SUITE"
PYTHON_IMAGE="localhost/serflow/python:3.11"
KEY_LABEL=io.serflow.cache-key

log() { printf 'images.sh: %s\n' "$*" >&2; }
die() {
    log "error: $*"
    exit 1
}

mirror() {
    if [[ -n "${SERFLOW_DEBIAN_MIRROR:-}" ]]; then
        echo "$SERFLOW_DEBIAN_MIRROR"
        return
    fi
    local uri
    uri="$(grep -rhoE '^(URIs:|deb) +https?://[^ ]+/debian/?( |$)' /etc/apt/sources.list \
        /etc/apt/sources.list.d/ 2>/dev/null | awk '{print $2}' | head -n 1 || true)"
    echo "${uri:-http://deb.debian.org/debian}"
}

ensure_debootstrap() {
    command -v debootstrap >/dev/null && return 0
    [[ "$(id -u)" == 0 ]] && command -v apt-get >/dev/null ||
        die "debootstrap is missing: install debootstrap $DEBOOTSTRAP_VERSION"
    log "installing debootstrap=$DEBOOTSTRAP_VERSION ..."
    DEBIAN_FRONTEND=noninteractive apt-get install -y --no-install-recommends \
        "debootstrap=$DEBOOTSTRAP_VERSION" >"$CACHE_DIR/apt.log" 2>&1 || {
        tail -n 5 "$CACHE_DIR/apt.log" >&2
        die "apt-get install debootstrap=$DEBOOTSTRAP_VERSION failed"
    }
}

# rootfs NAME [PACKAGE...] -> path of the tarball (minbase + packages), built once per key.
# An optional function named "customize_NAME" runs with the root directory as $1 first.
rootfs() {
    local name="$1"
    shift
    # The package list is part of the file name: a changed list makes a new rootfs.
    local tarball
    tarball="$CACHE_DIR/$name-$(echo "$*" | sha256sum | cut -c1-8).tar"
    [[ -f "$tarball" ]] && {
        echo "$tarball"
        return 0
    }
    [[ "$(id -u)" == 0 ]] || die "debootstrap needs root"
    mkdir -p "$CACHE_DIR/debs"
    ensure_debootstrap
    exec 7>"$CACHE_DIR/.$name.lock"
    flock 7
    [[ -f "$tarball" ]] && {
        echo "$tarball"
        return 0
    }
    local root="$CACHE_DIR/$name.root" logf="$CACHE_DIR/debootstrap-$name.log" t0=$SECONDS
    local include=()
    (($# > 0)) && include=("--include=$(
        IFS=,
        echo "$*"
    )")
    rm -rf "$root"
    log "debootstrap $name ($DEBIAN_SUITE minbase${*:+ + $*}) from $(mirror) ..."
    # The .debs are kept in the cache so that a second rootfs downloads only what it adds.
    if ! nice -n 10 debootstrap --variant=minbase --cache-dir="$CACHE_DIR/debs" \
        "${include[@]}" "$DEBIAN_SUITE" "$root" "$(mirror)" >"$logf" 2>&1; then
        tail -n 15 "$logf" >&2
        rm -rf "$root"
        die "debootstrap $name failed (log: $logf)"
    fi
    if declare -F "customize_$name" >/dev/null; then
        "customize_$name" "$root" >>"$logf" 2>&1 || {
            tail -n 15 "$logf" >&2
            die "customizing $name failed (log: $logf)"
        }
    fi
    # Package lists and caches are not needed at run time (no apt in the images' use).
    rm -rf "$root"/var/lib/apt/lists/* "$root"/var/cache/apt/*.bin \
        "$root"/var/cache/apt/archives/*.deb "$root"/var/log/* "$root"/tmp/*
    tar --numeric-owner --xattrs -C "$root" -cf "$tarball.tmp" .
    rm -rf "$root"
    mv "$tarball.tmp" "$tarball"
    log "rootfs $name in $((SECONDS - t0)) s: $(du -h "$tarball" | cut -f1)"
    echo "$tarball"
}

customize_python() { # a venv first on PATH: `pip install` then works as in python:*-slim
    chroot "$1" python3 -m venv /opt/venv
    ln -sf python3 "$1/opt/venv/bin/python"
    # The host's own certificate authorities (a proxy's, say), so that `pip install` in a
    # build on this machine trusts what the host trusts.
    if compgen -G "/usr/local/share/ca-certificates/*.crt" >/dev/null; then
        cp /usr/local/share/ca-certificates/*.crt "$1/usr/local/share/ca-certificates/"
        chroot "$1" update-ca-certificates
    fi
}

present() { # image -> true when the engine holds it, made under this cache key
    [[ "$(docker image inspect --format "{{index .Config.Labels \"$KEY_LABEL\"}}" "$1" \
        2>/dev/null)" == "$CACHE_KEY" ]]
}

import() { # image tarball docker-import-change...
    local image="$1" tarball="$2"
    shift 2
    local change=(--change "LABEL $KEY_LABEL=$CACHE_KEY") c
    for c in "$@"; do change+=(--change "$c"); done
    docker import "${change[@]}" "$tarball" "$image" >/dev/null
    log "$image: $(docker image inspect --format '{{.Size}}' "$image" | numfmt --to=si)B"
}

build_debian() {
    present "$DEBIAN_IMAGE" && return 0
    local tarball
    tarball="$(rootfs debian)"
    import "$DEBIAN_IMAGE" "$tarball" 'CMD ["bash"]'
}

build_python() {
    present "$PYTHON_IMAGE" && return 0
    local tarball
    tarball="$(rootfs python python3 python3-venv ca-certificates)"
    import "$PYTHON_IMAGE" "$tarball" \
        'ENV PATH=/opt/venv/bin:/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin' \
        'ENV LANG=C.UTF-8' 'ENV PIP_CERT=/etc/ssl/certs/ca-certificates.crt' 'CMD ["python3"]'
}

# The registry reference by digest of a local image just pushed to REGISTRY.
pushed_digest() { # local-name registry-name
    local ref
    docker push "$2" >/dev/null || die "docker push $2 failed"
    ref="$(docker image inspect --format '{{range .RepoDigests}}{{println .}}{{end}}' "$1" |
        grep -m1 "^${2%:*}@sha256:")" || die "no digest of ${2%:*} after the push"
    echo "$ref"
}

# Tag local images REGISTRY/serflow/<last path part>, push them, print `NAME REFERENCE`.
push_images() { # registry image...
    local registry="$1" image name target
    shift
    for image in "$@"; do
        name="${image##*/}"
        target="$registry/serflow/$name"
        docker tag "$image" "$target"
        echo "${name%%:*} $(pushed_digest "$image" "$target")"
    done
}

# serflow's images from its Dockerfiles, each FROM the Python base by its digest in the
# same registry (pushed first), tagged REGISTRY/serflow/<name>:$SERFLOW_IMAGE_TAG and
# pushed; prints `NAME REFERENCE` (by digest) per image.
publish() { # registry name...
    local registry="$1" repo name base tag t0 ref
    shift
    repo="$(cd "$HACK_DIR/.." && pwd)"
    for name in "$@"; do
        [[ -f "$repo/Dockerfile.$name" ]] || die "no image '$name': Dockerfile.$name does not exist"
    done
    build_python
    base="$(push_images "$registry" "$PYTHON_IMAGE" | cut -d' ' -f2)"
    for name in "$@"; do
        tag="$registry/serflow/$name:${SERFLOW_IMAGE_TAG:-local}"
        t0=$SECONDS
        DOCKER_BUILDKIT=0 docker build -q -f "$repo/Dockerfile.$name" \
            --build-arg "BASE_IMAGE=$base" -t "$tag" "$repo" >/dev/null 2>"$CACHE_DIR/publish.log" || {
            cat "$CACHE_DIR/publish.log" >&2
            die "docker build -f Dockerfile.$name failed"
        }
        ref="$(pushed_digest "$tag" "$tag")"
        log "$ref: built and pushed in $((SECONDS - t0)) s, $(
            docker image inspect --format '{{.Size}}' "$tag" | numfmt --to=si)B"
        echo "$name $ref"
    done
}

need_engine() {
    local env
    env="$("$HACK_DIR/docker.sh" env)" || exit 1
    eval "$env"
    docker version --format '{{.Server.Version}}' >/dev/null 2>&1 ||
        die "no Docker engine answers (run: hack/docker.sh up; eval \"\$(hack/docker.sh env)\")"
}

mkdir -p "$CACHE_DIR"
case "${1:-}" in
build)
    need_engine
    build_debian
    build_python
    ;;
debian)
    need_engine
    build_debian
    ;;
python)
    need_engine
    build_python
    ;;
rootfs)
    [[ -n "${2:-}" ]] || die "usage: $0 rootfs NAME [PACKAGE...]"
    shift
    rootfs "$@"
    ;;
push)
    [[ -n "${3:-}" ]] || die "usage: $0 push REGISTRY IMAGE..."
    need_engine
    shift
    push_images "$@"
    ;;
publish)
    [[ -n "${3:-}" ]] || die "usage: $0 publish REGISTRY NAME..."
    need_engine
    shift
    publish "$@"
    ;;
key) echo "$CACHE_KEY" ;;
*)
    echo "usage: $0 build|debian|python|rootfs NAME [PACKAGE...]|push REGISTRY IMAGE...|publish REGISTRY NAME...|key" >&2
    exit 2
    ;;
esac
