#!/usr/bin/env bash
# Validates every manifest under deploy/k8s offline (no cluster; the npm registry only for the
# first install): Kubernetes schema, unknown fields and image pull policy (validate/validate.mjs).
# Then proves the validator can fail: each validate/testdata/bad-*.yaml must be refused with the
# messages its `# expect:` lines name. Called by .ci/run; run it by hand after editing deploy/.
set -euo pipefail
here=$(cd "$(dirname "$0")" && pwd)
if ! command -v node >/dev/null || ! command -v npm >/dev/null; then
  if [[ $(id -u) -eq 0 ]]; then
    DEBIAN_FRONTEND=noninteractive apt-get install -y -q nodejs npm >/dev/null
  else
    echo "deploy/validate.sh: needs node and npm (apt-get install nodejs npm)" >&2
    exit 2
  fi
fi
cd "$here/validate"
# The exact versions of package-lock.json; node_modules is kept between runs (gitignored).
if ! npm ls --depth=0 >/dev/null 2>&1; then
  npm ci --no-audit --no-fund --loglevel=error
fi

node validate.mjs "$here"/k8s/*.yaml

failed=0
for bad in testdata/bad-*.yaml; do
  out=$(node validate.mjs "$bad") && {
    echo "deploy/validate.sh: $bad was accepted; it must be refused" >&2
    failed=1
    continue
  }
  while IFS= read -r want; do
    if ! grep -qF -- "$want" <<<"$out"; then
      printf 'deploy/validate.sh: %s: missing "%s" in:\n%s\n' "$bad" "$want" "$out" >&2
      failed=1
    fi
  done < <(sed -n 's/^# expect: //p' "$bad")
done
[[ $failed -eq 0 ]] && echo "deploy/validate.sh: manifests valid; $(ls testdata/bad-*.yaml | wc -l) bad fixtures refused as expected"
exit $failed
