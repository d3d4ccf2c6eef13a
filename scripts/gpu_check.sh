#!/bin/bash
# One check of the package on a machine with a GPU, in <= 10 minutes; prints one table.
#   bash scripts/gpu_check.sh [WORKDIR]
# 1. both models (WGAN-GP, VAE; the committed configs) trained for a fixed number of steps on the
#    GPU (configs/trainer/gpu.yaml): optimiser steps/s, start-up included;
# 2. `fastsim generate` from the WGAN-GP checkpoint: 10^6 showers at batch 10^4 and 10^5, fewer at
#    batch 1 (2000) and 100 (10^5), log-uniform 256 MeV-65.5 GeV (the reference's range), showers/s
#    of each (gzip level 4 output included);
# 3. the DDP config (configs/trainer/ddp.yaml) on every GPU present, the same steps.
# Data: the embedded Geant4 reference (9000 photon showers, dataset 1) as training tensors.
# Environment: GPU_CHECK_DEVICE=cpu runs it all on the CPU (DDP: 2 CPU processes);
# GPU_CHECK_QUICK=1 shrinks every budget (tests/test_gpu_check.py runs both on CPU: the script is
# known to work end to end apart from the device).
set -euo pipefail
DEVICE=${GPU_CHECK_DEVICE:-cuda}
QUICK=${GPU_CHECK_QUICK:-0}
WORK=${1:-$(mktemp -d -t fastsim_gpu_check.XXXXXX)}
mkdir -p "$WORK"
FASTSIM=${FASTSIM:-fastsim}
PY=${PYTHON:-python}
export WANDB_MODE=${WANDB_MODE:-offline} OMP_NUM_THREADS=${OMP_NUM_THREADS:-1}

if [[ $QUICK == 1 ]]; then
  STEPS=(12 12); GEN=("1:20" "100:400" "1000:2000"); DDP_STEPS=12
  SMALL=(--model.init_args.generator_hidden "[16, 32]" --model.init_args.critic_hidden "[32, 32]"
         --model.init_args.encoder_hidden "[32]" --model.init_args.decoder_hidden "[32]")
else
  STEPS=(3000 1000); GEN=("1:2000" "100:100000" "10000:1000000" "100000:1000000"); DDP_STEPS=3000
  SMALL=()
fi
if [[ $DEVICE == cpu ]]; then
  TRAINER=(--config cpu); DDP=(--config ddp --trainer.accelerator cpu --trainer.devices 2); N_DEV=2
else
  TRAINER=(--config gpu); N_DEV=$($PY -c "import torch; print(torch.cuda.device_count())")
  DDP=(--config ddp --trainer.devices "$N_DEV")
fi
ROWS=()
row() { ROWS+=("$(printf '%-44s %16s   %s' "$1" "$2" "$3")"); }
now() { date +%s.%N; }
rate() { $PY -c "import sys; print(f'{float(sys.argv[1]) / (float(sys.argv[3]) - float(sys.argv[2])):,.1f}')" "$@"; }

REF=$($PY -c "import fastsim, os; print(os.path.join(os.path.dirname(fastsim.__file__), 'refdata', 'photons_ds1_g4.h5'))")
TENSORS=$WORK/train.h5
[[ -f $TENSORS ]] || $FASTSIM prep-train "$REF" -o "$TENSORS" --geometry 1-photons --no-progress > /dev/null

fit() {  # fit NAME MODEL STEPS [options]: trains in $WORK/NAME, prints nothing, sets T0/T1
  local name=$1 model=$2 steps=$3; shift 3
  local opts=()
  for o in "${SMALL[@]}"; do opts+=("$o"); done
  if [[ $model == vae ]]; then opts=("${opts[@]:4}"); else opts=("${opts[@]:0:4}"); fi
  rm -rf "${WORK:?}/$name"; mkdir -p "$WORK/$name"
  T0=$(now)
  (cd "$WORK/$name" && $FASTSIM fit --config "$model" --config photons --config csv "$@" \
     --data.train_file "$TENSORS" --data.num_workers 2 --trainer.max_steps "$steps" --trainer.max_epochs -1 \
     --trainer.limit_val_batches 0 --trainer.enable_progress_bar false "${opts[@]}" > fit.log 2>&1) \
     || { echo "gpu_check: $name failed, see $WORK/$name/fit.log" >&2; tail -20 "$WORK/$name/fit.log" >&2; exit 1; }
  T1=$(now)
}

fit wgan_gp wgan_gp "${STEPS[0]}" "${TRAINER[@]}"
row "WGAN-GP fit, $DEVICE (${STEPS[0]} optimiser steps)" "$(rate "${STEPS[0]}" "$T0" "$T1") steps/s" "start-up included"
fit vae vae "${STEPS[1]}" "${TRAINER[@]}"
row "VAE fit, $DEVICE (${STEPS[1]} steps)" "$(rate "${STEPS[1]}" "$T0" "$T1") steps/s" "start-up included"

CKPT=$(ls "$WORK"/wgan_gp/logs/*/*/checkpoints/last.ckpt 2>/dev/null | head -1 || true)
[[ -n $CKPT ]] || CKPT=$(find "$WORK/wgan_gp" -name last.ckpt | head -1)
for spec in "${GEN[@]}"; do
  batch=${spec%%:*}; n=${spec##*:}
  out=$($FASTSIM generate --checkpoint "$CKPT" -o "$WORK/gen.h5" --overwrite --log-uniform 256 65536 --n "$n" \
        --batch-size "$batch" --device "$DEVICE" --no-progress)
  # "<file>: N showers on DEVICE in S s (X µs/shower)": showers/s of the whole run (writing included)
  us=$(sed -E 's/.*\(([0-9.]+) .s\/shower\).*/\1/' <<< "$out")
  row "fastsim generate, batch $batch ($n showers)" "$($PY -c "print(f'{1e6 / $us:,.0f}')") showers/s" "$out"
done

fit ddp wgan_gp "$DDP_STEPS" "${DDP[@]}"
row "WGAN-GP fit, DDP on $N_DEV devices ($DDP_STEPS steps)" "$(rate "$DDP_STEPS" "$T0" "$T1") steps/s" \
    "$(grep -o 'GLOBAL_RANK: [0-9]*, MEMBER: [0-9]*/[0-9]*' "$WORK/ddp/fit.log" | sort -u | tr '\n' ' ')"

echo
echo "gpu_check on $DEVICE ($( [[ $DEVICE == cpu ]] && nproc || nvidia-smi --query-gpu=name --format=csv,noheader | head -1 ), quick=$QUICK), work dir $WORK"
printf '%-44s %16s   %s\n' "what" "rate" "notes"
for r in "${ROWS[@]}"; do echo "$r"; done
