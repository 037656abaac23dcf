#!/usr/bin/env bash
# A Docker daemon for building images and running kind, on machines where nothing
# starts one for us (CI VMs). Installs Debian's docker.io when dockerd is missing.
#
#   hack/docker.sh start    # start dockerd (idempotent), wait until it answers
#   hack/docker.sh stop     # stop the dockerd this script started, and only that
#   hack/docker.sh status
#   hack/docker.sh check    # build a FROM-scratch image, run it --privileged, exec into it
#
# Images and containers live in $KEA_CACHE_DIR/docker/data; runtime state in
# $KEA_DOCKER_EXEC_ROOT (/run/kea-docker). The daemon listens on $KEA_DOCKER_HOST
# (default: the standard socket, so the docker CLI and kind find it unconfigured).
# shellcheck source=lib.sh
source "$(dirname "${BASH_SOURCE[0]}")/lib.sh"

DOCKER_DIR="$KEA_CACHE_DIR/docker"
DATA_ROOT="$DOCKER_DIR/data"
EXEC_ROOT=${KEA_DOCKER_EXEC_ROOT:-/run/kea-docker}
PIDFILE="$EXEC_ROOT/dockerd.pid"
LOGFILE="$DOCKER_DIR/dockerd.log"
DOCKER_HOST_URL=${KEA_DOCKER_HOST:-unix:///var/run/docker.sock}
START_TIMEOUT=60
# Only on hosts that need it: see hack/runc-drop-cap-sys-resource.
RUNTIME_WRAPPER="$HACK_DIR/runc-drop-cap-sys-resource"
RUNTIME_NAME=kea-runc

docker_() { DOCKER_BUILDKIT=0 docker --host "$DOCKER_HOST_URL" "$@"; }

answers() { docker_ info >/dev/null 2>&1; }

# Our dockerd's pid, if the pid file names a live dockerd.
our_pid() { pid_in_file "$PIDFILE" dockerd; }

# Root in some VMs lacks CAP_SYS_RESOURCE (bit 24 of the bounding set).
lacks_cap_sys_resource() {
  local bounding
  bounding=$(awk '/^CapBnd:/ {print $2}' /proc/self/status)
  (((0x$bounding >> 24 & 1) == 0))
}

install_docker() {
  command -v dockerd >/dev/null && command -v runc >/dev/null && return 0
  [ "$(id -u)" -eq 0 ] || die "dockerd is not installed: apt-get install docker.io (as root)"
  apt_install docker.io
}

start() {
  local pid
  if pid=$(our_pid) && answers; then
    log "dockerd already running (pid $pid, $DOCKER_HOST_URL)"
    return 0
  fi
  if answers; then
    log "a Docker daemon not started by this script answers on $DOCKER_HOST_URL: using it as is"
    return 0
  fi
  install_docker
  command -v jq >/dev/null || apt_install jq
  mkdir -p "$DATA_ROOT" "$EXEC_ROOT"
  local args=(
    --data-root "$DATA_ROOT" --exec-root "$EXEC_ROOT" --pidfile "$PIDFILE"
    --host "$DOCKER_HOST_URL"
  )
  if lacks_cap_sys_resource; then
    log "root lacks CAP_SYS_RESOURCE here: runc runs through $(basename "$RUNTIME_WRAPPER")"
    args+=(--add-runtime "$RUNTIME_NAME=$RUNTIME_WRAPPER" --default-runtime "$RUNTIME_NAME")
  fi
  log "starting dockerd (data: $DATA_ROOT, log: $LOGFILE)"
  # Its own session: it must outlive this script and a Ctrl-C in the terminal.
  setsid dockerd "${args[@]}" </dev/null >>"$LOGFILE" 2>&1 &
  retry "$START_TIMEOUT" answers_unless_exited $! ||
    die "dockerd did not answer within ${START_TIMEOUT}s (log: $LOGFILE)"
  log "dockerd running (pid $(our_pid), $(docker_ version --format '{{.Server.Version}}'), $DOCKER_HOST_URL)"
  [ "$DOCKER_HOST_URL" = unix:///var/run/docker.sock ] || log "export DOCKER_HOST=$DOCKER_HOST_URL"
}

# answers_unless_exited PID: whether the dockerd started as PID answers; dies if it exited.
answers_unless_exited() {
  answers && return 0
  if ! process_running "$1" && ! our_pid >/dev/null; then
    tail -n 20 "$LOGFILE" >&2
    die "dockerd exited (log: $LOGFILE)"
  fi
  return 1
}

stop() {
  local pid
  if ! pid=$(our_pid); then
    log "no dockerd started by this script is running"
    rm -f "$PIDFILE"
    return 0
  fi
  log "stopping dockerd (pid $pid; it stops its containers and containerd)"
  stop_processes 30 "$pid" || die "dockerd survived SIGKILL"
  # containerd and shims still using our exec root once dockerd is gone
  for pid in $(processes_using "$EXEC_ROOT" '*/containerd' '*/containerd-shim*'); do
    log "stopping leftover process $pid ($(command_line "$pid"))"
    kill -KILL "$pid" 2>/dev/null || true
  done
  rm -f "$PIDFILE"
  log "dockerd stopped"
}

status() {
  local pid
  if pid=$(our_pid); then
    echo "dockerd running (pid $pid, started by hack/docker.sh)"
  elif answers; then
    echo "a Docker daemon not started by hack/docker.sh answers on $DOCKER_HOST_URL"
  else
    echo "no Docker daemon answers on $DOCKER_HOST_URL"
    return 1
  fi
  docker_ version --format 'server {{.Server.Version}}, client {{.Client.Version}}'
  docker_ info --format 'default runtime: {{.DefaultRuntime}}, storage: {{.Driver}}, cgroup driver: {{.CgroupDriver}}'
}

# check: no registry here, so build a FROM-scratch image around a static Go binary,
# run it --privileged (what kind does) and exec into a running copy.
check() {
  answers || die "no Docker daemon answers on $DOCKER_HOST_URL: run hack/docker.sh start"
  require_cmd go "install Go (Debian: golang-go)"
  local dir image=kea-docker-check:latest name=kea-docker-check
  dir=$(mktemp -d)
  # shellcheck disable=SC2064 # expand now: $dir is local
  trap "rm -rf '$dir'; docker_ rm -f $name >/dev/null 2>&1 || true" EXIT
  cat >"$dir/main.go" <<'EOF'
package main

import (
	"fmt"
	"os"
	"time"
)

func main() {
	if len(os.Args) > 1 && os.Args[1] == "sleep" {
		time.Sleep(time.Hour)
	}
	fmt.Println("hello from a FROM-scratch container")
}
EOF
  printf 'FROM scratch\nCOPY hello /hello\nENTRYPOINT ["/hello"]\n' >"$dir/Dockerfile"
  (cd "$dir" && GO111MODULE=off CGO_ENABLED=0 go build -ldflags '-s -w' -o hello main.go)
  # The legacy builder's deprecation notice is noise here: show its output on failure only.
  run_logged "$dir/build.log" docker_ build -q -t "$image" "$dir"
  docker_ run --rm --privileged "$image" | grep -q "hello from" || die "docker run --privileged failed"
  docker_ run -d --privileged --name "$name" "$image" sleep >/dev/null
  docker_ exec "$name" /hello | grep -q "hello from" || die "docker exec failed"
  docker_ rm -f "$name" >/dev/null
  docker_ rmi "$image" >/dev/null
  log "docker check passed: build FROM scratch, run --privileged, exec"
}

case "${1:-}" in
  start) start ;;
  stop) stop ;;
  status) status ;;
  check) check ;;
  *) die "usage: $0 start|stop|status|check" ;;
esac
