"""Stage 1, `edgekit train`: the reference networks trained on a data set, written to `train/<net>/`.

The stage (`train`) and its recipe (schedule, augmentation, callbacks). The package is callable
as the stage itself: importing it makes `edgekit.train` this package (Python sets the parent's
attribute), so `edgekit.train(run_dir, config)` must keep working after that."""
import sys
import types

from edgekit.train.stage import train

__all__ = ["train"]


class _StagePackage(types.ModuleType):
    def __call__(self, *args, **kwargs):
        return train(*args, **kwargs)


sys.modules[__name__].__class__ = _StagePackage
