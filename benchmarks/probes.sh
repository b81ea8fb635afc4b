#!/usr/bin/env bash
# Diagnostic runs beside the leaderboard (on the GPU machine). Each writes one results JSON
# per run into $OUT and leaves benchmarks/results/leaderboard.json alone; the runs of a probe
# train at once, each in its own process (logs in runs/).
#
#   bash benchmarks/probes.sh ablation listops      # which MAELRE setting matters on ListOps?
#   bash benchmarks/probes.sh ablation pathfinder   # ... on Pathfinder-32 (standin: the sCIFAR stand-in)
#   bash benchmarks/probes.sh single TASK BACKBONE  # one backbone, the task's budget plus SET
#   bash benchmarks/probes.sh pathfinder-long       # does Pathfinder-32 leave chance with 2x the budget?
#
# ablation TASK: MAELRE with the task's leaderboard budget (gpu_budgets.sh), one change to the
# recipe each, into $OUT/TASK_maelre_VARIANT.json. VARIANTS picks some (default: all):
#   exact     switch_threshold=4096: exact attention in every block, merging kept
#   nomerge   merge_schedule=fraction, merge_fraction=0: approximate attention in every block, no merging
#   mixed     switch_threshold=1024, merge_schedule=fraction, merge_fraction=0.5: approximate attention only while more
#             than 1,024 tokens remain (the first block of long inputs), exact attention after
#   elu       feature_map=elu: the library's elu+1 linear attention
#   favor     feature_map=favor: FAVOR+ random features (softmax kernel)
# STEPS and MINUTES, when set, replace the budget's --budget-steps and --max-minutes; SET adds
# space-separated KEY=VALUE overrides to every variant, and TAG then names the outputs
# TASK_maelre_VARIANT_TAG (e.g. SET="data.batch_size=128 optimizer.lr=0.001" TAG=b128).
# single TASK BACKBONE: the same overrides (STEPS, MINUTES, SET, TAG) for any backbone, into
# $OUT/TASK_BACKBONE_TAG.json (e.g. SET=optimizer.lr=0.0001 TAG=lr1e-4: a lower learning rate).
# THREADS (default: cores / runs) caps each run's CPU threads, for probes beside other work.
# pathfinder-long: maelre and ecp (the one backbone whose validation accuracy moved within
# the leaderboard's 3,000 steps), 6,000 steps, otherwise the leaderboard's Pathfinder settings.
set -euo pipefail
cd "$(dirname "$0")/.."
probe=${1:?usage: bash benchmarks/probes.sh ablation TASK | single TASK BACKBONE | pathfinder-long}
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

threads() {  # threads N: export an even share of the CPU cores for N runs unless THREADS is set
    local share=$(( $(nproc) / $1 ))
    export OMP_NUM_THREADS=${THREADS:-$(( share > 0 ? share : 1 ))}
    export MKL_NUM_THREADS=$OMP_NUM_THREADS
}

overrides() {  # overrides TASK: the task's budget (gpu_budgets.sh) with STEPS, MINUTES and SET applied, into $override
    [[ $1 == listops || $1 == pathfinder || $1 == standin ]] || { echo "$probe: unknown task '$1'; use listops, pathfinder or standin" >&2; exit 2; }
    local -n budget=$1
    override=("${budget[@]}")
    [[ -n ${STEPS:-} ]] && override+=(--budget-steps "$STEPS")
    [[ -n ${MINUTES:-} ]] && override+=(--max-minutes "$MINUTES")
    for item in ${SET:-}; do override+=(--set "$item"); done
}

case $probe in
    ablation)
        task=${2:?usage: bash benchmarks/probes.sh ablation listops|pathfinder|standin}
        overrides "$task"
        m=model.backbone_config.maelre
        declare -A variant=(  # space-separated KEY=VALUE overrides of each variant
            [exact]="$m.switch_threshold=4096"
            [nomerge]="$m.merge_schedule=fraction $m.merge_fraction=0.0"
            [mixed]="$m.switch_threshold=1024 $m.merge_schedule=fraction $m.merge_fraction=0.5"
            [elu]="$m.feature_map=elu"
            [favor]="$m.feature_map=favor"
        )
        names=(${VARIANTS:-exact nomerge mixed elu favor})
        threads ${#names[@]}
        for name in "${names[@]}"; do
            [[ -n ${variant[$name]:-} ]] || { echo "unknown variant '$name'; use ${!variant[*]}" >&2; exit 2; }
            settings=()
            for item in ${variant[$name]}; do settings+=(--set "$item"); done
            start "${task}_maelre_$name${TAG:+_$TAG}" "${override[@]}" --backbones maelre "${settings[@]}"
        done
        ;;
    single)
        task=${2:?usage: bash benchmarks/probes.sh single TASK BACKBONE}
        backbone=${3:?usage: bash benchmarks/probes.sh single TASK BACKBONE}
        overrides "$task"
        threads 1
        start "${task}_${backbone}${TAG:+_$TAG}" "${override[@]}" --backbones "$backbone"
        ;;
    pathfinder-long)
        threads 2
        for backbone in maelre ecp; do
            start "pathfinder_probe_$backbone" --tasks pathfinder --backbones "$backbone" --budget-steps 6000 --max-minutes 6 \
                --set data.dataset.n_train=20000 --set data.dataset.n_val=500 --set data.dataset.n_test=2000
        done
        ;;
    *)
        echo "benchmarks/probes.sh: unknown probe '$probe'; use ablation, single or pathfinder-long" >&2
        exit 2
        ;;
esac
wait
