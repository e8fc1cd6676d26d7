# Shared by recipes/{fer2013,ckplus,jaffe}/run.sh (sourced after lib.sh): Miskow's model table.
# --models takes MODEL[:SIZE] entries; a MODEL without SIZE trains all four presets (base se eca cbam).
MISKOW_MODELS=(vgg16 vgg19 resnet50 resnet101 resnet152 resnetv2_50 resnetv2_101 resnetv2_152)
MISKOW_SIZES=(base se eca cbam)

train_miskow() {  # train_miskow DATASET SPLIT
  local dataset="$1" split="$2"
  local list=("${MISKOW_MODELS[@]}")
  if [ -n "$models" ]; then read -r -a list <<< "$models"; fi
  local extra=()
  if [ -n "$device" ]; then extra+=(--device "$device"); fi
  if [ -n "$epochs" ]; then extra+=(--epochs "$epochs"); fi
  for entry in "${list[@]}"; do
    local model="${entry%%:*}" sizes=("${MISKOW_SIZES[@]}")
    if [ "$entry" != "$model" ]; then sizes=("${entry#*:}"); fi
    for size in "${sizes[@]}"; do
      "${emotk[@]}" train "$model" --size "$size" --protocol miskow --dataset "$dataset" --split "$split" \
        --fold all --seeds "$seeds" --quiet "${extra[@]}"
    done
  done
}

subject_folds() {  # subject_folds DATASET: $folds subject-disjoint folds, then the leakage check
  "${emotk[@]}" split --dataset "$1" --by subject --folds "$folds"
  "${emotk[@]}" split --dataset "$1" --check "subject-k$folds"
}

miskow_report() {  # miskow_report DATASET: accuracy table → <workspace>/DATASET-table3.3.md
  "${emotk[@]}" report --metric acc --format md --out "$workspace/$1-table3.3.md"
}
