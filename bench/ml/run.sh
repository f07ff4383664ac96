#!/usr/bin/env bash
# kiln's ML plugins and model serving against pandas + scikit-learn (issue #6). See README.md.
#
#   cargo build --release -p kiln && bench/ml/run.sh [all|stages|serving|report]
#
# Environment: KILN_BIN (default ${CARGO_TARGET_DIR:-target}/release/kiln), KILN_BENCH_VENV
# (/var/tmp/kiln-bench-venv), KILN_BENCH_WORK (/var/tmp/kiln-bench-ml), REPETITIONS (3),
# CONNECTIONS (16), DURATION (10s), WRK_THREADS (2).
set -euo pipefail

HERE=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
REPO=$(cd "$HERE/../.." && pwd)
cd "$REPO"
VENV=${KILN_BENCH_VENV:-/var/tmp/kiln-bench-venv}
WORK=${KILN_BENCH_WORK:-/var/tmp/kiln-bench-ml}
KILN_BIN=${KILN_BIN:-${CARGO_TARGET_DIR:-target}/release/kiln}
KILN_BIN=$(realpath -m "$KILN_BIN")
REPETITIONS=${REPETITIONS:-3}
CONNECTIONS=${CONNECTIONS:-16}
DURATION=${DURATION:-10s}
WRK_THREADS=${WRK_THREADS:-2}
WHAT=${1:-all}

say() { printf '== %s\n' "$*" >&2; }

if [ ! -x "$KILN_BIN" ]; then
    echo "no kiln binary at $KILN_BIN: build it with \`cargo build --release -p kiln\` or set KILN_BIN" >&2
    exit 1
fi
mkdir -p "$WORK"

# A virtualenv outside the repository, reinstalled when requirements.txt changes.
if [ ! -x "$VENV/bin/python" ] || ! cmp -s "$HERE/requirements.txt" "$VENV/.kiln-requirements"; then
    say "installing $HERE/requirements.txt into $VENV"
    python3 -m venv "$VENV"
    "$VENV/bin/pip" install -q --upgrade pip
    "$VENV/bin/pip" install -q -r "$HERE/requirements.txt"
    cp "$HERE/requirements.txt" "$VENV/.kiln-requirements"
fi
PYTHON="$VENV/bin/python"

# Whether a Rust build or cargo's tests are running: their CPU use would skew every figure.
busy() { pgrep -x rustc >/dev/null || pgrep -x cargo >/dev/null; }

wait_quiet() {
    while busy; do
        say "a build is running (rustc or cargo); waiting"
        sleep 30
    done
}

run_stages() {
    if [ ! -f "$WORK/classification_1m.csv" ]; then
        say "generating the 1M × 20 classification set (once)"
        "$PYTHON" "$HERE/sk_stage.py" generate "$WORK/classification_1m.csv.tmp"
        mv "$WORK/classification_1m.csv.tmp" "$WORK/classification_1m.csv"
    fi
    say "stages: kiln $KILN_BIN against pandas + scikit-learn, $REPETITIONS runs each"
    "$PYTHON" "$HERE/compare.py" stages --kiln "$KILN_BIN" --work "$WORK" \
        --out "$WORK/stages.json" --repetitions "$REPETITIONS"
}

PIDS=()
SERVE_DIR=""
cleanup() {
    for pid in "${PIDS[@]}"; do
        kill "$pid" 2>/dev/null || true
    done
    for pid in "${PIDS[@]}"; do
        wait "$pid" 2>/dev/null || true
    done
    if [ -n "$SERVE_DIR" ]; then
        rm -rf "$SERVE_DIR"
    fi
}
trap cleanup EXIT

free_port() {
    "$PYTHON" -c 'import socket; s = socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])'
}

# Stops one server this script started (and forgets it).
stop() {
    kill "$1" 2>/dev/null || true
    wait "$1" 2>/dev/null || true
    local kept=()
    for pid in "${PIDS[@]}"; do
        [ "$pid" = "$1" ] || kept+=("$pid")
    done
    PIDS=("${kept[@]}")
}

BODY='{"rows": [{"fixed acidity": 7.4, "volatile acidity": 0.7, "citric acid": 0.0, "residual sugar": 1.9, "chlorides": 0.076, "free sulfur dioxide": 11.0, "total sulfur dioxide": 34.0, "density": 0.9978, "pH": 3.51, "sulphates": 0.56, "alcohol": 9.4}]}'

# Waits until a predict URL answers 200.
wait_predict() {
    local url=$1 deadline=$((SECONDS + 120))
    until curl -sf -o /dev/null -X POST -H 'content-type: application/json' -d "$BODY" "$url"; do
        if [ $SECONDS -ge $deadline ]; then
            echo "$url does not answer" >&2
            return 1
        fi
        sleep 0.5
    done
}

# wrk against one server: a 3 s warm-up, then $REPETITIONS runs; JSON lines to serving.jsonl.
# Measured again when a build started during the runs.
measure_server() {
    local name=$1 url=$2 attempt lines
    for attempt in 1 2 3; do
        wait_quiet
        rm -f "$WORK/.busy"
        lines=$(mktemp)
        SERVER=$name WARMUP=true wrk -t"$WRK_THREADS" -c"$CONNECTIONS" -d3s -s "$HERE/predict.lua" "$url" \
            | grep '^{' >>"$lines"
        for _ in $(seq "$REPETITIONS"); do
            SERVER=$name WARMUP=false wrk -t"$WRK_THREADS" -c"$CONNECTIONS" -d"$DURATION" --latency \
                -s "$HERE/predict.lua" "$url" | tee -a "$WORK/wrk.log" | grep '^{' >>"$lines"
        done
        if ! busy && [ ! -e "$WORK/.busy" ]; then
            cat "$lines" >>"$WORK/serving.jsonl"
            rm -f "$lines"
            return 0
        fi
        rm -f "$lines"
        say "a build started while measuring $name: measuring again"
    done
    echo "could not measure $name without a build running" >&2
    return 1
}

run_serving() {
    # Notes any build that runs while wrk measures (see measure_server).
    (while sleep 2; do if busy; then touch "$WORK/.busy"; fi; done) &
    PIDS+=($!)
    command -v wrk >/dev/null || { echo "wrk is missing: apt-get install -y wrk" >&2; exit 1; }
    : >"$WORK/serving.jsonl"
    : >"$WORK/wrk.log"
    SERVE_DIR=$(mktemp -d /var/tmp/kiln-bench-serve.XXXXXX)
    mkdir "$SERVE_DIR/dags" "$SERVE_DIR/data"
    cp "$REPO/dags/wine_quality.toml" "$SERVE_DIR/dags/"
    cp "$REPO/data/winequality-red.csv" "$SERVE_DIR/data/"
    local port base
    port=$(free_port)
    base="http://127.0.0.1:$port"
    say "kiln standalone on $base (in $SERVE_DIR)"
    (cd "$SERVE_DIR" && exec env -u KILN_API_TOKEN -u KILN_DATABASE_URL KILN_LOG=warn \
        "$KILN_BIN" standalone --listen "127.0.0.1:$port" --workers 1) >"$WORK/kiln-standalone.log" 2>&1 &
    PIDS+=($!)
    local kiln_pid=$! deadline=$((SECONDS + 60))
    until curl -sf -o /dev/null "$base/api/v1/dags"; do
        [ $SECONDS -lt $deadline ] || { cat "$WORK/kiln-standalone.log" >&2; exit 1; }
        sleep 0.5
    done
    say "triggering wine_quality and waiting for the model"
    curl -sf -X POST -H 'content-type: application/json' -d '{}' "$base/api/v1/dags/wine_quality/runs" >/dev/null
    deadline=$((SECONDS + 600))
    local algorithm=""
    until algorithm=$(curl -sf "$base/api/v1/models/wine_quality" \
        | "$PYTHON" -c 'import json, sys; print(json.load(sys.stdin)["served"]["algorithm"]["name"])' 2>/dev/null); do
        [ $SECONDS -lt $deadline ] || { echo "no model after 600 s" >&2; cat "$WORK/kiln-standalone.log" >&2; exit 1; }
        sleep 1
    done
    say "kiln serves a $algorithm"
    wait_predict "$base/api/v1/models/wine_quality/predict"
    curl -s -X POST -H 'content-type: application/json' -d "$BODY" "$base/api/v1/models/wine_quality/predict" >"$WORK/kiln-answer.json"
    measure_server kiln "$base/api/v1/models/wine_quality/predict"
    stop "$kiln_pid"

    local workers uvicorn_pid
    for workers in 1 2; do
        port=$(free_port)
        say "FastAPI + scikit-learn ($algorithm) under uvicorn, $workers worker(s), on port $port"
        (cd "$HERE" && exec env KILN_BENCH_WINE_CSV="$REPO/data/winequality-red.csv" KILN_BENCH_ALGORITHM="$algorithm" \
            "$VENV/bin/uvicorn" serve_sklearn:app --host 127.0.0.1 --port "$port" --workers "$workers" \
            --loop uvloop --http httptools --no-access-log --log-level warning) >"$WORK/uvicorn-$workers.log" 2>&1 &
        uvicorn_pid=$!
        PIDS+=("$uvicorn_pid")
        wait_predict "http://127.0.0.1:$port/api/v1/models/wine_quality/predict"
        curl -s -X POST -H 'content-type: application/json' -d "$BODY" \
            "http://127.0.0.1:$port/api/v1/models/wine_quality/predict" >"$WORK/uvicorn-answer.json"
        measure_server "fastapi-uvicorn-${workers}w" "http://127.0.0.1:$port/api/v1/models/wine_quality/predict"
        stop "$uvicorn_pid"
    done
    say "answers to the same row: kiln $(cat "$WORK/kiln-answer.json"); FastAPI $(cat "$WORK/uvicorn-answer.json")"
}

report() {
    local serving=()
    [ -s "$WORK/serving.jsonl" ] && serving=(--serving "$WORK/serving.jsonl")
    "$PYTHON" "$HERE/compare.py" report --stages "$WORK/stages.json" "${serving[@]}" \
        --markdown "$WORK/report.md"
}

case "$WHAT" in
    all) run_stages; run_serving; report ;;
    stages) run_stages; report ;;
    serving) run_serving; report ;;
    report) report ;;
    *) echo "usage: $0 [all|stages|serving|report]" >&2; exit 2 ;;
esac
