#!/usr/bin/env bash
# Miskow (2022), Table 3.3, JAFFE column: the VGG / ResNet / ResNet-v2 family with SE, ECA, CBAM, protocol `miskow`
# (batch 4), evaluated leave-one-subject-out (10 subjects → --folds 10).
#   recipes/jaffe/run.sh --root /data/jaffe [--folds 10] [--stage N --stop-stage M] [--models "resnet50:cbam"]
here="$(cd "$(dirname "$0")" && pwd)"
folds=10   # this recipe's default (--folds overrides it)
source "$here/../lib.sh"
[ -n "$root" ] || { usage; exit 2; }
source "$here/../fer_lib.sh"

if run_stage 1 "prepare (SS.EEn.N.tiff → 7 classes; MTCNN face crops 48x48 grey)"; then
  "${emotk[@]}" prepare jaffe --root "$root" --quiet
fi
if run_stage 2 "split: leave-one-subject-out ($folds folds), checked for subject leakage"; then
  subject_folds jaffe
fi
if run_stage 3 "train every model of Table 3.3 (protocol miskow, batch 4)"; then
  train_miskow jaffe "subject-k$folds"
fi
if run_stage 4 "report (mean ± std over folds × seeds)"; then
  miskow_report jaffe
fi
