#!/usr/bin/env bash
# A kind cluster (Kubernetes in a Docker container) made from this repository's pins only:
# kind, its base image and the node image for KUBERNETES_VERSION are built from Go
# modules and the Debian archive, and no image is pulled from outside: serflow's own
# images are pushed to a registry this script runs (the CNCF distribution registry, built
# from its Go module) and the nodes pull them from it by digest, as a cluster does.
#
#   hack/kind.sh build   build (or reuse) the binaries, the base image, the node image and
#                        Knative Serving's images
#   hack/kind.sh base    only what needs no Kubernetes build: kind and the base image
#   hack/kind.sh up      hack/docker.sh up, build if needed, create the cluster, wait for
#                        the node to be Ready
#   hack/kind.sh check   a pod reaches another through a Service (exit 0 when it does)
#   hack/kind.sh load [operator|worker|fn|envoy|storage|versitygw ...]
#                        build serflow's Dockerfile.<name> FROM the local Python base by
#                        its digest, push it to the cluster's registry as
#                        localhost:5001/serflow/<name>:local and print `NAME REFERENCE`, the
#                        reference by digest the nodes pull (default: operator).
#                        versitygw: Versity's S3 gateway, hack/gotool.sh versitygw's binary
#                        on the local Debian base (the binary is cached outside the checkout)
#   hack/kind.sh ref NAME [TAG]
#                        print localhost:5001/serflow/NAME@sha256:... for the tag (local)
#   hack/kind.sh digest NAME [TAG]
#                        print only its sha256:... (for the chart's image.digest)
#   hack/kind.sh knative Knative Serving (KNATIVE_SERVING_VERSION) built from its
#                        modules, as local images, installed without a networking layer, with
#                        init containers and PersistentVolumeClaims allowed in a Service's pods
#   hack/kind.sh down    delete the cluster (the images stay in the engine), and the
#                        confined network with its drop rule once no node is left on it
#   hack/kind.sh drops   what the drop rule stopped since the network was made, by
#                        destination: `ADDRESS PROTOCOL PORT PACKETS` lines, then a total
#   hack/kind.sh status  exit 0 when the cluster's node is Ready
#   hack/kind.sh env     print `export DOCKER_HOST=... KUBECONFIG=... PATH=...`
#   hack/kind.sh bin     print the directory holding kind and the node binaries
#
# Environment:
#   XDG_CACHE_HOME        build cache root (default ~/.cache): serflow/kind/<key>/
#   SERFLOW_KIND_STATE    state dir (default hack/.state/kind): kubeconfig, kind config, logs
#   SERFLOW_KIND_CLUSTER  cluster name (default serflow)
#   SERFLOW_KIND_REGISTRY_PORT  the registry's port on 127.0.0.1 (default 5001): images
#                         are named localhost:<port>/serflow/<name>
#
# Both nodes mount one directory of this machine, <state dir>/shared, at
# /var/local/serflow-shared (`env` exports it as SERFLOW_KIND_SHARED): a hostPath
# PersistentVolume under it holds the same files on either node, as a network file system
# would (the local-path provisioner in kind's node image is a stand-in that provisions
# nothing). `up` recreates a cluster made without it; `down` removes it.
#
# Nothing leaves the machine: the nodes run on a Docker network of this script's
# (serflow-kind, bridge serflow-kind0), and before the first node starts an nftables rule
# drops, and counts by destination, every packet that would be forwarded from it to any
# other interface. Everything the cluster needs (images, charts) comes from this machine,
# so nothing is lost; what the rule stops is a component trying to reach an address no
# node owns (the Service range before kube-proxy programs it, a pod that is gone, or
# anything outside). Each node also gets an unreachable route for the pod range, so a
# packet to a pod that no longer exists fails in the node instead of following its
# default route.
# The Kubernetes binaries come from the Go build that hack/cluster.sh also uses: the
# control-plane images wrap its kube-apiserver, kube-controller-manager and kube-scheduler;
# kubelet, kubeadm and kube-proxy are built from the same wrapper module
# (hack/tools/kubernetes) with the same flags. Exit status 3: cannot be built here.
set -euo pipefail

HACK_DIR="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
TOOLS_DIR="$HACK_DIR/tools"
# shellcheck source-path=SCRIPTDIR source=versions.env
source "$HACK_DIR/versions.env"

# Bump when the way things are built changes, so the cache key changes with it.
BUILD_RECIPE=1
CACHE_ROOT="${XDG_CACHE_HOME:-$HOME/.cache}/serflow/kind"
CACHE_KEY="$(
    {
        echo "recipe=$BUILD_RECIPE"
        echo "go=$(GOTOOLCHAIN=local go env GOVERSION 2>/dev/null || echo none)"
        echo "images=$("$HACK_DIR/images.sh" key)"
        # The pins but Knative's (it has its own key), comments aside.
        grep -v -e '^#' -e '^KNATIVE_' -e '^NFTABLES_' "$HACK_DIR/versions.env"
        for f in "$TOOLS_DIR"/{kubernetes,kind,containerd,cri-tools,cni-plugins,coredns}/go.{mod,sum} \
            "$TOOLS_DIR"/etcd/{kubeadm.mod,kubeadm.sum,main.go} "$HACK_DIR"/kind/*; do
            echo "== ${f#"$HACK_DIR"/}"
            cat "$f"
        done
    } | sha256sum | cut -c1-16
)"
CACHE_DIR="$CACHE_ROOT/$CACHE_KEY"
BIN_DIR="$CACHE_DIR/bin"
STATE_DIR="${SERFLOW_KIND_STATE:-$HACK_DIR/.state/kind}"
CLUSTER="${SERFLOW_KIND_CLUSTER:-serflow}"
KUBECONFIG_FILE="$STATE_DIR/kubeconfig"
# The directory both nodes mount (see the header); the Docker engine needs an absolute path.
SHARED_DIR="$(realpath -m "$STATE_DIR/shared")"
NODE_SHARED=/var/local/serflow-shared
BASE_IMAGE="localhost/serflow/kind-base:$KIND_VERSION"
NODE_IMAGE="localhost/serflow/kind-node:$KUBERNETES_VERSION"
DEBIAN_IMAGE="localhost/serflow/debian:$DEBIAN_SUITE"
KEY_LABEL=io.serflow.cache-key
# kind's node image build runs the images below from the node; the names are the ones
# kubeadm and kind's manifests ask for, so nothing is pulled.
REGISTRY=registry.k8s.io
# The confined network (one for every serflow kind cluster on this engine), its bridge and
# the nftables table whose rule confines it.
NETWORK=serflow-kind
BRIDGE=serflow-kind0
NFT_TABLE=serflow_kind
# The OCI registry serflow's images are pushed to and the nodes pull them from (see
# "registry" below): a container on the confined network, published on 127.0.0.1 only.
# Images carry the name localhost:<port>/serflow/<name>, which this machine's engine
# pushes to (a loopback registry needs no TLS) and each node's containerd maps to the
# container (certs.d/<name>/hosts.toml).
REGISTRY_PORT="${SERFLOW_KIND_REGISTRY_PORT:-5001}"
IMAGE_REGISTRY="localhost:$REGISTRY_PORT"
REGISTRY_CONTAINER="$CLUSTER-registry"
REGISTRY_DATA="${XDG_CACHE_HOME:-$HOME/.cache}/serflow/registry-data"
# kind's defaults, written into the cluster's config so that they are known here.
POD_SUBNET=10.244.0.0/16
SERVICE_SUBNET=10.96.0.0/16

log() { printf 'kind.sh: %s\n' "$*" >&2; }
die() {
    log "error: $*"
    exit 1
}

build_fail() { # step, log file
    log "build step '$1' failed; last lines of $2:"
    tail -n 15 "$2" >&2 || true
    exit 3
}

# ---------------------------------------------------------------------------- binaries

go_build() { # step, module dir, ldflags, out dir, extra go flags (one word or ""), packages...
    local step="$1" dir="$2" ldflags="$3" out="$4" extra="$5"
    shift 5
    [[ -f "$out/.$step" ]] && return 0
    local logf="$CACHE_DIR/build-$step.log" t0=$SECONDS
    log "building $step ($*) ..."
    # shellcheck disable=SC2086 # $extra is empty or one flag
    if ! (cd "$dir" && GOTOOLCHAIN=local GOFLAGS="-mod=readonly -buildvcs=false" \
        nice -n 10 go build -trimpath $extra -ldflags "$ldflags" -o "$out/" "$@") >"$logf" 2>&1; then
        build_fail "$step" "$logf"
    fi
    touch "$out/.$step"
    log "built $step in $((SECONDS - t0)) s"
}

module_dir() { # module@version -> directory of the extracted module zip
    local out
    out="$(cd "$CACHE_DIR" && GOTOOLCHAIN=local GOWORK=off GOFLAGS="" go mod download -json "$1")" ||
        return 1
    sed -n 's/^[[:space:]]*"Dir": "\(.*\)",\{0,1\}$/\1/p' <<<"$out"
}

# Version ldflags as hack/cluster.sh sets them, so `kubelet --version` reports the pin.
kubernetes_ldflags() {
    local kdate major minor ld="-s -w" p
    kdate="$(sed -n 's/.*"Time":"\([^"]*\)".*/\1/p' \
        "$(GOTOOLCHAIN=local go env GOMODCACHE)/cache/download/k8s.io/kubernetes/@v/$KUBERNETES_VERSION.info")"
    major="${KUBERNETES_VERSION#v}"
    major="${major%%.*}"
    minor="${KUBERNETES_VERSION#v*.}"
    minor="${minor%%.*}"
    for p in k8s.io/component-base/version k8s.io/client-go/pkg/version; do
        ld+=" -X $p.gitVersion=$KUBERNETES_VERSION -X $p.gitMajor=$major -X $p.gitMinor=$minor"
        ld+=" -X $p.gitTreeState=clean -X $p.buildDate=${kdate:-1970-01-01T00:00:00Z}"
    done
    echo "$ld"
}

build_binaries() {
    local b="$BIN_DIR" mlog="$CACHE_DIR/build-modules.log"
    mkdir -p "$b/cni"
    go_build kind "$TOOLS_DIR/kind" "-s -w" "$b" "" sigs.k8s.io/kind
    # As kind's base image builds containerd: without the snapshotters it never selects.
    go_build containerd "$TOOLS_DIR/containerd" \
        "-s -w -X github.com/containerd/containerd/v2/version.Version=$CONTAINERD_VERSION" "$b" \
        "-tags=no_aufs,no_zfs,no_btrfs,no_devmapper" \
        github.com/containerd/containerd/v2/cmd/containerd \
        github.com/containerd/containerd/v2/cmd/containerd-shim-runc-v2 \
        github.com/containerd/containerd/v2/cmd/ctr
    go_build crictl "$TOOLS_DIR/cri-tools" \
        "-s -w -X sigs.k8s.io/cri-tools/pkg/version.Version=$CRI_TOOLS_VERSION" "$b" "" \
        sigs.k8s.io/cri-tools/cmd/crictl
    go_build cni-plugins "$TOOLS_DIR/cni-plugins" "-s -w" "$b/cni" "" \
        github.com/containernetworking/plugins/plugins/ipam/host-local \
        github.com/containernetworking/plugins/plugins/main/loopback \
        github.com/containernetworking/plugins/plugins/main/ptp \
        github.com/containernetworking/plugins/plugins/meta/portmap
    go_build coredns "$TOOLS_DIR/coredns" "-s -w" "$b" "" github.com/coredns/coredns
    go_build etcd "$TOOLS_DIR/etcd" \
        "-s -w -X go.etcd.io/etcd/api/v3/version.GitSHA=$KUBEADM_ETCD_VERSION" "$b" \
        "-modfile=kubeadm.mod" .

    if [[ ! -f "$b/.pause" ]]; then
        # The sandbox's pause process, compiled from Kubernetes' own source as upstream does.
        local kdir
        kdir="$(module_dir "k8s.io/kubernetes@$KUBERNETES_VERSION" 2>>"$mlog")" ||
            build_fail kubernetes-download "$mlog"
        gcc -Os -Wall -Werror -static -DVERSION="v$PAUSE_VERSION" -o "$b/pause" \
            "$kdir/build/pause/linux/pause.c" >"$CACHE_DIR/build-pause.log" 2>&1 ||
            build_fail pause "$CACHE_DIR/build-pause.log"
        strip "$b/pause"
        touch "$b/.pause"
    fi
}

build_kubernetes_node() {
    go_build kubernetes-node "$TOOLS_DIR/kubernetes" "$(kubernetes_ldflags)" "$BIN_DIR" "" \
        k8s.io/kubernetes/cmd/kubelet k8s.io/kubernetes/cmd/kubeadm k8s.io/kubernetes/cmd/kube-proxy
}

# ---------------------------------------------------------------------------- images

present() { # image -> true when the engine holds it, made under this cache key
    [[ "$(docker image inspect --format "{{index .Config.Labels \"$KEY_LABEL\"}}" "$1" \
        2>/dev/null)" == "$CACHE_KEY" ]]
}

kind_dir() {
    module_dir "sigs.k8s.io/kind@$KIND_VERSION" 2>>"$CACHE_DIR/build-modules.log" ||
        build_fail kind-download "$CACHE_DIR/build-modules.log"
}

# kind's base image as its images/base/Dockerfile makes it, on Debian $DEBIAN_SUITE, with
# Debian's systemd, iptables and runc and the binaries built above.
build_base_image() {
    present "$BASE_IMAGE" && return 0
    local t0=$SECONDS tarball root="$CACHE_DIR/base.root" files logf="$CACHE_DIR/build-base.log"
    tarball="$("$HACK_DIR/images.sh" rootfs kind-base systemd conntrack iptables nftables \
        iproute2 ethtool util-linux mount kmod libseccomp2 pigz fuse-overlayfs e2fsprogs bash \
        ca-certificates curl jq procps runc)"
    files="$(kind_dir)/images/base/files"
    rm -rf "$root"
    mkdir -p "$root"
    {
        tar -C "$root" -xf "$tarball"
        install -m 0755 "$files"/usr/local/bin/* "$root/usr/local/bin/"
        mkdir -p "$root/kind/bin" "$root/etc/kubernetes/manifests" "$root/opt/cni/bin" \
            "$root/etc/containerd" "$root/etc/default" "$root/etc/sysctl.d" \
            "$root/etc/systemd/system/kubelet.service.d"
        install -m 0644 "$files"/kind/README.txt "$root/kind/"
        install -m 0755 "$files"/kind/bin/* "$root/kind/bin/"
        install -m 0644 "$files"/etc/crictl.yaml "$root/etc/"
        # The sandbox (pause) image is the one built here, at kubeadm's version.
        sed "s|sandbox_image = .*|sandbox_image = \"$REGISTRY/pause:$PAUSE_VERSION\"|" \
            "$files"/etc/containerd/config.toml >"$root/etc/containerd/config.toml"
        install -m 0644 "$files"/etc/default/* "$root/etc/default/"
        install -m 0644 "$files"/etc/sysctl.d/* "$root/etc/sysctl.d/"
        install -m 0644 "$files"/etc/systemd/system/*.service "$files"/etc/systemd/system/*.slice \
            "$root/etc/systemd/system/"
        install -m 0644 "$files"/etc/systemd/system/kubelet.service.d/* \
            "$root/etc/systemd/system/kubelet.service.d/"
        install -m 0755 "$BIN_DIR"/containerd "$BIN_DIR"/containerd-shim-runc-v2 "$BIN_DIR"/ctr \
            "$BIN_DIR"/crictl "$root/usr/local/bin/"
        install -m 0755 "$BIN_DIR"/cni/* "$root/opt/cni/bin/"
        # The Dockerfile's RUN steps: trim systemd to what a node needs, enable the units.
        find "$root/lib/systemd/system/sysinit.target.wants/" -name systemd-tmpfiles-setup.service -delete
        rm -f "$root"/lib/systemd/system/multi-user.target.wants/* \
            "$root"/etc/systemd/system/*.wants/* \
            "$root"/lib/systemd/system/local-fs.target.wants/* \
            "$root"/lib/systemd/system/sockets.target.wants/*udev* \
            "$root"/lib/systemd/system/sockets.target.wants/*initctl* \
            "$root"/lib/systemd/system/basic.target.wants/*
        echo "ReadKMsg=no" >>"$root/etc/systemd/journald.conf"
        ln -sf /usr/lib/systemd/systemd "$root/sbin/init"
        chroot "$root" systemctl enable kubelet.service containerd.service undo-mount-hacks.service
        chroot "$root" systemctl mask systemd-binfmt.service
        "$BIN_DIR/ctr" oci spec | python3 -c '
import json, sys
spec = json.load(sys.stdin)
spec.setdefault("hooks", {}).setdefault("createContainer", []).append(
    {"path": "/kind/bin/mount-product-files.sh"})
spec["process"].pop("rlimits", None)
json.dump(spec, sys.stdout, indent=2)' >"$root/etc/containerd/cri-base.json"
    } >"$logf" 2>&1 || build_fail base-image "$logf"
    tar --numeric-owner --xattrs -C "$root" -c . | docker import - "$BASE_IMAGE.tmp" \
        >/dev/null 2>>"$logf" || build_fail base-image "$logf"
    rm -rf "$root"
    # systemd exits on SIGRTMIN+3 (SIGTERM re-executes it); `docker import` cannot set it.
    finish_image "$BASE_IMAGE.tmp" "$BASE_IMAGE" 'ENV container=docker
STOPSIGNAL SIGRTMIN+3
ENTRYPOINT ["/usr/local/bin/entrypoint", "/sbin/init"]' 2>>"$logf" || build_fail base-image "$logf"
    log "built $BASE_IMAGE in $((SECONDS - t0)) s"
}

# finish_image from to [dockerfile-lines]: add metadata (no layer) and the cache-key
# label to an image made by `docker import` or `docker commit`, then drop the original.
finish_image() {
    printf 'FROM %s\nLABEL %s=%s\n%s\n' "$1" "$KEY_LABEL" "$CACHE_KEY" "$3" |
        legacy_build -t "$2" -
    docker rmi "$1" >/dev/null
}

image_from() { # tag from-image context-dir dockerfile-body: a small image by the engine
    local tag="$1" from="$2" ctx="$3" body="$4"
    printf 'FROM %s\nLABEL %s=%s\n%s\n' "$from" "$KEY_LABEL" "$CACHE_KEY" "$body" \
        >"$ctx/Dockerfile"
    legacy_build -t "$tag" "$ctx"
}

# docker build with the classic builder (dockerd here runs without BuildKit), its
# deprecation notice kept out of the output unless the build fails.
legacy_build() {
    local out
    out="$(DOCKER_BUILDKIT=0 docker build -q "$@" 2>&1 >/dev/null)" || {
        printf '%s\n' "$out" >&2
        return 1
    }
}

# The images kubeadm and kind's manifests name, each wrapping a binary built above, saved
# as the image tars of a Kubernetes server release tarball (kubernetes/server/bin/*.tar).
build_component_images() {
    local out="$1" kdir ctx="$CACHE_DIR/image-ctx" cp_bin t logf="$CACHE_DIR/build-images.log"
    kdir="$(kind_dir)"
    cp_bin="$("$HACK_DIR/cluster.sh" bin)"
    local kindnetd provisioner helper
    kindnetd="$(sed -n 's/^const kindnetdImage = "\(.*\)"$/\1/p' "$kdir/pkg/build/nodeimage/const_cni.go")"
    provisioner="$(sed -n 's/^const storageProvisionerImage = "\(.*\)"$/\1/p' "$kdir/pkg/build/nodeimage/const_storage.go")"
    helper="$(sed -n 's/^const storageHelperImage = "\(.*\)"$/\1/p' "$kdir/pkg/build/nodeimage/const_storage.go")"
    [[ -n "$kindnetd" && -n "$provisioner" && -n "$helper" ]] ||
        build_fail kind-image-names "$kdir/pkg/build/nodeimage/const_cni.go"
    local proxy_base
    proxy_base="$("$HACK_DIR/images.sh" rootfs kube-proxy iptables conntrack)"
    {
        docker image inspect "localhost/serflow/kube-proxy-base:$DEBIAN_SUITE" >/dev/null 2>&1 ||
            docker import "$proxy_base" "localhost/serflow/kube-proxy-base:$DEBIAN_SUITE"
        rm -rf "$ctx"
        mkdir -p "$ctx"
        for t in kube-apiserver kube-controller-manager kube-scheduler; do
            mkdir -p "$ctx/$t"
            cp "$cp_bin/$t" "$ctx/$t/"
            image_from "$REGISTRY/$t:$KUBERNETES_VERSION" "$DEBIAN_IMAGE" "$ctx/$t" \
                "COPY $t /usr/local/bin/$t"
        done
        mkdir -p "$ctx/kube-proxy" "$ctx/etcd" "$ctx/coredns" "$ctx/pause" "$ctx/kindnetd" \
            "$ctx/local-path"
        cp "$BIN_DIR/kube-proxy" "$ctx/kube-proxy/"
        image_from "$REGISTRY/kube-proxy:$KUBERNETES_VERSION" \
            "localhost/serflow/kube-proxy-base:$DEBIAN_SUITE" "$ctx/kube-proxy" \
            "COPY kube-proxy /usr/local/bin/kube-proxy"
        cp "$BIN_DIR/etcd" "$ctx/etcd/"
        image_from "$REGISTRY/etcd:${KUBEADM_ETCD_VERSION#v}-0" "$DEBIAN_IMAGE" "$ctx/etcd" \
            "COPY etcd /usr/local/bin/etcd"
        cp "$BIN_DIR/coredns" "$ctx/coredns/"
        image_from "$REGISTRY/coredns/coredns:$COREDNS_VERSION" "$DEBIAN_IMAGE" "$ctx/coredns" \
            "COPY coredns /coredns
USER 65532
ENTRYPOINT [\"/coredns\"]"
        cp "$BIN_DIR/pause" "$ctx/pause/"
        image_from "$REGISTRY/pause:$PAUSE_VERSION" scratch "$ctx/pause" \
            "COPY pause /pause
USER 65535:65535
ENTRYPOINT [\"/pause\"]"
        cp "$HACK_DIR/kind/kindnetd" "$ctx/kindnetd/"
        image_from "$kindnetd" "$DEBIAN_IMAGE" "$ctx/kindnetd" \
            "COPY kindnetd /bin/kindnetd
CMD [\"/bin/kindnetd\"]"
        cp "$HACK_DIR/kind/local-path-provisioner" "$ctx/local-path/"
        image_from "$provisioner" "$DEBIAN_IMAGE" "$ctx/local-path" \
            "COPY local-path-provisioner /usr/bin/local-path-provisioner"
        image_from "$helper" "$DEBIAN_IMAGE" "$ctx/local-path" ""
        # kind reads only the tags of an image tar's first "repositories" or "manifest.json"
        # entry; the extra images ride in kube-proxy.tar with "repositories" first.
        docker save -o "$ctx/apiserver.tar" "$REGISTRY/kube-apiserver:$KUBERNETES_VERSION"
        docker save -o "$ctx/cm.tar" "$REGISTRY/kube-controller-manager:$KUBERNETES_VERSION"
        docker save -o "$ctx/scheduler.tar" "$REGISTRY/kube-scheduler:$KUBERNETES_VERSION"
        docker save -o "$ctx/proxy.tar" "$REGISTRY/kube-proxy:$KUBERNETES_VERSION" \
            "$REGISTRY/etcd:${KUBEADM_ETCD_VERSION#v}-0" "$REGISTRY/coredns/coredns:$COREDNS_VERSION" \
            "$REGISTRY/pause:$PAUSE_VERSION" "$kindnetd" "$provisioner" "$helper"
        repositories_first "$ctx/apiserver.tar" "$out/kube-apiserver.tar"
        repositories_first "$ctx/cm.tar" "$out/kube-controller-manager.tar"
        repositories_first "$ctx/scheduler.tar" "$out/kube-scheduler.tar"
        repositories_first "$ctx/proxy.tar" "$out/kube-proxy.tar"
        # They live on in the node image; the engine need not keep them.
        docker rmi "$REGISTRY/kube-apiserver:$KUBERNETES_VERSION" \
            "$REGISTRY/kube-controller-manager:$KUBERNETES_VERSION" \
            "$REGISTRY/kube-scheduler:$KUBERNETES_VERSION" "$REGISTRY/kube-proxy:$KUBERNETES_VERSION" \
            "$REGISTRY/etcd:${KUBEADM_ETCD_VERSION#v}-0" "$REGISTRY/coredns/coredns:$COREDNS_VERSION" \
            "$REGISTRY/pause:$PAUSE_VERSION" "$kindnetd" "$provisioner" "$helper"
    } >"$logf" 2>&1 || build_fail component-images "$logf"
    rm -rf "$ctx"
}

repositories_first() { # in.tar out.tar: the same images, "repositories" first
    local dir="$1.d"
    rm -rf "$dir"
    mkdir -p "$dir"
    tar -C "$dir" -xf "$1"
    # docker save writes Docker Hub names short (kindest/kindnetd); kind compares the full
    # names kubeadm and its manifests use (docker.io/kindest/kindnetd).
    python3 - "$dir" <<'EOF'
import json, os, sys

def full(name: str) -> str:
    first, _, rest = name.partition("/")
    if rest and ("." in first or ":" in first or first == "localhost"):
        return name
    return "docker.io/" + (name if rest else "library/" + name)

d = sys.argv[1]
with open(os.path.join(d, "repositories")) as f:
    repos = json.load(f)
with open(os.path.join(d, "repositories"), "w") as f:
    json.dump({full(r): tags for r, tags in repos.items()}, f)
with open(os.path.join(d, "manifest.json")) as f:
    manifest = json.load(f)
for entry in manifest:
    entry["RepoTags"] = [full(t) for t in entry.get("RepoTags") or []]
with open(os.path.join(d, "manifest.json"), "w") as f:
    json.dump(manifest, f)
EOF
    # Member names without "./": docker save links shared layers by relative paths.
    (cd "$dir" && tar -cf "$2" repositories manifest.json \
        $(ls -A | grep -v -x -e repositories -e manifest.json))
    rm -rf "$dir" "$1"
}

build_node_image() {
    present "$NODE_IMAGE" && return 0
    local t0=$SECONDS work="$CACHE_DIR/node" logf="$CACHE_DIR/build-node.log"
    rm -rf "$work"
    mkdir -p "$work/kubernetes/server/bin"
    echo "$KUBERNETES_VERSION" >"$work/kubernetes/version"
    install -m 0755 "$BIN_DIR/kubeadm" "$BIN_DIR/kubelet" "$("$HACK_DIR/cluster.sh" bin)/kubectl" \
        "$work/kubernetes/server/bin/"
    build_component_images "$work/kubernetes/server/bin"
    tar -C "$work" -cf - kubernetes | gzip -1 >"$work/kubernetes-server-linux-amd64.tar.gz"
    log "images and server tarball in $((SECONDS - t0)) s"
    "$BIN_DIR/kind" build node-image --type file --base-image "$BASE_IMAGE" \
        --image "$NODE_IMAGE.tmp" "$work/kubernetes-server-linux-amd64.tar.gz" >"$logf" 2>&1 ||
        build_fail node-image "$logf"
    finish_image "$NODE_IMAGE.tmp" "$NODE_IMAGE" "" 2>>"$logf" || build_fail node-image "$logf"
    rm -rf "$work"
    log "built $NODE_IMAGE in $((SECONDS - t0)) s: $(docker image inspect --format '{{.Size}}' \
        "$NODE_IMAGE" | numfmt --to=si)B"
}

use_engine() {
    local env
    env="$("$HACK_DIR/docker.sh" env)" || die "no Docker engine answers (run: hack/docker.sh up)"
    eval "$env"
}

build_start() {
    use_engine
    command -v go >/dev/null || {
        log "build step 'go toolchain' failed: go not found on PATH"
        exit 3
    }
    mkdir -p "$CACHE_DIR"
    exec 8>"$CACHE_DIR/.build.lock"
    flock 8
}

do_base() { # everything but Kubernetes: kind, the base image's binaries, the base image
    build_start
    local t0=$SECONDS
    build_binaries
    "$HACK_DIR/images.sh" debian
    build_base_image
    log "kind and $BASE_IMAGE ready in $((SECONDS - t0)) s"
}

do_build() {
    build_start
    local t0=$SECONDS rc=0
    build_binaries
    build_kubernetes_node
    "$HACK_DIR/cluster.sh" build 8>&- || rc=$?
    ((rc == 0)) || exit "$rc"
    "$HACK_DIR/images.sh" debian
    build_base_image
    build_node_image
    build_knative
    log "build complete in $((SECONDS - t0)) s"
}

# ---------------------------------------------------------------------------- knative

# Knative Serving's components as local images, under a key of their own (a Knative change
# does not rebuild the node image).
KNATIVE_COMPONENTS="activator autoscaler controller queue webhook"
KNATIVE_KEY="$(
    {
        echo "recipe=$BUILD_RECIPE"
        echo "go=$(GOTOOLCHAIN=local go env GOVERSION 2>/dev/null || echo none)"
        echo "images=$("$HACK_DIR/images.sh" key)"
        echo "knative=$KNATIVE_SERVING_VERSION"
        cat "$TOOLS_DIR"/knative-serving/go.{mod,sum}
    } | sha256sum | cut -c1-16
)"
KNATIVE_BIN_DIR="$CACHE_ROOT/knative-$KNATIVE_KEY/bin"

knative_image() { echo "localhost/serflow/knative-$1:$KNATIVE_SERVING_VERSION"; }

build_knative() {
    local c pkgs=() ctx="$CACHE_ROOT/knative-$KNATIVE_KEY/image-ctx"
    for c in $KNATIVE_COMPONENTS; do pkgs+=("knative.dev/serving/cmd/$c"); done
    mkdir -p "$KNATIVE_BIN_DIR"
    CACHE_DIR="$CACHE_ROOT/knative-$KNATIVE_KEY" go_build knative-serving \
        "$TOOLS_DIR/knative-serving" "-s -w" "$KNATIVE_BIN_DIR" "" "${pkgs[@]}"
    "$HACK_DIR/images.sh" debian
    for c in $KNATIVE_COMPONENTS; do
        present "$(knative_image "$c")" && continue
        rm -rf "$ctx"
        mkdir -p "$ctx"
        cp "$KNATIVE_BIN_DIR/$c" "$ctx/"
        # As ko builds them: the binary as entrypoint, non-root, KO_DATA_PATH set.
        image_from "$(knative_image "$c")" "$DEBIAN_IMAGE" "$ctx" "COPY $c /ko-app/$c
ENV KO_DATA_PATH=/var/run/ko
USER 65532
ENTRYPOINT [\"/ko-app/$c\"]" || die "building $(knative_image "$c") failed"
    done
    rm -rf "$ctx"
}

# Knative Serving's core from its module zips (CRDs, RBAC, config, webhooks, components),
# its ko:// images replaced by the local ones and CPU requests lowered to fit 2 cores.
# No networking layer is installed: Revisions and Configurations become Ready, Routes do not.
do_knative() {
    exists || die "not up (run: hack/kind.sh up)"
    local t0=$SECONDS c images=() serving networking caching mlog="$CACHE_ROOT/knative-modules.log"
    build_knative
    for c in $KNATIVE_COMPONENTS; do images+=("$(knative_image "$c")"); done
    "$BIN_DIR/kind" load docker-image --name "$CLUSTER" --nodes "$(nodes_for knative)" \
        "${images[@]}" >&2
    serving="$(module_dir "knative.dev/serving@$KNATIVE_SERVING_VERSION" 2>>"$mlog")" ||
        die "knative.dev/serving@$KNATIVE_SERVING_VERSION: see $mlog"
    networking="$(module_dir "knative.dev/networking@$(module_version knative.dev/networking)" 2>>"$mlog")" ||
        die "knative.dev/networking: see $mlog"
    caching="$(module_dir "knative.dev/caching@$(module_version knative.dev/caching)" 2>>"$mlog")" ||
        die "knative.dev/caching: see $mlog"
    kubectl_ apply --server-side -f "$serving/config/core/300-resources" \
        -f "$networking/config/certificate.yaml" -f "$networking/config/ingress.yaml" \
        -f "$networking/config/serverlessservice.yaml" -f "$networking/config/domain-claim.yaml" \
        -f "$caching/config/image.yaml" >/dev/null
    kubectl_ wait --for=condition=Established crd --all --timeout=60s >/dev/null
    local sed_images=() f
    for c in $KNATIVE_COMPONENTS; do
        sed_images+=(-e "s|ko://knative.dev/serving/cmd/$c\$|$(knative_image "$c")|")
    done
    for f in "$serving"/config/core/100-namespace.yaml "$serving"/config/core/200-*.yaml \
        "$serving"/config/core/200-roles/*.yaml "$serving"/config/core/300-knativecertificate.yaml \
        "$networking"/config/config-network.yaml "$serving"/config/core/configmaps/*.yaml \
        "$serving"/config/core/webhooks/*.yaml "$serving"/config/core/deployments/*.yaml \
        "$serving"/config/core/999-cache.yaml; do
        echo "---"
        sed "${sed_images[@]}" "$f"
    done | kubectl_ apply --server-side --force-conflicts -f - >/dev/null
    kubectl_ -n knative-serving set resources deployment --all --requests=cpu=10m >/dev/null
    # Room for the functions: the control-plane node (the machine's 2 cores) runs every
    # function pod, and with CoreDNS's default requests (2 x 100m) it fits two beside the
    # rest (1,738m of 2,000m asked), so a hybrid plan's tail could not start while the
    # spill had two pods (Pending: Insufficient cpu). Like Knative's above, 10m each.
    kubectl_ -n kube-system set resources deployment coredns --requests=cpu=10m >/dev/null
    # A test cluster: decide on 10 s of traffic (not 60) and drop an idle function's last
    # pod 10 s after it went idle (not 30), so scaling to zero and back takes seconds.
    kubectl_ -n knative-serving patch configmap config-autoscaler --type=merge \
        -p '{"data":{"stable-window":"10s","scale-to-zero-grace-period":"10s"}}' >/dev/null
    # spec.model.storageUri: the operator gives each function's pods the storage
    # initializer as an init container and, for pvc://, the claim as a read-only volume;
    # Knative's webhook refuses both unless these features are on (both off by default:
    # "pod spec support for init-containers is off"). secure-pod-defaults: Knative's own
    # queue-proxy gets a RuntimeDefault seccomp profile, which Pod Security "restricted"
    # requires of every container (the e2e test's namespace enforces it).
    kubectl_ -n knative-serving patch configmap config-features --type=merge \
        -p '{"data":{"kubernetes.podspec-init-containers":"enabled",
                     "kubernetes.podspec-persistent-volume-claim":"enabled",
                     "secure-pod-defaults":"enabled"}}' >/dev/null
    # Knative resolves a Service's image tags to digests by asking the registry from its
    # controller's pod, where localhost:<port> is the pod itself: the local registry's
    # names are skipped as kind.local and dev.local are (the tests name images by digest,
    # which Knative never resolves).
    kubectl_ -n knative-serving patch configmap config-deployment --type=merge \
        -p "{\"data\":{\"registries-skipping-tag-resolving\":\"kind.local,ko.local,dev.local,$IMAGE_REGISTRY\"}}" >/dev/null
    kubectl_ -n knative-serving patch hpa activator webhook --type=merge \
        -p '{"spec":{"minReplicas":1,"maxReplicas":1}}' >/dev/null 2>&1 || true
    kubectl_ -n knative-serving rollout status deployment --timeout=300s >&2 ||
        die "Knative Serving's deployments did not become available"
    log "Knative Serving $KNATIVE_SERVING_VERSION up in $((SECONDS - t0)) s"
}

module_version() { # module -> its version in the knative-serving wrapper's go.mod
    sed -n "s|^[[:space:]]*$1 \([^ ]*\).*|\1|p" "$TOOLS_DIR/knative-serving/go.mod"
}

# ---------------------------------------------------------------------------- cluster

kubectl_() { "$("$HACK_DIR/cluster.sh" bin)/kubectl" --kubeconfig "$KUBECONFIG_FILE" "$@"; }

exists() { "$BIN_DIR/kind" get clusters 2>/dev/null | grep -qx "$CLUSTER"; }

write_config() {
    cat >"$STATE_DIR/kind.yaml" <<EOF
kind: Cluster
apiVersion: kind.x-k8s.io/v1alpha4
# Two nodes on one machine: the control plane, which also runs Knative, the operator,
# Envoy and the functions, and one node of the pool, labelled as a cloud node (as on the
# kwok path's fake nodes) and tainted so that only pool pods (which tolerate
# serflow.io/pool) land there. Each node sees the machine's cores, so a pool pod asking
# for most of a c6i.large (2 vCPUs) fits. Both mount the same directory of this machine,
# so a hostPath PersistentVolume under $NODE_SHARED holds the same files on either node.
nodes:
- role: control-plane
  image: $NODE_IMAGE
  extraMounts:
  - {hostPath: $SHARED_DIR, containerPath: $NODE_SHARED}
- role: worker
  image: $NODE_IMAGE
  extraMounts:
  - {hostPath: $SHARED_DIR, containerPath: $NODE_SHARED}
  labels:
    node.kubernetes.io/instance-type: c6i.large
    serflow.io/pool: default
  kubeadmConfigPatches:
  - |
    kind: JoinConfiguration
    nodeRegistration:
      taints:
      - {key: serflow.io/pool, value: default, effect: NoSchedule}
networking:
  podSubnet: $POD_SUBNET
  serviceSubnet: $SERVICE_SUBNET
containerdConfigPatches:
# Without it every pod sandbox fails where the engine cannot raise OOM scores
# ("can't get final child's PID from pipe: EOF").
- |-
  [plugins."io.containerd.grpc.v1.cri"]
    restrict_oom_score_adj = true
# Registries are configured per host under certs.d (the local registry's hosts.toml).
- |-
  [plugins."io.containerd.grpc.v1.cri".registry]
    config_path = "/etc/containerd/certs.d"
kubeadmConfigPatches:
# kubelet refuses cgroup v1 hosts unless told otherwise.
- |
  kind: KubeletConfiguration
  failCgroupV1: false
EOF
}

shared_mounted() { # every node mounts the shared directory (clusters made before it did not)
    local n
    for n in $("$BIN_DIR/kind" get nodes --name "$CLUSTER"); do
        docker inspect -f '{{range .Mounts}}{{println .Destination}}{{end}}' "$n" |
            grep -qx "$NODE_SHARED" || return 1
    done
}

node_ready() { # every node Ready
    local ready
    ready="$(kubectl_ get nodes -o jsonpath='{.items[*].status.conditions[?(@.type=="Ready")].status}' \
        2>/dev/null)" || return 1
    [[ "$ready" == "True True" ]]
}

# What kindnetd would do between nodes: a route to each other node's pod /24 (the one the
# stand-in gives it: the last octet of its address) through that node. The CNI gives each
# pod a /32 route on its node that goes away with the pod, so without a route for the
# whole pod range a packet to a pod that is gone (or to a /24 no node has) took the node's
# default route to the Docker bridge and on out of the machine (the API server's pod proxy
# reading a function pod's metrics after Knative had removed it): an unreachable route for
# the range makes it fail at once, in the node.
#
# And DNS stays in the cluster: Docker's DNS server inside a node (the node's resolver, and
# CoreDNS's upstream) forwards a name it does not know to this machine's resolver, from the
# node itself. Nothing in the cluster needs an outside name, so the node rejects DNS to
# anything but its loopback (Docker's server is at 127.0.0.11), and the query fails at once
# there instead of being dropped on the host after a timeout.
route_nodes() {
    local n m ip_m p
    for n in $("$BIN_DIR/kind" get nodes --name "$CLUSTER"); do
        docker exec "$n" ip route replace unreachable "$POD_SUBNET"
        for p in udp tcp; do
            docker exec "$n" iptables -I OUTPUT -p "$p" --dport 53 ! -d 127.0.0.0/8 -j REJECT
        done
        for m in $("$BIN_DIR/kind" get nodes --name "$CLUSTER"); do
            [[ "$n" == "$m" ]] && continue
            ip_m="$(docker inspect -f '{{range .NetworkSettings.Networks}}{{.IPAddress}}{{end}}' "$m")"
            docker exec "$n" ip route replace "10.244.${ip_m##*.}.0/24" via "$ip_m"
        done
    done
}

do_up() {
    "$HACK_DIR/docker.sh" up
    do_build
    mkdir -p "$STATE_DIR"
    exec 9>"$STATE_DIR/.lock"
    flock -w 600 9 || die "another hack/kind.sh up/down holds $STATE_DIR/.lock"
    if exists && node_ready && shared_mounted && registry_configured; then
        registry_up
        wire_registry
        log "already up"
        print_usage
        return 0
    fi
    if exists; then
        log "cluster $CLUSTER exists but a node is not Ready, lacks $NODE_SHARED or the registry's config; recreating it"
        "$BIN_DIR/kind" delete cluster --name "$CLUSTER" --kubeconfig "$KUBECONFIG_FILE" >&2
    fi
    mkdir -p "$SHARED_DIR"
    write_config
    confine_network
    local t0=$SECONDS
    KIND_EXPERIMENTAL_DOCKER_NETWORK="$NETWORK" "$BIN_DIR/kind" create cluster --name "$CLUSTER" --config "$STATE_DIR/kind.yaml" \
        --kubeconfig "$KUBECONFIG_FILE" --wait 0s >"$STATE_DIR/create.log" 2>&1 || {
        tail -n 20 "$STATE_DIR/create.log" >&2
        die "kind create cluster failed (log: $STATE_DIR/create.log)"
    }
    log "cluster created in $((SECONDS - t0)) s"
    route_nodes
    registry_up
    wire_registry
    # The control plane takes workloads too (everything but the pool, which selects the
    # worker by its instance type).
    kubectl_ taint nodes -l node-role.kubernetes.io/control-plane \
        node-role.kubernetes.io/control-plane:NoSchedule- >/dev/null
    local deadline=$((SECONDS + 180))
    until node_ready; do
        ((SECONDS < deadline)) || die "the node did not become Ready in 180 s"
        sleep 1
    done
    log "node Ready $((SECONDS - t0)) s after create"
    print_usage
}

do_check() {
    exists || die "not up (run: hack/kind.sh up)"
    local ns=kind-check t0=$SECONDS etcd_image="$REGISTRY/etcd:${KUBEADM_ETCD_VERSION#v}-0"
    kubectl_ delete namespace "$ns" --ignore-not-found --wait=true >/dev/null
    kubectl_ create namespace "$ns" >/dev/null
    # A server pod (etcd's HTTP API) behind a Service, and a client pod that asks it for
    # /version through the Service's DNS name: CoreDNS, kube-proxy and the CNI all take
    # part. Both images are in the node image, so nothing is pulled.
    kubectl_ -n "$ns" apply -f - >/dev/null <<EOF
apiVersion: v1
kind: Pod
metadata: {name: server, labels: {app: server}}
spec:
  containers:
  - name: etcd
    image: $etcd_image
    imagePullPolicy: Never
    command: [etcd, --data-dir=/tmp/etcd, --listen-client-urls=http://0.0.0.0:2379,
              --advertise-client-urls=http://server:2379]
    readinessProbe: {httpGet: {path: /health, port: 2379}, periodSeconds: 1}
---
apiVersion: v1
kind: Service
metadata: {name: server}
spec:
  selector: {app: server}
  ports: [{port: 80, targetPort: 2379}]
---
apiVersion: v1
kind: Pod
metadata: {name: client}
spec:
  restartPolicy: Never
  containers:
  - name: client
    image: $etcd_image
    imagePullPolicy: Never
    command:
    - bash
    - -c
    - |
      until exec 3<>/dev/tcp/server.$ns.svc.cluster.local/80; do sleep 1; done
      printf 'GET /version HTTP/1.0\r\n\r\n' >&3
      cat <&3
EOF
    if ! kubectl_ -n "$ns" wait --for=jsonpath='{.status.phase}'=Succeeded pod/client \
        --timeout=120s >/dev/null; then
        kubectl_ -n "$ns" get pods,endpointslices -o wide >&2 || true
        kubectl_ -n "$ns" logs client >&2 || true
        die "the client pod did not reach the server through its Service"
    fi
    local answer
    answer="$(kubectl_ -n "$ns" logs client | tail -n 1)"
    grep -q '"etcdserver"' <<<"$answer" || die "unexpected answer through the Service: $answer"
    log "a pod reached another through Service server.$ns in $((SECONDS - t0)) s: $answer"
    kubectl_ delete namespace "$ns" --wait=false >/dev/null
}

# The nodes an image is loaded into (kind's --nodes). The pool node is tainted: only the
# pool's pods and the instance-type profiling Jobs tolerate it, and both run the worker
# image, and the storage initializer when the artefact is fetched; everything else
# (Knative, the operator, Envoy, the functions, an S3 gateway) runs on the control plane.
# Loading each image only where it runs halves most loads.
nodes_for() {
    case "$1" in
    worker | storage) echo "$CLUSTER-control-plane,$CLUSTER-worker" ;; # function-size Jobs too
    *) echo "$CLUSTER-control-plane" ;;
    esac
}

# Versity's S3 gateway as an image: hack/gotool.sh versitygw's binary (static: CGO_ENABLED=0,
# cached outside the checkout, shared with the storage initializer's tests) on the local
# Debian base, as Knative's images are made above; non-root, the binary as entrypoint.
build_versitygw() { # tag
    local bin ctx rc=0
    bin="$("$HACK_DIR/gotool.sh" versitygw build)" || rc=$?
    ((rc == 0)) || exit "$rc" # 3: cannot be built here
    "$HACK_DIR/images.sh" debian
    ctx="$(mktemp -d)"
    cp "$bin" "$ctx/versitygw"
    image_from "$1" "$DEBIAN_IMAGE" "$ctx" 'COPY versitygw /usr/local/bin/versitygw
USER 65532
ENTRYPOINT ["/usr/local/bin/versitygw"]' || {
        rm -rf "$ctx"
        die "building $1 failed"
    }
    rm -rf "$ctx"
}

# Images of this repository, built from its Dockerfiles on the local Python base (and
# versitygw, see above), pushed to the cluster's registry, from which the nodes pull them
# as a cluster pulls from any registry. Prints `NAME REFERENCE` per image, the reference by
# digest (localhost:<port>/serflow/<name>@sha256:...): what the tests and the demo apply.
do_load() {
    exists || die "not up (run: hack/kind.sh up)"
    local what names=() t0=$SECONDS
    (($# > 0)) || set -- operator
    registry_up
    for what in "$@"; do
        if [[ "$what" == versitygw ]]; then
            build_versitygw "localhost/serflow/versitygw:local"
            "$HACK_DIR/images.sh" push "$IMAGE_REGISTRY" localhost/serflow/versitygw:local
        else
            names+=("$what")
        fi
    done
    if ((${#names[@]} > 0)); then
        "$HACK_DIR/images.sh" publish "$IMAGE_REGISTRY" "${names[@]}"
    fi
    log "pushed $* to $IMAGE_REGISTRY in $((SECONDS - t0)) s"
}

# ---------------------------------------------------------------------------- registry

# The CNCF distribution registry (hack/gotool.sh registry: its pinned Go module, static) on
# the local Debian base, run as a container on the confined network: this machine's engine
# pushes to it on 127.0.0.1:$REGISTRY_PORT, the nodes pull from it by its container name.
# Its storage lives in the cache (content-addressed, so it outlives clusters safely).
registry_image() {
    echo "localhost/serflow/registry:$(sed -n 's|^[[:space:]]*github.com/distribution/distribution/v3 \(v[^ ]*\).*|\1|p' \
        "$TOOLS_DIR/registry/go.mod")"
}

build_registry_image() {
    local bin ctx rc=0 tag sum
    tag="$(registry_image)"
    bin="$("$HACK_DIR/gotool.sh" registry build)" || rc=$?
    ((rc == 0)) || exit "$rc" # 3: cannot be built here
    sum="$(sha256sum <"$bin" | cut -c1-16)"
    [[ "$(docker image inspect --format '{{index .Config.Labels "io.serflow.binary"}}' "$tag" \
        2>/dev/null)" == "$sum" ]] && return 0
    "$HACK_DIR/images.sh" debian
    ctx="$(mktemp -d)"
    cp "$bin" "$ctx/registry"
    # No delete, no notifications, no proxying to another registry; listens on 5000 inside
    # its container only (published on 127.0.0.1).
    cat >"$ctx/config.yml" <<'YAML'
version: 0.1
log: {level: warn}
storage:
  filesystem: {rootdirectory: /var/lib/registry}
  delete: {enabled: false}
  maintenance: {uploadpurging: {enabled: false}}
http:
  addr: :5000
  headers: {X-Content-Type-Options: [nosniff]}
YAML
    image_from "$tag" "$DEBIAN_IMAGE" "$ctx" "LABEL io.serflow.binary=$sum
COPY registry /usr/local/bin/registry
COPY config.yml /etc/distribution/config.yml
USER 65532
ENTRYPOINT [\"/usr/local/bin/registry\"]
CMD [\"serve\", \"/etc/distribution/config.yml\"]" || {
        rm -rf "$ctx"
        die "building $tag failed"
    }
    rm -rf "$ctx"
}

registry_answers() { curl -fs -m 2 -o /dev/null "http://127.0.0.1:$REGISTRY_PORT/v2/"; }

registry_up() {
    local image deadline
    build_registry_image
    image="$(registry_image)"
    if [[ "$(docker inspect -f '{{.State.Running}} {{.Config.Image}}' "$REGISTRY_CONTAINER" \
        2>/dev/null)" == "true $image" ]] && registry_answers; then
        return 0
    fi
    docker rm -f "$REGISTRY_CONTAINER" >/dev/null 2>&1 || true
    mkdir -p "$REGISTRY_DATA"
    chown 65532:65532 "$REGISTRY_DATA"
    docker run -d --name "$REGISTRY_CONTAINER" --network "$NETWORK" \
        -p "127.0.0.1:$REGISTRY_PORT:5000" -v "$REGISTRY_DATA:/var/lib/registry" \
        --read-only --user 65532:65532 --cap-drop ALL --security-opt no-new-privileges \
        "$image" >/dev/null || die "could not start the registry (is 127.0.0.1:$REGISTRY_PORT taken?)"
    deadline=$((SECONDS + 30))
    until registry_answers; do
        ((SECONDS < deadline)) || die "the registry did not answer on 127.0.0.1:$REGISTRY_PORT in 30 s"
        sleep 0.5
    done
    log "registry $REGISTRY_CONTAINER serves $IMAGE_REGISTRY"
}

# Each node's containerd reaches $IMAGE_REGISTRY at the registry's container (its name, by
# Docker's DNS in the node, 127.0.0.11), over plain HTTP inside the confined network.
wire_registry() {
    local n dir="/etc/containerd/certs.d/$IMAGE_REGISTRY"
    for n in $("$BIN_DIR/kind" get nodes --name "$CLUSTER"); do
        docker exec -i "$n" sh -c "mkdir -p '$dir' && cat >'$dir/hosts.toml'" <<EOF
server = "http://$IMAGE_REGISTRY"

[host."http://$REGISTRY_CONTAINER:5000"]
  capabilities = ["pull", "resolve"]
EOF
    done
}

# The reference by digest of serflow/NAME:TAG (default local) in the registry, as the nodes
# will pull it (the tests apply images by it, never by tag).
do_ref() {
    local name="$1" tag="${2:-local}" digest
    digest="$(curl -fsSI -m 10 -H 'Accept: application/vnd.docker.distribution.manifest.v2+json' \
        -H 'Accept: application/vnd.oci.image.manifest.v1+json' \
        "http://127.0.0.1:$REGISTRY_PORT/v2/serflow/$name/manifests/$tag" 2>/dev/null |
        tr -d '\r' | sed -n 's/^docker-content-digest: *//Ip')" || true
    [[ "$digest" == sha256:* ]] ||
        die "no image serflow/$name:$tag in $IMAGE_REGISTRY (run: hack/kind.sh load $name)"
    echo "$IMAGE_REGISTRY/serflow/$name@$digest"
}

registry_configured() { # every node's containerd reads certs.d (clusters made before did not)
    local n
    for n in $("$BIN_DIR/kind" get nodes --name "$CLUSTER"); do
        docker exec "$n" grep -q 'config_path = "/etc/containerd/certs.d"' \
            /etc/containerd/config.toml || return 1
    done
}

do_down() {
    if [[ -x "$BIN_DIR/kind" ]] && docker_ok && exists; then
        "$BIN_DIR/kind" delete cluster --name "$CLUSTER" --kubeconfig "$KUBECONFIG_FILE" >&2
    else
        log "no cluster $CLUSTER"
    fi
    rm -f "$KUBECONFIG_FILE"
    rm -rf "$SHARED_DIR"
    docker_ok && docker rm -f "$REGISTRY_CONTAINER" >/dev/null 2>&1 || true
    if docker_ok && docker network inspect "$NETWORK" >/dev/null 2>&1 && [[ -z "$(members)" ]]; then
        docker network rm "$NETWORK" >/dev/null
        nft delete table inet "$NFT_TABLE" 2>/dev/null || true
        log "removed network $NETWORK and its drop rule"
    fi
}

# ---------------------------------------------------------------------------- confinement

members() { # the containers on the confined network
    docker network inspect -f '{{range .Containers}}{{.Name}} {{end}}' "$NETWORK"
}

# The nodes' Docker network, made here (kind uses it through KIND_EXPERIMENTAL_DOCKER_NETWORK)
# so that its bridge has a known name, and the rule that confines it, in a table of its own
# that runs before Docker's (a drop in any table is final): a packet from the bridge to any
# other interface is dropped and counted in a set keyed by its destination. Made afresh
# (counts from zero) when no node is on the network, and in place before a node starts.
confine_network() {
    command -v nft >/dev/null || die "nft is missing (hack/docker.sh up installs nftables)"
    if ! docker network inspect "$NETWORK" >/dev/null 2>&1; then
        docker network create --driver bridge -o "com.docker.network.bridge.name=$BRIDGE" \
            -o com.docker.network.bridge.enable_ip_masquerade=true \
            -o com.docker.network.driver.mtu=1500 "$NETWORK" >/dev/null ||
            die "docker network create $NETWORK failed"
    elif [[ -n "$(members)" ]] && nft list table inet "$NFT_TABLE" >/dev/null 2>&1; then
        return 0 # another cluster's nodes are on it: keep its rule and counts
    fi
    nft delete table inet "$NFT_TABLE" 2>/dev/null || true
    nft -f - <<NFT || die "could not install the drop rule for $BRIDGE (nft)"
table inet $NFT_TABLE {
    set dropped4 {
        type ipv4_addr . inet_proto . inet_service; size 65535; flags dynamic; counter;
    }
    set dropped6 {
        type ipv6_addr . inet_proto . inet_service; size 65535; flags dynamic; counter;
    }
    chain forward {
        type filter hook forward priority filter - 10; policy accept;
        iifname "$BRIDGE" oifname != "$BRIDGE" meta nfproto ipv4 add @dropped4 { ip daddr . meta l4proto . th dport } counter drop
        iifname "$BRIDGE" oifname != "$BRIDGE" meta nfproto ipv6 add @dropped6 { ip6 daddr . meta l4proto . th dport } counter drop
    }
}
NFT
    log "network $NETWORK ($(network_subnet)): nothing from $BRIDGE is forwarded beyond it"
}

network_subnet() {
    docker network inspect -f '{{range .IPAM.Config}}{{.Subnet}} {{end}}' "$NETWORK" | awk '{print $1}'
}

# What the rule dropped, one `ADDRESS PROTOCOL PORT PACKETS` line per destination, then
# `total - - PACKETS` from the rule's own counters (the sets are bounded; the total is not).
do_drops() {
    nft list table inet "$NFT_TABLE" >/dev/null 2>&1 || die "no drop rule (run: hack/kind.sh up)"
    local set
    for set in dropped4 dropped6; do
        nft -nn list set inet "$NFT_TABLE" "$set" | tr -d '\n\t' |
            { grep -oE '[0-9a-f.:]+ \. [0-9]+ \. [0-9]+ counter packets [0-9]+' || true; } |
            awk '{p = $3 == 6 ? "tcp" : $3 == 17 ? "udp" : $3 == 1 ? "icmp" : $3 == 58 ? "icmpv6" : $3
                  print $1, p, $5, $8}'
    done
    nft -nn list chain inet "$NFT_TABLE" forward |
        grep -oE 'counter packets [0-9]+' | awk '{n += $3} END {print "total - -", n + 0}'
}

docker_ok() {
    local env
    env="$("$HACK_DIR/docker.sh" env 2>/dev/null)" || return 1
    eval "$env"
}

print_usage() {
    cat >&2 <<EOF
kind.sh: cluster $CLUSTER is up. Use it with:
  eval "\$($HACK_DIR/kind.sh env)"
  kubectl get nodes
EOF
}

do_env() {
    [[ -f "$KUBECONFIG_FILE" ]] || die "not up (run: hack/kind.sh up)"
    "$HACK_DIR/docker.sh" env
    use_engine
    echo "export KUBECONFIG=$KUBECONFIG_FILE"
    echo "export SERFLOW_KIND_SUBNET=$(network_subnet)"
    echo "export SERFLOW_KIND_POD_SUBNET=$POD_SUBNET"
    echo "export SERFLOW_KIND_SERVICE_SUBNET=$SERVICE_SUBNET"
    echo "export SERFLOW_KIND_SHARED=$NODE_SHARED"
    echo "export SERFLOW_KIND_REGISTRY=$IMAGE_REGISTRY"
    echo "export PATH=$BIN_DIR:$("$HACK_DIR/cluster.sh" bin):\$PATH"
}

case "${1:-}" in
build) do_build ;;
base) do_base ;;
up) do_up ;;
check)
    use_engine
    do_check
    ;;
load)
    use_engine
    shift
    do_load "$@"
    ;;
knative)
    use_engine
    do_knative
    ;;
down) do_down ;;
ref)
    [[ -n "${2:-}" ]] || die "usage: $0 ref NAME [TAG]"
    do_ref "$2" "${3:-}"
    ;;
digest)
    [[ -n "${2:-}" ]] || die "usage: $0 digest NAME [TAG]"
    ref="$(do_ref "$2" "${3:-}")"
    echo "${ref#*@}"
    ;;
drops) do_drops ;;
status)
    docker_ok && [[ -x "$BIN_DIR/kind" ]] && exists && node_ready
    ;;
env) do_env ;;
bin)
    [[ -f "$BIN_DIR/.kind" ]] || exit 1
    echo "$BIN_DIR"
    ;;
*)
    echo "usage: $0 build|base|up|check|load [IMAGE...]|ref NAME [TAG]|digest NAME [TAG]|knative|down|drops|status|env|bin" >&2
    exit 2
    ;;
esac
