"""``emotk demo``: a miniature Aff-Wild2 from a real photograph, through every stage, on the CPU."""

from __future__ import annotations

import shutil
import time
from pathlib import Path
from typing import Callable

from emotk import report as rep
from emotk.datasets import prepare_dataset
from emotk.features.extract import extract_frames
from emotk.splits import make_split
from emotk.synth import make_affwild2
from emotk.train.loop import TrainConfig, train_run
from emotk.workspace import Workspace


def run_demo(workspace: Path, epochs: int = 8, progress: bool = True, echo: Callable[[str], None] = print,
             model: str = "gru", seed: int = 1) -> dict:
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
    echo("[3/6] emotk extract --encoder regnet_y_400mf --weights none")
    summary = extract_frames(ws, "affwild2", encoder="regnet_y_400mf", weights="none", image_size=112,
                             batch_size=64, num_workers=0, progress=progress)
    for line in summary.lines():
        echo("      " + line)
    echo("[4/6] emotk split --official")
    make_split(ws, "affwild2", by="official")
    echo(f"[5/6] emotk train {model} (official train → validation, {epochs} epochs)")
    cfg = TrainConfig(model=model, dataset="affwild2", features="regnet_y_400mf", split="official", size="sm",
                      seed=seed, epochs=epochs, seq_len=64, lr=1e-3, batch_size=8,
                      model_options={"layers": 2, "hidden": 128})
    result = train_run(ws, cfg, resume=True, progress=progress)
    echo("[6/6] emotk report --metric ccc")
    table = rep.summarize(rep.collect([ws.runs_dir()]), "ccc")
    echo(rep.render(table, "ccc", "md"))
    m = result["metrics"]
    echo(f"validation CCC {m['ccc']:.3f} (valence {m['ccc_valence']:.3f}, arousal {m['ccc_arousal']:.3f}); "
         f"{time.time() - t0:.0f} s in all. Workspace: {workspace}")
    return result
