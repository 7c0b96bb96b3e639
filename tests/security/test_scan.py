"""Validating a model never runs its code: scan before load, refuse with one line (exit 2),
contain what the user trusts, and load edgekit's own files only while intact.

The payload models are real tf_keras models whose Lambda writes a marker file (its pid and
whether a planted token variable was visible) and, in the SavedModel, whose graph holds a
tf.io.write_file op writing a second marker.
"""
from __future__ import annotations

import dataclasses
import json
import os
import re
import shutil
from pathlib import Path

import pytest

import edgekit  # noqa: F401  (TF_USE_LEGACY_KERAS before TensorFlow loads)
from edgekit import cli
from edgekit.errors import ModelError, UntrustedModelError

TOKEN_VAR = "EDGEKIT_TEST_CI_TOKEN"
FORMATS = ("h5", "keras", "savedmodel")


def _payload_source(marker: Path) -> str:
    """A lambda whose body records the pid and the environment it ran in (self-contained:
    a deserialized Lambda sees none of this module's globals)."""
    return ("lambda t: (__import__('builtins').open(%r, 'w').write(__import__('json').dumps("
            "{'pid': __import__('os').getpid(), 'token': %r in __import__('os').environ, "
            "'tf_var': 'TF_VAR_db_url' in __import__('os').environ, "
            "'home': __import__('os').path.expanduser('~'), "
            "'cwd': __import__('os').getcwd()})), t)[1]" % (str(marker), TOKEN_VAR))


@pytest.fixture(scope="module")
def payloads(tmp_path_factory) -> dict:
    """{format: (model path, Lambda marker, graph-op marker or None)} in a folder of its own."""
    import tensorflow as tf
    import tf_keras

    root = tmp_path_factory.mktemp("payloads")
    out = {}
    for fmt in FORMATS:
        d = root / fmt
        d.mkdir()
        marker, op_marker = d / "lambda_ran.json", (d / "op_ran.txt" if fmt == "savedmodel" else None)
        i = tf_keras.Input((4, 4, 1))
        x = tf_keras.layers.Flatten()(i)
        x = tf_keras.layers.Lambda(eval(_payload_source(marker)), name="payload")(x)
        if op_marker is not None:
            op_path = str(op_marker)

            class WriteOp(tf_keras.layers.Layer):
                def call(self, t):
                    tf.io.write_file(op_path, tf.strings.as_string(tf.reduce_sum(t)))
                    return t
            x = WriteOp(name="writer")(x)
        model = tf_keras.Model(i, tf_keras.layers.Dense(3)(x))
        path = d / {"h5": "user.h5", "keras": "user.keras", "savedmodel": "user_savedmodel"}[fmt]
        model.save(str(path))
        for m in (marker, op_marker):  # building and saving ran the payload here: start clean
            if m is not None and m.exists():
                m.unlink()
        out[fmt] = (path, marker, op_marker)
    return out


@pytest.fixture(scope="module")
def fp32_profile(tmp_path_factory) -> Path:
    p = tmp_path_factory.mktemp("profile") / "fp32only.toml"
    p.write_text('variants = ["tflite-fp32"]\nparity_samples = 20\n')
    return p


def _copy(src: Path, dst_dir: Path) -> Path:
    dst = dst_dir / src.name
    (shutil.copytree if src.is_dir() else shutil.copy2)(src, dst)
    return dst


@pytest.mark.parametrize("fmt", FORMATS)
def test_payload_model_is_refused_by_export_in_one_line(fmt, payloads, fp32_profile, tmp_path, capsys):
    path, marker, op_marker = payloads[fmt]
    out = tmp_path / "out"
    rc = cli.main(["export", "--model", str(path), "--out", str(out), "--profile", str(fp32_profile)])
    err = capsys.readouterr().err.strip().splitlines()
    assert rc == 2
    assert len(err) == 1, err
    line = err[0]
    assert line.startswith(f"edgekit: error: {path}: refused to load")
    assert "Lambda layer" in line and "--trust-model" in line and "trust_model=True" in line
    if fmt == "savedmodel":
        assert "WriteFile op in saved_model.pb" in line
    else:
        assert "'payload'" in line
    assert not marker.exists() and not (op_marker and op_marker.exists())
    assert not out.exists()  # nothing half-written


def test_python_api_refuses_too(payloads, fp32_profile, tmp_path):
    from edgekit.core.config import load_profile
    from edgekit.export.stage import export_model
    from edgekit.runtimes.keras_tf import load_keras_model

    path, marker, _ = payloads["keras"]
    with pytest.raises(UntrustedModelError, match="Lambda layer 'payload'"):
        export_model(path, tmp_path / "out", load_profile(str(fp32_profile)))
    with pytest.raises(UntrustedModelError):
        load_keras_model(path)
    assert not marker.exists() and not (tmp_path / "out").exists()


@pytest.mark.parametrize("fmt", FORMATS)
def test_trusted_export_runs_contained_and_records_findings(fmt, payloads, fp32_profile, tmp_path,
                                                            monkeypatch, capsys):
    path = _copy(payloads[fmt][0], tmp_path)  # own copy: the payload writes next to the original
    _, marker, op_marker = payloads[fmt]
    monkeypatch.setenv(TOKEN_VAR, "planted-secret")
    monkeypatch.setenv("TF_VAR_db_url", "postgres://terraform-secret")   # Terraform's TF_ prefix
    monkeypatch.chdir(tmp_path)
    out = tmp_path / "out"
    try:
        rc = cli.main(["export", "--model", str(path), "--out", str(out), "--profile", str(fp32_profile),
                       "--trust-model"])
        seen = json.loads(marker.read_text())
    finally:
        for m in (marker, op_marker):
            if m is not None and m.exists():
                m.unlink()
    stderr = capsys.readouterr().err
    assert "loading and converting it in a subprocess" in stderr  # the worker's lines reach the user
    assert seen["pid"] != os.getpid()
    assert seen["token"] is False and seen["tf_var"] is False
    assert Path(seen["cwd"]) != tmp_path and not Path(seen["cwd"]).exists()  # private dir, removed
    assert seen["home"] == seen["cwd"] != os.path.expanduser("~")  # ~/.aws etc. are not at ~
    m = json.loads((out / "manifest.json").read_text())["stages"]["export"]["models"][path.name.split(".")[0]]
    scan = m["model_scan"]
    assert scan["trust_model"] is True and scan["contained"] is True and scan["clean"] is False
    kinds = {f["kind"] for f in scan["findings"]}
    assert "lambda-layer" in kinds
    v = m["variants"]["tflite-fp32"]
    if fmt == "savedmodel":
        # the graph's WriteFile op has no TFLite kernel: the variant fails, as it would uncontained
        assert "file-op" in kinds and v["status"] == "failed" and rc == 1
    else:
        assert v["status"] == "ok" and rc == 0


def test_scan_finds_what_modelscan_misses(tmp_path):
    """A Lambda nested in a Sequential, HDF5 content under another suffix (tf_keras loads it as
    HDF5), a custom class, and Python-callback ops in a SavedModel graph."""
    import tensorflow as tf
    import tf_keras

    from edgekit.security.scan import check_model, scan_model

    inner = tf_keras.Sequential([tf_keras.layers.Lambda(lambda t: t + 1.0, input_shape=(4,), name="hidden"),
                                 tf_keras.layers.Dense(2)], name="inner")
    i = tf_keras.Input((4,))
    tf_keras.Model(i, inner(i)).save(str(tmp_path / "nested.h5"))
    shutil.copy(tmp_path / "nested.h5", tmp_path / "nested.bin")
    for name in ("nested.h5", "nested.bin"):
        r = scan_model(tmp_path / name)
        assert r.format == "h5" and [(f.kind, f.name) for f in r.findings] == [("lambda-layer", "'hidden'")]

    class Doubler(tf_keras.layers.Layer):
        def call(self, t):
            return t * 2.0
    tf_keras.Model(i, Doubler(name="dbl")(i)).save(str(tmp_path / "custom.keras"))
    r = scan_model(tmp_path / "custom.keras")
    assert [f.kind for f in r.findings] == ["custom-object"] and "Doubler" in r.findings[0].name

    class PyOps(tf.Module):
        @tf.function(input_signature=[tf.TensorSpec([None, 4], tf.float32)])
        def __call__(self, x):
            return tf.py_function(lambda a: a * 2, [x], tf.float32) + tf.numpy_function(lambda a: a, [x], tf.float32)
    tf.saved_model.save(PyOps(), str(tmp_path / "pyops"))
    r = scan_model(tmp_path / "pyops")
    assert {(f.kind, f.name) for f in r.findings} == {("python-callback-op", "EagerPyFunc"),
                                                      ("python-callback-op", "PyFunc")}
    with pytest.raises(UntrustedModelError, match="EagerPyFunc op in saved_model.pb"):
        check_model(tmp_path / "pyops")
    assert check_model(tmp_path / "pyops", trust_model=True).findings  # trusted: reported, not raised
    (tmp_path / "notes.txt").write_text("not a model")
    with pytest.raises(ModelError, match="cannot load as a Keras model: neither a .keras archive"):
        scan_model(tmp_path / "notes.txt")


def test_reference_networks_and_standard_layers_scan_clean(tmp_path):
    """edgekit's networks, their QAT wrapping (tfmot classes), and a user model of standard
    layers in all three formats; the SavedModel's checkpoint ops (SaveV2, RestoreV2, ...) pass."""
    import tf_keras
    from tensorflow.core.protobuf import saved_model_pb2

    from edgekit.core.networks import NETWORKS, build_model
    from edgekit.convert.quantize import make_qat_model
    from edgekit.security.scan import scan_model

    paths = []
    for name in NETWORKS:
        model = build_model(name)
        model.save(str(tmp_path / f"{name}.keras"))
        paths.append(tmp_path / f"{name}.keras")
    make_qat_model(build_model("cnn")).save(str(tmp_path / "cnn_qat.h5"))
    paths.append(tmp_path / "cnn_qat.h5")
    compiled = build_model("cnn")   # a SavedModel's metadata then carries the optimizer ("Custom>Adam")
    compiled.compile(optimizer="adam", loss="sparse_categorical_crossentropy", metrics=["accuracy"])
    compiled.save(str(tmp_path / "cnn_savedmodel"))
    paths.append(tmp_path / "cnn_savedmodel")
    k = tf_keras.layers
    i = tf_keras.Input((16, 16, 3))
    x = k.Conv2D(8, 3, padding="same", kernel_regularizer="l2")(i)
    x = k.BatchNormalization()(x)
    x = k.ReLU(6.0)(x)
    x = k.DepthwiseConv2D(3, padding="same")(x)
    x = k.SeparableConv2D(8, 3, activation="relu")(x)
    x = k.Add()([x, k.Conv2D(8, 3)(k.ZeroPadding2D(0)(i))])
    x = k.GlobalAveragePooling2D()(k.Dropout(0.1)(x))
    user = tf_keras.Model(i, k.Dense(5)(x))
    for suffix in (".keras", ".h5", ""):
        user.save(str(tmp_path / f"user{suffix or '_savedmodel'}"))
        paths.append(tmp_path / f"user{suffix or '_savedmodel'}")
    for p in paths:
        r = scan_model(p)
        assert r.clean, (p.name, r.findings)
    sm = saved_model_pb2.SavedModel.FromString((tmp_path / "user_savedmodel/saved_model.pb").read_bytes())
    ops = {n.op for g in sm.meta_graphs for f in g.graph_def.library.function for n in f.node_def}
    ops |= {n.op for g in sm.meta_graphs for n in g.graph_def.node}
    assert {"SaveV2", "RestoreV2", "MergeV2Checkpoints", "ShardedFilename"} <= ops  # present, and passed


def test_scrubbed_environment_keeps_what_tensorflow_needs():
    from edgekit.export.contained import scrubbed_environ

    env = {"PATH": "/bin", "HOME": "/home/u", "LANG": "C.UTF-8", "LC_ALL": "C", "PYTHONPATH": "/src",
           "TF_CPP_MIN_LOG_LEVEL": "2", "OMP_NUM_THREADS": "2", "EDGEKIT_PROFILES": "/p",
           "TF_USE_LEGACY_KERAS": "1", "TF_ENABLE_ONEDNN_OPTS": "0", "TF_NUM_INTRAOP_THREADS": "2",
           "TF_VAR_db_url": "x", "TF_STATE_BLOB": "x", "TF_CLI_ARGS": "x",
           TOKEN_VAR: "x", "GITHUB_TOKEN": "x", "GITHUB_REPOSITORY": "a/b", "AWS_ACCESS_KEY_ID": "x",
           "AWS_REGION": "eu", "CI_JOB_TOKEN": "x", "NPM_TOKEN": "x", "DB_PASSWORD": "x",
           "MY_API_KEY": "x", "OPENAI_API_KEY": "x", "ACTIONS_RUNTIME_TOKEN": "x", "SSH_AUTH_SOCK": "/s",
           "TF_SECRET_THING": "x", "HF_TOKEN": "x", "RANDOM_VAR": "x"}
    # HOME is not passed on: export_contained points it at the private working directory
    assert scrubbed_environ(env) == {"PATH": "/bin", "LANG": "C.UTF-8", "LC_ALL": "C",
                                     "PYTHONPATH": "/src", "TF_CPP_MIN_LOG_LEVEL": "2", "OMP_NUM_THREADS": "2",
                                     "EDGEKIT_PROFILES": "/p", "TF_USE_LEGACY_KERAS": "1",
                                     "TF_ENABLE_ONEDNN_OPTS": "0", "TF_NUM_INTRAOP_THREADS": "2"}


def test_replaced_train_model_is_refused_before_loading(tmp_path, payloads, capsys):
    """A run directory's model.keras swapped for another file (here the payload model) is
    refused on its hash before anything loads it."""
    from edgekit.core.config import TrainConfig
    from edgekit.train.stage import train

    run = tmp_path / "run"
    train(run, TrainConfig(dataset="synthetic", epochs=1, batch_size=64, limit=256), models=("mlp",))
    path, marker, _ = payloads["keras"]
    shutil.copy(path, run / "train/mlp/model.keras")
    rc = cli.main(["--quiet", "export", "--run", str(run), "--profile", "default"])
    err = capsys.readouterr().err.strip().splitlines()
    assert rc == 2 and len(err) == 1, err
    assert "model.keras is not the file `edgekit train` wrote" in err[0]
    assert f"edgekit train --model mlp --force --out {run}" in err[0]
    assert not marker.exists()
    assert "export" not in json.loads((run / "manifest.json").read_text())["stages"]


def test_contained_manifest_without_export_record_is_one_line(tmp_path):
    """What the worker left in the output folder is read back as data: a manifest without
    stages.export (the trusted code rewrote it, or the worker died after reporting) is one line."""
    from edgekit.core import rundir
    from edgekit.export.contained import _export_section
    from edgekit.errors import ExportError

    rundir.atomic_write_json(tmp_path / "manifest.json", rundir.empty_manifest())
    with pytest.raises(ExportError, match="has no export record; run the export again") as e:
        _export_section(tmp_path, tmp_path / "user.keras")
    assert "\n" not in str(e.value)


# ---------------------------------------------------------------------------------------------
# Review findings: op layers, built-in functions, SavedModel metadata and ops, safe mode

def _edit_keras_config(path: Path, edit) -> None:
    """Rewrite the model config of a .keras or .h5 file in place (as an attacker would)."""
    import zipfile

    import h5py

    if path.suffix == ".keras":
        with zipfile.ZipFile(path) as z:
            members = {n: z.read(n) for n in z.namelist()}
        config = json.loads(members["config.json"])
        edit(config)
        members["config.json"] = json.dumps(config).encode()
        with zipfile.ZipFile(path, "w") as z:
            for n, data in members.items():
                z.writestr(n, data)
    else:
        with h5py.File(path, "r+") as f:
            config = json.loads(f.attrs["model_config"])
            edit(config)
            f.attrs["model_config"] = json.dumps(config)


def _op_layer_model():
    """A functional model using TF functions on Keras tensors (tf_keras records each as an op
    layer naming the `tf.*` symbol): math, reshape, slicing, concat, nn."""
    import tensorflow as tf
    import tf_keras

    i = tf_keras.Input((4,))
    x = tf.reshape(tf.math.multiply(i, 2.0), (-1, 2, 2))
    x = tf.concat([x[:, 0], tf.nn.relu(x[:, 1])], axis=-1)
    return tf_keras.Model(i, tf_keras.layers.Dense(2)(tf.reduce_mean(x, axis=-1, keepdims=True) + x))


@pytest.mark.parametrize("suffix", [".keras", ".h5"])
def test_op_layer_calling_tf_print_to_a_file_is_refused(suffix, fp32_profile, tmp_path, capsys):
    """TFOpLambda is a tf_keras class, but its config names any tf.* symbol the loader resolves:
    tf.print(x, output_stream="file://...") writes files. Pure math/array op layers pass."""
    from edgekit.security.scan import scan_model

    clean = tmp_path / f"ops{suffix}"
    _op_layer_model().save(str(clean))
    report = scan_model(clean)
    assert report.clean, report.findings
    functions = set()
    _edit_keras_config(clean, lambda c: functions.update(l["config"].get("function") for l in c["config"]["layers"]))
    assert {"math.multiply", "reshape", "__operators__.getitem", "concat", "nn.relu"} <= functions

    marker = tmp_path / "printed.txt"

    def to_print(config):
        for layer in config["config"]["layers"]:
            if layer["config"].get("function") == "math.multiply":
                layer["config"]["function"] = "print"
                layer["inbound_nodes"][0][3] = {"output_stream": f"file://{marker}"}
    attack = tmp_path / f"attack{suffix}"
    shutil.copy(clean, attack)
    _edit_keras_config(attack, to_print)
    out = tmp_path / "out"
    rc = cli.main(["export", "--model", str(attack), "--out", str(out), "--profile", str(fp32_profile)])
    err = capsys.readouterr().err.strip().splitlines()
    assert rc == 2 and len(err) == 1, err
    assert "refused to load" in err[0]
    assert re.search(r"tf\.print in layer 'tf\.math\.multiply(_\d+)?' \(TFOpLambda\)", err[0]), err[0]
    assert "not a pure math/array op" in err[0]
    assert not marker.exists() and not out.exists()


def test_builtin_functions_pass_only_when_tf_keras_resolves_them(tmp_path):
    """{"module": "builtins", "config": NAME} resolves through keras.activations/losses/... first,
    then falls through to Python's builtins module (exit, eval, open)."""
    import tf_keras

    from edgekit.security.scan import scan_model

    i = tf_keras.Input((4,))
    path = tmp_path / "fn.keras"
    tf_keras.Model(i, tf_keras.layers.Dense(2, name="head")(i)).save(str(path))

    def activation(name):
        def edit(config):
            for layer in config["config"]["layers"]:
                if layer["class_name"] == "Dense":
                    layer["config"]["activation"] = {"module": "builtins", "class_name": "function",
                                                     "config": name, "registered_name": "function"}
        return edit
    _edit_keras_config(path, activation("relu"))   # keras.activations.relu: what tf_keras resolves
    assert scan_model(path).clean
    _edit_keras_config(path, activation("exit"))
    r = scan_model(path)
    assert [(f.kind, f.name) for f in r.findings] == [("builtin-function", "built-in function 'exit' in layer 'head'")]

    # a `.keras` type spec is imported from the module it names: only TensorFlow's own pass
    def typespec(module):
        def edit(config):
            config["config"]["layers"][0]["config"]["spec"] = {
                "class_name": "__typespec__", "spec_name": "TensorSpec", "module": module,
                "registered_name": None, "config": [[None, 4], "float32", None]}
        return edit
    _edit_keras_config(path, typespec("tensorflow.python.framework.tensor_spec"))
    assert [f.kind for f in scan_model(path).findings] == ["builtin-function"]
    _edit_keras_config(path, typespec("evil_plugin"))
    assert "from module 'evil_plugin'" in scan_model(path).findings[0].name


def _saved_model_with_nested_lambda(path: Path) -> None:
    import tf_keras

    inner = tf_keras.Sequential([tf_keras.layers.Lambda(lambda t: t + 1.0, input_shape=(4,), name="hidden"),
                                 tf_keras.layers.Dense(2)], name="inner")
    i = tf_keras.Input((4,))
    tf_keras.Model(i, inner(i)).save(str(path))


def test_savedmodel_nested_lambda_is_found_with_and_without_keras_metadata(tmp_path):
    """tf_keras revives layers from keras_metadata.pb, or (SavedModels before TF 2.5) from the
    object graph's user_object.metadata: both are walked like a .keras config."""
    from tensorflow.core.protobuf import saved_model_pb2
    from tf_keras.protobuf import saved_metadata_pb2

    from edgekit.security.scan import check_model, scan_model

    sm_dir = tmp_path / "nested_sm"
    _saved_model_with_nested_lambda(sm_dir)
    r = scan_model(sm_dir)
    found = {(f.kind, f.name, f.where) for f in r.findings}
    assert ("lambda-layer", "'hidden'", str(sm_dir / "keras_metadata.pb")) in found, found
    with pytest.raises(UntrustedModelError, match="Lambda layer 'hidden'"):
        check_model(sm_dir)

    # the pre-2.5 layout: the same JSON in saved_model.pb's object graph, no keras_metadata.pb
    meta = saved_metadata_pb2.SavedMetadata.FromString((sm_dir / "keras_metadata.pb").read_bytes())
    sm = saved_model_pb2.SavedModel.FromString((sm_dir / "saved_model.pb").read_bytes())
    for node in meta.nodes:
        sm.meta_graphs[0].object_graph_def.nodes[node.node_id].user_object.metadata = node.metadata
    (sm_dir / "saved_model.pb").write_bytes(sm.SerializeToString())
    (sm_dir / "keras_metadata.pb").unlink()
    r = scan_model(sm_dir)
    found = {(f.kind, f.name, f.where) for f in r.findings}
    assert ("lambda-layer", "'hidden'", str(sm_dir / "saved_model.pb")) in found, found
    with pytest.raises(UntrustedModelError, match="Lambda layer 'hidden'"):
        check_model(sm_dir)


def test_savedmodel_file_touching_ops_are_found(tmp_path):
    """tf.print to a file, file globbing, summary writers and a checkpoint op outside the
    SavedModel's own save/restore functions; none of them run (the marker never appears)."""
    import tensorflow as tf

    from edgekit.security.scan import scan_model

    marker, logdir = tmp_path / "printed.txt", tmp_path / "logs"

    class Ops(tf.Module):
        @tf.function(input_signature=[tf.TensorSpec([None, 4], tf.float32)])
        def __call__(self, x):
            tf.print(x, output_stream=f"file://{marker}")
            files = tf.io.matching_files(str(tmp_path / "*"))
            writer = tf.raw_ops.SummaryWriter()
            tf.raw_ops.CreateSummaryFileWriter(writer=writer, logdir=str(logdir), max_queue=1, flush_millis=1,
                                               filename_suffix=".v2")
            tf.raw_ops.WriteScalarSummary(writer=writer, step=0, tag="sum", value=tf.reduce_sum(x))
            tf.raw_ops.SaveV2(prefix=str(tmp_path / "stolen"), tensor_names=["x"], shape_and_slices=[""],
                              tensors=[x])
            return x + tf.cast(tf.size(files), tf.float32)
    tf.saved_model.save(Ops(), str(tmp_path / "ops_sm"))
    for m in (marker, logdir, tmp_path / "stolen.index"):   # tracing runs nothing; saving neither
        assert not m.exists()
    found = {(f.kind, f.name) for f in scan_model(tmp_path / "ops_sm").findings}
    assert {("file-op", "PrintV2"), ("file-op", "MatchingFiles"), ("file-op", "CreateSummaryFileWriter"),
            ("file-op", "WriteScalarSummary"),
            ("file-op", "SummaryWriter"), ("checkpoint-op", "SaveV2")} <= found, found
    # the SavedModel's own checkpoint functions (MergeV2Checkpoints, RestoreV2) are not listed
    assert not {("checkpoint-op", "MergeV2Checkpoints"), ("checkpoint-op", "RestoreV2")} & found


def test_clean_scan_keeps_tf_keras_safe_mode_on(payloads, fp32_profile, tmp_path, monkeypatch):
    """A clean scan is not the user's trust: if a scan ever misses a Lambda, tf_keras' safe mode
    still refuses it. Here the scanner is made to miss it (as a scanner bug would)."""
    from edgekit.security import scan
    from edgekit.core.config import load_profile
    from edgekit.export.stage import export_model
    from edgekit.runtimes.keras_tf import load_keras_model

    path, marker, _ = payloads["keras"]
    with pytest.raises(ModelError, match="Lambda"):
        load_keras_model(path, scanned=True)
    missed = scan.check_model(path, trust_model=True)
    monkeypatch.setattr(scan, "check_model", lambda p, trust_model=False: dataclasses.replace(missed, findings=()))
    with pytest.raises(ModelError, match="Lambda"):
        export_model(path, tmp_path / "out", load_profile(str(fp32_profile)))
    assert not marker.exists()
