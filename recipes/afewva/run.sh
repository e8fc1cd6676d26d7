#!/usr/bin/env bash
# NAC-TCN (Mehta & Yang 2023), Table 3: AFEW-VA mood accuracy, mean ± std over subject folds.
#   recipes/afewva/run.sh --root /data/AFEW-VA
here="$(cd "$(dirname "$0")" && pwd)"
source "$here/../lib.sh"
[ -n "$root" ] || { usage; exit 2; }

if run_stage 1 "prepare (frames + landmarks → face crops, per-frame VA, mood labels)"; then
  "${emotk[@]}" prepare afewva --root "$root"
fi
if run_stage 2 "extract regnet_y_400mf frame features (440-d)"; then
  "${emotk[@]}" extract --encoder regnet_y_400mf --weights "$weights" --image-size "$image_size" --quiet
fi
if run_stage 3 "split: subject (actor) $folds-fold"; then
  "${emotk[@]}" split --by subject --folds "$folds"
  "${emotk[@]}" split --check "subject-k$folds"
fi
if run_stage 4 "train every model of Table 3 (32-frame clips)"; then
  train_all "subject-k$folds" 10 attn tcn gru lstm tcan lstm_attn gru_attn nactcn:lg nactcn:sm
fi
if run_stage 5 "report (mean ± std over folds × seeds)"; then
  "${emotk[@]}" report --metric acc --format md --out "$workspace/afewva-table3.md"
fi
