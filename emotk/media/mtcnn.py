"""MTCNN face detector: emotk's own PyTorch implementation of the three-stage cascade.

Zhang, Zhang, Li and Qiao (2016), "Joint Face Detection and Alignment Using Multitask Cascaded
Convolutional Networks", IEEE Signal Processing Letters 23(10).

1. **P-Net**, a fully convolutional 12×12 window classifier, runs over an image pyramid: scales
   ``12/min_face_size · factor^k`` while the shorter side stays ≥ 12 px; each scale is resampled with
   area interpolation to ``(int(H·s + 1), int(W·s + 1))``. A window at output cell (row, col) is the box
   ``floor((2·col + 1)/s), floor((2·row + 1)/s), floor((2·col + 12)/s), floor((2·row + 12)/s)``.
   Windows with face probability ≥ ``thresholds[0]`` are kept; NMS (IoU 0.5) per scale and image, NMS
   (IoU 0.7) per image over all scales; the box regression is applied (offsets × box width/height) and
   each box is made square around its centre.
2. **R-Net** scores a 24×24 area-resampled crop of each candidate: probability > ``thresholds[1]``,
   NMS (IoU 0.7) per image, regression (offsets × (side + 1)), squared again.
3. **O-Net** scores a 48×48 crop: probability > ``thresholds[2]``; the five landmarks (left eye, right
   eye, nose, left and right mouth corners, in image left/right terms) are placed relative to the box
   before its last regression, the regression is applied, and a final NMS per image measures overlap as
   intersection over the *smaller* box (threshold 0.7).

Pixel values enter the networks as ``(v − 127.5) / 128``. Crops for R- and O-Net are taken from the
box truncated to integers and clipped to the image (no padding), as facenet-pytorch does; that and the
other details above are what make emotk's boxes agree with facenet-pytorch 2.6.0's, the reference
whose weights emotk ships (``emotk/media/weights/mtcnn/README.md``). ``tests/test_mtcnn.py`` compares
the two.

Batching: :meth:`MTCNN.detect_batch` stacks same-sized images, so each pyramid level is one P-Net call
for the whole batch, the R- and O-Net crops of every image go through their network together, and NMS
runs once per stage with the image index as the group. On CUDA this is where the speed comes from.
"""

from __future__ import annotations

import math
import pickle
from pathlib import Path
from typing import Sequence

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn
from torchvision.ops import batched_nms

from emotk.media.faces import to_rgb8
from emotk.media.video import MediaError

WEIGHTS_DIR = Path(__file__).parent / "weights" / "mtcnn"
WEIGHT_FILES = {"pnet": "pnet.pt", "rnet": "rnet.pt", "onet": "onet.pt"}
#: Columns of one detection row: box, score, then the five landmarks as x, y pairs.
N_COLUMNS = 15
_RESTORE = ("reinstall emotk (`pip install --force-reinstall --no-deps emotk`) to restore the shipped files, "
            "or point weights_dir / --detector-weights at a folder holding pnet.pt, rnet.pt and onet.pt "
            "from the facenet-pytorch 2.6.0 wheel (see emotk/media/weights/mtcnn/README.md)")


# =================================================================================================
# The three networks (parameter names follow the shipped state dicts)
# =================================================================================================

class PNet(nn.Module):
    """Proposal net: 12×12 receptive field, stride 2; returns (face probability [B, h, w], offsets [B, 4, h, w])."""

    def __init__(self):
        super().__init__()
        self.conv1, self.prelu1 = nn.Conv2d(3, 10, 3), nn.PReLU(10)
        self.conv2, self.prelu2 = nn.Conv2d(10, 16, 3), nn.PReLU(16)
        self.conv3, self.prelu3 = nn.Conv2d(16, 32, 3), nn.PReLU(32)
        self.conv4_1 = nn.Conv2d(32, 2, 1)  # face / not face
        self.conv4_2 = nn.Conv2d(32, 4, 1)  # box offsets

    def forward(self, x):
        x = F.max_pool2d(self.prelu1(self.conv1(x)), 2, 2, ceil_mode=True)
        x = self.prelu3(self.conv3(self.prelu2(self.conv2(x))))
        return torch.softmax(self.conv4_1(x), dim=1)[:, 1], self.conv4_2(x)


def _flatten_wh(x):
    """Flatten in (width, height, channel) order: the converted weights' dense layers expect it."""
    return x.permute(0, 3, 2, 1).reshape(x.shape[0], -1)


class RNet(nn.Module):
    """Refine net on 24×24 crops; returns (face probability [N], offsets [N, 4])."""

    def __init__(self):
        super().__init__()
        self.conv1, self.prelu1 = nn.Conv2d(3, 28, 3), nn.PReLU(28)
        self.conv2, self.prelu2 = nn.Conv2d(28, 48, 3), nn.PReLU(48)
        self.conv3, self.prelu3 = nn.Conv2d(48, 64, 2), nn.PReLU(64)
        self.dense4, self.prelu4 = nn.Linear(576, 128), nn.PReLU(128)
        self.dense5_1 = nn.Linear(128, 2)
        self.dense5_2 = nn.Linear(128, 4)

    def forward(self, x):
        x = F.max_pool2d(self.prelu1(self.conv1(x)), 3, 2, ceil_mode=True)
        x = F.max_pool2d(self.prelu2(self.conv2(x)), 3, 2, ceil_mode=True)
        x = self.prelu4(self.dense4(_flatten_wh(self.prelu3(self.conv3(x)))))
        return torch.softmax(self.dense5_1(x), dim=1)[:, 1], self.dense5_2(x)


class ONet(nn.Module):
    """Output net on 48×48 crops; returns (face probability [N], offsets [N, 4], landmarks [N, 10])."""

    def __init__(self):
        super().__init__()
        self.conv1, self.prelu1 = nn.Conv2d(3, 32, 3), nn.PReLU(32)
        self.conv2, self.prelu2 = nn.Conv2d(32, 64, 3), nn.PReLU(64)
        self.conv3, self.prelu3 = nn.Conv2d(64, 64, 3), nn.PReLU(64)
        self.conv4, self.prelu4 = nn.Conv2d(64, 128, 2), nn.PReLU(128)
        self.dense5, self.prelu5 = nn.Linear(1152, 256), nn.PReLU(256)
        self.dense6_1 = nn.Linear(256, 2)
        self.dense6_2 = nn.Linear(256, 4)
        self.dense6_3 = nn.Linear(256, 10)  # x of the 5 points, then y, relative to the box

    def forward(self, x):
        x = F.max_pool2d(self.prelu1(self.conv1(x)), 3, 2, ceil_mode=True)
        x = F.max_pool2d(self.prelu2(self.conv2(x)), 3, 2, ceil_mode=True)
        x = F.max_pool2d(self.prelu3(self.conv3(x)), 2, 2, ceil_mode=True)
        x = self.prelu5(self.dense5(_flatten_wh(self.prelu4(self.conv4(x)))))
        return torch.softmax(self.dense6_1(x), dim=1)[:, 1], self.dense6_2(x), self.dense6_3(x)


def load_net(kind: str, weights_dir: str | Path | None = None) -> nn.Module:
    """The ``pnet`` / ``rnet`` / ``onet`` module with its weights, in eval mode on the CPU.

    Raises :class:`MediaError` naming the file and how to restore it when the file is missing, is not
    a tensor state dict (``weights_only=True`` refuses pickled code) or does not fit the network.
    """
    net = {"pnet": PNet, "rnet": RNet, "onet": ONet}[kind]()
    path = Path(weights_dir if weights_dir is not None else WEIGHTS_DIR) / WEIGHT_FILES[kind]
    if not path.is_file():
        raise MediaError(f"MTCNN weight file {path} is missing; {_RESTORE}.")
    try:
        state = torch.load(path, map_location="cpu", weights_only=True)
    # garbage bytes surface from torch's weights-only unpickler as any of these
    except (OSError, RuntimeError, EOFError, ValueError, IndexError, KeyError, TypeError, AttributeError,
            pickle.UnpicklingError) as exc:
        why = str(exc).strip().splitlines()[0][:160] if str(exc).strip() else type(exc).__name__
        raise MediaError(f"MTCNN weight file {path} cannot be read ({why}); {_RESTORE}.") from None
    if not isinstance(state, dict) or not all(isinstance(v, torch.Tensor) for v in state.values()):
        raise MediaError(f"MTCNN weight file {path} is not a state dict of tensors; {_RESTORE}.")
    try:
        net.load_state_dict(state)
    except RuntimeError:
        raise MediaError(f"MTCNN weight file {path} does not hold {kind} weights (names or shapes differ); "
                         f"{_RESTORE}.") from None
    return net.eval()


# =================================================================================================
# Box arithmetic
# =================================================================================================

def pyramid_scales(height: int, width: int, min_face_size: float, factor: float) -> list[float]:
    """Scales ``m·factor^k`` (m = 12 / min_face_size) while ``min(height, width)·scale ≥ 12``."""
    m = 12.0 / min_face_size
    side = min(height, width) * m
    scales, s = [], m
    while side >= 12:
        scales.append(s)
        s *= factor
        side *= factor
    return scales


def _square(boxes: torch.Tensor) -> torch.Tensor:
    """Each box made square (side = its longer side) around its centre."""
    w, h = boxes[:, 2] - boxes[:, 0], boxes[:, 3] - boxes[:, 1]
    side = torch.maximum(w, h)
    x0 = boxes[:, 0] + w * 0.5 - side * 0.5
    y0 = boxes[:, 1] + h * 0.5 - side * 0.5
    return torch.stack([x0, y0, x0 + side, y0 + side], dim=1)


def _regress(boxes: torch.Tensor, offsets: torch.Tensor, plus_one: bool) -> torch.Tensor:
    """Apply the networks' box offsets, which are fractions of the box width and height (+1 after R/O-Net)."""
    extra = 1.0 if plus_one else 0.0
    w = boxes[:, 2] - boxes[:, 0] + extra
    h = boxes[:, 3] - boxes[:, 1] + extra
    return boxes[:, :4] + offsets * torch.stack([w, h, w, h], dim=1)


def _crop_patches(images: torch.Tensor, image_index: torch.Tensor, boxes: torch.Tensor, size: int):
    """``size``×``size`` area-resampled crops of ``boxes`` (truncated, clipped to the image, 1-based ends).

    Returns (patches [K, 3, size, size], indices of the boxes that give a non-empty crop).
    """
    h, w = images.shape[2:]
    b = boxes.trunc().to(torch.int64).cpu()
    x0, y0 = b[:, 0].clamp(min=1), b[:, 1].clamp(min=1)
    x1, y1 = b[:, 2].clamp(max=w), b[:, 3].clamp(max=h)
    ok = ((x1 > x0 - 1) & (y1 > y0 - 1)).nonzero().flatten()
    idx = image_index.cpu()
    patches = [F.interpolate(images[int(idx[k]):int(idx[k]) + 1, :, int(y0[k]) - 1:int(y1[k]), int(x0[k]) - 1:int(x1[k])],
                             size=(size, size), mode="area") for k in ok.tolist()]
    if not patches:
        return images.new_zeros((0, 3, size, size)), ok.to(boxes.device)
    return torch.cat(patches), ok.to(boxes.device)


def _normalise(x: torch.Tensor) -> torch.Tensor:
    return (x - 127.5) * 0.0078125


def _nms_min(boxes: torch.Tensor, scores: torch.Tensor, groups: torch.Tensor, threshold: float) -> torch.Tensor:
    """Greedy NMS per group where overlap = intersection / smaller area (pixel-inclusive, +1 sides)."""
    b, s, g = boxes.double().cpu(), scores.double().cpu(), groups.cpu()
    area = (b[:, 2] - b[:, 0] + 1) * (b[:, 3] - b[:, 1] + 1)
    keep: list[int] = []
    for grp in torch.unique(g).tolist():
        order = (g == grp).nonzero().flatten()
        order = order[torch.argsort(s[order], descending=True, stable=True)]
        while len(order):
            i, rest = order[0], order[1:]
            keep.append(int(i))
            iw = (torch.minimum(b[i, 2], b[rest, 2]) - torch.maximum(b[i, 0], b[rest, 0]) + 1).clamp(min=0)
            ih = (torch.minimum(b[i, 3], b[rest, 3]) - torch.maximum(b[i, 1], b[rest, 1]) + 1).clamp(min=0)
            overlap = iw * ih / torch.minimum(area[i], area[rest])
            order = rest[overlap <= threshold]
    return torch.as_tensor(keep, dtype=torch.int64, device=boxes.device)


# =================================================================================================
# The detector
# =================================================================================================

class MTCNN:
    """MTCNN (P-, R-, O-Net) on CUDA when present, else the CPU.

    ``detect(rgb)`` → float32 ``[N, 15]``: ``x0, y0, x1, y1, score`` then the five landmarks as
    ``x, y`` pairs (left eye, right eye, nose, left mouth corner, right mouth corner), sorted by score.
    ``detect_batch(images)`` → one such array per image. Images may be grey, RGB, RGBA, 8- or 16-bit
    (see :func:`emotk.media.faces.to_rgb8`). An image whose shorter side is below ``min_face_size``
    has no pyramid level and gives no detection.
    """

    name = "mtcnn"
    has_landmarks = True
    align = False  # set by the registry's factory; crop_video reads it

    def __init__(self, min_face_size: float = 20, factor: float = 0.709,
                 thresholds: Sequence[float] = (0.6, 0.7, 0.7), device: str | None = None,
                 batch_size: int | None = None, weights_dir: str | Path | None = None):
        if not (isinstance(min_face_size, (int, float)) and math.isfinite(min_face_size) and min_face_size >= 12):
            raise MediaError(f"MTCNN min_face_size must be a number >= 12 (pixels), not {min_face_size!r}.")
        if not (isinstance(factor, (int, float)) and 0.1 <= factor <= 0.95):
            raise MediaError(f"MTCNN pyramid factor must be between 0.1 and 0.95, not {factor!r}.")
        thresholds = tuple(float(t) for t in thresholds)
        if len(thresholds) != 3 or not all(0.0 <= t <= 1.0 for t in thresholds):
            raise MediaError(f"MTCNN thresholds must be three probabilities (P, R, O-Net), not {thresholds!r}.")
        self.min_face_size, self.factor, self.thresholds = float(min_face_size), float(factor), thresholds
        self.device = torch.device(device if device else ("cuda" if torch.cuda.is_available() else "cpu"))
        self.batch_size = int(batch_size) if batch_size else (16 if self.device.type == "cuda" else 1)
        self.weights_dir = None if weights_dir is None else Path(weights_dir)
        self.pnet, self.rnet, self.onet = (load_net(k, weights_dir).to(self.device) for k in ("pnet", "rnet", "onet"))

    def options(self) -> dict:
        """The settings that change which faces are found (recorded in crop.json)."""
        return {"min_face_size": self.min_face_size, "factor": self.factor, "thresholds": list(self.thresholds),
                "weights": "shipped" if self.weights_dir is None else str(self.weights_dir)}

    def detect(self, image: np.ndarray) -> np.ndarray:
        return self.detect_batch([image])[0]

    def detect_batch(self, images: Sequence[np.ndarray]) -> list[np.ndarray]:
        """Detect faces in each image; images of equal size run through the networks together."""
        rgbs = [to_rgb8(im) for im in images]
        out: list[np.ndarray | None] = [None] * len(rgbs)
        by_shape: dict[tuple, list[int]] = {}
        for i, im in enumerate(rgbs):
            by_shape.setdefault(im.shape, []).append(i)
        for members in by_shape.values():
            for start in range(0, len(members), max(1, self.batch_size)):
                chunk = members[start:start + max(1, self.batch_size)]
                for i, dets in zip(chunk, self._detect_same_size(np.stack([rgbs[i] for i in chunk]))):
                    out[i] = dets
        return out  # type: ignore[return-value]

    @torch.inference_mode()
    def _detect_same_size(self, batch: np.ndarray) -> list[np.ndarray]:
        n, h, w = batch.shape[:3]
        empty = [np.zeros((0, N_COLUMNS), np.float32) for _ in range(n)]
        scales = pyramid_scales(h, w, self.min_face_size, self.factor)
        if not scales:
            return empty
        images = torch.from_numpy(batch).to(self.device).permute(0, 3, 1, 2).float()
        t1, t2, t3 = self.thresholds

        # Stage 1: P-Net over the pyramid
        boxes, scores, offsets, owner = [], [], [], []
        for s in scales:
            level = F.interpolate(images, size=(int(h * s + 1), int(w * s + 1)), mode="area")
            prob, reg = self.pnet(_normalise(level))
            hit = (prob >= t1).nonzero()  # [K, 3]: image, row, col
            if not len(hit):
                continue
            cell = hit[:, [2, 1]].to(images.dtype)
            b = torch.cat([((2 * cell + 1) / s).floor(), ((2 * cell + 12) / s).floor()], dim=1)
            sc = prob[hit[:, 0], hit[:, 1], hit[:, 2]]
            keep = batched_nms(b, sc, hit[:, 0], 0.5)
            boxes.append(b[keep]), scores.append(sc[keep])
            offsets.append(reg[hit[keep, 0], :, hit[keep, 1], hit[keep, 2]]), owner.append(hit[keep, 0])
        if not boxes:
            return empty
        boxes, scores, offsets, owner = (torch.cat(v) for v in (boxes, scores, offsets, owner))
        keep = batched_nms(boxes, scores, owner, 0.7)
        boxes = _square(_regress(boxes[keep], offsets[keep], plus_one=False))
        owner = owner[keep]

        # Stage 2: R-Net
        patches, ok = _crop_patches(images, owner, boxes, 24)
        if not len(ok):
            return empty
        prob, reg = self.rnet(_normalise(patches))
        sel = prob > t2
        boxes, owner, scores, reg = boxes[ok][sel], owner[ok][sel], prob[sel], reg[sel]
        keep = batched_nms(boxes, scores, owner, 0.7)
        boxes = _square(_regress(boxes[keep], reg[keep], plus_one=True))
        owner = owner[keep]

        # Stage 3: O-Net, landmarks
        patches, ok = _crop_patches(images, owner, boxes, 48)
        if not len(ok):
            return empty
        prob, reg, pts = self.onet(_normalise(patches))
        sel = prob > t3
        boxes, owner, scores, reg, pts = boxes[ok][sel], owner[ok][sel], prob[sel], reg[sel], pts[sel]
        bw = (boxes[:, 2] - boxes[:, 0] + 1)[:, None]
        bh = (boxes[:, 3] - boxes[:, 1] + 1)[:, None]
        px = bw * pts[:, :5] + boxes[:, :1] - 1
        py = bh * pts[:, 5:] + boxes[:, 1:2] - 1
        boxes = _regress(boxes, reg, plus_one=True)
        keep = _nms_min(boxes, scores, owner, 0.7)
        rows = torch.cat([boxes[keep], scores[keep, None], torch.stack([px[keep], py[keep]], dim=2).reshape(-1, 10)], 1)
        rows, owner = rows.float().cpu().numpy(), owner[keep].cpu().numpy()
        result = []
        for i in range(n):
            mine = rows[owner == i]
            result.append(mine[np.argsort(-mine[:, 4], kind="stable")].astype(np.float32))
        return result


# =================================================================================================
# facenet-pytorch's crop (the MESM reference crop)
# =================================================================================================

def crop_facenet(image: np.ndarray, box, image_size: int, margin: float) -> np.ndarray | None:
    """The crop facenet-pytorch's ``extract_face`` makes, as uint8 ``image_size``×``image_size``×3.

    ``margin`` is in pixels of the *output*: the box grows by ``margin·w/(image_size − margin)``
    horizontally and ``margin·h/(image_size − margin)`` vertically (half on each side), its corners are
    truncated to integers and clipped to the image (no padding, so the aspect ratio is not kept), the
    region is area-resampled to ``image_size`` (``torch.nn.functional.interpolate(mode="area")``) and
    truncated to uint8 — facenet-pytorch's path for frames given as tensors, which is how MESM calls it;
    no post-processing (no standardisation). None when the clipped region is empty.
    """
    x0, y0, x1, y1 = (float(v) for v in box[:4])
    mx = margin * (x1 - x0) / (image_size - margin)
    my = margin * (y1 - y0) / (image_size - margin)
    h, w = image.shape[:2]
    left, top = int(max(x0 - mx / 2, 0)), int(max(y0 - my / 2, 0))
    right, bottom = int(min(x1 + mx / 2, w)), int(min(y1 + my / 2, h))
    if right <= left or bottom <= top:
        return None
    region = torch.from_numpy(np.ascontiguousarray(image[top:bottom, left:right, :3])).permute(2, 0, 1)[None].float()
    out = F.interpolate(region, size=(image_size, image_size), mode="area")
    return out[0].permute(1, 2, 0).to(torch.uint8).numpy()
