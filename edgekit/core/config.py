"""Frozen configs for each stage, and deployment-target profiles loaded from `export/*.toml`."""
from __future__ import annotations

import dataclasses
import os
from importlib import resources
import tomllib
from dataclasses import dataclass, field
from pathlib import Path

from edgekit.core.machine import EMULATED_CPUS
from edgekit.errors import ConfigError
from edgekit.core.networks import NETWORKS
from edgekit.core.variants import EXPORT_VARIANTS, THRESHOLD_CLASSES

# Names come from their registries (all importable without TensorFlow), never spelled out here.
NETWORK_NAMES: tuple[str, ...] = tuple(NETWORKS)
VARIANT_NAMES: tuple[str, ...] = tuple(EXPORT_VARIANTS)      # what a profile may list
VARIANT_CLASSES: tuple[str, ...] = THRESHOLD_CLASSES         # what a profile may set thresholds for
# How int8 ONNX files store weights. "u8u8": uint8 activations and uint8 weights (symmetric int8
# codes + 128, zero point 128): exact, and no CPU's integer kernel saturates on it. "u8s8": int8
# weights, fastest on CPUs with VNNI (AVX512-VNNI, AVX-VNNI), but ORT's AVX2 kernel adds weight
# pairs in int16 (VPMADDUBSW) and saturates there. See bench/RESULTS.md "ONNX int8 encoding".
ONNX_INT8_ENCODINGS = ("u8u8", "u8s8")
# CPUs the int8 parity is also run on: "native" is this machine; the others run the same files
# under qemu-user (edgekit.verify.emulation), for verdicts on CPUs nobody here owns. Never timed.
PARITY_CPUS: tuple[str, ...] = ("native", *EMULATED_CPUS)
# [thresholds.external]: files another tool made, judged against `edgekit bench --reference`
EXTERNAL_THRESHOLDS = "external"


@dataclass(frozen=True)
class TrainConfig:
    """Everything that decides a training result (with the network name, hashed into its key)."""
    dataset: str = "fashion-mnist"     # source name or path (IDX folder / .npz)
    data_dir: str | None = None        # overrides where a named source looks for its files
    epochs: int | None = None          # None: the network's own default (see models.NETWORKS)
    batch_size: int = 128              # large enough to keep every CPU core busy per step (bench/bench_train.py measures it)
    seed: int = 0
    learning_rate: float | None = None  # None: the network's own default peak rate
    warmup_epochs: float = 0.5         # linear warm-up, then cosine decay to zero
    val_fraction: float = 0.1          # held out from train, never from test
    patience: int = 5                  # early stopping on val_accuracy (best weights restored)
    limit: int | None = None           # train on the first N training images (quick runs, tests)
    num_classes: int | None = None     # None: max label + 1 (a class that never occurs is an error)
    mixed_precision: bool = False      # GPU only: float16 compute, float32 weights saved
    xla: bool = False                  # jit_compile; off: it slowed CPU training in bench/bench_train.py, may help on GPU
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
        if self.learning_rate is not None and not self.learning_rate > 0:
            raise ConfigError(f"--lr must be > 0, got {self.learning_rate}")
        if self.limit is not None and self.limit < 2:
            raise ConfigError(f"--limit must be at least 2 (one image to train on, one to validate), got {self.limit}")
        if self.num_classes is not None and self.num_classes < 2:
            raise ConfigError(f"--num-classes must be >= 2, got {self.num_classes}")
        if self.warmup_epochs < 0:
            raise ConfigError(f"warmup_epochs must be >= 0, got {self.warmup_epochs}")
        if self.patience < 0:
            raise ConfigError(f"patience must be >= 0, got {self.patience}")
        if not self.dataset:
            raise ConfigError("--dataset must not be empty; use fashion-mnist, mnist, synthetic or a path")


@dataclass(frozen=True)
class Thresholds:
    """What a good export must satisfy. None = not checked."""
    min_agreement: float | None = None        # top-1 agreement with the source model, 0..1
    max_abs_diff: float | None = None         # max |output - source output| after dequantization
    max_accuracy_drop: float | None = None    # in accuracy points (0.5 = half a percentage point)
    max_size_ratio: float | None = None       # weight bytes / the fp32 file's weight bytes (same format, network)
    max_size_bytes: int | None = None         # a flash budget, on file bytes
    min_kernel_agreement: float | None = None # top-1 agreement of a runtime's fused/fast kernels with the
                                              # file's reference kernels (ORT optimized vs unoptimized,
                                              # LiteRT XNNPACK vs builtin), 0..1
    max_latency_regression: float | None = None  # against a baseline: 0.10 = p50 may grow 10%
    max_expected_size_excess: float | None = None  # weight bytes over what the file's route stores its
                                              # tensors in (edgekit.verify.expected_size): 0.05 = 5%
    min_snr_db: float | None = None           # output SNR against the reference model, dB; when most parity
                                              # samples are near ties it judges parity in min_agreement's
                                              # place (unset: edgekit.verify.output_error.DEFAULT_MIN_SNR_DB)


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
    onnx_int8_encoding: str = "u8u8"    # one of ONNX_INT8_ENCODINGS; "u8s8" only for a known VNNI target
    parity_cpus: tuple[str, ...] = ("native",)  # PARITY_CPUS to run int8 parity on (emulated ones: qemu)
    # above this share of parity samples whose reference top-1 margin is a near tie, top-1 agreement
    # proves nothing and parity is judged by output error (edgekit.verify.output_error)
    max_near_tie_share: float = 0.5
    # per variant name, or per "class" (float, fp16, dynamic, int8-ptq, int8-qat); exact name wins
    thresholds: dict[str, Thresholds] = field(default_factory=dict)
    source: str = ""                    # the file it was loaded from

    def thresholds_for(self, variant: str, variant_class: str) -> Thresholds:
        return self.thresholds.get(variant) or self.thresholds.get(variant_class) or Thresholds()


def profiles_dir() -> Path:
    """The profiles shipped as package data (`edgekit/profiles`, which in a checkout is a link to the
    repo's `export/`, where people edit them), or $EDGEKIT_PROFILES."""
    env = os.environ.get("EDGEKIT_PROFILES")
    return Path(env) if env else Path(str(resources.files("edgekit").joinpath("profiles"))).resolve()


def available_profiles() -> list[str]:
    d = profiles_dir()
    return sorted(p.stem for p in d.glob("*.toml")) if d.is_dir() else []


def load_profile(name_or_path: str = "default") -> Profile:
    """A profile by name (export/NAME.toml) or by path to a TOML file, validated key by key
    (a typo in a variant or threshold name would otherwise silently check nothing)."""
    p = Path(name_or_path).expanduser()
    if p.suffix != ".toml":
        p = profiles_dir() / f"{name_or_path}.toml"
    if not p.is_file():
        names = ", ".join(available_profiles()) or "(none found)"
        raise ConfigError(f"profile '{name_or_path}' not found; use one of {names} or a path to a .toml file")
    try:
        raw = tomllib.loads(p.read_text())
    except tomllib.TOMLDecodeError as e:
        raise ConfigError(f"{p}: invalid TOML ({e}); fix the file") from e
    except (OSError, UnicodeDecodeError) as e:
        raise ConfigError(f"{p}: cannot read the profile ({e}); check the file") from e
    known = {f.name for f in dataclasses.fields(Profile)} - {"thresholds", "source"}
    unknown = set(raw) - known - {"thresholds"}
    if unknown:
        raise ConfigError(f"{p}: unknown keys {sorted(unknown)}; allowed: {sorted(known | {'thresholds'})}")
    kwargs = {k: v for k, v in raw.items() if k in known}
    _check_types(p, kwargs)
    variants = kwargs.get("variants", [])
    if not isinstance(variants, list) or not all(isinstance(v, str) for v in variants):
        raise ConfigError(f"{p}: variants must be a list of names, e.g. [\"tflite-fp32\"]")
    bad = [v for v in variants if v not in VARIANT_NAMES]
    if bad:
        raise ConfigError(f"{p}: unknown variants {bad}; use any of {', '.join(VARIANT_NAMES)}")
    kwargs["variants"] = tuple(variants)
    enc = kwargs.get("onnx_int8_encoding", "u8u8")
    if enc not in ONNX_INT8_ENCODINGS:
        raise ConfigError(f"{p}: onnx_int8_encoding = {enc!r} is unknown; use one of {', '.join(ONNX_INT8_ENCODINGS)}")
    cpus = kwargs.get("parity_cpus", ["native"])
    if not isinstance(cpus, list) or not cpus or not all(isinstance(c, str) for c in cpus):
        raise ConfigError(f"{p}: parity_cpus must be a non-empty list of names, e.g. [\"native\", \"x86-avx2\"]")
    bad_cpus = [c for c in cpus if c not in PARITY_CPUS]
    if bad_cpus:
        raise ConfigError(f"{p}: unknown parity_cpus {bad_cpus}; use any of {', '.join(PARITY_CPUS)}")
    kwargs["parity_cpus"] = tuple(dict.fromkeys(cpus))
    kwargs.setdefault("name", p.stem)
    return Profile(**kwargs, thresholds=_thresholds(p, raw.get("thresholds", {})), source=str(p))


def _check_types(p: Path, kwargs: dict) -> None:
    types = {"name": str, "description": str, "onnx_opset": int, "representative_samples": int,
             "qat_epochs": (int, float), "qat_learning_rate": (int, float), "parity_samples": int,
             "onnx_int8_encoding": str, "max_near_tie_share": (int, float)}
    for key, want in types.items():
        v = kwargs.get(key)
        if v is not None and (not isinstance(v, want) or isinstance(v, bool)):
            raise ConfigError(f"{p}: {key} = {v!r} has the wrong type; expected "
                              f"{'a number' if isinstance(want, tuple) else want.__name__}")
    for key in ("onnx_opset", "representative_samples", "parity_samples"):
        if kwargs.get(key) is not None and kwargs[key] < 1:
            raise ConfigError(f"{p}: {key} must be >= 1, got {kwargs[key]}")
    if kwargs.get("qat_epochs", 1) <= 0 or kwargs.get("qat_learning_rate", 1) <= 0:
        raise ConfigError(f"{p}: qat_epochs and qat_learning_rate must be > 0")
    if not 0 <= kwargs.get("max_near_tie_share", 0.5) <= 1:
        raise ConfigError(f"{p}: max_near_tie_share must be a share of samples in [0, 1], "
                          f"got {kwargs['max_near_tie_share']}")


def _thresholds(p: Path, table) -> dict[str, Thresholds]:
    th_fields = {f.name for f in dataclasses.fields(Thresholds)}
    if not isinstance(table, dict):
        raise ConfigError(f"{p}: thresholds must be tables like [thresholds.int8-qat]")
    out = {}
    for key, values in table.items():
        if key not in VARIANT_NAMES and key not in VARIANT_CLASSES and key != EXTERNAL_THRESHOLDS:
            raise ConfigError(f"{p}: [thresholds.{key}] names no variant or variant class; use one of "
                              f"{', '.join(VARIANT_CLASSES)}, {EXTERNAL_THRESHOLDS} or a variant name")
        if not isinstance(values, dict):
            raise ConfigError(f"{p}: thresholds.{key} must be a table of limits, e.g. min_agreement = 0.99")
        bad = set(values) - th_fields
        if bad:
            raise ConfigError(f"{p}: unknown threshold keys {sorted(bad)} in [thresholds.{key}]; "
                              f"allowed: {sorted(th_fields)}")
        for name, v in values.items():
            if not isinstance(v, (int, float)) or isinstance(v, bool):
                raise ConfigError(f"{p}: thresholds.{key}.{name} = {v!r} must be a number")
            if name == "max_expected_size_excess" and v < 0:
                raise ConfigError(f"{p}: thresholds.{key}.{name} = {v} must be >= 0 (0.05 = 5% over the "
                                  f"route's expected weight bytes)")
        out[key] = Thresholds(**values)
    return out


def profile_to_dict(profile: Profile) -> dict:
    return dataclasses.asdict(profile)


def profile_from_dict(d: dict) -> Profile:
    """Rebuild a profile recorded in a manifest (so `check` judges by what `export` used)."""
    d = dict(d)
    fields = {f.name for f in dataclasses.fields(Profile)}
    th_fields = {f.name for f in dataclasses.fields(Thresholds)}
    unknown = set(d) - fields
    unknown_th = {k for v in (d.get("thresholds") or {}).values() for k in v} - th_fields
    if unknown or unknown_th or "name" not in d:
        raise ConfigError(f"the recorded profile has unknown keys {sorted(unknown | unknown_th)}"
                          + ("" if "name" in d else " and no name")
                          + " (written by another edgekit version?); pass --profile NAME")
    d["variants"] = tuple(d.get("variants", ()))
    if "parity_cpus" in d:
        d["parity_cpus"] = tuple(d["parity_cpus"])
    d["thresholds"] = {k: Thresholds(**v) for k, v in (d.get("thresholds") or {}).items()}
    return Profile(**d)
