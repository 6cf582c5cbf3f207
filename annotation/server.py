"""Label Studio as a managed local service of a session: its own virtual environment, one
server per session on 127.0.0.1, its user and token, start and stop by a PID record.

Files, ``session/annotation/labelstudio/`` (mode 0700; a ``.gitignore`` of ``*`` keeps all of it
out of any repository the session sits in)::

    data/          LABEL_STUDIO_BASE_DATA_DIR: SQLite database (it holds the user's token: the
                   folder is private), media, Label Studio's own .env with its Django secret key
    server.json    the running server: pid, port, url, started_at (removed by ``stop_server``)
    server.log     the server's stdout and stderr, appended per start
    secrets.json   mode 0600, made on first use: the user's password and API token, each unless it
                   comes from $HANDDIFFUSE_LS_PASSWORD / $HANDDIFFUSE_LS_TOKEN (those are never written)

The application lives in its own environment, ``<repo>/.venv-labelstudio``, made on first use
from ``annotation/labelstudio-constraints.txt`` (the versions tested): label-studio 1.23.2 pins
Django, numpy 2.2.6, protobuf 7 ..., where the pipeline needs others (mediapipe: protobuf < 5).
The pipeline only imports label-studio-sdk and talks to the server over HTTP.

The user and its token. ``label-studio start`` creates the initial user (when it does not
exist yet) from LABEL_STUDIO_USERNAME and LABEL_STUDIO_PASSWORD and replaces its API token by
LABEL_STUDIO_USER_TOKEN (longer than 5 characters; at most 40, DRF's token key). That is a
*legacy* token: 1.23 also has JWT personal access tokens, but none can be preset, and it turns
legacy tokens off in a new organization unless that is created with
``--enable-legacy-api-token``, so every start passes the flag (it acts on the first). The SDK
sends a key that is not a JWT as ``Authorization: Token <key>``, which is what a legacy token
needs. Secrets reach the server through its environment, never its command line (``ps`` shows
that to every user); nothing here prints or logs them. User, password and token take effect when
the user is made, on the first start of a data dir: to change them later, delete ``data/``.

The server's environment is built from scratch (PATH, HOME, locale): Label Studio reads many
settings from bare names too (``HOST``, ``PORT``, ``DEBUG``, ``USERNAME`` ...), which a user's
shell may well define.
"""

from __future__ import annotations

import fcntl
import json
import os
import re
import secrets
import signal
import socket
import subprocess
import sys
import time
import urllib.error
import urllib.request
from dataclasses import dataclass
from pathlib import Path
from typing import Callable

from annotation.records import IMAGES_ROOT, VIEWS
from data_schemas.atomic import atomic_write_text
from data_schemas.errors import SchemaError
from data_schemas.session import LABELSTUDIO_DIR

LS_VERSION = "1.23.2"
REPO_ROOT = Path(__file__).resolve().parents[1]
VENV = REPO_ROOT / ".venv-labelstudio"
VENV_READY = ".handdiffuse-ready"  # written last into the venv: its content names what is installed
CONSTRAINTS = Path(__file__).resolve().parent / "labelstudio-constraints.txt"
HOST = "127.0.0.1"
DATA = LABELSTUDIO_DIR + "/data"
RECORD = LABELSTUDIO_DIR + "/server.json"
LOG_FILE = LABELSTUDIO_DIR + "/server.log"
SECRETS = LABELSTUDIO_DIR + "/secrets.json"
USER_ENV, PASSWORD_ENV, TOKEN_ENV = "HANDDIFFUSE_LS_USER", "HANDDIFFUSE_LS_PASSWORD", "HANDDIFFUSE_LS_TOKEN"
DEFAULT_USER = "annotator@handdiffuse.local"
START_TIMEOUT_S = 180.0  # the first start migrates a fresh database: ~35 s on 2 cores
STOP_TIMEOUT_S = 15.0
_TOKEN_RE = re.compile(r"^[A-Za-z0-9_-]{6,40}$")


class LabelStudioError(SchemaError):
    """The Label Studio service failed; the message names the file to look at (its log)."""


@dataclass(repr=False)
class Credentials:
    """The annotation user. ``repr`` shows the user only, so a traceback or log cannot leak the rest."""

    username: str
    password: str
    token: str
    token_source: str  # where the token came from: $HANDDIFFUSE_LS_TOKEN or the secrets file

    def __repr__(self) -> str:
        return f"Credentials(username={self.username!r}, token from {self.token_source})"


@dataclass
class ServerInfo:
    pid: int
    port: int
    url: str
    log: Path
    started: bool = False  # this call started it (False: it was running already)


# --- the virtual environment -----------------------------------------------------------------

def venv_python(venv: Path = VENV) -> Path:
    return venv / "bin" / "python"


def ensure_venv(log: Callable[[str], None] | None = None, venv: Path = VENV) -> Path:
    """The ``label-studio`` executable of ``venv``, installing label-studio there first if needed.

    A half-made environment (no ready stamp: an install was killed) is made again. A lock file
    beside it keeps two processes from installing at once."""
    exe = venv / "bin" / "label-studio"
    want = f"label-studio=={LS_VERSION}"

    def ready() -> bool:
        stamp = venv / VENV_READY
        return exe.is_file() and stamp.is_file() and stamp.read_text().strip() == want

    if ready():
        return exe
    venv.parent.mkdir(parents=True, exist_ok=True)
    with open(venv.parent / f"{venv.name}.lock", "w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)  # another process may be installing: wait for it
        if ready():
            return exe
        if log:
            log(f"installing {want} into {venv} (first use; about 1.5 min) ...")
        t0 = time.perf_counter()
        base = Path(getattr(sys, "_base_executable", sys.executable))
        venv.mkdir(parents=True, exist_ok=True)
        install_log = venv / "install.log"
        env = {k: v for k, v in os.environ.items() if k != "PIP_CONSTRAINT"}  # not the pipeline's pins
        env["PIP_DISABLE_PIP_VERSION_CHECK"] = "1"
        rc = subprocess.call([str(base), "-m", "venv", "--clear", str(venv)], stdin=subprocess.DEVNULL, env=env)
        if rc != 0:
            raise LabelStudioError(venv, f"cannot make a virtual environment with {base} (exit {rc})")
        with open(install_log, "ab") as out:
            rc = subprocess.call([str(venv_python(venv)), "-m", "pip", "install", "-q", "-c", str(CONSTRAINTS), want],
                                 stdout=out, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL, env=env)
        if rc != 0:
            raise LabelStudioError(install_log, f"`pip install {want}` into {venv} failed (exit {rc}); see this log")
        if not exe.is_file():
            raise LabelStudioError(venv, f"{want} installed no `label-studio` executable; see {install_log}")
        atomic_write_text(venv / VENV_READY, want + "\n")
        if log:
            log(f"installed {want} in {time.perf_counter() - t0:.0f} s")
    return exe


# --- credentials ---------------------------------------------------------------------------------

def _write_private(path: Path, text: str) -> None:
    """Atomic write of a file that is 0600 from its first byte."""
    tmp = path.with_name(f".{path.name}.partial-{os.getpid()}")
    tmp.unlink(missing_ok=True)
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    try:
        with os.fdopen(fd, "w", encoding="utf-8") as f:
            f.write(text)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise


def credentials(root: str | Path) -> Credentials:
    """The annotation user of session ``root``: $HANDDIFFUSE_LS_USER (default annotator@handdiffuse.local);
    password and token from $HANDDIFFUSE_LS_PASSWORD / $HANDDIFFUSE_LS_TOKEN, else from the secrets
    file, generated into it on first use."""
    path = Path(root) / SECRETS
    stored: dict = {}
    if path.is_file():
        if path.stat().st_mode & 0o077:
            raise LabelStudioError(path, "is readable by other users; `chmod 600` it")
        try:
            stored = json.loads(path.read_text(encoding="utf-8"))
        except json.JSONDecodeError as e:
            raise LabelStudioError(path, f"not valid JSON ({e.msg})")
        if not isinstance(stored, dict):
            raise LabelStudioError(path, "expected a JSON object")
    env_token, env_password = os.environ.get(TOKEN_ENV), os.environ.get(PASSWORD_ENV)
    want = dict(stored)
    if not env_token and not want.get("token"):
        want["token"] = secrets.token_hex(20)  # 40 characters, DRF's token length
    if not env_password and not want.get("password"):
        want["password"] = secrets.token_urlsafe(18)
    if want != stored:
        path.parent.mkdir(parents=True, exist_ok=True)
        _write_private(path, json.dumps(want, indent=1) + "\n")
    token = env_token or want["token"]
    source = f"${TOKEN_ENV}" if env_token else str(path)
    if not _TOKEN_RE.match(token):
        raise LabelStudioError(source, "the API token must be 6 to 40 characters of A-Z a-z 0-9 _ -")
    return Credentials(os.environ.get(USER_ENV) or DEFAULT_USER, env_password or want["password"], token, source)


# --- the server ----------------------------------------------------------------------------------

def _pid_alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


def _is_label_studio(pid: int) -> bool:
    """The process is (still) a Label Studio server, not another process that got its PID."""
    try:
        cmdline = Path(f"/proc/{pid}/cmdline").read_bytes().split(b"\0")
    except OSError:
        return _pid_alive(pid)  # no /proc (not Linux): trust the record
    return any(part.endswith(b"label-studio") for part in cmdline) and b"start" in cmdline


def _healthy(url: str, timeout: float = 2.0) -> bool:
    try:
        with urllib.request.urlopen(f"{url}/health", timeout=timeout) as r:
            return r.status == 200
    except (urllib.error.URLError, OSError, ValueError):
        return False


def _wait_healthy(url: str, alive: Callable[[], bool], timeout: float) -> bool:
    """Poll ``url``/health until it answers (True), the process dies or ``timeout`` s pass (False)."""
    t0 = time.perf_counter()
    while not _healthy(url):
        if not alive() or time.perf_counter() - t0 > timeout:
            return False
        time.sleep(0.5)
    return True


def read_record(root: str | Path) -> dict | None:
    path = Path(root) / RECORD
    if not path.is_file():
        return None
    try:
        rec = json.loads(path.read_text(encoding="utf-8"))
    except json.JSONDecodeError as e:
        raise LabelStudioError(path, f"not valid JSON ({e.msg}); delete it if no server runs")
    if not isinstance(rec, dict) or not all(isinstance(rec.get(k), int) for k in ("pid", "port")):
        raise LabelStudioError(path, "expected {\"pid\": int, \"port\": int, ...}; delete it if no server runs")
    return rec


def running_server(root: str | Path) -> ServerInfo | None:
    """The session's server if its recorded process runs and answers /health."""
    rec = read_record(root)
    if rec is None or not _is_label_studio(rec["pid"]):
        return None
    url = f"http://{HOST}:{rec['port']}"
    if not _healthy(url):
        return None
    return ServerInfo(rec["pid"], rec["port"], url, Path(root) / LOG_FILE)


def free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind((HOST, 0))
        return s.getsockname()[1]


def server_env(root: Path, creds: Credentials) -> dict[str, str]:
    env = {k: os.environ[k] for k in ("PATH", "HOME", "LANG", "LC_ALL", "TZ", "TMPDIR") if k in os.environ}
    env.update({
        "LABEL_STUDIO_BASE_DATA_DIR": str((root / DATA).resolve()),
        "LABEL_STUDIO_LOCAL_FILES_SERVING_ENABLED": "true",
        "LABEL_STUDIO_LOCAL_FILES_DOCUMENT_ROOT": str((root / IMAGES_ROOT).resolve()),
        "LABEL_STUDIO_USERNAME": creds.username,
        "LABEL_STUDIO_PASSWORD": creds.password,
        "LABEL_STUDIO_USER_TOKEN": creds.token,
        "LABEL_STUDIO_DISABLE_SIGNUP_WITHOUT_LINK": "true",  # the one user is made here; nobody signs up
        "LATEST_VERSION_CHECK": "false",  # no calls to the internet
        "COLLECT_ANALYTICS": "false",
        "CONVERTER_DOWNLOAD_RESOURCES": "false",
        "PYTHONUNBUFFERED": "1",
    })
    return env


def _prepare(root: Path) -> None:
    ls = root / LABELSTUDIO_DIR
    for d in (ls, root / DATA):
        d.mkdir(parents=True, exist_ok=True)
        d.chmod(0o700)
    ignore = ls / ".gitignore"
    if not ignore.is_file():
        atomic_write_text(ignore, "# Label Studio's data, log and secrets: never commit\n*\n")
    (root / IMAGES_ROOT / VIEWS).mkdir(parents=True, exist_ok=True)


def _whoami(url: str, token: str) -> int:
    """HTTP status of the current-user API with ``token`` (200: accepted)."""
    req = urllib.request.Request(f"{url}/api/current-user/whoami", headers={"Authorization": f"Token {token}"})
    try:
        with urllib.request.urlopen(req, timeout=10) as r:
            return r.status
    except urllib.error.HTTPError as e:
        return e.code
    except (urllib.error.URLError, OSError):
        return 0


def start_server(root: str | Path, timeout: float = START_TIMEOUT_S,
                 log: Callable[[str], None] | None = None) -> ServerInfo:
    """Start the session's Label Studio (making its environment first if needed), or return the one
    running; wait until it answers /health and accepts the token."""
    root = Path(root)
    if not root.is_dir():
        raise SchemaError(root, "session folder not found")
    rec = read_record(root)
    if rec is not None and _is_label_studio(rec["pid"]):  # running, or still starting (another command)
        url = f"http://{HOST}:{rec['port']}"
        if not _wait_healthy(url, lambda: _pid_alive(rec["pid"]), timeout):
            raise LabelStudioError(root / LOG_FILE, f"Label Studio (pid {rec['pid']}) runs but does not answer "
                                   f"{url}/health; stop it with `handdiffuse annotate-stop {root}`")
        return ServerInfo(rec["pid"], rec["port"], url, root / LOG_FILE)
    (root / RECORD).unlink(missing_ok=True)  # a stale record: its process is gone
    exe = ensure_venv(log)
    _prepare(root)
    creds = credentials(root)
    port = free_port()
    url = f"http://{HOST}:{port}"
    log_path = root / LOG_FILE
    cmd = [str(exe), "start", "--no-browser", "--internal-host", HOST, "--port", str(port), "--enable-legacy-api-token"]
    t0 = time.perf_counter()
    with open(log_path, "ab") as out:
        out.write(f"\n=== handdiffuse: label-studio {LS_VERSION} start on {url}, {time.strftime('%Y-%m-%dT%H:%M:%S')}"
                  " ===\n".encode())
        out.flush()
        proc = subprocess.Popen(cmd, cwd=root / LABELSTUDIO_DIR, env=server_env(root, creds), stdout=out,
                                stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL, start_new_session=True)
    atomic_write_text(root / RECORD, json.dumps({"pid": proc.pid, "port": port, "url": url, "version": LS_VERSION,
                                                 "started_at": time.strftime("%Y-%m-%dT%H:%M:%S%z")}) + "\n")
    # the server runs on in its own session; wait for it, or stop it and say where to look
    if not _wait_healthy(url, lambda: proc.poll() is None, timeout):
        (root / RECORD).unlink(missing_ok=True)
        if proc.poll() is not None:
            raise LabelStudioError(log_path, f"Label Studio exited with code {proc.returncode} while starting; "
                                             "see this log")
        _stop_pid(proc.pid)
        raise LabelStudioError(log_path, f"Label Studio did not answer {url}/health within {timeout:.0f} s; "
                                         "see this log")
    status = _whoami(url, creds.token)
    if status != 200:
        _stop_pid(proc.pid)
        (root / RECORD).unlink(missing_ok=True)
        raise LabelStudioError(creds.token_source, f"Label Studio refused the API token (HTTP {status}): its user "
                               f"'{creds.username}' was made with another token; use that one, or delete "
                               f"{root / DATA} to start over")
    if log:
        log(f"Label Studio {LS_VERSION} up on {url} in {time.perf_counter() - t0:.1f} s (pid {proc.pid})")
    return ServerInfo(proc.pid, port, url, log_path, started=True)


def _stop_pid(pid: int, timeout: float = STOP_TIMEOUT_S) -> None:
    """SIGTERM, then SIGKILL after ``timeout`` s; reaps it when it is our child."""
    try:
        os.kill(pid, signal.SIGTERM)
    except ProcessLookupError:
        return
    t0 = time.perf_counter()
    while time.perf_counter() - t0 < timeout:
        try:
            if os.waitpid(pid, os.WNOHANG)[0] == pid:
                return
        except ChildProcessError:  # not our child: poll for it
            if not _pid_alive(pid):
                return
        time.sleep(0.2)
    try:
        os.kill(pid, signal.SIGKILL)
    except ProcessLookupError:
        pass


def stop_server(root: str | Path) -> int | None:
    """Stop the session's server by its recorded PID and remove the record; the PID stopped, or None
    if none was running."""
    root = Path(root)
    rec = read_record(root)
    if rec is None:
        return None
    pid = rec["pid"]
    stopped = None
    if _pid_alive(pid) and _is_label_studio(pid):
        _stop_pid(pid)
        stopped = pid
    (root / RECORD).unlink(missing_ok=True)
    return stopped


def connect(root: str | Path):
    """A label-studio-sdk client of the session's running server (SchemaError if none runs)."""
    from label_studio_sdk import LabelStudio

    root = Path(root)
    info = running_server(root)
    if info is None:
        raise LabelStudioError(root / RECORD, "Label Studio is not running for this session; start it with "
                                              f"`handdiffuse annotate {root}`")
    return LabelStudio(base_url=info.url, api_key=credentials(root).token, timeout=120), info
