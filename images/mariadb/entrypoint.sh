#!/bin/sh
# Entrypoint of kea.dev/kea-mariadb (built by hack/store-images.sh): the subset of the
# official mariadb image's contract that kea-operator relies on, so either image can
# serve a Microservice.
#
#   MARIADB_ROOT_PASSWORD   required: root's password (root@localhost and root@'%')
#   MARIADB_DATABASE        optional: a database to create
#   MARIADB_USER            optional: a user ('user'@'%') with all privileges on it
#   MARIADB_PASSWORD        required with MARIADB_USER
#
# As the official image does, the first start also imports /docker-entrypoint-initdb.d/
# *.sql and *.sql.gz (in name order, as root, into MARIADB_DATABASE when set): kea-operator
# restores a backup this way. An
# import that did not finish is never taken for data: the next start refuses to serve.
#
# The first start initializes an empty /var/lib/mysql. Every start then applies the
# variables above (idempotently: a changed password in the Secret takes effect on the
# next restart) through a private server that listens on no network port, stops it and
# execs mariadbd, which stays PID 1 and shuts down cleanly on SIGTERM. Runs as any
# uid that can write /var/lib/mysql, /run/mysqld and /tmp (the pod gives 999); the root
# filesystem may be read-only. Passwords are never printed.
set -eu

DATADIR=/var/lib/mysql
RUNDIR=/run/mysqld
INITDB=/docker-entrypoint-initdb.d
# Present from the first start's initialization until its imports succeeded.
IMPORT_PENDING=$DATADIR/.kea-import-pending

log() { printf '%s [kea-mariadb] %s\n' "$(date -u +%Y-%m-%dT%H:%M:%SZ)" "$*" >&2; }
die() { log "error: $*"; exit 1; }

# Anything but the server (a shell, mariadb-dump, ...) runs as given.
case "${1:-mariadbd}" in
  mariadbd | mysqld) if [ $# -gt 0 ]; then shift; fi ;;
  -*) ;;
  *) exec "$@" ;;
esac

# As root (plain `docker run` with a root-owned volume): hand the writable
# directories to mysql and continue as mysql, so files never end up owned by root.
if [ "$(id -u)" = 0 ]; then
  for dir in "$DATADIR" "$RUNDIR"; do
    [ "$(stat -c %u "$dir")" = 999 ] || chown -R mysql:mysql "$dir"
  done
  exec setpriv --reuid=mysql --regid=mysql --init-groups -- "$0" mariadbd "$@"
fi

[ -n "${MARIADB_ROOT_PASSWORD:-}" ] || die "MARIADB_ROOT_PASSWORD is not set"
if [ -n "${MARIADB_USER:-}" ]; then
  [ -n "${MARIADB_PASSWORD:-}" ] || die "MARIADB_PASSWORD is not set (MARIADB_USER is)"
  [ "$MARIADB_USER" != root ] || die "MARIADB_USER must not be root: MARIADB_ROOT_PASSWORD sets root's password"
fi
[ -w "$DATADIR" ] || die "$DATADIR is not writable by uid $(id -u)"
[ -w "$RUNDIR" ] || die "$RUNDIR is not writable by uid $(id -u)"

# quote_string VALUE: sets $quoted to VALUE as an SQL string literal, backslashes and
# quotes escaped, byte for byte: the x keeps trailing newlines, which $(...) drops (a
# Secret made from a file often ends with one, and the probes pass it as it is).
quote_string() {
  quoted=$(printf '%sx' "$1" | sed -e 's/\\/\\\\/g' -e "s/'/\\\\'/g")
  quoted="'${quoted%x}'"
}
# sql_ident VALUE: VALUE as a quoted SQL identifier.
# shellcheck disable=SC2016 # backquotes quote SQL identifiers
sql_ident() {
  printf '`%s`' "$(printf '%s' "$1" | sed -e 's/`/``/g')"
}
# grant_db VALUE: a database name for GRANT ... ON, where _ and % are wildcards.
grant_db() {
  sql_ident "$(printf '%s' "$1" | sed -e 's/\\/\\\\/g' -e 's/[_%]/\\&/g')"
}

# A private directory for the bootstrap server's socket and mariadb-install-db's log,
# removed on exit; the server is stopped if this script fails.
PRIVATE=$(mktemp -d "$RUNDIR/init.XXXXXX")
SERVER_PID=
cleanup() {
  if [ -n "$SERVER_PID" ] && kill -TERM "$SERVER_PID" 2>/dev/null; then
    wait "$SERVER_PID" || true
  fi
  rm -rf "$PRIVATE"
}
trap cleanup EXIT
trap 'exit 143' TERM INT

# First start: no system tables yet. Initialize in a staging folder of the same volume
# and move the result in with the system tables last, so that "mysql/ exists" means
# "initialized": a start interrupted here (OOM kill, node loss) leaves only the staging
# folder, which the next start removes and redoes.
first_start=false
if [ ! -d "$DATADIR/mysql" ]; then
  first_start=true
  staging="$DATADIR/.kea-init"
  rm -rf "$staging"
  for entry in "$DATADIR"/* "$DATADIR"/.[!.]*; do
    [ -e "$entry" ] && [ "$entry" != "$DATADIR/lost+found" ] &&
      die "$DATADIR holds files (${entry#"$DATADIR"/}, ...) but no system tables (mysql/): refusing to initialize over them"
  done
  log "initializing an empty $DATADIR (MariaDB $(mariadbd --version | sed -n 's/.*Ver \([^ ]*\).*/\1/p'))"
  mkdir "$staging"
  if ! mariadb-install-db --datadir="$staging" --auth-root-authentication-method=normal \
    --skip-test-db --skip-name-resolve --cross-bootstrap >"$PRIVATE/install.log" 2>&1; then
    cat "$PRIVATE/install.log" >&2
    die "mariadb-install-db failed"
  fi
  for file in "$INITDB"/*.sql "$INITDB"/*.sql.gz; do
    if [ -f "$file" ]; then
      touch "$staging/.kea-import-pending"
      break
    fi
  done
  for entry in "$staging"/* "$staging"/.[!.]*; do
    [ -e "$entry" ] && [ "$entry" != "$staging/mysql" ] && mv "$entry" "$DATADIR/"
  done
  mv "$staging/mysql" "$DATADIR/mysql"
  rmdir "$staging"
fi

if ! $first_start && [ -e "$IMPORT_PENDING" ]; then
  die "the import of $INITDB on the first start did not finish, so $DATADIR holds part of it: empty the volume (or delete its claim) to import again"
fi

# The bootstrap server: no network, no privilege checks until the script below loads
# the grant tables, so it works whatever root's password was before.
mariadbd --skip-networking --skip-grant-tables --socket="$PRIVATE/mysqld.sock" \
  --pid-file="$PRIVATE/mysqld.pid" --skip-log-bin --skip-slave-start &
SERVER_PID=$!
tries=0
until mariadb-admin --socket="$PRIVATE/mysqld.sock" --silent ping >/dev/null 2>&1; do
  kill -0 "$SERVER_PID" 2>/dev/null || { SERVER_PID=; die "the bootstrap server exited (see above)"; }
  tries=$((tries + 1))
  [ "$tries" -lt 300 ] || die "the bootstrap server did not answer within 60s"
  sleep 0.2
done

# sql LINE...: one line of the script, verbatim (dash's echo would interpret backslashes).
sql() { printf '%s\n' "$*"; }
# The accounts, every start. Statements reach the client through a pipe only: the
# passwords are never written to a file, a command line or the log.
accounts_sql() {
  quote_string "$MARIADB_ROOT_PASSWORD" && root_password=$quoted
  sql "SET SESSION sql_log_bin = 0, SESSION sql_mode = '';"
  sql "FLUSH PRIVILEGES;" # loads the grant tables: account statements work from here on
  if $first_start; then
    # mariadb-install-db's password-less root accounts over TCP, and any anonymous one
    sql "DROP USER IF EXISTS 'root'@'127.0.0.1', 'root'@'::1', ''@'localhost', ''@'%';"
  fi
  for host in localhost %; do
    sql "CREATE USER IF NOT EXISTS 'root'@'$host' IDENTIFIED BY $root_password;"
    sql "ALTER USER 'root'@'$host' IDENTIFIED BY $root_password;"
    sql "GRANT ALL PRIVILEGES ON *.* TO 'root'@'$host' WITH GRANT OPTION;"
  done
  if [ -n "${MARIADB_DATABASE:-}" ]; then
    sql "CREATE DATABASE IF NOT EXISTS $(sql_ident "$MARIADB_DATABASE");"
  fi
  if [ -n "${MARIADB_USER:-}" ]; then
    quote_string "$MARIADB_USER" && user="$quoted@'%'"
    quote_string "$MARIADB_PASSWORD" && password=$quoted
    sql "CREATE USER IF NOT EXISTS $user IDENTIFIED BY $password;"
    sql "ALTER USER $user IDENTIFIED BY $password;"
    if [ -n "${MARIADB_DATABASE:-}" ]; then
      sql "GRANT ALL PRIVILEGES ON $(grant_db "$MARIADB_DATABASE").* TO $user;"
    fi
  fi
}
# On failure only the error code and line are shown: the server's message quotes the
# statement, which may hold a password.
if ! errors=$(accounts_sql | mariadb --socket="$PRIVATE/mysqld.sock" --user=root --batch 2>&1 >/dev/null); then
  printf '%s\n' "$errors" | sed -n 's/^\(ERROR [0-9]* ([0-9A-Z]*) at line [0-9]*\).*/\1/p' >&2
  die "applying MARIADB_ROOT_PASSWORD, MARIADB_DATABASE, MARIADB_USER failed"
fi
log "root, database ${MARIADB_DATABASE:-(none)} and user ${MARIADB_USER:-(none)} are in place"

if [ -e "$IMPORT_PENDING" ]; then
  for file in "$INITDB"/*; do
    case "$file" in
      *.sql.gz) gzip -t "$file" || die "$file is not a complete gzip file" ;;
      *.sql) ;;
      *) log "ignoring $file (only *.sql and *.sql.gz are imported)"; continue ;;
    esac
    log "importing $file ($(stat -c %s "$file") bytes)"
    case "$file" in
      *.gz) gzip -dc "$file" ;;
      *) cat "$file" ;;
    esac | MYSQL_PWD=$MARIADB_ROOT_PASSWORD mariadb --socket="$PRIVATE/mysqld.sock" --user=root --batch ${MARIADB_DATABASE:+"--database=$MARIADB_DATABASE"} ||
      die "importing $file failed (see above)"
  done
  rm -f "$IMPORT_PENDING"
  log "imported $INITDB"
fi

# Stop the bootstrap server, then become the real one (PID 1 when run as a container).
kill -TERM "$SERVER_PID"
wait "$SERVER_PID" || die "the bootstrap server did not shut down cleanly"
SERVER_PID=
trap - EXIT TERM INT
rm -rf "$PRIVATE"
exec mariadbd "$@"
