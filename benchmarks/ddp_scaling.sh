#!/usr/bin/env bash
# DDP on FSDD (issue #19): 1 GPU against 2 GPUs at the same global batch, and kill-and-resume on 2 GPUs.
#
#   bash benchmarks/ddp_scaling.sh PHASE [--set KEY=VALUE ...]
#
# PHASE:
#   scaling  recipes/audio_fsdd.yaml on 1 GPU at data.batch_size=$GLOBAL_BATCH, then on 2 GPUs
#            (trainer.strategy=ddp) at $GLOBAL_BATCH/2 per GPU: the same global batch, so the same
#            steps, data order and learning-rate schedule
#   resume   2 GPUs with trainer.deterministic=true: two uninterrupted runs (the second shows how
#            far two identical GPU runs already differ), and one killed with SIGKILL to all of its
#            processes once its first step checkpoint exists, then continued with --resume
#   report   $OUT/ddp_scaling.json and $OUT/ddp_scaling.md from the runs present: train throughput
#            (samples/s over all processes) and its 2-GPU/1-GPU ratio (target >= 1.8), test accuracy,
#            and the largest weight difference between the resumed and the uninterrupted run
#   all      scaling, resume, report
# Extra arguments go to every `maelre fit` (e.g. --set data.num_workers=4).
#
# Results: copy $OUT/ddp_scaling.{json,md} to benchmarks/results/ and docs/benchmarks/.
#
# Environment:
#   OUT            output folder (default benchmarks/results/ddp_out); run folders go under $OUT/runs
#   GLOBAL_BATCH   samples per optimizer step, over all GPUs (default 64; must be even)
#   FSDD_ROOT, MAELRE_DATA, MAELRE_WHEELS, PYTHON   as in benchmarks/gpu_accuracy.sh
#   SMOKE=1        CPU processes over gloo, 192 training clips, 2 epochs: checks this script's
#                  mechanics on a machine without GPUs (its numbers mean nothing)
set -euo pipefail
cd "$(dirname "$0")/.."

phase=${1:?usage: bash benchmarks/ddp_scaling.sh scaling|resume|report|all [--set KEY=VALUE ...]}
shift
extra=("$@")
OUT=${OUT:-benchmarks/results/ddp_out}
PYTHON=${PYTHON:-python3}
GLOBAL_BATCH=${GLOBAL_BATCH:-64}
WHEELS=${MAELRE_WHEELS:-.whl}
RUNS=$OUT/runs
mkdir -p "$RUNS"
export PYTHONUNBUFFERED=1
# NVLink multicast stays off on shared hosts (docs/multi_gpu.md); Lightning's extra processes inherit this.
export NCCL_NVLS_ENABLE=0 TORCH_SYMM_MEM_DISABLE_MULTICAST=1 NVSHMEM_DISABLE_NVLS=1

if compgen -G "$WHEELS/*.whl" >/dev/null; then
    "$PYTHON" -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --upgrade --target /tmp/maelre_site "$WHEELS"/*.whl
    export PYTHONPATH=/tmp/maelre_site${PYTHONPATH:+:$PYTHONPATH}
fi
export PYTHONPATH=$PWD${PYTHONPATH:+:$PYTHONPATH}
[[ -z ${MAELRE_DATA:-} && -d .data/fsdd ]] && export MAELRE_DATA=$PWD/.data

common=(--no-progress)
[[ -n ${FSDD_ROOT:-} ]] && common+=(--set "data.dataset.root=$FSDD_ROOT")
if [[ ${SMOKE:-0} == 1 ]]; then
    accel=cpu
    common+=(--set data.max_train_samples=192 --set data.max_eval_samples=64 --set trainer.max_epochs=2)
    ckpt_every=4
else
    accel=gpu
    ckpt_every=20
    if [[ $phase != report ]] && ! "$PYTHON" -c "import torch, sys; sys.exit(0 if torch.cuda.device_count() >= 2 else 1)"; then
        echo "ddp_scaling.sh: fewer than 2 CUDA devices visible to $PYTHON (SMOKE=1 runs on CPU)" >&2
        exit 2
    fi
fi
common+=(--set "trainer.accelerator=$accel" "${extra[@]}")
half=$((GLOBAL_BATCH / 2))

fit() {  # fit RUN DEVICES PER_DEVICE_BATCH [maelre fit arguments...]
    local run=$1 devices=$2 batch=$3 strategy=auto
    shift 3
    ((devices > 1)) && strategy=ddp
    "$PYTHON" -m maelre.cli fit recipes/audio_fsdd.yaml --run-dir "$RUNS/$run" "${common[@]}" \
        --set "trainer.devices=$devices" --set "trainer.strategy=$strategy" --set "data.batch_size=$batch" "$@"
}

scaling() {
    rm -rf "$RUNS/scaling_1gpu" "$RUNS/scaling_2gpu"
    fit scaling_1gpu 1 "$GLOBAL_BATCH" 2>&1 | tee "$OUT/scaling_1gpu.log"
    fit scaling_2gpu 2 "$half" 2>&1 | tee "$OUT/scaling_2gpu.log"
}

resume() {
    local det=(--set trainer.deterministic=true --set "trainer.checkpoint_every_n_steps=$ckpt_every")
    rm -rf "$RUNS/resume_full" "$RUNS/resume_repeat" "$RUNS/resume_killed"
    fit resume_full 2 "$half" "${det[@]}" 2>&1 | tee "$OUT/resume_full.log"
    fit resume_repeat 2 "$half" "${det[@]}" 2>&1 | tee "$OUT/resume_repeat.log"
    # Job control puts the killed run in a process group of its own (pgid = its pid), so one
    # SIGKILL reaches rank 0 and the rank-1 process it launched, as a machine failure would.
    set -m
    fit resume_killed 2 "$half" "${det[@]}" >"$OUT/resume_killed.log" 2>&1 &
    local pid=$!
    set +m
    until compgen -G "$RUNS/resume_killed/checkpoints/step-*" >/dev/null; do
        if ! kill -0 "$pid" 2>/dev/null; then
            echo "ddp_scaling.sh: the run to kill ended before its first checkpoint; see $OUT/resume_killed.log" >&2
            exit 1
        fi
        sleep 0.5
    done
    sleep 2  # let it get past the checkpoint, so the resume also replays lost steps
    kill -KILL -- "-$pid"
    wait "$pid" || true
    if [[ -f $RUNS/resume_killed/results.json ]]; then
        echo "ddp_scaling.sh: the run finished before it was killed; use more epochs" >&2
        exit 1
    fi
    echo "killed after: $(cd "$RUNS/resume_killed/checkpoints" && ls -d step-* | tail -1)" | tee "$OUT/resume_killed_at.txt"
    fit resume_killed 2 "$half" "${det[@]}" --resume 2>&1 | tee -a "$OUT/resume_killed.log"
}

report() {
    "$PYTHON" - "$RUNS" "$OUT" "$GLOBAL_BATCH" "${SMOKE:-0}" <<'EOF'
"""Summarise the runs under RUNS into OUT/ddp_scaling.json and OUT/ddp_scaling.md."""
import json
import sys
from pathlib import Path

import torch

from maelre.engine.checkpoint import latest_checkpoint, load_weights
from maelre.fileio import write_json_atomic, write_text_atomic

runs, out, global_batch, smoke = Path(sys.argv[1]), Path(sys.argv[2]), int(sys.argv[3]), sys.argv[4] == "1"


def results(name):
    path = runs / name / "results.json"
    return json.loads(path.read_text()) if path.is_file() else None


def max_weight_diff(a, b):
    wa, wb = (load_weights(latest_checkpoint(runs / n) / "model.safetensors") for n in (a, b))
    return max(float((wa[k].double() - wb[k].double()).abs().max()) for k in wa)


row = {"global_batch": global_batch, "smoke": smoke, "runs": {}}
for name in ("scaling_1gpu", "scaling_2gpu", "resume_full", "resume_repeat", "resume_killed"):
    r = results(name)
    if r is not None:
        row["runs"][name] = {
            "world_size": r["environment"]["world_size"], "device": r["environment"]["device"],
            "gpus": r["environment"].get("gpus"), "samples_per_second": r["throughput"]["samples_per_second"],
            "train_seconds": r["throughput"]["train_seconds"], "test_acc": r["metrics"]["test/acc"],
            "global_step": r["global_step"], "resumed_from": r["resumed_from"],
        }
one, two = row["runs"].get("scaling_1gpu"), row["runs"].get("scaling_2gpu")
if one and two:
    row["throughput_ratio"] = two["samples_per_second"] / one["samples_per_second"]
    row["test_acc_diff"] = two["test_acc"] - one["test_acc"]
if {"resume_full", "resume_killed"} <= row["runs"].keys():
    row["resume_max_abs_diff"] = max_weight_diff("resume_full", "resume_killed")
    row["resume_bit_identical"] = row["resume_max_abs_diff"] == 0.0
if {"resume_full", "resume_repeat"} <= row["runs"].keys():
    row["repeat_max_abs_diff"] = max_weight_diff("resume_full", "resume_repeat")
write_json_atomic(out / "ddp_scaling.json", row)

lines = [f"# DDP on FSDD: 1 against 2 {'CPU processes (SMOKE: numbers mean nothing)' if smoke else 'GPUs'}, global batch {global_batch}", "",
         "| run | processes | train samples/s | train s | test acc | steps | resumed from |", "|---|---|---|---|---|---|---|"]
for name, r in row["runs"].items():
    lines.append(f"| {name} | {r['world_size']} | {r['samples_per_second']:.1f} | {r['train_seconds']:.1f} | {100 * r['test_acc']:.2f}% "
                 f"| {r['global_step']} | {Path(r['resumed_from']).name if r['resumed_from'] else '-'} |")
lines.append("")
if "throughput_ratio" in row:
    lines.append(f"- Throughput, 2 against 1: {row['throughput_ratio']:.2f}x (target >= 1.8); test accuracy difference {100 * row['test_acc_diff']:+.2f} points.")
if "resume_max_abs_diff" in row:
    lines.append(f"- Killed and resumed against uninterrupted: largest weight difference {row['resume_max_abs_diff']:.3g} "
                 f"({'bit-identical' if row['resume_bit_identical'] else 'not bit-identical'}).")
if "repeat_max_abs_diff" in row:
    lines.append(f"- Two uninterrupted runs: largest weight difference {row['repeat_max_abs_diff']:.3g} (the floor for the line above).")
lines.append(f"\nCommand: `bash benchmarks/ddp_scaling.sh all` (GLOBAL_BATCH={global_batch}).")
write_text_atomic(out / "ddp_scaling.md", "\n".join(lines) + "\n")
print("\n".join(lines))
EOF
}

case $phase in
    scaling) scaling ;;
    resume) resume ;;
    report) report ;;
    all) scaling; resume; report ;;
    *) echo "ddp_scaling.sh: unknown phase $phase (scaling, resume, report or all)" >&2; exit 2 ;;
esac
