"""The one error type every reader, writer and validator raises on bad input, and the exit
codes of every command.

Its message is always one line, ``<file>: <cause>``, so the CLI can print it as is
and a person knows which file to look at and what is wrong with it.
"""

from __future__ import annotations

from pathlib import Path

# Exit codes of ``handdiffuse`` and every stage command.
EXIT_OK = 0  # done
EXIT_BAD_INPUT = 1  # bad input or failed validation (one line per cause, naming the file)
EXIT_USAGE = 2  # bad command line


class SchemaError(ValueError):
    """Bad input in a file (or an object about to be written to one)."""

    def __init__(self, source: str | Path, cause: str):
        self.source = str(source)
        self.cause = " ".join(str(cause).split())  # one line, always
        super().__init__(f"{self.source}: {self.cause}")

    def __reduce__(self):  # so an error raised in a worker process reaches the caller intact
        return (type(self), (self.source, self.cause))
