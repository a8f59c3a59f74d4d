"""The exceptions a user can meet, each with a message that says what to do, in one place.

:class:`UserError` and its subclasses are mistakes a user can fix (a bad flag, a missing file,
a model folder that does not exist, no Prefect server for ``revsat serve``): the CLI prints
their message on one line, without a traceback, and exits 2, before any model or server
starts. Anything else that escapes a command is a bug: the CLI writes its traceback to a log
file and prints one line naming that file (exit 1).
"""

from __future__ import annotations


class UserError(Exception):
    """A mistake the user can fix; the message says what and how (CLI exit status 2)."""


class InputError(UserError):
    """A whole input file cannot be read; the message says which file and what to do."""


class SettingsError(UserError, ValueError):
    """A setting (flag, ``REVSAT_*`` variable or ``revsat.toml`` key) has an invalid value."""


class MemoryCapTooSmall(SettingsError):
    """A DuckDB query of the run needed more memory than ``duckdb_memory`` allows; nothing
    was published and the scored parts stay for the next run."""


class SharedDataMissing(UserError, FileNotFoundError):
    """Training, evaluation or a combiner fit needs the labelled corpora and none were found."""


class ModelNotFound(UserError):
    """The requested model folder does not exist or holds no known model format."""


class DeviceUnavailable(UserError):
    """``--device`` names a device this machine does not have (``cuda`` without a GPU)."""


class ServerRequired(UserError):
    """``revsat serve`` needs a Prefect server (``PREFECT_API_URL``)."""


class UnsafePath(InputError, ValueError):
    """A configured or derived output path would land outside ``--out`` (the CLI exits 2)."""


class UnknownTable(UserError, ValueError):
    """``revsat export --table`` names a table that is not exported."""


class ConservationError(RuntimeError):
    """Rows in != rows scored + rows rejected: a bug, never a data problem."""


class AlertsRaised(RuntimeError):
    """The run published its outputs and raised alerts, and ``fail_on_alerts`` is set (exit 3).
    """

    def __init__(self, record: dict) -> None:
        super().__init__(f"run {record['run_id']} ({record['run_date']}) raised "
                         f"{record['alerts']} alert(s)")
        self.record = record
