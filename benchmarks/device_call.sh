#!/usr/bin/env bash
# One device call that shares the GPU between the resumable jobs of issues 12-15, so that a
# session's 30 minutes go to as many runs as the GPU can carry at once:
#
#   COST=1 bash benchmarks/device_call.sh     # first: the merge ablation's cost rows, alone on the GPU
#   bash benchmarks/device_call.sh            # then, side by side: the sCIFAR-10 leaderboard runs
#                                             # (real_runs.sh), the ListOps groups (lra_learn.sh) and,
#                                             # with KERNEL_TESTS=1, the fused-kernel tests on CUDA
#   RETURN_STATE=1 bash benchmarks/device_call.sh   # the session's last call: the ListOps run folders come back too
#
# State stays on the (warm) machine between calls, in the git-ignored runs/: runs/lb (a copy of
# benchmarks/results/scifar10_partial_h200 made by the first call that lacks it) and
# runs/lra_state. Every call returns the leaderboard folders (tars under 15 MiB: untar them into
# benchmarks/results/scifar10_partial_h200; the logs and the ListOps curves ride along); with
# RETURN_STATE=1 also the ListOps run folders (untar into runs/lra_state to resume next session).
# A fresh machine, where runs/lb is missing, starts again from the committed folders, so untar
# and commit the leaderboard folders before a call on a cold machine.
#
# Environment: OUT (required: what comes back), COST (0), COST_ROWS
# (vconv,t128v,transformer,auto1,ecp,perceiver_ar), COST_SECONDS (250: a cap; rows done are kept),
# CALL_SECONDS (570: everything packed by then), LB_NAMES (real_runs.sh's NAMES; empty: none),
# LISTOPS ("levers:0 levers:0:noconv": VARIANT:SEED[:TAG] groups of lra_learn.sh listops; TAG
# noconv = MAELRE alone with value_conv off, the ablation's ListOps row), KERNEL_TESTS (0),
# RETURN_STATE (0), PYTHON (python3).
set -uo pipefail
cd "$(dirname "$0")/.."
started=$(date +%s)
: "${OUT:?set OUT to the folder that comes back}"
PYTHON=${PYTHON:-python3}
CALL_SECONDS=${CALL_SECONDS:-570}
mkdir -p "$OUT" runs/logs runs/lra_out
export PYTHONPATH=.${PYTHONPATH:+:$PYTHONPATH} PYTHONUNBUFFERED=1
left() { echo $(( CALL_SECONDS - ($(date +%s) - started) )); }

if [[ ${COST:-0} == 1 ]]; then  # alone: nothing else has started yet
    timeout "${COST_SECONDS:-250}" "$PYTHON" benchmarks/merge_ablation_cost.py --repeats 5 \
        --rows "${COST_ROWS:-vconv,t128v,transformer,auto1,ecp,perceiver_ar}" \
        --out "$OUT/merge_ablation_cost_h200_round4.json" >runs/logs/cost.log 2>&1
    echo "cost: exit $? after $(( $(date +%s) - started )) s"
fi

[[ -d runs/lb ]] || cp -r benchmarks/results/scifar10_partial_h200 runs/lb
pids=()
if [[ -n ${LB_NAMES-maelre maelre_noconv transformer transformer_rope ecp perceiver_ar} ]]; then
    CALL_SECONDS=$(( $(left) - 30 )) ROOT=runs/lb MINUTES=10 NAMES="${LB_NAMES-maelre maelre_noconv transformer transformer_rope ecp perceiver_ar}" \
        bash benchmarks/real_runs.sh scifar10 >runs/logs/leaderboard.log 2>&1 &
    pids+=($!)
fi
if [[ ${KERNEL_TESTS:-0} == 1 ]]; then
    timeout $(( $(left) - 60 )) bash benchmarks/gpu_kernels.sh tests >runs/logs/kernel_tests.log 2>&1 &
    pids+=($!)
fi
if [[ -n ${LISTOPS-levers:0 levers:0:noconv} ]]; then
    "$PYTHON" benchmarks/lra_learn.py listops /tmp/listops >runs/logs/listops_data.log 2>&1  # once, before the groups share it
    for group in ${LISTOPS-levers:0 levers:0:noconv}; do
        IFS=: read -r variant seed tag <<<"$group"
        extra=()
        [[ $tag == noconv ]] && extra=(BACKBONES=maelre SET=model.backbone_config.maelre.value_conv=null)
        env "${extra[@]}" TAG="$tag" OUT=runs/lra_out CALL_SECONDS=$(( $(left) - 30 )) MINUTES=10 \
            bash benchmarks/lra_learn.sh listops "$variant" "$seed" >"runs/logs/listops_${variant}_s${seed}${tag:+_$tag}.log" 2>&1 &
        pids+=($!)
    done
fi
for pid in "${pids[@]}"; do wait "$pid"; done

# a call returns at most 8 files: the cost JSON, the leaderboard tars (with the logs and the
# ListOps curves) and, in the last call, the ListOps run folders (group/backbone)
"$PYTHON" benchmarks/lra_learn.py pack "$OUT/leaderboard" runs/lb/*/ runs/logs runs/lra_out/*.json
if [[ ${RETURN_STATE:-0} == 1 ]]; then
    "$PYTHON" benchmarks/lra_learn.py pack "$OUT/lra_state" runs/lra_state/*/*/ --base runs/lra_state
fi
tail -n 12 runs/logs/*.log
echo "device_call.sh: done after $(( $(date +%s) - started )) s"
