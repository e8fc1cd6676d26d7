"""``emotk demo``: a miniature Aff-Wild2 from a real photograph, through every stage.

Runs on the CPU by default (``device="cpu"``), whatever GPUs the machine has, so that it needs no
driver and prints the same numbers everywhere; ``emotk demo --device cuda`` runs extraction and
training on a GPU instead. Offline: the photograph ships with scikit-image and the encoder's
weights are random (``--weights none``).
"""

from __future__ import annotations

import shutil
import time
from pathlib import Path
from typing import Callable

from emotk import report as rep
from emotk.datasets import prepare_dataset
from emotk.errors import EmotkError
from emotk.features.extract import extract_frames
from emotk.splits import make_split
from emotk.synth import make_affwild2
from emotk.train.loop import TrainConfig, train_run
from emotk.workspace import Workspace


def run_demo(workspace: Path, epochs: int = 8, progress: bool = True, echo: Callable[[str], None] = print,
             model: str = "gru", seed: int = 1, device: str = "cpu") -> dict:
    """Build the miniature release under ``workspace`` and run prepare → extract → split → train → report
    on ``device`` (checked first: a missing GPU is a clear :class:`~emotk.errors.EmotkError`)."""
    from emotk.distributed import resolve_device

    device = str(resolve_device(device))
    if epochs < 1:
        raise EmotkError(f"the demo trains at least 1 epoch; got epochs={epochs}.")
    t0 = time.time()
    workspace = Path(workspace)
    raw = workspace / "raw-affwild2"
    if not (raw / "cropped_aligned").is_dir():
        echo(f"[1/6] writing a miniature Aff-Wild2 release to {raw}")
        shutil.rmtree(raw, ignore_errors=True)
        make_affwild2(raw, extra_label_line="102")
    ws = Workspace.open(workspace)
    echo("[2/6] emotk prepare affwild2")
    manifest, failures = prepare_dataset(ws, "affwild2", raw)
    echo(f"      {manifest.height} tracks, {manifest['subject'].n_unique()} subjects, {len(failures)} notes in failures.csv")
    echo(f"[3/6] emotk extract --encoder regnet_y_400mf --weights none --device {device}")
    summary = extract_frames(ws, "affwild2", encoder="regnet_y_400mf", weights="none", image_size=112,
                             batch_size=64, num_workers=0, progress=progress, device=device)
    for line in summary.lines():
        echo("      " + line)
    echo("[4/6] emotk split --official")
    make_split(ws, "affwild2", by="official")
    echo(f"[5/6] emotk train {model} --device {device} (official train → validation, {epochs} epochs)")
    cfg = TrainConfig(model=model, dataset="affwild2", inputs={"frames": "regnet_y_400mf"}, split="official", size="sm",
                      seed=seed, device=device, model_options={"layers": 2, "hidden": 128},
                      overrides={"stages.*.epochs": epochs, "seq_len": 64, "stages.*.optimizer.lr": 1e-3,
                                 "stages.*.batch_size": 8})
    result = train_run(ws, cfg, resume=True, progress=progress)
    echo("[6/6] emotk report --metric ccc")
    table = rep.summarize(rep.collect([ws.runs_dir()]), "ccc")
    echo(rep.render(table, "ccc", "md"))
    m = result["metrics"]
    echo(f"validation CCC {m['ccc']:.3f} (valence {m['ccc_valence']:.3f}, arousal {m['ccc_arousal']:.3f}); "
         f"{time.time() - t0:.0f} s in all. Workspace: {workspace}")
    return result
