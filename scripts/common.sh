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

# run_dir_for USER DIR: prints DIR when USER can reach it (a `udc-vm
# --user USER` run gives the run's directory to USER, who must be able to
# enter every directory above it), else a new directory under /tmp, saying
# so: a checkout under /root, say, is closed to other users.
run_dir_for() {
    local user=$1 dir=$2
    mkdir -p "$dir"
    if setpriv --reuid "$user" --regid "$user" --clear-groups test -x "$(dirname "$(realpath "$dir")")" 2>/dev/null; then
        echo "$dir"
    else
        dir=$(mktemp -d /tmp/udc-vm-run.XXXXXX)
        say "$user cannot reach $2: this run's logs go to $dir"
        echo "$dir"
    fi
}
