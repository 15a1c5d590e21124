#!/usr/bin/env bash
# A real Kubernetes control plane as local processes, without Docker: etcd,
# kube-apiserver, kube-controller-manager, kube-scheduler and kwok (fake nodes), plus
# kubectl and helm, all built once from the Go modules pinned in hack/versions.env.
#
#   hack/cluster.sh build   build (or reuse) the binaries and CRD files in the cache
#   hack/cluster.sh up      build if needed, start everything, apply the CRDs, wait
#   hack/cluster.sh down    stop exactly the processes `up` started, remove the state
#                           (refused while a registered user runs, unless --force)
#   hack/cluster.sh env     print `export KUBECONFIG=...` (and PATH for kubectl/helm)
#   hack/cluster.sh status  exit 0 when the cluster is up and /readyz answers
#   hack/cluster.sh bin     print the directory holding the binaries
#   hack/cluster.sh state   print the state directory
#
# Environment:
#   XDG_CACHE_HOME                  build cache root (default ~/.cache)
#   SERFLOW_CLUSTER_STATE           state dir (default hack/.state, gitignored)
#   SERFLOW_KWOK_POD_READY_DELAY_MS default cold start of a pod on kwok (default 0);
#                                   per pod: annotation pod-ready.stage.kwok.x-k8s.io/delay
# Pytest sessions and the demo (serflow_testbed.harness) register by creating
# $STATE/users/<their PID> while they use the cluster.
# Exit status 3 means the binaries could not be built on this machine.
set -euo pipefail

HACK_DIR="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
TOOLS_DIR="$HACK_DIR/tools"
# shellcheck source-path=SCRIPTDIR source=versions.env
source "$HACK_DIR/versions.env"

# Bump when the way binaries are built changes, so the cache key changes with it.
BUILD_RECIPE=1
CACHE_ROOT="${XDG_CACHE_HOME:-$HOME/.cache}/serflow/cluster"
CACHE_KEY="$(
    {
        echo "recipe=$BUILD_RECIPE"
        go_version="$(GOTOOLCHAIN=local go env GOVERSION 2>/dev/null || echo none)"
        echo "go=$go_version"
        # The host's nftables pin (hack/docker.sh) builds nothing here.
        grep -v -e '^NFTABLES_' -e '^# host: ' -e '^# (hack/kind.sh); no build key' "$HACK_DIR/versions.env"
        # Only this script's modules: the kind path's (hack/kind.sh) do not rebuild these.
        for f in "$TOOLS_DIR"/{etcd,helm,kubernetes,kwok}/go.mod \
            "$TOOLS_DIR"/{etcd,helm,kubernetes,kwok}/go.sum "$TOOLS_DIR"/etcd/*.go; do
            echo "== ${f#"$TOOLS_DIR"/}"
            cat "$f"
        done
    } | sha256sum | cut -c1-16
)"
CACHE_DIR="$CACHE_ROOT/$CACHE_KEY"
BIN_DIR="$CACHE_DIR/bin"
DATA_DIR="$CACHE_DIR/share"
STATE_DIR="${SERFLOW_CLUSTER_STATE:-$HACK_DIR/.state}"
POD_READY_DELAY_MS="${SERFLOW_KWOK_POD_READY_DELAY_MS:-0}"

SERVICE_CIDR=10.96.0.0/16
SERVICE_API_IP=10.96.0.1
POD_CIDR=10.244.0.0/16

log() { printf 'cluster.sh: %s\n' "$*" >&2; }
die() {
    log "error: $*"
    exit 1
}

# ---------------------------------------------------------------------------- build

build_fail() { # step, log file
    log "build step '$1' failed; last lines of $2:"
    tail -n 15 "$2" >&2 || true
    exit 3
}

go_build() { # step, module dir, ldflags, out dir, packages...
    local step="$1" dir="$2" ldflags="$3" out="$4"
    shift 4
    local logf="$CACHE_DIR/build-$step.log"
    local t0=$SECONDS
    log "building $step ($*) ..."
    if ! (cd "$dir" && GOTOOLCHAIN=local GOFLAGS="-mod=readonly -buildvcs=false" \
        nice -n 10 go build -trimpath -ldflags "$ldflags" -o "$out/" "$@") >"$logf" 2>&1; then
        build_fail "$step" "$logf"
    fi
    log "built $step in $((SECONDS - t0)) s"
}

# module@version -> the directory of the extracted module zip (downloaded outside any module,
# so the wrapper go.mod/go.sum files are never touched).
module_dir() {
    local out
    if ! out="$(cd "$CACHE_DIR" && GOTOOLCHAIN=local GOWORK=off GOFLAGS="" go mod download -json "$1")"; then
        printf '%s\n' "$out" >&2
        return 1
    fi
    sed -n 's/^[[:space:]]*"Dir": "\(.*\)",\{0,1\}$/\1/p' <<<"$out"
}

do_build() {
    if [[ -f "$BIN_DIR/.complete" ]]; then
        return 0
    fi
    command -v go >/dev/null || {
        log "build step 'go toolchain' failed: go not found on PATH"
        exit 3
    }
    mkdir -p "$CACHE_DIR"
    exec 8>"$CACHE_DIR/.build.lock"
    flock 8
    if [[ -f "$BIN_DIR/.complete" ]]; then # built by a concurrent caller
        return 0
    fi
    local t0=$SECONDS tmp="$CACHE_DIR/bin.tmp"
    rm -rf "$tmp" "$DATA_DIR.tmp"
    mkdir -p "$tmp" "$DATA_DIR.tmp"

    # Kubernetes: the version ldflags make /version and `kubectl version` report the pin.
    local kdate major minor ld="-s -w" p
    module_dir "k8s.io/kubernetes@$KUBERNETES_VERSION" >/dev/null 2>"$CACHE_DIR/build-modules.log" ||
        build_fail kubernetes-download "$CACHE_DIR/build-modules.log"
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
    go_build kubernetes "$TOOLS_DIR/kubernetes" "$ld" "$tmp" \
        k8s.io/kubernetes/cmd/kube-apiserver k8s.io/kubernetes/cmd/kube-controller-manager \
        k8s.io/kubernetes/cmd/kube-scheduler k8s.io/kubernetes/cmd/kubectl

    go_build etcd "$TOOLS_DIR/etcd" \
        "-s -w -X go.etcd.io/etcd/api/v3/version.GitSHA=$ETCD_VERSION" "$tmp" .

    go_build kwok "$TOOLS_DIR/kwok" \
        "-s -w -X sigs.k8s.io/kwok/pkg/consts.Version=$KWOK_VERSION -X sigs.k8s.io/kwok/pkg/consts.KubeVersion=$KUBERNETES_VERSION" \
        "$tmp" sigs.k8s.io/kwok/cmd/kwok

    local hmajor="${KUBERNETES_STAGING_VERSION#v0.}"
    hmajor="${hmajor%%.*}"
    go_build helm "$TOOLS_DIR/helm" \
        "-s -w -X helm.sh/helm/v3/internal/version.version=$HELM_VERSION -X helm.sh/helm/v3/internal/version.gitTreeState=clean -X helm.sh/helm/v3/pkg/lint/rules.k8sVersionMajor=1 -X helm.sh/helm/v3/pkg/lint/rules.k8sVersionMinor=$hmajor -X helm.sh/helm/v3/pkg/chartutil.k8sVersionMajor=1 -X helm.sh/helm/v3/pkg/chartutil.k8sVersionMinor=$hmajor" \
        "$tmp" helm.sh/helm/v3/cmd/helm

    # Data taken from module zips: kwok's stages, Knative Serving's and Gateway API's CRDs.
    local mlog="$CACHE_DIR/build-modules.log" kwokdir kndir gwdir
    kwokdir="$(module_dir "sigs.k8s.io/kwok@$KWOK_VERSION" 2>>"$mlog")" ||
        build_fail kwok-stages "$mlog"
    kndir="$(module_dir "knative.dev/serving@$KNATIVE_SERVING_VERSION" 2>>"$mlog")" ||
        build_fail knative-crds "$mlog"
    gwdir="$(module_dir "sigs.k8s.io/gateway-api@$GATEWAY_API_VERSION" 2>>"$mlog")" ||
        build_fail gateway-api-crds "$mlog"
    mkdir -p "$DATA_DIR.tmp/kwok-stages" "$DATA_DIR.tmp/crds/knative-serving" \
        "$DATA_DIR.tmp/crds/gateway-api"
    cp "$kwokdir"/kustomize/stage/node/fast/node-initialize.yaml \
        "$kwokdir"/kustomize/stage/node/heartbeat-with-lease/node-heartbeat-with-lease.yaml \
        "$kwokdir"/kustomize/stage/pod/general/pod-*.yaml "$DATA_DIR.tmp/kwok-stages/"
    cp "$kndir"/config/core/300-resources/*.yaml "$DATA_DIR.tmp/crds/knative-serving/"
    cp "$gwdir"/config/crd/standard/*.yaml "$DATA_DIR.tmp/crds/gateway-api/"
    chmod -R u+w "$DATA_DIR.tmp"
    if ! grep -q 'openAPIV3Schema' "$DATA_DIR.tmp/crds/knative-serving/service.yaml" ||
        [[ "$(wc -l <"$DATA_DIR.tmp/crds/knative-serving/service.yaml")" -lt 500 ]]; then
        log "build step 'knative-crds' failed: service.yaml carries no full openAPIV3Schema"
        exit 3
    fi

    rm -rf "$DATA_DIR" "$BIN_DIR"
    mv "$DATA_DIR.tmp" "$DATA_DIR"
    mv "$tmp" "$BIN_DIR"
    touch "$BIN_DIR/.complete"
    log "build complete in $((SECONDS - t0)) s: $BIN_DIR"
}

# ---------------------------------------------------------------------------- helpers

free_port() {
    python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])'
}

kubectl_() { "$BIN_DIR/kubectl" --kubeconfig "$STATE_DIR/kubeconfig" "$@"; }

readyz() {
    [[ -f "$STATE_DIR/kubeconfig" ]] &&
        kubectl_ get --raw /readyz --request-timeout=3s >/dev/null 2>&1
}

# wait_for description timeout_seconds command...
wait_for() {
    local what="$1" timeout="$2"
    shift 2
    local deadline=$((SECONDS + timeout))
    until "$@"; do
        if ((SECONDS >= deadline)); then
            log "timed out after ${timeout}s waiting for $what"
            return 1
        fi
        sleep 0.5
    done
}

# start name binary args...: start a process in its own session, remember its PID.
start() {
    local name="$1"
    shift
    # 8>&- 9>&-: the daemons must not inherit (and so hold) the build/state locks.
    setsid "$@" >"$STATE_DIR/logs/$name.log" 2>&1 </dev/null 8>&- 9>&- &
    echo $! >"$STATE_DIR/pids/$name.pid"
}

alive() { # name
    local pid
    pid="$(cat "$STATE_DIR/pids/$1.pid" 2>/dev/null)" || return 1
    kill -0 "$pid" 2>/dev/null
}

ours() { # pid -> true if the PID runs one of our binaries
    local exe
    exe="$(readlink "/proc/$1/exe" 2>/dev/null)" || return 1
    [[ "$exe" == "$CACHE_ROOT"/* ]]
}

# ---------------------------------------------------------------------------- pki

gen_key() { openssl genpkey -algorithm RSA -pkeyopt rsa_keygen_bits:2048 -out "$1" 2>/dev/null; }

gen_cert() { # name cn org [san]: a client or serving certificate signed by the local CA
    local pki="$STATE_DIR/pki" name="$1" cn="$2" org="$3" san="${4:-}" subj ext
    subj="/CN=$cn"
    [[ -n "$org" ]] && subj="/O=$org$subj"
    gen_key "$pki/$name.key"
    ext="$pki/$name.ext"
    {
        echo "basicConstraints=critical,CA:FALSE"
        echo "keyUsage=critical,digitalSignature,keyEncipherment"
        if [[ -n "$san" ]]; then
            echo "extendedKeyUsage=serverAuth"
            echo "subjectAltName=$san"
        else
            echo "extendedKeyUsage=clientAuth"
        fi
    } >"$ext"
    openssl req -new -key "$pki/$name.key" -subj "$subj" -out "$pki/$name.csr" 2>/dev/null
    openssl x509 -req -in "$pki/$name.csr" -CA "$pki/ca.crt" -CAkey "$pki/ca.key" \
        -CAcreateserial -days 30 -sha256 -extfile "$ext" -out "$pki/$name.crt" 2>/dev/null
}

write_kubeconfig() { # file user-cert-name server
    local pki="$STATE_DIR/pki"
    cat >"$1" <<EOF
apiVersion: v1
kind: Config
clusters:
- name: serflow-local
  cluster:
    server: $3
    certificate-authority-data: $(base64 -w0 "$pki/ca.crt")
users:
- name: $2
  user:
    client-certificate-data: $(base64 -w0 "$pki/$2.crt")
    client-key-data: $(base64 -w0 "$pki/$2.key")
contexts:
- name: serflow-local
  context:
    cluster: serflow-local
    user: $2
current-context: serflow-local
EOF
    chmod 600 "$1"
}

gen_pki() {
    local pki="$STATE_DIR/pki"
    mkdir -p "$pki"
    chmod 700 "$pki"
    gen_key "$pki/ca.key"
    openssl req -x509 -new -key "$pki/ca.key" -subj "/CN=serflow-local-ca" -days 30 -sha256 \
        -addext "basicConstraints=critical,CA:TRUE" \
        -addext "keyUsage=critical,keyCertSign,cRLSign,digitalSignature" \
        -out "$pki/ca.crt" 2>/dev/null
    gen_cert apiserver kube-apiserver "" \
        "IP:127.0.0.1,IP:$SERVICE_API_IP,DNS:localhost,DNS:kubernetes,DNS:kubernetes.default,DNS:kubernetes.default.svc,DNS:kubernetes.default.svc.cluster.local"
    gen_cert admin kubernetes-admin system:masters
    gen_cert controller-manager system:kube-controller-manager ""
    gen_cert scheduler system:kube-scheduler ""
    gen_key "$pki/sa.key"
    openssl pkey -in "$pki/sa.key" -pubout -out "$pki/sa.pub" 2>/dev/null
}

# ---------------------------------------------------------------------------- up/down

kwok_config() {
    # kwok's own "general" pod stages with no delay by default. Their fixed jitter lines go:
    # kwok uses the jitter instead of the delay when the jitter is smaller, which would
    # void the per-pod delay annotation.
    local f ms
    for f in "$DATA_DIR"/kwok-stages/*.yaml; do
        echo "---"
        case "$(basename "$f")" in
        pod-*.yaml)
            ms=0
            [[ "$(basename "$f")" == pod-ready.yaml ]] && ms="$POD_READY_DELAY_MS"
            sed -e "s/^\(\s*\)durationMilliseconds: [0-9]*/\1durationMilliseconds: $ms/" \
                -e '/^\s*jitterDurationMilliseconds: [0-9]*$/d' "$f"
            ;;
        *) cat "$f" ;;
        esac
    done
}

# Two fake nodes with the labels of a real cloud node pool.
fake_nodes() {
    local name itype cpu mem zone
    for spec in "pool-c6i-xlarge-0 c6i.xlarge 4 8Gi a" "pool-c6i-large-0 c6i.large 2 4Gi b"; do
        read -r name itype cpu mem zone <<<"$spec"
        cat <<EOF
---
apiVersion: v1
kind: Node
metadata:
  name: $name
  annotations:
    kwok.x-k8s.io/node: fake
    node.alpha.kubernetes.io/ttl: "0"
  labels:
    type: kwok
    kubernetes.io/arch: amd64
    kubernetes.io/os: linux
    kubernetes.io/hostname: $name
    node.kubernetes.io/instance-type: $itype
    topology.kubernetes.io/region: us-east-1
    topology.kubernetes.io/zone: us-east-1$zone
    serflow.io/pool: default
spec: {}
status:
  allocatable: {cpu: "$cpu", memory: $mem, pods: "110"}
  capacity: {cpu: "$cpu", memory: $mem, pods: "110"}
  nodeInfo:
    architecture: amd64
    operatingSystem: linux
    kubeletVersion: fake
EOF
    done
}

do_up() {
    do_build
    local tool
    for tool in openssl python3 flock setsid base64 sha256sum; do
        command -v "$tool" >/dev/null || die "$tool is needed to start the cluster"
    done
    mkdir -p "$STATE_DIR"
    exec 9>"$STATE_DIR/.lock"
    flock -w 600 9 || die "another hack/cluster.sh up/down holds $STATE_DIR/.lock"
    if readyz; then
        log "already up"
        print_usage
        return 0
    fi
    if compgen -G "$STATE_DIR/pids/*.pid" >/dev/null; then
        log "stale state found; cleaning it up"
        stop_all
    fi
    local t0=$SECONDS
    rm -rf "${STATE_DIR:?}"/{etcd,logs,pids,pki,run,users,started-by-harness} "$STATE_DIR"/*.kubeconfig
    mkdir -p "$STATE_DIR"/{etcd,logs,pids,run}
    chmod 700 "$STATE_DIR/etcd"
    gen_pki

    local etcd_port peer_port api_port kwok_port server
    etcd_port="$(free_port)"
    peer_port="$(free_port)"
    api_port="$(free_port)"
    kwok_port="$(free_port)"
    server="https://127.0.0.1:$api_port"
    write_kubeconfig "$STATE_DIR/kubeconfig" admin "$server"
    write_kubeconfig "$STATE_DIR/controller-manager.kubeconfig" controller-manager "$server"
    write_kubeconfig "$STATE_DIR/scheduler.kubeconfig" scheduler "$server"

    start etcd "$BIN_DIR/etcd" --name=serflow --data-dir="$STATE_DIR/etcd" \
        --listen-client-urls="http://127.0.0.1:$etcd_port" \
        --advertise-client-urls="http://127.0.0.1:$etcd_port" \
        --listen-peer-urls="http://127.0.0.1:$peer_port" \
        --initial-advertise-peer-urls="http://127.0.0.1:$peer_port" \
        --initial-cluster="serflow=http://127.0.0.1:$peer_port" \
        --unsafe-no-fsync=true --quota-backend-bytes=2147483648 --log-level=warn

    local pki="$STATE_DIR/pki"
    start kube-apiserver "$BIN_DIR/kube-apiserver" \
        --etcd-servers="http://127.0.0.1:$etcd_port" \
        --bind-address=127.0.0.1 --advertise-address=127.0.0.1 --secure-port="$api_port" \
        --endpoint-reconciler-type=none \
        --cert-dir="$STATE_DIR/run" \
        --tls-cert-file="$pki/apiserver.crt" --tls-private-key-file="$pki/apiserver.key" \
        --client-ca-file="$pki/ca.crt" \
        --service-account-issuer=https://kubernetes.default.svc.cluster.local \
        --service-account-key-file="$pki/sa.pub" \
        --service-account-signing-key-file="$pki/sa.key" \
        --authorization-mode=Node,RBAC \
        --service-cluster-ip-range="$SERVICE_CIDR" \
        --allow-privileged=true --profiling=false

    wait_for "etcd" 30 alive etcd || fail_up etcd
    wait_for "kube-apiserver /readyz" 90 api_ready || fail_up kube-apiserver

    start kube-controller-manager "$BIN_DIR/kube-controller-manager" \
        --kubeconfig="$STATE_DIR/controller-manager.kubeconfig" \
        --bind-address=127.0.0.1 --secure-port=0 --leader-elect=false \
        --cert-dir="$STATE_DIR/run" \
        --use-service-account-credentials=true \
        --service-account-private-key-file="$pki/sa.key" --root-ca-file="$pki/ca.crt" \
        --cluster-signing-cert-file="$pki/ca.crt" --cluster-signing-key-file="$pki/ca.key" \
        --service-cluster-ip-range="$SERVICE_CIDR" --cluster-cidr="$POD_CIDR" \
        --allocate-node-cidrs=false --controllers='*' --profiling=false
    start kube-scheduler "$BIN_DIR/kube-scheduler" \
        --kubeconfig="$STATE_DIR/scheduler.kubeconfig" \
        --authentication-kubeconfig="$STATE_DIR/scheduler.kubeconfig" \
        --authorization-kubeconfig="$STATE_DIR/scheduler.kubeconfig" \
        --bind-address=127.0.0.1 --secure-port=0 --leader-elect=false --profiling=false
    kwok_config >"$STATE_DIR/kwok.yaml"
    start kwok "$BIN_DIR/kwok" --config="$STATE_DIR/kwok.yaml" \
        --kubeconfig="$STATE_DIR/kubeconfig" \
        --manage-all-nodes=false --manage-nodes-with-annotation-selector=kwok.x-k8s.io/node=fake \
        --node-ip=127.0.0.1 --cidr=10.244.0.1/16 --node-lease-duration-seconds=40 \
        --server-address="127.0.0.1:$kwok_port"

    fake_nodes | kubectl_ apply -f - >/dev/null || fail_up nodes
    kubectl_ apply --server-side --force-conflicts \
        -f "$DATA_DIR/crds/knative-serving" -f "$DATA_DIR/crds/gateway-api" >/dev/null ||
        fail_up crds
    kubectl_ wait --for=condition=Established crd --all --timeout=60s >/dev/null || fail_up crds
    wait_for "nodes Ready" 60 nodes_ready || fail_up kwok
    wait_for "the default ServiceAccount" 60 \
        kubectl_ get serviceaccount default -n default >/dev/null 2>&1 ||
        fail_up kube-controller-manager
    local p
    for p in kube-controller-manager kube-scheduler kwok; do
        alive "$p" || fail_up "$p"
    done

    cat >"$STATE_DIR/cluster.env" <<EOF
KUBECONFIG=$STATE_DIR/kubeconfig
SERFLOW_CLUSTER_BIN=$BIN_DIR
SERFLOW_CLUSTER_SERVER=$server
SERFLOW_CLUSTER_KEY=$CACHE_KEY
EOF
    log "up in $((SECONDS - t0)) s (API server $server)"
    print_usage
}

api_ready() {
    alive kube-apiserver || fail_up kube-apiserver
    readyz
}

nodes_ready() {
    local out
    out="$(kubectl_ get nodes -l type=kwok \
        -o jsonpath='{range .items[*]}{.status.conditions[?(@.type=="Ready")].status}{"\n"}{end}' \
        2>/dev/null)" || return 1
    [[ "$(grep -c '^True$' <<<"$out")" -eq 2 ]]
}

fail_up() {
    log "'$1' did not come up; last lines of its log:"
    tail -n 20 "$STATE_DIR/logs/$1.log" >&2 2>/dev/null || true
    stop_all
    exit 1
}

stop_all() {
    # Everything but etcd at once (kwok, scheduler, controller manager, API server), then
    # etcd; SIGKILL whatever is still running after 10 s.
    local group name pid f i live
    for group in "kwok kube-scheduler kube-controller-manager kube-apiserver" etcd; do
        live=()
        for name in $group; do
            f="$STATE_DIR/pids/$name.pid"
            [[ -f "$f" ]] || continue
            pid="$(cat "$f")"
            if kill -0 "$pid" 2>/dev/null && ours "$pid"; then
                kill -TERM "$pid" 2>/dev/null || true
                live+=("$pid")
            fi
            rm -f "$f"
        done
        for ((i = 0; i < 40 && ${#live[@]} > 0; i++)); do
            for pid in "${!live[@]}"; do
                kill -0 "${live[$pid]}" 2>/dev/null || unset "live[$pid]"
            done
            ((${#live[@]} > 0)) && sleep 0.25
        done
        for pid in "${live[@]}"; do
            log "process $pid did not stop on SIGTERM; killing it"
            kill -KILL "$pid" 2>/dev/null || true
        done
    done
}

do_down() {
    [[ -d "$STATE_DIR" ]] || {
        log "not running"
        return 0
    }
    local force="${1:-}" users=() u
    for u in "$STATE_DIR"/users/*; do
        if [[ -e "$u" ]] && kill -0 "$(basename "$u")" 2>/dev/null; then
            users+=("$(basename "$u")")
        fi
    done
    if ((${#users[@]} > 0)) && [[ "$force" != --force ]]; then
        die "processes ${users[*]} are using the cluster (see $STATE_DIR/users); use: down --force"
    fi
    exec 9>"$STATE_DIR/.lock"
    flock -w 120 9 || log "warning: $STATE_DIR/.lock is still held; stopping anyway"
    stop_all
    rm -rf "${STATE_DIR:?}"/{etcd,logs,pids,pki,run,users,cluster.env,kubeconfig,kwok.yaml,started-by-harness} \
        "$STATE_DIR"/*.kubeconfig
    log "down"
}

print_usage() {
    cat >&2 <<EOF
cluster.sh: the control plane is up. Use it with:
  eval "\$($HACK_DIR/cluster.sh env)"
  kubectl get nodes
EOF
}

do_env() {
    [[ -f "$STATE_DIR/cluster.env" ]] || die "not up (run: hack/cluster.sh up)"
    echo "export KUBECONFIG=$STATE_DIR/kubeconfig"
    echo "export PATH=$BIN_DIR:\$PATH"
}

case "${1:-}" in
build) do_build ;;
up) do_up ;;
down) do_down "${2:-}" ;;
env) do_env ;;
state) echo "$STATE_DIR" ;;
status) readyz ;;
bin)
    [[ -f "$BIN_DIR/.complete" ]] || exit 1
    echo "$BIN_DIR"
    ;;
*)
    echo "usage: $0 build|up|down|env|status|bin|state" >&2
    exit 2
    ;;
esac
