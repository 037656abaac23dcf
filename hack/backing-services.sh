#!/usr/bin/env bash
# Real MariaDB and Redis servers for the service's store tests, on loopback,
# with private data directories: nothing is shared with a system install.
#
#   hack/backing-services.sh start   # installs (Debian) and starts both; idempotent
#   hack/backing-services.sh env     # prints the KEA_TEST_*_URL exports for the tests
#   hack/backing-services.sh status  # whether both run
#   hack/backing-services.sh stop    # stops both and removes their data
# shellcheck source=lib.sh
source "$(dirname "${BASH_SOURCE[0]}")/lib.sh"

STATE_DIR="$KEA_RUN_DIR/backing"
MYSQL_PORT=${KEA_TEST_MYSQL_PORT:-33306}
REDIS_PORT=${KEA_TEST_REDIS_PORT:-36379}
MYSQL_URL="mysql://kea:kea@127.0.0.1:$MYSQL_PORT/kea_test"
REDIS_URL="redis://127.0.0.1:$REDIS_PORT/0"

start_mariadb() {
  local dir="$STATE_DIR/mariadb"
  if pid_in_file "$dir/mariadbd.pid" >/dev/null; then log "MariaDB already running on :$MYSQL_PORT"; return 0; fi
  mkdir -p "$dir"
  if [ ! -d "$dir/data/mysql" ]; then
    mariadb-install-db --no-defaults --user=root --datadir="$dir/data" \
      --auth-root-authentication-method=socket >"$dir/install.log" 2>&1 \
      || die "mariadb-install-db failed: see $dir/install.log"
  fi
  /usr/sbin/mariadbd --no-defaults --user=root --datadir="$dir/data" \
    --bind-address=127.0.0.1 --port="$MYSQL_PORT" --socket="$dir/mysqld.sock" \
    --pid-file="$dir/mariadbd.pid" --log-error="$dir/error.log" \
    --skip-name-resolve --innodb-buffer-pool-size=64M >/dev/null 2>&1 &
  retry 30 mariadb --no-defaults --socket="$dir/mysqld.sock" -uroot -e 'SELECT 1' >/dev/null 2>&1 ||
    die "MariaDB did not start: see $dir/error.log"
  mariadb --no-defaults --socket="$dir/mysqld.sock" -uroot <<'SQL'
CREATE DATABASE IF NOT EXISTS kea_test CHARACTER SET utf8mb4;
CREATE USER IF NOT EXISTS 'kea'@'127.0.0.1' IDENTIFIED BY 'kea';
GRANT ALL PRIVILEGES ON kea_test.* TO 'kea'@'127.0.0.1';
SQL
  log "MariaDB ready on 127.0.0.1:$MYSQL_PORT"
}

start_redis() {
  local dir="$STATE_DIR/redis"
  if pid_in_file "$dir/redis.pid" >/dev/null; then log "Redis already running on :$REDIS_PORT"; return 0; fi
  mkdir -p "$dir"
  redis-server --bind 127.0.0.1 --port "$REDIS_PORT" --dir "$dir" --save "" --appendonly no \
    --daemonize yes --pidfile "$dir/redis.pid" --logfile "$dir/redis.log" >/dev/null
  retry 10 redis-cli -p "$REDIS_PORT" ping >/dev/null 2>&1 || die "Redis did not start: see $dir/redis.log"
  log "Redis ready on 127.0.0.1:$REDIS_PORT"
}

# status_of NAME PIDFILE: whether NAME runs, said and returned.
status_of() {
  local pid
  if pid=$(pid_in_file "$2"); then echo "$1 running (pid $pid)"; else echo "$1 stopped"; return 1; fi
}

case "${1:-}" in
  start) apt_install mariadb-server mariadb-client redis-server redis-tools; start_mariadb; start_redis ;;
  stop)
    # shellcheck disable=SC2046 # the pids of those running
    stop_processes 15 $(pid_in_file "$STATE_DIR/mariadb/mariadbd.pid"; pid_in_file "$STATE_DIR/redis/redis.pid")
    rm -rf "$STATE_DIR"
    log "MariaDB and Redis stopped" ;;
  status)
    rc=0
    status_of "MariaDB on :$MYSQL_PORT" "$STATE_DIR/mariadb/mariadbd.pid" || rc=1
    status_of "Redis on :$REDIS_PORT" "$STATE_DIR/redis/redis.pid" || rc=1
    exit $rc ;;
  env)
    echo "export KEA_TEST_MYSQL_URL=$MYSQL_URL"
    echo "export KEA_TEST_REDIS_URL=$REDIS_URL" ;;
  *) die "usage: $0 start|stop|status|env" ;;
esac
