"""Model zoo: ``build(name, size=None, dataset=None, **overrides)`` and the registry behind it."""

from emotk.models.registry import MODELS, PRESETS, Preset, build, find_preset, model_info, register_model, register_preset, sizes_of

__all__ = ["MODELS", "PRESETS", "Preset", "build", "find_preset", "model_info", "register_model", "register_preset", "sizes_of"]
