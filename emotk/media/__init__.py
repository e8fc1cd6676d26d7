"""Media: streaming video decoding (decord, PyAV fallback) and face detection / cropping."""

from emotk.media.video import MediaError, VideoInfo, VideoStream, available_decoders, iter_frames, probe

__all__ = ["MediaError", "VideoInfo", "VideoStream", "available_decoders", "iter_frames", "probe"]
