#!/bin/bash
# The four fine-tunes of the model card's "Faces in the wild" table, as they ran
# (2 CPU cores; the teacher cache from `realtime teach`, the LFW crops from `realtime facecrops`):
#   realtime facecrops --data ../shared/data/lfw --format csv --out /work/data/lfw_crops
#   realtime teach --data ../shared/data/utkface --format utkface --data /work/data/lfw_crops --format csv -o /work/data/teachers.npz
# m and n train on crops levelled by the eyes, and their teachers ran on those (cut all the
# way level, before engines.crops.LEVEL_DEADBAND; the same commands now leave tilts up to 10 degrees):
#   realtime facecrops --data ../shared/data/lfw --format csv --out /work/data/lfw_level --level-eyes
#   realtime teach --data ../shared/data/utkface --format utkface --data /work/data/lfw_level --format csv \
#     -o /work/data/teachers_level.npz --model /work/runs/previous_default.safetensors
# o and p read LFW cut wider (1.5x the box, 224 px; training takes the model's 1.15x from it) and a
# cache where faceres saw the photo's own 1.5x framing and its mirror (`realtime teach` since then):
#   realtime facecrops --data ../shared/data/lfw --format csv --out /work/data/lfw_wide --crop-scale 1.5 --side 224
#   realtime teach --data ../shared/data/utkface --format utkface --data /work/data/lfw_wide --format csv \
#     -o /work/data/teachers_wide.npz --model /work/runs/previous_default.safetensors
# usage: runs.sh a|b|...|p   (d ran with --threads 2, the others with --threads 1;
#   e, f, g and h ran side by side on the 2 cores; j, k and l too; m and n too; o and p too)
# Every run starts from the default that came before issue 17's first ship (commit 0c2ccf7):
#   git show 0c2ccf7:engines/weights/default.safetensors > /work/runs/previous_default.safetensors
set -e
init=${INIT:-/work/runs/previous_default.safetensors}
crops=/work/data/lfw_crops cache=/work/data/teachers.npz
case $1 in m|n) crops=/work/data/lfw_level cache=/work/data/teachers_level.npz ;;
           o|p) crops=/work/data/lfw_wide cache=/work/data/teachers_wide.npz ;; esac
run() {  # NAME MEMBER EXTRA...
  name=$1 member=$2; shift 2
  realtime train --data ../shared/data/utkface --format utkface --data "$crops" --format csv \
    --folds 1 --holdout 0.15 --arch mobilenetv3_small_100 --input-size 128 --crop-scale 1.15 \
    --epochs 3 --batch-size 128 --weight-decay 0.02 --drop-rate 0.1 --label-smoothing 0.1 \
    --init "$init" --init-member "$member" --wild-augment \
    --workers 0 --image-side 128 --seed 0 --out "/work/runs/$name" --save "/work/runs/$name.safetensors" "$@"
}
teachers=(--teacher-cache "$cache" --feature-weight 1 --no-calibrate-teachers)  # a-f ran before teachers were re-centred
which=$1; shift  # any further arguments go to every run, e.g. --resume
case $which in
  a) run a 0 --lr 1e-3 --threads 1 "$@" ;;                                    # labels only
  b) run b 1 --lr 1e-3 --threads 1 "${teachers[@]}" --distill 0.5 "$@" ;;     # member 1 + teachers
  c) run c 0 --lr 1e-3 --threads 1 "${teachers[@]}" --distill 0.5 "$@" ;;     # member 0 + teachers
  d) run d 0 --lr 5e-4 --threads 2 "${teachers[@]}" --distill 0.7 "$@" ;;     # gentler
  # c's recipe for 8 epochs, genders balanced but UTKFace's races as they come:
  e) run e 0 --lr 1e-3 --threads 1 "${teachers[@]}" --distill 0.5 --no-balance-race --epochs 8 "$@" ;;
  f) run f 1 --lr 1e-3 --threads 1 "${teachers[@]}" --distill 0.5 --no-balance-race --epochs 8 "$@" ;;
  # e and f with each teacher's gender re-centred on each set's training faces:
  g) run g 0 --lr 1e-3 --threads 1 "${teachers[@]}" --calibrate-teachers --distill 0.5 --no-balance-race --epochs 8 "$@" ;;
  h) run h 1 --lr 1e-3 --threads 1 "${teachers[@]}" --calibrate-teachers --distill 0.5 --no-balance-race --epochs 8 "$@" ;;
  # g without the feature term (soft targets alone):
  i) run i 0 --lr 1e-3 --threads 1 "${teachers[@]}" --calibrate-teachers --distill 0.5 --no-balance-race --epochs 8 --feature-weight 0 "$@" ;;
  # i's recipe for 14 epochs, both members, and member 0 leaning more on the teachers:
  j) run j 0 --lr 1e-3 --threads 1 "${teachers[@]}" --calibrate-teachers --distill 0.5 --no-balance-race --epochs 14 --feature-weight 0 "$@" ;;
  k) run k 1 --lr 1e-3 --threads 1 "${teachers[@]}" --calibrate-teachers --distill 0.5 --no-balance-race --epochs 14 --feature-weight 0 "$@" ;;
  l) run l 0 --lr 1e-3 --threads 1 "${teachers[@]}" --calibrate-teachers --distill 0.8 --no-balance-race --epochs 14 --feature-weight 0 "$@" ;;
  # i's recipe on both members, on levelled crops (the model's meta then says level_eyes):
  m) run m 0 --lr 1e-3 --threads 1 "${teachers[@]}" --calibrate-teachers --distill 0.5 --no-balance-race --epochs 8 --feature-weight 0 --level-eyes "$@" ;;
  n) run n 1 --lr 1e-3 --threads 1 "${teachers[@]}" --calibrate-teachers --distill 0.5 --no-balance-race --epochs 8 --feature-weight 0 --level-eyes "$@" ;;
  # i's recipe on both members, the teachers at their own framing (the wider crops):
  o) run o 0 --lr 1e-3 --threads 1 "${teachers[@]}" --calibrate-teachers --distill 0.5 --no-balance-race --epochs 8 --feature-weight 0 "$@" ;;
  p) run p 1 --lr 1e-3 --threads 1 "${teachers[@]}" --calibrate-teachers --distill 0.5 --no-balance-race --epochs 8 --feature-weight 0 "$@" ;;
  *) echo "usage: $0 a|b|c|d|e|f|g|h|i|j|k|l|m|n|o|p" >&2; exit 2 ;;
esac
# then: realtime ensemble X.safetensors Y.safetensors -o XY.safetensors; realtime eval ... (see the model card)
