# shellcheck shell=bash
# Sourced by the project's shell scripts: one way to report progress, to
# fail, and to install missing Debian packages. Set TAG (the prefix of every
# line, e.g. "image") before sourcing. Everything goes to stderr, so a
# script's stdout stays its result (a path, a version).

say() { printf '%s: %s\n' "$TAG" "$*" >&2; }
die() { printf '%s: error: %s\n' "$TAG" "$*" >&2; exit 1; }

# install_packages PKG...: installs the packages named, as root, saying
# which; nothing when none is named.
install_packages() {
    [ $# -gt 0 ] || return 0
    [ "$(id -u)" = 0 ] || die "missing packages $*: install them as root"
    say "installing $*"
    apt-get update -q >&2
    DEBIAN_FRONTEND=noninteractive apt-get install -y -q "$@" >&2
}
