#!/usr/bin/env bash
# deploy/kubernetes/ against the Kubernetes API schemas, not only parsed: kubernetes-validate
# (PyPI, pinned; it bundles the OpenAPI schemas of each Kubernetes release) in strict mode, so
# a misspelt or misplaced field fails as well as a wrong type. Stated versions: 1.30 (the
# oldest still offered by managed clouds' extended support) and 1.37 (the newest the pinned
# package bundles). A broken copy of the DaemonSet must be rejected, so the step cannot pass
# by validating nothing. Every TURND_* variable the manifests (and the Compose file) set must
# be one turnd reads, or a typo would silently fall back to a default.
# No cluster is needed or contacted.
set -euo pipefail
cd "$(dirname "$0")/../.."
VALIDATOR="kubernetes-validate==1.37.0"
VERSIONS="1.30 1.37"

# A venv of its own, kept between runs, so nothing in the system Python changes.
venv="${XDG_CACHE_HOME:-${HOME:-/tmp}/.cache}/turnd-ci/kubernetes-validate-1.37.0"
if ! "$venv/bin/kubernetes-validate" --version >/dev/null 2>&1; then
  rm -rf "$venv"
  python3 -m venv "$venv"
  "$venv/bin/pip" install -q "$VALIDATOR"
fi
validate() { "$venv/bin/kubernetes-validate" --strict --quiet "$@"; }

work=$(mktemp -d)
trap 'rm -rf "$work"' EXIT
passed=0
ok() { echo "ok   $*"; passed=$((passed + 1)); }
fail() { echo "FAIL $*"; echo "kubernetes: $passed passed, 1 failed"; exit 1; }

manifests=(deploy/kubernetes/*.yaml)
[ "${#manifests[@]}" -ge 3 ] || fail "expected the DaemonSet, Secret and Service in deploy/kubernetes/"
for v in $VERSIONS; do
  validate -k "$v" "${manifests[@]}" || fail "deploy/kubernetes/ against Kubernetes $v"
  ok "${#manifests[@]} manifests in deploy/kubernetes/ valid against Kubernetes $v (strict)"
done

# The control: one misspelt field and one wrong type, each must be refused.
sed 's/terminationGracePeriodSeconds:/terminationGracePeriodSecond:/' deploy/kubernetes/daemonset.yaml >"$work/misspelt.yaml"
sed 's/containerPort: 3478, protocol: UDP/containerPort: "3478", protocol: UDP/' deploy/kubernetes/daemonset.yaml >"$work/type.yaml"
for bad in misspelt type; do
  ! cmp -s deploy/kubernetes/daemonset.yaml "$work/$bad.yaml" || fail "the $bad control did not change the DaemonSet"
  if validate -k 1.37 "$work/$bad.yaml" >/dev/null 2>&1; then fail "a DaemonSet with a $bad field passed validation"; fi
done
ok "a DaemonSet with a misspelt field or a wrong type is refused"

# Every TURND_* name set in the deploy files is one of turnd's settings (TURND_IMAGE and
# TURND_FEATURES are deploy/build-image.sh's own, named in comments).
cargo build -q --bin turnd
target_dir=$(cargo metadata --format-version 1 --no-deps | sed -n 's/.*"target_directory":"\([^"]*\)".*/\1/p')
"$target_dir/debug/turnd" serve --help | grep -o 'env: TURND_[A-Z0-9_]*' | cut -c6- | sort -u >"$work/known"
[ -s "$work/known" ] || fail "turnd serve --help lists no TURND_* variables"
grep -ho 'TURND_[A-Z0-9_]*' deploy/kubernetes/*.yaml deploy/docker-compose.yml tests/interop/compose.ci.yml \
  | grep -vE '^TURND_(IMAGE|FEATURES)$' | sort -u >"$work/used"
unknown=$(comm -23 "$work/used" "$work/known")
[ -z "$unknown" ] || fail "deploy files set variables turnd does not read: $unknown"
ok "the $(wc -l <"$work/used") TURND_* variables the deploy files set are all turnd settings"
echo "kubernetes: $passed passed, 0 failed"
