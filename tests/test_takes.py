"""data_schemas.takes on tiny sessions: 3 cameras of 64x48 at 30 fps, 20 frames each.

Frame k of every video is a uniform gray of level 20 + 12 k, so a test can tell which
video frame it got back despite compression; exact comparisons use the frames of a
plain sequential decode (``read_frames``).
"""

import cv2
import numpy as np
import pytest

from data_schemas.takes import open_take, probe
from data_schemas.video import VideoWriter, read_frames
from data_schemas import SchemaError
from data_schemas.session import CameraSpec, Session, SessionConfig, write_session_toml

FPS = 30.0
SIZE = (64, 48)  # (width, height)
N_FRAMES = 20
OFFSETS = (0, 2, -3)  # cam00 shows instants 0..19, cam01 -2..17, cam02 3..22


def level(k: int) -> int:
    return 20 + 12 * k


def frame_index(frame: np.ndarray) -> int:
    """Which video frame a decoded (H, W, 3) frame is, from its gray level."""
    return round((float(frame.mean()) - 20) / 12)


def write_video(path, n_frames=N_FRAMES, fps=FPS, size=SIZE):
    with VideoWriter(path, fps, size) as w:
        for k in range(n_frames):
            w.write(np.full((size[1], size[0], 3), level(k), np.uint8))


def make_session(root, offsets=OFFSETS, n_frames=None, take="seq000") -> Session:
    cameras = [CameraSpec(f"cam{i:02d}", *SIZE, frame_offset=o) for i, o in enumerate(offsets)]
    write_session_toml(root / "session.toml", SessionConfig(name="t", fps=FPS, cameras=cameras))
    folder = root / ("calibration/videos" if take is None else f"sequences/{take}/videos")
    for i, c in enumerate(cameras):
        write_video(folder / f"{c.name}.mp4", n_frames=N_FRAMES if n_frames is None else n_frames[i])
    return Session.open(root)


def videos(root):
    return root / "sequences" / "seq000" / "videos"


# --- sync --------------------------------------------------------------------------------


def test_instants_are_the_intersection(tmp_path):
    take = open_take(make_session(tmp_path, n_frames=(20, 15, 20)), "seq000", allow_short_videos=True)
    assert take.frame_counts == {"cam00": 20, "cam01": 15, "cam02": 20}
    assert take.camera_instants("cam00") == range(0, 20)
    assert take.camera_instants("cam01") == range(-2, 13)
    assert take.camera_instants("cam02") == range(3, 23)
    assert take.instants == range(3, 13)
    assert take.videos["cam01"].size == SIZE and take.videos["cam01"].fps == FPS


def test_read_returns_the_frame_of_each_instant(tmp_path):
    take = open_take(make_session(tmp_path), "seq000")
    assert take.instants == range(3, 18)
    for camera, offset in zip(take.cameras, OFFSETS):
        reference = read_frames(take.videos[camera].path)  # (20, 48, 64, 3)
        for instants in (take.instants, take.camera_instants(camera)):
            got = list(take.read(camera, instants))
            assert [t for t, _ in got] == list(instants)
            for t, frame in got:
                assert frame.shape == (48, 64, 3) and frame.dtype == np.uint8
                assert frame_index(frame) == t + offset
                assert np.array_equal(frame, reference[t + offset])


def test_read_all_gives_every_camera_the_same_instant(tmp_path):
    take = open_take(make_session(tmp_path), "seq000")
    got = list(take.read_all([3, 10, 17]))
    assert [t for t, _ in got] == [3, 10, 17]
    for t, frames in got:
        assert list(frames) == ["cam00", "cam01", "cam02"]
        assert [frame_index(frames[c]) for c in frames] == [t + o for o in OFFSETS]


class CountingCapture:
    """cv2.VideoCapture that counts seeks, grabs and retrieves."""

    real = cv2.VideoCapture
    seeks: list[int] = []
    grabs = 0
    retrieves = 0

    def __init__(self, *args):
        self._cap = CountingCapture.real(*args)

    def set(self, prop, value):
        if prop == cv2.CAP_PROP_POS_FRAMES:
            CountingCapture.seeks.append(int(value))
        return self._cap.set(prop, value)

    def grab(self):
        CountingCapture.grabs += 1
        return self._cap.grab()

    def retrieve(self):
        CountingCapture.retrieves += 1
        return self._cap.retrieve()

    def __getattr__(self, name):
        return getattr(self._cap, name)


def test_sparse_read_seeks_once_then_decodes_forward(tmp_path, monkeypatch):
    take = open_take(make_session(tmp_path), "seq000")
    monkeypatch.setattr(cv2, "VideoCapture", CountingCapture)
    CountingCapture.seeks, CountingCapture.grabs, CountingCapture.retrieves = [], 0, 0
    got = list(take.read("cam02", [5, 6, 11, 16]))  # video frames 2, 3, 8, 13
    assert [frame_index(f) for _, f in got] == [2, 3, 8, 13]
    assert CountingCapture.seeks == [2]
    assert CountingCapture.grabs == 12  # frames 2..13
    assert CountingCapture.retrieves == 4

    CountingCapture.seeks, CountingCapture.grabs, CountingCapture.retrieves = [], 0, 0
    got = list(take.read("cam00", [0, 19]))
    assert [frame_index(f) for _, f in got] == [0, 19]
    assert CountingCapture.seeks == []  # starts at frame 0: nothing to seek
    assert (CountingCapture.grabs, CountingCapture.retrieves) == (20, 2)


def test_read_rejects_unsorted_or_unshown_instants(tmp_path):
    take = open_take(make_session(tmp_path), "seq000")
    with pytest.raises(ValueError, match="instants must be strictly increasing, got 4 after 5"):
        list(take.read("cam00", [5, 4]))
    with pytest.raises(ValueError, match=r"instant 2 is not shown by camera 'cam02' \(it shows 3..22\)"):
        list(take.read("cam02", [2]))


def test_calibration_take(tmp_path):
    take = open_take(make_session(tmp_path, take=None), None)
    assert take.folder == tmp_path / "calibration" / "videos"
    assert take.instants == range(3, 18)
    for camera in take.cameras:
        take.check_decodable(camera)


# --- errors ------------------------------------------------------------------------------


def error(excinfo) -> str:
    return str(excinfo.value)


def test_missing_camera_video(tmp_path):
    session = make_session(tmp_path)
    (videos(tmp_path) / "cam01.mp4").unlink()
    with pytest.raises(SchemaError) as e:
        open_take(session, "seq000")
    assert error(e) == f"{videos(tmp_path)}/cam01.mp4: video of camera 'cam01' not found"


def test_fps_mismatch(tmp_path):
    session = make_session(tmp_path)
    write_video(videos(tmp_path) / "cam02.mp4", fps=25.0)
    with pytest.raises(SchemaError) as e:
        open_take(session, "seq000")
    assert error(e) == f"{videos(tmp_path)}/cam02.mp4: fps is 25 but session.toml [session] fps is 30"


def test_size_mismatch(tmp_path):
    session = make_session(tmp_path)
    write_video(videos(tmp_path) / "cam01.mp4", size=(32, 48))
    with pytest.raises(SchemaError) as e:
        open_take(session, "seq000")
    assert error(e) == (f"{videos(tmp_path)}/cam01.mp4: frame size is 32x48 "
                        "but session.toml gives camera 'cam01' 64x48")


def test_not_a_video(tmp_path):
    session = make_session(tmp_path)
    (videos(tmp_path) / "cam00.mp4").write_text("not a video\n")
    with pytest.raises(SchemaError) as e:
        open_take(session, "seq000")
    assert error(e) == f"{videos(tmp_path)}/cam00.mp4: cannot open video (not a video file or unsupported codec)"


def test_probe_missing_file(tmp_path):
    with pytest.raises(SchemaError) as e:
        probe(tmp_path / "cam00.mp4")
    assert error(e) == f"{tmp_path}/cam00.mp4: file not found"


@pytest.mark.parametrize("fraction", [0.6, 0.3])
def test_truncated_mp4_does_not_open(tmp_path, fraction):
    """OpenCV writes MP4 boxes ftyp, free, mdat (frames), moov (index, last); FFmpeg cannot open
    a file without a complete moov, so a cut MP4 fails at open, not midway."""
    session = make_session(tmp_path)
    path = videos(tmp_path) / "cam01.mp4"
    data = path.read_bytes()
    moov_start = data.rfind(b"moov") - 4
    assert data[4:8] == b"ftyp" and b"mdat" in data[:moov_start] and 0 < moov_start < len(data)
    cut = int(len(data) * fraction)
    path.write_bytes(data[:cut])
    box, end = ("moov", len(data)) if cut > moov_start else ("mdat", moov_start)
    with pytest.raises(SchemaError) as e:
        open_take(session, "seq000")
    assert error(e) == (f"{path}: video is corrupt or truncated: cannot open it, "
                        f"the file has {cut} bytes but its MP4 '{box}' box ends at byte {end}")


def truncate_mkv(folder):
    """Replace cam00's video by an MKV cut to 60%: it opens, reports 20 frames, decodes fewer."""
    (folder / "cam00.mp4").unlink()
    path = folder / "cam00.mkv"
    write_video(path)
    data = path.read_bytes()
    path.write_bytes(data[: int(len(data) * 0.6)])
    return path


def damage_mp4(folder):
    """Zero a stretch of cam00's frame data: the file opens, reports 20 frames, decodes fewer."""
    path = folder / "cam00.mp4"
    data = bytearray(path.read_bytes())
    start = data.find(b"mdat") + 4
    stop = data.rfind(b"moov") - 4
    a, b = start + (stop - start) * 4 // 10, start + (stop - start) * 7 // 10
    data[a:b] = bytes(b - a)
    path.write_bytes(bytes(data))
    return path


@pytest.mark.parametrize("damage", [truncate_mkv, damage_mp4])
def test_video_that_stops_decoding_midway(tmp_path, damage):
    session = make_session(tmp_path)
    path = damage(videos(tmp_path))
    reference = read_frames(path)  # what a plain decode gets before it stops
    decodable = len(reference)
    assert 0 < decodable < N_FRAMES
    take = open_take(session, "seq000")  # headers are fine
    assert take.frame_counts["cam00"] == N_FRAMES
    expected = f"{path}: video is corrupt or truncated: decoded {decodable} of 20 frames"
    with pytest.raises(SchemaError) as e:
        take.check_decodable("cam00")
    assert error(e) == expected
    with pytest.raises(SchemaError) as e:  # from the start, decoding forward
        list(take.read("cam00", take.camera_instants("cam00")))
    assert error(e) == expected
    with pytest.raises(SchemaError) as e:  # a seek past the damage
        list(take.read("cam00", [decodable + 2]))
    assert error(e) == expected
    # Frames before the break still read (a damaged one may come back concealed, as in a plain decode).
    got = [f for _, f in take.read("cam00", range(decodable))]
    assert all(np.array_equal(f, r) for f, r in zip(got, reference, strict=True))


def test_no_instant_shown_by_every_camera(tmp_path):
    session = make_session(tmp_path, offsets=(0, -25, 0))
    with pytest.raises(SchemaError) as e:
        open_take(session, "seq000")
    assert error(e) == (f"{videos(tmp_path)}: no instant is shown by every camera: 'cam01' starts at instant 25 "
                        "(frame_offset -25 in session.toml) but 'cam00' ends at instant 19 (20 frames, frame_offset 0)")


def test_seek_fallback_when_seek_lands_elsewhere(tmp_path, monkeypatch):
    """If CAP_PROP_POS_FRAMES does not land where asked, read starts over and decodes forward."""
    take = open_take(make_session(tmp_path), "seq000")

    class BadSeek(CountingCapture):
        def set(self, prop, value):
            super().set(prop, value)
            return self._cap.set(prop, 0)  # lands on frame 0

    monkeypatch.setattr(cv2, "VideoCapture", BadSeek)
    assert [frame_index(f) for _, f in take.read("cam01", [5, 9])] == [7, 11]


# --- short videos -----------------------------------------------------------------------


def test_short_video_is_refused(tmp_path):
    session = make_session(tmp_path, offsets=(0, 0, 0), n_frames=(20, 12, 20))
    with pytest.raises(SchemaError) as e:
        open_take(session, "seq000")
    assert error(e) == (f"{videos(tmp_path)}/cam01.mp4: camera 'cam01' has 12 frames where the other cameras have 20: "
                        "every camera shows only 12 instants (0..11) instead of 20 (0..19); "
                        "pass --allow-short-videos to keep those 12")


def test_short_video_allowed_keeps_the_shared_instants(tmp_path):
    session = make_session(tmp_path, offsets=(0, 0, 0), n_frames=(20, 20, 12))
    take = open_take(session, "seq000", allow_short_videos=True)
    assert take.instants == range(0, 12) and take.short_cameras() == ["cam02"]
    assert take.short_videos() == ("camera 'cam02' has 12 frames where the other cameras have 20: every camera "
                                   "shows only 12 instants (0..11) instead of 20 (0..19)")


@pytest.mark.parametrize("offsets, n_frames", [
    (OFFSETS, (20, 20, 20)),  # same lengths, shifted: instants 3..17
    ((0, -2, 0), (20, 18, 20)),  # cam01 started 2 frames late and stopped with the others
    ((0, 0, 0), (16, 20, 16)),  # one camera recorded longer than the others
])
def test_frame_offsets_do_not_make_a_camera_short(tmp_path, offsets, n_frames):
    take = open_take(make_session(tmp_path, offsets=offsets, n_frames=n_frames), "seq000")
    assert take.short_cameras() == [] and take.short_videos() is None


def test_short_video_beyond_its_offset_is_refused(tmp_path):
    """cam01 started 2 frames late (offset -2) but also stopped 5 frames early."""
    session = make_session(tmp_path, offsets=(0, -2, 0), n_frames=(20, 13, 20))
    with pytest.raises(SchemaError) as e:
        open_take(session, "seq000")
    assert error(e).startswith(f"{videos(tmp_path)}/cam01.mp4: camera 'cam01' has 13 frames where the other "
                               "cameras have 20: every camera shows only 13 instants (2..14) instead of 18 (2..19)")
