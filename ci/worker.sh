# Shared by tbuild's CI scripts (github/build.sh, gitlab/tbuild.sh), sourced: a remote worker for
# the build from what CI secrets give, an SSH private key and a known_hosts line, without touching
# the runner's ~/.ssh. The key and known_hosts go into files of the job's temp directory (the key
# mode 0600), and a config.toml beside them (a copy of the job's own, if any, with one more
# [worker.NAME] table) names them; the build then uses that worker by name.
#
# worker_flags WORK WORKER KEY KNOWN_HOSTS: sets WORKER_ARGS (the `--worker …` flags, none without
# a worker) and exports TBUILD_CONFIG when it wrote one. KEY and KNOWN_HOSTS are the text itself or
# the path of a file holding it (GitLab's "File" variables). Fails (the sourcing script's `fail`) when a key
# or known_hosts line is given for a worker that is not an ssh:// URL: a named worker or pool takes
# its `identity` and `known-hosts` from config.toml.

# The name of the table written: not one a config.toml is likely to have.
CI_WORKER_NAME=ci-worker

worker_flags() {
  local work=$1 worker=$2 key=$3 known_hosts=$4
  WORKER_ARGS=()
  if [[ -z $worker ]]; then
    if [[ -n $key || -n $known_hosts ]]; then fail "an SSH key or known_hosts line is given, but no worker to use them for"; fi
    return 0
  fi
  if [[ -z $key && -z $known_hosts ]]; then
    WORKER_ARGS=(--worker "$worker")
    return 0
  fi
  if [[ $worker != ssh://* ]]; then
    fail "an SSH key or known_hosts line is for an ssh:// worker; worker \"$worker\" is not one (a named worker or pool takes identity and known-hosts from config.toml)"
  fi
  local dir=$work/worker
  (umask 077 && mkdir -p "$dir")
  local config=$dir/config.toml
  local source_config=${TBUILD_CONFIG:-${XDG_CONFIG_HOME:-$HOME/.config}/tbuild/config.toml}
  if [[ -f $source_config ]]; then cat "$source_config" >"$config"; else : >"$config"; fi
  {
    printf '\n[worker.%s]\nurl = %s\n' "$CI_WORKER_NAME" "$(toml_string "$worker")"
    if [[ -n $key ]]; then
      (umask 077 && worker_text "$key" >"$dir/key")
      printf 'identity = %s\n' "$(toml_string "$dir/key")"
    fi
    if [[ -n $known_hosts ]]; then
      worker_text "$known_hosts" >"$dir/known_hosts"
      printf 'known-hosts = %s\n' "$(toml_string "$dir/known_hosts")"
    fi
  } >>"$config"
  export TBUILD_CONFIG=$config
  WORKER_ARGS=(--worker "$CI_WORKER_NAME")
}

# The text of a value that is either the text or the path of a file holding it, ending in a newline
# (OpenSSH refuses a key without one).
worker_text() {
  local value=$1
  if [[ $value != *$'\n'* && -f $value ]]; then value=$(<"$value"); fi
  printf '%s\n' "${value%$'\n'}"
}

# A TOML basic string.
toml_string() {
  local s=${1//\\/\\\\}
  s=${s//\"/\\\"}
  printf '"%s"' "$s"
}
