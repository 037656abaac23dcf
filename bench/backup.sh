#!/usr/bin/env bash
# Backup and restore of every store engine, timed, with 1,000 and 100,000 items (set
# KEA_BENCH_BACKUP_ITEMS, e.g. "1000 100000"), on this machine, and prints a table: the
# time of one backup, its size, and the time of a restore until every item is served again.
# Each backup is what the operator's Job runs for that engine:
#   - sqlite, redb: `kea-operator store-backup` fetching the service's consistent copy from
#     /admin/backup/{sql,nosql}; restored with `kea-operator store-restore`, then the service
#     started on the restored file, until it lists every item;
#   - mariadb: `mariadb-dump --single-transaction | gzip`; restored with `zcat | mariadb` into
#     a new database;
#   - redis: `redis-cli --rdb`; restored by a new redis-server loading the file.
# Each backup file is then sent to a bucket and back as an S3 target's runs do
# (`kea-operator store-upload`, `store-fetch`), over HTTPS: the upload and download times.
# MariaDB, Redis and the S3 server (versitygw, HTTPS with a test authority) are those of
# hack/backing-services.sh (started here when not running).
#
#   bench/backup.sh
source "$(dirname "${BASH_SOURCE[0]}")/../hack/lib.sh"

ITEMS=${KEA_BENCH_BACKUP_ITEMS:-"1000 100000"}
TOKEN=bench-admin-token
require_cmd curl "apt-get install -y curl"
TARGET_DIR=$(cargo_target_dir)
log "building kea-service and kea-operator (release)"
(cd "$REPO_ROOT" && cargo build -q --release -p kea-service -p kea-cli)
SERVICE_BIN=$TARGET_DIR/release/kea-service
TOOLS_BIN=$TARGET_DIR/release/kea-operator

"$HACK_DIR/backing-services.sh" start >&2
eval "$("$HACK_DIR/backing-services.sh" env)"
MARIADB_SOCKET=$KEA_RUN_DIR/backing/mariadb/mysqld.sock
REDIS_PORT=${KEA_TEST_REDIS_PORT:-36379}
# The service's Redis items go to a database of their own, so the figures count only them.
REDIS_DB=7
# The test bucket over HTTPS, as a Job with an S3 target and caSecretKeyRef reaches it.
S3_BUCKET_FLAGS=(--s3-bucket "$KEA_TEST_S3_BUCKET" --s3-endpoint "$KEA_TEST_S3_TLS_ENDPOINT"
  --s3-ca-file "$KEA_TEST_S3_CA_FILE")
export AWS_ACCESS_KEY_ID=$KEA_TEST_S3_ACCESS_KEY AWS_SECRET_ACCESS_KEY=$KEA_TEST_S3_SECRET_KEY

WORK=$(mktemp -d)
PIDS=()
cleanup() {
  stop_processes 15 "${PIDS[@]}" || true
  redis-cli -p "$REDIS_PORT" -n "$REDIS_DB" flushdb >/dev/null 2>&1 || true
  wait 2>/dev/null
  rm -rf "$WORK"
}
trap cleanup EXIT

now() { date +%s.%N; }
elapsed() { awk -v a="$1" -v b="$(now)" 'BEGIN {printf "%.2f", b - a}'; }
bytes() { stat -c %s "$1"; }

# start_service PORT DATA_DIR [VAR=VALUE...]: starts kea-service; prints its pid.
start_service() {
  local port=$1 dir=$2
  shift 2
  mkdir -p "$dir"
  env KEA_LISTEN=127.0.0.1:"$port" KEA_DATA_DIR="$dir" KEA_LOG_FORMAT=json "$@" \
    "$SERVICE_BIN" >"$dir.log" 2>&1 &
  echo $!
}
wait_up() { retry 20 curl -fs "http://127.0.0.1:$1/healthz" -o /dev/null; }

# fill PORT ROUTE COUNT: POSTs COUNT items over 8 keep-alive connections.
fill() {
  python3 - "$@" <<'PY'
import http.client, sys, threading
port, route, count = int(sys.argv[1]), sys.argv[2], int(sys.argv[3])
def work(start, stop):
    connection = http.client.HTTPConnection("127.0.0.1", port, timeout=30)
    for i in range(start, stop):
        connection.request("POST", route, body='{"name": "item-%06d"}' % i,
                           headers={"Content-Type": "application/json"})
        answer = connection.getresponse()
        answer.read()
        if answer.status != 201:
            sys.exit(f"POST {route}: {answer.status}")
threads = [threading.Thread(target=work, args=(count * k // 8, count * (k + 1) // 8)) for k in range(8)]
for t in threads: t.start()
for t in threads: t.join()
PY
}

# count PORT ROUTE: prints how many items named item-N the route lists, page by page.
count() {
  python3 - "$@" <<'PY'
import http.client, json, sys
port, route = int(sys.argv[1]), sys.argv[2]
connection = http.client.HTTPConnection("127.0.0.1", port, timeout=30)
names, before = set(), None
while True:
    connection.request("GET", f"{route}?limit=1000" + (f"&before={before}" if before else ""))
    page = json.loads(connection.getresponse().read())
    names.update(i["name"] for i in page["items"] if i["name"].startswith("item-"))
    before = page.get("next_before")
    if before is None:
        break
print(len(names))
PY
}

ROWS=$WORK/rows
# row ENGINE ITEMS BACKUP_S BYTES RESTORE_S BACKUP_FILE SUFFIX: one line of the table, with
# the backup file's round trip through the bucket.
row() {
  local times
  times=$(s3_round_trip "$6" "$7" "$1-$2")
  printf '%s\t%s\t%s\t%s\t%s\t%s\n' "${@:1:5}" "$times" >>"$ROWS"
}

# s3_round_trip FILE SUFFIX KEY: uploads FILE under bench/KEY/ of the test bucket over HTTPS
# and downloads it again, as a run and a restore of an S3 target do; prints
# "UPLOAD_S\tDOWNLOAD_S".
s3_round_trip() {
  local file=$1 suffix=$2 key=$3 dir=$WORK/s3/$3 name=20261206T000000.000Z$2 started upload_s download_s
  mkdir -p "$dir/up" "$dir/down"
  cp "$file" "$dir/up/$name"
  started=$(now)
  "$TOOLS_BIN" store-upload --dir "$dir/up" --suffix "$suffix" --keep 1 \
    --location "s3://$KEA_TEST_S3_BUCKET/bench/$key/" --report "$dir/report" \
    "${S3_BUCKET_FLAGS[@]}" --s3-prefix "bench/$key/" >/dev/null
  upload_s=$(elapsed "$started")
  started=$(now)
  "$TOOLS_BIN" store-fetch --path "$key/" --suffix "$suffix" --to "$dir/down" \
    "${S3_BUCKET_FLAGS[@]}" --s3-prefix bench/ >/dev/null
  download_s=$(elapsed "$started")
  cmp -s "$file" "$dir/down/$key/$name" || die "$key: the file downloaded differs from the one uploaded"
  printf '%s\t%s' "$upload_s" "$download_s"
}

bench_embedded() {
  local items=$1 port=18291 restored_port=18292 dir=$WORK/embedded-$1 pid store route suffix file started backup_s report size restore_s
  pid=$(start_service $port "$dir" KEA_ADMIN_TOKEN=$TOKEN)
  PIDS+=("$pid")
  wait_up $port
  for store in sql nosql; do
    case $store in
      sql) route=/mysqldata suffix=.sqlite file=relational.sqlite engine=sqlite ;;
      nosql) route=/nosqldata suffix=.redb file=nosql.redb engine=redb ;;
    esac
    fill $port $route "$items"
    started=$(now)
    "$TOOLS_BIN" store-backup --url "http://127.0.0.1:$port/admin/backup/$store" --token "$TOKEN" \
      --dir "$WORK/backups/$engine-$items" --suffix $suffix --keep 2 --location "file://$engine/" \
      --report "$WORK/report" >/dev/null
    backup_s=$(elapsed "$started")
    size=$(python3 -c 'import json,sys; print(json.load(open(sys.argv[1]))["size"])' "$WORK/report")
    started=$(now)
    mkdir -p "$WORK/restored-$engine-$items"
    "$TOOLS_BIN" store-restore --from "$WORK/backups/$engine-$items" --suffix $suffix \
      --to "$WORK/restored-$engine-$items/$file" --source bench >/dev/null
    local restored
    restored=$(start_service $restored_port "$WORK/restored-$engine-$items")
    wait_up $restored_port
    [ "$(count $restored_port $route)" = "$items" ] || die "$engine: the restore lacks items"
    restore_s=$(elapsed "$started")
    stop_processes 15 "$restored"
    row "$engine" "$items" "$backup_s" "$size" "$restore_s" \
      "$(ls -1d "$WORK/backups/$engine-$items"/*"$suffix" | tail -n 1)" "$suffix"
  done
  stop_processes 15 "$pid"
}

bench_servers() {
  local items=$1 port=18293 dir=$WORK/servers-$1 pid started backup_s size restore_s
  mariadb --no-defaults --socket="$MARIADB_SOCKET" -uroot kea_test -e 'DROP TABLE IF EXISTS items'
  redis-cli -p "$REDIS_PORT" -n $REDIS_DB flushdb >/dev/null
  pid=$(start_service $port "$dir" DATABASE_URL="$KEA_TEST_MYSQL_URL" \
    REDIS_URL="redis://127.0.0.1:$REDIS_PORT/$REDIS_DB")
  PIDS+=("$pid")
  wait_up $port
  fill $port /mysqldata "$items"
  fill $port /nosqldata "$items"

  started=$(now)
  MYSQL_PWD=kea mariadb-dump --no-defaults -h 127.0.0.1 -P "${KEA_TEST_MYSQL_PORT:-33306}" -u kea \
    --single-transaction --no-tablespaces --routines --events kea_test | gzip -c >"$WORK/dump.sql.gz"
  backup_s=$(elapsed "$started")
  size=$(bytes "$WORK/dump.sql.gz")
  started=$(now)
  mariadb --no-defaults --socket="$MARIADB_SOCKET" -uroot \
    -e 'DROP DATABASE IF EXISTS kea_bench_restore; CREATE DATABASE kea_bench_restore'
  zcat "$WORK/dump.sql.gz" | mariadb --no-defaults --socket="$MARIADB_SOCKET" -uroot kea_bench_restore
  local rows
  rows=$(mariadb --no-defaults --socket="$MARIADB_SOCKET" -uroot -N kea_bench_restore \
    -e "SELECT COUNT(*) FROM items WHERE name LIKE 'item-%'")
  restore_s=$(elapsed "$started")
  [ "$rows" = "$items" ] || die "mariadb: the restore has $rows items, not $items"
  mariadb --no-defaults --socket="$MARIADB_SOCKET" -uroot -e 'DROP DATABASE kea_bench_restore'
  row mariadb "$items" "$backup_s" "$size" "$restore_s" "$WORK/dump.sql.gz" .sql.gz

  started=$(now)
  redis-cli -p "$REDIS_PORT" --rdb "$WORK/dump.rdb" >/dev/null 2>&1
  backup_s=$(elapsed "$started")
  size=$(bytes "$WORK/dump.rdb")
  started=$(now)
  mkdir -p "$WORK/redis-restore"
  cp "$WORK/dump.rdb" "$WORK/redis-restore/dump.rdb"
  redis-server --bind 127.0.0.1 --port 18294 --dir "$WORK/redis-restore" --dbfilename dump.rdb \
    --appendonly no --save "" --daemonize yes --pidfile "$WORK/redis-restore/pid" >/dev/null
  retry 60 bash -c "redis-cli -p 18294 ping 2>/dev/null | grep -q PONG"
  rows=$(redis-cli -p 18294 -n $REDIS_DB hlen kea:items)
  restore_s=$(elapsed "$started")
  redis-cli -p 18294 shutdown nosave >/dev/null 2>&1 || true
  # The seed item counts too on the Redis side.
  [ "$rows" -ge "$items" ] || die "redis: the restore has $rows items, not $items"
  row redis "$items" "$backup_s" "$size" "$restore_s" "$WORK/dump.rdb" .rdb
  stop_processes 15 "$pid"
}

for items in $ITEMS; do
  [[ $items =~ ^[1-9][0-9]*$ ]] || die "KEA_BENCH_BACKUP_ITEMS: $items is not a count"
  log "$items items in each store"
  bench_embedded "$items"
  bench_servers "$items"
done

printf '%-8s %8s %10s %12s %11s %11s %13s\n' engine items backup_s bytes restore_s \
  s3_put_s s3_get_s
while IFS=$'\t' read -r engine items backup_s size restore_s put_s get_s; do
  printf '%-8s %8s %10s %12s %11s %11s %13s\n' "$engine" "$items" "$backup_s" "$size" \
    "$restore_s" "$put_s" "$get_s"
done <"$ROWS"
echo "s3_put_s, s3_get_s: the backup file to the bucket and back over HTTPS (versitygw on loopback)"
