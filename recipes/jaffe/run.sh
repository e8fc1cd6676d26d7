#!/usr/bin/env bash
# Miskow (2022), Table 3.3, JAFFE column: the VGG / ResNet / ResNet-v2 family with SE, ECA, CBAM, protocol `miskow`
# (batch 4), evaluated leave-one-subject-out (10 subjects → --folds 10).
#   recipes/jaffe/run.sh --root /data/jaffe [--folds 10] [--stage N --stop-stage M] [--models "resnet50:cbam"]
here="$(cd "$(dirname "$0")" && pwd)"
case " $* " in *" --folds "*) folds_given=1 ;; *) folds_given=0 ;; esac
source "$here/../lib.sh"
[ -n "$root" ] || { usage; exit 2; }
[ "$folds_given" = 1 ] || folds=10
source "$here/../fer_lib.sh"

if run_stage 1 "prepare (SS.EEn.N.tiff → 7 classes; MTCNN face crops 48x48 grey)"; then
  "${emotk[@]}" prepare jaffe --root "$root" --quiet
fi
if run_stage 2 "split: leave-one-subject-out ($folds folds), checked for subject leakage"; then
  "${emotk[@]}" split --dataset jaffe --by subject --folds "$folds"
  "${emotk[@]}" split --dataset jaffe --check "subject-k$folds"
fi
if run_stage 3 "train every model of Table 3.3 (protocol miskow, batch 4)"; then
  train_miskow jaffe "subject-k$folds"
fi
if run_stage 4 "report (mean ± std over folds × seeds)"; then
  "${emotk[@]}" report --metric acc --format md --out "$workspace/jaffe-table3.3.md"
fi
