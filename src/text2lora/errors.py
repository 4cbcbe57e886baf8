"""Exceptions raised for problems a user can fix.

Every message says what was wrong and how to fix it. The CLI turns any
:class:`T2LError` into one line on stderr and exit code 2, with no traceback (``t2l -v`` shows it).
Anything else that escapes is a bug and keeps its traceback. Internal invariants use ``assert``.

:class:`ConfigError` is also a ``ValueError`` (config dataclasses validate in ``__post_init__``, and
callers that catch ``ValueError`` keep working); the other subclasses are not.
"""

from __future__ import annotations


class T2LError(Exception):
    """Base class of all user-facing errors of text2lora."""


class ConfigError(T2LError, ValueError):
    """A configuration value, flag or file field is invalid."""


class CheckpointError(T2LError):
    """A generator checkpoint is missing, corrupt or made for another base model."""


class AdapterError(T2LError):
    """An adapter is malformed or does not fit the base model."""


class ModelLoadError(T2LError):
    """A base model or encoder could not be loaded."""


class DataError(T2LError):
    """A task file or data source is malformed or missing."""


class PackageUnavailableError(DataError):
    """A pinned package could not be downloaded or installed (no network, or the index no longer serves it)."""


class OutputExistsError(T2LError):
    """An output path exists and overwriting it was not asked for."""


class T2LWarning(UserWarning):
    """Something the user should know that does not stop the work (a truncated or unreadable description,
    an ignored config key). The CLI prints it as one line ``t2l: warning: ...``."""
