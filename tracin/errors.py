"""One exception family for mistakes a user can make and fix.

The command-line front ends turn a `TracinError` into one line on stderr and exit code 2; anything else
is a bug and keeps its traceback.
"""

from typing import Sequence


class TracinError(Exception):
    """A user mistake: bad input, missing data, a file that does not fit. The message says how to fix it."""


class DataError(TracinError):
    """A data set is missing, unknown, or does not match what a run recorded."""


class CheckpointError(TracinError):
    """A checkpoint is missing, corrupt, or does not fit the model or the run."""


class ConfigMismatchError(TracinError):
    """A resumed run or a partial result was made with a different configuration. `root` (the run's folder)
    and `differences` ('field (stored -> current)') let a caller give its own way out (tracin-sweep has no
    --overwrite)."""

    def __init__(self, message: str, root: object, differences: Sequence[str]) -> None:
        super().__init__(message)
        self.root, self.differences = root, tuple(differences)


class SelectionError(TracinError):
    """--layers or --group names no trainable parameter of a model (a caller that knows the model's name
    says it: round 29, SM3)."""


class StoreError(TracinError):
    """An HDF5 result file is missing, corrupt, finished already, or does not match the command."""


class OverwriteNeeded(StoreError):
    """A result file that only --overwrite may replace or repair (other settings, finished, edited, damaged
    beyond salvage). `problem` is the message without its advice, for a caller with its own way out
    (tracin-sweep has no --overwrite: round 20, SW6)."""

    def __init__(self, problem: str, advice: str) -> None:
        super().__init__(f"{problem}; {advice}")
        self.problem = problem


class NonFiniteError(TracinError):
    """A loss or gradient became NaN or infinite."""
