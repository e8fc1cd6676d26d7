"""Reader for CMU-MultimodalSDK computational sequences (``.csd`` files, HDF5).

Layout (the SDK's ``computational_sequence/file_ops.py``)::

    /<root name>/                   one root group, e.g. "All Labels"
        data/<video_id>/features    N x D floats, one row per interval
        data/<video_id>/intervals   N x 2 seconds (start, end); N equals the features' N
        metadata/<key>              1-element variable-length string holding JSON

The SDK's ``align()`` renames entries ``<video_id>[<k>]``; such a file is refused (emotk reads the
sequences as distributed). A file that is not HDF5 or has no ``data`` group raises
:class:`~emotk.errors.DatasetError`; a broken entry (missing array, wrong shape, N mismatch) raises
:class:`CSDEntryError`, which a dataset reader can catch to list and skip that one video.
"""

from __future__ import annotations

import json
import re
from pathlib import Path

import h5py
import numpy as np

from emotk.errors import DatasetError

_ALIGNED_KEY = re.compile(r".+\[\d+\]$")


class CSDEntryError(DatasetError):
    """One video's entry of a computational sequence is unusable (the rest of the file may be fine)."""


class ComputationalSequence:
    """An open ``.csd`` file: ``video_ids()``, ``read(video_id)``, ``metadata``. Use as a context manager."""

    def __init__(self, path: str | Path):
        self.path = Path(path)
        if not self.path.is_file():
            raise DatasetError(f"computational sequence {self.path} does not exist (or is not a file). "
                               "Download it with the CMU-MultimodalSDK or pass its path.")
        try:
            self._file = h5py.File(self.path, "r")
        except OSError as exc:
            detail = " ".join(str(exc).split())[:160]
            raise DatasetError(f"{self.path} is not an HDF5 computational sequence ({detail}). A .csd file is "
                               "HDF5; re-download it with the CMU-MultimodalSDK.") from None
        try:
            self.root_name, self._data = self._find_data()
            self.metadata = self._read_metadata()
        except BaseException:
            self._file.close()
            raise

    def _find_data(self) -> tuple[str, h5py.Group]:
        roots = [k for k in self._file.keys() if isinstance(self._file[k], h5py.Group)]
        with_data = [k for k in roots if isinstance(self._file[k].get("data"), h5py.Group)]
        if not with_data:
            found = ", ".join(repr(k) for k in list(self._file.keys())[:5]) or "nothing"
            raise DatasetError(
                f"{self.path}: no '<root>/data' group (top level holds {found}). A computational sequence has one "
                "root group with data/<video_id>/{features,intervals}; re-download the file with the "
                "CMU-MultimodalSDK.")
        name = with_data[0]
        data = self._file[name]["data"]
        aligned = [k for k in list(data.keys())[:50] if _ALIGNED_KEY.fullmatch(k)]
        if aligned:
            raise DatasetError(
                f"{self.path}: entries are named like {aligned[0]!r}: this sequence was aligned by the SDK "
                "(align() renames segments <video_id>[<k>]). Use the sequence as distributed.")
        return name, data

    def _read_metadata(self) -> dict:
        group = self._file[self.root_name].get("metadata")
        out: dict = {}
        if not isinstance(group, h5py.Group):
            return out
        for key in group.keys():
            node = group[key]
            if not isinstance(node, h5py.Dataset) or node.size < 1:
                continue
            value = node[()]
            value = value.reshape(-1)[0] if isinstance(value, np.ndarray) else value
            text = value.decode("utf-8", "replace") if isinstance(value, bytes) else str(value)
            try:
                out[key] = json.loads(text)
            except ValueError:
                out[key] = text
        return out

    def video_ids(self) -> list[str]:
        """Entry names under ``data``, in the file's order."""
        return list(self._data.keys())

    def __contains__(self, video_id: str) -> bool:
        return video_id in self._data

    def read(self, video_id: str) -> tuple[np.ndarray, np.ndarray]:
        """``(features [N, D] float64, intervals [N, 2] float64)`` of one video; CSDEntryError if unusable."""
        where = f"{self.path}, video {video_id!r}"
        fix = "re-download the computational sequence; this video is skipped"
        entry = self._data.get(video_id)
        if not isinstance(entry, h5py.Group):
            raise CSDEntryError(f"{where}: no such entry under data/ ({fix}).")
        arrays = {}
        for name in ("features", "intervals"):
            node = entry.get(name)
            if not isinstance(node, h5py.Dataset):
                raise CSDEntryError(f"{where}: '{name}' is missing ({fix}).")
            try:
                arrays[name] = np.asarray(node[()], dtype=np.float64)
            except (TypeError, ValueError, OSError) as exc:
                raise CSDEntryError(f"{where}: '{name}' cannot be read as numbers ({exc}) ({fix}).") from None
        feats, ivals = arrays["features"], arrays["intervals"]
        if feats.ndim == 1:
            feats = feats[:, None]
        if feats.ndim != 2:
            raise CSDEntryError(f"{where}: features have shape {list(feats.shape)}, expected [N, D] ({fix}).")
        if ivals.ndim != 2 or ivals.shape[1] != 2:
            raise CSDEntryError(f"{where}: intervals have shape {list(ivals.shape)}, expected [N, 2] ({fix}).")
        if feats.shape[0] != ivals.shape[0]:
            raise CSDEntryError(f"{where}: {feats.shape[0]} feature rows but {ivals.shape[0]} intervals; N must "
                                f"match ({fix}).")
        return feats, ivals

    def close(self) -> None:
        self._file.close()

    def __enter__(self) -> "ComputationalSequence":
        return self

    def __exit__(self, *exc) -> None:
        self.close()


def open_csd(path: str | Path) -> ComputationalSequence:
    """Open a ``.csd`` file (DatasetError when it is missing, not HDF5, or has no data group)."""
    return ComputationalSequence(path)
