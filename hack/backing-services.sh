#!/usr/bin/env bash
# Real MariaDB and Redis servers for the service's store tests, and an S3-compatible
# server (versitygw, built by hack/toolchain.sh s3) with one bucket for the backup tests,
# on loopback, with private data directories: nothing is shared with a system install.
# The S3 server answers on two ports: plain HTTP, and HTTPS with a certificate of a test
# authority made here (its certificate is KEA_TEST_S3_CA_FILE), as a private CA would be.
#
#   hack/backing-services.sh start   # installs (Debian), builds and starts them; idempotent
#   hack/backing-services.sh env     # prints the KEA_TEST_* exports for the tests
#   hack/backing-services.sh status  # whether they run
#   hack/backing-services.sh stop    # stops them and removes their data
# shellcheck source=lib.sh
source "$(dirname "${BASH_SOURCE[0]}")/lib.sh"

STATE_DIR="$KEA_RUN_DIR/backing"
MYSQL_PORT=${KEA_TEST_MYSQL_PORT:-33306}
REDIS_PORT=${KEA_TEST_REDIS_PORT:-36379}
MYSQL_URL="mysql://kea:kea@127.0.0.1:$MYSQL_PORT/kea_test"
REDIS_URL="redis://127.0.0.1:$REDIS_PORT/0"
S3_PORT=${KEA_TEST_S3_PORT:-37070}
S3_ENDPOINT="http://127.0.0.1:$S3_PORT"
S3_BUCKET=kea-test
S3_ACCESS_KEY=kea-test
S3_SECRET_KEY=kea-test-secret-key
S3_TLS_PORT=${KEA_TEST_S3_TLS_PORT:-37443}
S3_TLS_ENDPOINT="https://127.0.0.1:$S3_TLS_PORT"
S3_CA_FILE="$STATE_DIR/s3/tls/ca.crt"

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

# s3_request METHOD PATH [CURL ARGS...]: a signed request to the S3 server; prints the status.
s3_request() {
  curl -s -o /dev/null -w '%{http_code}' -X "$1" --aws-sigv4 "aws:amz:us-east-1:s3" \
    --user "$S3_ACCESS_KEY:$S3_SECRET_KEY" -H 'x-amz-content-sha256: UNSIGNED-PAYLOAD' \
    "${@:3}" "$S3_ENDPOINT/$2"
}

start_s3() {
  local dir="$STATE_DIR/s3"
  if pid_in_file "$dir/versitygw.pid" >/dev/null; then log "S3 server already running on :$S3_PORT"; return 0; fi
  "$HACK_DIR/toolchain.sh" s3
  mkdir -p "$dir/root" "$dir/meta"
  # Objects are files under root/BUCKET/; metadata in a side folder, not in extended attributes.
  ROOT_ACCESS_KEY="$S3_ACCESS_KEY" ROOT_SECRET_KEY="$S3_SECRET_KEY" \
    setsid "$(tool_bin versitygw)" --port "127.0.0.1:$S3_PORT" --quiet \
    posix --sidecar "$dir/meta" "$dir/root" </dev/null >"$dir/versitygw.log" 2>&1 &
  echo $! >"$dir/versitygw.pid"
  retry 20 curl -s -o /dev/null "$S3_ENDPOINT/" || die "the S3 server did not start: see $dir/versitygw.log"
  local status
  status=$(s3_request PUT "$S3_BUCKET")
  [ "$status" = 200 ] || [ "$status" = 409 ] || die "could not create bucket $S3_BUCKET (HTTP $status)"
  log "S3 server ready on $S3_ENDPOINT (bucket $S3_BUCKET)"
  start_s3_tls
}

# The same server's folders over HTTPS: a test authority signs a certificate for 127.0.0.1.
start_s3_tls() {
  local dir="$STATE_DIR/s3" tls="$STATE_DIR/s3/tls"
  if pid_in_file "$dir/versitygw-tls.pid" >/dev/null; then return 0; fi
  mkdir -p "$tls"
  openssl req -x509 -newkey ec -pkeyopt ec_paramgen_curve:P-256 -nodes -days 30 \
    -subj "/CN=kea test authority" -keyout "$tls/ca.key" -out "$tls/ca.crt" 2>/dev/null
  openssl req -newkey ec -pkeyopt ec_paramgen_curve:P-256 -nodes -subj "/CN=127.0.0.1" \
    -keyout "$tls/server.key" -out "$tls/server.csr" 2>/dev/null
  openssl x509 -req -in "$tls/server.csr" -CA "$tls/ca.crt" -CAkey "$tls/ca.key" -days 30 \
    -extfile <(printf 'subjectAltName=IP:127.0.0.1\nextendedKeyUsage=serverAuth\n') \
    -out "$tls/server.crt" 2>/dev/null || die "could not make the test server's certificate"
  ROOT_ACCESS_KEY="$S3_ACCESS_KEY" ROOT_SECRET_KEY="$S3_SECRET_KEY" \
    setsid "$(tool_bin versitygw)" --port "127.0.0.1:$S3_TLS_PORT" --quiet \
    --cert "$tls/server.crt" --key "$tls/server.key" \
    posix --sidecar "$dir/meta" "$dir/root" </dev/null >"$dir/versitygw-tls.log" 2>&1 &
  echo $! >"$dir/versitygw-tls.pid"
  retry 20 curl -s -o /dev/null --cacert "$S3_CA_FILE" "$S3_TLS_ENDPOINT/" ||
    die "the S3 server did not start on HTTPS: see $dir/versitygw-tls.log"
  log "S3 server ready on $S3_TLS_ENDPOINT (authority $S3_CA_FILE)"
}

# status_of NAME PIDFILE: whether NAME runs, said and returned.
status_of() {
  local pid
  if pid=$(pid_in_file "$2"); then echo "$1 running (pid $pid)"; else echo "$1 stopped"; return 1; fi
}

case "${1:-}" in
  start) apt_install mariadb-server mariadb-client redis-server redis-tools curl openssl; start_mariadb; start_redis; start_s3 ;;
  stop)
    # shellcheck disable=SC2046 # the pids of those running
    stop_processes 15 $(pid_in_file "$STATE_DIR/mariadb/mariadbd.pid"; pid_in_file "$STATE_DIR/redis/redis.pid"
      pid_in_file "$STATE_DIR/s3/versitygw.pid"; pid_in_file "$STATE_DIR/s3/versitygw-tls.pid")
    rm -rf "$STATE_DIR"
    log "MariaDB, Redis and the S3 server stopped" ;;
  status)
    rc=0
    status_of "MariaDB on :$MYSQL_PORT" "$STATE_DIR/mariadb/mariadbd.pid" || rc=1
    status_of "Redis on :$REDIS_PORT" "$STATE_DIR/redis/redis.pid" || rc=1
    status_of "S3 server on :$S3_PORT" "$STATE_DIR/s3/versitygw.pid" || rc=1
    status_of "S3 server on :$S3_TLS_PORT (HTTPS)" "$STATE_DIR/s3/versitygw-tls.pid" || rc=1
    exit $rc ;;
  env)
    echo "export KEA_TEST_MYSQL_URL=$MYSQL_URL"
    echo "export KEA_TEST_REDIS_URL=$REDIS_URL"
    echo "export KEA_TEST_S3_ENDPOINT=$S3_ENDPOINT KEA_TEST_S3_BUCKET=$S3_BUCKET"
    echo "export KEA_TEST_S3_ACCESS_KEY=$S3_ACCESS_KEY KEA_TEST_S3_SECRET_KEY=$S3_SECRET_KEY"
    echo "export KEA_TEST_S3_TLS_ENDPOINT=$S3_TLS_ENDPOINT KEA_TEST_S3_CA_FILE=$S3_CA_FILE" ;;
  *) die "usage: $0 start|stop|status|env" ;;
esac
