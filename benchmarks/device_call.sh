#!/usr/bin/env bash
# One device call that shares the GPU between the resumable runs of issues 12-15, so that a
# session's 30 minutes go to as many runs as the GPU carries at once:
#
#   COST=1 bash benchmarks/device_call.sh     # first: the merge ablation's cost rows, alone on the GPU
#   LB="scifar10 text:maelre,transformer" LRA="listops_sky:levers:0 pathfinder:levers:0" \
#       bash benchmarks/device_call.sh        # then, side by side: real-data leaderboard runs
#                                             # (real_runs.sh), LRA groups (lra_learn.sh) and, with
#                                             # KERNEL_TESTS=1, the fused-kernel tests on CUDA
#   RETURN_STATE=1 bash benchmarks/device_call.sh   # a session's last call: the LRA run folders come back too
#
# State stays on the (warm) machine between calls, in the git-ignored runs/: runs/lb/TASK (a copy
# of the committed benchmarks/results/TASK_partial_h200, made by the first call that lacks it)
# and runs/lra_state. Every call returns the leaderboard folders, the logs and the LRA curves in
# tars under 15 MiB (members lb/TASK/NAME, logs/, lra_out/GROUP.json: untar, then copy
# lb/TASK/* into benchmarks/results/TASK_partial_h200/); with RETURN_STATE=1 also the LRA run
# folders (GROUP/BACKBONE: untar into runs/lra_state to resume in a later session). A fresh
# machine, where runs/lb is missing, starts again from the committed folders, so commit the
# leaderboard folders before a call on a cold machine.
#
# Data: scifar10 and image read .carry/data/scifar10_gray.npz, text .carry/data/imdb_bytes.npz
# (benchmarks/make_compact_data.py). Both with the tree are over the 64 MiB a call carries, so
# carry one per call: a file carried earlier stays on a warm machine.
#
# Environment: OUT (required: what comes back); COST (0), COST_ROWS
# (vconv,t128v,transformer,auto1,ecp,perceiver_ar), COST_SECONDS (250: a cap; cases done are kept);
# LB ("scifar10": TASK[:NAME,NAME...] items for real_runs.sh, no names = all of its runs; empty: none);
# LRA ("": TASK:VARIANT:SEED[:TAG] groups of lra_learn.sh; TAG noconv = MAELRE alone with
# value_conv off, the merge ablation's row on that task); KERNEL_TESTS (0); RETURN_STATE (0);
# CALL_SECONDS (570: everything packed by then); PYTHON (python3); LISTOPS_ROOT, LISTOPS_EXAMPLES,
# PF_ROOT, PF_IMAGES, STATE, SET as lra_learn.sh reads them (a CPU smoke test: small data in another root).
set -uo pipefail
cd "$(dirname "$0")/.."
started=$(date +%s)
: "${OUT:?set OUT to the folder that comes back}"
PYTHON=${PYTHON:-python3}
CALL_SECONDS=${CALL_SECONDS:-570}
mkdir -p "$OUT" runs/lb runs/logs runs/lra_out
export PYTHONPATH=.${PYTHONPATH:+:$PYTHONPATH} PYTHONUNBUFFERED=1
left() { echo $(( CALL_SECONDS - ($(date +%s) - started) )); }

if [[ ${COST:-0} == 1 ]]; then  # alone: nothing else has started yet
    timeout "${COST_SECONDS:-250}" "$PYTHON" benchmarks/merge_ablation_cost.py --repeats 5 \
        --rows "${COST_ROWS:-vconv,t128v,transformer,auto1,ecp,perceiver_ar}" \
        --out "$OUT/merge_ablation_cost_h200.json" >runs/logs/cost.log 2>&1
    echo "cost: exit $? after $(( $(date +%s) - started )) s"
fi

pids=()
for item in ${LB-scifar10}; do
    IFS=: read -r task names <<<"$item"
    [[ -d runs/lb/$task ]] || { mkdir -p "runs/lb/$task"; cp -r "benchmarks/results/${task}_partial_h200/." "runs/lb/$task/" 2>/dev/null; }
    vars=(CALL_SECONDS=$(( $(left) - 30 )) ROOT=runs/lb/$task MINUTES=10)
    [[ -n $names ]] && vars+=("NAMES=${names//,/ }")
    env "${vars[@]}" bash benchmarks/real_runs.sh "$task" >"runs/logs/lb_$task.log" 2>&1 &
    pids+=($!)
done
if [[ ${KERNEL_TESTS:-0} == 1 ]]; then
    timeout $(( $(left) - 60 )) bash benchmarks/gpu_kernels.sh tests >runs/logs/kernel_tests.log 2>&1 &
    pids+=($!)
fi
# the data every group of a task reads, made once before the groups start (they would race)
for task in $(printf '%s\n' ${LRA:-} | cut -d: -f1 | sort -u); do
    case $task in
        listops|listops_sky) "$PYTHON" benchmarks/lra_learn.py listops "${LISTOPS_ROOT:-/tmp/listops}" --n "${LISTOPS_EXAMPLES:-100000}" >>runs/logs/lra_data.log 2>&1 ;;
        pathfinder) "$PYTHON" benchmarks/lra_learn.py data "${PF_ROOT:-/tmp/pathfinder32}" curv_contour_length_14 --n "${PF_IMAGES:-200000}" >>runs/logs/lra_data.log 2>&1 ;;
    esac
done
for group in ${LRA:-}; do
    IFS=: read -r task variant seed tag <<<"$group"
    extra=()
    [[ $tag == noconv ]] && extra=(BACKBONES=maelre "SET=${SET:-} model.backbone_config.maelre.value_conv=null")
    env "${extra[@]}" TAG="$tag" OUT=runs/lra_out CALL_SECONDS=$(( $(left) - 30 )) MINUTES=10 \
        bash benchmarks/lra_learn.sh "$task" "$variant" "$seed" >"runs/logs/${task}_${variant}_s${seed}${tag:+_$tag}.log" 2>&1 &
    pids+=($!)
done
for pid in "${pids[@]}"; do wait "$pid"; done

# a call returns at most 8 files: the cost JSON, the leaderboard tars (with the logs and the
# LRA curves) and, when asked, the LRA run folders (GROUP/BACKBONE)
shopt -s nullglob
"$PYTHON" benchmarks/lra_learn.py pack "$OUT/leaderboard" runs/lb/*/*/ runs/logs runs/lra_out/*.json --base runs
if [[ ${RETURN_STATE:-0} == 1 ]]; then
    "$PYTHON" benchmarks/lra_learn.py pack "$OUT/lra_state" "${STATE:-runs/lra_state}"/*/*/ --base "${STATE:-runs/lra_state}"
fi
tail -n 12 runs/logs/*.log
echo "device_call.sh: done after $(( $(date +%s) - started )) s"
