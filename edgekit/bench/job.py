"""The hand-off between `edgekit bench` and its worker subprocesses: one `BenchJob` per worker,
planned by edgekit.bench.plan, written as JSON by edgekit.bench and read back by
edgekit.bench.worker. Both sides share these types, so a field the planner sets is a field the
worker reads (a misspelt key fails at construction, not mid-bench in a subprocess).

Cheap to import on purpose: the LiteRT and ONNX Runtime workers import this and must not pull
in TensorFlow (their peak memory would count it).
"""
from __future__ import annotations

import dataclasses
import json
from dataclasses import dataclass
from typing import Mapping

from edgekit.core.timing import TimingSettings


@dataclass(frozen=True)
class BenchUnit:
    """One file a worker measures. `id` is the file's index among the usable files: every event
    the worker emits names its file by it (edgekit.bench.assemble matches them back)."""
    id: int
    model: str
    variant: str
    path: str        # the file on disk
    data: str        # key of its test images in BenchJob.data


@dataclass(frozen=True)
class BenchJob:
    """What one worker does: open every unit on `runtime` with every option set; time each
    (threads, batch) when `timing` is set; predict the test images once per option set."""
    runtime: str
    units: tuple[BenchUnit, ...]
    data: Mapping[str, str]                  # test-set key -> .npy file of its images
    option_sets: tuple[dict, ...]            # runtime options, the runtime's default first
    threads: tuple[int, ...]                 # thread counts timed (none when timing is None)
    batches: tuple[int, ...]                 # batch sizes timed
    timing: TimingSettings | None            # None: predictions only
    predict: bool                            # this worker makes the accuracy run
    predict_threads: int                     # ... on the session timed with these threads
    predict_samples: tuple[int | None, ...]  # per option set: first n images, None = all
    predict_batch: int                       # batch of the accuracy run
    reference_only: bool = False             # a Keras worker that only supplies the float predictions
    describe: bool = False                   # only open each unit and say what input it takes ("io" events)
    outputs_dir: str | None = None           # save each accuracy run's outputs here (max_abs_diff vs a reference)

    def timed_settings(self) -> int:
        """How many (file, options, threads, batch) latencies this job measures (for progress)."""
        if self.timing is None:
            return 0
        return len(self.units) * len(self.option_sets) * len(self.threads) * len(self.batches)

    def to_json(self) -> str:
        return json.dumps(dataclasses.asdict(self))

    @classmethod
    def from_json(cls, text: str) -> BenchJob:
        d = json.loads(text)
        return cls(**dict(d, units=tuple(BenchUnit(**u) for u in d["units"]),
                          option_sets=tuple(d["option_sets"]), threads=tuple(d["threads"]),
                          batches=tuple(d["batches"]), predict_samples=tuple(d["predict_samples"]),
                          timing=TimingSettings(**d["timing"]) if d.get("timing") else None))
