#!/usr/bin/env bash
# The real-data leaderboard runs (issue 13) on one GPU, in chunks: every backbone of TASK trains
# side by side until MINUTES after the script started (trainer.stop_at, a wall-clock deadline, so
# loading the data and restoring the checkpoint count), each ending with a resumable checkpoint in
# its run folder benchmarks/results/TASK_partial_h200/NAME. A run folder that does not exist yet starts from the
# task's recipe; one that exists resumes exactly (same schedule, data order and RNG).
#
#   bash benchmarks/real_runs.sh scifar10          # recipes/scifar10.yaml, 100 epochs, ECP setting
#   bash benchmarks/real_runs.sh image             # recipes/lra_image.yaml, LRA's model and 200 epochs
#   bash benchmarks/real_runs.sh text              # recipes/lra_text.yaml, LRA's model and 20,000 steps
#   NAMES="maelre transformer" MINUTES=6 bash benchmarks/real_runs.sh text
#
# A watchdog (benchmarks/call_guard.sh) stops whatever still runs CALL_SECONDS - PACK_SECONDS
# after the start (SIGTERM: a checkpoint at the next step, then SIGKILL), so pruning and the
# summary always run before the device call's limit.
#
# Data: carry the one file the task reads, .carry/data/scifar10_gray.npz (scifar10, image) or
# .carry/data/imdb_bytes.npz (text) (benchmarks/make_compact_data.py --only scifar10|imdb); both
# with the tree are over the 64 MiB a call carries. benchmarks/device_call.sh runs several tasks
# and the LRA groups in one call.
# After the call: device_call.sh returns the run folders (one LRA Text folder is ~67 MB: in 15 MiB
# parts over several calls), `python benchmarks/device_xfer.py unpack FILES_AT` puts them in
# benchmarks/results/TASK_partial_h200/NAME (a folder over 15 MiB keeps checkpoints/ out of git;
# `device_xfer.py carry` takes it back to a fresh machine), then
# python benchmarks/real_runs_summary.py --key TASK --concurrent <runs at once>
#
# NAMES (default: maelre maelre_noconv transformer transformer_rope ecp perceiver_ar; sCIFAR-10: the five rows of its
# recipe since session 18, maelre_learned_lr2x transformer_lr2x transformer_rope_learned_lr2x ecp_learned_lr2x
# perceiver_ar_lr2x; the first six are its rows before, at lr 0.001 and without learned positions under RoPE):
#   maelre            the default MAELRE with RoPE on merged positions (no absolute positions)
#   maelre_noconv     the same without the value convolution (value_conv: null), the default
#                     before round 4 of the merge ablation
#   transformer       full attention, the adapter's learned positions
#   transformer_rope  full attention with RoPE (the ECP paper's "Transformer (with RoPE)")
#   ecp               ECP, RoPE (its default); on sCIFAR-10 RoPE alone (no absolute positions)
#   perceiver_ar      PerceiverAR, learned positions
#   transformer_cls, transformer_rope_cls
#                     diagnostics, not leaderboard rows: the same two transformers pooled by a CLS
#                     token (LRA's pooling) instead of the mean, to test whether pooling explains
#                     a miss (run them by name: they are not in the default NAMES)
#   transformer_mlphead diagnostic: the transformer with LRA's classifier head, a hidden ReLU layer of
#                     the model's MLP width (model.head_hidden) and no LayerNorm on the pooled vector
#                     (model.head_norm=false: LRA normalises the tokens once, before pooling, as we do),
#                     to test whether the head explains a miss
#   ecp_learned_lr2x, transformer_rope_lr2x
#                     levers, not leaderboard rows, at the whole budget: ecp with the adapter's learned
#                     positions as well as its own RoPE (the leaderboard's ecp has RoPE alone), and
#                     transformer_rope, both at twice the first recipe's learning rate (the one lever of the
#                     session-15 sweep worth more than a point after 5-6 epochs,
#                     benchmarks/results/levers_scifar10_h200_s15/)
#   ecp_learned, transformer_rope_learned_lr2x, maelre_learned_lr2x
#                     the controls those two asked for (session 16): which of learned positions and the
#                     learning rate lifted ECP, and whether learned positions lift the others as well
#   transformer_lr2x, perceiver_ar_lr2x
#                     the other two rows under one recipe with those levers (session 18): both already have
#                     the adapter's learned positions, so only the learning rate doubles; with ecp_learned_lr2x,
#                     transformer_rope_learned_lr2x and maelre_learned_lr2x every backbone then has learned
#                     positions (RoPE on top where its row has it) at twice the first recipe's learning rate:
#                     the recipe since (lr 0.002), and these five are its leaderboard rows
#   maelre_compiled, transformer_compiled, transformer_rope_compiled, ecp_compiled, perceiver_ar_compiled
#                     LRA Image: its five rows as the recipe trains them now, compiled (the rows above
#                     trained eager, and keep that). LRA Text: the five rows compiled with CUDA graphs over 4
#                     length buckets (trainer.compile_length_buckets; as its recipe trains since session 21), the same
#                     model, data and budget: the cost target judged on a step as fast as the rows can train
#                     (session 19 timed them alone: MAELRE 13.85 ms against the transformer's 19.24, eager
#                     36.5 against 23.1)
# MINUTES (7): training ends this many minutes after the script started, at most
# CALL_SECONDS - PACK_SECONDS - TEST_SECONDS (7.25 min by default); CALL_SECONDS (540: all is
# pruned by then), PACK_SECONDS (45), TEST_SECONDS (60), GRACE_SECONDS (15); SET: space-separated extra KEY=VALUE
# overrides for every run (a smoke test: SET="data.max_train_samples=256 trainer.max_steps=2");
# TEST_PARTIAL (0): 1 also tests a run at the end of a call that did not complete its budget (each
# call then reserves TEST_SECONDS for it; LRA Text's test of 25,000 sequences took longer than that
# with five runs sharing the GPU, and the watchdog stopped the runs before results.json was written);
# 0 leaves the test to the call that completes the budget, and the call's results.json holds the
# validation history alone;
# ROOT (benchmarks/results/TASK_partial_h200); PYTHON (python3).
set -euo pipefail
cd "$(dirname "$0")/.."
started=$(date +%s)

usage="usage: bash benchmarks/real_runs.sh scifar10|image|text"
task=${1:?$usage}
case $task in  # head: the model's MLP width (dim x mlp_ratio), LRA's classifier-head width
    scifar10) recipe=recipes/scifar10.yaml head=128 ;;
    image) recipe=recipes/lra_image.yaml head=64 ;;
    text) recipe=recipes/lra_text.yaml head=1024 ;;
    *) echo "real_runs.sh: unknown task '$task'; $usage" >&2; exit 2 ;;
esac
ROOT=${ROOT:-benchmarks/results/${task}_partial_h200}
PYTHON=${PYTHON:-python3}
export PYTHONPATH=.${PYTHONPATH:+:$PYTHONPATH} PYTHONUNBUFFERED=1
rope=(--set data.adapter.pos_embed=none --set model.rope=true)
declare -A setup=(
    [maelre]="--set model.backbone=maelre ${rope[*]}"
    [maelre_noconv]="--set model.backbone=maelre ${rope[*]} --set model.backbone_config.maelre.value_conv=null"
    [transformer]="--set model.backbone=transformer"
    [transformer_rope]="--set model.backbone=transformer ${rope[*]}"
    [ecp]="--set model.backbone=ecp"
    [perceiver_ar]="--set model.backbone=perceiver_ar"
    [transformer_cls]="--set model.backbone=transformer --set model.pool=cls"
    [transformer_rope_cls]="--set model.backbone=transformer ${rope[*]} --set model.pool=cls"
    [transformer_mlphead]="--set model.backbone=transformer --set model.head_hidden=$head --set model.head_norm=false"
)
# sCIFAR-10's ecp run was made with RoPE alone (the ECP paper's positions); LRA Image's and Text's with their
# recipe's sinusoidal positions as well
[[ $task == scifar10 ]] && setup[ecp]+=" --set data.adapter.pos_embed=none"
lr2x=$("$PYTHON" -c 'import sys, yaml; print(2 * yaml.safe_load(open(sys.argv[1]))["optimizer"]["lr"])' "$recipe")
[[ $task == scifar10 ]] && lr2x=0.002  # twice the first recipe's 0.001: the recipe's rate since session 18
learned="--set data.adapter.pos_embed=learned"
setup[ecp_learned]="--set model.backbone=ecp $learned"
setup[ecp_learned_lr2x]="${setup[ecp_learned]} --set optimizer.lr=$lr2x"
setup[transformer_rope_lr2x]="${setup[transformer_rope]} --set optimizer.lr=$lr2x"
setup[transformer_rope_learned_lr2x]="${setup[transformer_rope]} $learned --set optimizer.lr=$lr2x"
setup[maelre_learned_lr2x]="${setup[maelre]} $learned --set optimizer.lr=$lr2x"
setup[transformer_lr2x]="${setup[transformer]} --set optimizer.lr=$lr2x"
setup[perceiver_ar_lr2x]="${setup[perceiver_ar]} --set optimizer.lr=$lr2x"
if [[ $task == scifar10 ]]; then
    # session 18 made the levers sCIFAR-10's recipe (learned positions, lr 0.002): the runs made before keep the
    # rate they had (0.001), and the lever names keep meaning twice it
    for n in maelre maelre_noconv transformer transformer_rope ecp perceiver_ar transformer_cls transformer_rope_cls transformer_mlphead ecp_learned; do
        setup[$n]+=" --set optimizer.lr=0.001"
    done
fi
# Text's batches have their own lengths (bucketed, padded to the batch's longest review), and
# exact attention on CUDA goes to cuDNN, which builds a plan per new sequence length (tens to
# hundreds of milliseconds): session 12's transformer spent ~150 ms a step, most of it there.
# Padding to a multiple of 128 leaves at most 32 lengths; the padding is masked, so the values
# are the same. Only new runs of the full-attention rows get it (ECP pads to 128 already; MAELRE's
# rows stay as its finished run was made).
if [[ $task == text ]]; then
    for n in transformer transformer_rope transformer_cls transformer_rope_cls transformer_mlphead; do
        setup[$n]+=" --set data.adapter.pad_to_multiple=128"
    done
    for n in maelre_noconv transformer_cls transformer_rope_cls ecp_learned; do  # eager runs, as they trained
        setup[$n]+=" --set trainer.compile=false"
    done
fi
if [[ $task == image || $task == text ]]; then
    # The recipes compile (LRA Image since session 15, Text since session 21; Text with CUDA graphs over 4 length
    # buckets) but their five first rows trained eager: they keep that, and the *_compiled runs are the same rows
    # as the recipes train now, for a cost target judged on the step as the runs trained it
    for n in maelre transformer transformer_rope ecp perceiver_ar; do
        setup[${n}_compiled]="${setup[$n]}"
        setup[$n]+=" --set trainer.compile=false"
    done
fi
# exit 0 when a run folder's last call reached the recipe's max_epochs or max_steps; a call whose
# deadline cut its last epoch short counts that epoch as started (call_ended_early), so it is not done
finished='import json, sys, yaml; d = sys.argv[1]; t = yaml.safe_load(open(f"{d}/recipe.yaml"))["trainer"]; r = json.load(open(f"{d}/results.json"))
done = (t.get("max_epochs") is not None and r["epochs"] >= t["max_epochs"]) or (t.get("max_steps") is not None and r["global_step"] >= t["max_steps"])
sys.exit(0 if done and not r.get("call_ended_early", False) else 1)'
default_names="maelre maelre_noconv transformer transformer_rope ecp perceiver_ar"
# sCIFAR-10's leaderboard rows since session 18: every backbone with learned positions (RoPE on top where its row
# has it) at lr 0.002, the recipe's
[[ $task == scifar10 ]] && default_names="maelre_learned_lr2x transformer_lr2x transformer_rope_learned_lr2x ecp_learned_lr2x perceiver_ar_lr2x"
names=(${NAMES:-$default_names})
mkdir -p "$ROOT"
source benchmarks/call_guard.sh
guard_start
stop_at=$(guard_train_deadline "${MINUTES:-7}")
declare -A pid_of=() status=()
for n in "${names[@]}"; do
    [[ -n ${setup[$n]:-} ]] || { echo "real_runs.sh: unknown run '$n'; use ${!setup[*]}" >&2; exit 2; }
    if [[ -f $ROOT/$n/results.json ]] && "$PYTHON" -c "$finished" "$ROOT/$n"; then
        echo "$n: has its whole budget already"
        continue
    elif [[ -f $ROOT/$n/recipe.yaml ]]; then
        args=("$ROOT/$n/recipe.yaml" --resume)
    else
        # shellcheck disable=SC2206  # the setup strings are lists of options
        args=("$recipe" ${setup[$n]})
    fi
    [[ ${TEST_PARTIAL:-0} == 1 ]] || args+=(--set trainer.test_partial=false)
    for item in ${SET:-}; do args+=(--set "$item"); done
    mkdir -p "$ROOT/$n"
    # stop_after_minutes=null: a resumed recipe.yaml may carry an older call's
    guarded "$PYTHON" -m maelre.cli fit "${args[@]}" --no-progress --run-dir "$ROOT/$n" \
        --set trainer.stop_after_minutes=null --set trainer.stop_at="$stop_at" >>"$ROOT/$n/call.log" 2>&1 &
    pid_of[$n]=$!
done
failed=0
for n in "${names[@]}"; do  # a run with its whole budget started nothing: status 0
    rc=0
    [[ -n ${pid_of[$n]:-} ]] && { wait "${pid_of[$n]}" || rc=$?; }
    status[$n]=$rc
done
for n in "${names[@]}"; do  # keep what the next call needs: the newest step checkpoint and the best weights
    [[ -d $ROOT/$n/checkpoints ]] && "$PYTHON" benchmarks/lra_learn.py prune "$ROOT/$n"
    # a run with its whole budget resumes no more: its best weights are all it keeps (less to carry)
    if [[ -f $ROOT/$n/results.json ]] && "$PYTHON" -c "$finished" "$ROOT/$n"; then rm -rf "$ROOT/$n"/checkpoints/step-*; fi
    if (( status[$n] == 143 )); then  # the watchdog's SIGTERM: this call's results.json was not written
        echo "$n: stopped by the call's watchdog before testing; it resumes from its newest checkpoint"
    elif (( status[$n] != 0 )); then
        echo "$n: exited with status ${status[$n]}; the end of its log:"; tail -20 "$ROOT/$n/call.log"; failed=1
    elif [[ -f $ROOT/$n/results.json ]]; then
        # a call its deadline cut before the first validation (a long compile) has no val/best_acc: null, not a number
        "$PYTHON" -c "import json,sys; r=json.load(open(sys.argv[1])); m=r['metrics']; v=m['val/best_acc']; print(sys.argv[2], r['epochs'], 'epochs,', r['global_step'], 'steps,', f\"{100*m['test/acc']:.2f} % test\" if r.get('tested', True) else f\"best val {100*v:.2f} % (not tested yet)\" if v is not None else 'not validated or tested yet')" "$ROOT/$n/results.json" "$n"
    else
        echo "$n: no results.json; the end of its log:"; tail -20 "$ROOT/$n/call.log"; failed=1
    fi
done
exit $failed
