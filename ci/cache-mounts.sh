# Shared by tbuild's CI scripts (github/build.sh, gitlab/tbuild.sh), sourced: the build's cache
# mounts (`RUN --mount=type=cache`) kept in the CI's own cache between jobs, as one archive that
# `tbuild cache export --all` writes after the build and `tbuild cache import` seeds the next job's
# empty store with before it. An archive, never an exported directory: rootless, a directory's
# files belong to subordinate ids, which the runner's cache tool (the runner's user) cannot read.
#
# Both functions take a warn function's name (each CI shows warnings its own way): the cache is a
# speed-up, so nothing here fails the job; a build without its mounts is only slower. The sourcing
# script sets `root`, the tbuild checkout.

# import_cache_mounts ARCHIVE WARN [SHOWN]: seeds the store from ARCHIVE (named SHOWN in messages,
# when the script moved it). A missing archive is a first run (one line, no warning); one tbuild
# cannot read is a warning naming it, and the build goes on.
import_cache_mounts() {
  local archive=$1 warn=$2 shown=${3:-$1} output
  if [[ ! -e $archive ]]; then
    echo "tbuild: no cache mounts to import: $shown is not there (a first run, or the CI cache has none yet)"
    return 0
  fi
  if output=$("$root/bin/tbuild" cache import -i "$archive" 2>&1); then
    printf 'tbuild: %s\n' "$output"
  else
    "$warn" "cache mounts not imported from $shown, building without them: ${output#ERROR: }"
  fi
}

# export_cache_mounts ARCHIVE WARN [SHOWN]: writes every cache mount of the store to ARCHIVE
# (replaced whole or not at all), for the CI to save.
export_cache_mounts() {
  local archive=$1 warn=$2 shown=${3:-$1} output
  mkdir -p "$(dirname "$archive")"
  if output=$("$root/bin/tbuild" cache export --all -o "$archive" 2>&1); then
    printf 'tbuild: %s\n' "$output"
  else
    "$warn" "cache mounts not exported to $shown: ${output#ERROR: }"
  fi
}
