#!/usr/bin/env bash
# Load test against a fresh process stack (scripts/stack.sh: API + worker + PostgreSQL + Redis +
# local vLLM). Not part of CI: it takes 12-15 minutes and most of a small machine.
#
#   scripts/load.sh
#
# 1. scripts/stack.sh up on its own port, state folder, fresh database and Redis database;
# 2. mints an API key (tenant "load", sessions:write,sessions:read) with `pursuit keys create`;
# 3. interviews: locust (benchmarks/load/locustfile.py, InterviewUser) headless, LOAD_USERS
#    clinicians for LOAD_DURATION_S, each answer with an Idempotency-Key, some sent twice;
# 4. GET /v1/sessions/{id} at LOAD_GET_RATE req/s for LOAD_GET_DURATION_S, open loop
#    (benchmarks/load/fixed_rate.py), on the sessions the interviews made;
# 5. the exactly-once check (benchmarks/load/check_exactly_once.py) against the database;
# 6. summary (benchmarks/load/report.py) and teardown of what it started: api and worker, the
#    database and its Redis keys (LOAD_KEEP=1 keeps them), the local vLLM only if this run
#    started it.
#
# Results in $LOAD_OUT (default var/load/<UTC time>): meta.json, interview.json (locust's final
# per-endpoint stats; interview_stats.csv and interview.html too), answers.jsonl (every answer
# attempt: ids, keys, statuses and SHA-256 only, no patient text), get_fixed_rate*.json/.csv
# (summary with CPU use, and every request), exactly_once.json, uptime.log (load averages and
# the vLLM queue every 15 s), stack/ (api.log, worker.log), summary.json and summary.txt.
# Knobs: LOAD_USERS (6), LOAD_SPAWN_RATE (1/s), LOAD_DURATION_S (300), LOAD_STOP_TIMEOUT_S (240:
# interviews in flight at the end may finish), LOAD_GET_RATE (300), LOAD_GET_DURATION_S (60),
# LOAD_GET_EXTRA_RATES (e.g. "50 100 200": more fixed-rate runs of LOAD_GET_EXTRA_DURATION_S, 30),
# LOAD_PORT (8091), LOAD_REDIS_DB (7: its pursuit:* keys are deleted first, so the posterior
# cache starts cold), LOAD_SESSION_OPTIONS (JSON, see the locustfile), LOAD_THINK_S ("2,6"),
# LOAD_REPLAY_P (0.2), LOAD_DUPLICATE_P (0.1), LOAD_SEED, PURSUIT_RATE_LIMIT_PER_MINUTE (100000
# here: the default 600 per key would refuse the fixed-rate run), STACK_SKIP_SETUP=1.
set -euo pipefail
cd "$(dirname "$0")/.."

LOAD_USERS=${LOAD_USERS:-6}
LOAD_SPAWN_RATE=${LOAD_SPAWN_RATE:-1}
LOAD_DURATION_S=${LOAD_DURATION_S:-300}
LOAD_STOP_TIMEOUT_S=${LOAD_STOP_TIMEOUT_S:-240}
LOAD_GET_RATE=${LOAD_GET_RATE:-300}
LOAD_GET_DURATION_S=${LOAD_GET_DURATION_S:-60}
LOAD_GET_EXTRA_RATES=${LOAD_GET_EXTRA_RATES:-}
LOAD_GET_EXTRA_DURATION_S=${LOAD_GET_EXTRA_DURATION_S:-30}
LOAD_PORT=${LOAD_PORT:-8091}
LOAD_REDIS_DB=${LOAD_REDIS_DB:-7}
LOAD_KEEP=${LOAD_KEEP:-0}
RUN_ID=$(date -u +%Y%m%dT%H%M%SZ)
OUT=${LOAD_OUT:-var/load/$RUN_ID}
PYTHON=.venv/bin/python
PURSUIT=.venv/bin/pursuit

say() { echo "load: $*" >&2; }
die() { say "error: $*"; exit 1; }

[[ $LOAD_REDIS_DB =~ ^[0-9]+$ ]] || die "LOAD_REDIS_DB must be a number"
mkdir -p "$OUT"
OUT=$(cd "$OUT" && pwd)
export STACK_DIR="$OUT/stack"
export STACK_PORT=$LOAD_PORT
export STACK_DATABASE="pursuit_load_$(tr 'A-Z' 'a-z' <<<"$RUN_ID" | tr -cd 'a-z0-9')"
export STACK_REDIS_URL="redis://127.0.0.1:6379/$LOAD_REDIS_DB"
export PURSUIT_RATE_LIMIT_PER_MINUTE=${PURSUIT_RATE_LIMIT_PER_MINUTE:-100000}
export PURSUIT_DATA_DIR="$STACK_DIR/data"
URL="http://127.0.0.1:$LOAD_PORT"

# --- teardown: only what this run started ----------------------------------------------------

LLM_WAS_RUNNING=1
LLM_PRESET=${PURSUIT_LLM_BASE_URL:-}
SAMPLER_PID=""
STACK_STARTED=0
teardown() {
  local rc=$?
  if [[ -n $SAMPLER_PID ]]; then
    kill "$SAMPLER_PID" 2>/dev/null || true
  fi
  if [[ $LOAD_KEEP == 1 ]]; then
    say "LOAD_KEEP=1: the stack stays up ($URL, database $STACK_DATABASE, STACK_DIR=$STACK_DIR)"
    exit "$rc"
  fi
  if [[ $STACK_STARTED == 1 ]]; then
    scripts/stack.sh down || true
    psql -h 127.0.0.1 -U postgres -d postgres -qtA \
      -c "DROP DATABASE IF EXISTS \"$STACK_DATABASE\" WITH (FORCE)" >/dev/null || true
    clear_redis
  fi
  if [[ $LLM_WAS_RUNNING == 0 && -z $LLM_PRESET ]]; then
    say "stopping the local vLLM this run started"
    "$PURSUIT" llm down >&2 || true
  fi
  exit "$rc"
}
trap teardown EXIT
trap 'exit 130' INT TERM

# --- the stack ---------------------------------------------------------------------------------

if [[ -z $LLM_PRESET ]]; then
  if ! "$PURSUIT" llm status --json 2>/dev/null | "$PYTHON" -c \
    'import json, sys; sys.exit(0 if json.load(sys.stdin).get("running") else 1)'; then
    LLM_WAS_RUNNING=0
  fi
fi

uptime >"$OUT/uptime.log"
# Load averages, and the local vLLM's queue (it may serve other clients too).
LLM_METRICS_URL="${LLM_PRESET:-http://127.0.0.1:8001}/metrics"
(while sleep 15; do
  echo "$(uptime) | vllm $(curl -s -m 5 "$LLM_METRICS_URL" 2>/dev/null |
    grep -E '^vllm:num_requests_(running|waiting)\{' | sed -E 's/^vllm:num_requests_([a-z]+).* /\1=/' | tr '\n' ' ')"
done >>"$OUT/uptime.log") &
SAMPLER_PID=$!

clear_redis() {  # the posterior cache and rate-limit counters of this run's Redis database
  if command -v redis-cli >/dev/null; then
    redis-cli -n "$LOAD_REDIS_DB" --scan --pattern 'pursuit:*' |
      xargs -r redis-cli -n "$LOAD_REDIS_DB" del >/dev/null || true
  fi
}
clear_redis

say "stack up: $URL, database $STACK_DATABASE, state $STACK_DIR"
STACK_STARTED=1
scripts/stack.sh up >"$OUT/stack-up.out" 2> >(tee "$OUT/stack-up.log" >&2)
set -a
# shellcheck disable=SC1091
. "$STACK_DIR/stack.env"
set +a

KEY_OUT=$("$PURSUIT" keys create --tenant load --scopes sessions:write,sessions:read --name "load-$RUN_ID")
(umask 077 && tail -n 1 <<<"$KEY_OUT" >"$OUT/api-key")
say "minted $(head -n 1 <<<"$KEY_OUT" | awk '{print $3}') (tenant load)"
LOAD_API_KEY=$(<"$OUT/api-key")
export LOAD_API_KEY

# --- 1. interviews ---------------------------------------------------------------------------

WATCH=()  # process trees: the API with its workers, PostgreSQL with its backends, Redis
if PG_PID=$(pgrep -o -x postgres); then WATCH+=(--watch "postgres=$PG_PID"); fi
if API_PID=$(cat "$STACK_DIR/api.pid" 2>/dev/null); then WATCH+=(--watch "api=$API_PID"); fi
if REDIS_PID=$(pgrep -o -x redis-server); then WATCH+=(--watch "redis=$REDIS_PID"); fi
"$PYTHON" -m benchmarks.load.cpu "${WATCH[@]}" --out "$OUT/cpu_interviews_before.json"
say "interviews: $LOAD_USERS users for $LOAD_DURATION_S s (stop timeout $LOAD_STOP_TIMEOUT_S s)"
uptime | tee -a "$OUT/uptime.log" >&2
INTERVIEW_START=$(date +%s.%N)
set +e
LOAD_RECORDS="$OUT/answers.jsonl" PYTHONPATH=. .venv/bin/locust \
  -f benchmarks/load/locustfile.py InterviewUser \
  --headless --only-summary -u "$LOAD_USERS" -r "$LOAD_SPAWN_RATE" -t "${LOAD_DURATION_S}s" \
  --stop-timeout "$LOAD_STOP_TIMEOUT_S" --host "$URL" \
  --csv "$OUT/interview" --json-file "$OUT/interview" --html "$OUT/interview.html" >"$OUT/locust.log" 2>&1
LOCUST_RC=$?
set -e
"$PYTHON" -m benchmarks.load.cpu "${WATCH[@]}" --out "$OUT/cpu_interviews_after.json"
INTERVIEW_END=$("$PYTHON" -c "print($INTERVIEW_START + $LOAD_DURATION_S)")
say "locust exited $LOCUST_RC (log $OUT/locust.log)"
uptime | tee -a "$OUT/uptime.log" >&2

# --- 2. GET at a fixed rate ------------------------------------------------------------------

fixed_rate() {  # fixed_rate RATE DURATION OUT
  say "GET /v1/sessions/{id}: $1 req/s for $2 s, open loop"
  "$PYTHON" -m benchmarks.load.fixed_rate --url "$URL" --key-file "$OUT/api-key" \
    --records "$OUT/answers.jsonl" --rate "$1" --duration "$2" "${WATCH[@]}" \
    --out "$3" >>"$OUT/fixed_rate.log" 2>&1
}
set +e
fixed_rate "$LOAD_GET_RATE" "$LOAD_GET_DURATION_S" "$OUT/get_fixed_rate.json"
GET_RC=$?
set -e
[[ $GET_RC == 0 ]] || { tail -n 20 "$OUT/fixed_rate.log" >&2; say "fixed-rate client exited $GET_RC"; }
uptime | tee -a "$OUT/uptime.log" >&2
for rate in $LOAD_GET_EXTRA_RATES; do  # a sweep: which rate does this machine hold?
  fixed_rate "$rate" "$LOAD_GET_EXTRA_DURATION_S" "$OUT/get_fixed_rate_$rate.json" || true
  uptime | tee -a "$OUT/uptime.log" >&2
done

# --- 3. exactly once -------------------------------------------------------------------------

set +e
"$PYTHON" -m benchmarks.load.check_exactly_once --records "$OUT/answers.jsonl" \
  --database-url "$PURSUIT_DATABASE_URL" --out "$OUT/exactly_once.json" >"$OUT/exactly_once.log" 2>&1
ONCE_RC=$?
set -e

# --- summary -----------------------------------------------------------------------------------

LOAD_UPTIME_END=$(uptime)
export LOAD_USERS LOAD_SPAWN_RATE LOAD_DURATION_S LOAD_STOP_TIMEOUT_S LOAD_GET_RATE \
  LOAD_GET_DURATION_S RUN_ID INTERVIEW_START INTERVIEW_END LOCUST_RC GET_RC ONCE_RC LOAD_UPTIME_END
"$PYTHON" - "$OUT/meta.json" <<'EOF'
import json, os, subprocess, sys
from benchmarks.load.scenario import DEFAULT_SESSION_OPTIONS

env = os.environ
def sh(*cmd):
    try:
        return subprocess.run(cmd, capture_output=True, text=True, check=False).stdout.strip()
    except OSError:
        return ""
meta = {
    "run_id": env["RUN_ID"],
    "users": int(env["LOAD_USERS"]),
    "spawn_rate_per_s": float(env["LOAD_SPAWN_RATE"]),
    "interview_duration_s": int(env["LOAD_DURATION_S"]),
    "stop_timeout_s": int(env["LOAD_STOP_TIMEOUT_S"]),
    "interview_start": float(env["INTERVIEW_START"]),
    "interview_end": float(env["INTERVIEW_END"]),
    "think_s": env.get("LOAD_THINK_S", "2,6"),
    "replay_p": float(env.get("LOAD_REPLAY_P", "0.2")),
    "duplicate_p": float(env.get("LOAD_DUPLICATE_P", "0.1")),
    "session_options": {**DEFAULT_SESSION_OPTIONS, **json.loads(env.get("LOAD_SESSION_OPTIONS") or "{}")},
    "get_rate_per_s": float(env["LOAD_GET_RATE"]),
    "get_duration_s": float(env["LOAD_GET_DURATION_S"]),
    "llm_base_url": env.get("PURSUIT_LLM_BASE_URL"),
    "llm_model": env.get("PURSUIT_LLM_MODEL"),
    "rate_limit_per_minute": int(env["PURSUIT_RATE_LIMIT_PER_MINUTE"]),
    "tenant_llm_concurrency": env.get("PURSUIT_TENANT_LLM_CONCURRENCY", "default (4)"),
    "cpus": os.cpu_count(),
    "uptime_end": env["LOAD_UPTIME_END"],
    "git": sh("git", "describe", "--always", "--dirty"),
    "exit_codes": {"locust": int(env["LOCUST_RC"]), "fixed_rate": int(env["GET_RC"]), "exactly_once": int(env["ONCE_RC"])},
}
with open(sys.argv[1], "w") as handle:
    json.dump(meta, handle, indent=2)
EOF
"$PYTHON" -m benchmarks.load.report "$OUT" | tee "$OUT/summary.txt"
say "results in $OUT"
[[ $ONCE_RC == 0 ]] || die "the exactly-once check failed (see $OUT/exactly_once.json)"
