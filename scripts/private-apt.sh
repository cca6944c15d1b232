# shellcheck shell=bash
# Sourced, not run: apt on a private state (its own sources list, lists
# and cache under STATE), so that packages of another Debian suite can be
# resolved and downloaded without touching the host's apt (nothing is
# installed). Used by scripts/sid-tools.sh and vm-images/build.sh.
#
#   private_apt_opts STATE           sets PRIVATE_APT, the apt-get/apt-cache
#                                    options for that state
#   private_apt_update STATE SUITE [MIRROR]
#                                    points it at SUITE (main, amd64) and runs
#                                    apt-get update; 1 when that fails

private_apt_opts() {
  local state=$1
  PRIVATE_APT=(
    -o "Dir::Etc::sourcelist=$state/sources.list"
    -o "Dir::Etc::sourceparts=$state/empty.d"
    -o "Dir::Etc::preferences=$state/preferences"
    -o "Dir::Etc::preferencesparts=$state/empty.d"
    -o "Dir::State=$state/state"
    -o "Dir::State::lists=$state/lists"
    -o "Dir::State::status=$state/status"
    -o "Dir::Cache=$state/cache"
    -o "APT::Architecture=amd64"
    -o "APT::Architectures::=amd64"
    -o "APT::Sandbox::User=root"
    -o "Acquire::Languages=none"
    -o "Acquire::IndexTargets::deb::DEP-11::DefaultEnabled=false"
    -o "Acquire::IndexTargets::deb::DEP-11-icons::DefaultEnabled=false"
    -o "Acquire::IndexTargets::deb::DEP-11-icons-small::DefaultEnabled=false"
    -o "Acquire::IndexTargets::deb::CNF::DefaultEnabled=false"
  )
}

private_apt_update() {
  local state=$1 suite=$2 mirror=${3:-http://deb.debian.org/debian}
  local keyring=/usr/share/keyrings/debian-archive-keyring.gpg
  if [ ! -f "$keyring" ]; then
    echo "$keyring is missing (apt-get install debian-archive-keyring)" >&2
    return 1
  fi
  mkdir -p "$state/state" "$state/lists/partial" "$state/cache/archives/partial" "$state/empty.d"
  : >"$state/status"
  : >"$state/preferences"
  echo "deb [signed-by=$keyring] $mirror $suite main" >"$state/sources.list"
  private_apt_opts "$state"
  apt-get "${PRIVATE_APT[@]}" update -qq >/dev/null
}
