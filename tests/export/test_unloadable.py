"""A converted file its own runtime rejects is named by its final name, with the runtime's reason
and what the user can do, never its temporary name or a re-export that cannot help."""
from __future__ import annotations

import dataclasses
from pathlib import Path

from conftest import copy_run
from edgekit.core.progress import Progress


def test_a_file_its_runtime_rejects_is_named_by_its_final_name(exported_run, tiny_profile, tmp_path, monkeypatch):
    from edgekit.convert import converters as convert
    from edgekit.core import variants
    from edgekit.export import export_run

    def corrupt(inputs, path):
        convert.make_tflite_fp16.convert(inputs, path)
        data = Path(path).read_bytes()
        Path(path).write_bytes(data[:len(data) // 3])   # truncated: the interpreter rejects it

    monkeypatch.setitem(variants._CONVERTERS, "tflite-fp16", convert.checked(corrupt))
    run = copy_run(exported_run, tmp_path / "run")
    profile = dataclasses.replace(tiny_profile, variants=("tflite-fp32", "tflite-fp16"))
    sec = export_run(run, profile, models=("cnn",), force=True, progress=Progress(quiet=True))
    v = sec["models"]["cnn"]["variants"]["tflite-fp16"]
    assert v["status"] == "failed" and ".tmp" not in v["error"] and "re-export" not in v["error"], v["error"]
    assert "drop 'tflite-fp16'" in v["error"]
    assert not (run / "export" / "cnn" / "tflite-fp16.tflite").exists()
