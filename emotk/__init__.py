"""emotk: reproducible emotion-recognition research, from raw datasets to paper tables."""

__version__ = "0.1.0"

from emotk.errors import EmotkError  # noqa: E402,F401
