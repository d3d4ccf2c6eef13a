#!/usr/bin/env bash
# Set up and run the default test suite (everything not marked slow). Extra arguments go to pytest.
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/setup.sh
# One BLAS/OpenMP thread per process: on 2 cores this is several times faster for small MLPs.
export OMP_NUM_THREADS=${OMP_NUM_THREADS:-1} WANDB_MODE=${WANDB_MODE:-offline} MPLBACKEND=Agg
# In CI (CI=true) the tests marked slow run too: together they take about 2 minutes here.
if [[ "${CI:-}" == "true" ]]; then
  set -- -m "slow or not slow" "$@"
fi
exec .venv/bin/python -m pytest "$@"
