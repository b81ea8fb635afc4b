#!/usr/bin/env bash
# Diagnostic runs beside the leaderboard (on the GPU machine). Each writes one results JSON
# per run into $OUT and leaves benchmarks/results/leaderboard.json alone; the runs of a probe
# train at once, each in its own process (logs in runs/).
#
#   bash benchmarks/probes.sh listops-ablation    # which part of MAELRE fails on ListOps?
#   bash benchmarks/probes.sh pathfinder-long     # does Pathfinder-32 leave chance with 2x the budget?
#
# listops-ablation: the leaderboard's ListOps budget (gpu_budgets.sh), one change each;
# VARIANTS picks some (default: all four):
#   exact     switch_threshold=4096: exact attention in every block, merging kept
#   nomerge   merge_fraction=0: linear attention in every block, no merging
#   mixed     switch_threshold=1024, merge_fraction=0.5: linear attention only while more than
#             1,024 tokens remain (the first block of long batches), exact attention after
#   favor     feature_map=favor: FAVOR+ random features (softmax kernel) instead of elu+1
# pathfinder-long: maelre and ecp (the one backbone whose validation accuracy moved within
# the leaderboard's 3,000 steps), 6,000 steps, otherwise the leaderboard's Pathfinder settings.
set -euo pipefail
cd "$(dirname "$0")/.."
probe=${1:?usage: bash benchmarks/probes.sh listops-ablation|pathfinder-long}
OUT=${OUT:-benchmarks/results/gpu_out}
PYTHON=${PYTHON:-python3}
mkdir -p "$OUT" runs
export PYTHONPATH=.${PYTHONPATH:+:$PYTHONPATH} PYTHONUNBUFFERED=1
source benchmarks/gpu_budgets.sh

start() {  # start NAME ARGS...: one single-row sweep in the background
    local name=$1
    shift
    "$PYTHON" -m maelre.bench.leaderboard "$@" --run-root "runs/$name" --out "$OUT/$name.json" --table "runs/$name.md" >"runs/$name.log" 2>&1 &
}

case $probe in
    listops-ablation)
        declare -A variant=(
            [exact]="model.backbone_config.maelre.switch_threshold=4096"
            [nomerge]="model.backbone_config.maelre.merge_fraction=0.0"
            [mixed]="model.backbone_config.maelre={merge_fraction: 0.5, switch_threshold: 1024}"
            [favor]="model.backbone_config.maelre.feature_map=favor"
        )
        for name in ${VARIANTS:-exact nomerge mixed favor}; do
            [[ -n ${variant[$name]:-} ]] || { echo "unknown variant '$name'; use exact, nomerge, mixed or favor" >&2; exit 2; }
            start "listops_maelre_$name" "${listops[@]}" --backbones maelre --set "${variant[$name]}"
        done
        ;;
    pathfinder-long)
        for backbone in maelre ecp; do
            start "pathfinder_probe_$backbone" --tasks pathfinder --backbones "$backbone" --budget-steps 6000 --max-minutes 6 \
                --set data.dataset.n_train=20000 --set data.dataset.n_val=500 --set data.dataset.n_test=2000
        done
        ;;
    *)
        echo "benchmarks/probes.sh: unknown probe '$probe'; use listops-ablation or pathfinder-long" >&2
        exit 2
        ;;
esac
wait
