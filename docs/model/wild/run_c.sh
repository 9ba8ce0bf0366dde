#!/bin/bash
# member 0 of the default, fine-tuned on UTKFace + LFW detector crops with the cached teachers
# (faceres + the default: soft targets, distill 0.5) and faceres' feature (weight 1)
cd /work/w17
export PYTHONPATH=/work/w17
exec /work/main/.venv/bin/python -m realtime.cli train \
  --data ../shared/data/utkface --format utkface --data /work/data/lfw_crops --format csv \
  --folds 1 --holdout 0.15 --arch mobilenetv3_small_100 --input-size 128 --crop-scale 1.15 \
  --epochs 3 --batch-size 128 --lr 1e-3 --weight-decay 0.02 --drop-rate 0.1 --label-smoothing 0.1 \
  --init engines/weights/default.safetensors --init-member 0 --wild-augment \
  --teacher-cache /work/data/teachers.npz --distill 0.5 --feature-weight 1 \
  --threads 1 --workers 0 --image-side 128 --seed 0 --out /work/runs/c --save /work/runs/c.safetensors "$@"
