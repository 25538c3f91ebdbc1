# Shared by scripts/demo and scripts/bench: start and stop the local stand-ins.
# Each stand-in's stdin is a pipe held open by this shell, so it also exits if we die.

STAND_IN_PIDS=()
STAND_IN_FD=7

# start_stand_in OUTVAR SCRIPT ARGS...: starts tests/support/SCRIPT with ARGS and sets
# OUTVAR to the JSON line it prints when ready.
start_stand_in() {
    local __var=$1 script=$2
    shift 2
    local fifo pid
    fifo="$(mktemp -u)"
    mkfifo "$fifo"
    "$MONINIT_VENV/bin/python" "$repo/tests/support/$script" "$@" <"$fifo" >"$fifo.out" 2>"$fifo.err" &
    pid=$!
    # Keep the stand-in's stdin open for as long as this shell lives.
    eval "exec ${STAND_IN_FD}>\"\$fifo\""
    STAND_IN_FD=$((STAND_IN_FD + 1))
    rm -f "$fifo"
    STAND_IN_PIDS+=("$pid")
    local i
    for i in $(seq 1 600); do
        [[ -s $fifo.out ]] && break
        if ! kill -0 "$pid" 2>/dev/null; then
            echo "$script failed to start:" >&2
            cat "$fifo.err" >&2
            return 1
        fi
        sleep 0.1
    done
    printf -v "$__var" '%s' "$(head -n1 "$fifo.out")"
    rm -f "$fifo.out" "$fifo.err"
}

# Back-compatible name used by the benchmarks.
start_moto() {
    local __out=$1
    shift
    start_stand_in "$__out" moto_stand_in.py "$@"
}

stop_stand_ins() {
    local pid
    for pid in "${STAND_IN_PIDS[@]}"; do
        kill "$pid" 2>/dev/null || true
        wait "$pid" 2>/dev/null || true
    done
    STAND_IN_PIDS=()
}
stop_moto() { stop_stand_ins; }

# json_field JSON KEY
json_field() {
    "$MONINIT_VENV/bin/python" -c 'import json,sys; print(json.loads(sys.argv[1])[sys.argv[2]])' "$1" "$2"
}

# free_port: a loopback port free right now.
free_port() {
    "$MONINIT_VENV/bin/python" -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])'
}

# wait_http URL SECONDS: until URL answers 200.
wait_http() {
    local i
    for i in $(seq 1 $(($2 * 10))); do
        curl -fs -o /dev/null "$1" && return 0
        sleep 0.1
    done
    return 1
}
