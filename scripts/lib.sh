# Shared by scripts/quickstart and scripts/test: system packages and the venv.
# shellcheck shell=bash

# Install the Debian packages given as arguments that are not installed yet.
need_packages() {
    local missing=() pkg
    for pkg in "$@"; do
        dpkg-query -W -f='${Status}' "$pkg" 2>/dev/null | grep -q "install ok installed" \
            || missing+=("$pkg")
    done
    [ ${#missing[@]} -eq 0 ] && return 0
    local sudo=()
    [ "$(id -u)" -eq 0 ] || sudo=(sudo)
    echo "installing system packages: ${missing[*]}" >&2
    # Postfix: no system-wide configuration; our tests run private instances.
    echo "postfix postfix/main_mailer_type select No configuration" \
        | "${sudo[@]}" debconf-set-selections
    "${sudo[@]}" env DEBIAN_FRONTEND=noninteractive apt-get update -qq
    "${sudo[@]}" env DEBIAN_FRONTEND=noninteractive apt-get install -y -qq \
        "${missing[@]}" >&2
}

# need_packages, but no package may start a system service while installing
# (unbound would answer on port 53): a policy-rc.d that denies every start is
# put in place for the install when the machine has none, and removed after.
need_packages_no_services() {
    local policy=/usr/sbin/policy-rc.d sudo=()
    [ "$(id -u)" -eq 0 ] || sudo=(sudo)
    if [ -e "$policy" ]; then
        need_packages "$@"
        return
    fi
    printf '#!/bin/sh\nexit 101\n' | "${sudo[@]}" tee "$policy" >/dev/null
    "${sudo[@]}" chmod 755 "$policy"
    local status=0
    need_packages "$@" || status=$?
    "${sudo[@]}" rm -f "$policy"
    return "$status"
}

# The Python to build the venv with: $PYTHON, else python3; must be 3.11 or newer.
pick_python() {
    local python="${PYTHON:-python3}"
    if ! "$python" -c 'import sys; sys.exit(sys.version_info < (3, 11))' 2>/dev/null; then
        echo "smtpauth-milter needs Python 3.11 or newer (set PYTHON=/path/to/python3.11)" >&2
        exit 2
    fi
    echo "$python"
}

# Create ./.venv (if needed) and install the project into it, non-editable.
# pymilter compiles against libmilter: --no-cache-dir so a cached wheel cannot
# hide a missing system package.
install_venv() {
    local spec="$1" python
    python="$(pick_python)"
    [ -x .venv/bin/python ] || "$python" -m venv .venv
    .venv/bin/python -m pip install -q --upgrade pip >&2
    .venv/bin/python -m pip install -q --no-cache-dir --force-reinstall --no-deps . >&2
    .venv/bin/python -m pip install -q --no-cache-dir "$spec" >&2
}

SYSTEM_BUILD_PACKAGES=(gcc libmilter-dev python3-dev python3-venv)
