#!/usr/bin/env bash
# Miskow (2022), Table 3.3, CK+ column: accuracy of VGG-16/19, ResNet-50/101/152 and ResNet-v2-50/101/152,
# each plain and with SE, ECA, CBAM, on 48x48 grey face crops, protocol `miskow`.
#   recipes/ckplus/run.sh --root /data/CK+ [--folds 10] [--stage N --stop-stage M] [--models "vgg16:se resnet50"]
# Stage 2 makes subject-disjoint folds (the default here, unlike the dissertation's per-image split, which
# leaks subjects: see README.md). --models takes MODEL or MODEL:SIZE (SIZE base|se|eca|cbam; MODEL alone = all four).
here="$(cd "$(dirname "$0")" && pwd)"
folds=10   # this recipe's default (--folds overrides it)
source "$here/../lib.sh"
[ -n "$root" ] || { usage; exit 2; }
source "$here/../fer_lib.sh"

if run_stage 1 "prepare (labelled sequences: last 3 frames, contempt kept → 7 classes; MTCNN face crops 48x48 grey)"; then
  "${emotk[@]}" prepare ckplus --root "$root" --quiet
fi
if run_stage 2 "split: $folds subject-disjoint folds, checked for subject leakage"; then
  subject_folds ckplus
fi
if run_stage 3 "train every model of Table 3.3 (protocol miskow: Adam 1e-4, batch 16, flip + zoom, early stop on val loss)"; then
  train_miskow ckplus "subject-k$folds"
fi
if run_stage 4 "report (mean ± std over folds × seeds)"; then
  miskow_report ckplus
fi
