"""Image datasets (issue 11): the image store against a folder of PNGs, and the share of a training
step spent waiting for data with the in-memory uint8 store and device augmentation.

Builds a synthetic FER2013-sized workspace (48×48 grey faces: the astronaut's face from scikit-image
with per-image noise, written with emotk's own image-store writer, plus the same images as PNG files)
and prints, measured in this run:

1. the store's epoch load time (every image of images.h5 into memory: through the trainer's
   ``ImageSource``, and through ``emotk.features.images.load_images``) against decoding the same
   images from the PNG folder with PIL, and the ratios;
2. resnet50 (Miskow's, 48×48×1, 7 classes) training steps on the CPU through the trainer's dataset,
   collate, uint8 → [0, 1] and flip + zoom 0.3 augmentation on the device: the share of step time
   spent waiting for the batch (target ≤ 5 %);
3. on a GPU where one is present: images/s with AMP and channels-last.

    python bench/images.py                          # 35,887 images (FER2013's size), 30 CPU steps
    python bench/images.py --images 5000 --steps 10 # quicker
"""

from __future__ import annotations

import argparse
import tempfile
import time
from pathlib import Path

import cv2
import numpy as np
import polars as pl
import skimage.data
import torch
from PIL import Image
from torch.utils.data import DataLoader

from emotk.atomic import write_json, write_parquet
from emotk.datasets import get_dataset
from emotk.datasets.faceimages import image_row
from emotk.features.images import load_images, store_attrs, write_image_store
from emotk.models import build
from emotk.train.augment import augment, check_augment, step_seed
from emotk.train.data import ImageSource, WindowDataset, collate, load_labels, make_sources
from emotk.workspace import Workspace

FACE_RC = (25, 205, 140, 320)  # rows, cols of the astronaut's head in skimage.data.astronaut()
PIPELINE = [{"name": "hflip", "p": 0.5}, {"name": "zoom", "range": 0.3}]  # Miskow's augmentation


def faces(n: int, seed: int = 0) -> np.ndarray:
    r0, r1, c0, c1 = FACE_RC
    grey = cv2.cvtColor(cv2.resize(skimage.data.astronaut()[r0:r1, c0:c1], (48, 48), interpolation=cv2.INTER_AREA),
                        cv2.COLOR_RGB2GRAY).astype(np.int16)
    rng = np.random.default_rng(seed)
    return np.clip(grey[None] + rng.integers(-25, 26, (n, 48, 48)), 0, 255).astype(np.uint8)


def build_workspace(root: Path, n: int) -> tuple[Workspace, list[str], Path]:
    ws = Workspace.open(root / "ws")
    ws.ensure()
    images = faces(n)
    ids = [f"fer-{i:05d}" for i in range(n)]
    labels = np.arange(n) % 7
    write_image_store(ws.images_path("fer2013"), dict(zip(ids, images)),
                      store_attrs("synthetic", 48, 1, None, dataset="fer2013"))
    rows = [image_row(s, s, "train", "synthetic", int(y), str(y)) for s, y in zip(ids, labels)]
    write_json(ws.info_path("fer2013"), {"raw_root": str(root), "task": get_dataset("fer2013").task.__dict__})
    write_parquet(ws.manifest_path("fer2013"), pl.DataFrame(rows))
    png = root / "png"
    png.mkdir()
    for s, im in zip(ids, images):
        Image.fromarray(im).save(png / f"{s}.png")
    return ws, ids, png


def load_pngs(folder: Path, ids: list[str]) -> list[torch.Tensor]:
    out = []
    for s in ids:
        with Image.open(folder / f"{s}.png") as im:
            out.append(torch.from_numpy(np.asarray(im.convert("L"), dtype=np.uint8).copy())[None])
    return out


def steps(model, loader, n_steps: int, device: str, amp: bool, channels_last: bool, pipeline) -> tuple[float, float, int]:
    """(seconds waiting for batches, seconds computing, images) over ``n_steps`` after 3 warm-up steps."""
    opt = torch.optim.Adam(model.parameters(), 1e-4)
    scaler = torch.amp.GradScaler("cuda", enabled=amp)
    wait = compute = 0.0
    images = 0
    it = iter(loader)
    for step in range(n_steps + 3):
        t_a = time.perf_counter()
        try:
            batch = next(it)
        except StopIteration:
            it = iter(loader)
            batch = next(it)
        x = batch["image"].to(device, non_blocking=True)
        y = batch["y"].to(device).long().reshape(-1)
        if device.startswith("cuda"):
            torch.cuda.synchronize()
        t_b = time.perf_counter()
        x = augment(x.float().div_(255), pipeline, step_seed(1, 0, 0, step))
        if channels_last:
            x = x.contiguous(memory_format=torch.channels_last)
        with torch.autocast("cuda", enabled=amp):
            loss = torch.nn.functional.cross_entropy(model(x), y)
        opt.zero_grad(set_to_none=True)
        scaler.scale(loss).backward()
        scaler.step(opt)
        scaler.update()
        if device.startswith("cuda"):
            torch.cuda.synchronize()
        t_c = time.perf_counter()
        if step >= 3:
            wait += t_b - t_a
            compute += t_c - t_b
            images += len(y)
    return wait, compute, images


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--images", type=int, default=35_887)
    ap.add_argument("--steps", type=int, default=30)
    ap.add_argument("--batch-size", type=int, default=64)
    ap.add_argument("--model", default="resnet50")
    ap.add_argument("--threads", type=int, default=2)
    args = ap.parse_args()
    torch.set_num_threads(args.threads)
    pipeline = [check_augment(e, "bench") for e in PIPELINE]
    with tempfile.TemporaryDirectory() as tmp:
        t0 = time.perf_counter()
        ws, ids, png = build_workspace(Path(tmp), args.images)
        size = ws.images_path("fer2013").stat().st_size
        png_size = sum(p.stat().st_size for p in png.iterdir())
        print(f"{args.images:,} images 48×48 grey: images.h5 {size / 2**20:.1f} MiB, PNG folder {png_size / 2**20:.1f} MiB "
              f"(built in {time.perf_counter() - t0:.0f} s)")

        t0 = time.perf_counter()
        source = ImageSource(ws, "fer2013", ids)
        t_store = time.perf_counter() - t0
        t0 = time.perf_counter()
        block = load_images(ws.images_path("fer2013"), ids)
        t_block = time.perf_counter() - t0
        t0 = time.perf_counter()
        from_png = load_pngs(png, ids)
        t_png = time.perf_counter() - t0
        assert all(torch.equal(a, b) for a, b in zip(source.images[:100], from_png[:100]))
        assert all(torch.equal(torch.from_numpy(block[i])[None], from_png[i]) for i in range(100))
        print(f"epoch load: PNG folder (PIL) {t_png:.2f} s; images.h5 through ImageSource {t_store:.2f} s "
              f"({t_png / t_store:.1f}× the PNG speed); images.h5 through emotk.features.images.load_images "
              f"{t_block:.2f} s ({t_png / t_block:.1f}×)")
        del from_png, source

        task = get_dataset("fer2013").task
        sources, rows = make_sources(ws, "fer2013", {"image": ""}, ids, "the benchmark's images")
        data = WindowDataset(sources, load_labels(ws, "fer2013", rows, task), task, 1, sample_ids=ids)
        loader = DataLoader(data, batch_size=args.batch_size, shuffle=True, collate_fn=collate, num_workers=0,
                            generator=torch.Generator().manual_seed(0))
        model = build(args.model, None, "fer2013", in_channels=1, image_size=48, out_dim=7, head="logits").train()
        wait, compute, n = steps(model, loader, args.steps, "cpu", False, False, pipeline)
        print(f"{args.model} on the CPU ({args.threads} threads), batch {args.batch_size}, flip + zoom on the device, "
              f"{args.steps} steps: data wait {wait / (wait + compute):.2%} of step time (wait "
              f"{wait / args.steps * 1e3:.1f} ms, compute {compute / args.steps * 1e3:.0f} ms per step; target ≤ 5 %); "
              f"{n / (wait + compute):.0f} images/s")

        if torch.cuda.is_available():
            model = model.cuda()
            for amp, cl in ((False, False), (True, True)):
                net = model.to(memory_format=torch.channels_last) if cl else model
                wait, compute, n = steps(net, loader, args.steps, "cuda", amp, cl, pipeline)
                print(f"{args.model} on {torch.cuda.get_device_name()}: AMP {amp}, channels-last {cl}: "
                      f"{n / (wait + compute):.0f} images/s, data wait {wait / (wait + compute):.2%}")
        else:
            print("no GPU here: the AMP / channels-last figures need one")


if __name__ == "__main__":
    main()
