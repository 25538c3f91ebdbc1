# Shared by scripts/demo and scripts/bench: start and stop the local stand-ins.
# Each stand-in's stdin is a pipe held by this shell, so it also exits if we die.

# start_moto OUTVAR ARGS...: starts moto_stand_in.py with ARGS; sets OUTVAR to its JSON line
# and MOTO_PID to its PID.
start_moto() {
    local __var=$1
    shift
    local fifo
    fifo="$(mktemp -u)"
    mkfifo "$fifo"
    # fd 7 keeps the stand-in's stdin open for as long as this shell lives.
    "$MONINIT_VENV/bin/python" "$repo/tests/support/moto_stand_in.py" "$@" <"$fifo" >"$fifo.out" 2>"$fifo.err" &
    MOTO_PID=$!
    exec 7>"$fifo"
    rm -f "$fifo"
    local i
    for i in $(seq 1 600); do
        if [[ -s $fifo.out ]]; then break; fi
        if ! kill -0 "$MOTO_PID" 2>/dev/null; then
            echo "moto stand-in failed to start:" >&2
            cat "$fifo.err" >&2
            return 1
        fi
        sleep 0.1
    done
    printf -v "$__var" '%s' "$(head -n1 "$fifo.out")"
    rm -f "$fifo.out" "$fifo.err"
}

stop_moto() {
    if [[ -n ${MOTO_PID:-} ]]; then
        exec 7>&- || true
        kill "$MOTO_PID" 2>/dev/null || true
        wait "$MOTO_PID" 2>/dev/null || true
        MOTO_PID=
    fi
}

# json_field JSON KEY
json_field() {
    "$MONINIT_VENV/bin/python" -c 'import json,sys; print(json.loads(sys.argv[1])[sys.argv[2]])' "$1" "$2"
}
