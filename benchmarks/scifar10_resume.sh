#!/usr/bin/env bash
# Continue the partial sCIFAR-10 leaderboard runs (real CIFAR-10, ECP setting, 100-epoch
# budget) on the GPU machine: the five runs in benchmarks/results/scifar10_partial_h200/
# train side by side for MINUTES (default 8), each ending with a resumable checkpoint.
# Carry .carry (the compact data file, benchmarks/make_compact_data.py --only scifar10);
# the run folders travel with the tree (~12-20 MB; the tree plus the data must stay under 64 MiB).
#
#   bash benchmarks/scifar10_resume.sh            # then: tar the run folders into $OUT; back here, untar them
#                                                 # and run benchmarks/scifar10_partial_summary.py --concurrent 5
#   NAMES="maelre transformer" MINUTES=6 bash benchmarks/scifar10_resume.sh
#
# Each call continues the same cosine schedule, data order and RNG (exact --resume);
# results.json of a run holds the test accuracy of its best-validation weights so far.
set -euo pipefail
cd "$(dirname "$0")/.."
ROOT=${ROOT:-benchmarks/results/scifar10_partial_h200}
PYTHON=${PYTHON:-python3}
export PYTHONPATH=.${PYTHONPATH:+:$PYTHONPATH} PYTHONUNBUFFERED=1
names=(${NAMES:-maelre transformer transformer_rope ecp perceiver_ar})
for n in "${names[@]}"; do
    [[ -f $ROOT/$n/recipe.yaml ]] || { echo "no run folder $ROOT/$n (with recipe.yaml)" >&2; exit 2; }
    "$PYTHON" -m maelre.cli fit "$ROOT/$n/recipe.yaml" --run-dir "$ROOT/$n" --resume \
        --set trainer.stop_after_minutes="${MINUTES:-8}" >>"$ROOT/$n/resume.log" 2>&1 &
done
wait
for n in "${names[@]}"; do  # keep what the next call needs: the newest step checkpoint and the best weights
    "$PYTHON" benchmarks/lra_learn.py prune "$ROOT/$n"
done
for n in "${names[@]}"; do
    "$PYTHON" -c "import json,sys; r=json.load(open(sys.argv[1])); print(sys.argv[2], r['epochs'], 'epochs,', round(100*r['metrics']['test/acc'], 2), '% test')" "$ROOT/$n/results.json" "$n"
done
