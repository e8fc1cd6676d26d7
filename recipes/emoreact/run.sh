#!/usr/bin/env bash
# NAC-TCN (Mehta & Yang 2023), Table 2: EmoReact AUC-ROC (macro over 8 labels), params, MACs.
#   recipes/emoreact/run.sh --root /data/EmoReact_V_1.0
here="$(cd "$(dirname "$0")" && pwd)"
source "$here/../lib.sh"
[ -n "$root" ] || { usage; exit 2; }

if run_stage 1 "prepare (videos → face crops, labels, official split)"; then
  "${emotk[@]}" prepare emoreact --root "$root"
fi
if run_stage 2 "extract regnet_y_800mf frame features (784-d, as the released EmoReact code)"; then
  "${emotk[@]}" extract --encoder regnet_y_800mf --weights "$weights" --image-size "$image_size" --quiet
fi
if run_stage 3 "split: official train/validation/test"; then
  "${emotk[@]}" split --official
fi
if run_stage 4 "train every model of Table 2 (128 frames per clip, last-step 8-label output)"; then
  train_all official 10 attn gru lstm gru_attn lstm_attn tcn tcan nactcn:sm nactcn:lg
fi
if run_stage 5 "report"; then
  "${emotk[@]}" report --metric auc --format md --out "$workspace/emoreact-table2.md"
fi
