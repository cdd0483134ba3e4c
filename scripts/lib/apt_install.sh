# Sourced (not run) by the install scripts: `apt_install WHO PACKAGE...` installs Debian packages
# quietly, as root or through password-less sudo, running `apt-get update` only when the install
# fails without it (a clean image may have no package lists). apt's output is printed only on
# failure; each message is prefixed with WHO. Returns non-zero (after one line saying why) when it
# cannot install.
apt_install() {
    local who="$1"
    shift
    local sudo=()
    if [[ "$(id -u)" != 0 ]]; then
        if sudo -n true 2>/dev/null; then
            sudo=(sudo -n)
        else
            echo "$who: need root to apt-get install $*" >&2
            return 1
        fi
    fi
    command -v apt-get >/dev/null || {
        echo "$who: no apt-get; install $* yourself" >&2
        return 1
    }
    local log
    log="$(mktemp)"
    local install=("${sudo[@]}" apt-get install -y -qq --no-install-recommends "$@")
    if ! DEBIAN_FRONTEND=noninteractive "${install[@]}" >"$log" 2>&1; then
        if ! { DEBIAN_FRONTEND=noninteractive "${sudo[@]}" apt-get update -qq &&
            DEBIAN_FRONTEND=noninteractive "${install[@]}"; } >>"$log" 2>&1; then
            cat "$log" >&2
            rm -f "$log"
            echo "$who: apt-get install $* failed" >&2
            return 1
        fi
    fi
    rm -f "$log"
    echo "$who: installed $*" >&2
}
