"""Stage 1, `edgekit train`: the reference networks trained on a data set, written to `train/<net>/`.

The stage (`train`) and its recipe (schedule, augmentation, callbacks)."""
from edgekit.train.stage import train

__all__ = ["train"]
