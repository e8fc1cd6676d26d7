# Shared option parsing and stage control for recipes/<dataset>/run.sh (ESPnet style).
# Sourced, not run. Every stage is restartable: emotk skips work that is already done.
set -euo pipefail

root=""              # raw dataset folder, as distributed
workspace="emotk-data"
stage=1
stop_stage=100
epochs=""            # empty: the recipe's paper setting
seeds="${seeds:-1,2,3}"   # a recipe may preset its paper's seeds before sourcing this file
folds="${folds:-5}"  # subject folds; a recipe may preset its own before sourcing this file. (AFEW-VA's table; the AffWild2 and EmoReact recipes use official splits)
weights="imagenet"   # imagenet | none | PATH (none: offline smoke tests)
image_size=224
device=""
models=""            # empty: every model of the paper's table
emotk=(emotk)        # how to call emotk (tests use: python -m emotk)

usage() {
  cat <<USAGE
Usage: $0 --root RAW_DIR [--workspace DIR] [--stage N] [--stop-stage M] [--epochs E]
          [--seeds 1,2,3] [--folds 5] [--weights imagenet|none|PATH] [--image-size PX] [--device cuda]
          [--models "nactcn:sm gru ..."]
USAGE
}

while [ $# -gt 0 ]; do
  case "$1" in
    --root) root="$2"; shift 2 ;;
    --workspace) workspace="$2"; shift 2 ;;
    --stage) stage="$2"; shift 2 ;;
    --stop-stage) stop_stage="$2"; shift 2 ;;
    --epochs) epochs="$2"; shift 2 ;;
    --seeds) seeds="$2"; shift 2 ;;
    --folds) folds="$2"; shift 2 ;;
    --weights) weights="$2"; shift 2 ;;
    --image-size) image_size="$2"; shift 2 ;;
    --device) device="$2"; shift 2 ;;
    --models) models="$2"; shift 2 ;;
    -h|--help) usage; exit 0 ;;
    *) echo "unknown option $1" >&2; usage >&2; exit 2 ;;
  esac
done
if [ -n "${EMOTK_CMD:-}" ]; then read -r -a emotk <<< "$EMOTK_CMD"; fi
export EMOTK_WORKSPACE="$workspace"

run_stage() {  # run_stage N "title": true when stage N is within --stage..--stop-stage
  if [ "$1" -ge "$stage" ] && [ "$1" -le "$stop_stage" ]; then
    echo "=== stage $1: $2"
    return 0
  fi
  return 1
}

train_all() {  # train_all SPLIT DEFAULT_EPOCHS MODEL[:SIZE]...
  local split="$1" default_epochs="$2"; shift 2
  local list=("$@")
  if [ -n "$models" ]; then read -r -a list <<< "$models"; fi
  local extra=()
  if [ -n "$device" ]; then extra+=(--device "$device"); fi
  for entry in "${list[@]}"; do
    local model="${entry%%:*}" size=""
    if [ "$entry" != "$model" ]; then size="${entry#*:}"; fi
    local size_opt=()
    if [ -n "$size" ]; then size_opt=(--size "$size"); fi
    "${emotk[@]}" train "$model" "${size_opt[@]}" --split "$split" --fold all --seeds "$seeds" \
      --epochs "${epochs:-$default_epochs}" --quiet "${extra[@]}"
  done
}
