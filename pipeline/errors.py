"""The exceptions a user can meet, each with a message that says what to do."""

from __future__ import annotations


class InputError(Exception):
    """A whole input file cannot be read; the message says which file and what to do."""


class UnsafePath(InputError, ValueError):
    """A configured or derived output path would land outside ``--out`` (the CLI exits 2)."""


class ModelNotFound(Exception):
    """The requested model folder does not exist or holds no known model format."""


class ConservationError(RuntimeError):
    """Rows in != rows scored + rows rejected: a bug, never a data problem."""


class AlertsRaised(RuntimeError):
    """The run published its outputs and raised alerts, and ``fail_on_alerts`` is set."""

    def __init__(self, record: dict) -> None:
        super().__init__(f"run {record['run_id']} ({record['run_date']}) raised "
                         f"{record['alerts']} alert(s)")
        self.record = record
