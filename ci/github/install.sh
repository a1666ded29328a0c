#!/usr/bin/env bash
# The install step of tbuild's GitHub Action (action.yml), for Ubuntu and Debian runners: runc and
# newuidmap/newgidmap (uidmap) from apt, what rootless builds need of the runner user (user
# namespaces allowed, a subordinate id range), and tbuild's npm dependencies in the action's own
# directory (Node 24 among them; `npm ci` compiles dist/ through the `prepare` script). Puts
# tbuild's bin/ on the job's PATH, so later steps can `tbuild run` what the action built.
# TBUILD_SKIP_INSTALL=true skips all of it, for machines that have everything already.
set -euo pipefail

if [[ ${TBUILD_SKIP_INSTALL:-} == true ]]; then
  echo "tbuild: install skipped (TBUILD_SKIP_INSTALL=true)"
  exit 0
fi

root=$(cd "$(dirname "${BASH_SOURCE[0]}")/../.." && pwd -P)
as_root=()
if [[ $(id -u) != 0 ]]; then as_root=(sudo -n); fi

missing=()
for package in runc uidmap; do
  if ! dpkg -s "$package" >/dev/null 2>&1; then missing+=("$package"); fi
done
if [[ ${#missing[@]} -gt 0 ]]; then
  if ! command -v apt-get >/dev/null 2>&1; then
    echo "::error title=tbuild::this runner has no apt-get: install ${missing[*]} on it, then set TBUILD_SKIP_INSTALL=true"
    exit 1
  fi
  "${as_root[@]}" env DEBIAN_FRONTEND=noninteractive apt-get update -qq
  "${as_root[@]}" env DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends "${missing[@]}" >/dev/null
fi

if [[ $(id -u) != 0 ]]; then
  # Ubuntu 24.04 lets AppArmor refuse user namespaces to unconfined programs; tbuild needs one.
  restrict=/proc/sys/kernel/apparmor_restrict_unprivileged_userns
  if [[ -r $restrict && $(<"$restrict") == 1 ]]; then
    "${as_root[@]}" sysctl -q -w kernel.apparmor_restrict_unprivileged_userns=0
  fi
  # A subordinate range of 65536 ids for the runner user, above every range given out already.
  user=$(id -un)
  start=$({ cat /etc/subuid /etc/subgid 2>/dev/null || true; } |
    awk -F: 'BEGIN { top = 100000 } NF == 3 && $2 + $3 > top { top = $2 + $3 } END { print top }')
  range="$start-$((start + 65535))"
  if ! grep -q "^$user:" /etc/subuid 2>/dev/null; then
    "${as_root[@]}" usermod --add-subuids "$range" "$user"
  fi
  if ! grep -q "^$user:" /etc/subgid 2>/dev/null; then
    "${as_root[@]}" usermod --add-subgids "$range" "$user"
  fi
fi

# The action's directory is one commit of tbuild: once installed, it stays as it is.
if [[ ! -x $root/node_modules/node/bin/node || ! -f $root/dist/cli/main.js ]]; then
  (cd "$root" && npm ci --no-audit --no-fund --loglevel=error)
fi
if [[ -n ${GITHUB_PATH:-} ]]; then echo "$root/bin" >>"$GITHUB_PATH"; fi
"$root/bin/tbuild" version
