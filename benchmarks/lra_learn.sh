#!/usr/bin/env bash
# Issue 14 on one GPU: ListOps and Pathfinder-32 at the published budgets, maelre, transformer,
# ecp and perceiver_ar side by side (one process each), resumed in chunks over many device calls.
#
#   bash benchmarks/lra_learn.sh TASK VARIANT SEED
#
# TASK (the budget is the run's total, in optimizer steps; the schedule spans all of it):
#   listops      LRA's budget: 5,000 steps at batch 32, the lra_listops recipe, LRA's sizes
#                (96,000 / 2,000 / 2,000 examples, generated once per call into $LISTOPS_ROOT as
#                LRA's TSV files, then read by all four runs)
#   listops_sky  Skyformer's LRA ListOps config (pkuzengqi/Skyformer src/config.py `listops`, trained by
#                src/main.py, model in src/models/model_LRA.py, model_transformer.py, attention.py, data by
#                src/preprocess/create_listops.py with lra_listops_input_pipeline.py) on the same generated
#                data as `listops` ($LISTOPS_ROOT): 50,000 steps at batch 32, dim 64, 2 layers, 2 heads of
#                32, MLP 128 (GELU), dropout 0.1 and attention dropout 0.1, learned positions, pre-LN with a
#                final LayerNorm, mean pooling, head Linear(64, 128)-ReLU-Linear(128, 10)
#                (model.head_hidden=128), AdamW lr 1e-4, no weight decay, 1,000 warmup steps then linear
#                decay (OneCycleLR), validation every 500 steps, test of the best validation checkpoint.
#                Tokens: Skyformer's input pipeline is LRA's of November 2020 (the tfds Tokenizer, which
#                keeps runs of letters and digits only): `[MAX` reads MAX, and every bracket and
#                parenthesis is dropped, closing `]` included, so the model sees operators and digits
#                only (LRA's own pipeline renames `]` to X since March 2021, commit c209b2a; Skyformer's
#                copy is the older file). Without `]` an expression's nesting is ambiguous: [MAX 2 [MIN 3
#                4 ] 5 ] and [MAX 2 [MIN 3 4 5 ] ] read alike. That is the input of Skyformer's 38.37%
#                (softmax attention), but not the task: ours keeps `]` as a token, as LRA's fixed pipeline
#                and our `listops` do (a harder-to-beat, fairer input for them, an easier one for us:
#                say so beside any comparison). Padding (id 0) is masked as keys in both; at most 2,000 tokens, padded
#                to 2,048 position rows (ours: max_len 2,048; no generated example is longer).
#                MAELRE's switch_threshold is 512 here (only maelre reads backbone_config.maelre): at
#                depth 2 its one merging block halves 2,048 tokens twice at most, to 512, so the
#                default threshold (dim = 64) is out of reach and the recipe would not validate.
#                `levers` adds operand shuffling (not Skyformer's); `plain` is Skyformer's setting.
#                Not matched by these groups, each with a setting for a new TAG (device_call.sh SET_TAG, e.g.
#                LRA="listops_sky:levers:0:skypool" SET_skypool="model.head_norm=false model.pool_divisor=length"):
#                  - a LayerNorm on the pooled vector in our head (Skyformer's has none; model.head_norm=false)
#                  - Skyformer's mean pools sum/2,048 over every position (padding outputs zeroed); ours
#                    is the mean over the real tokens (model.pool_divisor=length: their sum over the padded length)
#                Not matched (no setting for it here):
#                  - OneCycleLR starts at lr/25 (4e-6, not 0), ends at lr/250,000, and cycles AdamW's
#                    beta1 0.95 -> 0.85 (at step 1,000) -> 0.95; ours: beta1 0.9 fixed, eps 1e-8 (1e-6)
#                  - gradients clipped by value at 1 (ours: by norm at 1, the library's default)
#                  - fp16 autocast with the attention in fp32 (ours: bf16-mixed throughout)
#                  - dropout 0.1 on the embedded input (ours: none); best checkpoint kept only after
#                    20% of training (ours: from the start); each validation reads the next 62 x 32 =
#                    1,984 examples of an endlessly reshuffled dev stream, the test 1,984 of 2,000
#                    (drop_last; ours: all 2,000 each time); batches drawn uniformly, every sequence
#                    padded to 2,048 (ours: length-bucketed batches, data.bucket_by_length); data from
#                    LRA's release (ours: generated with the published procedure, the same sizes)
#                Settings changed on 2026-12-03 (model.head_hidden=128; before: a Linear head): they
#                apply to new runs only. A run that resumes trains from its own saved recipe.yaml (and
#                the call's SET), so a group started before, listops_sky_levers_s0_compiled (7% in),
#                resumes as it was. Run the new settings under a new TAG, e.g. device_call.sh
#                LRA="listops_sky:levers:0:sky2" (Skyformer's own setting, without operand shuffling:
#                LRA="listops_sky:plain:0:sky2"); the untagged listops_sky_levers_s0, whose folders are
#                lost, records old-setting curves in benchmarks/results/lra_learn/ and is not for reuse.
#   pathfinder   50,000 steps at batch 128, the lra_pathfinder recipe, on LRA's 200,000 images of
#                curv_contour_length_14 split 160,000 / 20,000 / 20,000 (generated once per call
#                with every core into $PF_ROOT, then read by all four runs)
#   pathfinder_sky  Skyformer's Pathfinder-32 config (pkuzengqi/Skyformer src/config.py `pathfinder`,
#                trained by src/main.py, model in src/models/model_LRA.py, model_transformer.py,
#                attention.py) on the same generated data as `pathfinder` ($PF_ROOT): 50,000 steps at
#                batch 128, dim 64, 2 layers, 2 heads of 32, MLP 128 (GELU), dropout 0.1 and attention
#                dropout 0.1, learned positions, pre-LN with a final LayerNorm, mean pooling, head
#                Linear(64, 128)-ReLU-Linear(128, 2) (model.head_hidden=128), AdamW lr 2e-4, no weight
#                decay, 312 warmup steps then linear decay (OneCycleLR), validation every 500 steps,
#                test of the best validation checkpoint. Pixels: the raw 8-bit value indexes a learned
#                table (nn.Embedding, std 0.02), which is our `plain` variant (pixel_embed=table);
#                `levers` departs from Skyformer (standardised pixels through a Linear, flips).
#                Zero-valued pixels are padding (data.adapter.mask_zero=true), as in Skyformer
#                (mask = input_ids != 0) and LRA's own encoder (src_padding_mask = inputs > 0):
#                ~89% of a Pathfinder-32 image is background 0, so attention reads only the ~110
#                lit pixels as keys; `pathfinder` attends over all 1,024. MAELRE's switch_threshold
#                is 256: at depth 2 its one merging block halves 1,024 pixels twice at most, so the
#                default (dim = 64) is out of reach. Not matched by these groups, each with a setting for a
#                new TAG (as for listops_sky):
#                  - the head's LayerNorm on the pooled vector (model.head_norm=false)
#                  - Skyformer's mean pools sum/1,024 over the lit pixels (masked outputs zeroed);
#                    ours is the mean over the lit pixels (sum/their count, ~110; model.pool_divisor=length)
#                  - dropout 0.1 on the embedded input (values and positions; model.input_dropout=0.1)
#                Not matched (no setting for it here):
#                  - OneCycleLR starts at lr/25 (8e-6, not 0), ends at lr/250,000, and cycles AdamW's
#                    beta1 0.95 -> 0.85 (at the peak) -> 0.95; ours: beta1 0.9 fixed, eps 1e-8 (1e-6)
#                  - gradients clipped by value at 1 (ours: by norm at 1, the library's default)
#                  - fp16 autocast with the attention in fp32 (ours: bf16-mixed throughout)
#                  - best checkpoint kept only after
#                    20% of training (ours: from the start); validation on 156 x 128 = 19,968 of the
#                    20,000 images, test on 19,968 (drop_last; ours: all); data from LRA's release
#                    (ours: generated with the published procedure, the same 80/10/10 sizes)
#                Differences from our `pathfinder` recipe (+ levers): dim 64 (128), depth 2 (4),
#                heads 2 (4; head dim 32 both), MLP 128 (256), attention dropout 0.1 (0), head
#                Linear-ReLU-Linear (Linear), lr 2e-4 (5e-4), weight decay 0 (0.05), linear decay after
#                312 warmup steps (cosine after 2,500), validation every 500 steps (1,250), pixel table
#                (levers: Linear on standardised pixels, flips), 0-valued pixels padding (tokens).
#                Same: batch 128, 50,000 steps, dropout 0.1, learned positions, pre-LN, mean pooling,
#                AdamW betas (0.9, 0.999), the data.
#                A step is ~5x cheaper: 0.16 M parameters (0.66-0.70 M; Skyformer's own count is 0.17 M with
#                its 512-row table) and 4.8x fewer multiply-adds (per token and block 8d^2 + 2Nd, N = 1,024),
#                though a GPU at width 64 gains less than that in step time
# VARIANT:
#   levers       the levers of issue 14 on: ListOps operand shuffling; for Pathfinder standardised
#                pixels (pixel_embed=linear) and random flips (pre-LN blocks and mean pooling are the
#                library's defaults, warmup then decay is the recipe's schedule)
#   plain        the recipe as it is, same budget (the ablation's baseline)
#   nomask       pathfinder_sky only: plain with every pixel a token (data.adapter.mask_zero=false), the
#                one Skyformer setting that `pathfinder` also lacks; with `masked`, the ablation of
#                zero-pixel masking (session 20: the transformer left chance within 1,500 steps in
#                pathfinder_sky plain, never in 38,264 steps of pathfinder levers)
#   masked       pathfinder only: levers with the 0-valued pixels as padding (data.adapter.mask_zero=true)
#   curriculum   levers + Pathfinder difficulties easy to hard: 2 epochs of curv_baseline, 2 of
#                curv_contour_length_9, then curv_contour_length_14 (Pathfinder only)
#   pretrain     levers, with the first PRETRAIN_FRACTION of the budget spent on `maelre pretrain`
#                (masked-token denoising: 10% of ListOps tokens, 50% of pixels) and the rest on
#                `maelre fit --init-from` it: the same total budget as the others
# SEED: trainer.seed (model init, data order, dropout, augmentation); the data is the same for
#   every seed. Run at least seeds 0 and 1; a seed stuck at chance is a result, never dropped.
#
# Chunks: every call trains each run until MINUTES after the script started (trainer.stop_at, a
# wall-clock deadline, ends it with a resumable checkpoint), then tests that partial model and
# packs the run. A watchdog (benchmarks/call_guard.sh) stops whatever still runs CALL_SECONDS -
# PACK_SECONDS after the start (SIGTERM: a checkpoint at the next step; then SIGKILL), so the
# packing always runs before the call's limit. What comes back in $OUT, per call (at most 5 files):
#   TASK_VARIANT_sSEED_BACKBONE.tar   the run folders to continue from (~13 MB each for these models:
#                                     the newest step checkpoint and the best weights; at most 16 MiB)
#   TASK_VARIANT_sSEED.json           curves (train loss by step, val acc/loss by validation) and
#                                     results (test/acc of the partial model, global_step) of every run;
#                                     checkpoint_step is newer than global_step when the watchdog
#                                     stopped a run before it tested
# Between calls, copy the .tar files into $STATE (default runs/lra_state, inside the git-ignored
# runs/: a path that is neither tracked nor ignored does not reach the device) and name it in the
# next call's `carry`; the script unpacks them and resumes.
# Keep the JSON (benchmarks/results/lra_learn/). One group (TASK VARIANT SEED) at a time fits
# the 64 MiB that travel each way; when every run has its full budget, the tar holds no
# checkpoints any more and the JSON is final. benchmarks/device_call.sh runs this script with
# PACK=0 and returns the run folders itself (split into parts when one is over 15 MiB).
#
# Environment: STATE (runs/lra_state), MINUTES (6: every run stops training this many minutes
# after the script started, so data generation, loading the data and restoring the checkpoint
# count: ~1.5 min for Pathfinder's 200,000 images on 16 cores, ~4.5 min for the curriculum's
# three folders, ~2 min for ListOps' 100,000 expressions; a machine still warm from the last call
# reuses them; at most CALL_SECONDS - PACK_SECONDS - TEST_SECONDS), CALL_SECONDS (540: the script
# has packed by then; keep it under the device call's limit), PACK_SECONDS (45), TEST_SECONDS (60),
# GRACE_SECONDS (15) (benchmarks/call_guard.sh), COMMITTED (benchmarks/results/lra_learn/GROUP_h200.json:
# a run these curves record is never restarted from step 0 on a machine that lacks its folder, unless
# FRESH_OK=1), MIN_PHASE_SECONDS (60: a pretraining or
# fine-tuning phase starts only with this long left before the deadline),
# BACKBONES (maelre,transformer,ecp,perceiver_ar),
# PRETRAIN_FRACTION (0.25), PF_ROOT (/tmp/pathfinder32), PF_IMAGES (200000 per difficulty),
# LISTOPS_ROOT (/tmp/listops), LISTOPS_EXAMPLES (100000; fewer PF_IMAGES or LISTOPS_EXAMPLES
# only for a smoke test, in another root: data once written is reused), SET (space-separated extra KEY=VALUE
# overrides for every run; then also set TAG, which names the group. A resumed run trains from its saved
# recipe.yaml plus SET, and maelre saves the recipe again at every fit, so a SET stays in a run's later calls;
# a backbone that starts afresh in an older group gets today's settings, not the group's), PYTHON (python3),
# PACK (1: tar each run folder into $OUT; 0: leave them in $STATE for the caller to pack),
# PROBE (1: after a Pathfinder call, benchmarks/pathfinder_probe.py scores each run's best checkpoint where the
# marker-distance shortcut is right and where it is wrong, into OUT/GROUP_probe_BACKBONE.json),
# CHECK (0: 1 validates every backbone's settings with `maelre check`, without data or training,
# and exits: `CHECK=1 bash benchmarks/lra_learn.sh listops_sky levers 0`).
# A smoke test on CPU (a few minutes):
#   OUT=/tmp/lra_smoke STATE=/tmp/lra_smoke/state LISTOPS_ROOT=/tmp/lra_smoke/listops LISTOPS_EXAMPLES=500 \
#   BACKBONES=maelre,transformer MINUTES=1.5 CALL_SECONDS=200 TAG=smoke \
#   SET="trainer.accelerator=cpu trainer.precision=32 data.num_workers=0 trainer.checkpoint_every_n_steps=5 trainer.val_every_n_steps=5" \
#   bash benchmarks/lra_learn.sh listops levers 0
set -euo pipefail
cd "$(dirname "$0")/.."

usage="usage: bash benchmarks/lra_learn.sh listops|listops_sky|pathfinder|pathfinder_sky levers|plain|nomask|masked|curriculum|pretrain SEED"
task=${1:?$usage}
variant=${2:?$usage}
seed=${3:?$usage}
OUT=${OUT:-benchmarks/results/gpu_out}
STATE=${STATE:-runs/lra_state}
MINUTES=${MINUTES:-6}
MIN_PHASE_SECONDS=${MIN_PHASE_SECONDS:-60}
BACKBONES=${BACKBONES:-maelre,transformer,ecp,perceiver_ar}
PRETRAIN_FRACTION=${PRETRAIN_FRACTION:-0.25}
PF_ROOT=${PF_ROOT:-/tmp/pathfinder32}
PF_IMAGES=${PF_IMAGES:-200000}
LISTOPS_ROOT=${LISTOPS_ROOT:-/tmp/listops}
LISTOPS_EXAMPLES=${LISTOPS_EXAMPLES:-100000}
PYTHON=${PYTHON:-python3}
group=${task}_${variant}_s${seed}${TAG:+_$TAG}
committed=${COMMITTED:-benchmarks/results/lra_learn/${group}_h200.json}  # the curves of the calls so far
export PYTHONPATH=.${PYTHONPATH:+:$PYTHONPATH} PYTHONUNBUFFERED=1
started=$(date +%s)
source benchmarks/call_guard.sh
guard_start
train_deadline=$(guard_train_deadline "$MINUTES")  # every run's trainer.stop_at

# ---------------------------------------------------------------- settings
common=(--set "trainer.seed=$seed" --set trainer.max_epochs=null --set trainer.early_stopping_patience=null
        --set trainer.enable_progress_bar=false)
case $task in
    listops|listops_sky)
        recipe=recipes/lra_listops.yaml
        settings=(--set "data.dataset={name: listops, root: $LISTOPS_ROOT}" --set data.cache=false --set data.num_workers=2 --set trainer.checkpoint_every_n_steps=500)
        levers=(--set "data.augment_inputs=[listops_shuffle]")
        if [[ $task == listops ]]; then
            total=5000
            settings+=(--set trainer.val_every_n_steps=250)
        else
            total=50000
            settings+=(--set model.dim=64 --set model.depth=2 --set model.heads=2 --set model.mlp_ratio=2.0
                       --set model.dropout=0.1 --set model.attn_dropout=0.1 --set optimizer.lr=0.0001
                       --set optimizer.weight_decay=0.0 --set schedule.kind=linear --set schedule.warmup_steps=1000
                       --set trainer.val_every_n_steps=500
                       --set model.backbone_config.maelre.switch_threshold=512)  # 2,048 tokens reach 512 at depth 2 (header)
            settings+=(--set model.head_hidden=128)
        fi
        ;;
    pathfinder|pathfinder_sky)
        recipe=recipes/lra_pathfinder.yaml
        total=50000
        settings=(--set "data.dataset={name: pathfinder, root: $PF_ROOT}" --set data.num_workers=3
                  --set trainer.checkpoint_every_n_steps=1000)
        levers=(--set data.adapter.pixel_embed=linear --set "data.augment_inputs=[hflip, vflip]")
        if [[ $task == pathfinder ]]; then
            settings+=(--set trainer.val_every_n_steps=1250)
        else
            settings+=(--set model.dim=64 --set model.depth=2 --set model.heads=2 --set model.mlp_ratio=2.0
                       --set model.dropout=0.1 --set model.attn_dropout=0.1 --set model.head_hidden=128
                       --set data.adapter.mask_zero=true --set optimizer.lr=0.0002 --set optimizer.weight_decay=0.0
                       --set schedule.kind=linear --set schedule.warmup_fraction=0.0 --set schedule.warmup_steps=312
                       --set trainer.val_every_n_steps=500
                       --set model.backbone_config.maelre.switch_threshold=256)  # 1,024 pixels reach 256 at depth 2 (header)
        fi
        ;;
    *) echo "lra_learn.sh: unknown task '$task'; $usage" >&2; exit 2 ;;
esac
case $variant in
    levers|pretrain) settings+=("${levers[@]}") ;;
    plain) ;;
    nomask|masked)
        [[ $task == pathfinder_sky && $variant == nomask || $task == pathfinder && $variant == masked ]] || {
            echo "lra_learn.sh: the nomask variant is for pathfinder_sky, masked for pathfinder" >&2; exit 2; }
        if [[ $variant == nomask ]]; then
            settings+=(--set data.adapter.mask_zero=false)
        else
            settings+=("${levers[@]}" --set data.adapter.mask_zero=true)
        fi
        ;;
    curriculum)
        [[ $task == pathfinder* ]] || { echo "lra_learn.sh: the curriculum variant is for pathfinder and pathfinder_sky" >&2; exit 2; }
        settings+=("${levers[@]}" --set "data.curriculum=[{epochs: 2, dataset: {difficulty: curv_baseline}}, {epochs: 2, dataset: {difficulty: curv_contour_length_9}}]")
        ;;
    *) echo "lra_learn.sh: unknown variant '$variant'; $usage" >&2; exit 2 ;;
esac
call_sets=()  # this call's own overrides: they apply to resumed runs too (phase)
for item in ${SET:-}; do call_sets+=(--set "$item"); done
settings+=("${call_sets[@]}")
pretrain_steps=0
if [[ $variant == pretrain ]]; then
    pretrain_steps=$("$PYTHON" -c "print(round($PRETRAIN_FRACTION * $total))")
fi
finetune_steps=$(( total - pretrain_steps ))
IFS=, read -ra names <<<"$BACKBONES"
if [[ ${CHECK:-0} == 1 ]]; then  # the settings as every run gets them, validated; no data, no training
    rc=0
    for backbone in "${names[@]}"; do
        "$PYTHON" -m maelre.cli check "$recipe" --set "model.backbone=$backbone" "${common[@]}" "${settings[@]}" \
            --set "trainer.max_steps=$finetune_steps" >/dev/null || { echo "lra_learn.sh: $backbone's settings do not validate (above)" >&2; rc=1; }
    done
    (( rc == 0 )) && echo "lra_learn.sh: $group's settings validate for ${names[*]}"
    exit $rc
fi
mkdir -p "$OUT" "$STATE/$group"

# ---------------------------------------------------------------- state and data
for tarball in "$STATE"/"$group"_*.tar; do
    [[ -e $tarball ]] || continue
    tar -xf "$tarball" -C "$STATE" && rm -f "$tarball"
done
data_ok=1
if [[ $task == pathfinder* ]]; then  # pathfinder and pathfinder_sky read the same generated images
    difficulties=(curv_contour_length_14)
    [[ $variant == curriculum ]] && difficulties+=(curv_baseline curv_contour_length_9)
    guarded "$PYTHON" benchmarks/lra_learn.py data "$PF_ROOT" "${difficulties[@]}" --n "$PF_IMAGES" || data_ok=0
else
    guarded "$PYTHON" benchmarks/lra_learn.py listops "$LISTOPS_ROOT" --n "$LISTOPS_EXAMPLES" || data_ok=0
fi

phase() {  # phase COMMAND RUN_DIR STEPS ARGS...: train (or resume) one run until the deadline
    # Returns 0 when the run has all its STEPS, 1 when it has not (yet), 2 on an error. Called
    # in `|| rc=$?`, where bash ignores `set -e`, so every failure is checked here by hand.
    local command=$1 run=$2 steps=$3 status resume=() rc=0
    shift 3
    status=$("$PYTHON" benchmarks/lra_learn.py status "$run" "$steps" --committed "$committed") || return 2
    [[ $status == done ]] && return 0
    if [[ $status == lost ]]; then
        if [[ ${FRESH_OK:-0} != 1 ]]; then
            echo "lra_learn.sh: $run has no checkpoint on this machine, but $committed records its training;" \
                 "carry its folder in (benchmarks/device_xfer.py carry benchmarks/results/lra_state_h200/$group/*/), or FRESH_OK=1 to start it again" >&2
            return 2
        fi
        status=new
    fi
    if (( $(date +%s) + MIN_PHASE_SECONDS >= train_deadline )); then  # too little time for setup and a step
        echo "lra_learn.sh: $run: $(( train_deadline - $(date +%s) )) s left before the deadline, under MIN_PHASE_SECONDS; a later call continues"
        return 1
    fi
    [[ $status == resume ]] && resume=(--resume)
    if [[ $status == resume && -f $run/recipe.yaml ]]; then
        # a resumed run trains on as it started, from its own saved recipe, whatever this script's settings
        # are today (maelre refuses to resume a run whose data or model settings changed), plus this call's SET
        set -- "$run/recipe.yaml" --no-progress "${call_sets[@]}"
    fi
    guarded "$PYTHON" -m maelre.cli "$command" "$@" --run-dir "$run" "${resume[@]}" \
        --set "trainer.max_steps=$steps" --set "trainer.stop_at=$train_deadline" || rc=$?
    (( rc == 0 || rc == 143 )) || return 2  # 143: the watchdog's SIGTERM stopped it; the next call resumes
    status=$("$PYTHON" benchmarks/lra_learn.py status "$run" "$steps") || return 2
    [[ $status == done ]] && return 0
    return 1
}

run_backbone() {  # run_backbone NAME: this call's share of the run (pretraining first in the pretrain variant)
    local backbone=$1 dir=$STATE/$group/$1 init=() rc=0
    local args=("$recipe" --no-progress --set "model.backbone=$backbone" "${common[@]}" "${settings[@]}")
    if (( pretrain_steps > 0 )); then
        phase pretrain "$dir/pretrain" "$pretrain_steps" "${args[@]}" || rc=$?
        (( rc == 2 )) && return 1
        (( rc == 1 )) && return 0  # pretraining continues in the next call
        init=(--init-from "$dir/pretrain")
    fi
    phase fit "$dir/fit" "$finetune_steps" "${args[@]}" "${init[@]}" || rc=$?
    (( rc != 2 ))
}

# ---------------------------------------------------------------- the runs, side by side
export OMP_NUM_THREADS=$(( $(nproc) / 4 > 0 ? $(nproc) / 4 : 1 ))
pids=()
failed=0
if (( ! data_ok )); then
    echo "lra_learn.sh: the data is not ready (see above); packing the state as it came" >&2
    failed=1
fi
for backbone in "${names[@]}"; do
    mkdir -p "$STATE/$group/$backbone"
    (( data_ok )) || continue
    run_backbone "$backbone" >"$STATE/$group/$backbone/call.log" 2>&1 &
    pids+=($!)
done
for i in "${!pids[@]}"; do
    if ! wait "${pids[$i]}"; then
        failed=1
        echo "== ${names[$i]} failed; the end of its log:"
        tail -20 "$STATE/$group/${names[$i]}/call.log"
    fi
done

# ---------------------------------------------------------------- pack for the next call
"$PYTHON" benchmarks/lra_learn.py curves "$STATE/$group" "$OUT/$group.json"
if [[ $task == pathfinder* && ${PROBE:-1} == 1 ]]; then  # path or marker distance? (benchmarks/pathfinder_probe.py, CPU)
    for backbone in "${names[@]}"; do  # guarded: past the call's deadline it is stopped, and only its JSON is missing
        best=$STATE/$group/$backbone/fit/checkpoints/best
        [[ -d $best ]] || continue
        guarded "$PYTHON" benchmarks/pathfinder_probe.py "$best" --images 2000 --out "$OUT/${group}_probe_$backbone.json" \
            >>"$STATE/$group/$backbone/call.log" 2>&1 || echo "lra_learn.sh: no shortcut probe of $backbone this call (its call.log says why)"
    done
fi
for backbone in "${names[@]}"; do
    dir=$STATE/$group/$backbone
    if [[ -d $dir/pretrain ]]; then  # once fine-tuning has a checkpoint, the pretraining one is not needed again
        drop=()
        [[ -d $dir/fit/checkpoints ]] && drop=(--drop-checkpoints)
        "$PYTHON" benchmarks/lra_learn.py prune "$dir/pretrain" "${drop[@]}"
    fi
    if [[ -d $dir/fit ]]; then  # a finished run keeps its results and logs only
        drop=()
        [[ $("$PYTHON" benchmarks/lra_learn.py status "$dir/fit" "$finetune_steps") == done ]] && drop=(--drop-checkpoints)
        "$PYTHON" benchmarks/lra_learn.py prune "$dir/fit" "${drop[@]}"
    fi
    [[ ${PACK:-1} == 1 ]] || continue
    tar -cf "$OUT/${group}_$backbone.tar" -C "$STATE" "$group/$backbone"
    size=$(stat -c %s "$OUT/${group}_$backbone.tar")
    if (( size > 16 * 1024 * 1024 )); then
        echo "lra_learn.sh: $OUT/${group}_$backbone.tar is $(( size / 1048576 )) MiB, over the 16 MiB a returned file may have" >&2
        failed=1
    fi
done
exit $failed
