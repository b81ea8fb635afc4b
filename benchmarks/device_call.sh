#!/usr/bin/env bash
# One device call that shares the GPU between the resumable runs of issues 12-15, so that a
# session's 30 minutes go to as many runs as the GPU carries at once:
#
#   COST=1 bash benchmarks/device_call.sh     # first: the merge ablation's cost rows, alone on the GPU
#   LB="scifar10 text:maelre,transformer" LRA="listops_sky:levers:0 pathfinder:levers:0" \
#       bash benchmarks/device_call.sh        # then, side by side: real-data leaderboard runs
#                                             # (real_runs.sh), LRA groups (lra_learn.sh) and, with
#                                             # KERNEL_TESTS=1, the fused-kernel tests on CUDA
#   RETURN_STATE=1 LB=... LRA=... bash benchmarks/device_call.sh   # a session's last training call:
#                                             # the LRA run folders are packed too
#   DRAIN=1 bash benchmarks/device_call.sh    # no training: collect what was carried in, return the
#                                             # next batch of the outbox (a minute or less)
#
# State stays on the (warm) machine between calls, in the git-ignored runs/: runs/lb/TASK/NAME
# (copied from the committed benchmarks/results/TASK_partial_h200/NAME by the first call that
# lacks it) and runs/lra_state/GROUP/BACKBONE. Run folders can be larger than a returned file
# (16 MiB; LRA Text's are ~67 MB), so what comes back goes through an outbox
# (benchmarks/device_xfer.py, its docstring has the formats):
#   1. at its start a call collects the sets carried in .carry/inbox_*/ (made here by
#      `python benchmarks/device_xfer.py carry ...`) into runs/inbox, checks their sha256, and
#      unpacks every complete set into runs/ (into a temporary folder, then renamed into place); a
#      set the machine already has as new (runs/xfer_ledger.json) is skipped. The outbox's index
#      learns what each placed folder holds, so it goes back only once a call changes it. While runs/inbox
#      still holds an incomplete or corrupt set, nothing trains (its run would start afresh):
#      carry the rest with DRAIN=1 calls first (INBOX_PARTIAL_OK=1 trains anyway);
#   2. after the runs it packs into runs/outbox what changed since it was last packed (a folder copied from the
#      committed tree, or carried in, counts as packed as it was placed: it comes back once a run changes it): the logs
#      and LRA curves (evidence: runs/logs, runs/lra_out/GROUP.json; not in a DRAIN=1 call, which
#      prints its inbox report instead), the leaderboard run folders
#      (lb/TASK/NAME) and, with RETURN_STATE=1 or while older ones still wait in the outbox, the
#      LRA run folders (lra_state/GROUP/BACKBONE). Folders under 15 MiB share tars; a bigger one is
#      cut into 15 MiB parts with a manifest (sizes and sha256). A new copy of a folder supersedes
#      the one waiting;
#   3. it moves at most 8 files and 62 MiB into $OUT, what $OUT holds already counted: the
#      evidence first, then whole tars, then (only with RETURN_STATE=1 or DRAIN=1: a training
#      call's parts would be stale by the next call) the parts of split folders. It prints what
#      is left: "about K more calls" of DRAIN=1.
# Here, after each call: `python benchmarks/device_xfer.py unpack FILES_AT` puts complete sets in
# place (lb/TASK/NAME into benchmarks/results/TASK_partial_h200/NAME, lra_state/... into
# benchmarks/results/lra_state_h200/..., the logs and curves into runs/returned/SET/) and keeps parts until their
# set is complete. A session, step by step:
#   a. a fresh machine lacks the big folders: `python benchmarks/device_xfer.py carry
#      benchmarks/results/text_partial_h200/*/ benchmarks/results/lra_state_h200/*/*/ --also-first .carry/data/imdb_bytes.npz`
#      prints one carry list per call (.carry/inbox_1, .carry/inbox_2, ...: each under 64 MiB with
#      the tree); make every call but the last DRAIN=1 (nothing trains while a set is incomplete).
#      Do not carry benchmarks/results/lra_state_h200 itself: a carried path replaces the machine's copy;
#   b. training calls (LB=..., LRA=...), `unpack` after each (logs, curves, small folders);
#   c. the last training call with RETURN_STATE=1, then DRAIN=1 calls until the output says
#      "outbox: empty", `unpack` after each.
#   The machine goes back after 30 s without a call, and everything on it that did not come back
#   is lost (session 12 lost a whole training call's steps of four Text runs and Pathfinder that
#   way, and the next call started a bare machine). So: calls back to back, and RETURN_STATE=1 on
#   every training call, not only the last: its parts may be superseded by the next call, but
#   they are what survives if there is no next call on this machine.
# Small committed folders (sCIFAR-10's) need no carrying: a machine lacking runs/lb/TASK/NAME
# copies benchmarks/results/TASK_partial_h200/NAME (commit them before a call on a cold machine).
#
# The tree travels with every call: committed run state under benchmarks/results/lra_state_h200 (session 15:
# Pathfinder, 4 x 10.6 MB) makes it ~60 MB, which leaves no room for a data file. For a call that carries one
# and does not resume those runs: `mv benchmarks/results/lra_state_h200 runs/keep/` before, back after (a
# tracked folder missing from the work tree does not travel; `git status` shows it deleted meanwhile).
# Before each call, `python benchmarks/device_xfer.py size PATHS_TO_CARRY` says whether the tree and the carried paths
# fit (exit 2 and the biggest travelling folders when not): a call refused for size costs the warm machine (session 17).
# Data: scifar10 and image read .carry/data/scifar10_gray.npz, text .carry/data/imdb_bytes.npz
# (benchmarks/make_compact_data.py). Both with the tree are over the 64 MiB a call carries, so
# carry one per call: a file carried earlier stays on a warm machine.
#
# Environment: OUT (required: what comes back); ALONE ("": TASK[:NAME,NAME...] items of
# benchmarks/alone_cost.py, each run timed alone first, DRAIN=1 calls included; OUT gets
# alone_cost_TASK_h200.json), ALONE_STEPS (200), ALONE_STEADY (50: --steady-after; LRA Text: 300 of 600 steps), ALONE_SECONDS (240: --seconds, one run's
# limit; compiled Text MAELRE compiles four length buckets, give it 480), ALONE_TAG and ALONE_SET (alone_cost.py's --tag and --set: a variant); SDPA (0: 1 times benchmarks/sdpa_backends.py alone, DRAIN=1
# calls included, needs .carry/data/imdb_bytes.npz; OUT gets sdpa_backends_text_h200.json); PAIRED ("": N,N,... for
# benchmarks/paired_timing.py, eager then CUDA graphs, alone; OUT gets paired_h200[_cudagraph].json and .md, with MAELRE_PLAN_GRAPHS
# =1 paired_h200_plangraphs*, =merge paired_h200_mergegraphs*); CAB ("": RECIPE:BACKBONE,...
# items of benchmarks/compile_ab.py, eager against reduce-overhead, alone), CAB_STEPS (1000); COST (0), COST_ROWS
# (vconv,t128v,transformer,auto1,ecp,perceiver_ar), COST_SECONDS (250: a cap; cases done are kept);
# LB ("scifar10": TASK[:NAME,NAME...] items for real_runs.sh, no names = all of its runs; empty: none);
# LRA ("": TASK:VARIANT:SEED[:TAG[:BACKBONE,...]] groups of lra_learn.sh, the backbones of one group (default: BACKBONES,
# else lra_learn.sh's four; TASK listops, listops_sky, pathfinder or pathfinder_sky, whose data each call makes
# once before the groups start: pathfinder and pathfinder_sky read the same images); a TAG ending in noconv (noconv,
# sky2noconv) = MAELRE alone with value_conv off, the merge ablation's row on that task; SET_TAG (e.g. SET_skynohn="model.head_norm=false"):
# settings for the groups of that TAG only, after SET, so one call can run a variant beside resumed runs whose settings
# must not change); KERNEL_TESTS (0: 1 runs the kernel tests beside training);
# KERNEL_STEPS ("": gpu_kernels.sh steps run alone in order, e.g. "tests plan eager graph"); RETURN_STATE (0);
# DRAIN (0); CHECK (0: 1 validates the LRA groups' settings here and exits, nothing else runs); INBOX_PARTIAL_OK (0); INBOX_FORCE (0: 1 replaces the machine's folders even where
# they are newer than the carried set); PART_MIB (15: the largest returned file, less tar
# headers); RETURN_FILES (8), RETURN_MIB (62);
# CALL_SECONDS (570: everything packed by then); PYTHON (python3); LISTOPS_ROOT, LISTOPS_EXAMPLES,
# PF_ROOT, PF_IMAGES, STATE, SET as lra_learn.sh reads them (a CPU smoke test: small data in another root).
# A smoke test on CPU of the way back (no training; tests/test_device_xfer.py runs it in a copy):
#   mkdir -p /tmp/xo && DRAIN=1 RETURN_STATE=1 OUT=/tmp/xo bash benchmarks/device_call.sh
set -uo pipefail
cd "$(dirname "$0")/.."
started=$(date +%s)
PYTHON=${PYTHON:-python3}

group_env() {  # group_env TASK:VARIANT:SEED[:TAG[:BACKBONE,...]]: sets task variant seed tag, and extra (lra_learn.sh's env)
    local names own sets
    IFS=: read -r task variant seed tag names <<<"$1"
    own=SET_$tag  # the group's own settings beside the call's SET: SET_skynohn="model.head_norm=false"
    [[ $tag =~ ^[A-Za-z0-9_]+$ ]] || own=SET_
    sets="${SET:-}${!own:+ ${!own}}"
    extra=("SET=$sets")
    [[ -n $names ]] && extra+=(BACKBONES="$names")
    [[ $tag == *noconv ]] && extra=(BACKBONES=maelre "SET=$sets model.backbone_config.maelre.value_conv=null")
    return 0
}

# CHECK=1, here before a call: every LRA group's settings validated as the call would pass them (lra_learn.sh CHECK=1:
# `maelre check`, no data, no training, nothing written). Session 25 lost a run slot to a setting maelre fit refused.
if [[ ${CHECK:-0} == 1 ]]; then
    export PYTHONPATH=.${PYTHONPATH:+:$PYTHONPATH}
    rc=0
    for group in ${LRA:-}; do
        group_env "$group"
        env "${extra[@]}" TAG="$tag" CHECK=1 PYTHON="$PYTHON" bash benchmarks/lra_learn.sh "$task" "$variant" "$seed" || rc=1
    done
    (( rc == 0 )) && echo "device_call.sh: the settings of every LRA group validate" || echo "device_call.sh: fix the groups above before the call" >&2
    exit $rc
fi
: "${OUT:?set OUT to the folder that comes back}"
CALL_SECONDS=${CALL_SECONDS:-570}
STATE=${STATE:-runs/lra_state}
stamp=$(date -u +%Y%m%dT%H%M%S)  # names this call's sets: the time their state was packed
mkdir -p "$OUT" runs/lb runs/logs runs/lra_out
export PYTHONPATH=.${PYTHONPATH:+:$PYTHONPATH} PYTHONUNBUFFERED=1
left() { echo $(( CALL_SECONDS - ($(date +%s) - started) )); }
xfer() { "$PYTHON" benchmarks/device_xfer.py "$@"; }

# the sets carried in, unpacked into runs/ before anything reads it
shopt -s nullglob
force=()
[[ ${INBOX_FORCE:-0} == 1 ]] && force=(--force)
xfer collect .carry/inbox_*/ --store runs/inbox --into runs --outbox runs/outbox "${force[@]}" 2>&1 | tee runs/logs/inbox.log
inbox_rc=${PIPESTATUS[0]}
train=1
[[ ${DRAIN:-0} == 1 ]] && train=0
if (( inbox_rc != 0 && train )) && [[ ${INBOX_PARTIAL_OK:-0} != 1 ]]; then
    echo "device_call.sh: runs/inbox holds an incomplete or corrupt set (above): nothing trains in this call;" \
         "carry the rest (or INBOX_PARTIAL_OK=1 to train anyway)"
    train=0
fi
if (( ! train )); then COST=0 LB="" LRA="" KERNEL_TESTS=0; fi

# alone on the GPU, before anything shares it (also in DRAIN=1 calls, whose GPU is otherwise idle):
# each ALONE item TASK:NAME,NAME... times those real_runs.sh runs one after the other
# (benchmarks/alone_cost.py); the rows gather in runs/alone/ over calls and come back whole
variant=()  # ALONE_TAG=compiled ALONE_SET="trainer.compile=reduce-overhead": a variant's rows, beside the eager ones
[[ -n ${ALONE_TAG:-} ]] && variant=(--tag "$ALONE_TAG")
for s in ${ALONE_SET:-}; do variant+=(--set "$s"); done
for item in ${ALONE:-}; do
    IFS=: read -r task names <<<"$item"
    timeout $(( $(left) - 90 )) "$PYTHON" benchmarks/alone_cost.py "$task" ${names:+--names "$names"} --steps "${ALONE_STEPS:-200}" --steady-after "${ALONE_STEADY:-50}" --seconds "${ALONE_SECONDS:-240}" \
        --root runs/alone --out "runs/alone/alone_cost_${task}_h200.json" "${variant[@]}" >>runs/logs/alone.log 2>&1
    echo "alone $item: exit $? after $(( $(date +%s) - started )) s"; tail -n 5 runs/logs/alone.log
    cp "runs/alone/alone_cost_${task}_h200.json" "$OUT/" 2>/dev/null
done

if [[ ${SDPA:-0} == 1 ]]; then  # alone too: exact attention per SDPA backend at LRA Text's shape
    timeout 180 "$PYTHON" benchmarks/sdpa_backends.py --data .carry/data/imdb_bytes.npz --out "$OUT/sdpa_backends_text_h200.json" \
        >runs/logs/sdpa.log 2>&1
    echo "sdpa: exit $? after $(( $(date +%s) - started )) s"; tail -n 16 runs/logs/sdpa.log
fi

# issue 15's ratios from alternating rounds (benchmarks/paired_timing.py), alone: PAIRED="4K,16K,64K" times
# MAELRE against its twin and full attention eagerly, then with CUDA graphs; OUT gets paired_h200*.json/.md
if [[ -n ${PAIRED:-} ]]; then
    for graphs in "" --cuda-graph; do
        pg=""  # merge plans (=1) or whole merges (=merge) from CUDA graphs (maelre.layers.plan_graphs)
        [[ ${MAELRE_PLAN_GRAPHS:-0} == 1 ]] && pg=_plangraphs
        [[ ${MAELRE_PLAN_GRAPHS:-0} == merge ]] && pg=_mergegraphs
        name=paired_h200$pg${graphs:+_cudagraph}
        timeout $(( $(left) - 90 )) "$PYTHON" benchmarks/paired_timing.py --seq-lens "$PAIRED" $graphs --out "$OUT/$name.json" \
            >"runs/logs/$name.log" 2>&1
        echo "paired${graphs:+ (graphs)}: exit $? after $(( $(date +%s) - started )) s"; grep '^|' "runs/logs/$name.log" | tail -n 6
    done
fi

# issue 15's kernel steps, alone and in order (benchmarks/gpu_kernels.sh): KERNEL_STEPS="tests plan eager graph" runs the
# CUDA kernel tests, then the merge-plan timing and the efficiency benchmark eager and as CUDA graphs; OUT gets their
# JSON and tables (gpu_kernels.sh's names), runs/logs/kernel_STEP.log the output. A failing step does not stop the next.
for step in ${KERNEL_STEPS:-}; do
    OUT="$OUT" PYTHON="$PYTHON" timeout $(( $(left) - 90 )) bash benchmarks/gpu_kernels.sh "$step" >"runs/logs/kernel_$step.log" 2>&1
    echo "kernels $step: exit $? after $(( $(date +%s) - started )) s"; grep -E '^(PASS|MISS|  +(PASS|MISS))|passed|failed|^\| ' "runs/logs/kernel_$step.log" | tail -n 12
done

# eager against compiled training of a recipe per backbone (benchmarks/compile_ab.py), alone on the GPU:
# CAB="recipes/scifar10.yaml:ecp,perceiver_ar" trains each named backbone CAB_STEPS (1000) steps eager, then
# compiled with CUDA graphs, from the same seed; OUT gets compile_ab_RECIPE_BACKBONE_h200.json
for item in ${CAB:-}; do
    IFS=: read -r recipe names <<<"$item"
    for name in ${names//,/ }; do
        label="$(basename "$recipe" .yaml)_$name"
        timeout $(( $(left) - 90 )) "$PYTHON" benchmarks/compile_ab.py "$recipe" --steps "${CAB_STEPS:-1000}" --modes eager,reduce-overhead \
            --mode-seconds 200 --set "model.backbone=$name" --out "runs/cab/$label" >"runs/logs/cab_$label.log" 2>&1
        echo "compile_ab $label: exit $? after $(( $(date +%s) - started )) s"; grep '^|' "runs/logs/cab_$label.log" | tail -n 2
        cp "runs/cab/$label/compile_ab.json" "$OUT/compile_ab_${label}_h200.json" 2>/dev/null
    done
done

if [[ ${COST:-0} == 1 ]]; then  # alone: nothing else has started yet
    timeout "${COST_SECONDS:-250}" "$PYTHON" benchmarks/merge_ablation_cost.py --repeats 5 \
        --rows "${COST_ROWS:-vconv,t128v,transformer,auto1,ecp,perceiver_ar}" \
        --out "$OUT/merge_ablation_cost_h200.json" >runs/logs/cost.log 2>&1
    echo "cost: exit $? after $(( $(date +%s) - started )) s"
fi

pids=()
copied=()  # folders copied from the committed tree: the outbox returns them only once a run changes them
for item in ${LB-scifar10}; do
    IFS=: read -r task names <<<"$item"
    mkdir -p "runs/lb/$task"
    for dir in benchmarks/results/"${task}"_partial_h200/*/; do  # committed runs the machine lacks
        name=$(basename "$dir")
        [[ -d runs/lb/$task/$name ]] || { cp -r "$dir" "runs/lb/$task/$name" && copied+=("runs/lb/$task/$name"); }
        if [[ -f runs/lb/$task/$name/recipe.yaml && ! -d runs/lb/$task/$name/checkpoints ]]; then
            echo "device_call.sh: runs/lb/$task/$name has no checkpoints (kept out of git: too big); carry it (device_xfer.py carry)" >&2
        fi
    done
    (( ${#copied[@]} )) && xfer outbox note runs/outbox "${copied[@]}" --base runs
    copied=()
    vars=(CALL_SECONDS=$(( $(left) - 30 )) ROOT=runs/lb/$task MINUTES=10)
    [[ -n $names ]] && vars+=("NAMES=${names//,/ }")
    env "${vars[@]}" bash benchmarks/real_runs.sh "$task" >"runs/logs/lb_$task.log" 2>&1 &
    pids+=($!)
done
if [[ ${KERNEL_TESTS:-0} == 1 ]]; then
    timeout $(( $(left) - 60 )) bash benchmarks/gpu_kernels.sh tests >runs/logs/kernel_tests.log 2>&1 &
    pids+=($!)
fi
# committed LRA run folders the machine lacks (unpack puts returned ones in benchmarks/results/lra_state_h200:
# only what git keeps reaches the next session's checkout); a folder the machine has, or the inbox placed, stays
has_state() { compgen -G "$1/fit/checkpoints/step-*/training_state.pt" >/dev/null; }  # RUN_FOLDER can resume
for dir in benchmarks/results/lra_state_h200/*/*/; do
    rel=${dir#benchmarks/results/lra_state_h200/}
    rel=${rel%/}
    # session 16: a cold machine held these folders without checkpoints, so every run refused to resume;
    # a machine copy that cannot resume gives way to the tree's copy that can
    if [[ -d $STATE/$rel ]]; then
        { has_state "$STATE/$rel" || ! has_state "$dir"; } && continue
        echo "device_call.sh: $STATE/$rel has no checkpoint to resume from; replaced by the tree's copy" >&2
        rm -rf "${STATE:?}/$rel"
    fi
    mkdir -p "$STATE/$(dirname "$rel")" && cp -r "$dir" "$STATE/$rel" && copied+=("$STATE/$rel")
    [[ -d $STATE/$rel/fit/checkpoints ]] || echo "device_call.sh: $STATE/$rel has no checkpoints (kept out of git: too big); carry it (device_xfer.py carry)" >&2
done
(( ${#copied[@]} )) && xfer outbox note runs/outbox "${copied[@]}" --base "$(dirname "$STATE")"
# the data every group of a task reads, made once before the groups start (they would race)
for task in $(printf '%s\n' ${LRA:-} | cut -d: -f1 | sort -u); do
    case $task in
        listops|listops_sky) "$PYTHON" benchmarks/lra_learn.py listops "${LISTOPS_ROOT:-/tmp/listops}" --n "${LISTOPS_EXAMPLES:-100000}" >>runs/logs/lra_data.log 2>&1 ;;
        pathfinder|pathfinder_sky) "$PYTHON" benchmarks/lra_learn.py data "${PF_ROOT:-/tmp/pathfinder32}" curv_contour_length_14 --n "${PF_IMAGES:-200000}" >>runs/logs/lra_data.log 2>&1 ;;
    esac
done
for group in ${LRA:-}; do
    group_env "$group"
    env "${extra[@]}" TAG="$tag" PACK=0 STATE="$STATE" OUT=runs/lra_out CALL_SECONDS=$(( $(left) - 30 )) MINUTES=10 \
        bash benchmarks/lra_learn.sh "$task" "$variant" "$seed" >"runs/logs/${task}_${variant}_s${seed}${tag:+_$tag}.log" 2>&1 &
    pids+=($!)
done
for pid in "${pids[@]}"; do wait "$pid"; done

# the outbox: what changed since it was last packed, then the next batch into $OUT
# (at most 8 files, 16 MiB each, 64 MiB in all come back; the cost JSON already there counts)
state_base=$(dirname "$STATE")
part=(--stamp "$stamp" --limit-mib "${PART_MIB:-15}")
# what git keeps of each leaderboard run (all but its checkpoints) rides with the evidence: a run that
# finished in this call needs no DRAIN call for its checkpoints (LRA Text's are ~50 MB) to be recorded.
# `unpack` here puts it in runs/returned/SET/lb_evidence/TASK/NAME; copy a finished run's files from there
# into benchmarks/results/TASK_partial_h200/NAME when its whole folder does not come back. cp -a keeps
# times, so an unchanged run packs to the same bytes and is not sent again
for dir in runs/lb/*/*/; do
    rel=${dir#runs/lb/}
    mkdir -p "runs/lb_evidence/$rel"
    for f in "$dir"*; do [[ $(basename "$f") == checkpoints ]] || cp -a "$f" "runs/lb_evidence/$rel"; done
done
(( train )) && xfer outbox add runs/outbox evidence runs/logs runs/lra_out/*.json runs/lb_evidence --base runs --evidence "${part[@]}"
xfer outbox add runs/outbox lb runs/lb/*/*/ --base runs "${part[@]}"
refresh=(--refresh)
[[ ${RETURN_STATE:-0} == 1 ]] && refresh=()
xfer outbox add runs/outbox "$(basename "$STATE")" "$STATE"/*/*/ --base "$state_base" "${part[@]}" "${refresh[@]}"
whole=(--whole-only)
[[ ${RETURN_STATE:-0} == 1 || ${DRAIN:-0} == 1 ]] && whole=()
xfer outbox drain runs/outbox "$OUT" --files "${RETURN_FILES:-8}" --mib "${RETURN_MIB:-62}" "${whole[@]}"
(( train )) && tail -n 12 runs/logs/*.log
echo "device_call.sh: done after $(( $(date +%s) - started )) s"
