"""Triangulation speed and accuracy against aniposelib on the full dome.

1. data: the studio's full dome (50 cameras, 3840x2160, lens distortion) and 1200 frames of
   two-hand motion (the four motion families, 300 frames each, through the hand model):
   50,400 points, projected with distortion, 2 px Gaussian noise, float32 like keypoints2d.h5
2. clean: ours (``fitting.triangulate``: robust = IRLS, and DLT, RANSAC; numba kernels on every
   core, and the numpy reference ``triangulate_reference``, one thread) against
   aniposelib 0.8's ``CameraGroup.triangulate`` (cv2 undistortion + DLT by SVD in jax, its
   threads). aniposelib runs on the first ``ANIPOSE_FRAMES`` frames (5040 points; on this
   shared 2-core machine its speed swings between ~200 and ~10,000 points/s from run to run,
   and the whole set could take minutes); its points/s is over those, and the final line's
   errors are on those same frames. Every timing is the best of ``REPEATS`` runs in this
   process, after a warm-up (jax compiles per input shape; numba's first call, printed, compiles
   the kernels or loads them from its cache)
3. outliers: the same data with 5 % of the detections moved uniformly anywhere in the image
   and 1 % of the views (camera, frame) with the two hands exchanged
4. heavy outliers, ours only (IRLS against RANSAC): 30 % of the detections anywhere, 5 % of
   the views exchanged
5. aniposelib's ``triangulate_ransac`` tries subsets of the cameras per point until one
   reprojects under 0.5 px (never, at 2 px noise): at 50 cameras that is 2^50 subsets, so it
   runs on an 8-camera subset of the dome, ``RANSAC_POINTS`` points, against ours on the same

Last line (the clean scenario; ours = the default robust mode):
``triangulation cameras=50 points=<n> ours_pts_per_s=<a> aniposelib_pts_per_s=<b> speedup=<a/b>
ours_mpjpe_mm=<e1> aniposelib_mpjpe_mm=<e2>`` (issue targets: speedup >= 100 with ours_mpjpe <=
aniposelib_mpjpe; under outliers the robust mode beats aniposelib's error and is >= 20x faster).
"""

from __future__ import annotations

import time

import numba
import numpy as np

from capture.studio.rig import FULL, make_rig
from data_schemas.calibration import CameraRig
from fitting.triangulate import ROBUST, triangulate, triangulate_reference

FRAMES_PER_MOTION = 300
NOISE_PX = 2.0
OUTLIERS = 0.05  # fraction of detections moved anywhere in the image
SWAPS = 0.01  # fraction of views (camera, frame) with the hands exchanged
HEAVY_OUTLIERS, HEAVY_SWAPS = 0.30, 0.05
ANIPOSE_FRAMES = 120  # 5040 points
RANSAC_CAMERAS = 8
RANSAC_POINTS = 42
REPEATS = 3


def motion_joints(seed: int = 0) -> np.ndarray:
    """(F, 42, 3) joints, m: one motion of each family, one after the other."""
    from capture.studio.motion import FAMILIES, make_motion, pose_motion
    from hand_model.model import HandModel

    model = HandModel()
    joints = []
    for k, family in enumerate(FAMILIES):
        motion = make_motion(family, FRAMES_PER_MOTION, 30.0, seed + k, model)
        joints.append(pose_motion(motion, model)[1].reshape(FRAMES_PER_MOTION, 42, 3))
    return np.concatenate(joints)


def detections(rig: CameraRig, joints: np.ndarray, rng: np.random.Generator, outliers: float = 0.0,
               swaps: float = 0.0) -> tuple[np.ndarray, np.ndarray]:
    """Keypoints (C, F, 42, 3) float32 [x, y, score = 1] and the swapped views (F, C)."""
    px = rig.project(joints) + rng.normal(0, NOISE_PX, (len(rig),) + joints.shape[:2] + (2,))  # (C, F, 42, 2)
    kp = np.concatenate([px, np.ones(px.shape[:-1] + (1,))], axis=-1)
    moved = rng.random(kp.shape[:3]) < outliers  # (C, F, 42)
    size = np.array([c.size for c in rig.cameras], float)[:, None, None, :]  # (C, 1, 1, 2)
    kp[..., :2] = np.where(moved[..., None], rng.random(kp.shape[:3] + (2,)) * size, kp[..., :2])
    swapped = rng.random(kp.shape[:2]) < swaps  # (C, F)
    kp[swapped] = np.concatenate([kp[swapped][:, 21:], kp[swapped][:, :21]], axis=1)
    return kp.astype(np.float32), swapped.T


def anipose_group(rig: CameraRig):
    from aniposelib.cameras import Camera as ACamera
    from aniposelib.cameras import CameraGroup

    return CameraGroup([ACamera(matrix=c.matrix, dist=c.distortions, size=c.size, rvec=c.rotation,
                                tvec=c.translation, name=c.name) for c in rig.cameras])


def best_time(fn, repeats: int) -> tuple[float, object]:
    best, out = np.inf, None
    for _ in range(repeats):
        t0 = time.perf_counter()
        out = fn()
        best = min(best, time.perf_counter() - t0)
    return best, out


def errors_mm(points: np.ndarray, truth: np.ndarray) -> np.ndarray:
    return np.linalg.norm(points.reshape(-1, 3) - truth.reshape(-1, 3), axis=1) * 1000


class Table:
    def __init__(self) -> None:
        print(f"{'scenario':<10} {'method':<35} {'points':>7} {'seconds':>8} {'points/s':>10} {'speedup':>8} "
              f"{'mpjpe mm':>9} {'p99 mm':>8} {'max mm':>8} {'NaN %':>6}  note")

    def row(self, scenario: str, method: str, n: int, seconds: float, err: np.ndarray, base_rate: float | None,
            note: str = "") -> float:
        rate = n / seconds
        speedup = f"{rate / base_rate:.0f}x" if base_rate else "-"
        ok = err[np.isfinite(err)]
        print(f"{scenario:<10} {method:<35} {n:>7} {seconds:>8.3f} {rate:>10.0f} {speedup:>8} {ok.mean():>9.3f} "
              f"{np.percentile(ok, 99):>8.3f} {ok.max():>8.1f} {100 * (1 - ok.size / err.size):>6.2f}  {note}",
              flush=True)
        return rate


def scenario(name: str, rig: CameraRig, group, kp: np.ndarray, joints: np.ndarray, table: Table,
             swapped: np.ndarray | None = None) -> dict:
    """aniposelib (unless ``group`` is None) and ours on the same detections; a table row each."""
    F, sub = len(joints), slice(0, ANIPOSE_FRAMES)
    n_sub = ANIPOSE_FRAMES * 42
    out: dict = {}
    base = None
    if group is not None:  # aniposelib on the first ANIPOSE_FRAMES frames: (C, N, 2), NaN where not detected
        p2d = np.where(kp[:, sub, :, 2:] > 0, kp[:, sub, :, :2], np.nan).reshape(len(rig), -1, 2).astype(np.float64)
        group.triangulate(p2d)  # warm-up: jax compiles for this shape
        t_anipose, p_anipose = best_time(lambda: group.triangulate(p2d), REPEATS)
        e_anipose = errors_mm(p_anipose, joints[sub])
        base = table.row(name, "aniposelib triangulate", n_sub, t_anipose, e_anipose, None,
                         f"first {ANIPOSE_FRAMES} frames")
        out.update(aniposelib_rate=base, aniposelib_mpjpe=float(np.nanmean(e_anipose)))
    triangulate(rig, kp[:, :6])  # warm-up
    for method in ("robust", "dlt", "ransac"):
        for fn, engine in ((triangulate, ""), (triangulate_reference, ", numpy")):
            seconds, result = best_time(lambda: fn(rig, kp, method), REPEATS)
            e = errors_mm(result.joints, joints)
            label = f"ours {method}" + (f" (= {ROBUST})" if method == "robust" else "") + engine
            note = f"error on the same {ANIPOSE_FRAMES} frames: {np.nanmean(e[:n_sub]):.3f} mm" if base else ""
            if swapped is not None:
                found = result.swapped
                note += (f"; swaps found {int((found & swapped).sum())}/{int(swapped.sum())}, "
                         f"wrong {int((found & ~swapped).sum())}")
            rate = table.row(name, label, F * 42, seconds, e, base, note.lstrip("; "))
            if not engine:
                out[method] = {"rate": rate, "mpjpe_sub": float(np.nanmean(e[:n_sub])), "mpjpe": float(np.nanmean(e))}
    return out


def anipose_ransac(rig: CameraRig, kp: np.ndarray, joints: np.ndarray, table: Table) -> None:
    """aniposelib's triangulate_ransac against ours on RANSAC_CAMERAS cameras and RANSAC_POINTS points."""
    cams = np.linspace(0, len(rig) - 1, RANSAC_CAMERAS).round().astype(int)
    small = CameraRig([rig.cameras[i] for i in cams])
    frames = RANSAC_POINTS // 42
    sub = kp[cams, :frames]
    p2d = np.where(sub[..., 2:] > 0, sub[..., :2], np.nan).reshape(len(cams), -1, 2).astype(np.float64)
    group = anipose_group(small)
    group.triangulate_ransac(p2d[:, :1])  # warm-up (jax compiles per number of cameras)
    seconds, (points, *_) = best_time(lambda: group.triangulate_ransac(p2d), 1)
    name = f"{RANSAC_CAMERAS} cams"
    base = table.row(name, "aniposelib triangulate_ransac", frames * 42, seconds, errors_mm(points, joints[:frames]),
                     None, "outliers + swaps")
    for fn, engine in ((triangulate, ""), (triangulate_reference, ", numpy")):
        seconds, result = best_time(lambda: fn(small, sub), REPEATS)
        table.row(name, f"ours robust (= {ROBUST}){engine}", frames * 42, seconds,
                  errors_mm(result.joints, joints[:frames]), base, "outliers + swaps")


def main() -> None:
    t0 = time.perf_counter()
    rig, _ = make_rig(FULL, 0)
    joints = motion_joints()
    rng = np.random.default_rng(0)
    clean, _ = detections(rig, joints, rng)
    noisy, swapped = detections(rig, joints, rng, OUTLIERS, SWAPS)
    group = anipose_group(rig)
    first = time.perf_counter()
    triangulate(rig, clean[:, :6])
    first = time.perf_counter() - first
    print(f"{len(rig)} cameras {FULL.width}x{FULL.height}, {len(joints)} frames x 42 joints, {NOISE_PX:g} px noise; "
          f"outliers: {OUTLIERS:.0%} of detections anywhere in the image, {SWAPS:.0%} of views with the hands "
          f"exchanged ({int(swapped.sum())} views); data made in {time.perf_counter() - t0:.0f} s; ours' first call "
          f"{first:.1f} s (numba compiles the kernels, or loads them from its cache); {numba.get_num_threads()} "
          "numba threads", flush=True)
    table = Table()
    c = scenario("clean", rig, group, clean, joints, table)
    scenario("outliers", rig, group, noisy, joints, table, swapped)
    heavy, heavy_swapped = detections(rig, joints, rng, HEAVY_OUTLIERS, HEAVY_SWAPS)
    scenario("heavy", rig, None, heavy, joints, table, heavy_swapped)
    anipose_ransac(rig, noisy, joints, table)
    robust = c["robust"]
    print(f"triangulation cameras={len(rig)} points={len(joints) * 42} ours_pts_per_s={robust['rate']:.0f} "
          f"aniposelib_pts_per_s={c['aniposelib_rate']:.0f} speedup={robust['rate'] / c['aniposelib_rate']:.0f} "
          f"ours_mpjpe_mm={robust['mpjpe_sub']:.3f} aniposelib_mpjpe_mm={c['aniposelib_mpjpe']:.3f}")


if __name__ == "__main__":
    main()
