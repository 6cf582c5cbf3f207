"""The annotation loop against a real Label Studio on 127.0.0.1 (slow: `make test-slow`).

Makes the Label Studio environment when it is missing (a fresh machine: ~1.5 min), starts the
session's server, imports the queue of a small studio session twice, annotates as a person
would through the API (the left hand's points dragged to the truth), rejects a malformed
export, merges, and stops the server; the API token must show nowhere but its 0600 file.
"""

import logging
import os
import time
import urllib.error
import urllib.request

import numpy as np
import pytest

from annotation import server
from annotation.cli import AnnotateCommand, AnnotateStopCommand, AnnotationStatusCommand
from annotation.merge import pull_export
from annotation.records import IMAGES_ROOT, MERGED, TASKS, read_task_records
from annotation.status import annotation_status
from annotation.tasks import every_item
from data_schemas import SchemaError
from data_schemas.keypoints2d import read_keypoints2d
from data_schemas.queue import read_queue
from data_schemas.session import KEYPOINTS2D_MANUAL, LABELSTUDIO_DIR, MANO
from pipeline.merge import MergeCommand, merge_export
from tests.test_annotation import SEQ, annotate_like_a_person, queued_session

pytestmark = [pytest.mark.slow, pytest.mark.timeout(1500)]


@pytest.fixture(scope="module")
def live(tmp_path_factory):
    """A queued studio session and its running Label Studio (stopped at the end whatever happens)."""
    root = queued_session(tmp_path_factory.mktemp("labelstudio") / "s")
    t0 = time.perf_counter()
    server.ensure_venv(log=print)
    t1 = time.perf_counter()
    info = server.start_server(root, log=print)
    print(f"\nLabel Studio environment ready in {t1 - t0:.1f} s; server up in {time.perf_counter() - t1:.1f} s")
    try:
        yield root, info
    finally:
        server.stop_server(root)


def get(url: str, token: str | None = None) -> tuple[int, bytes]:
    req = urllib.request.Request(url, headers={"Authorization": f"Token {token}"} if token else {})
    try:
        with urllib.request.urlopen(req, timeout=30) as r:
            return r.status, r.read()
    except urllib.error.HTTPError as e:
        return e.code, b""


def test_the_annotation_loop_on_a_real_server(live, capsys, caplog):
    caplog.set_level(logging.DEBUG)  # everything the SDK and HTTP clients log, to search for the token
    root, info = live
    token = server.credentials(root).token
    n = len(read_queue(root / "annotation" / "queue.jsonl"))
    assert n >= 1
    assert (root / server.SECRETS).stat().st_mode & 0o777 == 0o600
    assert (root / server.DATA).stat().st_mode & 0o777 == 0o700

    # annotate: project, crops, tasks; twice, and nothing is imported twice
    assert AnnotateCommand(session=root).run() == 0
    out = capsys.readouterr().out
    assert f"{n} tasks imported, 0 there already, of {n} queued views (pre-annotations made now: {n} from the fit)" \
        in out
    assert f"Label Studio running: {info.url}/projects/" in out
    assert AnnotateCommand(session=root).run() == 0
    assert f"0 tasks imported, {n} there already, of {n} queued views" in capsys.readouterr().out
    records = {r.key: r for r in read_task_records(root / TASKS)}
    (root / TASKS).unlink()  # lost: the records come back from Label Studio's tasks, nothing is imported
    assert AnnotateCommand(session=root).run() == 0
    assert f"0 tasks imported, {n} there already" in capsys.readouterr().out
    assert {r.key: r for r in read_task_records(root / TASKS)} == records
    client, _ = server.connect(root)
    [project] = [p for p in every_item(client.projects.list(), "count") if p.title == f"HandDiffuse {root.name}"]
    tasks = every_item(client.tasks.list(project=project.id, fields="all"), "total")
    assert sorted(t.data["key"] for t in tasks) == sorted(i.key for i in read_queue(root / "annotation/queue.jsonl"))

    # the crops are served, and nothing outside their folder
    r = next(iter(records.values()))
    status, body = get(f"{info.url}/data/local-files/?d={r.image}", token)
    assert status == 200 and body == (root / IMAGES_ROOT / r.image).read_bytes()
    assert get(f"{info.url}/data/local-files/?d=../labelstudio/secrets.json", token)[0] != 200
    assert get(f"{info.url}/data/local-files/?d=../../session.toml", token)[0] != 200

    # a person drags the left hand's points to where they are and submits
    moved = {}
    for t in tasks:
        rec = records[t.data["key"]]
        [prediction] = t.predictions
        result, moved[rec.key] = annotate_like_a_person(root, rec, prediction.result)
        client.annotations.create(id=t.id, result=result, lead_time=20.0)
    st = annotation_status(root)
    assert (st.queued, st.in_label_studio, st.annotated, st.merged) == (n, n, n, 0)

    # a malformed export is rejected whole
    export, source, users = pull_export(root)
    export[0]["annotations"][0]["result"][0]["value"]["keypointlabels"] = ["left_thumb5"]
    mano_bytes = (root / MANO.format(seq=SEQ)).read_bytes()
    with pytest.raises(SchemaError) as e:
        merge_export(root, export, source, users=users)
    assert str(e.value).startswith(f"{info.url}/api/projects/{project.id}/export: task ")
    assert str(e.value).endswith(": unknown label 'left_thumb5'")
    assert not (root / KEYPOINTS2D_MANUAL.format(seq=SEQ)).exists() and not (root / MERGED).exists()
    assert (root / MANO.format(seq=SEQ)).read_bytes() == mano_bytes

    # merge: the submitted pixels, the refit closer to them
    assert MergeCommand(session=root).run() == 0
    out = capsys.readouterr().out
    points = sum(len(m) for m in moved.values())
    assert out.startswith(f"merged {n} annotated views: {points} points placed or moved, ")
    manual = read_keypoints2d(root / KEYPOINTS2D_MANUAL.format(seq=SEQ))
    assert (manual.keypoints[..., 2] > 0).sum() == points
    for key, m in moved.items():
        rec = records[key]
        c, f = manual.cameras.index(rec.camera), list(manual.frames).index(rec.frame)
        for j, uv in m.items():
            assert np.linalg.norm(manual.keypoints[c, f, j, :2] - uv) < 0.5
        assert manual.annotators[c, f] == server.DEFAULT_USER
    before, after = (float(v) for v in out.split("manual points to the fit ")[1].split(" px")[0].split(" -> "))
    assert after < 0.5 * before
    assert AnnotationStatusCommand(session=root).run() == 0
    assert capsys.readouterr().out.startswith(f"queued {n}, in Label Studio {n}, annotated {n}, merged {n}\n")

    # the token: in its 0600 file (and Label Studio's own user table, in its private data dir) only
    captured = capsys.readouterr()
    password = server.credentials(root).password
    for secret in (token, password):
        assert secret not in captured.out + captured.err + caplog.text
        assert secret not in (root / server.LOG_FILE).read_text(errors="replace")
    private = {root / server.SECRETS}
    leaks = [p for p in root.rglob("*") if p.is_file() and p not in private
             and root / server.DATA not in p.parents and token.encode() in p.read_bytes()]
    assert leaks == []
    install_log = server.VENV / "install.log"
    assert not install_log.is_file() or token not in install_log.read_text(errors="replace")

    # stop by the recorded PID
    assert AnnotateStopCommand(session=root).run() == 0
    assert capsys.readouterr().out == f"stopped Label Studio (pid {info.pid})\n"
    assert not (root / server.RECORD).exists() and server.running_server(root) is None
    with pytest.raises(ProcessLookupError):
        os.kill(info.pid, 0)
    assert (root / LABELSTUDIO_DIR / ".gitignore").read_text().endswith("*\n")
