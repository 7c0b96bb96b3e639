"""Frozen configs for each stage, and deployment-target profiles loaded from `export/*.toml`."""
from __future__ import annotations

import dataclasses
import os
import tomllib
from dataclasses import dataclass, field
from pathlib import Path

from edgekit.errors import ConfigError

NETWORK_NAMES = ("mlp", "cnn", "resnet")


@dataclass(frozen=True)
class TrainConfig:
    """Everything that decides a training result (with the network name, hashed into its key)."""
    dataset: str = "fashion-mnist"     # source name or path (IDX folder / .npz)
    data_dir: str | None = None        # overrides where a named source looks for its files
    epochs: int | None = None          # None: the network's own default (see models.NETWORKS)
    batch_size: int = 128              # 128 keeps both CPU cores busy; 32 (the reference) is 2-3x slower per epoch
    seed: int = 0
    learning_rate: float | None = None  # None: the network's own default peak rate
    warmup_epochs: float = 0.5         # linear warm-up, then cosine decay to zero
    val_fraction: float = 0.1          # held out from train, never from test
    patience: int = 5                  # early stopping on val_accuracy (best weights restored)
    limit: int | None = None           # train on the first N training images (quick runs, tests)
    mixed_precision: bool = False      # GPU only: float16 compute, float32 weights saved
    xla: bool = False                  # jit_compile; 2.8x slower on this CPU, may help on GPU
    device: str = "auto"               # auto | cpu | gpu

    def __post_init__(self) -> None:
        if self.epochs is not None and self.epochs < 1:
            raise ConfigError(f"--epochs must be >= 1, got {self.epochs}")
        if self.batch_size < 1:
            raise ConfigError(f"--batch-size must be >= 1, got {self.batch_size}")
        if not 0.0 < self.val_fraction < 0.5:
            raise ConfigError(f"val_fraction must be in (0, 0.5), got {self.val_fraction}")
        if self.device not in ("auto", "cpu", "gpu"):
            raise ConfigError(f"--device must be auto, cpu or gpu, got '{self.device}'")


@dataclass(frozen=True)
class Thresholds:
    """What a good export must satisfy. None = not checked."""
    min_agreement: float | None = None        # top-1 agreement with the source model, 0..1
    max_abs_diff: float | None = None         # max |output - source output| after dequantization
    max_accuracy_drop: float | None = None    # in accuracy points (0.5 = half a percentage point)
    max_size_ratio: float | None = None       # file size / the fp32 file of the same format and network
    max_size_bytes: int | None = None         # a flash budget
    max_latency_regression: float | None = None  # against a baseline: 0.10 = p50 may grow 10%


@dataclass(frozen=True)
class Profile:
    """A deployment target: what to export and what a good export must satisfy."""
    name: str
    description: str = ""
    variants: tuple[str, ...] = ()
    onnx_opset: int = 17
    representative_samples: int = 500   # calibration images for int8-ptq (TFLite and ONNX)
    qat_epochs: float = 1.0             # QAT fine-tuning, in epochs of the training set
    qat_learning_rate: float = 1e-4
    parity_samples: int | None = None   # None: the whole test set
    # per variant name, or per "class" (float, fp16, dynamic, int8-ptq, int8-qat); exact name wins
    thresholds: dict[str, Thresholds] = field(default_factory=dict)
    source: str = ""                    # the file it was loaded from

    def thresholds_for(self, variant: str, variant_class: str) -> Thresholds:
        return self.thresholds.get(variant) or self.thresholds.get(variant_class) or Thresholds()


def profiles_dir() -> Path:
    """`export/` beside the package (a source checkout / editable install), or $EDGEKIT_PROFILES."""
    env = os.environ.get("EDGEKIT_PROFILES")
    return Path(env) if env else Path(__file__).resolve().parent.parent / "export"


def available_profiles() -> list[str]:
    d = profiles_dir()
    return sorted(p.stem for p in d.glob("*.toml")) if d.is_dir() else []


def load_profile(name_or_path: str = "default") -> Profile:
    """A profile by name (export/NAME.toml) or by path to a TOML file."""
    p = Path(name_or_path)
    if p.suffix != ".toml":
        p = profiles_dir() / f"{name_or_path}.toml"
    if not p.is_file():
        names = ", ".join(available_profiles()) or "(none found)"
        raise ConfigError(f"profile '{name_or_path}' not found; use one of {names} or a path to a .toml file")
    try:
        raw = tomllib.loads(p.read_text())
    except tomllib.TOMLDecodeError as e:
        raise ConfigError(f"{p}: invalid TOML ({e}); fix the file") from None
    known = {f.name for f in dataclasses.fields(Profile)} - {"thresholds", "source"}
    unknown = set(raw) - known - {"thresholds"}
    if unknown:
        raise ConfigError(f"{p}: unknown keys {sorted(unknown)}; allowed: {sorted(known | {'thresholds'})}")
    th_fields = {f.name for f in dataclasses.fields(Thresholds)}
    thresholds = {}
    for key, values in raw.get("thresholds", {}).items():
        bad = set(values) - th_fields
        if bad:
            raise ConfigError(f"{p}: unknown threshold keys {sorted(bad)} in [thresholds.\"{key}\"]; "
                              f"allowed: {sorted(th_fields)}")
        thresholds[key] = Thresholds(**values)
    kwargs = {k: v for k, v in raw.items() if k in known}
    if "variants" in kwargs:
        kwargs["variants"] = tuple(kwargs["variants"])
    kwargs.setdefault("name", p.stem)
    return Profile(**kwargs, thresholds=thresholds, source=str(p))


def profile_to_dict(profile: Profile) -> dict:
    return dataclasses.asdict(profile)


def profile_from_dict(d: dict) -> Profile:
    """Rebuild a profile recorded in a manifest (so `check` judges by what `export` used)."""
    d = dict(d)
    d["variants"] = tuple(d.get("variants", ()))
    d["thresholds"] = {k: Thresholds(**v) for k, v in d.get("thresholds", {}).items()}
    return Profile(**d)
