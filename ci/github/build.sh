#!/usr/bin/env bash
# The build step of tbuild's GitHub Action (action.yml): `tbuild build` with the inputs of
# docker/build-push-action v6, read from INPUT_* variables (the action maps each input into one,
# hyphens as underscores: `build-args` is INPUT_BUILD_ARGS), and the outputs `imageid`, `digest`
# and `metadata` written to $GITHUB_OUTPUT. Lists are parsed as build-push-action's
# Util.getInputList does: records of a CSV text (newline-separated, double quotes may wrap an item
# and let it span lines), each item trimmed; `tags` and `platforms` are also split at commas,
# the others keep their commas, and `outputs` takes quotes literally. tbuild's own inputs `worker`,
# `worker-ssh-key` and `worker-known-hosts` build on a remote worker (ci/worker.sh). `provenance`
# and `sbom` pass their value to --provenance= and --sbom=, as build-push-action does. With
# TBUILD_CACHE_MOUNTS_ARCHIVE (the `cache-mounts` input, named by ci/github/cache-key.sh), the
# cache mounts are imported from that archive before the build and exported to it after, failed
# builds included (ci/cache-mounts.sh); the step's outcome stays the build's.
set -euo pipefail

root=$(cd "$(dirname "${BASH_SOURCE[0]}")/../.." && pwd -P)
tbuild=$root/bin/tbuild
# The Node 24 that tbuild runs on (bin/tbuild finds it the same way), for reading JSON.
node=$root/node_modules/node/bin/node
[[ -x $node ]] || node=node

fail() {
  printf '::error title=tbuild::%s\n' "$1"
  exit 1
}
# A warning annotation; its message escaped as workflow commands need (one line).
warn() {
  local message=${1//'%'/%25}
  message=${message//$'\r'/%0D}
  printf '::warning title=tbuild::%s\n' "${message//$'\n'/%0A}"
}

# Helpers of parse_list, working on its locals (field, fields, at_field_start, records, commas).
end_field() {
  fields+=("$field")
  field=""
  at_field_start=1
}
end_record() {
  end_field
  # A record of one empty field is an empty line: skipped.
  if [[ ${#fields[@]} -gt 1 || -n ${fields[0]} ]]; then
    if [[ $commas == join ]]; then
      local IFS=,
      records+=("${fields[*]}")
    else
      records+=("${fields[@]}")
    fi
  fi
  fields=()
}

# parse_list TEXT split|join quote|literal: sets LIST to the items of TEXT.
parse_list() {
  local text=$1 commas=$2 quotes=$3
  LIST=()
  local -a records=() fields=() parts=()
  local field="" in_quotes=0 at_field_start=1 c i n item part
  # Byte-wise, so that indexing is constant-time; multi-byte characters pass through unchanged.
  local LC_ALL=C
  n=${#text}
  for ((i = 0; i < n; i++)); do
    c=${text:i:1}
    if ((in_quotes)); then
      if [[ $c != '"' ]]; then
        field+=$c
      elif [[ ${text:i+1:1} == '"' ]]; then
        field+='"'
        i=$((i + 1))
      else
        in_quotes=0
      fi
      continue
    fi
    case $c in
      '"')
        if ((at_field_start)) && [[ $quotes == quote ]]; then in_quotes=1; else field+=$c; fi
        at_field_start=0
        ;;
      ,) end_field ;;
      $'\r')
        if [[ ${text:i+1:1} == $'\n' ]]; then i=$((i + 1)); fi
        end_record
        ;;
      $'\n') end_record ;;
      *)
        field+=$c
        at_field_start=0
        ;;
    esac
  done
  if ((in_quotes)); then fail "a double quote is not closed in a list input"; fi
  if [[ -n $field || ${#fields[@]} -gt 0 ]]; then end_record; fi
  for item in "${records[@]}"; do
    # A one-field record of a comma-split list still splits at its commas (`"a,b"` is two items).
    parts=("$item")
    if [[ $commas == split ]]; then IFS=, read -r -d '' -a parts < <(printf '%s\0' "$item"); fi
    for part in "${parts[@]}"; do
      part=$(trim "$part")
      if [[ -n $part ]]; then LIST+=("$part"); fi
    done
  done
  return 0
}

# As @actions/core's getBooleanInput: YAML 1.2's core schema, an empty input is false.
parse_bool() {
  case $2 in
    true | True | TRUE) BOOL=true ;;
    false | False | FALSE | "") BOOL=false ;;
    *) fail "input $1 is \"$2\": give true or false" ;;
  esac
}

trim() {
  local s=$1
  s=${s#"${s%%[![:space:]]*}"}
  printf '%s' "${s%"${s##*[![:space:]]}"}"
}

# One output in $GITHUB_OUTPUT's format: name=value, or a heredoc with a random delimiter when
# the value has several lines (as @actions/core writes them).
write_output() {
  local name=$1 value=$2 delimiter
  if [[ $value == *$'\n'* ]]; then
    delimiter="ghadelimiter_$(od -An -N16 -tx1 /dev/urandom | tr -d ' \n')"
    printf '%s<<%s\n%s\n%s\n' "$name" "$delimiter" "$value" "$delimiter" >>"$GITHUB_OUTPUT"
  else
    printf '%s=%s\n' "$name" "$value" >>"$GITHUB_OUTPUT"
  fi
}

[[ -n ${GITHUB_OUTPUT:-} ]] || fail "GITHUB_OUTPUT is not set: this script is a step of tbuild's action (action.yml)"

work=$(mktemp -d "${RUNNER_TEMP:-${TMPDIR:-/tmp}}/tbuild-action-XXXXXX")
trap 'rm -rf "$work"' EXIT

context=$(trim "${INPUT_CONTEXT:-}")
context=${context:-.}
file=$(trim "${INPUT_FILE:-}")
target=$(trim "${INPUT_TARGET:-}")
parse_bool push "$(trim "${INPUT_PUSH:-}")"
push=$BOOL
parse_bool no-cache "$(trim "${INPUT_NO_CACHE:-}")"
no_cache=$BOOL

args=(build --progress=plain --metadata-file "$work/metadata.json")

parse_list "${INPUT_BUILD_ARGS:-}" join quote
for item in "${LIST[@]}"; do args+=(--build-arg "$item"); done
parse_list "${INPUT_CACHE_FROM:-}" join quote
for item in "${LIST[@]}"; do args+=(--cache-from "$item"); done
parse_list "${INPUT_CACHE_TO:-}" join quote
if [[ ${#LIST[@]} -gt 1 ]]; then
  fail "tbuild exports build cache to one destination at a time; not supported yet: several cache-to entries (${#LIST[@]} given)"
fi
for item in "${LIST[@]}"; do args+=(--cache-to "$item"); done
if [[ -n $file ]]; then args+=(--file "$file"); fi
parse_list "${INPUT_LABELS:-}" join quote
for item in "${LIST[@]}"; do args+=(--label "$item"); done
parse_list "${INPUT_OUTPUTS:-}" join literal
has_image_id=true
for item in "${LIST[@]}"; do
  args+=(--output "$item")
  # As build-push-action: no image ID when the result is files rather than an image.
  if [[ ,$item, == *,type=local,* || ,$item, == *,type=tar,* ]]; then has_image_id=false; fi
done
if [[ $has_image_id == true ]]; then args+=(--iidfile "$work/iid"); fi
# Several platforms make one index, as buildx makes it.
parse_list "${INPUT_PLATFORMS:-}" split quote
if [[ ${#LIST[@]} -gt 0 ]]; then args+=(--platform "$(IFS=,; echo "${LIST[*]}")"); fi

# Each secret `id=value` goes to a file of its own, which the build reads as `--secret id=,src=`;
# the value is masked in the job's log, as build-push-action does.
parse_list "${INPUT_SECRETS:-}" join quote
count=0
for item in "${LIST[@]}"; do
  count=$((count + 1))
  key=${item%%=*}
  value=${item#*=}
  if [[ $item != *=* || -z $key || -z $value ]]; then
    # Never the line itself: it may be a secret value.
    fail "secrets: entry $count is not id=value (an id, \"=\", then a value that is not empty)"
  fi
  escaped=${value//'%'/%25}
  escaped=${escaped//$'\r'/%0D}
  escaped=${escaped//$'\n'/%0A}
  printf '::add-mask::%s\n' "$escaped"
  (umask 077 && printf '%s' "$value" >"$work/secret-$count")
  args+=(--secret "id=$key,src=$work/secret-$count")
done

parse_list "${INPUT_TAGS:-}" split quote
for item in "${LIST[@]}"; do args+=(--tag "$item"); done
if [[ -n $target ]]; then args+=(--target "$target"); fi
if [[ $no_cache == true ]]; then args+=(--no-cache); fi
if [[ $push == true ]]; then args+=(--push); fi
# Attestations, as build-push-action passes them: the value as given (empty: buildx's default).
provenance=$(trim "${INPUT_PROVENANCE:-}")
if [[ -n $provenance ]]; then args+=("--provenance=$provenance"); fi
sbom=$(trim "${INPUT_SBOM:-}")
if [[ -n $sbom ]]; then args+=("--sbom=$sbom"); fi
# A remote worker: its SSH key and known_hosts line from secrets, never echoed.
source "$root/ci/worker.sh"
worker_flags "$work" "$(trim "${INPUT_WORKER:-}")" "${INPUT_WORKER_SSH_KEY:-}" "${INPUT_WORKER_KNOWN_HOSTS:-}"
args+=("${WORKER_ARGS[@]}")
args+=("$context")

source "$root/ci/cache-mounts.sh"
mounts_archive=${TBUILD_CACHE_MOUNTS_ARCHIVE:-}
if [[ -n $mounts_archive && -n $(trim "${INPUT_WORKER:-}") ]]; then
  fail "not supported yet: cache-mounts with a remote worker (its cache mounts are in the worker's store, not the runner's)"
fi
if [[ -n $mounts_archive ]]; then import_cache_mounts "$mounts_archive" warn; fi

printf '+ tbuild'
printf ' %q' "${args[@]}"
printf '\n'
status=0
"$tbuild" "${args[@]}" || status=$?
if [[ -n $mounts_archive ]]; then export_cache_mounts "$mounts_archive" warn; fi
if ((status != 0)); then exit "$status"; fi

if [[ -s $work/iid ]]; then
  imageid=$(<"$work/iid")
  printf 'ImageID: %s\n' "$imageid"
  write_output imageid "$imageid"
fi
if [[ -s $work/metadata.json ]]; then
  metadata=$(<"$work/metadata.json")
  digest=$("$node" -e 'process.stdout.write(JSON.parse(require("fs").readFileSync(process.argv[1], "utf8"))["containerimage.digest"] ?? "")' "$work/metadata.json")
  if [[ -n $digest ]]; then
    printf 'Digest: %s\n' "$digest"
    write_output digest "$digest"
  fi
  # The metadata names images a workflow chose: shown with workflow commands off, so that none of
  # its text can act as one.
  stop="tbuild-$(od -An -N8 -tx1 /dev/urandom | tr -d ' \n')"
  printf '::group::Metadata\n::stop-commands::%s\n%s\n::%s::\n::endgroup::\n' "$stop" "$metadata" "$stop"
  write_output metadata "$metadata"
fi
