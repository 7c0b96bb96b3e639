"""Profiles (export/*.toml) and TrainConfig validation."""
from __future__ import annotations

import dataclasses
import json
from pathlib import Path

import pytest

from edgekit.core import config
from edgekit.core.config import (Profile, Thresholds, TrainConfig, load_profile, profile_from_dict,
                            profile_to_dict)
from edgekit.errors import ConfigError

EXPORT_DIR = Path(__file__).resolve().parents[2] / "export"
PROFILE_FILES = sorted(EXPORT_DIR.glob("*.toml"))
# The eight variant names of CONTRACTS.md, spelled out here on purpose (not imported).
CONTRACT_VARIANTS = {"tflite-fp32", "tflite-fp16", "tflite-dynamic", "tflite-int8-ptq", "tflite-int8-qat",
                     "onnx-fp32", "onnx-int8-ptq", "onnx-int8-qat"}
CONTRACT_CLASSES = {"float", "fp16", "dynamic", "int8-ptq", "int8-qat"}


def test_profiles_exist():
    assert {p.stem for p in PROFILE_FILES} >= {"default", "mcu", "mobile", "server"}
    assert config.available_profiles() == [p.stem for p in PROFILE_FILES]


@pytest.mark.parametrize("path", PROFILE_FILES, ids=lambda p: p.stem)
def test_every_profile_loads_by_name_and_path(path):
    by_name, by_path = load_profile(path.stem), load_profile(str(path))
    assert by_name == by_path
    assert by_name.name == path.stem and Path(by_name.source).resolve() == path.resolve()
    assert by_name.variants and set(by_name.variants) <= CONTRACT_VARIANTS
    assert len(set(by_name.variants)) == len(by_name.variants)
    assert set(by_name.thresholds) <= CONTRACT_VARIANTS | CONTRACT_CLASSES | {config.EXTERNAL_THRESHOLDS}
    assert by_name.description
    for th in by_name.thresholds.values():
        assert any(v is not None for v in dataclasses.asdict(th).values())


def test_default_profile_has_every_variant():
    assert set(load_profile().variants) == CONTRACT_VARIANTS


def test_profile_names_come_from_the_registries():
    """config spells no name itself: profiles validate against edgekit.core.variants, edgekit.core.networks and
    edgekit.verify.emulation, and the public contract (the names users write in profiles) holds."""
    from edgekit.core.machine import EMULATED_CPUS
    from edgekit.core.networks import NETWORKS
    from edgekit.core.variants import EXPORT_VARIANTS, VARIANTS, Role

    assert config.VARIANT_NAMES == tuple(EXPORT_VARIANTS) and set(config.VARIANT_NAMES) == CONTRACT_VARIANTS
    assert set(config.VARIANT_CLASSES) == {v.variant_class for v in EXPORT_VARIANTS.values()} == CONTRACT_CLASSES
    assert {v.role for v in VARIANTS.values() if v.name not in EXPORT_VARIANTS} == {Role.SOURCE, Role.QAT}
    assert config.NETWORK_NAMES == tuple(NETWORKS) and config.PARITY_CPUS == ("native", *EMULATED_CPUS)


def test_every_export_row_has_exactly_one_converter():
    """Converters register themselves against the rows (the registry imports none of them): every
    export row has one, no converter serves two rows, and registering a second one is refused."""
    import edgekit.convert  # noqa: F401  (registers)
    from edgekit.core import variants
    from edgekit.errors import ConfigError

    rows = variants.EXPORT_VARIANTS.values()
    fns = [variants.converter_of(v) for v in rows]
    assert len(set(map(id, fns))) == len(fns) == len(variants._CONVERTERS)
    assert len({(v.format, v.variant_class) for v in rows}) == len(rows)   # the converters' keys are unique
    some = next(iter(rows))
    with pytest.raises(ConfigError, match="already has a converter"):
        variants.register_converter(some.format, some.variant_class)(lambda variant, inputs, path: None)
    with pytest.raises(ConfigError, match="1 export variants|0 export variants"):
        variants.register_converter(variants.Format.KERAS, variants.VariantClass.FLOAT)


def test_the_registry_imports_no_converter():
    """No hidden circle: variants reaches the converters only through what registered itself."""
    import ast
    from edgekit.core import variants

    tree = ast.parse(Path(variants.__file__).read_text())
    names = {a.name for n in ast.walk(tree) if isinstance(n, (ast.Import, ast.ImportFrom)) for a in n.names}
    mods = {n.module for n in ast.walk(tree) if isinstance(n, ast.ImportFrom)}
    assert "importlib" not in names and not any((m or "").startswith("edgekit.convert") for m in mods)


def test_profiles_dir_override(tmp_path, monkeypatch):
    (tmp_path / "edge.toml").write_text('variants = ["tflite-fp32"]\n')
    monkeypatch.setenv("EDGEKIT_PROFILES", str(tmp_path))
    assert config.available_profiles() == ["edge"]
    assert load_profile("edge").variants == ("tflite-fp32",)


def write(tmp_path, text: str, name="p.toml") -> str:
    p = tmp_path / name
    p.write_text(text)
    return str(p)


def config_error(*args) -> str:
    with pytest.raises(ConfigError) as e:
        load_profile(*args)
    msg = str(e.value)
    assert "\n" not in msg, msg
    return msg


def test_profile_from_path_defaults(tmp_path):
    prof = load_profile(write(tmp_path, 'variants = ["onnx-fp32"]\n[thresholds.onnx-fp32]\nmin_agreement = 1\n'))
    assert prof.name == "p" and prof.variants == ("onnx-fp32",) and prof.onnx_opset == 17
    assert prof.thresholds == {"onnx-fp32": Thresholds(min_agreement=1)}


@pytest.mark.parametrize("text, needles", [
    ('variants = ["tflite-fp32"]\nqat_epoch = 2\n', ["unknown keys ['qat_epoch']", "qat_epochs"]),
    ('[thresholds.float]\nmin_agreements = 1.0\n', ["unknown threshold keys ['min_agreements']", "[thresholds.float]"]),
    ('variants = ["tflite-fp32", "tflite-int4"]\n', ["unknown variants ['tflite-int4']", "tflite-int8-qat"]),
    ('[thresholds.int8_qat]\nmax_accuracy_drop = 0.5\n', ["[thresholds.int8_qat] names no variant", "int8-qat"]),
    ('variants = "tflite-fp32"\n', ["variants must be a list"]),
    ('qat_epochs = "one"\n', ["qat_epochs = 'one'", "a number"]),
    ('representative_samples = 0\n', ["representative_samples must be >= 1"]),
    ('qat_learning_rate = -1e-4\n', ["must be > 0"]),
    ('thresholds = 3\n', ["thresholds must be tables"]),
    ('[thresholds]\nfloat = 1.0\n', ["thresholds.float must be a table"]),
    ('[thresholds.float]\nmin_agreement = "high"\n', ["thresholds.float.min_agreement = 'high' must be a number"]),
    ('variants = ["tflite-fp32"\n', ["invalid TOML", "fix the file"]),
    ('name = = 3\n', ["invalid TOML"]),
], ids=["unknown-key", "unknown-threshold-key", "unknown-variant", "unknown-threshold-section",
        "variants-not-list", "wrong-type", "zero-samples", "negative-lr", "thresholds-scalar",
        "threshold-scalar", "threshold-string", "bad-toml", "bad-toml-2"])
def test_bad_profiles(tmp_path, text, needles):
    path = write(tmp_path, text)
    msg = config_error(path)
    assert path in msg
    for n in needles:
        assert n in msg, (n, msg)


def test_missing_profile_lists_the_available_ones(tmp_path):
    msg = config_error("nosuch")
    assert "profile 'nosuch' not found" in msg and "default" in msg and "mcu" in msg
    assert "not found" in config_error(str(tmp_path / "nosuch.toml"))


def test_profile_dict_round_trip_through_json():
    for path in PROFILE_FILES:
        prof = load_profile(path.stem)
        d = profile_to_dict(prof)
        assert d["name"] == prof.name and d["thresholds"] == {k: dataclasses.asdict(v) for k, v in prof.thresholds.items()}
        assert profile_from_dict(d) == prof
        assert profile_from_dict(json.loads(json.dumps(d))) == prof  # as a manifest stores it
    tweaked = dataclasses.replace(load_profile(), representative_samples=7, parity_samples=100)
    assert profile_from_dict(json.loads(json.dumps(profile_to_dict(tweaked)))) == tweaked


def test_profile_from_dict_rejects_foreign_records():
    d = profile_to_dict(load_profile("mcu"))
    with pytest.raises(ConfigError, match=r"unknown keys \['int4_mode'\].*--profile"):
        profile_from_dict({**d, "int4_mode": True})
    d["thresholds"]["int8-qat"]["max_flash"] = 1
    with pytest.raises(ConfigError, match="max_flash"):
        profile_from_dict(d)
    with pytest.raises(ConfigError, match="no name"):
        profile_from_dict({"variants": ["tflite-fp32"]})


def test_thresholds_for_exact_name_wins():
    prof = Profile(name="x", thresholds={"int8-qat": Thresholds(min_agreement=0.99),
                                         "onnx-int8-qat": Thresholds(min_agreement=0.9)})
    assert prof.thresholds_for("onnx-int8-qat", "int8-qat").min_agreement == 0.9
    assert prof.thresholds_for("tflite-int8-qat", "int8-qat").min_agreement == 0.99
    assert prof.thresholds_for("tflite-fp16", "fp16") == Thresholds()


# ------------------------------------------------------------------------------- TrainConfig

def test_train_config_defaults_and_frozen():
    cfg = TrainConfig()
    assert cfg.dataset == "fashion-mnist" and cfg.batch_size == 128 and 0 < cfg.val_fraction < 0.5
    with pytest.raises(dataclasses.FrozenInstanceError):
        cfg.epochs = 3  # type: ignore[misc]
    assert TrainConfig(epochs=1, limit=2, learning_rate=1e-3, patience=0, device="cpu").limit == 2


@pytest.mark.parametrize("kwargs, needle", [
    ({"epochs": 0}, "--epochs must be >= 1"),
    ({"batch_size": 0}, "--batch-size must be >= 1"),
    ({"val_fraction": 0.0}, "val_fraction"),
    ({"val_fraction": 0.5}, "val_fraction"),
    ({"device": "tpu"}, "--device must be auto, cpu or gpu"),
    ({"learning_rate": 0.0}, "--lr must be > 0"),
    ({"limit": 1}, "--limit must be at least 2"),
    ({"warmup_epochs": -1.0}, "warmup_epochs"),
    ({"patience": -1}, "patience"),
    ({"dataset": ""}, "--dataset must not be empty"),
])
def test_train_config_validation(kwargs, needle):
    with pytest.raises(ConfigError, match=needle.replace("(", r"\(")) as e:
        TrainConfig(**kwargs)
    assert "\n" not in str(e.value)
