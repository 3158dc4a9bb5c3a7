#!/usr/bin/env bash
# Local service bootstrap for metasync development, tests and the demo.
#
#   source deploy/local/services.sh; ensure_rust; ensure_services; ensure_tools curl
#   deploy/local/services.sh            # same as ensure_services
#
# ensure_services makes PostgreSQL (127.0.0.1:5432), Redis (127.0.0.1:6379) and MariaDB
# (127.0.0.1:3306) answer. A service that already answers is left alone, so on a prepared
# machine this is three quick probes. Otherwise it is started, after installing it from the
# Debian packages when needed. A fresh install is configured the way the tests expect:
# PostgreSQL trusts the current OS user on loopback TCP, MariaDB root has an empty password.
#
# Meant to be sourced: it defines functions and changes no shell options (the callers run
# with `set -euo pipefail`); run directly, it sets those options itself.

# Seconds to wait for a started service to answer.
METASYNC_SERVICE_TIMEOUT="${METASYNC_SERVICE_TIMEOUT:-30}"

_svc_log() { printf 'services: %s\n' "$*" >&2; }
# Exits the (non-interactive) calling script: a missing service is fatal for every caller,
# even one that calls us where `set -e` is suspended (`if ensure_services; ...`).
_svc_die() {
    printf 'services: error: %s\n' "$*" >&2
    if [[ $- == *i* ]]; then
        return 1
    fi
    exit 1
}
_svc_have() { command -v "$1" >/dev/null 2>&1; }

# Runs a command as root: directly, or through sudo for a non-root user. Without sudo it is
# tried as is, so the failure (and the poll after it) names what went wrong.
_svc_as_root() {
    if [[ "$(id -u)" == 0 ]]; then
        "$@"
    elif _svc_have sudo; then
        sudo "$@"
    else
        "$@"
    fi
}

# Runs a command as the postgres OS user, which peer authentication lets in over the socket.
_svc_as_postgres() {
    if [[ "$(id -un)" == postgres ]]; then
        "$@"
    elif [[ "$(id -u)" == 0 ]]; then
        runuser -u postgres -- "$@"
    elif _svc_have sudo; then
        sudo -u postgres "$@"
    else
        _svc_die "need root or sudo to act as the postgres user"
    fi
}

# apt-get update runs at most once per shell: it is the slow part of an install.
_SVC_APT_UPDATED="${_SVC_APT_UPDATED:-0}"
_svc_apt_install() {
    _svc_have apt-get || _svc_die "cannot install $* automatically: apt-get not found (not Debian?); install them by hand"
    if [[ "$(id -u)" != 0 ]] && ! _svc_have sudo; then
        _svc_die "cannot install $*: not root and sudo is not available"
    fi
    if [[ "$_SVC_APT_UPDATED" != 1 ]]; then
        _svc_log "apt-get update"
        # A mirror hiccup need not be fatal while package lists from earlier are there; if
        # they are not, the install below fails and this warning says why.
        _svc_as_root apt-get update -q ||
            _svc_log "warning: apt-get update failed; installing from the current package lists"
        _SVC_APT_UPDATED=1
    fi
    _svc_log "installing $*"
    _svc_as_root env DEBIAN_FRONTEND=noninteractive apt-get install -y -q "$@"
}

# Polls `check` every 0.2 s until it succeeds or the timeout passes.
_svc_wait() {
    local name="$1"
    shift
    local tries=$((METASYNC_SERVICE_TIMEOUT * 5))
    _svc_log "waiting for $name"
    while ((tries-- > 0)); do
        if "$@"; then
            return 0
        fi
        sleep 0.2
    done
    return 1
}

# --- probes: a missing client tool counts as a missing service ---------------------------

_svc_pg_answers() {
    _svc_have pg_isready && pg_isready -q -h 127.0.0.1 -p 5432 >/dev/null 2>&1
}

_svc_redis_answers() {
    _svc_have redis-cli && [[ "$(redis-cli -h 127.0.0.1 -p 6379 ping 2>/dev/null)" == PONG ]]
}

_svc_mariadb_answers() {
    _svc_have mysqladmin && mysqladmin -h 127.0.0.1 -P 3306 -uroot status >/dev/null 2>&1
}

# `ping` succeeds even when the login is refused: tells "down" from "up but root needs auth".
_svc_mariadb_alive() {
    _svc_have mysqladmin && mysqladmin -h 127.0.0.1 -P 3306 -uroot ping >/dev/null 2>&1
}

# --- installed? (server and client tools) -------------------------------------------------

_svc_pg_cluster_version() {
    # The newest version that has a `main` cluster: Debian's postinst creates one.
    local dir version=""
    for dir in /etc/postgresql/*/main; do
        [[ -d "$dir" ]] || continue
        dir="${dir%/main}"
        version="${dir##*/}"
    done
    printf '%s' "$version"
}

_svc_pg_installed() {
    _svc_have pg_ctlcluster && _svc_have pg_isready && _svc_have psql &&
        [[ -n "$(_svc_pg_cluster_version)" ]]
}

_svc_redis_installed() {
    _svc_have redis-server && _svc_have redis-cli
}

_svc_mariadb_installed() {
    [[ -x /usr/sbin/mariadbd ]] && _svc_have mysqladmin && _svc_have mysql
}

# --- start commands -----------------------------------------------------------------------

_svc_pg_start() {
    local version
    version="$(_svc_pg_cluster_version)"
    _svc_log "starting PostgreSQL $version/main"
    # A cluster that runs but does not answer yet makes this fail; the poll decides.
    _svc_as_root pg_ctlcluster --skip-systemctl-redirect "$version" main start ||
        _svc_log "pg_ctlcluster start returned non-zero; waiting for PostgreSQL anyway"
}

_svc_redis_start() {
    _svc_log "starting Redis"
    _svc_as_root mkdir -p /var/lib/redis /var/log/redis
    # No persistence: the local Redis only carries test and demo queues.
    _svc_as_root redis-server --daemonize yes --bind 127.0.0.1 -::1 --port 6379 \
        --save "" --appendonly no --dir /var/lib/redis --logfile /var/log/redis/ci.log ||
        _svc_log "redis-server returned non-zero; waiting for Redis anyway"
}

_svc_mariadb_start() {
    _svc_log "starting MariaDB"
    local args=()
    _svc_as_root mkdir -p /run/mysqld
    if id mysql >/dev/null 2>&1; then
        _svc_as_root chown mysql: /run/mysqld
        # mariadbd refuses to run as root; Debian's stock config leaves `user` to systemd.
        args=(-- --user=mysql)
    fi
    _svc_as_root start-stop-daemon --start --oknodo --background --exec /usr/sbin/mariadbd "${args[@]}" ||
        _svc_log "start-stop-daemon returned non-zero; waiting for MariaDB anyway"
}

# --- first-install configuration ----------------------------------------------------------

# Lets the current OS user in over loopback TCP without a password, as the tests and the demo
# connect (postgres://$USER@127.0.0.1). Idempotent; run only right after installing.
_svc_pg_configure_fresh() {
    local user hba marker="# metasync local development (deploy/local/services.sh)"
    user="$(id -un)"
    if psql -w -h 127.0.0.1 -U "$user" -d postgres -Atc 'select 1' >/dev/null 2>&1; then
        return 0
    fi
    _svc_log "configuring PostgreSQL: superuser role '$user', trust on 127.0.0.1/32 and ::1/128"
    if [[ "$(_svc_as_postgres psql -Atc "select 1 from pg_roles where rolname = '${user//\'/\'\'}'")" != 1 ]]; then
        _svc_as_postgres createuser -s "$user"
    fi
    hba="$(_svc_as_postgres psql -Atc 'show hba_file')"
    # pg_hba is first match wins, so the trust lines go on top. The file is owned by postgres.
    # shellcheck disable=SC2016 # expanded by the inner shell, from its arguments
    _svc_as_postgres bash -c '
        set -euo pipefail
        hba="$1" marker="$2"
        grep -qxF "$marker" "$hba" && exit 0
        tmp="$(mktemp)"
        { printf "%s\n" "$marker" "host all all 127.0.0.1/32 trust" "host all all ::1/128 trust"
          cat "$hba"; } >"$tmp"
        cat "$tmp" >"$hba"
        rm -f "$tmp"
    ' _ "$hba" "$marker"
    _svc_as_postgres psql -Atc 'select pg_reload_conf()' >/dev/null
    # The reload is asynchronous: wait for the new rules to apply.
    _svc_wait PostgreSQL psql -w -h 127.0.0.1 -U "$user" -d postgres -Atc 'select 1' >/dev/null 2>&1 ||
        _svc_die "PostgreSQL: '$user' still cannot log in on 127.0.0.1 without a password (see $hba)"
}

# Debian's root@localhost uses unix_socket auth; the tests log in over TCP with no password.
_svc_mariadb_configure_fresh() {
    _svc_log "configuring MariaDB: root@localhost with an empty password"
    _svc_as_root mysql -uroot -e \
        "ALTER USER root@localhost IDENTIFIED VIA mysql_native_password USING PASSWORD(''); FLUSH PRIVILEGES"
}

# --- public functions ---------------------------------------------------------------------

ensure_rust() {
    # rustup installs outside PATH for non-login shells (CI); pick it up if it is there.
    if ! _svc_have cargo && [[ -f "${CARGO_HOME:-$HOME/.cargo}/env" ]]; then
        # shellcheck source=/dev/null
        . "${CARGO_HOME:-$HOME/.cargo}/env"
    fi
    _svc_have cargo ||
        _svc_die "cargo not found: install Rust (https://rustup.rs, rust-version >= 1.88) and make sure cargo is on PATH"
}

# Installs the Debian package named after each missing command (curl, python3, ...).
ensure_tools() {
    local tool missing=()
    for tool in "$@"; do
        _svc_have "$tool" || missing+=("$tool")
    done
    if ((${#missing[@]})); then
        _svc_apt_install "${missing[@]}"
    fi
}

# ensure_venv DIR PACKAGE...: a Python venv at DIR (made if missing) with PACKAGEs installed
# from PyPI.
ensure_venv() {
    local venv="$1"
    shift
    ensure_tools python3
    if [[ ! -x "$venv/bin/pip" ]] && ! python3 -m venv "$venv" 2>/dev/null; then
        # Debian ships venv (with its pip) separately.
        _svc_apt_install python3-venv
        rm -rf "$venv"
        python3 -m venv "$venv"
    fi
    "$venv/bin/pip" install -q "$@"
}

ensure_services() {
    local pg=1 redis=1 maria=1
    _svc_pg_answers || pg=0
    _svc_redis_answers || redis=0
    _svc_mariadb_answers || maria=0
    # Fast path: everything answers.
    if ((pg && redis && maria)); then
        return 0
    fi

    # One apt-get for whatever is not installed; the client packages bring the probe tools.
    local packages=() pg_fresh=0 maria_fresh=0
    if ((!pg)) && ! _svc_pg_installed; then
        packages+=(postgresql postgresql-client)
        pg_fresh=1
    fi
    if ((!redis)) && ! _svc_redis_installed; then
        packages+=(redis-server redis-tools)
    fi
    if ((!maria)) && ! _svc_mariadb_installed; then
        packages+=(mariadb-server mariadb-client)
        maria_fresh=1
    fi
    if ((${#packages[@]})); then
        _svc_apt_install "${packages[@]}"
    fi

    # The package scripts may have started a service already (no policy-rc.d): probe again.
    if ((!pg)) && ! _svc_pg_answers; then
        _svc_pg_installed || _svc_die "PostgreSQL: no cluster under /etc/postgresql after installing"
        _svc_pg_start
        _svc_wait PostgreSQL _svc_pg_answers ||
            _svc_die "PostgreSQL does not answer on 127.0.0.1:5432 after ${METASYNC_SERVICE_TIMEOUT}s (check /var/log/postgresql/)"
    fi
    if ((pg_fresh)); then
        _svc_pg_configure_fresh
    fi

    if ((!redis)) && ! _svc_redis_answers; then
        _svc_redis_start
        _svc_wait Redis _svc_redis_answers ||
            _svc_die "Redis does not answer on 127.0.0.1:6379 after ${METASYNC_SERVICE_TIMEOUT}s (check /var/log/redis/ci.log)"
    fi

    if ((!maria)) && ! _svc_mariadb_answers; then
        if ! _svc_mariadb_alive; then
            _svc_mariadb_start
            _svc_wait MariaDB _svc_mariadb_alive ||
                _svc_die "MariaDB does not answer on 127.0.0.1:3306 after ${METASYNC_SERVICE_TIMEOUT}s (check /var/log/mysql/)"
        fi
        if ((maria_fresh)); then
            _svc_mariadb_configure_fresh
        fi
        _svc_wait MariaDB _svc_mariadb_answers ||
            _svc_die "MariaDB runs on 127.0.0.1:3306 but 'mysqladmin -h 127.0.0.1 -uroot status' fails: root needs an empty password over TCP"
    fi
    _svc_log "PostgreSQL, Redis and MariaDB answer on 127.0.0.1"
}

# Run directly rather than sourced: bootstrap the services.
if [[ "${BASH_SOURCE[0]}" == "$0" ]]; then
    set -euo pipefail
    ensure_services
fi
