#!/usr/bin/env bash
# Paddock on a local kind cluster, end to end: a cluster whose CNI enforces NetworkPolicy
# (kindnet off, Calico on), the two images built and loaded, the chart installed, and a model:
# the Claude API when ANTHROPIC_API_KEY is set, otherwise the scripted Messages API
# (paddock.testing.fakemodel) deployed in the cluster. Safe to run again: it creates what is
# missing, rebuilds the images (Docker's cache makes that quick), upgrades the release and
# restarts Paddock's pods when an image changed. Arguments go to `helm upgrade --install`.
#
#   bash hack/kind-up.sh                      # or: ANTHROPIC_API_KEY=... bash hack/kind-up.sh
#   bash hack/kind-up.sh --set operator.replicas=1
#
# Environment (defaults in brackets):
#   PADDOCK_KIND_CLUSTER      kind cluster name [paddock]; kubectl context kind-<name>
#   PADDOCK_KIND_NAMESPACE    namespace for your Agents: gets the `anthropic` Secret and a
#                             gateway API key [default]
#   PADDOCK_NAMESPACE         release namespace [paddock-system]
#   PADDOCK_RELEASE           helm release name [paddock]
#   PADDOCK_IMAGE_TAG         tag of paddock/paddock and paddock/sandbox [chart appVersion]
#   KIND_NODE_IMAGE           node image [kind's default for its version]
#   CALICO_VERSION            Calico release [v3.31.3]
#   PADDOCK_KIND_TIMEOUT      per wait [10m]
#   KIND, KUBECTL, HELM       binaries to use [kind and kubectl from PATH, else built from
#                             hack/kind/go.mod; helm from hack/build-helm.sh, or from PATH
#                             where there is no go]
#   ANTHROPIC_API_KEY         set: the Claude API; unset: the scripted model
set -euo pipefail
cd "$(dirname "$0")/.."

cluster=${PADDOCK_KIND_CLUSTER:-paddock}
user_namespace=${PADDOCK_KIND_NAMESPACE:-default}
namespace=${PADDOCK_NAMESPACE:-paddock-system}
release=${PADDOCK_RELEASE:-paddock}
tag=${PADDOCK_IMAGE_TAG:-$(awk -F'"' '/^appVersion:/ {print $2}' charts/paddock/Chart.yaml)}
node_image=${KIND_NODE_IMAGE:-}
calico_version=${CALICO_VERSION:-v3.31.3}
timeout=${PADDOCK_KIND_TIMEOUT:-10m}
fakemodel_namespace=paddock-fakemodel # fixed: hack/kind/fakemodel-egress.yaml selects it
cache="${PADDOCK_CACHE:-$HOME/.cache/paddock}/kind"
# The chart's object prefix (paddock.fullname), for the hints at the end.
fullname=$release; [[ $release == *paddock* ]] || fullname="$release-paddock"
paddock_image="paddock/paddock:$tag"
sandbox_image="paddock/sandbox:$tag"

say() { echo "kind-up: $*" >&2; }
die() { echo "kind-up: error: $*" >&2; exit 1; }
step_start=$(date +%s)
step() { say "$* ($(( $(date +%s) - step_start ))s)"; }

# --- tools ---------------------------------------------------------------------------
command -v docker >/dev/null || die "no 'docker' CLI on PATH: kind runs its nodes in Docker"
docker info >/dev/null 2>&1 \
  || die "no Docker engine answers ('docker info' fails): start Docker or set DOCKER_HOST"
command -v curl >/dev/null || die "no 'curl' on PATH (needed to fetch the Calico manifest)"
if [[ -z ${KIND:-} ]]; then KIND=$(command -v kind || true); fi
if [[ -z ${KUBECTL:-} ]]; then KUBECTL=$(command -v kubectl || true); fi
if [[ -z $KIND || -z $KUBECTL ]]; then
  tools=$(bash hack/kind/build.sh)
  KIND=${KIND:-$tools/kind}
  KUBECTL=${KUBECTL:-$tools/kubectl}
fi
if [[ -z ${HELM:-} ]]; then
  if command -v go >/dev/null; then
    HELM=$(bash hack/build-helm.sh) # the helm the chart is tested with
  else
    HELM=$(command -v helm) || die "no 'go' to build helm (hack/build-helm.sh) and no 'helm' on PATH"
  fi
fi
say "using $("$KIND" version), kubectl $("$KUBECTL" version --client -o json \
  | sed -n 's/.*"gitVersion": *"\([^"]*\)".*/\1/p' | head -1), $("$HELM" version --short)"

# --- the cluster ---------------------------------------------------------------------
clusters=$("$KIND" get clusters 2>/dev/null || true)
if grep -qx "$cluster" <<<"$clusters"; then
  say "cluster '$cluster' exists"
else
  say "creating kind cluster '$cluster' without kindnet (hack/kind/cluster.yaml)"
  "$KIND" create cluster --name "$cluster" --config hack/kind/cluster.yaml \
    ${node_image:+--image "$node_image"}
fi
# A kubeconfig of our own: nothing below depends on the current context.
mkdir -p "$cache/$cluster"
kubeconfig="$cache/$cluster/kubeconfig"
(umask 077 && "$KIND" get kubeconfig --name "$cluster" > "$kubeconfig.tmp")
mv "$kubeconfig.tmp" "$kubeconfig"
export KUBECONFIG="$kubeconfig"
k() { "$KUBECTL" "$@"; }
ensure_namespace() {
  if [[ $(k get namespace "$1" -o jsonpath='{.status.phase}' 2>/dev/null) == Terminating ]]; then
    say "waiting for namespace $1 to finish terminating"
    k wait --for=delete "namespace/$1" --timeout="$timeout" >/dev/null
  fi
  k get namespace "$1" >/dev/null 2>&1 || k create namespace "$1" >/dev/null
}

if k -n kube-system get daemonset kindnet >/dev/null 2>&1; then
  die "cluster '$cluster' runs kindnet, not made by this script; delete it ('$KIND delete cluster --name $cluster') or set PADDOCK_KIND_CLUSTER to another name"
fi

# --- Calico: the NetworkPolicy-enforcing CNI -----------------------------------------
calico_manifest="$cache/calico-$calico_version.yaml"
if [[ ! -s $calico_manifest ]]; then
  say "fetching the Calico $calico_version manifest"
  calico_url="https://raw.githubusercontent.com/projectcalico/calico/$calico_version/manifests/calico.yaml"
  curl -fsSL --retry 3 -o "$calico_manifest.tmp" "$calico_url" \
    || die "could not fetch $calico_url"
  mv "$calico_manifest.tmp" "$calico_manifest"
fi
step "installing Calico $calico_version"
# Server-side: Calico's CRDs are too large for the last-applied annotation.
k apply --server-side --force-conflicts --field-manager=paddock-kind-up \
  -f "$calico_manifest" >/dev/null
# kind nodes often run with loose reverse-path filtering, which Felix refuses unless told.
k -n kube-system set env daemonset/calico-node FELIX_IGNORELOOSERPF=true >/dev/null
k -n kube-system rollout status daemonset/calico-node --timeout="$timeout"
k -n kube-system rollout status deployment/calico-kube-controllers --timeout="$timeout"
k wait --for=condition=Ready nodes --all --timeout="$timeout" >/dev/null
k -n kube-system rollout status deployment/coredns --timeout="$timeout"

# --- images --------------------------------------------------------------------------
image_id() { docker image inspect -f '{{.Id}}' "$1" 2>/dev/null || true; }
images_changed=false
for name in paddock sandbox; do
  ref="paddock/$name:$tag"
  before=$(image_id "$ref")
  step "building $ref (images/$name/Dockerfile, context: the repository root)"
  docker build -f "images/$name/Dockerfile" -t "$ref" . >&2
  [[ $(image_id "$ref") == "$before" ]] || images_changed=true
done
step "loading the images into the cluster"
# kind skips an image its nodes already hold.
"$KIND" load docker-image --name "$cluster" "$paddock_image" "$sandbox_image"

# --- the model and the Secrets of the user namespace ---------------------------------
ensure_namespace "$user_namespace"
if [[ -n ${ANTHROPIC_API_KEY:-} ]]; then
  model="the Claude API (ANTHROPIC_API_KEY)"
  anthropic_url=""
  k delete namespace "$fakemodel_namespace" --ignore-not-found --wait=false >/dev/null
  k -n "$user_namespace" delete networkpolicy paddock-harness-to-fakemodel \
    --ignore-not-found >/dev/null
  # From a file descriptor, so the key never appears in a process list.
  k -n "$user_namespace" create secret generic anthropic \
    --from-file=api-key=<(printf '%s' "$ANTHROPIC_API_KEY") --dry-run=client -o yaml \
    | k apply --server-side --force-conflicts --field-manager=paddock-kind-up -f - >/dev/null
else
  model="the scripted model (paddock.testing.fakemodel --script demo)"
  anthropic_url="http://paddock-fakemodel.$fakemodel_namespace.svc.cluster.local:8000"
  step "deploying the scripted model in namespace $fakemodel_namespace"
  ensure_namespace "$fakemodel_namespace"
  sed "s|__IMAGE__|$paddock_image|" hack/kind/fakemodel.yaml \
    | k -n "$fakemodel_namespace" apply -f - >/dev/null
  if $images_changed; then
    k -n "$fakemodel_namespace" rollout restart deployment/paddock-fakemodel >/dev/null
  fi
  k -n "$fakemodel_namespace" rollout status deployment/paddock-fakemodel --timeout="$timeout"
  k -n "$user_namespace" apply -f hack/kind/fakemodel-egress.yaml >/dev/null
  # The scripted model ignores the key; a random one still lets tests look for it.
  if ! k -n "$user_namespace" get secret anthropic >/dev/null 2>&1; then
    k -n "$user_namespace" create secret generic anthropic \
      --from-literal=api-key="sk-ant-scripted-$(od -An -tx1 -N24 /dev/urandom | tr -d ' \n')" \
      >/dev/null
  fi
fi

# --- the chart -----------------------------------------------------------------------
step "installing the chart (release $release in $namespace, model: $model)"
ensure_namespace "$namespace"
# Helm installs CRDs only on the first install and never upgrades them.
k apply --server-side --force-conflicts --field-manager=paddock-kind-up \
  -f charts/paddock/crds >/dev/null
installed=false
"$HELM" status "$release" -n "$namespace" >/dev/null 2>&1 && installed=true
"$HELM" upgrade --install "$release" charts/paddock -n "$namespace" \
  -f hack/kind/values.yaml \
  --set-string image.tag="$tag" --set-string sandboxImage.tag="$tag" \
  --set-string operator.anthropicUrl="$anthropic_url" \
  "$@" >/dev/null
workloads=$(k -n "$namespace" get deployments,statefulsets -o name \
  -l "app.kubernetes.io/instance=$release,app.kubernetes.io/part-of=paddock")
[[ -n $workloads ]] || die "the release made no Deployments or StatefulSets in $namespace"
if $images_changed && $installed; then
  say "the images changed: restarting Paddock's pods"
  for workload in $workloads; do
    [[ $workload == deployment.apps/* ]] && k -n "$namespace" rollout restart "$workload" >/dev/null
  done
  # Harness workers resume their sessions from the log; warm sandboxes are replaced.
  for harness in $(k get deployments -A -l paddock.dev/component=harness \
      -o jsonpath='{range .items[*]}{.metadata.namespace}/{.metadata.name}{"\n"}{end}'); do
    k -n "${harness%%/*}" rollout restart "deployment/${harness#*/}" >/dev/null
  done
  k delete pods -A -l paddock.dev/component=sandbox,paddock.dev/sandbox-state=warm \
    --wait=false >/dev/null
fi
step "waiting for the operator, the gateway and Redis"
for workload in $workloads; do
  k -n "$namespace" rollout status "$workload" --timeout="$timeout"
done

# --- a gateway API key for the user namespace ----------------------------------------
key_secret="kind-up-$user_namespace"
if ! k -n "$namespace" get secret "$key_secret" >/dev/null 2>&1; then
  k -n "$namespace" create secret generic "$key_secret" \
    --from-literal=api-key="sk-paddock-$(od -An -tx1 -N24 /dev/urandom | tr -d ' \n')" \
    --from-literal=namespace="$user_namespace" >/dev/null
  k -n "$namespace" label secret "$key_secret" paddock.dev/api-key=true >/dev/null
fi

step "ready"
cat >&2 <<EOF

Paddock runs on kind cluster '$cluster' (context kind-$cluster), with $model.
  export KUBECONFIG=$kubeconfig
  kubectl -n $user_namespace apply -f examples/hello-agent.yaml -f examples/hello-session.yaml
  kubectl -n $user_namespace get agents,sessions -w
The gateway and the paddock CLI (key: Secret $key_secret, for namespace $user_namespace):
  kubectl -n $namespace port-forward svc/$fullname-gateway 8080:80 &
  export PADDOCK_URL=http://127.0.0.1:8080
  export PADDOCK_API_KEY=\$(kubectl -n $namespace get secret $key_secret -o jsonpath='{.data.api-key}' | base64 -d)
  .venv/bin/paddock logs hello-1      # paddock approve hello-1, for tools that ask first
Delete the cluster: $KIND delete cluster --name $cluster
EOF
