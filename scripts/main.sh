#!/usr/bin/env bash
# Set up and run the main job end to end on the embedded Geant4 reference data.
# Extra arguments go to 'fastsim demo' (see 'fastsim demo --help').
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/setup.sh
export OMP_NUM_THREADS=${OMP_NUM_THREADS:-1} WANDB_MODE=${WANDB_MODE:-offline} MPLBACKEND=Agg
exec .venv/bin/fastsim demo "$@"
