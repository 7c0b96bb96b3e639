"""Domain errors. The message is the one line a user sees: what is wrong and how to fix it.

Each class says whose problem it is with its `exit_code` (the CLI returns it), so CI can tell
"the user's input is wrong" (2) from "edgekit or a library failed" (3). The constants below are the
`edgekit` command's exit codes, the same for every subcommand (edgekit/cli.py shows the table).
"""

EXIT_OK = 0           # green: everything asked for was done and every verdict passed
EXIT_RED = 1          # a verdict is red: the gate failed, a variant failed
EXIT_USAGE = 2        # the user's command or input is wrong: fix it and run again
EXIT_FAILED = 3       # edgekit or a library failed: report it (--debug shows the chain)
EXIT_INTERRUPTED = 130  # Ctrl-C (128 + SIGINT, as shells report it); finished work is kept


class EdgekitError(Exception):
    """Base of every error edgekit raises on purpose; the CLI prints it as one line.
    Subclasses say whose problem it is; one raised as the base is edgekit's own (exit 3)."""
    exit_code = EXIT_FAILED


class DataError(EdgekitError):
    """A data set file is missing, truncated, corrupt or of the wrong shape/dtype."""
    exit_code = EXIT_USAGE


class ConfigError(EdgekitError):
    """A profile, option or run-directory setting is invalid."""
    exit_code = EXIT_USAGE


class ModelError(EdgekitError):
    """A model file cannot be loaded, or has a layer a stage cannot handle."""
    exit_code = EXIT_USAGE


class ExportError(EdgekitError):
    """A conversion failed or produced a file that does not meet its claims (a library or
    edgekit failed on input that loaded fine)."""
    exit_code = EXIT_FAILED


class RunDirError(EdgekitError):
    """The run directory is missing a stage's inputs or holds finished work not to overwrite."""
    exit_code = EXIT_USAGE


class UntrustedModelError(ModelError):
    """A model edgekit refuses to load: the scan found code in it (and the user did not pass
    --trust-model), or an edgekit file changed since the stage that wrote it recorded its hash.
    Exit code 2: the user's input is what is wrong."""
    exit_code = EXIT_USAGE


def one_line(e: BaseException, limit: int = 300, where: bool = False) -> str:
    """An error as one line for a record or a message: its first line, cut at `limit`, prefixed
    with its type when it is not edgekit's own (a library's message alone rarely says whose it is);
    `where=True` adds the file and line it was raised at (worker crashes, where no traceback is kept)."""
    lines = str(e).strip().splitlines()
    msg = lines[0][:limit] if lines else ""
    if isinstance(e, EdgekitError):
        return msg
    at = ""
    if where and e.__traceback__ is not None:
        import traceback
        from pathlib import Path

        tb = traceback.extract_tb(e.__traceback__)
        at = f" (at {Path(tb[-1].filename).name}:{tb[-1].lineno})" if tb else ""
    return f"{type(e).__name__}: {msg}{at}" if msg else f"{type(e).__name__}{at}"
