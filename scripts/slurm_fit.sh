#!/bin/bash
# Multi-node DDP training under SLURM: 2 nodes x 4 GPUs, one task per GPU.
#   sbatch scripts/slurm_fit.sh [extra fastsim fit options]
# Lightning detects SLURM (SLURM_NTASKS, SLURM_PROCID, SLURM_LOCALID, SLURM_NODELIST) and sets up
# the process group itself: do not launch torchrun in addition. Keep --nodes/--ntasks-per-node/
# --gpus-per-node equal to trainer.num_nodes/trainer.devices (configs/trainer/multinode.yaml).
#SBATCH --job-name=fastsim-fit
#SBATCH --nodes=2
#SBATCH --ntasks-per-node=4
#SBATCH --gpus-per-node=4
#SBATCH --cpus-per-task=8
#SBATCH --time=24:00:00
#SBATCH --output=logs/%x-%j.out
set -euo pipefail

# one data-loading worker per spare core; math libraries get one thread per task
export OMP_NUM_THREADS=1
# wandb writes offline into logs/; sync later with `wandb sync logs/wandb/offline-run-*`
export WANDB_MODE=offline
mkdir -p logs

srun fastsim fit \
  --config configs/model/wgan_gp.yaml \
  --config configs/data/photons.yaml \
  --config configs/trainer/multinode.yaml \
  --trainer.num_nodes "${SLURM_JOB_NUM_NODES}" \
  --trainer.devices "${SLURM_NTASKS_PER_NODE}" \
  --data.num_workers 6 \
  "$@"
