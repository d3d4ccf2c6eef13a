#!/bin/bash
# A family of models under SLURM: one array task per slice of the description, each one `fastsim fit`.
#   fastsim family list FAMILY.yaml          # prints the sbatch line with the right --array range
#   sbatch --array=0-<n_slices - 1> scripts/slurm_family.sh FAMILY.yaml [extra fastsim fit options]
# Each task prepares its slice's training tensors (once), trains it in <workdir>/<slice>/ and records
# its best checkpoint in the family index (under a lock: tasks finishing together are safe). A task
# whose slice is already in the index does nothing, so resubmitting the array resumes the family.
# One GPU per task; for a multi-GPU slice combine with configs/trainer/ddp.yaml and --ntasks-per-node.
#SBATCH --job-name=fastsim-family
#SBATCH --ntasks=1
#SBATCH --gpus-per-task=1
#SBATCH --cpus-per-task=8
#SBATCH --time=24:00:00
#SBATCH --output=logs/%x-%A_%a.out
set -euo pipefail

if [[ $# -lt 1 ]]; then
  echo "usage: sbatch --array=0-N scripts/slurm_family.sh FAMILY.yaml [fastsim fit options]" >&2
  exit 2
fi
FAMILY=$(realpath "$1")
shift
TASK=${SLURM_ARRAY_TASK_ID:?"not an array task: submit with sbatch --array=0-N"}

export OMP_NUM_THREADS=1
export WANDB_MODE=offline

# line 1: the slice's run directory (or "done"), then the fit options, one a line
FIT_ARGS=$(fastsim family fit-args "$FAMILY" --slice "$TASK")
mapfile -t FIT <<< "$FIT_ARGS"
if [[ ${FIT[0]} == done ]]; then
  echo "slice $TASK of $FAMILY is already in its index: nothing to do"
  exit 0
fi
cd "${FIT[0]}"   # the slice's logs/ stay apart from the other slices'
srun fastsim fit "${FIT[@]:1}" "$@"
fastsim family record "$FAMILY" --slice "$TASK"
