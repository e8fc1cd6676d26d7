"""Model zoo: ``build(name, size=None, dataset=None, **overrides)`` and the registry behind it.

Model families register themselves when this package is imported (the registry imports none of them).
"""

from emotk.models.registry import MODELS, PRESETS, Preset, build, find_preset, model_info, published, register_model, register_preset, sizes_of

# families: importing them runs their @register_model / register_preset calls
from emotk.models import attention, cnn, selfcross, tcn, temporal  # noqa: E402,F401  isort: skip
from emotk.models import papers  # noqa: E402,F401  isort: skip  (the papers' results, onto the presets above)

__all__ = ["MODELS", "PRESETS", "Preset", "build", "find_preset", "model_info", "published", "register_model", "register_preset", "sizes_of"]
