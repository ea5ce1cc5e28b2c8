"""Synthetic laparoscopy: an abdominal cavity with organs, rigid instruments, smoke and a scope border.

The tissue is a height field seen from the scope: in the world frame (millimetres inside, metres out,
REP 103 optical axes, +z away from the scope's resting position) the surface is ``z = s(x, y)``, the
union (pointwise nearest) of organ-shaped caps on a peritoneal back wall:

* a back wall at ``wall_mm`` with low-frequency undulation and folds;
* ellipsoidal caps (liver-like lobes, gallbladder, fat pads) of random size, height and albedo;
* bowel loops: tubes of circular section along random smooth curves.

Where a cap is steep and seen obliquely its silhouette hides what lies behind it, so organs occlude
each other with true depth discontinuities. ``s`` and the albedo are tabulated once per sequence on a
grid finer than a pixel's footprint; each pixel's ray ``o + t * R K^-1 [u v 1]`` (``t`` = optical-axis
depth) is marched on a geometric grid until ``z - s(x, y)`` changes sign and then bisected, so the
ground-truth depth is the z of the rendered surface point to well below a pixel's footprint.

Instruments are exact: each is a finite cylinder (shaft) from a trocar outside the view to a moving tip,
with two jaws (thinner cylinders splayed by a varying opening angle). Ray-cylinder intersections are
solved in closed form, and the nearest of tissue, shafts and jaws wins; ``Frame``-level instrument masks
come from the same test.

Shading: a point light at the scope tip (falloff exponent, power and spot size randomised), Lambert +
Blinn-Phong (wet tissue and metal specular), auto-exposure, blood patches and vessels in the albedo, smoke as
depth-dependent haze with drifting density, vignetting, the scope's field-of-view border (circle or
octagon, black, NaN depth), sensor noise, blur, exposure and JPEG artefacts. Everything is a function of
``LaparoscopyConfig.seed``.
"""

from __future__ import annotations

import math
from collections.abc import Iterator
from dataclasses import dataclass, field, replace

import numpy as np

from .sequence import Frame, Sequence, intrinsics_from_fov

__all__ = [
    "LaparoscopyConfig",
    "LaparoscopySimulator",
    "ORGAN_PALETTES",
    "UNSEEN_PALETTES",
    "fov_border_mask",
    "LAPAROSCOPY_PRESETS",
    "laparoscopy_preset",
]

#: the laparoscopy presets: ``lap`` (training and held-out evaluation, by seed), ``lap_unseen`` (held-out
#: only), ``lap_near`` (training only)
LAPAROSCOPY_PRESETS = ("lap", "lap_unseen", "lap_near")

# Linear-RGB albedos (base, secondary) of tissue kinds. Training draws from ORGAN_PALETTES; the
# held-out "unseen" preset draws only from UNSEEN_PALETTES, never used in training.
ORGAN_PALETTES = {
    "liver": ((0.42, 0.12, 0.09), (0.30, 0.07, 0.06)),
    "fat": ((0.88, 0.72, 0.42), (0.80, 0.58, 0.32)),
    "bowel": ((0.86, 0.52, 0.46), (0.74, 0.36, 0.34)),
    "peritoneum": ((0.82, 0.60, 0.56), (0.70, 0.42, 0.40)),
    "gallbladder": ((0.45, 0.52, 0.30), (0.32, 0.40, 0.22)),
    "muscle": ((0.70, 0.22, 0.20), (0.55, 0.14, 0.14)),
}
UNSEEN_PALETTES = {
    "pale_fascia": ((0.78, 0.78, 0.70), (0.62, 0.60, 0.55)),
    "purple_spleen": ((0.42, 0.18, 0.32), (0.30, 0.12, 0.24)),
    "orange_fat": ((0.95, 0.55, 0.20), (0.85, 0.42, 0.12)),
}


@dataclass
class LaparoscopyConfig:
    """One laparoscopic sequence. Lengths in millimetres; ``fov_deg`` horizontal field of view."""

    seed: int = 0
    height: int = 256
    width: int = 320
    n_frames: int = 48
    fps: float = 25.0
    fov_deg: float = 75.0
    wall_mm: float = 110.0
    organs: int = 5
    #: large organs (lobes 35-80 mm across, rising 55-80 % of the way from the back wall) placed where the
    #: scope's resting optical axis meets the wall, so they fill much of the view at close range; 0 in the
    #: ``lap`` and ``lap_unseen`` presets, 1-2 in the training-only ``lap_near``
    near_organs: int = 0
    bowel_loops: int = 2
    instruments: int = 2
    palettes: tuple[str, ...] = tuple(ORGAN_PALETTES)
    light_power: float = 1.0
    falloff: float = 2.0
    spot_deg: float = 45.0
    specular: float = 0.5
    shininess: float = 50.0
    smoke: float = 0.15
    blood: float = 0.1
    border: str = "circle"  # none | circle | octagon
    border_radius: float = 0.95  # fraction of the half diagonal (circle) / half width (octagon)
    vignetting: float = 0.35
    noise_std: float = 0.01
    blur_px: float = 0.0
    jpeg_quality: int = 0  # 0: no compression
    exposure: float = 1.0
    white_balance: tuple[float, float, float] = (1.0, 1.0, 1.0)
    motion: str = "handheld"  # handheld | ecm
    tilt_deg: float = 20.0  #: angle between the scope's axis and the back wall's normal (oblique view)
    near_mm: float = 2.0
    grid_mm: float = 0.25
    march_samples: int = 96
    extra: dict = field(default_factory=dict)

    def validate(self) -> None:
        from .simulator import SimulatorConfigError

        checks = [
            (self.height >= 8 and self.width >= 8, f"image size {self.height}x{self.width} must be >= 8x8"),
            (self.n_frames >= 1, f"n_frames={self.n_frames} must be >= 1"),
            (20.0 <= self.fov_deg <= 130.0, f"fov_deg={self.fov_deg} must be in [20, 130]"),
            (
                self.border in ("none", "circle", "octagon"),
                f"border={self.border!r}: none, circle or octagon",
            ),
            (self.motion in ("handheld", "ecm"), f"motion={self.motion!r}: handheld or ecm"),
            (40.0 <= self.wall_mm <= 300.0, f"wall_mm={self.wall_mm} must be in [40, 300]"),
            (0 <= self.instruments <= 3, f"instruments={self.instruments} must be in [0, 3]"),
            (0 <= self.near_organs <= 3, f"near_organs={self.near_organs} must be in [0, 3]"),
            (0 <= self.tilt_deg <= 50, f"tilt_deg={self.tilt_deg} must be in [0, 50]"),
            (len(self.palettes) > 0, "palettes must name at least one tissue kind"),
        ]
        known = {**ORGAN_PALETTES, **UNSEEN_PALETTES}
        checks += [(p in known, f"unknown palette {p!r}; known: {sorted(known)}") for p in self.palettes]
        for ok, message in checks:
            if not ok:
                raise SimulatorConfigError(message)


def laparoscopy_preset(name: str, seed: int, **overrides) -> LaparoscopyConfig:
    """Randomised laparoscopic scene for ``seed``.

    ``lap``: domain-randomised training/evaluation scenes (palettes of :data:`ORGAN_PALETTES`);
    ``lap_unseen``: held-out textures and lighting (palettes of :data:`UNSEEN_PALETTES`, a cool white
    balance, a narrow spot and strong falloff) that training never draws;
    ``lap_near`` (training only): ``lap``'s scene for the same seed plus one or two large organs in the
    middle of the view at close range (``near_organs``), the kind of view the held-out ``lap`` sequences
    get most wrong.
    """
    rng = np.random.default_rng([seed, 7919])
    unseen = name == "lap_unseen"
    if name not in LAPAROSCOPY_PRESETS:
        from .simulator import SimulatorConfigError

        raise SimulatorConfigError(
            f"unknown laparoscopy preset {name!r}; known: {', '.join(LAPAROSCOPY_PRESETS)}"
        )
    cfg = LaparoscopyConfig(
        seed=seed,
        fov_deg=float(rng.uniform(60, 90)),
        wall_mm=float(rng.uniform(70, 150)),
        organs=int(rng.integers(4, 10)),
        bowel_loops=int(rng.integers(0, 4)),
        instruments=int(rng.choice([0, 1, 1, 2, 2, 2, 3])),
        palettes=tuple(UNSEEN_PALETTES) if unseen else tuple(ORGAN_PALETTES),
        light_power=float(rng.uniform(0.6, 1.6)),
        falloff=float(rng.uniform(2.3, 2.6) if unseen else rng.uniform(1.6, 2.2)),
        spot_deg=float(rng.uniform(22, 28) if unseen else rng.uniform(35, 80)),
        specular=float(rng.uniform(0.2, 0.9)),
        shininess=float(rng.uniform(20, 90)),
        smoke=float(rng.choice([0.0, 0.0, rng.uniform(0.05, 0.5)])),
        blood=float(rng.uniform(0.0, 0.3)),
        border=str(rng.choice(["none", "circle", "circle", "octagon"])),
        border_radius=float(rng.uniform(0.85, 1.05)),
        vignetting=float(rng.uniform(0.1, 0.5)),
        noise_std=float(rng.uniform(0.003, 0.02)),
        blur_px=float(rng.choice([0.0, rng.uniform(0.3, 1.2)])),
        jpeg_quality=int(rng.choice([0, 0, rng.integers(40, 95)])),
        exposure=float(rng.uniform(0.8, 1.3)),
        white_balance=(0.85, 0.95, 1.15)
        if unseen
        else tuple(float(v) for v in rng.uniform([0.95, 0.95, 0.85], [1.05, 1.05, 1.02])),
        motion=str(rng.choice(["handheld", "ecm"])),
        tilt_deg=float(rng.uniform(10, 45)),
    )
    if name == "lap_near":
        cfg = replace(cfg, near_organs=int(np.random.default_rng([seed, 4243]).integers(1, 3)))
    cfg = replace(cfg, **overrides)
    cfg.validate()
    return cfg


# ---- procedural fields ---------------------------------------------------------------------------


def _value_noise(shape: tuple[int, int], cell: float, rng: np.random.Generator) -> np.ndarray:
    """Smooth noise in [-1, 1] with features about ``cell`` grid cells wide (bicubic upsampling)."""
    import cv2

    gh, gw = max(2, int(shape[0] / cell) + 3), max(2, int(shape[1] / cell) + 3)
    coarse = rng.uniform(-1, 1, (gh, gw)).astype(np.float32)
    up = cv2.resize(coarse, (int(gw * cell), int(gh * cell)), interpolation=cv2.INTER_CUBIC)
    return np.clip(up[: shape[0], : shape[1]], -1.2, 1.2)


def _fbm(shape, cell, rng, octaves=4) -> np.ndarray:
    out = np.zeros(shape, np.float32)
    amp, total = 1.0, 0.0
    for _ in range(octaves):
        out += amp * _value_noise(shape, max(cell, 1.5), rng)
        total += amp
        amp *= 0.5
        cell /= 2.0
    return out / total


def fov_border_mask(height: int, width: int, kind: str, radius: float) -> np.ndarray:
    """(H, W) bool, True inside the scope's field of view; ``radius`` as in :class:`LaparoscopyConfig`."""
    if kind == "none":
        return np.ones((height, width), bool)
    v, u = np.mgrid[0:height, 0:width].astype(np.float64)
    x, y = u - (width - 1) / 2.0, v - (height - 1) / 2.0
    if kind == "circle":
        r = radius * math.hypot(width / 2.0, height / 2.0)
        return x * x + y * y <= r * r
    # regular octagon: |x|, |y| and the two diagonals bounded by the same apothem
    a = radius * width / 2.0
    d = (np.abs(x) + np.abs(y)) / math.sqrt(2.0)
    return (np.abs(x) <= a) & (np.abs(y) <= a) & (d <= a)


# ---- scene ---------------------------------------------------------------------------------------


def _lobe(xx, yy, centre, axes, rot: float, height: float, power: float) -> np.ndarray:
    """An organ-shaped cap over the grid (``xx``, ``yy``) mm: elliptical footprint with semi-axes ``axes``
    turned by ``rot``, rising ``height`` mm at ``centre`` with profile ``sqrt(1 - r^2) ** power``; -inf
    outside the footprint (no cap there)."""
    (cx, cy), (a, b) = centre, axes
    xr = (xx - cx) * math.cos(rot) + (yy - cy) * math.sin(rot)
    yr = -(xx - cx) * math.sin(rot) + (yy - cy) * math.cos(rot)
    q = 1.0 - (xr / a) ** 2 - (yr / b) ** 2
    return np.where(q > 0, height * np.sqrt(np.clip(q, 0, 1)) ** power, -np.inf)


class _Surface:
    """The tissue height field ``s(x, y)`` (mm) with albedo, tabulated on a regular grid."""

    def __init__(
        self,
        cfg: LaparoscopyConfig,
        extent_mm: float,
        rng: np.random.Generator,
        aim_xy: tuple[float, float] = (0.0, 0.0),
    ):
        self.res = cfg.grid_mm
        n = int(round(2 * extent_mm / self.res)) + 1
        self.x0 = -extent_mm
        self.n = n
        coords = self.x0 + self.res * np.arange(n, dtype=np.float32)
        xx, yy = np.meshgrid(coords, coords)  # [row=y, col=x]
        cells_per_mm = 1.0 / self.res
        # back wall: undulation and shallow folds
        s = cfg.wall_mm + 12.0 * _fbm((n, n), 60 * cells_per_mm, rng, 3)
        s -= 5.0 * np.abs(_value_noise((n, n), 25 * cells_per_mm, rng))
        kind = np.zeros((n, n), np.int16)
        palettes = list(cfg.palettes)
        kinds = [str(rng.choice(palettes))]  # kind 0: the wall
        reach = 0.7 * extent_mm

        def add_organ(r: np.random.Generator, centre, axes_mm, rise, power) -> None:
            """An organ cap (semi-axes in ``axes_mm``, rising ``rise`` x the wall's depth, profile power in
            ``power``; all drawn from ``r``) where it is nearer than what is there, with its palette."""
            nonlocal s
            a, b = r.uniform(*axes_mm, 2)
            rot = r.uniform(0, np.pi)
            h = r.uniform(*rise) * cfg.wall_mm
            top = cfg.wall_mm - _lobe(xx, yy, centre, (a, b), rot, h, r.uniform(*power))
            top += 2.0 * _value_noise((n, n), 12 * cells_per_mm, r)
            closer = top < s
            s = np.where(closer, top, s)
            kinds.append(str(r.choice(palettes)))
            kind[closer] = len(kinds) - 1

        for _ in range(cfg.organs):
            add_organ(rng, rng.uniform(-reach, reach, 2), (20, 70), (0.3, 0.7), (0.5, 1.0))
        for _ in range(cfg.bowel_loops):
            # a tube of circular section radius rb lying on a smooth random curve
            rb = rng.uniform(8, 16)
            t = np.linspace(0, 1, 200)
            p0 = rng.uniform(-reach, reach, 2)
            ang = rng.uniform(0, 2 * np.pi) + np.cumsum(rng.normal(0, 0.08, 200))
            step = rng.uniform(0.6, 1.2) * extent_mm / 200
            curve = p0 + np.cumsum(np.stack([np.cos(ang), np.sin(ang)], 1) * step, 0)
            base_z = cfg.wall_mm - rng.uniform(0.1, 0.35) * cfg.wall_mm + 4 * np.sin(2 * np.pi * 3 * t)
            # distance to the curve and the curve's height there: one distance transform with labels
            import cv2

            cols = np.clip(np.round((curve[:, 0] - self.x0) / self.res), 0, n - 1).astype(int)
            rows = np.clip(np.round((curve[:, 1] - self.x0) / self.res), 0, n - 1).astype(int)
            seeds = np.ones((n, n), np.uint8)
            seeds[rows, cols] = 0
            dist_px, labels = cv2.distanceTransformWithLabels(
                seeds, cv2.DIST_L2, cv2.DIST_MASK_PRECISE, labelType=cv2.DIST_LABEL_PIXEL
            )
            label_z = np.zeros(labels.max() + 1, np.float32)
            label_z[labels[rows, cols]] = base_z
            zc = label_z[labels]
            dist = dist_px * self.res
            inside = dist < rb
            top = np.where(inside, zc - np.sqrt(np.clip(rb * rb - dist * dist, 0, None)), np.inf)
            closer = top < s
            s = np.where(closer, top, s)
            kinds.append(str(rng.choice([p for p in palettes if p != "liver"] or palettes)))
            kind[closer] = len(kinds) - 1
        # near organs: drawn from their own stream so that every other part of a seed's scene stays lap's
        near_rng = np.random.default_rng([cfg.seed, 5531])
        for _ in range(cfg.near_organs):
            add_organ(
                near_rng, np.asarray(aim_xy) + near_rng.uniform(-25, 25, 2), (35, 80), (0.55, 0.8), (0.4, 0.9)
            )
        self.s = s.astype(np.float32)
        gy, gx = np.gradient(self.s, self.res)
        self.gx, self.gy = gx.astype(np.float32), gy.astype(np.float32)
        # albedo: per-kind palette, mottle, vessels, blood patches
        base = np.zeros((n, n, 3), np.float32)
        second = np.zeros((n, n, 3), np.float32)
        known = {**ORGAN_PALETTES, **UNSEEN_PALETTES}
        for k, name in enumerate(kinds):
            jitter = rng.normal(1.0, 0.06, 3)
            m = kind == k
            base[m] = np.clip(np.asarray(known[name][0]) * jitter, 0, 1)
            second[m] = np.clip(np.asarray(known[name][1]) * jitter, 0, 1)
        mottle = 0.5 + 0.5 * _fbm((n, n), 8 * cells_per_mm, rng, 3)
        alb = base * (1 - mottle[..., None]) + second * mottle[..., None]
        ridge = np.abs(_fbm((n, n), 20 * cells_per_mm, rng, 3))
        vessels = np.exp(-((ridge / 0.03) ** 2))[..., None]
        alb = alb * (1 - 0.45 * vessels) + np.array([0.35, 0.05, 0.08], np.float32) * 0.45 * vessels
        grain = 1.0 + 0.06 * _value_noise((n, n), 1.5, rng)
        alb *= grain[..., None]
        if cfg.blood > 0:
            patches = _fbm((n, n), 15 * cells_per_mm, rng, 2)
            blood = np.clip((patches - (1 - 2 * cfg.blood)) * 4, 0, 1)[..., None]
            alb = alb * (1 - blood) + np.array([0.25, 0.02, 0.03], np.float32) * blood
        self.albedo = np.clip(alb, 0, 1).astype(np.float32)

    def _lookup(self, table: np.ndarray, x: np.ndarray, y: np.ndarray) -> np.ndarray:
        """Bilinear lookup at world (x, y) mm; points outside the grid clamp to its edge."""
        fx = np.clip(np.nan_to_num((x - self.x0) / self.res), 0, self.n - 1.001)
        fy = np.clip(np.nan_to_num((y - self.x0) / self.res), 0, self.n - 1.001)
        ix, iy = fx.astype(np.int32), fy.astype(np.int32)
        ax, ay = fx - ix, fy - iy
        if table.ndim == 3:
            ax, ay = ax[..., None], ay[..., None]
        t00, t01 = table[iy, ix], table[iy, ix + 1]
        t10, t11 = table[iy + 1, ix], table[iy + 1, ix + 1]
        return (t00 * (1 - ax) + t01 * ax) * (1 - ay) + (t10 * (1 - ax) + t11 * ax) * ay

    def height(self, x, y):
        return self._lookup(self.s, x, y)


@dataclass
class _Instrument:
    trocar: np.ndarray  # (3,) mm
    tip0: np.ndarray
    amp: np.ndarray
    freq: np.ndarray
    phase: np.ndarray
    radius: float
    jaw_len: float
    jaw_open_hz: float
    shaft_rgb: np.ndarray
    jaw_rgb: np.ndarray

    def tip(self, time_s: float) -> np.ndarray:
        return self.tip0 + self.amp * np.sin(2 * np.pi * self.freq * time_s + self.phase)

    def segments(self, time_s: float) -> list[tuple[np.ndarray, np.ndarray, float, np.ndarray]]:
        """[(start, end, radius, rgb)]: the shaft and two jaws at time ``time_s``."""
        tip = self.tip(time_s)
        axis = tip - self.trocar
        axis /= np.linalg.norm(axis)
        ortho = np.cross(axis, [0.0, 1.0, 0.3])
        ortho /= np.linalg.norm(ortho)
        opening = math.radians(5 + 20 * (0.5 + 0.5 * math.sin(2 * math.pi * self.jaw_open_hz * time_s)))
        out = [(self.trocar, tip, self.radius, self.shaft_rgb)]
        for sign in (1.0, -1.0):
            d = math.cos(opening) * axis + sign * math.sin(opening) * ortho
            out.append((tip, tip + self.jaw_len * d, 0.45 * self.radius, self.jaw_rgb))
        return out


def _ray_cylinder(o: np.ndarray, d: np.ndarray, a: np.ndarray, b: np.ndarray, r: float):
    """Depth parameter ``t`` of the first hit of rays ``o + t d`` (d: (3, N)) with the finite cylinder
    from ``a`` to ``b`` of radius ``r`` (side wall and flat end caps); NaN on a miss. Returns (t, normal).
    """
    axis = b - a
    length = float(np.linalg.norm(axis))
    w = axis / length
    oa = o - a
    d_par = w @ d  # (N,)
    o_par = float(w @ oa)
    d_perp = d - np.outer(w, d_par)
    o_perp = oa - o_par * w
    qa = (d_perp * d_perp).sum(0)
    qb = 2.0 * (d_perp * o_perp[:, None]).sum(0)
    qc = float(o_perp @ o_perp) - r * r
    disc = qb * qb - 4 * qa * qc
    t_side = np.full(d.shape[1], np.nan)
    ok = (disc >= 0) & (qa > 1e-12)
    sq = np.sqrt(np.where(ok, disc, 0.0))
    t1 = (-qb - sq) / np.where(ok, 2 * qa, 1.0)
    h1 = o_par + t1 * d_par
    side = ok & (t1 > 0) & (h1 >= 0) & (h1 <= length)
    t_side[side] = t1[side]
    # end caps (only the one facing the ray matters; test both)
    t_best = t_side.copy()
    normal_kind = np.where(side, 0, -1)
    for k, plane_h in enumerate((0.0, length)):
        with np.errstate(divide="ignore", invalid="ignore"):
            tc = (plane_h - o_par) / d_par
        p_perp = o_perp[:, None] + tc * d_perp
        hit = np.isfinite(tc) & (tc > 0) & ((p_perp * p_perp).sum(0) <= r * r)
        better = hit & ~(tc >= t_best)
        t_best = np.where(better, tc, t_best)
        normal_kind = np.where(better, k + 1, normal_kind)
    # normals
    p = o[:, None] + t_best * d
    h = w @ (p - a[:, None])
    radial = (p - a[:, None]) - np.outer(w, h)
    normal = radial / np.maximum(np.linalg.norm(radial, axis=0), 1e-9)
    normal = np.where(normal_kind == 1, -w[:, None], normal)
    normal = np.where(normal_kind == 2, w[:, None], normal)
    return t_best, normal


def _rotation(yaw: float, pitch: float, roll: float) -> np.ndarray:
    cy, sy, cp, sp, cr, sr = (
        math.cos(yaw),
        math.sin(yaw),
        math.cos(pitch),
        math.sin(pitch),
        math.cos(roll),
        math.sin(roll),
    )
    ry = np.array([[cy, 0, sy], [0, 1, 0], [-sy, 0, cy]])
    rx = np.array([[1, 0, 0], [0, cp, -sp], [0, sp, cp]])
    rz = np.array([[cr, -sr, 0], [sr, cr, 0], [0, 0, 1]])
    return ry @ rx @ rz


# ---- renderer ------------------------------------------------------------------------------------


class LaparoscopySimulator:
    """Renders frames of one laparoscopic sequence; deterministic for ``config.seed``.

    ``render(k)`` -> :class:`Frame` (rgb uint8, depth float32 metres with NaN outside the scope's field of
    view, T_world_cam metres, K). ``instrument_mask(k)`` / ``fov_mask`` give the masks of the same frame.
    """

    def __init__(self, config: LaparoscopyConfig):
        config.validate()
        self.config = cfg = config
        rng = np.random.default_rng([cfg.seed, 104729])
        # the height field must reach as far as the most oblique ray of the tilted, moving scope
        half_diag = math.degrees(math.atan(math.tan(math.radians(cfg.fov_deg / 2)) * 1.25))
        reach = math.radians(min(cfg.tilt_deg + half_diag + 8.0, 72.0))
        extent = 1.1 * cfg.wall_mm * math.tan(reach) + 40.0
        # lap_near aims its near organs where the scope's resting optical axis meets the back wall: the
        # azimuth of the scope's tilt is then drawn here, from a stream of its own, and not in _trajectory
        self._azimuth = None
        aim = (0.0, 0.0)
        if cfg.near_organs:
            self._azimuth = float(np.random.default_rng([cfg.seed, 6007]).uniform(0, 2 * np.pi))
            axis = self._base_rotation(self._azimuth) @ np.array([0.0, 0.0, 1.0])
            aim = (cfg.wall_mm * axis[0] / axis[2], cfg.wall_mm * axis[1] / axis[2])
        grid = replace(cfg, grid_mm=max(cfg.grid_mm, 2 * extent / 1600))
        self.surface = _Surface(grid, extent, rng, aim)
        self.poses_mm = self._trajectory(rng)
        self.instruments = [self._instrument(rng, i) for i in range(cfg.instruments)]
        h, w = cfg.height, cfg.width
        self.K = intrinsics_from_fov(w, h, cfg.fov_deg)
        v, u = np.meshgrid(np.arange(h, dtype=np.float64), np.arange(w, dtype=np.float64), indexing="ij")
        pix = np.stack([u.ravel(), v.ravel(), np.ones(h * w)], axis=0)
        self._rays_cam = np.linalg.inv(self.K) @ pix
        r2 = ((u - self.K[0, 2]) ** 2 + (v - self.K[1, 2]) ** 2) / (math.hypot(w / 2, h / 2) ** 2)
        self._vignette = (1.0 - cfg.vignetting * r2).astype(np.float32)
        self.fov_mask = fov_border_mask(h, w, cfg.border, cfg.border_radius)
        self._smoke_rng_seed = int(rng.integers(1 << 31))
        self._post_seed = int(rng.integers(1 << 31))

    # -- scene set-up --
    def _base_rotation(self, azimuth: float) -> np.ndarray:
        """The scope's resting orientation: tilted by ``tilt_deg`` towards ``azimuth``."""
        tilt = math.radians(self.config.tilt_deg)
        return _rotation(tilt * math.cos(azimuth), tilt * math.sin(azimuth), 0.0)

    def _trajectory(self, rng: np.random.Generator) -> np.ndarray:
        """Hand-held: slow pan and zoom with static spells; ECM: piecewise smooth moves with holds."""
        cfg = self.config
        n = cfg.n_frames
        t = np.arange(n) / cfg.fps
        clearance = float(self.surface.s.min())
        z_max = max(0.0, min(0.35 * cfg.wall_mm, clearance - 25.0))
        keys = max(2, int(n / cfg.fps / 1.5) + 2)
        kt = np.linspace(0, n / cfg.fps, keys)
        hold = rng.random(keys) < (0.3 if cfg.motion == "handheld" else 0.45)
        vals = rng.normal(0, 1, (keys, 6)) * [8, 8, 0.35 * z_max + 1e-6, 0.06, 0.06, 0.08]
        for k in range(1, keys):
            if hold[k]:
                vals[k] = vals[k - 1]
        if cfg.motion == "ecm":
            vals[:, 5] = vals[0, 5]  # an ECM keeps its roll
        if cfg.motion == "handheld":
            smooth = np.stack([np.interp(t, kt, vals[:, j]) for j in range(6)], 1)
            tremor = rng.normal(0, 1, (n, 6)) * [0.15, 0.15, 0.15, 0.002, 0.002, 0.002]
            smooth += np.cumsum(tremor, 0) * 0.3
        else:
            # cosine easing between keys: stops at every key
            idx = np.clip(np.searchsorted(kt, t, side="right") - 1, 0, keys - 2)
            f = (t - kt[idx]) / (kt[idx + 1] - kt[idx])
            e = 0.5 - 0.5 * np.cos(np.pi * f)
            smooth = vals[idx] * (1 - e[:, None]) + vals[idx + 1] * e[:, None]
        azimuth = rng.uniform(0, 2 * np.pi)
        if self._azimuth is not None:
            azimuth = self._azimuth
        tilt = math.radians(cfg.tilt_deg)
        base_pitch, base_yaw = tilt * math.sin(azimuth), tilt * math.cos(azimuth)
        poses = np.zeros((n, 4, 4))
        for k in range(n):
            x, y, z, yaw, pitch, roll = smooth[k]
            poses[k] = np.eye(4)
            poses[k, :3, :3] = _rotation(base_yaw + yaw, base_pitch + pitch, roll)
            poses[k, :3, 3] = (x, y, float(np.clip(z, -0.2 * cfg.wall_mm, z_max)))
        return poses

    def _instrument(self, rng: np.random.Generator, i: int) -> _Instrument:
        """A tool whose tip is inside the first frame's view, in front of the tissue, and whose trocar is
        outside the view beside the scope."""
        cfg = self.config
        pose = self.poses_mm[0]
        tan_half = math.tan(math.radians(cfg.fov_deg / 2))
        tz = float("nan")
        for _ in range(50):
            x, y = rng.uniform(-0.6, 0.6, 2) * tan_half
            ray = pose[:3, :3] @ np.array([x, y, 1.0])
            t_s = float(self._trace_tissue(pose[:3, 3], ray[:, None])[0])
            if np.isfinite(t_s) and t_s > 25:
                tz = t_s * rng.uniform(0.35, 0.85)
                break
        if not np.isfinite(tz):
            x, y, tz = 0.0, 0.0, 0.3 * cfg.wall_mm
            ray = pose[:3, :3] @ np.array([x, y, 1.0])
        tip0 = pose[:3, 3] + tz * ray
        side = rng.uniform(0, 2 * np.pi)
        spread = tz * tan_half * rng.uniform(1.3, 2.2)
        trocar_cam = np.array([spread * math.cos(side), spread * math.sin(side), -rng.uniform(10, 40)])
        trocar = pose[:3, :3] @ trocar_cam + pose[:3, 3]
        metal = rng.random() < 0.5
        shaft = (
            np.array([0.55, 0.56, 0.58]) * rng.uniform(0.8, 1.2)
            if metal
            else np.full(3, rng.uniform(0.03, 0.1))
        )
        jaw = np.array([0.6, 0.6, 0.62]) * rng.uniform(0.8, 1.2)
        return _Instrument(
            trocar=trocar,
            tip0=tip0,
            amp=rng.uniform([2, 2, 2], [10, 10, 8]) * (0.0 if rng.random() < 0.2 else 1.0),
            freq=rng.uniform(0.05, 0.4, 3),
            phase=rng.uniform(0, 2 * np.pi, 3),
            radius=float(rng.choice([2.5, 2.5, 4.0, 5.0])),
            jaw_len=float(rng.uniform(8, 16)),
            jaw_open_hz=float(rng.uniform(0.1, 0.6)),
            shaft_rgb=np.clip(shaft, 0, 1),
            jaw_rgb=np.clip(jaw, 0, 1),
        )

    def __len__(self) -> int:
        return self.config.n_frames

    @property
    def poses(self) -> np.ndarray:
        out = self.poses_mm.copy()
        out[:, :3, 3] /= 1000.0
        return out

    # -- rendering --
    def _trace_tissue(self, o: np.ndarray, d: np.ndarray) -> np.ndarray:
        cfg = self.config
        n = d.shape[1]
        far = 6.0 * cfg.wall_mm
        ratio = (far / cfg.near_mm) ** (1.0 / (cfg.march_samples - 1))
        t = np.full(n, cfg.near_mm)
        prev = np.zeros(n)
        lo, hi = np.full(n, np.nan), np.full(n, np.nan)
        active = np.arange(n)
        for _ in range(cfg.march_samples):
            ta = t[active]
            da = d[:, active]
            p = o[:, None] + ta * da
            f = p[2] - self.surface.height(p[0], p[1])
            crossed = f >= 0
            idx = active[crossed]
            lo[idx], hi[idx] = prev[idx], t[idx]
            keep = ~crossed & (ta < far)
            active = active[keep]
            if active.size == 0:
                break
            prev[active] = t[active]
            # step: geometric, but never more than 1/3 of the current height gap along z
            gap = np.maximum(-f[keep], 0.05) / np.maximum(np.abs(da[2, keep]), 1e-3)
            t[active] = np.minimum(t[active] * ratio, t[active] + np.maximum(0.5 * gap, 0.01 * t[active]))
        hit = np.isfinite(lo)
        lo_h, hi_h = lo[hit], hi[hit]
        dh = d[:, hit]
        for _ in range(22):
            mid = 0.5 * (lo_h + hi_h)
            p = o[:, None] + mid * dh
            above = p[2] - self.surface.height(p[0], p[1]) >= 0
            hi_h = np.where(above, mid, hi_h)
            lo_h = np.where(above, lo_h, mid)
        out = np.full(n, np.nan)
        out[hit] = 0.5 * (lo_h + hi_h)
        return out

    def render(self, k: int) -> Frame:
        rgb, depth, _ = self._render(k)
        return Frame(
            rgb=rgb,
            K=self.K.copy(),
            depth=depth,
            T_world_cam=self.poses[k],
            stamp_ns=int(round(k / self.config.fps * 1e9)),
            index=k,
            sequence=f"lap_{self.config.seed}",
        )

    def instrument_mask(self, k: int) -> np.ndarray:
        """(H, W) bool: pixels whose nearest surface is an instrument (inside the field of view)."""
        return self._render(k)[2]

    def _render(self, k: int):
        import cv2

        cfg = self.config
        h, w = cfg.height, cfg.width
        pose = self.poses_mm[k]
        R, o = pose[:3, :3], pose[:3, 3]
        d = R @ self._rays_cam  # world directions whose camera z is 1: t is the optical-axis depth
        t_tis = self._trace_tissue(o, d)
        p = o[:, None] + t_tis * d
        gx = self.surface._lookup(self.surface.gx, p[0], p[1])
        gy = self.surface._lookup(self.surface.gy, p[0], p[1])
        normal = np.stack([gx, gy, -np.ones_like(gx)])
        normal /= np.linalg.norm(normal, axis=0)
        albedo = self.surface._lookup(self.surface.albedo, p[0], p[1]).T  # (3, N)
        spec_w = np.full(t_tis.shape, cfg.specular)
        shin = np.full(t_tis.shape, cfg.shininess)
        depth = t_tis.copy()
        inst = np.zeros(t_tis.shape, bool)
        time_s = k / cfg.fps
        for tool in self.instruments:
            for a, b, r, col in tool.segments(time_s):
                t_c, n_c = _ray_cylinder(o, d, a, b, r)
                closer = np.isfinite(t_c) & ~(t_c >= depth)
                depth = np.where(closer, t_c, depth)
                normal = np.where(closer, n_c, normal)
                albedo = np.where(closer, col[:, None], albedo)
                spec_w = np.where(closer, 1.2, spec_w)
                shin = np.where(closer, 90.0, shin)
                inst |= closer
        # shading: light at the scope tip, view = light direction
        ray_len = depth * np.linalg.norm(d, axis=0)
        view = -d / np.linalg.norm(d, axis=0)
        cos_i = np.clip((normal * view).sum(0), 0, 1)
        cos_axis = 1.0 / np.linalg.norm(self._rays_cam, axis=0)
        spot = np.exp(-((np.degrees(np.arccos(np.clip(cos_axis, -1, 1))) / cfg.spot_deg) ** 2))
        irr = cfg.light_power * (cfg.wall_mm / np.maximum(ray_len, 1.0)) ** cfg.falloff * (0.25 + 0.75 * spot)
        diffuse = albedo * (cos_i * irr)[None]
        specular = spec_w * cos_i**shin * irr
        lin = diffuse + specular[None] + 0.01 * albedo
        # smoke: haze thickening with distance, drifting density
        if cfg.smoke > 0:
            srng = np.random.default_rng([self._smoke_rng_seed, k // 8])
            srng2 = np.random.default_rng([self._smoke_rng_seed, k // 8 + 1])
            f = (k % 8) / 8.0
            dens = (1 - f) * _value_noise((h, w), 40, srng) + f * _value_noise((h, w), 40, srng2)
            dens = cfg.smoke * np.clip(0.7 + 0.5 * dens, 0, 1.5).ravel()
            haze = dens * (1 - np.exp(-np.nan_to_num(ray_len, nan=1e3) / cfg.wall_mm))
            lin = lin * (1 - haze) + 0.75 * haze * cfg.light_power
        # auto-exposure, as a laparoscope's camera does: the 95th brightness percentile in the view maps
        # to 0.8 (gain bounded), then the sequence's exposure bias
        luma = np.nan_to_num(lin.mean(0).reshape(h, w)[self.fov_mask], nan=0.0)
        p95 = float(np.percentile(luma, 95)) if luma.size else 1.0
        gain = float(np.clip(0.8 / max(p95, 1e-6), 0.25, 4.0))
        lin = lin * np.asarray(cfg.white_balance)[:, None] * cfg.exposure * gain
        img = lin.T.reshape(h, w, 3) * self._vignette[..., None]
        img = np.nan_to_num(img, nan=0.0)
        img = np.clip(img, 0, 1) ** (1 / 2.2)
        prng = np.random.default_rng([self._post_seed, k])
        if cfg.blur_px > 0:
            img = cv2.GaussianBlur(img.astype(np.float32), (0, 0), cfg.blur_px)
        img = img + prng.normal(0, cfg.noise_std, img.shape)
        img[~self.fov_mask] = 0.0
        rgb = (np.clip(img, 0, 1) * 255 + 0.5).astype(np.uint8)
        if cfg.jpeg_quality > 0:
            ok, buf = cv2.imencode(".jpg", rgb[..., ::-1], [cv2.IMWRITE_JPEG_QUALITY, cfg.jpeg_quality])
            rgb = cv2.imdecode(buf, cv2.IMREAD_COLOR)[..., ::-1].copy()
            rgb[~self.fov_mask] = 0
        depth_m = (depth / 1000.0).reshape(h, w).astype(np.float32)
        depth_m[~self.fov_mask] = np.nan
        inst = inst.reshape(h, w) & self.fov_mask
        return rgb, depth_m, inst

    def __iter__(self) -> Iterator[Frame]:
        for k in range(self.config.n_frames):
            yield self.render(k)

    def sequence(self, name: str | None = None) -> Sequence:
        return Sequence(
            name=name or f"lap_{self.config.seed}",
            length=self.config.n_frames,
            load=self.render,
            meta={"fps": self.config.fps, "source": "laparoscopy-simulator", "seed": self.config.seed},
        )
