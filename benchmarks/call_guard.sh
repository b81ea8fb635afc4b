# One device call from start to packed results, for benchmarks/lra_learn.sh and real_runs.sh
# (sourced, not run). A call has a hard wall-clock limit, and a script it kills returns nothing,
# so whatever happens the script must stop its runs and pack in time:
#
#   guard_start           arm a watchdog for this script (disarmed when the script exits)
#   guarded CMD ARGS...   run CMD so that the watchdog can stop it; returns CMD's exit status
#   guard_train_deadline  the wall-clock time (Unix seconds) for the runs' trainer.stop_at
#
# Times count from $started (date +%s at the script's start). At CALL_SECONDS - PACK_SECONDS
# every command still running under `guarded` gets SIGTERM (a `maelre fit/pretrain` in training
# saves a checkpoint at the next step end and exits; one still loading data just ends), and
# SIGKILL GRACE_SECONDS later; commands started after that return 143 at once. The script then
# has the rest of PACK_SECONDS to pack. The runs themselves stop training by their
# trainer.stop_at, TEST_SECONDS before the watchdog, which leaves them time to validate and test
# the partial model and write results.json; the watchdog is the net under that.
#
# Settings (environment): CALL_SECONDS (540: inside a 560-600 s device call), PACK_SECONDS (45),
# GRACE_SECONDS (15), TEST_SECONDS (60).

CALL_SECONDS=${CALL_SECONDS:-540}
PACK_SECONDS=${PACK_SECONDS:-45}
GRACE_SECONDS=${GRACE_SECONDS:-15}
TEST_SECONDS=${TEST_SECONDS:-60}

guard_start() {
    guard_dir=$(mktemp -d)
    guard_deadline=$(( started + CALL_SECONDS - PACK_SECONDS ))
    _guard_watch &
    guard_pid=$!
    trap _guard_end EXIT
}

guard_train_deadline() {  # guard_train_deadline MINUTES: $started + MINUTES (may be fractional), at most TEST_SECONDS before the watchdog
    local want
    want=$(awk -v s="$started" -v m="$1" 'BEGIN { printf "%d", s + 60 * m }')
    echo $(( want < guard_deadline - TEST_SECONDS ? want : guard_deadline - TEST_SECONDS ))
}

guarded() {
    local pid rc=0
    if [[ -e $guard_dir/expired ]]; then
        echo "call_guard: too late to start $1 (the call's deadline has passed)" >&2
        return 143
    fi
    "$@" &
    pid=$!
    echo "$pid" >"$guard_dir/$pid.pid"
    wait "$pid" || rc=$?
    rm -f "$guard_dir/$pid.pid"
    return $rc
}

_guard_signal() {  # _guard_signal SIG: send SIG (0: only test) to every guarded command; false when none is running
    local file found=1
    for file in "$guard_dir"/*.pid; do
        [[ -e $file ]] || continue
        kill -"$1" "$(<"$file")" 2>/dev/null && found=0
    done
    return $found
}

_guard_watch() {
    local waited=0
    while (( $(date +%s) < guard_deadline )); do sleep 1; done  # short sleeps: none outlives the script by more than 1 s
    touch "$guard_dir/expired"
    if _guard_signal TERM; then
        echo "call_guard: $(( guard_deadline - started )) s into the call; sent SIGTERM to the runs still going" >&2
    fi
    while (( waited < GRACE_SECONDS )) && _guard_signal 0; do
        sleep 1
        waited=$(( waited + 1 ))
    done
    if _guard_signal KILL; then
        echo "call_guard: sent SIGKILL to the runs still going $GRACE_SECONDS s after SIGTERM" >&2
    fi
    return 0
}

_guard_end() {
    kill "$guard_pid" 2>/dev/null || true
    rm -rf "$guard_dir"
}
