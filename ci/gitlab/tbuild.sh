#!/usr/bin/env bash
# The script of tbuild's GitLab CI template (tbuild.gitlab-ci.yml): log in to the project's
# registry, build $TBUILD_IMAGE (default $CI_REGISTRY_IMAGE:$CI_COMMIT_SHORT_SHA), test it by
# running it with `tbuild run --rm` (its own command, or $TBUILD_TEST_COMMAND), and push it when
# TBUILD_PUSH is true (the template's rules set it on the default branch). Writes tbuild.env
# (TBUILD_IMAGE, TBUILD_DIGEST) for the job's dotenv report. With TBUILD_WORKER the build runs on
# a remote worker (TBUILD_WORKER_SSH_KEY and TBUILD_WORKER_KNOWN_HOSTS for an ssh:// one:
# ci/worker.sh); the image comes back for the test and the push.
set -euo pipefail

root=$(cd "$(dirname "${BASH_SOURCE[0]}")/../.." && pwd -P)
PATH=$root/bin:$PATH
# The Node 24 that tbuild runs on (bin/tbuild finds it the same way), for reading JSON.
node=$root/node_modules/node/bin/node
[[ -x $node ]] || node=node

fail() {
  printf 'tbuild: %s\n' "$1" >&2
  exit 1
}
# Prints a command as a shell would read it, then runs it.
run() {
  printf '$'
  printf ' %q' "$@"
  printf '\n'
  "$@"
}

image=${TBUILD_IMAGE:-}
if [[ -z $image ]]; then
  [[ -n ${CI_REGISTRY_IMAGE:-} ]] || fail "CI_REGISTRY_IMAGE is empty: enable the project's container registry, or set TBUILD_IMAGE"
  [[ -n ${CI_COMMIT_SHORT_SHA:-} ]] || fail "CI_COMMIT_SHORT_SHA is empty: set TBUILD_IMAGE"
  image=$CI_REGISTRY_IMAGE:$CI_COMMIT_SHORT_SHA
fi
case ${TBUILD_PUSH:-false} in
  true) push=true ;;
  false | "") push=false ;;
  *) fail "TBUILD_PUSH is \"$TBUILD_PUSH\": give true or false" ;;
esac

# Base images may come from the project's registry too, so the login comes first, on every branch.
if [[ -n ${CI_REGISTRY:-} && -n ${CI_REGISTRY_USER:-} ]]; then
  printf '%s' "${CI_REGISTRY_PASSWORD:-}" | run tbuild login -u "$CI_REGISTRY_USER" --password-stdin "$CI_REGISTRY"
fi

work=$(mktemp -d)
trap 'rm -rf "$work"' EXIT

args=(build --progress=plain --metadata-file "$work/metadata.json" -t "$image")
if [[ -n ${TBUILD_DOCKERFILE:-} ]]; then args+=(-f "$TBUILD_DOCKERFILE"); fi
# Several platforms build one index; the test below runs this runner's platform of it.
if [[ -n ${TBUILD_PLATFORMS:-} ]]; then args+=(--platform "$TBUILD_PLATFORMS"); fi
# Attestations: TBUILD_PROVENANCE as given, else mode=min for an image this job pushes (built, then
# pushed with `tbuild push`, so the build's own default for a pushed image does not apply). A
# remote worker makes none yet: no default then.
if [[ -n ${TBUILD_PROVENANCE:-} ]]; then
  args+=("--provenance=$TBUILD_PROVENANCE")
elif [[ $push == true && -z ${TBUILD_WORKER:-} ]]; then
  args+=(--provenance=mode=min)
fi
if [[ -n ${TBUILD_SBOM:-} ]]; then args+=("--sbom=$TBUILD_SBOM"); fi
# Further flags of `tbuild build`, as shell words (quotes keep a word whole).
if [[ -n ${TBUILD_BUILD_FLAGS:-} ]]; then
  eval "extra=($TBUILD_BUILD_FLAGS)"
  args+=("${extra[@]}")
fi
# A remote worker (TBUILD_WORKER), its SSH key and known_hosts line from CI/CD variables.
source "$root/ci/worker.sh"
worker_flags "$work" "${TBUILD_WORKER:-}" "${TBUILD_WORKER_SSH_KEY:-}" "${TBUILD_WORKER_KNOWN_HOSTS:-}"
args+=("${WORKER_ARGS[@]}")
args+=("${TBUILD_CONTEXT:-.}")
run tbuild "${args[@]}"

# The test: the image's own command, or TBUILD_TEST_COMMAND's words (quotes keep a word whole).
test_command=()
if [[ -n ${TBUILD_TEST_COMMAND:-} ]]; then eval "test_command=($TBUILD_TEST_COMMAND)"; fi
run tbuild run --rm "$image" "${test_command[@]}"

if [[ $push == true ]]; then
  run tbuild push "$image"
else
  echo "tbuild: $image is not pushed (TBUILD_PUSH is not true: the template pushes from the default branch only)"
fi

digest=$("$node" -e \
  'process.stdout.write(JSON.parse(require("fs").readFileSync(process.argv[1], "utf8"))["containerimage.digest"])' \
  "$work/metadata.json")
printf 'TBUILD_IMAGE=%s\nTBUILD_DIGEST=%s\n' "$image" "$digest" >tbuild.env
echo "tbuild: $image is $digest"
