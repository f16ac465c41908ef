"""Error types. Each message says the value, the rule and the fix.

Exit codes (cli.py): SpecError and InputError -> 2, every other failure -> 1.
"""

from __future__ import annotations


class VaelmError(Exception):
    """Base class of errors that vaelm reports to the user without a traceback."""

    exit_code = 1


class SpecError(VaelmError):
    """The job spec is wrong: an unknown key, a wrong type, an impossible value."""

    exit_code = 2


class InputError(VaelmError):
    """The input data cannot be used: a missing column, a corrupt file, no files at all."""

    exit_code = 2


class StorageError(VaelmError):
    """A storage location cannot be reached or used: unreachable endpoint, denied access, disk full."""

    exit_code = 1


class OutputExistsError(VaelmError):
    """The output location holds results of a different job or spec; pass --overwrite to replace them."""

    exit_code = 2
