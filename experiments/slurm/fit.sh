#!/bin/bash
# One task of a Slurm fit (started by srun from the .sbatch files beside this one).
# Lightning reads its rank and the world size from SLURM_* variables; trainer.devices
# must equal --ntasks-per-node. The run directory is fixed per job, so a requeued job
# resumes from its own checkpoints (hpc_ckpt_*.ckpt or checkpoints/last.ckpt).
set -euo pipefail
config=$1
shift
# shellcheck disable=SC2086  # SMOOTHIE may be a command with arguments, e.g. "python -m smoothie_pl.cli"
exec ${SMOOTHIE:-smoothie} fit --config "$config" \
    --trainer.devices "$SLURM_NTASKS_PER_NODE" \
    --trainer.num_nodes "$SLURM_JOB_NUM_NODES" \
    --trainer.strategy ddp \
    --trainer.default_root_dir "${RUN_DIR:-runs/$SLURM_JOB_NAME-$SLURM_JOB_ID}" \
    "$@"
