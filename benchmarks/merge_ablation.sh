#!/usr/bin/env bash
# MAELRE merge-plan ablation on real sCIFAR-10 in the ECP setting (3 blocks, dim 64, 4 heads,
# MLP 128), run on the GPU machine: every ROW x POS x SEED trains at once, each in its own
# process, at one fixed budget, into $OUT/scifar10_ROW_POS_sSEED.json (leaderboard rows).
#
#   bash benchmarks/merge_ablation.sh                 # all rows, both position kinds, seeds 0 1
#   ROWS="auto1 transformer" POS=rope SEEDS=0 EPOCHS=2 bash benchmarks/merge_ablation.sh   # a smoke run
#
# ROWS (default: auto1 auto2 raster fraction nomerge transformer; every row is defined in
# benchmarks/ablation_rows.py, which the cost benchmark and the report read too):
#   auto1        the auto plan, exact_blocks=1: merges after both sub-layers take 1,024 tokens to
#                D=64 by block 2, which runs exact attention (the paper's rule, N <= D)
#   auto2        exact_blocks=2 with switch_threshold=256: at D=64 two exact blocks cannot be
#                reached in 3 blocks (2 merges leave >= 256), so the threshold is relaxed to 4D
#   t128         auto1 with switch_threshold=128 (2D): gentler merging (1,024 -> 363 -> 128), exact
#                attention in block 2 at N = 128; breaks the paper's N <= D rule by a factor of 2
#   nystrom      auto1 with Nystrom attention (64 landmarks) instead of elu+1 linear attention in the
#                approximate blocks
#   vconv        auto1 with value_conv=5: a depthwise convolution over V (5 neighbours along the Hilbert
#                curve) added to the linear attention of the approximate blocks
#   t128v        t128 and vconv together: gentler merging and the local term in the linear blocks
#   raster       auto1 with grid_order=raster: merge windows along pixel rows (no 2-D neighbours)
#   fraction     the old default: 30% merged after each attention sub-layer, never reaching D
#   nomerge      no merging: linear attention in all 3 blocks
#   transformer  full attention, the baseline
# POS (default: "learned rope"): learned absolute positions in the adapter, or RoPE alone.
# LEVERS (default: base): training levers of ablation_rows.py's LEVERS crossed with every row, e.g.
#   ROWS="ecp transformer" POS=rope LEVERS="base lr2x warm10 wd01 nodrop noaug" (a run of lever L is
#   named scifar10_ROW-L_POS_sSEED; base keeps the plain name).
# EPOCHS (default 20), SEEDS (default "0 1"), MINUTES (per-run guard, default 8.5), SET (extra
# space-separated KEY=VALUE overrides for every run) and THREADS (CPU threads per run).
# Then: python benchmarks/merge_ablation_report.py $OUT
set -euo pipefail
cd "$(dirname "$0")/.."
OUT=${OUT:-benchmarks/results/merge_ablation}
PYTHON=${PYTHON:-python3}
mkdir -p "$OUT" runs
export PYTHONPATH=.${PYTHONPATH:+:$PYTHONPATH} PYTHONUNBUFFERED=1
rows=(${ROWS:-auto1 auto2 raster fraction nomerge transformer})
kinds=(${POS:-learned rope})
levers=(${LEVERS:-base})
seeds=(${SEEDS:-0 1})
runs=$(( ${#rows[@]} * ${#kinds[@]} * ${#levers[@]} * ${#seeds[@]} ))
share=$(( $(nproc) / runs ))
export OMP_NUM_THREADS=${THREADS:-$(( share > 0 ? share : 1 ))} MKL_NUM_THREADS=${THREADS:-$(( share > 0 ? share : 1 ))}
declare -A items=()
for r in "${rows[@]}"; do  # every row, position kind and lever checked before any run starts
    for p in "${kinds[@]}"; do
        for l in "${levers[@]}"; do
            items[$r/$p/$l]=$("$PYTHON" benchmarks/ablation_rows.py overrides "$r" "$p" "$l") || exit 2
        done
    done
done
for r in "${rows[@]}"; do
    for p in "${kinds[@]}"; do
        for l in "${levers[@]}"; do
            label=$("$PYTHON" benchmarks/ablation_rows.py label "$r" "$l")
            for s in "${seeds[@]}"; do
                name="scifar10_${label}_${p}_s$s"
                args=(--tasks scifar10 --max-minutes "${MINUTES:-8.5}" --set "trainer.max_epochs=${EPOCHS:-20}" --set "trainer.seed=$s")
                backbone=""
                for item in ${items[$r/$p/$l]} ${SET:-}; do
                    if [[ $item == model.backbone=* ]]; then backbone=${item#model.backbone=}; else args+=(--set "$item"); fi
                done
                "$PYTHON" -m maelre.bench.leaderboard "${args[@]}" --backbones "$backbone" --run-root "runs/$name" \
                    --out "$OUT/$name.json" --table "runs/$name.md" >"runs/$name.log" 2>&1 &
            done
        done
    done
done
wait
