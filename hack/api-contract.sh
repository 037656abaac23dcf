#!/usr/bin/env bash
# Checks kea-service's HTTP API against its own OpenAPI document, on the running binary:
#   1. openapi-spec-validator: GET /openapi.json is a valid OpenAPI 3.1 document;
#   2. schemathesis: property-based requests generated from that document, with every
#      check schemathesis has (status codes, content types, headers and bodies conform,
#      no 5xx where none is documented, invalid input rejected, valid input accepted).
# Both come from PyPI, pinned, into a virtualenv cached in $KEA_CACHE_DIR/api-contract-venv.
#
#   hack/api-contract.sh            # builds kea-service (debug) and runs both
#   KEA_API_CONTRACT_EXAMPLES=200 hack/api-contract.sh   # more generated cases per operation
# shellcheck source=lib.sh
source "$(dirname "${BASH_SOURCE[0]}")/lib.sh"
cd "$REPO_ROOT"

SCHEMATHESIS_VERSION=4.32.5
VALIDATOR_VERSION=0.7.2
VENV="$KEA_CACHE_DIR/api-contract-venv"
STAMP="$VENV/.kea-versions"
EXAMPLES=${KEA_API_CONTRACT_EXAMPLES:-25}

if [ "$(cat "$STAMP" 2>/dev/null)" != "$SCHEMATHESIS_VERSION $VALIDATOR_VERSION" ]; then
  log "installing schemathesis $SCHEMATHESIS_VERSION and openapi-spec-validator $VALIDATOR_VERSION into $VENV"
  rm -rf "$VENV"
  python3 -m venv "$VENV"
  "$VENV/bin/pip" install -q "schemathesis==$SCHEMATHESIS_VERSION" "openapi-spec-validator==$VALIDATOR_VERSION"
  echo "$SCHEMATHESIS_VERSION $VALIDATOR_VERSION" >"$STAMP"
fi

cargo build -q -p kea-service --bin kea-service
TARGET_DIR=$(cargo_target_dir)
WORK=$(mktemp -d)
PID=
cleanup() {
  [ -n "$PID" ] && kill "$PID" 2>/dev/null && wait "$PID" 2>/dev/null
  rm -rf "$WORK"
}
trap cleanup EXIT

PORT=$(python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])')
BASE="http://127.0.0.1:$PORT"
# Embedded stores in a scratch directory; no dependencies, so /api/dependencies is empty.
env -u DATABASE_URL -u REDIS_URL KEA_LISTEN="127.0.0.1:$PORT" KEA_DATA_DIR="$WORK/data" RUST_LOG=warn \
  "$TARGET_DIR/debug/kea-service" >"$WORK/service.log" 2>&1 &
PID=$!
retry 10 curl -fsS "$BASE/healthz" >/dev/null 2>&1 || { cat "$WORK/service.log" >&2; die "kea-service did not start"; }

curl -fsS "$BASE/openapi.json" >"$WORK/openapi.json"
log "openapi-spec-validator: $BASE/openapi.json"
"$VENV/bin/openapi-spec-validator" "$WORK/openapi.json"

log "schemathesis: every operation, all checks, $EXAMPLES examples each"
# From the scratch directory, where schemathesis keeps its files.
(cd "$WORK" && "$VENV/bin/schemathesis" --no-color --config-file "$HACK_DIR/schemathesis.toml" \
  run "$BASE/openapi.json" --checks all --max-examples "$EXAMPLES" --seed 1 --generation-database none) \
  || { log "kea-service log:"; tail -n 20 "$WORK/service.log" >&2; exit 1; }
