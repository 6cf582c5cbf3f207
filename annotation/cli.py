"""The annotation loop's commands, for ``handdiffuse``'s command line (pipeline/cli.py wires them in;
``handdiffuse merge``, which runs the triangulate and fit stages after merging, is ``pipeline.merge``).

    handdiffuse annotate SESSION            start Label Studio, import the queued views as tasks, print the URL
    handdiffuse annotate-stop SESSION       stop the session's Label Studio
    handdiffuse annotation-status SESSION   queued / in Label Studio / annotated / merged

Each is a dataclass whose field docstrings are the help, with ``run() -> exit code``; a
SchemaError (bad input, or the server failing: one line naming the file to look at) goes up
to the CLI, which prints it and exits 1.
"""

from __future__ import annotations

import dataclasses
import logging
import os
from pathlib import Path

import tyro

from annotation.server import PASSWORD_ENV, SECRETS, START_TIMEOUT_S
from data_schemas.errors import EXIT_OK

LOG = logging.getLogger("handdiffuse")


@dataclasses.dataclass
class AnnotateCommand:
    """Start the session's Label Studio (making its environment on first use), import the queued
    views as pre-annotated tasks, and print the URL to annotate at."""

    session: tyro.conf.Positional[Path] = Path("sessions/demo")
    """Session folder."""
    start_timeout: float = START_TIMEOUT_S
    """Seconds to wait for Label Studio to answer after starting it."""

    def run(self) -> int:
        from annotation.server import connect, credentials, start_server
        from annotation.tasks import import_tasks

        info = start_server(self.session, self.start_timeout, log=LOG.info)
        client, _ = connect(self.session)
        s = import_tasks(self.session, client)
        creds = credentials(self.session)
        made = ", ".join(f"{v} from the {k}" for k, v in sorted(s.guesses.items())) or "none"
        print(f"{self.session / 'annotation' / 'tasks.jsonl'}: {s.imported} tasks imported, {s.existing} there "
              f"already, of {s.queued} queued views (pre-annotations made now: {made}); {s.seconds:.1f} s")
        state = "started" if info.started else "running"
        print(f"Label Studio {state}: {info.url}/projects/{s.project_id}/data  (log: {info.log})")
        where = f"${PASSWORD_ENV}" if os.environ.get(PASSWORD_ENV) else f"\"password\" in {self.session / SECRETS}"
        print(f"  user {creds.username}, password: {where}")
        print(f"  drag the points that are wrong, submit; then `handdiffuse merge {self.session}`; "
              f"stop the server with `handdiffuse annotate-stop {self.session}`")
        return EXIT_OK


@dataclasses.dataclass
class AnnotateStopCommand:
    """Stop the session's Label Studio server (by the PID it recorded)."""

    session: tyro.conf.Positional[Path] = Path("sessions/demo")
    """Session folder."""

    def run(self) -> int:
        from annotation.server import stop_server
        from data_schemas.errors import SchemaError

        if not self.session.is_dir():
            raise SchemaError(self.session, "session folder not found")
        pid = stop_server(self.session)
        print(f"stopped Label Studio (pid {pid})" if pid is not None else
              f"{self.session}: no Label Studio server was running")
        return EXIT_OK


@dataclasses.dataclass
class AnnotationStatusCommand:
    """Print how many queued views are queued, in Label Studio, annotated and merged."""

    session: tyro.conf.Positional[Path] = Path("sessions/demo")
    """Session folder."""

    def run(self) -> int:
        from annotation.status import annotation_status

        s = annotation_status(self.session)
        annotated = str(s.annotated) if s.annotated is not None else "? (Label Studio is not running)"
        print(f"queued {s.queued}, in Label Studio {s.in_label_studio}, annotated {annotated}, merged {s.merged}")
        if s.url:
            print(f"Label Studio: {s.url}")
        return EXIT_OK
