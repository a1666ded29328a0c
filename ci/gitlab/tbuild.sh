#!/usr/bin/env bash
# The script of tbuild's GitLab CI template (tbuild.gitlab-ci.yml): log in to the project's
# registry, build $TBUILD_IMAGE (default $CI_REGISTRY_IMAGE:$CI_COMMIT_SHORT_SHA), test it by
# running it with `tbuild run --rm` (its own command, or $TBUILD_TEST_COMMAND), and push it when
# TBUILD_PUSH is true (the template's rules set it on the default branch). Writes tbuild.env
# (TBUILD_IMAGE, TBUILD_DIGEST) for the job's dotenv report. With TBUILD_WORKER the build runs on
# a remote worker (TBUILD_WORKER_SSH_KEY and TBUILD_WORKER_KNOWN_HOSTS for an ssh:// one:
# ci/worker.sh); the image comes back for the test and the push. With TBUILD_CACHE_MOUNTS (a path
# in the project directory that the template's `cache:` keeps), the cache mounts are imported from
# that archive before the build and exported to it after, failed builds included
# (ci/cache-mounts.sh); the archive stays out of the project directory while the build runs.
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
warn() {
  printf 'tbuild: warning: %s\n' "$1" >&2
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

# The cache mounts' archive, moved out of the project directory (the build's context, often) for
# the build; only what the export writes goes back for GitLab to save, never the restored one.
source "$root/ci/cache-mounts.sh"
mounts_archive=${TBUILD_CACHE_MOUNTS:-}
if [[ -n $mounts_archive && -n ${TBUILD_WORKER:-} ]]; then
  echo "tbuild: cache mounts are not kept with a remote worker (they are in the worker's store): TBUILD_CACHE_MOUNTS ignored"
  mounts_archive=""
fi
if [[ -n $mounts_archive ]]; then
  if [[ -e $mounts_archive ]]; then mv "$mounts_archive" "$work/restored-mounts.tar.zst"; fi
  rmdir "$(dirname "$mounts_archive")" 2>/dev/null || true
  import_cache_mounts "$work/restored-mounts.tar.zst" warn "$mounts_archive"
fi
status=0
run tbuild "${args[@]}" || status=$?
if [[ -n $mounts_archive ]]; then
  export_cache_mounts "$work/cache-mounts.tar.zst" warn "$mounts_archive"
  if [[ -e $work/cache-mounts.tar.zst ]]; then
    mkdir -p "$(dirname "$mounts_archive")"
    mv "$work/cache-mounts.tar.zst" "$mounts_archive"
  fi
fi
if ((status != 0)); then exit "$status"; fi

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
