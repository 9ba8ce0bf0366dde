#!/bin/bash
# The shipped default (issue 17): the pre-issue-17 default's two members, each averaged in
# weight space with its fine-tune A / B (runs.sh A B), then calibrated, exported, measured.
#   usage: docs/model/wild/ship.sh PREVIOUS_DEFAULT.safetensors RUNS_DIR EVALS_DIR A B TUNED_SHARE EPOCHS
#   e.g.   docs/model/wild/ship.sh previous.safetensors /work/runs /work/evals j k 0.5 14
# (PREVIOUS_DEFAULT: `git show 0c2ccf7:engines/weights/default.safetensors > previous.safetensors`)
set -e
previous=$1 runs=$2 evals=$3 a=$4 b=$5 share=$6 epochs=$7
[ -n "$epochs" ] || { echo "usage: $0 PREVIOUS RUNS EVALS A B TUNED_SHARE EPOCHS" >&2; exit 2; }
mkdir -p "$evals"
realtime ensemble "$runs/$a.safetensors" "$runs/$b.safetensors" -o "$runs/$a$b.safetensors"
realtime soup "$previous" "$runs/$a$b.safetensors" --weights "$(python -c "print(f'{1 - $share:g},$share')")" \
  -o "$runs/shipped_uncalibrated.safetensors" --trained-on \
  "Two MobileNetV3-small networks averaged. Each is the previous default's member (trained from scratch on UTKFace aligned & cropped, 21,716 faces, 85% split by capture key) averaged in weight space ($share of the fine-tune) with its own fine-tune of $epochs epochs on UTKFace + LFW detector crops (13,167 photos, 85% of the persons), genders balanced, wild augmentation, distilling HSE faceres (Apache-2.0; learned from VGGFace2 and IMDB-WIKI) and the previous default. UTKFace, VGGFace2 and IMDB-WIKI are for non-commercial research only and this model inherits that restriction. See MODEL_CARD.md."
# the shipped model levels its crops by the eyes (it was trained on aligned chips; measured in
# the model card's "Tilted heads": no change upright, +2 points on heads turned up to 30 degrees):
# calibrate fits it so and writes level_eyes into its meta
realtime calibrate "$runs/shipped_uncalibrated.safetensors" --data ../shared/data/utkface --format utkface --holdout 0.15 --cropped \
  --level-eyes -o engines/weights/default.safetensors --json docs/model/calibration/calibrate_utkface_holdout.json
realtime convert --format onnx -o engines/weights/default.onnx
realtime eval --no-second-opinion --data ../shared/data/utkface --format utkface --holdout 0.15 --cropped \
  --predictions "$evals/shipped_utk.csv" --json engines/weights/default.json
realtime eval --no-second-opinion --data ../shared/data/lfw --format csv --holdout 0.15 --predictions "$evals/shipped_lfw.csv" --json docs/model/wild/eval_shipped_lfw.json
realtime eval --no-second-opinion --data ../shared/data/utkface --format utkface --holdout 0.15 --context 2 \
  --predictions "$evals/shipped_det.csv" --json docs/model/wild/eval_shipped_det.json
realtime eval --no-second-opinion --data ../shared/data/lfw --format csv --predictions "$evals/shipped_lfw_all.csv" --json docs/model/calibration/eval_lfw_detector.json
