"""Camera odometry from predicted relative poses, and the metric scale of depth and odometry.

Self-supervised depth and pose share one unknown scale. :class:`ScaleEstimator` gives them a scale:
``relative`` (1, not metric), ``fixed`` (a calibrated factor) or ``kinematic`` (the ratio of the robot's
measured camera translation to the predicted translation over a sliding window of frame pairs).
"""

from __future__ import annotations

from collections import deque
from dataclasses import dataclass

import numpy as np

SCALE_MODES = ("relative", "fixed", "kinematic")


class PoseIntegrator:
    """Accumulates ``T_odom_cam`` (4, 4) from per-frame relative motion ``T_prev_cur``.

    ``T_prev_cur`` maps points of the current camera into the previous camera (the camera-to-world
    increment); its translation is in relative units and is multiplied by ``scale`` when integrated.
    """

    def __init__(self) -> None:
        self.T_odom_cam = np.eye(4)
        self.n_updates = 0

    def reset(self) -> None:
        self.T_odom_cam = np.eye(4)
        self.n_updates = 0

    def update(self, T_prev_cur: np.ndarray, scale: float = 1.0) -> np.ndarray:
        step = np.array(T_prev_cur, dtype=np.float64, copy=True)
        if step.shape != (4, 4) or not np.all(np.isfinite(step)):
            raise ValueError(f"relative pose must be a finite 4x4 matrix, got shape {step.shape}")
        step[:3, 3] *= scale
        self.T_odom_cam = self.T_odom_cam @ step
        self.n_updates += 1
        return self.T_odom_cam.copy()


@dataclass
class ScaleState:
    """What the current scale promises: ``scale`` multiplies relative depth/translation."""

    mode: str
    scale: float
    is_metric: bool
    n_pairs: int = 0


class ScaleEstimator:
    """Metric scale of relative depth and odometry.

    kinematic: push one (predicted relative translation, measured translation in metres) pair per frame
    pair; pairs whose measured motion is below ``min_motion_m`` carry no scale information and are skipped.
    The estimate is ``sum |t_measured| / sum |t_predicted|`` over the last ``window`` informative pairs,
    available after ``min_pairs`` of them (``is_metric`` is False before).
    """

    def __init__(
        self,
        mode: str = "relative",
        fixed_scale: float = 1.0,
        window: int = 30,
        min_pairs: int = 5,
        min_motion_m: float = 1e-4,
        metric_output: bool = False,
    ) -> None:
        if mode not in SCALE_MODES:
            raise ValueError(f"scale mode must be one of {SCALE_MODES}, got {mode!r}")
        if not (np.isfinite(fixed_scale) and fixed_scale > 0):
            raise ValueError(f"fixed scale must be a positive number, got {fixed_scale}")
        if window < 1 or min_pairs < 1 or min_pairs > window:
            raise ValueError(f"need 1 <= min_pairs <= window, got min_pairs={min_pairs}, window={window}")
        self.mode = mode
        #: the network outputs metres (a metric-depth checkpoint): ``relative`` then promises metres
        self.metric_output = bool(metric_output)
        self.fixed_scale = float(fixed_scale)
        self.min_pairs = min_pairs
        self.min_motion_m = min_motion_m
        self._pairs: deque[tuple[float, float]] = deque(maxlen=window)

    def reset(self) -> None:
        self._pairs.clear()

    def push(self, predicted_translation, measured_translation_m) -> bool:
        """Add one frame pair; returns True when the pair was informative and kept."""
        pred = float(np.linalg.norm(predicted_translation))
        meas = float(np.linalg.norm(measured_translation_m))
        if not (np.isfinite(pred) and np.isfinite(meas)) or meas < self.min_motion_m or pred <= 1e-12:
            return False
        self._pairs.append((pred, meas))
        return True

    def state(self) -> ScaleState:
        if self.mode == "relative":
            if self.metric_output:  # a metric-depth network: its depth is metres as it is
                return ScaleState("model", 1.0, True)
            return ScaleState("relative", 1.0, False)
        if self.mode == "fixed":
            return ScaleState("fixed", self.fixed_scale, True)
        n = len(self._pairs)
        if n < self.min_pairs:
            return ScaleState("kinematic", 1.0, False, n)
        pred = sum(p for p, _ in self._pairs)
        meas = sum(m for _, m in self._pairs)
        return ScaleState("kinematic", meas / pred, True, n)


def _gaussian_blur(x, sigma: float):
    """(1, 1, h, w) torch image blurred by a separable Gaussian of ``sigma`` pixels (reflect padding)."""
    import torch

    r = max(1, int(round(2.5 * sigma)))
    k = torch.exp(-0.5 * (torch.arange(-r, r + 1, dtype=torch.float32) / sigma) ** 2)
    k = k / k.sum()
    x = torch.nn.functional.pad(x, (r, r, r, r), mode="reflect")
    x = torch.nn.functional.conv2d(x, k.view(1, 1, 1, -1))
    return torch.nn.functional.conv2d(x, k.view(1, 1, -1, 1))


def scale_motion(T: np.ndarray, k: float) -> np.ndarray:
    """The rigid motion ``T`` (4, 4) scaled by ``k``: rotation angle and translation times ``k``."""
    import torch

    from endo_depth_model.geometry import axis_angle_to_matrix, matrix_to_axis_angle

    out = np.eye(4)
    aa = torch.as_tensor(matrix_to_axis_angle(np.asarray(T)[:3, :3]) * k, dtype=torch.float64)
    out[:3, :3] = axis_angle_to_matrix(aa[None])[0].numpy()
    out[:3, 3] = np.asarray(T)[:3, 3] * k
    return out


def _grey_warps(prev, cur, depth: np.ndarray, known: np.ndarray, K: np.ndarray, motions, blur: float):
    """What the photometric tests share: the current and previous frames in grey (blurred by ``blur``), and
    the previous frame warped through ``depth`` by each motion of ``motions`` (4, 4: current-camera points
    into the previous camera) with the mask of pixels that land inside the image in front of the camera.
    Returns ``(current, previous, [(warped, inside), ...])``, numpy (h, w)."""
    import torch

    from endo_depth_model import geometry

    h, w = depth.shape
    d = torch.from_numpy(np.where(known, depth, 1.0).astype(np.float32))[None, None]
    Kt = torch.as_tensor(K, dtype=torch.float32)
    grey = torch.tensor([0.299, 0.587, 0.114], dtype=torch.float32).view(1, 3, 1, 1)
    g_prev, g_cur = (prev.float() * grey).sum(1, keepdim=True), (cur.float() * grey).sum(1, keepdim=True)
    if blur > 0:  # sensor noise would otherwise dominate the errors where the motion is small
        g_prev, g_cur = _gaussian_blur(g_prev, blur), _gaussian_blur(g_cur, blur)
    points = geometry.backproject(d, Kt)
    warps = []
    for T in motions:
        pix, z = geometry.project(points, Kt, torch.as_tensor(T, dtype=torch.float32)[None])
        u, v = pix[0, :, 0].reshape(h, w).numpy(), pix[0, :, 1].reshape(h, w).numpy()
        inside = (u >= 0) & (u <= w - 1) & (v >= 0) & (v <= h - 1) & (z[0].reshape(h, w).numpy() > 0)
        warps.append((geometry.sample(g_prev, pix).reshape(h, w).numpy(), inside))
    return g_cur[0, 0].numpy(), g_prev[0, 0].numpy(), warps


def zero_motion_errors(
    prev,
    cur,
    depth: np.ndarray,
    K: np.ndarray,
    T_prev_cur: np.ndarray,
    scales: tuple[float, ...] = (1.0,),
    blur: float = 1.5,
) -> tuple[float, float]:
    """The zero-motion test's two photometric errors: the current frame against the previous one
    unmoved, and against the previous one warped by the predicted motion through the current depth.

    ``prev``, ``cur`` (1, 3, h, w) torch images in [0, 1]; ``depth`` (h, w) numpy, NaN where unknown
    (the scope's border), in the same relative unit as the translation of ``T_prev_cur`` (4, 4: current
    camera points into the previous camera); ``K`` (3, 3) at (h, w). Returns the medians of the absolute
    grey difference over the pixels that are known and stay inside the image under the motion, (unmoved,
    moved), or (nan, nan) when fewer than 5 % of the pixels qualify. With several ``scales`` the moved
    error is the least over the motion scaled by each (:func:`scale_motion`): a motion whose size is
    wrong (depth and translation do not share one unit) is not taken for no motion. The median ignores
    what moves on its own (instruments, pulled tissue) as long as it covers less than half of the view.
    """
    known = np.isfinite(depth) & (depth > 0)
    if known.mean() < 0.05:
        return float("nan"), float("nan")
    motions = [scale_motion(T_prev_cur, k) if k != 1.0 else T_prev_cur for k in scales]
    c, p, warps = _grey_warps(prev, cur, depth, known, K, motions, blur)
    warped, valid = [x for x, _ in warps], known.copy()
    for _, inside in warps:
        valid &= inside
    if valid.mean() < 0.05:
        return float("nan"), float("nan")
    moved = min(float(np.median(np.abs(c - x)[valid])) for x in warped)
    return float(np.median(np.abs(c - p)[valid])), moved


def photometric_scale(
    prev,
    cur,
    depth: np.ndarray,
    K: np.ndarray,
    T_measured: np.ndarray,
    candidates: np.ndarray | None = None,
    blur: float = 1.5,
    min_gain: float = 0.9,
) -> float:
    """The metric scale of a relative ``depth`` from one frame pair and the camera's *measured* motion.

    The previous frame is warped into the current one through ``s * depth`` and the measured rigid motion
    ``T_measured`` (4, 4, metres: current-camera points into the previous camera, e.g. the robot's
    kinematics); the scale ``s`` (metres per unit of ``depth``) whose warp best explains the current frame
    (least median absolute grey difference) is returned. Warping through ``s * depth`` with translation
    ``t`` equals warping through ``depth`` with ``t / s``, so only the translation is divided. The answer is
    tied to the depth itself, not to a pose network's translation length. ``prev``, ``cur`` (1, 3, h, w)
    torch images in [0, 1]; ``depth`` (h, w) NaN where unknown; ``K`` (3, 3) at (h, w). ``candidates``:
    the scales tried (default 41 log-spaced from 0.01 to 100). NaN when the pair carries no scale
    information: too few pixels, the best error not below ``min_gain`` x the lesser of the unmoved frame's
    and the largest candidate's (the measured rotation without translation: a translation too small to
    see), or the best scale at the end of the candidates."""
    cands = np.geomspace(0.01, 100.0, 41) if candidates is None else np.asarray(candidates, dtype=np.float64)
    known = np.isfinite(depth) & (depth > 0)
    if known.mean() < 0.05:
        return float("nan")
    motions = []
    for s in cands:
        T = np.array(T_measured, dtype=np.float64)
        T[:3, 3] = T[:3, 3] / s
        motions.append(T)
    c, p, warps = _grey_warps(prev, cur, depth, known, K, motions, blur)
    errors = []
    for warped, inside in warps:
        ok = known & inside
        errors.append(float(np.median(np.abs(c - warped)[ok])) if ok.mean() >= 0.05 else float("inf"))
    best = int(np.argmin(errors))
    still = float(np.median(np.abs(c - p)[known]))
    # the largest scale is the measured rotation with (almost) no translation: a pair whose translation
    # does not change the warp (too small, or along the view of a flat scene) says nothing about the scale
    if not np.isfinite(errors[best]) or best in (0, len(cands) - 1):
        return float("nan")
    if errors[best] > min_gain * min(still, errors[-1]):
        return float("nan")
    x = np.log(cands[best - 1 : best + 2])
    y = np.asarray(errors[best - 1 : best + 2])
    curvature = y[0] - 2 * y[1] + y[2]
    shift = 0.5 * (y[0] - y[2]) / curvature if curvature > 0 else 0.0  # parabola through the three
    return float(np.exp(x[1] + float(np.clip(shift, -0.5, 0.5)) * (x[2] - x[1])))


#: coarse-to-fine levels of :func:`refine_motion`: (fraction of the pose size, Gauss-Newton iterations)
REFINE_LEVELS = ((0.25, 4), (0.5, 3))


def refine_motion(
    prev,
    cur,
    depth: np.ndarray,
    K: np.ndarray,
    T_init: np.ndarray,
    levels: tuple[tuple[float, int], ...] = REFINE_LEVELS,
    blur: float = 1.5,
    huber: float = 1.345,
    max_rotation_deg: float = 30.0,
) -> np.ndarray:
    """The rigid step ``T_init`` (4, 4: current-camera points into the previous camera) refined by direct
    photometric alignment: the previous frame, warped through the current ``depth`` by the step, should
    match the current frame. Gauss-Newton on the grey images (blurred by ``blur``), coarse to fine over
    ``levels`` (fraction of the image size, iterations), with Huber weights whose scale follows the
    residuals' median absolute deviation, so what moves on its own (instruments, pulled tissue) weighs
    less. The translation comes out in the unit of ``depth``.

    ``prev``, ``cur`` (1, 3, h, w) images in [0, 1] (torch or numpy); ``depth`` (h, w), NaN where unknown;
    ``K`` (3, 3) at (h, w). Returns ``T_init`` unchanged when too few pixels are known, or when the
    solution is not finite or turns by more than ``max_rotation_deg`` (a diverged solve)."""
    import cv2

    from endo_depth_model.geometry import scale_intrinsics

    depth = np.asarray(depth, dtype=np.float32)
    h, w = depth.shape
    known = np.isfinite(depth) & (depth > 0)
    T0 = np.array(T_init, dtype=np.float64)
    if known.mean() < 0.05 or not np.all(np.isfinite(T0)):
        return T0
    unit = float(np.median(depth[known]))  # translation in scene units, so both halves are conditioned
    weights = np.array([0.299, 0.587, 0.114], np.float32)

    def grey(img) -> np.ndarray:
        arr = img.detach().cpu().numpy() if hasattr(img, "detach") else np.asarray(img)
        g = np.tensordot(weights, arr[0].astype(np.float32), axes=1)
        return cv2.GaussianBlur(g, (0, 0), blur) if blur > 0 else g

    g_prev, g_cur = grey(prev), grey(cur)
    filled = np.where(known, depth, 0.0).astype(np.float32)
    T = T0.copy()
    for fraction, iterations in levels:
        hh, ww = max(8, int(round(h * fraction))), max(8, int(round(w * fraction)))
        p = cv2.resize(g_prev, (ww, hh), interpolation=cv2.INTER_AREA)
        c = cv2.resize(g_cur, (ww, hh), interpolation=cv2.INTER_AREA)
        d = cv2.resize(filled, (ww, hh), interpolation=cv2.INTER_NEAREST)
        gx = cv2.Sobel(p, cv2.CV_32F, 1, 0, ksize=3) / 8.0
        gy = cv2.Sobel(p, cv2.CV_32F, 0, 1, ksize=3) / 8.0
        Kl = scale_intrinsics(K, ww / w, hh / h)
        fx, fy, cx, cy = Kl[0, 0], Kl[1, 1], Kl[0, 2], Kl[1, 2]
        m = d > 0
        vv, uu = np.nonzero(m)
        z0 = d[m].astype(np.float64)
        X = np.stack([(uu - cx) / fx * z0, (vv - cy) / fy * z0, z0], axis=1)
        target = c[m].astype(np.float64)
        for _ in range(iterations):
            q = X @ T[:3, :3].T + T[:3, 3]
            z = q[:, 2]
            ok = z > 1e-6 * unit
            zs = np.where(ok, z, 1.0)
            u, v = fx * q[:, 0] / zs + cx, fy * q[:, 1] / zs + cy
            ok &= (u >= 0) & (u <= ww - 1) & (v >= 0) & (v <= hh - 1)
            if ok.sum() < 50:
                break
            mu, mv = u[ok].astype(np.float32)[:, None], v[ok].astype(np.float32)[:, None]
            warped = cv2.remap(p, mu, mv, cv2.INTER_LINEAR).ravel()
            dx = cv2.remap(gx, mu, mv, cv2.INTER_LINEAR).ravel().astype(np.float64)
            dy = cv2.remap(gy, mu, mv, cv2.INTER_LINEAR).ravel().astype(np.float64)
            r = target[ok] - warped
            qk, zk = q[ok], z[ok]
            # residual r = I_cur - I_prev(pi(q)): dr/dq = -grad I_prev . dpi/dq
            a, b = -dx * fx / zk, -dy * fy / zk
            Jq = np.stack([a, b, -(a * qk[:, 0] + b * qk[:, 1]) / zk], axis=1)
            # left perturbation q' = q + w x q + unit * t: dr/dw = q x Jq, dr/dt = unit * Jq
            J = np.concatenate([np.cross(qk, Jq), Jq * unit], axis=1)
            absr = np.abs(r)
            k = huber * (1.4826 * float(np.median(absr)) + 1e-6)
            wt = np.minimum(1.0, k / np.maximum(absr, 1e-12))
            H = J.T @ (J * wt[:, None])
            H += (1e-6 * np.trace(H) / 6 + 1e-12) * np.eye(6)
            delta = -np.linalg.solve(H, J.T @ (wt * r))
            dT = np.eye(4)
            dT[:3, :3] = cv2.Rodrigues(delta[:3].reshape(3, 1))[0]
            dT[:3, 3] = delta[3:] * unit
            T = dT @ T
            if np.abs(delta).max() < 1e-6:
                break
    angle = np.degrees(np.arccos(np.clip((np.trace(T[:3, :3]) - 1) / 2, -1.0, 1.0)))
    if not np.all(np.isfinite(T)) or angle > max_rotation_deg:
        return T0
    return T
