"""The records of `edgekit bench`: one per (file, runtime, options, threads, batch) asked for,
assembled from the workers' events, plus one per variant export failed or skipped, and the
settings record that says how every figure was measured.
"""
from __future__ import annotations

import dataclasses
import json

import numpy as np

from edgekit.core.metrics import top1_accuracy
from edgekit.core import rundir
from edgekit.bench.plan import PREDICT_BATCH, SECONDARY_SAMPLES, ModelFile, TestSet
from edgekit.core.timing import TimingSettings
from edgekit.core.results import STAT_FIELDS
from edgekit.runtimes import RUNTIMES, runtime_for
from edgekit.core.variants import Role, keras_variant

PEAK_RSS_NOTE = ("peak_rss_mb: VmHWM of the runtime's own worker process, reset (/proc/self/clear_refs, after "
                 "gc and malloc_trim) just before the session is opened and read after its timing at that "
                 "batch (batches run smallest first on one session, the accuracy run after them): the Python "
                 "interpreter, the runtime's libraries, the worker's uint8 test images and whatever earlier "
                 "sessions left resident, plus this session's model, arena and threads. baseline_rss_mb: the "
                 "worker's RSS before any model was opened; peak - baseline ~ what the model costs. Where "
                 "clear_refs cannot be written (not Linux), the peak is the worker's since it started.")


def _options_key(options: dict) -> str:
    return json.dumps(options, sort_keys=True)


def assemble_records(files: list[ModelFile], stale: dict[ModelFile, str], tests: dict[str, TestSet],
                     events: list[dict], runtimes: tuple[str, ...], option_sets: dict[str, list[dict]],
                     threads: tuple[int, ...], batches: tuple[int, ...],
                     refs: dict[str, str | None] | None = None) -> list[dict]:
    """One record per (file, runtime, options, threads, batch) asked for, measured or not.
    Worker events name files by their index among the usable (not stale) files, as plan_jobs does.
    Agreement is against the model's float Keras model; a model in `refs` (files `bench --model`
    measured) is compared with the variant named there instead, and its records also say what
    that reference is, the largest output difference from it and which inputs were used."""
    preds, timings, crashes, unavailable = {}, {}, {}, {}
    for ev in events:
        t = ev["type"]
        if t == "predictions":
            preds[(ev["runtime"], ev["id"], _options_key(ev["options"]))] = ev
        elif t == "timing":
            timings[(ev["runtime"], ev["id"], _options_key(ev["options"]), ev["threads"], ev["batch"])] = ev
        elif t == "crash":
            crashes[(ev["runtime"], ev["id"])] = ev["error"]
        elif t == "unavailable":
            unavailable[ev["runtime"]] = ev["error"]
    uid = {f: i for i, f in enumerate(f for f in files if f not in stale)}
    refs = refs or {}
    reference, ref_outputs = {}, {}  # model -> the reference's top-1 classes, its outputs file
    for f in uid:
        rt = runtime_for(f.path)
        ev = preds.get((rt.name, uid[f], _options_key(rt.option_grid()[0])))
        if f.variant == refs.get(f.model, keras_variant(Role.SOURCE).name) and ev and "classes" in ev:
            reference[f.model] = np.asarray(ev["classes"])
            ref_outputs[f.model] = ev.get("outputs")

    records = []
    for f in files:
        for name in runtimes:
            if not RUNTIMES[name].can_run(f.path):
                continue
            for options in option_sets[name]:
                okey = _options_key(options)
                for th in threads:
                    for batch in batches:
                        rec = _base_record(f, name, options, th, batch, tests[f.model])
                        if f in stale:
                            rec["error"] = stale[f]
                        elif name in unavailable:
                            rec["error"] = unavailable[name]
                        else:
                            i = uid[f]
                            _fill(rec, preds.get((name, i, okey)), timings.get((name, i, okey, th, batch)),
                                  crashes.get((name, i)), tests[f.model], reference.get(f.model))
                        rec["status"] = "ok" if rec["error"] is None else "failed"
                        if f.model in refs:
                            pred = preds.get((name, uid.get(f, -1), okey)) or {}
                            rec.update(reference=refs[f.model], inputs=tests[f.model].description,
                                       max_abs_diff=_max_abs_diff(pred.get("outputs"), ref_outputs.get(f.model)))
                        records.append(rec)
    return records


def _max_abs_diff(outputs: str | None, reference: str | None) -> float | None:
    """Largest absolute difference between a file's outputs and its reference's on the same
    inputs (the first n of them: a secondary option set predicts fewer); None without both."""
    if not outputs or not reference:
        return None
    a, b = np.load(outputs), np.load(reference)
    n = min(len(a), len(b))
    if a.shape[1:] != b.shape[1:] or n == 0:
        return None
    return float(np.max(np.abs(a[:n].astype(np.float64) - b[:n])))


def _base_record(f: ModelFile, runtime: str, options: dict, threads, batch, test: TestSet) -> dict:
    rec = {"model": f.model, "variant": f.variant, "format": f.format, "variant_class": f.variant_class,
           "runtime": runtime, "runtime_options": options, "threads": threads, "batch": batch,
           "file": f.rel_path, "size_bytes": f.size_bytes, "accuracy": None, "agreement": None,
           "samples": int(len(test.x))}
    rec.update({k: None for k in STAT_FIELDS})
    rec.update({"peak_rss_mb": None, "baseline_rss_mb": None, "status": "failed", "error": None,
                "stage": "bench", "sha256": f.sha256})
    return rec


def export_failure_records(manifest: dict) -> list[dict]:
    """One record per variant (and QAT model) that export failed or skipped, with its status and
    error, so that it stays in results.json/csv and the report. stage "export": the bench never
    ran it; threads, batch and the figures are null; runtime is the one that runs its format."""
    records = []
    for model, m in rundir.model_records(manifest, "export").items():
        qat = keras_variant(Role.QAT)
        entries = [(qat.name, dict(m["qat"], format=qat.format, variant_class=qat.variant_class))] if m.get("qat") else []
        for variant, v in [*entries, *(m.get("variants") or {}).items()]:
            status = v.get("status") or "failed"
            if status == "ok":
                continue
            file = v.get("file") or {}
            fmt = v["format"]  # export's records always name it (export_variant._blank_record)
            runtime = next((r.name for r in RUNTIMES.values() if f".{fmt}" in r.suffixes), None)
            rec = {"model": model, "variant": variant, "format": fmt,
                   "variant_class": v.get("variant_class") or "unknown", "runtime": runtime,
                   "runtime_options": {}, "threads": None, "batch": None, "file": file.get("path"),
                   "size_bytes": file.get("size_bytes"), "accuracy": None, "agreement": None, "samples": None}
            rec.update({k: None for k in STAT_FIELDS})
            rec.update({"peak_rss_mb": None, "baseline_rss_mb": None,
                        "status": status if status in ("failed", "skipped") else "failed",
                        "error": f"not benched: export {status}: {v.get('error') or 'no reason recorded'}",
                        "stage": "export", "sha256": file.get("sha256")})
            records.append(rec)
    return records


def _fill(rec: dict, pred: dict | None, timing: dict | None, crash: str | None, test: TestSet,
          reference: np.ndarray | None) -> None:
    errors = []
    if pred and "classes" in pred:
        classes = np.asarray(pred["classes"])
        n = rec["samples"] = int(len(classes))  # the first n test images
        if test.y is not None:
            rec["accuracy"] = top1_accuracy(classes, test.y[:n])
        if reference is not None and len(reference) >= n:
            rec["agreement"] = float(np.mean(classes == reference[:n]))
    elif pred:
        errors.append(f"accuracy run failed: {pred['error']}")
    if timing and "stats" in timing:
        rec.update(timing["stats"])
        rec["peak_rss_mb"] = timing.get("peak_rss_mb")
        rec["baseline_rss_mb"] = timing.get("baseline_rss_mb")
    elif timing:
        errors.append(timing["error"])
    if (timing is None or (pred is None)) and not errors:
        errors.append(crash or "not measured: the worker stopped before this setting")
    rec["error"] = "; ".join(errors) if errors else None


def settings_record(runtimes, threads, batches, quick: bool, timing: TimingSettings,
                     tests: dict[str, TestSet]) -> dict:
    return {"quick": quick, "runtimes": list(runtimes), "threads": list(threads), "batches": list(batches),
            **dataclasses.asdict(timing),
            "samples": {m: int(len(t.x)) for m, t in tests.items()},
            "data": {m: t.description for m, t in tests.items()},
            "accuracy_batch": PREDICT_BATCH,
            "secondary_option_samples": SECONDARY_SAMPLES,
            "accuracy_note": "accuracy and agreement on the whole test set for each runtime's default options "
                             f"(the first set); other option sets on the first {SECONDARY_SAMPLES} images "
                             "(see each record's samples)",
            "percentiles": "linear interpolation between closest ranks over all timed runs; "
                           "p50_repeats_ms: the p50 of each repeat block",
            "peak_rss": PEAK_RSS_NOTE}
