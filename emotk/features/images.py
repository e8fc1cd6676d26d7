"""The image store of still-image datasets (FER2013, CK+, JAFFE): ``<workspace>/<dataset>/images.h5``.

One HDF5 dataset per ``sample_id``: uint8 ``[H, W]`` (grey) or ``[H, W, 3]`` (RGB), every image at
the same prepared size. File attributes hold the provenance (see :func:`store_attrs`): ``source``
(where the pixels came from), ``size``, ``channels``, the face detector and crop settings (or
``"none"`` when the release is already cropped), ``store_format`` and ``emotk_version``. An image
that was cropped by emotk carries its face box (``box``: x0, y0, x1, y1 in source pixels) and the
detector's ``score`` as attributes of its own dataset.

The whole file is built in memory and written under a temporary name, then renamed
(:func:`emotk.atomic.write_hdf5`): a killed or failed prepare leaves the previous store (or none),
never half of one. FER2013 at 48×48 is about 83 MB, well within memory.

The training core reads the store through ``emotk.train.data.ImageSource``; :func:`read_image_store`
here is the plain reader for tools, tests and benchmarks.

Image helpers used by the dataset readers live here too: :func:`read_image_file` (any PIL-readable
file → uint8 grey or RGB array), :func:`to_channels`, :func:`resize_square` and :func:`crop_face`
(the largest face the detector finds, cut square and resized).
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Mapping

import numpy as np

from emotk import __version__
from emotk.atomic import write_hdf5
from emotk.errors import WorkspaceError

STORE_FORMAT = 1
#: ``channels`` option spellings → channel count stored.
COLORS = {"grey": 1, "rgb": 3}


# --- the store --------------------------------------------------------------------------------------

def store_attrs(source: str, size: int, channels: int, crop: Mapping[str, object] | None = None, **extra) -> dict:
    """Provenance attributes of an image store: what made it and at which settings.

    ``crop`` holds the face detector and crop settings (``detector``, ``margin``, …); None means the
    images came already cropped (FER2013) and ``detector`` is recorded as ``"none"``.
    """
    attrs = {"source": source, "size": int(size), "channels": int(channels), "store_format": STORE_FORMAT,
             "emotk_version": __version__, "detector": "none"}
    for key, value in dict(crop or {}).items():
        attrs[key] = value
    attrs.update(extra)
    return attrs


def check_image(sample_id: str, image: np.ndarray, size: int, channels: int) -> None:
    """Refuse (ValueError: a reader bug, not a user error) an image that is not uint8 at the store's shape."""
    want = (size, size) if channels == 1 else (size, size, 3)
    if image.dtype != np.uint8 or image.shape != want:
        raise ValueError(f"image {sample_id!r} is {image.dtype} {image.shape}; the store holds uint8 {want}")


def write_image_store(path: str | Path, images: Mapping[str, np.ndarray], attrs: Mapping[str, object],
                      image_attrs: Mapping[str, Mapping[str, object]] | None = None) -> None:
    """Write ``images`` (sample_id → uint8 array) with file attributes ``attrs`` atomically to ``path``.

    Every image must be uint8 ``[size, size]`` (channels 1) or ``[size, size, 3]`` (channels 3), the
    ``size`` and ``channels`` of ``attrs``. ``image_attrs`` adds attributes to single images (face box, score).
    """
    size, channels = int(attrs["size"]), int(attrs["channels"])
    for sid, image in images.items():
        check_image(sid, image, size, channels)
    image_attrs = image_attrs or {}

    def fill(f) -> None:
        for key, value in attrs.items():
            f.attrs[key] = value
        for sid, image in images.items():
            ds = f.create_dataset(sid, data=image)
            for key, value in image_attrs.get(sid, {}).items():
                ds.attrs[key] = value

    write_hdf5(path, fill, what="the image store")


def _open(path: Path):
    import h5py

    again = "run `emotk prepare` for this dataset again to rewrite it"
    if not path.is_file():
        raise WorkspaceError(f"no image store {path}; {again}.")
    try:
        return h5py.File(path, "r")
    except OSError as exc:
        raise WorkspaceError(f"{path} is not a readable image store ({' '.join(str(exc).split())[:160]}); {again}.") from None


def image_store_attrs(path: str | Path) -> dict:
    """The file attributes (provenance) of an image store."""
    with _open(Path(path)) as f:
        return {k: (v.item() if isinstance(v, np.generic) else v) for k, v in f.attrs.items()}


def read_image_store(path: str | Path, sample_ids: list[str] | None = None) -> dict[str, np.ndarray]:
    """``{sample_id: uint8 image}`` of all images in the store, or of ``sample_ids`` (WorkspaceError if one is missing)."""
    path = Path(path)
    with _open(path) as f:
        ids = list(f.keys()) if sample_ids is None else list(sample_ids)
        missing = [s for s in ids if s not in f]
        if missing:
            raise WorkspaceError(f"{path} has no image for {len(missing)} sample(s) (e.g. {missing[0]!r}); "
                                 "run `emotk prepare` for this dataset again.")
        return {s: np.asarray(f[s][()]) for s in ids}


def load_images(path: str | Path, sample_ids: list[str]) -> np.ndarray:
    """The images of ``sample_ids`` as one uint8 array ``[N, H, W]`` or ``[N, H, W, 3]``, in that order.

    Reads through h5py's low-level dataset API straight into one preallocated array (about 4× faster
    than ``f[name][()]`` per image, which builds a high-level object per sample: see bench/images.py).
    A missing sample, or one whose shape or type differs from the first, is a WorkspaceError.
    """
    import h5py

    path = Path(path)
    again = "run `emotk prepare` for this dataset again"
    with _open(path) as f:
        if not sample_ids:
            return np.zeros((0, 0, 0), np.uint8)
        out = shape = dtype = None
        for i, sid in enumerate(sample_ids):
            try:
                ds = h5py.h5d.open(f.id, sid.encode())
            except KeyError:
                raise WorkspaceError(f"{path} has no image for sample {sid!r}; {again}.") from None
            if out is None:
                shape, dtype = ds.shape, ds.dtype
                if dtype != np.uint8:
                    raise WorkspaceError(f"{path}: image {sid!r} is {dtype}, not uint8; {again}.")
                out = np.empty((len(sample_ids), *shape), np.uint8)
            if ds.shape != shape or ds.dtype != dtype:
                raise WorkspaceError(f"{path}: image {sid!r} is {ds.dtype} {ds.shape}, the store's first image "
                                     f"{dtype} {shape}; {again}.")
            ds.read(h5py.h5s.ALL, h5py.h5s.ALL, out[i])
        return out


# --- images -----------------------------------------------------------------------------------------

def read_image_file(path: str | Path) -> np.ndarray:
    """The pixels of an image file as uint8: ``[H, W]`` for grey files, ``[H, W, 3]`` for colour ones.

    Palette and alpha images become RGB; 16-bit and float grey images are scaled to 0–255 by their
    type's range. Raises OSError / ValueError (PIL's) when the file cannot be decoded.
    """
    from PIL import Image

    with Image.open(path) as im:
        im.load()
        if im.mode in ("L", "1"):
            return np.asarray(im.convert("L"), dtype=np.uint8)
        if im.mode in ("I;16", "I;16B", "I;16L", "I;16N"):
            return (np.asarray(im, dtype=np.uint32) >> 8).astype(np.uint8)
        if im.mode in ("I", "F"):
            raise ValueError(f"{im.mode} (32-bit) images are not supported; convert the file to 8-bit")
        if im.mode == "LA":
            return np.asarray(im.convert("L"), dtype=np.uint8)
        return np.asarray(im.convert("RGB"), dtype=np.uint8)


def to_channels(image: np.ndarray, channels: int) -> np.ndarray:
    """``image`` (grey ``[H, W]`` or RGB ``[H, W, 3]``) as grey (channels 1, ITU-R 601 luma, OpenCV's) or RGB (3)."""
    import cv2

    if channels == 1:
        return image if image.ndim == 2 else cv2.cvtColor(np.ascontiguousarray(image), cv2.COLOR_RGB2GRAY)
    return np.repeat(image[..., None], 3, axis=2) if image.ndim == 2 else image


def resize_square(image: np.ndarray, size: int) -> np.ndarray:
    """``image`` resized to ``size`` × ``size`` (INTER_AREA when shrinking, bilinear when enlarging)."""
    import cv2

    h, w = image.shape[:2]
    if (h, w) == (size, size):
        return image
    interp = cv2.INTER_AREA if max(h, w) > size else cv2.INTER_LINEAR
    return cv2.resize(image, (size, size), interpolation=interp)


@dataclass
class FaceCrop:
    image: np.ndarray | None  # uint8 [size, size] or [size, size, 3]; None when no usable face
    box: tuple[float, float, float, float] | None  # x0, y0, x1, y1 in source pixels
    score: float
    problem: str | None  # why there is no crop


def crop_face(image: np.ndarray, detector, size: int, channels: int, margin: float) -> FaceCrop:
    """The largest face ``detector`` finds in ``image``, cut square around its box (enlarged by
    ``margin`` of its side on every side, black outside the image, see ``emotk.media.faces.crop_square``),
    resized to ``size`` and converted to ``channels``. No face, or a box too small or mostly outside
    the image (``emotk.media.faces.box_problem``), gives a :class:`FaceCrop` with ``problem`` set.
    """
    from emotk.media.faces import box_problem, crop_square

    rgb = to_channels(image, 3)
    dets = np.asarray(detector.detect(rgb), dtype=np.float32).reshape(-1, 5)
    if len(dets) == 0:
        return FaceCrop(None, None, 0.0, "no face found")
    areas = (dets[:, 2] - dets[:, 0]) * (dets[:, 3] - dets[:, 1])
    best = dets[int(np.argmax(areas))]
    box = tuple(float(v) for v in best[:4])
    problem = box_problem(best, rgb.shape, margin)
    if problem:
        return FaceCrop(None, box, float(best[4]), problem)
    crop = crop_square(rgb, best, size, margin)
    return FaceCrop(to_channels(crop, channels), box, float(best[4]), None)
