#!/usr/bin/env bash
# Regenerate the wrapper modules under hack/tools/ from hack/versions.env, then resolve
# their go.sum with `go mod tidy`. Run after changing a version; commit the result.
#   hack/tools/update.sh [DIR...]   only these modules (e.g. kind containerd); default all
set -euo pipefail

TOOLS_DIR="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
# shellcheck source=/dev/null
source "$TOOLS_DIR/../versions.env"
export GOTOOLCHAIN=local GOWORK=off GOFLAGS=-mod=mod

# The k8s.io staging modules that k8s.io/kubernetes requires at v0.0.0.
staging_modules() {
    curl -fsS "${GOPROXY_URL:-https://proxy.golang.org}/k8s.io/kubernetes/@v/$KUBERNETES_VERSION.mod" |
        sed -n 's|^[[:space:]]*\(k8s.io/[a-z0-9-]*\) => ./staging/.*|\1|p'
}

write_kubernetes() {
    local m
    {
        echo '// Wrapper module: builds the control-plane binaries of k8s.io/kubernetes from the module'
        echo '// proxy. k8s.io/kubernetes requires its staging modules at v0.0.0 with replaces to'
        echo '// ./staging/src/...; those replaces are ignored in a dependency, so each staging module'
        echo '// is replaced here by its published version. Regenerate with hack/tools/update.sh.'
        echo 'module serflow.local/hack/tools/kubernetes'
        echo
        echo 'go 1.26.0'
        echo
        echo 'tool ('
        # kubelet, kubeadm and kube-proxy: the kind node image (hack/kind.sh).
        for m in kube-apiserver kube-controller-manager kube-scheduler kubectl kubelet kubeadm kube-proxy; do
            printf '\tk8s.io/kubernetes/cmd/%s\n' "$m"
        done
        echo ')'
        echo
        echo "require k8s.io/kubernetes $KUBERNETES_VERSION"
        echo
        echo 'replace ('
        # Only modules the proxy serves (sample-cli-plugin/sample-controller are not
        # published and not required).
        for m in $(staging_modules); do
            if curl -fsS -o /dev/null "${GOPROXY_URL:-https://proxy.golang.org}/$m/@v/$KUBERNETES_STAGING_VERSION.info" 2>/dev/null; then
                printf '\t%s => %s %s\n' "$m" "$m" "$KUBERNETES_STAGING_VERSION"
            fi
        done
        echo ')'
    } >"$TOOLS_DIR/kubernetes/go.mod"
}

write_simple() { # dir module version [tool-package...]
    local dir="$1" module="$2" version="$3" t
    shift 3
    mkdir -p "$TOOLS_DIR/$dir"
    {
        echo "// Wrapper module for $module. Regenerate with hack/tools/update.sh."
        echo "module serflow.local/hack/tools/$dir"
        echo
        echo 'go 1.26.0'
        echo
        if (($# == 1)); then
            echo "tool $1" && echo
        elif (($# > 1)); then
            echo 'tool ('
            for t in "$@"; do printf '\t%s\n' "$t"; done
            echo ')' && echo
        fi
        echo "require $module $version"
    } >"$TOOLS_DIR/$dir/go.mod"
}

# The etcd that kubeadm deploys on a kind node: tools/etcd's main.go with a second go.mod
# (kubeadm.mod), so the control plane's etcd pin stays apart.
write_kubeadm_etcd() {
    {
        echo "// go.etcd.io/etcd/server/v3 at the version kubeadm deploys (hack/kind.sh):"
        echo "// go build -modfile=kubeadm.mod. Regenerate with hack/tools/update.sh."
        echo "module serflow.local/hack/tools/etcd"
        echo
        echo 'go 1.26.0'
        echo
        echo "require go.etcd.io/etcd/server/v3 $KUBEADM_ETCD_VERSION"
    } >"$TOOLS_DIR/etcd/kubeadm.mod"
    rm -f "$TOOLS_DIR/etcd/kubeadm.sum"
    (cd "$TOOLS_DIR/etcd" && go mod tidy -modfile=kubeadm.mod)
}

write_module() { # dir
    case "$1" in
    kubernetes) write_kubernetes ;;
    etcd) write_simple etcd go.etcd.io/etcd/server/v3 "$ETCD_VERSION" ;;
    kwok) write_simple kwok sigs.k8s.io/kwok "$KWOK_VERSION" sigs.k8s.io/kwok/cmd/kwok ;;
    helm) write_simple helm helm.sh/helm/v3 "$HELM_VERSION" helm.sh/helm/v3/cmd/helm ;;
    # The kind path (hack/kind.sh): kind itself and what its base image holds.
    kind) write_simple kind sigs.k8s.io/kind "$KIND_VERSION" sigs.k8s.io/kind ;;
    containerd)
        write_simple containerd github.com/containerd/containerd/v2 "$CONTAINERD_VERSION" \
            github.com/containerd/containerd/v2/cmd/containerd \
            github.com/containerd/containerd/v2/cmd/containerd-shim-runc-v2 \
            github.com/containerd/containerd/v2/cmd/ctr
        ;;
    cri-tools) write_simple cri-tools sigs.k8s.io/cri-tools "$CRI_TOOLS_VERSION" sigs.k8s.io/cri-tools/cmd/crictl ;;
    cni-plugins)
        write_simple cni-plugins github.com/containernetworking/plugins "$CNI_PLUGINS_VERSION" \
            github.com/containernetworking/plugins/plugins/ipam/host-local \
            github.com/containernetworking/plugins/plugins/main/loopback \
            github.com/containernetworking/plugins/plugins/main/ptp \
            github.com/containernetworking/plugins/plugins/meta/portmap
        ;;
    coredns) write_simple coredns github.com/coredns/coredns "$COREDNS_VERSION" github.com/coredns/coredns ;;
    knative-serving)
        write_simple knative-serving knative.dev/serving "$KNATIVE_SERVING_VERSION" \
            knative.dev/serving/cmd/activator knative.dev/serving/cmd/autoscaler \
            knative.dev/serving/cmd/controller knative.dev/serving/cmd/queue \
            knative.dev/serving/cmd/webhook
        ;;
    *)
        echo "update.sh: unknown module $1" >&2
        exit 2
        ;;
    esac
}

(($# > 0)) || set -- kubernetes etcd kwok helm kind containerd cri-tools cni-plugins coredns \
    knative-serving
for d in "$@"; do
    write_module "$d"
    rm -f "$TOOLS_DIR/$d/go.sum"
    (cd "$TOOLS_DIR/$d" && go mod tidy)
    [[ "$d" == etcd ]] && write_kubeadm_etcd
    echo "updated hack/tools/$d"
done
