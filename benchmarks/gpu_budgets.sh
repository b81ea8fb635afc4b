# Training budgets of the GPU accuracy groups, sourced by gpu_accuracy.sh and probes.sh
# (bash arrays of `maelre lra` options; not meant to be run on its own).
#
# Steps are the budget (the same for every backbone); --max-minutes only guards the call's
# time. Measured on an H100 (bf16), one run at a time, steps/s of maelre, transformer, ecp, perceiver_ar:
# Pathfinder (batch 128) 19, 32, 26, 46; ListOps (batch 32, 2,048 bytes) 19, 8.3, 31, 9.1;
# drawing 1,000 Pathfinder images takes about 4 s, 1,000 ListOps examples about 1 s.
# The budgets below are for JOBS=4 (four runs sharing the GPU, each drawing its own data);
# with JOBS=1 lower --budget-steps so the four runs fit the sweep's 8 minutes.
# ListOps' recipe early-stops on val/acc; that is off so every backbone takes the same steps.
# ListOps: LRA's 5,000 steps of 32 examples, on half of LRA's training set (48,000 examples,
# drawn in ~35 s), LRA's validation and test sizes.
listops=(--tasks listops --budget-steps 5000 --max-minutes 7.5
         --set data.dataset.n_train=48000 --set data.dataset.n_val=2000 --set data.dataset.n_test=2000
         --set schedule.warmup_steps=500 --set trainer.early_stopping_patience=null)
pathfinder=(--tasks pathfinder --budget-steps 3000 --max-minutes 6.5 --set data.dataset.n_jobs=4
            --set data.dataset.n_train=30000 --set data.dataset.n_val=500 --set data.dataset.n_test=2000)
fsdd=(--tasks fsdd --max-minutes 2 --set trainer.precision=bf16-mixed)
standin=(--tasks scifar_standin --budget-steps 3000 --max-minutes 6)
