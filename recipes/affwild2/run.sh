#!/usr/bin/env bash
# NAC-TCN (Mehta & Yang 2023), Table 1: Aff-Wild2 validation CCC, params, MACs.
#   recipes/affwild2/run.sh --root /data/ABAW [--stage N --stop-stage M]
here="$(cd "$(dirname "$0")" && pwd)"
source "$here/../lib.sh"
[ -n "$root" ] || { usage; exit 2; }

if run_stage 1 "prepare (ABAW crops and VA annotations → manifest, per-frame labels)"; then
  "${emotk[@]}" prepare affwild2 --root "$root"
fi
if run_stage 2 "extract regnet_y_400mf frame features (440-d)"; then
  "${emotk[@]}" extract --encoder regnet_y_400mf --weights "$weights" --image-size "$image_size" --quiet
fi
# Table 1 is the official protocol: train on Train_Set, report on Validation_Set. No subject folds are
# made here (stage 4 would not use them); --folds is ignored by this recipe.
if run_stage 3 "split: official train/validation, checked for subject leakage"; then
  "${emotk[@]}" split --official
  "${emotk[@]}" split --check official
fi
if run_stage 4 "train every model of Table 1 on the official split (10 epochs, seeds $seeds)"; then
  train_all official 10 attn tcn gru lstm gru_attn lstm_attn tcan transformer nactcn:sm nactcn:lg
fi
if run_stage 5 "report (mean ± std over seeds)"; then
  "${emotk[@]}" report --metric ccc --format md --out "$workspace/affwild2-table1.md"
fi
