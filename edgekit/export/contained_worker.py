"""The contained export's subprocess: `python -m edgekit.export.contained_worker JOB.json`.

edgekit.export.contained starts it (scrubbed environment, private working directory) and reads the
result.json it writes. It lives apart from edgekit.export.contained because it runs export_model, and
export_model dispatches to edgekit.export.contained: one module doing both would import itself in a circle.
"""
from __future__ import annotations

import json
import sys
from pathlib import Path

from edgekit.export import contained

from edgekit import errors

from edgekit.core import rundir
from edgekit.core.config import profile_from_dict
from edgekit.core.progress import Progress


def main(argv: list[str] | None = None) -> int:
    """Run export_model(trust_model=True) for the job file; the outcome goes to result.json beside it."""
    from edgekit.export.stage import export_model

    args = sys.argv[1:] if argv is None else argv
    if len(args) != 1:
        print("usage: python -m edgekit.export.contained_worker JOB.json", file=sys.stderr)
        return 2
    contained._in_worker = True   # export_model then runs here instead of spawning another worker
    job_path = Path(args[0])
    job = json.loads(job_path.read_text())
    result_path = job_path.parent / contained.RESULT
    try:
        export_model(job["model"], job["out"], profile_from_dict(job["profile"]), calibration=job["calibration"],
                     labels=job.get("labels"),
                     force=job["force"], progress=Progress(quiet=job["quiet"]), trust_model=True)
    except errors.EdgekitError as e:
        rundir.atomic_write_json(result_path, {"error": {"type": type(e).__name__, "message": str(e)}})
        return 1
    except Exception as e:  # a library failure: one line to the parent, which raises it as ExportError
        message = f"{type(e).__name__}: {(str(e).strip().splitlines() or [''])[0][:300]}"
        rundir.atomic_write_json(result_path, {"error": {"type": "ExportError", "message": message}})
        return 1
    rundir.atomic_write_json(result_path, {"ok": True})
    return 0


if __name__ == "__main__":
    sys.exit(main())
