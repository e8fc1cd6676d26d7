"""Media: streaming video decoding (decord, PyAV fallback) and face detection / cropping.

OpenCV, decord and PyAV are imported only when used (the ``video`` extra provides them).
"""

from emotk.media.faces import (
    CropResult,
    crop_frames,
    crop_video,
    get_detector,
    list_detectors,
    register_detector,
)
from emotk.media.video import MediaError, VideoInfo, VideoStream, available_decoders, iter_frames, probe

__all__ = [
    "CropResult", "MediaError", "VideoInfo", "VideoStream", "available_decoders", "crop_frames", "crop_video",
    "get_detector", "iter_frames", "list_detectors", "probe", "register_detector",
]
