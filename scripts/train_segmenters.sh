#!/usr/bin/env bash
# Reproduces the two shipped segmenters with the product's own commands, then copies the weights, config and
# metrics into models/ (the training runs stay in WORK_DIR, never in the repository).
#   bash scripts/train_segmenters.sh [glomeruli|phantom|both] [WORK_DIR]   (default both, runs/segmenters)
# The glomerulus members took 48 min (one thread) and 24 min (two threads), the phantom run about 30 min (two
# threads), on the 2-core development machine; EPOCHS_* bound them.
# kidney-pas (../shared/data/kidney-pas, CC BY 4.0, Bueno et al.) is read in place through symbolic links.
set -euo pipefail
cd "$(dirname "$0")/.."
WHICH=${1:-both}
WORK=${2:-runs/segmenters}
RL=${RL:-.venv/bin/renal-ldm}
PAS=${PAS:-../shared/data/kidney-pas}
EPOCHS_GLOMERULI=${EPOCHS_GLOMERULI:-40}  # the cosine learning rate spans them (another count: another run)
EPOCHS_PHANTOM=${EPOCHS_PHANTOM:-20}
VAL_TILES=${VAL_TILES:-"10003 10064 10169 10220"}  # held out BY TILE: 4 of the 16 tiles, glomerulus area 3-12 %
mkdir -p "$WORK"

ship() {  # ship RUN DEST: the best epoch's weights and config, and the per-epoch metrics
  mkdir -p "$2"
  cp "$1/segmenter.json" "$1/segmenter.safetensors" "$1/metrics.jsonl" "$2/"
}

if [ "$WHICH" = glomeruli ] || [ "$WHICH" = both ]; then
  # 12 training tiles and 4 validation tiles, whole 1024 px tiles (random crops are cut in training)
  PAS_ABS=$(cd "$PAS" && pwd)
  rm -rf "$WORK/pas-train" "$WORK/pas-val"
  mkdir -p "$WORK/pas-train/images" "$WORK/pas-train/masks" "$WORK/pas-val/images" "$WORK/pas-val/masks"
  for image in "$PAS_ABS"/images/*.png; do
    stem=$(basename "$image" .png)
    split=pas-train
    case " $VAL_TILES " in *" $stem "*) split=pas-val ;; esac
    ln -s "$image" "$WORK/$split/images/$stem.png"
    ln -s "$PAS_ABS/masks/$stem.png" "$WORK/$split/masks/$stem.png"
  done
  # Two members, each at half resolution (--downsample 2: a 370 px receptive field for glomeruli of 150-400 px;
  # masks come back at full resolution and validation Dice is measured there), 244 px crops of the 512 px shrunk
  # tiles, all eight flips/rotations, mild stain jitter, a cosine learning rate over the whole run:
  # 1. the base recipe (one thread, 48 min); 2. twice the crops per epoch, each magnified by 0.8-1.25 (two
  # threads, 24 min). They fail on different tiles, so the shipped segmenter averages them (below).
  common=(--data "$WORK/pas-train" --val-data "$WORK/pas-val" --binary-class Glomeruli --classes glomeruli
    --config small-gn --downsample 2 --epochs "$EPOCHS_GLOMERULI" --crop 244 --batch-size 4 --lr 2e-3
    --lr-schedule cosine --rotations --stain-jitter 0.1 --patience "$EPOCHS_GLOMERULI" --monitor val_dice --seed 0
    --no-progress)
  $RL train-segmenter "${common[@]}" --out "$WORK/base-recipe" --crops-per-image 16 --threads 1 \
    $( [ -f "$WORK/base-recipe/train_state.pt" ] && echo --resume )
  $RL train-segmenter "${common[@]}" --out "$WORK/scale-jitter" --crops-per-image 32 --scale-jitter 0.25 \
    --threads 2 $( [ -f "$WORK/scale-jitter/train_state.pt" ] && echo --resume )
  # The shipped segmenter: both members, each also run on the image magnified by 0.8 and 1.25 (the scale-jitter
  # member's training range), probabilities averaged; its Dice on the held-out tiles goes into its manifest.
  rm -rf models/segmenter-glomeruli-pas/members models/segmenter-glomeruli-pas/segmenter_ensemble.json
  $RL ensemble-segmenters --members "$WORK/base-recipe" "$WORK/scale-jitter" --scales 0.8,1,1.25 \
    --out models/segmenter-glomeruli-pas --val-data "$WORK/pas-val" --binary-class Glomeruli
fi

if [ "$WHICH" = phantom ] || [ "$WHICH" = both ]; then
  # The judge of the demo model's samples (evaluate-captions, the realism test's features). It learns from phantom
  # patches (the demo model's tissue) AND the same patches encoded and decoded by the demo model's autoencoder,
  # because generated images carry that autoencoder's softness and a judge of sharp phantoms only reads them short;
  # and from whole 128 px patches besides 256 px ones, because it judges 128 px samples, whose every pixel is near
  # the mirrored margin: a judge that saw mostly real context took structures cut by the border for glomeruli
  # (models/segmenter-phantom/README.md). 288 + 288 training and 72 + 72 validation phantoms, separate seeds.
  # Retrain it when the demo model's autoencoder changes.
  [ -f "$WORK/phantom-train/captions.jsonl" ] || $RL phantom --out "$WORK/phantom-train" --n 288 --size 256 --seed 5000
  [ -f "$WORK/phantom-val/captions.jsonl" ] || $RL phantom --out "$WORK/phantom-val" --n 72 --size 256 --seed 7000
  [ -f "$WORK/phantom-train-128/captions.jsonl" ] || $RL phantom --out "$WORK/phantom-train-128" --n 288 --size 128 \
    --seed 8000
  [ -f "$WORK/phantom-val-128/captions.jsonl" ] || $RL phantom --out "$WORK/phantom-val-128" --n 72 --size 128 \
    --seed 8500
  for split in phantom-train phantom-val phantom-train-128 phantom-val-128; do
    [ -f "$WORK/$split-ae/captions.jsonl" ] || $RL autoencode --model models/demo --data "$WORK/$split" \
      --out "$WORK/$split-ae" --no-progress
  done
  manifest() {  # manifest SET...: one {"image", "mask"} row per patch of each set, paths relative to WORK
    for set in "$@"; do
      for image in "$WORK/$set"/images/*.png; do
        name=$(basename "$image")
        printf '{"image": "%s/images/%s", "mask": "%s/masks/%s"}\n' "$set" "$name" "$set" "$name"
      done
    done
  }
  manifest phantom-train phantom-train-ae phantom-train-128 phantom-train-128-ae >"$WORK/judge-train.jsonl"
  manifest phantom-val phantom-val-ae phantom-val-128 phantom-val-128-ae >"$WORK/judge-val.jsonl"
  # --crop 128: the network's valid output is 132 px (a 128 px patch whole, mirrored 4 px beyond two edges)
  $RL train-segmenter --data "$WORK/judge-train.jsonl" --val-data "$WORK/judge-val.jsonl" --classes all \
    --config small --out "$WORK/phantom-judge" --epochs "$EPOCHS_PHANTOM" --crop 128 --batch-size 8 --patience 8 \
    --seed 0 --threads 2 --no-progress $( [ -f "$WORK/phantom-judge/train_state.pt" ] && echo --resume )
  ship "$WORK/phantom-judge" models/segmenter-phantom
fi
