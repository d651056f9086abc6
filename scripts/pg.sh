#!/usr/bin/env bash
# A local PostgreSQL for development and tests, in a folder of the project.
#
#   scripts/pg.sh start [DIR] [PORT]   install the server if missing, initdb, start; print the URL
#   scripts/pg.sh stop  [DIR]          stop it (fast shutdown)
#   scripts/pg.sh url   [DIR] [PORT]   print the URL
#
# Defaults: DIR=.herald/pg, PORT=54329. It listens on 127.0.0.1 only, with trust auth:
# for a developer machine or CI, never for production.
set -euo pipefail

root=$(cd "$(dirname "$0")/.." && pwd)
cmd=${1:-start}
dir=${2:-$root/.herald/pg}
port=${3:-54329}

find_bin() {
    local found
    found=$(ls -d /usr/lib/postgresql/*/bin 2>/dev/null | sort -V | tail -n 1 || true)
    [ -n "$found" ] && [ -x "$found/pg_ctl" ] && echo "$found"
}

install_server() {
    echo "pg.sh: PostgreSQL server not found; installing Debian's package" >&2
    local sudo=""
    [ "$(id -u)" -eq 0 ] || sudo="sudo"
    $sudo apt-get update -qq >&2
    DEBIAN_FRONTEND=noninteractive $sudo apt-get install -y -qq postgresql >&2
}

# initdb and postgres refuse to run as root: as root, run them as the postgres user.
as_db_user() {
    if [ "$(id -u)" -eq 0 ]; then
        runuser -u postgres -- "$@"
    else
        "$@"
    fi
}

url() {
    echo "postgres://postgres@127.0.0.1:$port/herald"
}

# Makes the `herald` database on the server at $port if it has none.
ensure_database() {
    local bin=$1
    if ! as_db_user "$bin/psql" -h 127.0.0.1 -p "$port" -U postgres -d postgres -tAc \
        "SELECT 1 FROM pg_database WHERE datname = 'herald'" | grep -q 1; then
        as_db_user "$bin/createdb" -h 127.0.0.1 -p "$port" -U postgres herald
    fi
}

start() {
    local bin
    bin=$(find_bin) || { install_server; bin=$(find_bin); }
    # A server of another checkout already on the port: use it (its owner stops it).
    if [ ! -f "$dir/postmaster.pid" ] && "$bin/pg_isready" -q -h 127.0.0.1 -p "$port"; then
        ensure_database "$bin"
        url
        return
    fi
    mkdir -p "$dir"
    if [ "$(id -u)" -eq 0 ]; then
        chown postgres:postgres "$dir"
        chmod 700 "$dir"
        if ! runuser -u postgres -- test -w "$dir"; then
            echo "pg.sh: the postgres user cannot reach $dir; choose a DIR it can reach" >&2
            exit 1
        fi
    fi
    if [ ! -f "$dir/PG_VERSION" ]; then
        as_db_user "$bin/initdb" -D "$dir" -U postgres --auth=trust -E UTF8 --locale=C.UTF-8 >/dev/null
        cat >>"$dir/postgresql.conf" <<CONF
listen_addresses = '127.0.0.1'
unix_socket_directories = ''
max_connections = 400
shared_buffers = 256MB
CONF
    fi
    if ! as_db_user "$bin/pg_ctl" -D "$dir" status >/dev/null 2>&1; then
        as_db_user "$bin/pg_ctl" -D "$dir" -l "$dir/server.log" -o "-p $port" -w -t 60 start >/dev/null
    fi
    ensure_database "$bin"
    url
}

stop() {
    local bin
    bin=$(find_bin) || exit 0
    [ -f "$dir/PG_VERSION" ] || exit 0
    if as_db_user "$bin/pg_ctl" -D "$dir" status >/dev/null 2>&1; then
        as_db_user "$bin/pg_ctl" -D "$dir" -m fast -w stop >/dev/null
    fi
}

case "$cmd" in
    start) start ;;
    stop) stop ;;
    url) url ;;
    *) echo "usage: scripts/pg.sh start|stop|url [DIR] [PORT]" >&2; exit 2 ;;
esac
