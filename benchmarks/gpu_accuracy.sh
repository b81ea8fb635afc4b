#!/usr/bin/env bash
# Accuracy leaderboard on one GPU, one task group per call (each call ends within ~9 minutes).
# The backbones of a group train side by side (JOBS at a time, each in its own process):
# these small models leave most of an H100 idle when they run one at a time.
#
#   bash benchmarks/gpu_accuracy.sh GROUP
#
# GROUP (4 backbones x 1 task, same budget for every backbone; see docs/benchmarks/leaderboard.md):
#   listops         LRA ListOps, generated here (seeded), reduced sizes
#   pathfinder      LRA Pathfinder-32, generated here (seeded), reduced sizes
#   fsdd            Free Spoken Digit Dataset (real audio; needs the data, see below), official test split
#   scifar_standin  the ECP paper's sCIFAR setting on scikit-learn's digits (32x32) standing in for CIFAR-10
#   smoke           every group above with tiny data and 50 steps, into leaderboard_smoke.json (pipeline check)
#
# Results go to $OUT (the device tool's output folder; default benchmarks/results/gpu_out):
# leaderboard.json and leaderboard.md are rewritten there after every run, so a call cut
# short keeps what it finished; copy them back to benchmarks/results/ and docs/benchmarks/.
# They start as copies of the repository's files, and pairs already done are skipped
# (--resume), so groups run in separate calls accumulate.
#
# Environment:
#   MAELRE_DATA    folder holding fsdd/ (default: .data when .data/fsdd exists; the loader's own
#                  default is ../shared/data/fsdd beside the checkout)
#   FSDD_ROOT      the FSDD folder itself (wins over MAELRE_DATA)
#   MAELRE_WHEELS  folder of wheels installed first (default .whl): the GPU image has no
#                  soundfile and no sktime, which `import modalities.datasets` needs
#   BACKBONES      default maelre,transformer,ecp,perceiver_ar
#   JOBS           runs training at the same time (--jobs; default 4: a whole group at once,
#                  smoke included). Their train seconds are measured while JOBS runs share the
#                  GPU (each row records concurrent_runs); a run slowed past its group's
#                  --max-minutes is cut (time_limit). JOBS=1 trains one run at a time.
#   FRESH=1        re-run pairs already done instead of skipping them
#   PYTHON         default python3
set -euo pipefail
cd "$(dirname "$0")/.."

group=${1:?usage: bash benchmarks/gpu_accuracy.sh listops|pathfinder|fsdd|scifar_standin|smoke}
OUT=${OUT:-benchmarks/results/gpu_out}
PYTHON=${PYTHON:-python3}
BACKBONES=${BACKBONES:-maelre,transformer,ecp,perceiver_ar}
JOBS=${JOBS:-4}
WHEELS=${MAELRE_WHEELS:-.whl}
mkdir -p "$OUT"
export PYTHONUNBUFFERED=1

if compgen -G "$WHEELS/*.whl" >/dev/null; then
    "$PYTHON" -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --upgrade --target /tmp/maelre_site "$WHEELS"/*.whl
    export PYTHONPATH=/tmp/maelre_site${PYTHONPATH:+:$PYTHONPATH}
fi
export PYTHONPATH=.${PYTHONPATH:+:$PYTHONPATH}
if [[ -z ${MAELRE_DATA:-} && -d .data/fsdd ]]; then
    export MAELRE_DATA=$PWD/.data
fi

if ! "$PYTHON" -c "import torch, sys; sys.exit(0 if torch.cuda.is_available() else 1)"; then
    echo "gpu_accuracy.sh: no CUDA device visible to $PYTHON; this script is for the GPU machine" >&2
    exit 2
fi
if ! err=$("$PYTHON" -c "import modalities.datasets, maelre.bench.leaderboard" 2>&1); then
    echo "gpu_accuracy.sh: the leaderboard cannot be imported here:" >&2
    echo "$err" | tail -3 >&2
    echo "(carry the missing packages as wheels in $WHEELS; see the header of this script)" >&2
    exit 2
fi

# The sweep starts no run that could not end (at --max-minutes) within this many minutes;
# imports and the wheel install fill the rest of the ~9-minute call.
sweep=(--sweep-minutes 8 --run-root runs/leaderboard --backbones "$BACKBONES" --jobs "$JOBS")
# The budgets of the groups (also read by benchmarks/probes.sh, whose ListOps ablation reuses them).
source benchmarks/gpu_budgets.sh
if [[ -n ${FSDD_ROOT:-} ]]; then
    fsdd+=(--set "data.dataset.root=$FSDD_ROOT")
fi

run_group() {  # run_group NAME JSON_BASENAME ARGS...
    local name=$1 base=$2
    shift 2
    local json=$OUT/$base.json table=$OUT/$base.md resume=(--resume)
    if [[ ! -f $json && -f benchmarks/results/$base.json ]]; then
        cp benchmarks/results/$base.json "$json"
    fi
    if [[ ! -f $table && -f docs/benchmarks/$base.md ]]; then
        cp docs/benchmarks/$base.md "$table"
    fi
    [[ ${FRESH:-0} == 1 ]] && resume=()
    echo "== $name: $*"
    "$PYTHON" -m maelre.bench.leaderboard "$@" "${sweep[@]}" "${resume[@]}" --out "$json" --table "$table"
}

case $group in
    listops) run_group listops leaderboard "${listops[@]}" ;;
    pathfinder) run_group pathfinder leaderboard "${pathfinder[@]}" ;;
    fsdd) run_group fsdd leaderboard "${fsdd[@]}" ;;
    scifar_standin) run_group scifar_standin leaderboard "${standin[@]}" ;;
    smoke)
        tiny=(--budget-steps 50 --max-minutes 0.5)
        sweep=(--run-root runs/leaderboard_smoke --backbones "$BACKBONES" --jobs "$JOBS")
        run_group smoke-listops leaderboard_smoke --tasks listops "${tiny[@]}" --set data.dataset.n_train=2000 \
            --set data.dataset.n_val=100 --set data.dataset.n_test=200 --set schedule.warmup_steps=10 \
            --set trainer.early_stopping_patience=null
        run_group smoke-pathfinder leaderboard_smoke --tasks pathfinder "${tiny[@]}" --set data.dataset.n_train=400 \
            --set data.dataset.n_val=50 --set data.dataset.n_test=100
        run_group smoke-standin leaderboard_smoke --tasks scifar_standin "${tiny[@]}"  # the digits are small already
        run_group smoke-fsdd leaderboard_smoke "${fsdd[@]}" "${tiny[@]}"
        ;;
    *)
        echo "gpu_accuracy.sh: unknown group '$group'; use listops, pathfinder, fsdd, scifar_standin or smoke" >&2
        exit 2
        ;;
esac
