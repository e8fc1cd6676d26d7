"""Frame-feature extraction speed on a real mp4: each stage alone, and end-to-end vs the encoder alone.

Writes a real H.264 mp4 (default 60 s, 640×360, 30 fps) of a moving face (scikit-image's astronaut),
then measures frames/s of
  decode          emotk.media.video.VideoStream (decord, PyAV fallback)
  prepare         decode + Haar detection every 5th frame + tracking + 112² crops written as JPEG
  load            JPEG crops → normalised tensors (the extractor's Dataset), one process
  encoder         regnet_y_400mf on preloaded tensors (the ceiling)
  extract         `emotk extract` end to end: DataLoader workers, encoder, HDF5 writes
and prints extract / encoder (target ≥ 0.8: image loading and writing hidden behind the encoder).

    python bench/extract.py [--seconds 60] [--device cuda] [--image-size 224] [--workers 2]
"""

from __future__ import annotations

import argparse
import tempfile
import time
from pathlib import Path

import numpy as np
import polars as pl
import torch

from emotk.atomic import write_json, write_parquet
from emotk.features.encoders import load_encoder
from emotk.features.extract import FrameImages, Prepare, collate_frames, extract_frames, list_frames
from emotk.media.faces import crop_video
from emotk.media.video import VideoStream
from emotk.synth import astronaut, render_face
from emotk.workspace import Workspace


def write_video(path: Path, seconds: float, fps: int = 30, size=(640, 360)) -> int:
    import av

    photo = astronaut()
    n = int(seconds * fps)
    with av.open(str(path), "w") as out:
        stream = out.add_stream("libx264", rate=fps)
        stream.width, stream.height, stream.pix_fmt = size[0], size[1], "yuv420p"
        for i in range(n):
            canvas = np.full((size[1], size[0], 3), 90, np.uint8)
            face = np.asarray(render_face(photo, 0.5 * np.sin(i / 40), 0.3 * np.cos(i / 55), np.zeros(2), 180))
            x = int(200 + 120 * np.sin(i / 70))
            y = int(90 + 40 * np.cos(i / 90))
            canvas[y:y + 180, x:x + 180] = face
            for packet in stream.encode(av.VideoFrame.from_ndarray(canvas, format="rgb24")):
                out.mux(packet)
        for packet in stream.encode():
            out.mux(packet)
    return n


def rate(n: int, seconds: float) -> str:
    return f"{n / seconds:8.1f} frames/s"


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--seconds", type=float, default=60)
    ap.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    ap.add_argument("--image-size", type=int, default=224)
    ap.add_argument("--batch-size", type=int, default=64)
    ap.add_argument("--workers", type=int, default=2)
    ap.add_argument("--copies", type=int, default=1, help="List the clip's crops this many times as samples (longer end-to-end run).")
    ap.add_argument("--detector", default="haar", help="Face detector of the prepare stage (center: none, e.g. where OpenCV 5 lacks Haar).")
    ap.add_argument("--video", type=Path, help="Use this mp4 instead of writing one (machines without PyAV).")
    args = ap.parse_args()

    with tempfile.TemporaryDirectory() as tmp:
        tmp = Path(tmp)
        video = args.video or tmp / "clip.mp4"
        if args.video is None:
            write_video(video, args.seconds)
        print(f"video: {video.name}, {video.stat().st_size / 2**20:.1f} MiB; device {args.device}, "
              f"image size {args.image_size}, batch {args.batch_size}, {args.workers} workers")

        t = time.perf_counter()
        stream = VideoStream(video)
        decoded = sum(1 for _ in stream)
        t_decode = time.perf_counter() - t
        print(f"decode   ({stream.decoder_used}): {rate(decoded, t_decode)}")

        ws = Workspace.open(tmp / "ws")
        ws.ensure()
        ds_dir = ws.dataset_dir("bench")
        t = time.perf_counter()
        result = crop_video(video, ds_dir / "faces", "clip", detector=args.detector, reuse=False)["clip"]
        t_prep = time.perf_counter() - t
        print(f"prepare  (decode + detect [{args.detector}] + crop + jpg): {rate(decoded, t_prep)}  "
              f"({result.no_face_frames if hasattr(result, 'no_face_frames') else '?'} frames without a face)")

        frames = list_frames(ds_dir / "faces" / "clip", 0, decoded)
        images = FrameImages([(0, i, p) for i, p in frames], args.image_size)
        t = time.perf_counter()
        batch = collate_frames([images[i] for i in range(len(images))])[2]
        t_load = time.perf_counter() - t
        print(f"load     (jpg → uint8 tensor, 1 process; resized on the device): {rate(len(images), t_load)}")

        enc = load_encoder("regnet_y_400mf", "none", args.image_size)
        module = torch.nn.Sequential(Prepare(args.image_size), enc.module).to(args.device).eval()
        cuda = args.device.startswith("cuda")
        if cuda:
            module = module.to(memory_format=torch.channels_last)

        def encode_all() -> None:
            with torch.inference_mode():
                for s in range(0, len(batch), args.batch_size):
                    x = batch[s:s + args.batch_size].to(args.device, non_blocking=True)
                    if cuda:
                        with torch.autocast("cuda", dtype=torch.float16):
                            module(x.to(memory_format=torch.channels_last)).float().cpu()
                    else:
                        module(x).cpu()

        encode_all() if cuda else None  # warm-up (cuDNN autotuning)
        t = time.perf_counter()
        encode_all()
        if cuda:
            torch.cuda.synchronize()
        t_enc = time.perf_counter() - t
        print(f"encoder  (regnet_y_400mf alone): {rate(len(batch), t_enc)}")

        write_json(ws.info_path("bench"), {"raw_root": str(tmp)})
        write_parquet(ws.manifest_path("bench"), pl.DataFrame([{
            "sample_id": f"clip{c}", "subject": f"s{c}", "split": "train", "kind": "video", "media": "faces/clip",
            "media_root": "workspace", "media_kind": "frames_dir", "frame_base": 0, "n_frames": decoded, "fps": 30.0}
            for c in range(args.copies)]))
        t = time.perf_counter()
        summary = extract_frames(ws, "bench", encoder="regnet_y_400mf", weights="none", image_size=args.image_size,
                                 batch_size=args.batch_size, num_workers=args.workers, device=args.device, progress=False)
        t_all = time.perf_counter() - t
        print(f"extract  (end to end, incl. model load and HDF5 write): {rate(summary.frames, t_all)}")
        print(f"extract / encoder alone = {(summary.frames / t_all) / (len(batch) / t_enc):.2f}  (target ≥ 0.8)")
        steady = summary.frames / summary.steady_seconds
        print(f"extract steady state (after start-up: model load, worker start): {rate(summary.frames, summary.steady_seconds)}"
              f" → {steady / (len(batch) / t_enc):.2f} of the encoder alone")


if __name__ == "__main__":
    main()
