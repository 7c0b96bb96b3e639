"""Export a model the user trusts despite its scan findings, in a subprocess of its own.

    python -m edgekit.export.contained_worker JOB.json   (started by export_contained)

`--trust-model` means "run this file's code"; this module limits what that code can reach, it
does not make it safe. The subprocess gets:
- an environment scrubbed of secrets: only variables a TensorFlow export needs are passed
  (PATH, locale, PYTHON*, TensorFlow's own TF_CPP_*/TF_NUM_*/... but not the whole TF_ prefix,
  which Terraform's TF_VAR_* secrets share, OMP_*, ...), and of those none whose name looks
  like a credential (TOKEN, SECRET, KEY, PASSWORD, ...), so CI tokens are not in its `os.environ`;
- a private temporary working directory (mode 0700), also its TMPDIR and its HOME, so
  ~/.git-credentials, ~/.aws, ~/.config, ~/.netrc are not at the paths code looks for them;
  removed afterwards.
It still runs as the same user, with the same files and network: a sandbox (container, VM,
seccomp) is the only real boundary, and the README says so.

The job names the model, the output folder, the profile (as a dict), the calibration file and
the flags. The worker (edgekit.export.contained_worker) runs `edgekit.export.export_model` with
trust_model=True and writes its outcome to result.json ({"ok": true} or {"error": {"type",
"message"}}). Its progress lines come back through a pipe (EDGEKIT_PROGRESS_FD, read by
edgekit.core.library_log) and the parent relays them to the terminal; its library output goes to
the descriptors 1 and 2 it inherits, which inside stage_log are the export's log. The manifest
is written by the worker into the output folder, exactly as an export in this process would
write it.
"""
from __future__ import annotations

import json
import os
import re
import shutil
import subprocess
import sys
import tempfile
from pathlib import Path

from edgekit import errors
from edgekit.core import library_log
from edgekit.core.config import Profile, profile_to_dict
from edgekit.core.progress import Progress

KEEP_NAMES = frozenset({"PATH", "USER", "LOGNAME", "SHELL", "LANG", "LANGUAGE", "TZ", "TERM",
                        "NO_COLOR", "COLUMNS", "PYTHONPATH", "PYTHONHASHSEED", "PYTHONUNBUFFERED",
                        "PYTHONWARNINGS", "PYTHONDONTWRITEBYTECODE", "VIRTUAL_ENV", "LD_LIBRARY_PATH",
                        # TensorFlow's own switches, by name: TF_ alone is also Terraform's (TF_VAR_*)
                        "TF_USE_LEGACY_KERAS", "TF_ENABLE_ONEDNN_OPTS", "TF_DETERMINISTIC_OPS",
                        "TF_FORCE_GPU_ALLOW_GROWTH", "TF_GPU_ALLOCATOR", "TF_XLA_FLAGS",
                        "TF_ENABLE_XLA", "TF_INTRA_OP_PARALLELISM_THREADS", "TF_INTER_OP_PARALLELISM_THREADS"})
KEEP_PREFIXES = ("LC_", "TF_CPP_", "TF_NUM_", "OMP_", "KMP_", "MKL_", "OPENBLAS_", "XLA_", "CUDA_", "NVIDIA_",
                 "EDGEKIT_")
# Dropped even when kept above (EDGEKIT_API_TOKEN, TF_..._KEY): names that look like credentials.
SECRET_NAME = re.compile(r"TOKEN|SECRET|KEY|PASSW|PASSPHRASE|CREDENTIAL|AUTH|COOKIE|SESSION|PRIVATE|"
                         r"CERT|SIGNING|^AWS_|^AZURE_|^GCP_|^GOOGLE_|^GITHUB_|^GH_|^ACTIONS_|^CI_|^GITLAB_|"
                         r"^BUILDKITE|^CIRCLE|^TRAVIS|^JENKINS|^NPM_|^TWINE_|^PYPI|^DOCKER_|^HF_|^HUGGING",
                         re.IGNORECASE)
RESULT = "result.json"

_in_worker = False   # set by edgekit.export.contained_worker: export_model then runs in-process


def in_worker() -> bool:
    """True in the contained subprocess itself (so export_model does not spawn another one)."""
    return _in_worker


def scrubbed_environ(environ: dict[str, str] | None = None) -> dict[str, str]:
    """The variables a contained export may see: an allow-list, minus anything secret-looking."""
    environ = dict(os.environ if environ is None else environ)
    return {k: v for k, v in environ.items()
            if (k in KEEP_NAMES or k.startswith(KEEP_PREFIXES)) and not SECRET_NAME.search(k)}


def export_contained(model_path: Path, out_dir: Path, profile: Profile, calibration=None,
                     force: bool = False, progress: Progress | None = None, labels=None) -> dict:
    """Run export_model(trust_model=True) in a scrubbed subprocess; returns the export section
    of the manifest it wrote, or raises the error it raised (same type, same one line)."""
    from edgekit.core import rundir
    progress = progress or Progress()
    work = Path(tempfile.mkdtemp(prefix="edgekit-contained-"))   # 0700: this user only
    try:
        (work / "tmp").mkdir()
        job = {"model": str(Path(model_path).resolve()), "out": str(Path(out_dir).resolve()),
               "profile": profile_to_dict(profile), "force": force, "quiet": progress.quiet,
               "calibration": None if calibration is None else str(Path(calibration).resolve()),
               "labels": None if labels is None else str(Path(labels).resolve())}
        rundir.atomic_write_json(work / "job.json", job)
        env = scrubbed_environ()
        package_root = str(Path(__file__).resolve().parents[2])   # importable from any cwd
        env["PYTHONPATH"] = os.pathsep.join(p for p in (package_root, env.get("PYTHONPATH")) if p)
        env["TMPDIR"] = str(work / "tmp")
        env["HOME"] = str(work)   # not the user's: no ~/.git-credentials, ~/.aws, ~/.config there
        progress.update(f"{Path(model_path).name}: trusted by the user; loading and converting it in a "
                        f"subprocess (scrubbed environment, private working directory)")
        rc = _run([sys.executable, "-m", "edgekit.export.contained_worker", str(work / "job.json")], work, env,
                  progress.stream if not progress.quiet else sys.stderr)
        result = _read_result(work / RESULT)
    finally:
        shutil.rmtree(work, ignore_errors=True)
    if result.get("ok") and rc == 0:
        return _export_section(out_dir, model_path)
    error = result.get("error")
    if not error:
        log = library_log.active_log()
        raise errors.ExportError(f"{model_path}: the contained export stopped with exit code {rc} before "
                                 f"finishing (its own output is {f'in {log}' if log else 'above'})")
    cls = getattr(errors, str(error.get("type")), None)
    if not (isinstance(cls, type) and issubclass(cls, errors.EdgekitError)):
        cls = errors.ExportError
    raise cls(error.get("message", "the contained export failed"))


def _run(cmd: list[str], cwd: Path, env: dict, stream) -> int:
    """Start the worker, relay its progress lines as they come, and never leave it running. Its
    fds 1/2 are ours: library output lands where ours does (the stage's log inside stage_log)."""
    read_fd, write_fd = os.pipe()
    try:
        proc = subprocess.Popen(cmd, cwd=cwd, env={**env, library_log.PROGRESS_FD_ENV: str(write_fd)},
                                stdin=subprocess.DEVNULL, pass_fds=(write_fd,))
    except BaseException:
        os.close(read_fd)
        raise
    finally:
        os.close(write_fd)   # the worker holds the only write end: EOF when it exits
    try:
        with open(read_fd, encoding="utf-8", errors="replace") as lines:
            for line in lines:
                stream.write(line)
                stream.flush()
                library_log.mark(line)
        return proc.wait()
    finally:
        if proc.poll() is None:   # interrupted: stop the worker before the working dir goes
            proc.terminate()
            try:
                proc.wait(timeout=10)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait()


def _export_section(out_dir: Path, model_path: Path) -> dict:
    """The export record the worker wrote; one line, not a KeyError, when it is not there."""
    from edgekit.core import rundir
    section = rundir.section(rundir.load_manifest(out_dir), "export")
    if not section:
        manifest = Path(out_dir) / "manifest.json"
        raise errors.ExportError(f"{model_path}: the contained export reported success but {manifest} has no "
                                 f"export record; run the export again into a new --out directory")
    return section


def _read_result(path: Path) -> dict:
    try:
        result = json.loads(path.read_text())
    except (OSError, json.JSONDecodeError):
        return {}
    return result if isinstance(result, dict) else {}
