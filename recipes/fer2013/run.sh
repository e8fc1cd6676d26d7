#!/usr/bin/env bash
# Miskow (2022), Table 3.3, FER2013 column: the VGG / ResNet / ResNet-v2 family with SE, ECA, CBAM, protocol
# `miskow` (batch 64) on the official split (Training → train, PublicTest → validation, PrivateTest → test).
# (LHC-Net adds its stages here later.)
#   recipes/fer2013/run.sh --root /data/fer2013 [--stage N --stop-stage M] [--models "vgg19:cbam"] [--seeds 1]
here="$(cd "$(dirname "$0")" && pwd)"
source "$here/../lib.sh"
[ -n "$root" ] || { usage; exit 2; }
source "$here/../fer_lib.sh"

if run_stage 1 "prepare (fer2013.csv or train/ test/ class folders → images.h5, 48x48 grey)"; then
  "${emotk[@]}" prepare fer2013 --root "$root" --quiet
fi
if run_stage 2 "split: official (one subject per image: nothing can leak)"; then
  "${emotk[@]}" split --dataset fer2013 --official
  "${emotk[@]}" split --dataset fer2013 --check official
fi
if run_stage 3 "train every model of Table 3.3 (protocol miskow, batch 64; selection on PublicTest, reported on PrivateTest)"; then
  train_miskow fer2013 official
fi
if run_stage 4 "report"; then
  miskow_report fer2013
fi
