"""Small datasets in real raw layouts, made from a real photograph (scikit-image's ``astronaut``).

Used by ``emotk demo`` and the tests. Faces move, zoom and change tint over time, and the
valence/arousal traces are functions of what is seen (valence ↔ warm/cool tint, arousal ↔ zoom),
so a model can learn them from the pixels.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
from PIL import Image

FACE_CENTER = (105, 235)  # (row, col) of the astronaut's face in the 512×512 photo


def astronaut() -> np.ndarray:
    from skimage import data

    return data.astronaut()


def va_traces(n: int, rng: np.random.Generator) -> np.ndarray:
    """Smooth valence/arousal traces in [-0.9, 0.9], shape [n, 2]."""
    t = np.arange(n)
    out = []
    for _ in range(2):
        f1, f2 = rng.uniform(0.01, 0.05, 2)
        p1, p2 = rng.uniform(0, 2 * np.pi, 2)
        out.append(0.6 * np.sin(2 * np.pi * f1 * t + p1) + 0.3 * np.sin(2 * np.pi * f2 * t + p2))
    return np.clip(np.stack(out, 1), -0.9, 0.9).astype(np.float32)


def render_face(photo: np.ndarray, valence: float, arousal: float, jitter: np.ndarray, size: int = 112) -> Image.Image:
    """A face crop whose tint follows valence and whose zoom follows arousal."""
    half = int(70 - 35 * arousal)  # high arousal: zoomed in
    r = int(np.clip(FACE_CENTER[0] + jitter[0], half, photo.shape[0] - half))
    c = int(np.clip(FACE_CENTER[1] + jitter[1], half, photo.shape[1] - half))
    crop = photo[r - half:r + half, c - half:c + half].astype(np.float32)
    tint = np.array([1 + 0.45 * valence, 1.0, 1 - 0.45 * valence], dtype=np.float32)
    crop = np.clip(crop * tint, 0, 255).astype(np.uint8)
    return Image.fromarray(crop).resize((size, size), Image.BILINEAR)


def make_affwild2(root: Path, tracks: dict[str, tuple[str, int]] | None = None, seed: int = 0,
                  invalid_rows: int = 3, missing_crops: int = 2, extra_label_line: str | None = None,
                  size: int = 112, edition: str = "6th_ABAW_Annotations") -> dict[str, np.ndarray]:
    """Write a miniature Aff-Wild2 release under ``root``; returns the labels written per track.

    ``tracks`` maps track name → (split folder "Train_Set"/"Validation_Set", frame count). Each track
    gets ``invalid_rows`` rows of -5,-5 and loses ``missing_crops`` jpgs; ``extra_label_line`` names
    a track whose annotation has one more line than it has frames.
    """
    rng = np.random.default_rng(seed)
    photo = astronaut()
    tracks = tracks or DEFAULT_TRACKS
    labels = {}
    for track, (split, n) in tracks.items():
        va = va_traces(n, rng)
        crop_dir = root / "cropped_aligned" / track
        crop_dir.mkdir(parents=True, exist_ok=True)
        drift = np.cumsum(rng.normal(0, 1.0, (n, 2)), axis=0).clip(-25, 25)
        missing = set(rng.choice(np.arange(1, n - 1), size=min(missing_crops, n - 2), replace=False).tolist())
        for i in range(n):
            if i not in missing:
                render_face(photo, va[i, 0], va[i, 1], drift[i], size).save(crop_dir / f"{i + 1:05d}.jpg", quality=90)
        rows = va.copy()
        bad = rng.choice(n, size=min(invalid_rows, n), replace=False)
        rows[bad] = -5
        lines = ["valence,arousal"] + [f"{v:.3f},{a:.3f}" if v != -5 else "-5,-5" for v, a in rows]
        if track == extra_label_line:
            lines.append("0.100,0.100")
        ann = root / edition / "VA_Estimation_Challenge" / split
        ann.mkdir(parents=True, exist_ok=True)
        (ann / f"{track}.txt").write_text("\n".join(lines) + "\n")
        labels[track] = rows
    return labels


# Train: a left/right pair, a multi-part video, a legacy .avi-style id, a videoNN track; validation: others.
DEFAULT_TRACKS: dict[str, tuple[str, int]] = {
    "10-60-1280x720_left": ("Train_Set", 150),
    "10-60-1280x720_right": ("Train_Set", 150),
    "122-60-1920x1080-1": ("Train_Set", 120),
    "122-60-1920x1080-2": ("Train_Set", 120),
    "102": ("Train_Set", 140),
    "video45_1": ("Train_Set", 130),
    "24-30-640x360": ("Train_Set", 140),
    "5-25-1280x720": ("Train_Set", 140),
    "201-30-640x360": ("Validation_Set", 140),
    "video86_2": ("Validation_Set", 140),
    "17-24-1280x720": ("Validation_Set", 140),
}
