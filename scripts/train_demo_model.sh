#!/usr/bin/env bash
# Reproduces the shipped demo checkpoint (models/demo) from scratch with the product's own commands.
# Phantom tissue only: the demo models procedural phantoms, not real renal tissue.
#   bash scripts/train_demo_model.sh [WORK_DIR]     (default runs/demo; about 1 h on a 2-core CPU)
set -euo pipefail
cd "$(dirname "$0")/.."
WORK=${1:-runs/demo}
RL=${RL:-.venv/bin/renal-ldm}
VAE_STEPS=${VAE_STEPS:-400}
LDM_STEPS=${LDM_STEPS:-1500}
mkdir -p "$WORK"

# 1. 3000 phantom patches at 128 px (structure sizes are in pixels, so 256 px samples show a wider field).
[ -f "$WORK/data/captions.jsonl" ] || $RL phantom --out "$WORK/data" --n 3000 --size 128 --seed 1000 --workers 2

# 2. The VQ-f4 autoencoder (reports held-out PSNR).
[ -f "$WORK/vae/renal_ldm.json" ] || $RL train-vae --data "$WORK/data" --config demo --out "$WORK/vae" \
  --max-steps "$VAE_STEPS" --batch-size 8 --lr 2e-4 --no-progress

# 3. The latent diffusion model. Trained from scratch (the reference fine-tuned PathLDM's UNet), so it uses a
#    higher learning rate and a shorter warm-up than the reference's 2.5e-5 / 1000 steps, and keeps an EMA.
$RL train --data "$WORK/data" --config demo --vae "$WORK/vae" --out "$WORK/ldm" --max-steps "$LDM_STEPS" \
  --batch-size 16 --lr 1e-4 --warmup-steps 200 --checkpoint-every 100 --ema --ema-decay 0.999 --no-progress \
  $( [ -d "$WORK/ldm" ] && echo --resume )

echo "demo model trained: $WORK/ldm/model (copy it to models/demo)"
