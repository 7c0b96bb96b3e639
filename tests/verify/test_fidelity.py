"""Kernel fidelity: a runtime's fast int8 path against its reference path, and the gate row it feeds."""
from __future__ import annotations

import numpy as np
import pytest

from edgekit.core.config import Thresholds
from edgekit.verify.fidelity import PAIRS, fidelity_record, kernel_fidelity
from edgekit.verify.parity import check_thresholds, compare, describe_failures
from edgekit.runtimes import open_file

N = 300  # parity inputs: enough for agreement steps of 1/300, small enough to stay quick


@pytest.fixture(scope="module")
def int8_files(tmp_path_factory):
    """tflite-int8-ptq and onnx-int8-ptq of a tiny conv net (random weights), and inputs."""
    import tf_keras as k

    from edgekit.convert.converters import ConversionInputs
    from edgekit.core.variants import VARIANTS

    d = tmp_path_factory.mktemp("fid")
    k.utils.set_random_seed(1)
    model = k.Sequential([k.layers.InputLayer(input_shape=(8, 8, 1)), k.layers.Conv2D(4, 3, activation="relu"),
                          k.layers.Flatten(), k.layers.Dense(6)])
    rng = np.random.default_rng(1)
    x = rng.random((N, 8, 8, 1), dtype=np.float32)
    inputs = ConversionInputs(float_model=model, qat_model=None, representative=x[:100])
    files = {}
    for name in ("tflite-int8-ptq", "onnx-int8-ptq"):
        files[name] = d / f"{name}{VARIANTS[name].suffix}"
        VARIANTS[name].make(inputs, files[name])
    return files, x


def test_fast_path_is_what_the_runtime_runs_by_default(int8_files):
    """Parity is measured on the fast path, so the fast path must be each runtime's default."""
    files, _ = int8_files
    assert open_file(files["onnx-int8-ptq"]).graph_optimization == PAIRS["onnxruntime"].fast["graph_optimization"]
    assert open_file(files["tflite-int8-ptq"]).xnnpack == PAIRS["litert"].fast["xnnpack"]


@pytest.mark.parametrize("name,runtime", [("onnx-int8-ptq", "onnxruntime"), ("tflite-int8-ptq", "litert")])
def test_record_is_an_independent_comparison_of_the_two_paths(int8_files, name, runtime):
    """Differential: the record equals compare() of the two paths opened here through the registry."""
    files, x = int8_files
    pair = PAIRS[runtime]
    rec = kernel_fidelity(files[name], x, threshold=0.999)
    fast = open_file(files[name], **pair.fast).predict(x)
    ref = open_file(files[name], **pair.reference).predict(x)
    again = compare(ref, fast)
    assert rec["runtime"] == runtime and rec["fast"] == pair.fast_label and rec["reference"] == pair.reference_label
    assert rec["samples"] == N
    assert rec["agreement"] == again.agreement and rec["max_abs_diff"] == pytest.approx(again.max_abs_diff)
    judged = rec["decisive_agreement"]  # what "avoid" is set from: agreement outside the near-tie band
    assert (rec["avoid"] is None) == (judged is None or judged >= 0.999)
    # given the fast outputs (as export does), the same record with one predict fewer
    assert kernel_fidelity(files[name], x, threshold=0.999, fast=fast) == rec


def test_disagreeing_kernels_fail_the_gate_and_name_what_to_avoid(int8_files):
    """Two real output arrays that differ: the int8 ONNX file's and the int8 TFLite file's outputs on
    inputs in reverse order. Sample i of one is compared with sample N-1-i of the other, so top-1
    agrees only where two unrelated inputs happen to share a class: far below 0.999 (which would allow
    no disagreement at all in 300 samples). The precondition is asserted, not assumed."""
    files, x = int8_files
    a = open_file(files["onnx-int8-ptq"]).predict(x)
    b = open_file(files["tflite-int8-ptq"]).predict(x[::-1])
    result = compare(a, b).to_dict()
    assert result["agreement"] < 0.999

    th = Thresholds(min_kernel_agreement=0.999)
    for runtime, encoding, must_say, must_not_say in [
            ("onnxruntime", "u8s8", ("ORT_ENABLE_ALL", "ORT_DISABLE_ALL", 'onnx_int8_encoding = "u8u8"'), ()),
            ("onnxruntime", "u8u8", ("ORT_ENABLE_ALL", "ORT_DISABLE_ALL"), ("re-export",)),
            ("litert", None, ("XNNPACK delegate", "builtin kernels"), ())]:
        rec = fidelity_record(PAIRS[runtime], result, th.min_kernel_agreement, encoding)
        assert rec["agreement"] == result["agreement"] and rec["avoid"]
        row, = check_thresholds(th, {}, None, None, kernel_fidelity=rec)
        assert row["name"] == "min_kernel_agreement" and row["passed"] is False
        assert row["value"] == result["agreement"] and row["avoid"] == rec["avoid"]
        text = describe_failures([row])
        assert text.startswith(f"min_kernel_agreement {result['agreement']:.6g} (limit >= 0.999): avoid ")
        assert all(s in text for s in must_say) and not any(s in text for s in must_not_say), text
        assert rec["cpu_class"] in text   # "on this CPU (x86-...)": the verdict says where it holds

    # identical outputs: passes, nothing to avoid
    same = fidelity_record(PAIRS["litert"], compare(a, a).to_dict(), 0.999)
    assert same["agreement"] == 1.0 and same["max_abs_diff"] == 0.0 and same["avoid"] is None
    row, = check_thresholds(th, {}, None, None, kernel_fidelity=same)
    assert row["passed"] is True and "avoid" not in row


def test_a_stricter_profile_judging_an_older_record_still_names_what_to_avoid():
    """A record made under a lower threshold has avoid=None; a gate with a higher one fills it in."""
    rec = fidelity_record(PAIRS["onnxruntime"], {"samples": 1000, "agreement": 0.998, "max_abs_diff": 0.5},
                          threshold=0.99, encoding="u8s8")
    assert rec["avoid"] is None
    row, = check_thresholds(Thresholds(min_kernel_agreement=0.999), {}, None, None, kernel_fidelity=rec)
    assert row["passed"] is False and "ORT_DISABLE_ALL" in row["avoid"] and "u8u8" in row["avoid"]


def test_no_fidelity_record_is_not_measured_rather_than_passed():
    row, = check_thresholds(Thresholds(min_kernel_agreement=0.999), {}, None, None)
    assert row["passed"] is None and "not measured" in row["note"]


def test_decisive_agreement_ignores_near_ties_but_not_larger_flips():
    from edgekit.verify.fidelity import TIE_BAND_STEPS, decisive_agreement

    step = 0.1
    # reference logits (two classes); gaps: 0 (exact tie), 0.2 (= 2 steps: still a near-tie),
    # 0.3 (3 steps: decisive), 1.0 (decisive)
    ref = np.array([[1.0, 1.0], [1.2, 1.0], [1.3, 1.0], [2.0, 1.0]])
    # fast path: one-step rounding moves on the two near-ties flip them; the decisive rows agree
    fast = np.array([[1.0, 1.1], [1.1, 1.1 + step], [1.3, 1.0], [2.0, 1.0]])
    r = decisive_agreement(ref, fast, step)
    assert TIE_BAND_STEPS == 2.0 and r["decisive_samples"] == 2 and r["decisive_agreement"] == 1.0
    assert abs(r["max_abs_diff_steps"] - 2.0) < 1e-9  # row 1: |1.1+0.1 - 1.0| = 0.2 = 2 steps
    # a saturation-like error: row 3 (gap 10 steps) flips -> half the decisive rows disagree
    fast[3] = [1.0, 2.0]
    assert decisive_agreement(ref, fast, step)["decisive_agreement"] == 0.5
    # unquantized outputs: no band, every image but the exact tie is judged
    r = decisive_agreement(ref, fast, None)
    assert r["decisive_samples"] == 3 and r["tie_band_steps"] == 0.0


def test_output_step_is_the_files_own_output_scale(int8_files):
    """One output step = the scale the file requantizes its logits with: the TFLite output
    tensor's scale, and the scale of the ONNX graph's last DequantizeLinear; both PTQ files are
    calibrated on the same images, so the two scales agree to float32 rounding."""
    from edgekit.verify.fidelity import output_step

    files, x = int8_files
    tfl = output_step(files["tflite-int8-ptq"])
    assert tfl == pytest.approx(float(open_file(files["tflite-int8-ptq"]).output_quant[0]))
    onx = output_step(files["onnx-int8-ptq"])
    assert onx is not None and onx > 0 and onx == pytest.approx(tfl, rel=0.05)
    rec = kernel_fidelity(files["tflite-int8-ptq"], x, 0.999)
    assert rec["output_step"] == tfl and rec["tie_band_steps"] == 2.0
    assert 0 < rec["decisive_samples"] <= rec["samples"] == N
