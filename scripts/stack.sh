#!/usr/bin/env bash
# The staging stack as local processes, without Docker: the same commands and PURSUIT_*
# settings as docker-compose.yml (postgres, redis, migrate, vLLM, api, worker).
#
#   scripts/stack.sh up       PostgreSQL + Redis (scripts/ensure-services.sh), database
#                             $STACK_DATABASE, `pursuit migrate`, `pursuit llm up` (local CPU
#                             vLLM), then `pursuit serve` and `pursuit worker` in the background;
#                             waits for /readyz and prints the API key (created on first up).
#   scripts/stack.sh down     stops api and worker (--all: the local vLLM too; PostgreSQL, Redis
#                             and the database are left as they are)
#   scripts/stack.sh status   each part, and the URL/key; exit 0 only when /readyz is ok
#
# State under $STACK_DIR (default var/stack): api.pid/log, worker.pid/log, api-key (mode 600),
# stack.env (URL, key file and the PURSUIT_* values, for `set -a; . var/stack/stack.env`).
# Settings: STACK_HOST (127.0.0.1), STACK_PORT (8080), STACK_DATABASE (pursuit_staging),
# STACK_REDIS_URL (redis://127.0.0.1:6379/0), PURSUIT_LOCAL_MODEL (smollm2 | qwen1.5b),
# STACK_READY_TIMEOUT (120 s), STACK_API_WORKERS (1: `pursuit serve --workers`). A preset
# PURSUIT_LLM_BASE_URL (+ PURSUIT_LLM_MODEL) uses that server instead of the local vLLM.
# Other PURSUIT_* settings come from the environment or .env, as for compose.
set -euo pipefail
cd "$(dirname "$0")/.."

STACK_DIR=${STACK_DIR:-var/stack}
STACK_HOST=${STACK_HOST:-127.0.0.1}
STACK_PORT=${STACK_PORT:-8080}
STACK_DATABASE=${STACK_DATABASE:-pursuit_staging}
STACK_REDIS_URL=${STACK_REDIS_URL:-redis://127.0.0.1:6379/0}
STACK_READY_TIMEOUT=${STACK_READY_TIMEOUT:-120}
STACK_TENANT=${STACK_TENANT:-staging}
STACK_API_WORKERS=${STACK_API_WORKERS:-1}
PG_HOST=127.0.0.1
PG_PORT=5432
PG_USER=postgres
PURSUIT=.venv/bin/pursuit
PYTHON=.venv/bin/python
URL="http://$STACK_HOST:$STACK_PORT"

say() { echo "stack: $*" >&2; }
die() { say "error: $*"; exit 1; }

usage() {
  sed -n '2,20p' "$0" | sed 's/^# \{0,1\}//' >&2
  exit 2
}

# --- processes ---------------------------------------------------------------------------------

pid_of() {  # pid_of NAME: the pid from NAME.pid if that process is still our `pursuit`
  local file="$STACK_DIR/$1.pid" pid
  [[ -f $file ]] || return 1
  pid=$(<"$file")
  [[ $pid =~ ^[0-9]+$ ]] || return 1
  kill -0 "$pid" 2>/dev/null || return 1
  tr '\0' ' ' <"/proc/$pid/cmdline" 2>/dev/null | grep -q "pursuit" || return 1
  echo "$pid"
}

start_bg() {  # start_bg NAME COMMAND...: detached (own session), logs to NAME.log
  local name=$1 pid
  shift
  if pid=$(pid_of "$name"); then
    say "$name already running (pid $pid)"
    return 0
  fi
  echo "--- $(date -u +%FT%TZ) start: $*" >>"$STACK_DIR/$name.log"
  # Not a process-group leader in a script, so setsid does not fork: $! is the new session's
  # leader, and `down` stops the whole group.
  setsid "$@" </dev/null >>"$STACK_DIR/$name.log" 2>&1 9>&- &
  echo $! >"$STACK_DIR/$name.pid"
  say "$name started (pid $!, log $STACK_DIR/$name.log)"
}

stop_bg() {  # stop_bg NAME: TERM the group, KILL after 30 s
  local name=$1 pid
  if ! pid=$(pid_of "$name"); then
    rm -f "$STACK_DIR/$name.pid"
    say "$name not running"
    return 0
  fi
  say "stopping $name (pid $pid)"
  kill -TERM -- "-$pid" 2>/dev/null || kill -TERM "$pid" 2>/dev/null || true
  for _ in $(seq 1 60); do
    kill -0 "$pid" 2>/dev/null || break
    sleep 0.5
  done
  if kill -0 "$pid" 2>/dev/null; then
    say "$name did not stop in 30 s; killing it"
    kill -KILL -- "-$pid" 2>/dev/null || kill -KILL "$pid" 2>/dev/null || true
  fi
  rm -f "$STACK_DIR/$name.pid"
}

http_status() {  # http_status PATH: the HTTP status of GET $URL/PATH, 000 if no answer
  "$PYTHON" - "$URL$1" <<'EOF'
import sys, urllib.error, urllib.request
try:
    print(urllib.request.urlopen(sys.argv[1], timeout=5).status)
except urllib.error.HTTPError as exc:
    print(exc.code)
except Exception:
    print("000")
EOF
}

readiness() {  # "ok" or "degraded" (GET /readyz is 200), else its HTTP status (000: no answer)
  "$PYTHON" - "$URL/readyz" <<'EOF'
import json, sys, urllib.error, urllib.request
try:
    print(json.load(urllib.request.urlopen(sys.argv[1], timeout=5))["status"])
except urllib.error.HTTPError as exc:
    print(exc.code)
except Exception:
    print("000")
EOF
}

wait_ready() {  # the whole stack is up: /readyz says ok (degraded: Redis or vLLM is down)
  local deadline=$((SECONDS + STACK_READY_TIMEOUT)) code
  while ((SECONDS < deadline)); do
    code=$(readiness)
    [[ $code == ok ]] && return 0
    if ! pid_of api >/dev/null; then
      tail -n 30 "$STACK_DIR/api.log" >&2 || true
      die "the API exited during start-up (log $STACK_DIR/api.log)"
    fi
    sleep 1
  done
  say "GET $URL/readyz: $code after ${STACK_READY_TIMEOUT} s"
  "$PYTHON" -c "import urllib.request as u, sys
try: u.urlopen(sys.argv[1], timeout=5)
except Exception as e: print(getattr(e, 'read', lambda: b'')().decode()[:800])" "$URL/readyz" >&2 || true
  die "the API is not ready (log $STACK_DIR/api.log)"
}

# --- the parts ---------------------------------------------------------------------------------

stack_env() {  # the PURSUIT_* values every process gets, as compose's x-pursuit-env
  export PURSUIT_DATABASE_URL="postgresql+asyncpg://$PG_USER@$PG_HOST:$PG_PORT/$STACK_DATABASE"
  export PURSUIT_REDIS_URL="$STACK_REDIS_URL"
  export PURSUIT_DATA_DIR="${PURSUIT_DATA_DIR:-$STACK_DIR/data}"
  export PURSUIT_LOG_LEVEL="${PURSUIT_LOG_LEVEL:-INFO}"
}

ensure_database() {
  [[ $STACK_DATABASE =~ ^[a-z_][a-z0-9_]*$ ]] || die "STACK_DATABASE must match [a-z_][a-z0-9_]*"
  local psql=(psql -h "$PG_HOST" -p "$PG_PORT" -U "$PG_USER" -d postgres -v ON_ERROR_STOP=1 -qtA)
  if [[ $("${psql[@]}" -c "SELECT 1 FROM pg_database WHERE datname = '$STACK_DATABASE'") != 1 ]]; then
    say "creating database $STACK_DATABASE"
    "${psql[@]}" -c "CREATE DATABASE \"$STACK_DATABASE\""
  fi
}

ensure_llm() {
  if [[ -n ${PURSUIT_LLM_BASE_URL:-} ]]; then
    [[ -n ${PURSUIT_LLM_MODEL:-} ]] || die "PURSUIT_LLM_BASE_URL is set: set PURSUIT_LLM_MODEL too"
    say "using the LLM server at $PURSUIT_LLM_BASE_URL ($PURSUIT_LLM_MODEL)"
    return 0
  fi
  local log="$STACK_DIR/llm-up.log"
  # Progress goes to the terminal as it comes (a first install takes minutes); the exports
  # it ends with are read back from the copy.
  "$PURSUIT" llm up --model "${PURSUIT_LOCAL_MODEL:-smollm2}" | tee "$log" >&2
  PURSUIT_LLM_BASE_URL=$(sed -n 's/^export PURSUIT_LLM_BASE_URL=//p' "$log")
  PURSUIT_LLM_MODEL=$(sed -n 's/^export PURSUIT_LLM_MODEL=//p' "$log")
  [[ -n $PURSUIT_LLM_BASE_URL && -n $PURSUIT_LLM_MODEL ]] || die "pursuit llm up printed no exports"
  export PURSUIT_LLM_BASE_URL PURSUIT_LLM_MODEL
}

has_worker() { "$PURSUIT" worker --help >/dev/null 2>&1; }

since_last_start() {  # since_last_start NAME: NAME.log from the last start marker on
  local log="$STACK_DIR/$1.log" line
  line=$(grep -n '^--- .* start: ' "$log" 2>/dev/null | tail -n 1 | cut -d: -f1)
  tail -n "+${line:-1}" "$log" 2>/dev/null
}

wait_worker() {  # the worker must still run once it logged its start (or after 30 s)
  [[ -f $STACK_DIR/worker.pid ]] || return 0
  for _ in $(seq 1 30); do
    if ! pid_of worker >/dev/null; then
      since_last_start worker | tail -n 30 >&2
      die "the worker exited during start-up (log $STACK_DIR/worker.log)"
    fi
    since_last_start worker | grep -q '"worker.start"' && return 0
    sleep 1
  done
}

ensure_key() {  # reuse the recorded key while it is active, else create one (printed once)
  local file="$STACK_DIR/api-key" id out scopes
  if [[ -f $file && -f $file.id ]]; then
    id=$(<"$file.id")
    if "$PURSUIT" keys list | grep -E "^$id " | grep -q " active "; then
      KEY_STATE="existing key $id from $file"
      return 0
    fi
  fi
  scopes=$("$PYTHON" -c "from app.auth.keys import TENANT_SCOPES; print(','.join(TENANT_SCOPES))")
  out=$("$PURSUIT" keys create --tenant "$STACK_TENANT" --scopes "$scopes" --name stack)
  id=$(head -n 1 <<<"$out" | awk '{print $3}')
  (umask 077 && tail -n 1 <<<"$out" >"$file" && echo "$id" >"$file.id")
  KEY_STATE="created key $id (tenant $STACK_TENANT, scopes $scopes), saved in $file"
}

write_env_file() {
  cat >"$STACK_DIR/stack.env" <<EOF
PURSUIT_STACK_URL=$URL
PURSUIT_STACK_API_KEY_FILE=$STACK_DIR/api-key
PURSUIT_DATABASE_URL=$PURSUIT_DATABASE_URL
PURSUIT_REDIS_URL=$PURSUIT_REDIS_URL
PURSUIT_LLM_BASE_URL=$PURSUIT_LLM_BASE_URL
PURSUIT_LLM_MODEL=$PURSUIT_LLM_MODEL
PURSUIT_DATA_DIR=$PURSUIT_DATA_DIR
PURSUIT_LOG_LEVEL=$PURSUIT_LOG_LEVEL
EOF
}

# --- commands ----------------------------------------------------------------------------------

cmd_up() {
  [[ ${STACK_SKIP_SETUP:-0} == 1 ]] || scripts/setup.sh
  scripts/ensure-services.sh
  stack_env
  ensure_database
  say "migrating $STACK_DATABASE"
  "$PURSUIT" migrate >&2
  ensure_llm
  if ! pid_of api >/dev/null && [[ $(http_status /healthz) != 000 ]]; then
    die "$URL already answers but is not this stack's API; set STACK_PORT"
  fi
  start_bg api "$PURSUIT" serve --host "$STACK_HOST" --port "$STACK_PORT" \
    --workers "$STACK_API_WORKERS"
  if pid_of worker >/dev/null || has_worker; then
    start_bg worker "$PURSUIT" worker
  else
    say "WARNING: this build has no \`pursuit worker\`; calibration runs will stay queued"
  fi
  write_env_file
  wait_ready
  wait_worker
  ensure_key
  say "up: $URL (readyz ok), database $STACK_DATABASE, LLM $PURSUIT_LLM_BASE_URL ($PURSUIT_LLM_MODEL)"
  say "$KEY_STATE"
  say "settings for clients: $STACK_DIR/stack.env"
  echo "PURSUIT_STACK_URL=$URL"
  echo "PURSUIT_API_KEY=$(<"$STACK_DIR/api-key")"
}

cmd_down() {
  stop_bg worker
  stop_bg api
  if [[ ${1:-} == --all ]]; then
    "$PURSUIT" llm down >&2
  fi
}

cmd_status() {
  local pid ok=0 code
  if pg_isready -q -h "$PG_HOST" -p "$PG_PORT"; then say "postgres: up"; else say "postgres: DOWN"; fi
  if redis-cli -u "$STACK_REDIS_URL" ping >/dev/null 2>&1; then say "redis: up"; else say "redis: DOWN"; fi
  "$PURSUIT" llm status >&2 || true
  for name in api worker; do
    if pid=$(pid_of "$name"); then say "$name: running (pid $pid)"; else say "$name: stopped"; fi
  done
  code=$(readiness)
  say "GET $URL/readyz: $code"
  [[ -f $STACK_DIR/api-key ]] && say "API key: $STACK_DIR/api-key"
  [[ $code == ok ]] || ok=3
  return "$ok"
}

[[ $# -ge 1 ]] || usage
mkdir -p "$STACK_DIR"
exec 9>"$STACK_DIR/.lock"
flock 9  # one up/down/status at a time per state folder
case $1 in
  up) cmd_up ;;
  down) shift && cmd_down "$@" ;;
  status) cmd_status ;;
  *) usage ;;
esac
