# shellcheck shell=bash
# Sourced by the build scripts that cache Go-built binaries outside the repo.
#
# cached_or_lock PRINT OUT BINARY...: when every BINARY is built in OUT, print PRINT and exit
# the script. Otherwise take the cache's build lock (parallel runs on one machine share the
# cache), look again (another run may have built it meanwhile), check that Go is there, and
# return so that the caller builds.
cached_or_lock() {
  local print=$1 out=$2
  shift 2
  if _all_built "$out" "$@"; then echo "$print"; exit 0; fi
  mkdir -p "$(dirname "$out")"
  exec 9>"$(dirname "$out")/.lock"
  flock 9
  if _all_built "$out" "$@"; then echo "$print"; exit 0; fi
  command -v go >/dev/null || {
    echo "$(basename "$0"): no 'go' on PATH (bash hack/setup.sh installs one)" >&2
    exit 1
  }
}

_all_built() {
  local out=$1 binary
  shift
  for binary in "$@"; do [[ -x "$out/$binary" ]] || return 1; done
}
