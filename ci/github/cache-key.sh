#!/usr/bin/env bash
# The step of tbuild's GitHub Action (action.yml) that names the CI cache entry for the input
# `cache-mounts`: `false` (or empty) keeps no cache mounts; `true` keeps them under the name
# tbuild-cache-mounts; any other value is the name (one action use per name in a workflow: builds
# of different images keep different mounts). Writes the step's outputs `archive`, `key` and
# `restore-key`, or none when off.
#
# An actions/cache entry is never overwritten (a key once saved stays as it was), and the mounts
# change with every build: so each run saves under a key of its own, NAME-run-RUN_ID-ATTEMPT, and
# restores the newest entry whose key starts with NAME-run-. The archive lies in the runner's temp
# directory, outside the workspace (and so outside any build context), at a path the same in every
# run, as actions/cache needs to match what it saved.
set -euo pipefail

fail() {
  printf '::error title=tbuild::%s\n' "$1"
  exit 1
}

value=${INPUT_CACHE_MOUNTS:-}
value=${value#"${value%%[![:space:]]*}"}
value=${value%"${value##*[![:space:]]}"}
case $value in
  false | False | FALSE | "") exit 0 ;;
  true | True | TRUE) name=tbuild-cache-mounts ;;
  *) name=$value ;;
esac
if [[ ! $name =~ ^[A-Za-z0-9][A-Za-z0-9._-]{0,199}$ ]]; then
  fail "input cache-mounts is \"$value\": give true, false, or a name of letters, digits, '.', '_' and '-' (at most 200)"
fi
[[ -n ${GITHUB_OUTPUT:-} ]] || fail "GITHUB_OUTPUT is not set: this script is a step of tbuild's action (action.yml)"
[[ -n ${RUNNER_TEMP:-} && -n ${GITHUB_RUN_ID:-} ]] || fail "RUNNER_TEMP and GITHUB_RUN_ID are not set: this script is a step of tbuild's action (action.yml)"
{
  printf 'archive=%s\n' "$RUNNER_TEMP/tbuild-cache-mounts/$name.tar.zst"
  printf 'key=%s\n' "$name-run-$GITHUB_RUN_ID-${GITHUB_RUN_ATTEMPT:-1}"
  printf 'restore-key=%s\n' "$name-run-"
} >>"$GITHUB_OUTPUT"
echo "tbuild: cache mounts kept in the CI cache as $name-run-* (this run saves $name-run-$GITHUB_RUN_ID-${GITHUB_RUN_ATTEMPT:-1})"
