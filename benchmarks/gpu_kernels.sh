#!/usr/bin/env bash
# Issue 15 on one GPU: the fused-kernel tests, then MAELRE against its zero-cost-merge twin.
# One step per call (each ends within ~9 minutes):
#
#   bash benchmarks/gpu_kernels.sh tests     # kernel-vs-PyTorch tests on CUDA (fp32 and bf16) + interpreter run
#   bash benchmarks/gpu_kernels.sh eager     # efficiency benchmark, eager, fused kernels on
#   bash benchmarks/gpu_kernels.sh graph     # the same, whole step captured in a CUDA graph
#   bash benchmarks/gpu_kernels.sh pytorch   # eager with MAELRE_TRITON=0: the PyTorch paths, for the kernels' share
#   bash benchmarks/gpu_kernels.sh profile   # torch.profiler of the fused eager step, maelre and its twin at 16K
#   bash benchmarks/gpu_kernels.sh paired    # eager maelre / twin in alternating rounds (benchmarks/paired_timing.py), ~75 s
#   bash benchmarks/gpu_kernels.sh replay    # eager maelre with merge graphs (=1, =merge) / without, in one process, ~90 s
#   bash benchmarks/gpu_kernels.sh plan      # merge plan (one program per row vs tiled), top-k, whole merge: CUDA graphs, ~1 min
#   bash benchmarks/gpu_kernels.sh host      # the eager step's host time by region (Triton launches, merge path, attention),
#                                            # maelre against its twin (benchmarks/host_time.py), ~1 min, 3 min at most
#   bash benchmarks/gpu_kernels.sh pgeager   # a step but plan or replay prefixed pg: the same with MAELRE_PLAN_GRAPHS=1 (merge plans replayed
#                                            # from CUDA graphs, maelre.layers.plan_graphs), its files named *_plangraphs;
#                                            # prefixed mg: MAELRE_PLAN_GRAPHS=merge (the merges too), files *_mergegraphs
#
# Each benchmark step times maelre, maelre.twin, maelre.floor and transformer (train step)
# at 4K, 16K and 64K; the table's "time vs twin" column is the issue's ratio. Results go
# to $OUT (default benchmarks/results/gpu_out): efficiency_h200*.json, .png and .md (host: host_time_h200.json and .md).
#
# Environment: OUT, PYTHON (default python3), SEQ_LENS (default 4K,16K,64K),
# BACKBONES (default maelre,transformer; not paired and replay, which time maelre and pair it themselves),
# EXTRA (more efficiency.py options, e.g. "--backbone-config maelre:merge_site=both"; paired and replay take them too).
set -euo pipefail
cd "$(dirname "$0")/.."

step=${1:?usage: bash benchmarks/gpu_kernels.sh [pg|mg]tests|eager|graph|pytorch|profile|paired|host, or plan, replay}
asked=$step
sfx=""
if [[ $step == pg* || $step == mg* ]]; then  # the step with the eager merge plans (pg) or whole merges (mg) from CUDA graphs
    if [[ $step == pg* ]]; then
        sfx=_plangraphs
        export MAELRE_PLAN_GRAPHS=1
    else
        sfx=_mergegraphs
        export MAELRE_PLAN_GRAPHS=merge
    fi
    step=${step:2}
    if [[ $step == plan ]]; then
        echo "gpu_kernels.sh: '$asked' means nothing: the plan timing runs no MAELRE block" >&2
        exit 2
    fi
    if [[ $step == replay ]]; then
        echo "gpu_kernels.sh: '$asked' means nothing: replay builds MAELRE in each mode itself; run 'replay'" >&2
        exit 2
    fi
else
    unset MAELRE_PLAN_GRAPHS  # an unprefixed step times the library's default, whatever the caller exported
fi
OUT=${OUT:-benchmarks/results/gpu_out}
PYTHON=${PYTHON:-python3}
mkdir -p "$OUT"
export PYTHONPATH=.${PYTHONPATH:+:$PYTHONPATH} PYTHONUNBUFFERED=1
export MAELRE_TRITON=${MAELRE_TRITON:-1}  # the library's default on CUDA; pytorch sets 0

if ! "$PYTHON" -c "import torch, triton, sys; sys.exit(0 if torch.cuda.is_available() else 1)"; then
    echo "gpu_kernels.sh: needs a CUDA device and triton visible to $PYTHON" >&2
    exit 2
fi

bench() {  # bench NAME [efficiency.py options]
    local name=$1
    shift
    # shellcheck disable=SC2086  # EXTRA is a list of options
    "$PYTHON" benchmarks/efficiency.py --backbones "${BACKBONES:-maelre,transformer}" --seq-lens "${SEQ_LENS:-4K,16K,64K}" \
        --modes train --time-budget-s 480 --out "$OUT/$name.json" --table "$OUT/$name.md" "$@" ${EXTRA:-}
}

case $step in
    tests) "$PYTHON" -m pytest tests/test_triton_kernels.py tests/test_bench_efficiency.py tests/test_plan_graphs.py -q -p no:cacheprovider -rs -k "cuda or gpu or twin or interpreter" ;;
    eager) bench efficiency_h200$sfx ;;
    graph) bench efficiency_h200${sfx}_cudagraph --cuda-graph ;;
    pytorch) MAELRE_TRITON=0 bench efficiency_h200_pytorch$sfx ;;
    profile)  # where the fused eager step's time goes (kernels on, as in `eager`), MAELRE and its twin
        "$PYTHON" -m maelre.bench.profile --backbones maelre,maelre.twin --seq-lens "${SEQ_LENS:-16K}" --modes train --steps 3 \
            --out "$OUT/profile_h200_fused$sfx.json" --table "$OUT/profile_h200_fused$sfx.md" ;;
    paired)  # eager MAELRE against its twin (and full attention) in alternating rounds (benchmarks/paired_timing.py),
        # ~75 s: the ratio that drifting host speed does not skew, e.g. "paired mgpaired" for a mode against the default
        # shellcheck disable=SC2086  # EXTRA is a list of options
        "$PYTHON" benchmarks/paired_timing.py --seq-lens "${SEQ_LENS:-4K,16K,64K}" --out "$OUT/paired_h200$sfx.json" ${EXTRA:-} ;;
    replay)  # eager MAELRE with merge graphs (MAELRE_PLAN_GRAPHS=1 and =merge) against MAELRE without, in one process and
        # 16 alternating rounds (paired_timing.py --replay; the host drifts by a third between rounds), ~90 s: whether the graphs make the step faster
        # shellcheck disable=SC2086  # EXTRA is a list of options
        "$PYTHON" benchmarks/paired_timing.py --replay 1,merge --rounds 16 --seq-lens "${SEQ_LENS:-4K,16K,64K}" \
            --out "$OUT/paired_h200_replay.json" ${EXTRA:-} ;;
    plan)  # the merge machinery alone at 1x64K, 4x16K, 16x4K (benchmarks/plan_kernel_timing.py)
        "$PYTHON" benchmarks/plan_kernel_timing.py --out "$OUT/plan_kernel_timing_h200.json" --table "$OUT/plan_kernel_timing_h200.md" ;;
    host)  # per N: 5 warm-up + 20 timed steps, then 3 rounds of 20 bare + 20 instrumented steps, maelre and its twin:
        # ~290 steps of ~40 ms (each after a synchronize) + building = ~20 s per N; the JSON and table are rewritten after each N
        timeout 180 "$PYTHON" benchmarks/host_time.py --seq-lens "${SEQ_LENS:-4K,16K,64K}" \
            --out "$OUT/host_time_h200$sfx.json" --table "$OUT/host_time_h200$sfx.md" \
            || { rc=$?; (( rc == 124 )) || exit $rc; echo "gpu_kernels.sh: host_time.py ran past 180 s; the lengths it finished are in $OUT/host_time_h200$sfx.md" >&2; } ;;
    *) echo "gpu_kernels.sh: unknown step '$asked'; use tests, eager, graph, pytorch, profile, paired, replay, plan or host, all but plan and replay also prefixed pg or mg" >&2; exit 2 ;;
esac
