#!/usr/bin/env bash
# Regenerate the wrapper modules under hack/tools/ from hack/versions.env, then resolve
# their go.sum with `go mod tidy`. Run after changing a version; commit the result.
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
        for m in kube-apiserver kube-controller-manager kube-scheduler kubectl; do
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

write_simple() { # dir module version [tool-package]
    {
        echo "// Wrapper module for $2. Regenerate with hack/tools/update.sh."
        echo "module serflow.local/hack/tools/$1"
        echo
        echo 'go 1.26.0'
        echo
        [[ -n "${4:-}" ]] && echo "tool $4" && echo
        echo "require $2 $3"
    } >"$TOOLS_DIR/$1/go.mod"
}

write_kubernetes
write_simple etcd go.etcd.io/etcd/server/v3 "$ETCD_VERSION"
write_simple kwok sigs.k8s.io/kwok "$KWOK_VERSION" sigs.k8s.io/kwok/cmd/kwok
write_simple helm helm.sh/helm/v3 "$HELM_VERSION" helm.sh/helm/v3/cmd/helm
for d in kubernetes etcd kwok helm; do
    rm -f "$TOOLS_DIR/$d/go.sum"
    (cd "$TOOLS_DIR/$d" && go mod tidy)
    echo "updated hack/tools/$d"
done
