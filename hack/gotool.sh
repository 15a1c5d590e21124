#!/usr/bin/env bash
# Go servers the tests and the kind path run, each built once from the Go module pinned in
# its wrapper module hack/tools/<name>/go.mod (the module proxy only, as hack/cluster.sh
# builds its binaries), statically (CGO_ENABLED=0), and cached outside the repository:
#   versitygw  Versity's S3 gateway (github.com/versity/versitygw, Apache-2.0): the
#              S3-compatible server the storage initializer's tests run on 127.0.0.1
#   registry   the CNCF distribution registry (github.com/distribution/distribution/v3,
#              Apache-2.0): the OCI registry the kind nodes pull serflow's images from
#
#   hack/gotool.sh NAME         build (first time) or reuse the cached binary; print its path
#   hack/gotool.sh NAME build   the same
#
# Environment:
#   XDG_CACHE_HOME   cache root (default ~/.cache); the binary is in
#                    $XDG_CACHE_HOME/serflow/<name>/<key>/bin/<name>, where <key> hashes
#                    the wrapper module's go.mod/go.sum, the Go version and the recipe
# Exit status 3 means the binary could not be built on this machine (no Go toolchain, or
# the module proxy does not serve the module); the last lines of the build log go to stderr.
set -euo pipefail

HACK_DIR="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
NAME="${1:-}"
# Per tool: its module, the package of its main, and the version ldflags upstream's
# release build sets ($VERSION: the pinned version, $WHEN: the release's date).
# BUILD_RECIPE: bump when the way the binary is built changes, so the cache key changes.
case "$NAME" in
versitygw)
    MODULE=github.com/versity/versitygw
    PACKAGE=$MODULE/cmd/versitygw
    BUILD_RECIPE=2
    version_flags() { echo "-X main.Version=$1 -X main.Build=$1 -X main.BuildTime=$2"; }
    ;;
registry)
    MODULE=github.com/distribution/distribution/v3
    PACKAGE=$MODULE/cmd/registry
    BUILD_RECIPE=1
    version_flags() { echo "-X $MODULE/version.version=$1"; }
    ;;
*)
    printf 'usage: hack/gotool.sh versitygw|registry [build]\n' >&2
    exit 2
    ;;
esac
MODULE_DIR="$HACK_DIR/tools/$NAME"

log() { printf 'gotool.sh %s: %s\n' "$NAME" "$*" >&2; }

fail() { # step, log file
    log "build step '$1' failed; last lines of $2:"
    tail -n 15 "$2" >&2 || true
    exit 3
}

command -v go >/dev/null || {
    log "build step 'go toolchain' failed: go not found on PATH"
    exit 3
}

VERSION="$(sed -n "s|^[[:space:]]*$MODULE \(v[^ ]*\).*|\1|p" "$MODULE_DIR/go.mod")"
[[ -n "$VERSION" ]] || {
    log "no $MODULE version in $MODULE_DIR/go.mod"
    exit 3
}
CACHE_ROOT="${XDG_CACHE_HOME:-$HOME/.cache}/serflow/$NAME"
CACHE_KEY="$(
    {
        echo "recipe=$BUILD_RECIPE"
        echo "go=$(GOTOOLCHAIN=local go env GOVERSION 2>/dev/null || echo none)"
        for f in "$MODULE_DIR/go.mod" "$MODULE_DIR/go.sum"; do
            echo "== ${f##*/}"
            cat "$f"
        done
    } | sha256sum | cut -c1-16
)"
CACHE_DIR="$CACHE_ROOT/$CACHE_KEY"
BIN="$CACHE_DIR/bin/$NAME"

build() {
    [[ -f "$CACHE_DIR/bin/.complete" ]] && return 0
    mkdir -p "$CACHE_DIR"
    exec 8>"$CACHE_DIR/.build.lock"
    flock 8
    [[ -f "$CACHE_DIR/bin/.complete" ]] && return 0 # built by a concurrent caller
    local t0=$SECONDS tmp="$CACHE_DIR/bin.tmp" logf="$CACHE_DIR/build.log" info when
    rm -rf "$tmp"
    mkdir -p "$tmp"
    # The release's date, from the module proxy's .info (as the upstream Makefile's BuildTime).
    if ! info="$(cd "$CACHE_DIR" && GOTOOLCHAIN=local GOWORK=off GOFLAGS="" \
        go mod download -json "$MODULE@$VERSION" 2>"$logf")"; then
        printf '%s\n' "$info" >>"$logf"
        fail download "$logf"
    fi
    when="$(sed -n 's/^[[:space:]]*"Info": "\([^"]*\)".*/\1/p' <<<"$info")"
    when="$(sed -n 's/.*"Time":"\([^"]*\)".*/\1/p' "$when" 2>/dev/null || true)"
    log "building $MODULE@$VERSION ..."
    if ! (cd "$MODULE_DIR" && GOTOOLCHAIN=local GOWORK=off GOFLAGS="-mod=readonly -buildvcs=false" \
        CGO_ENABLED=0 nice -n 10 go build -trimpath \
        -ldflags "-s -w $(version_flags "$VERSION" "${when:-none}")" \
        -o "$tmp/" "$PACKAGE") >>"$logf" 2>&1; then
        fail build "$logf"
    fi
    rm -rf "$CACHE_DIR/bin"
    mv "$tmp" "$CACHE_DIR/bin"
    touch "$CACHE_DIR/bin/.complete"
    log "built in $((SECONDS - t0)) s: $BIN"
}

case "${2:-build}" in
build)
    build
    printf '%s\n' "$BIN"
    ;;
*)
    log "usage: hack/gotool.sh $NAME [build]"
    exit 2
    ;;
esac
