"""Domain errors. The message is the one line a user sees: what is wrong and how to fix it."""


class EdgekitError(Exception):
    """Base of every error edgekit raises on purpose; the CLI prints it as one line, exit 1."""


class DataError(EdgekitError):
    """A data set file is missing, truncated, corrupt or of the wrong shape/dtype."""


class ConfigError(EdgekitError):
    """A profile, option or run-directory setting is invalid."""


class ModelError(EdgekitError):
    """A model file cannot be loaded, or has a layer a stage cannot handle."""


class ExportError(EdgekitError):
    """A conversion failed or produced a file that does not meet its claims."""


class RunDirError(EdgekitError):
    """The run directory is missing a stage's inputs or holds finished work not to overwrite."""


class UntrustedModelError(ModelError):
    """A model edgekit refuses to load: the scan found code in it (and the user did not pass
    --trust-model), or an edgekit file changed since the stage that wrote it recorded its hash.
    Exit code 2: the user's input is what is wrong."""
    exit_code = 2
