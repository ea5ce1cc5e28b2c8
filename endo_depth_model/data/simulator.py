"""Synthetic endoscopy: a camera with a light at its tip moving through a tissue tube.

The scene is an analytic tube around a bending centreline ``c(z) = (cx(z), cy(z))``; the wall is at
radius ``r(z, theta) = r0 * (1 + bumps(z, theta)) * (1 - fold_depth * folds(z, theta))``, where bumps
are smooth low-frequency harmonics and folds are haustra-like ridges. The implicit function
``f(p) = |p_xy - c(z)| - r(z, theta)`` is negative inside. Each pixel's ray ``p(t) = C + t * R K^-1 [u v 1]``
is parametrised by its optical-axis depth ``t``, sampled on a geometric grid until ``f`` changes sign
and then bisected to ~1e-9 m, so the ground-truth depth is exactly the z of the rendered surface point.

Shading: tissue albedo from a procedural texture unrolled on (z, theta) (mottled base colour, fine
grain, branching vessels; mip-mapped against aliasing), a point light at the camera centre with
inverse-square falloff, Lambert diffuse + Blinn-Phong specular (the half vector equals the view
direction for a co-located light), vignetting, gamma and sensor noise.

Units: the scene is built in millimetres internally; every output is in metres (depth float32, NaN
where a ray leaves the far range; translation of ``T_world_cam`` in metres). Poses are camera-to-world
REP 103 optical frames. The world frame has the tube running along +z. Everything is a function of
``SimulatorConfig.seed``: the same config renders bit-identical sequences.
"""

from __future__ import annotations

import math
import os
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field, replace
from typing import Literal

import numpy as np

from .sequence import Frame, Sequence, intrinsics_from_fov

__all__ = [
    "GeometryConfig",
    "TextureConfig",
    "ColourConfig",
    "LightingConfig",
    "MotionConfig",
    "SimulatorConfig",
    "SimulatorConfigError",
    "PRESETS",
    "preset",
    "colon_preset",
    "EndoscopySimulator",
]


class SimulatorConfigError(ValueError):
    """A simulator parameter is out of its valid range."""


@dataclass
class GeometryConfig:
    """Lumen shape. Lengths in millimetres, amplitudes as fractions of the radius.

    ``shape``: ``tube`` (open lumen; rays beyond ``far_mm`` are misses) or ``cavity`` (the lumen closes
    in an ellipsoidal dome ``cavity_dome_mm`` long, starting one radius past the last camera
    position, so every ray hits tissue).
    """

    shape: Literal["tube", "cavity"] = "tube"
    cavity_dome_mm: float = 40.0
    radius_mm: float = 12.0
    bump_amplitude: float = 0.12
    bump_wavelength_mm: float = 25.0
    fold_depth: float = 0.25
    fold_spacing_mm: float = 18.0
    fold_sharpness: float = 4.0
    bend_amplitude_mm: float = 8.0
    bend_wavelength_mm: float = 120.0


@dataclass
class TextureConfig:
    """Procedural tissue texture. Densities per cm^2 of wall, sizes in millimetres."""

    vessel_density: float = 1.2
    vessel_width_mm: float = 0.35
    vessel_contrast: float = 0.55
    deep_vessel_fraction: float = 0.4
    mottle_scale_mm: float = 6.0
    mottle_strength: float = 0.15
    grain_strength: float = 0.06
    texel_mm: float = 0.1


@dataclass
class ColourConfig:
    """Linear-RGB albedos in [0, 1]."""

    base_rgb: tuple[float, float, float] = (0.85, 0.42, 0.38)
    vessel_rgb: tuple[float, float, float] = (0.45, 0.08, 0.12)
    hue_jitter: float = 0.05


@dataclass
class LightingConfig:
    """Light at the camera tip. ``intensity``: irradiance at one radius distance (before gamma)."""

    intensity: float = 1.0
    ambient: float = 0.02
    specular: float = 0.35
    shininess: float = 40.0
    vignetting: float = 0.3
    noise_std: float = 0.01
    gamma: float = 2.2


@dataclass
class MotionConfig:
    """Camera motion: forward along the lumen with wobble and occasional rotations."""

    speed_mm_s: float = 12.0
    speed_variation: float = 0.3
    lateral_offset: float = 0.25
    wobble_deg: float = 4.0
    rotation_rate_hz: float = 0.3
    rotation_deg: float = 25.0
    rotation_duration_s: float = 1.2


@dataclass
class SimulatorConfig:
    """Everything that defines a synthetic sequence; ``fov_deg`` is the horizontal field of view."""

    seed: int = 0
    height: int = 256
    width: int = 320
    n_frames: int = 64
    fps: float = 30.0
    fov_deg: float = 85.0
    near_mm: float = 0.5
    far_mm: float = 150.0
    march_samples: int = 64
    geometry: GeometryConfig = field(default_factory=GeometryConfig)
    texture: TextureConfig = field(default_factory=TextureConfig)
    colour: ColourConfig = field(default_factory=ColourConfig)
    lighting: LightingConfig = field(default_factory=LightingConfig)
    motion: MotionConfig = field(default_factory=MotionConfig)

    def validate(self) -> None:
        checks = [
            (self.height >= 8 and self.width >= 8, f"image size {self.height}x{self.width} must be >= 8x8"),
            (self.n_frames >= 1, f"n_frames={self.n_frames} must be >= 1"),
            (self.fps > 0, f"fps={self.fps} must be > 0"),
            (10.0 <= self.fov_deg <= 150.0, f"fov_deg={self.fov_deg} must be in [10, 150]"),
            (0 < self.near_mm < self.far_mm, f"need 0 < near_mm ({self.near_mm}) < far_mm ({self.far_mm})"),
            (self.march_samples >= 8, f"march_samples={self.march_samples} must be >= 8"),
            (self.geometry.radius_mm > 0, f"geometry.radius_mm={self.geometry.radius_mm} must be > 0"),
            (
                0 <= self.geometry.fold_depth < 0.6,
                f"geometry.fold_depth={self.geometry.fold_depth} must be in [0, 0.6)",
            ),
            (
                0 <= self.geometry.bump_amplitude < 0.4,
                f"geometry.bump_amplitude={self.geometry.bump_amplitude} must be in [0, 0.4)",
            ),
            (
                0 <= self.motion.lateral_offset < 0.5,
                f"motion.lateral_offset={self.motion.lateral_offset} must be in [0, 0.5)",
            ),
            (self.texture.texel_mm > 0, f"texture.texel_mm={self.texture.texel_mm} must be > 0"),
            (
                self.geometry.shape in ("tube", "cavity"),
                f"geometry.shape={self.geometry.shape!r} must be 'tube' or 'cavity'",
            ),
            (
                self.geometry.cavity_dome_mm > 0,
                f"geometry.cavity_dome_mm={self.geometry.cavity_dome_mm} must be > 0",
            ),
            (self.lighting.gamma > 0, f"lighting.gamma={self.lighting.gamma} must be > 0"),
        ]
        for ok, message in checks:
            if not ok:
                raise SimulatorConfigError(message)


def _source() -> SimulatorConfig:
    return SimulatorConfig(
        fov_deg=70.0,
        geometry=GeometryConfig(
            radius_mm=15.0,
            bump_amplitude=0.07,
            bump_wavelength_mm=40.0,
            fold_depth=0.08,
            fold_spacing_mm=30.0,
            fold_sharpness=2.0,
            bend_amplitude_mm=5.0,
            bend_wavelength_mm=200.0,
        ),
        texture=TextureConfig(
            vessel_density=0.5,
            vessel_width_mm=0.5,
            vessel_contrast=0.3,
            deep_vessel_fraction=0.7,
            mottle_scale_mm=10.0,
            mottle_strength=0.25,
            grain_strength=0.03,
        ),
        colour=ColourConfig(base_rgb=(0.80, 0.58, 0.40), vessel_rgb=(0.55, 0.22, 0.14), hue_jitter=0.03),
        lighting=LightingConfig(
            intensity=0.9, ambient=0.04, specular=0.08, shininess=12.0, vignetting=0.1, noise_std=0.004
        ),
        motion=MotionConfig(speed_mm_s=10.0, wobble_deg=2.0, rotation_rate_hz=0.15, rotation_deg=15.0),
    )


def _target() -> SimulatorConfig:
    return SimulatorConfig(
        fov_deg=85.0,
        geometry=GeometryConfig(
            radius_mm=11.0,
            bump_amplitude=0.15,
            bump_wavelength_mm=22.0,
            fold_depth=0.3,
            fold_spacing_mm=16.0,
            fold_sharpness=5.0,
            bend_amplitude_mm=9.0,
            bend_wavelength_mm=110.0,
        ),
        texture=TextureConfig(
            vessel_density=2.0,
            vessel_width_mm=0.3,
            vessel_contrast=0.6,
            deep_vessel_fraction=0.35,
            mottle_scale_mm=5.0,
            mottle_strength=0.12,
            grain_strength=0.07,
        ),
        colour=ColourConfig(base_rgb=(0.80, 0.32, 0.30), vessel_rgb=(0.40, 0.04, 0.10), hue_jitter=0.05),
        lighting=LightingConfig(
            intensity=1.2, ambient=0.015, specular=0.6, shininess=60.0, vignetting=0.45, noise_std=0.012
        ),
        motion=MotionConfig(speed_mm_s=14.0, wobble_deg=5.0, rotation_rate_hz=0.4, rotation_deg=30.0),
    )


PRESETS = {"source": _source, "target": _target}


def preset(name: str, **overrides) -> SimulatorConfig:
    """Named domain preset (``source`` or ``target``) with top-level fields replaced by ``overrides``."""
    if name not in PRESETS:
        raise SimulatorConfigError(f"unknown simulator preset {name!r}; known: {sorted(PRESETS)}")
    cfg = replace(PRESETS[name](), **overrides)
    cfg.validate()
    return cfg


# ---- scene ---------------------------------------------------------------------------------------


class _Tube:
    """The analytic wall. All lengths in millimetres; arrays broadcast elementwise."""

    def __init__(self, geo: GeometryConfig, rng: np.random.Generator):
        self.r0 = geo.radius_mm
        n_bumps = 5
        weights = rng.uniform(0.5, 1.0, n_bumps)
        self.bump_amp = geo.bump_amplitude * weights / weights.sum()
        self.bump_kz = 2 * np.pi / (geo.bump_wavelength_mm * rng.uniform(0.5, 2.0, n_bumps))
        self.bump_m = [int(m) for m in rng.integers(0, 5, n_bumps)]
        self.bump_phase = rng.uniform(0, 2 * np.pi, n_bumps)
        self.fold_depth = geo.fold_depth
        self.fold_k = 2 * np.pi / geo.fold_spacing_mm
        self.fold_warp_k = 2 * np.pi / (geo.fold_spacing_mm * rng.uniform(3.0, 4.5))
        self.fold_warp_phase = float(rng.uniform(0, 2 * np.pi))
        self.fold_sharpness = geo.fold_sharpness
        self.dome_start: float | None = None  # set by the simulator for shape="cavity"
        self.dome_length = geo.cavity_dome_mm
        self.fold_theta_phase = float(rng.uniform(0, 2 * np.pi))
        a, lam = geo.bend_amplitude_mm, geo.bend_wavelength_mm
        # centreline: cx = sum ax_i sin(kx_i z + px_i), cy likewise
        self.cx = (np.array([a, 0.3 * a]), 2 * np.pi / (lam * np.array([1.0, 0.37])), rng.uniform(0, 6.3, 2))
        self.cy = (np.array([0.8 * a]), 2 * np.pi / (lam * np.array([1.3])), rng.uniform(0, 6.3, 1))

    @staticmethod
    def _wave(z, params, derivative=False):
        amps, ks, phases = params
        out = 0.0
        for a, k, p in zip(amps.tolist(), ks.tolist(), phases.tolist(), strict=True):
            out = out + (a * k * np.cos(k * z + p) if derivative else a * np.sin(k * z + p))
        return out

    def centre(self, z):
        """Centreline (cx, cy) at depth-along-tube ``z`` (mm)."""
        return self._wave(z, self.cx), self._wave(z, self.cy)

    def tangent(self, z) -> np.ndarray:
        """Unit tangent (3,) of the centreline at scalar ``z``."""
        t = np.array([self._wave(z, self.cx, True), self._wave(z, self.cy, True), 1.0])
        return t / np.linalg.norm(t)

    def radius(self, z, cos_t, sin_t):
        """Wall radius (mm) at ``z`` and direction (cos theta, sin theta) from the centreline."""
        # cos(m theta), sin(m theta) by the angle-addition recurrence: no atan2 in the inner loop
        cos_m, sin_m = [np.ones_like(cos_t), cos_t], [np.zeros_like(sin_t), sin_t]
        for _ in range(2, max(max(self.bump_m), 3) + 1):
            c, s = cos_m[-1], sin_m[-1]
            cos_m.append(c * cos_t - s * sin_t)
            sin_m.append(s * cos_t + c * sin_t)
        bumps = 0.0
        for a, k, m, p in zip(
            self.bump_amp.tolist(), self.bump_kz.tolist(), self.bump_m, self.bump_phase.tolist(), strict=True
        ):
            arg = k * z + p
            # sin(k z + p + m theta)
            bumps = bumps + a * (np.sin(arg) * cos_m[m] + np.cos(arg) * sin_m[m])
        phase = self.fold_k * z + 0.8 * np.sin(self.fold_warp_k * z + self.fold_warp_phase)
        ridge = (0.5 + 0.5 * np.cos(phase)) ** self.fold_sharpness
        c3, s3 = cos_m[3], sin_m[3]
        around = 0.75 + 0.25 * (c3 * math.cos(self.fold_theta_phase) - s3 * math.sin(self.fold_theta_phase))
        r = self.r0 * (1.0 + bumps) * (1.0 - self.fold_depth * ridge * around)
        if self.dome_start is not None:  # cavity: ellipsoidal closing dome
            u = np.maximum(z - self.dome_start, 0.0) / self.dome_length
            r = r * np.sqrt(np.maximum(1.0 - u * u, 0.0))
        return r

    def implicit(self, x, y, z):
        """``f`` (mm): negative inside the lumen, zero on the wall. Also returns (cos, sin) of theta."""
        cx, cy = self.centre(z)
        dx, dy = x - cx, y - cy
        rho = np.sqrt(dx * dx + dy * dy)
        inv = 1.0 / np.maximum(rho, 1e-9)
        cos_t, sin_t = dx * inv, dy * inv
        return rho - self.radius(z, cos_t, sin_t), cos_t, sin_t


# ---- texture -------------------------------------------------------------------------------------


class _Texture:
    """Albedo unrolled on (z, theta): rows along z from ``z0`` in ``texel`` mm, columns around theta."""

    LEVELS = 5
    PAD = 4

    def __init__(self, tex: TextureConfig, col: ColourConfig, r0: float, z_range, rng: np.random.Generator):
        import cv2

        self.texel = tex.texel_mm
        self.z0 = z_range[0]
        rows = int(math.ceil((z_range[1] - z_range[0]) / self.texel)) + 1
        cols = int(math.ceil(2 * np.pi * r0 / self.texel))
        self.cols = cols

        def smooth_noise(scale_mm: float) -> np.ndarray:
            cells_r = max(2, int(rows * self.texel / scale_mm) + 2)
            cells_c = max(2, int(cols * self.texel / scale_mm) + 2)
            coarse = rng.standard_normal((cells_r, cells_c)).astype(np.float32)
            coarse[:, -1] = coarse[:, 0]  # continuous across the theta seam
            return cv2.resize(coarse, (cols, rows), interpolation=cv2.INTER_CUBIC)

        base = np.asarray(col.base_rgb, np.float32)
        mottle = 1.0 + tex.mottle_strength * smooth_noise(tex.mottle_scale_mm)
        albedo = base[None, None, :] * mottle[..., None]
        for c in range(3):  # slow hue drift
            albedo[..., c] *= 1.0 + col.hue_jitter * smooth_noise(tex.mottle_scale_mm * 2.5)
        grain = cv2.GaussianBlur(rng.standard_normal((rows, cols)).astype(np.float32), (0, 0), 1.2)
        grain /= max(float(grain.std()), 1e-6)
        albedo *= (1.0 + tex.grain_strength * grain)[..., None]

        vessels = self._vessels(tex, rows, cols, rng)
        self.vessel_coverage = float((vessels * tex.vessel_contrast > 0.1).mean())  # fraction of the wall
        w = np.clip(tex.vessel_contrast * vessels, 0.0, 1.0)[..., None]
        albedo = albedo * (1.0 - w) + np.asarray(col.vessel_rgb, np.float32)[None, None, :] * w
        albedo = np.clip(albedo, 0.0, 1.0).astype(np.float32)

        self.levels = []
        level = albedo
        for _ in range(self.LEVELS):
            padded = np.concatenate([level[:, -self.PAD :], level, level[:, : self.PAD]], axis=1)
            self.levels.append(np.ascontiguousarray(padded))
            if min(level.shape[:2]) < 4:
                break
            level = cv2.pyrDown(level)

    def _vessels(self, tex: TextureConfig, rows: int, cols: int, rng: np.random.Generator) -> np.ndarray:
        """Vessel opacity in [0, 1], (rows, cols): branching random walks, deep (blurred) and superficial."""
        import cv2

        pad = cols // 2
        width_px = cols + 2 * pad
        area_cm2 = rows * cols * self.texel**2 / 100.0
        n_vessels = int(rng.poisson(max(tex.vessel_density * area_cm2, 0.0)))
        layers = [np.zeros((rows, width_px), np.uint8), np.zeros((rows, width_px), np.uint8)]
        step = 0.4 / self.texel
        for _ in range(n_vessels):
            deep = rng.random() < tex.deep_vessel_fraction
            stack = [
                (
                    rng.uniform(pad, pad + cols),
                    rng.uniform(0, rows),
                    rng.uniform(0, 2 * np.pi),
                    tex.vessel_width_mm * rng.uniform(0.6, 1.6) * (2.0 if deep else 1.0),
                    rng.uniform(5.0, 20.0),
                    0,
                )
            ]
            while stack:
                x, y, angle, width_mm, length_mm, depth = stack.pop()
                n_steps = max(2, int(length_mm / 0.4))
                pts = [(x, y)]
                for _ in range(n_steps):
                    angle += rng.normal(0.0, 0.25)
                    x += step * math.cos(angle)
                    y += step * math.sin(angle)
                    pts.append((x, y))
                    if depth < 3 and rng.random() < 0.04:
                        side = 1.0 if rng.random() < 0.5 else -1.0
                        stack.append(
                            (
                                x,
                                y,
                                angle + side * rng.uniform(0.4, 1.0),
                                width_mm * 0.7,
                                length_mm * 0.6,
                                depth + 1,
                            )
                        )
                thickness = max(1, int(round(width_mm / self.texel)))
                poly = np.round(np.asarray(pts) * 16).astype(np.int32)[None]
                cv2.polylines(layers[int(deep)], poly, False, 255, thickness, cv2.LINE_AA, shift=4)
        out = np.zeros((rows, cols), np.float32)
        for layer, blur in ((layers[0], 0.6), (layers[1], 2.5)):
            f = layer.astype(np.float32) / 255.0
            # fold the margins back onto the wrapped texture so vessels cross the theta seam
            folded = f[:, pad : pad + cols].copy()
            folded[:, cols - pad :] = np.maximum(folded[:, cols - pad :], f[:, :pad])
            folded[:, :pad] = np.maximum(folded[:, :pad], f[:, pad + cols :])
            folded = cv2.GaussianBlur(folded, (0, 0), blur)
            out = np.maximum(out, folded * (0.6 if blur > 1 else 1.0))
        return out

    def sample(self, z: np.ndarray, cos_t: np.ndarray, sin_t: np.ndarray, footprint_mm: np.ndarray):
        """Albedo (N, 3) at wall points (z, theta) with a per-point footprint (mm) choosing the mip level."""
        import cv2

        theta = np.arctan2(sin_t, cos_t)
        u0 = ((theta + np.pi) / (2 * np.pi) * self.cols).astype(np.float32)
        v0 = ((z - self.z0) / self.texel).astype(np.float32)
        lod = np.clip(np.log2(np.maximum(footprint_mm / self.texel, 1e-6)), 0, len(self.levels) - 1)
        lo = np.floor(lod).astype(np.int64)
        frac = (lod - lo).astype(np.float32)[:, None]
        out = np.zeros((z.size, 3), np.float32)
        n = z.size
        for level_idx, level in enumerate(self.levels):
            use_lo, use_hi = lo == level_idx, (lo + 1) == level_idx
            sel = use_lo | use_hi
            if not sel.any():
                continue
            scale = 2.0**level_idx
            # texel centres of level l sit at (i + 0.5) * 2^l - 0.5 of level 0
            mu = ((u0[sel] + 0.5) / scale - 0.5) * (level.shape[1] - 2 * self.PAD) / (self.cols / scale)
            mv = (v0[sel] + 0.5) / scale - 0.5
            m = mu.size
            cols = 1024  # remap wants maps shorter than 32767 per side: fold the list into a block
            rows = -(-m // cols)
            mapx = np.zeros(rows * cols, np.float32)
            mapy = np.zeros(rows * cols, np.float32)
            mapx[:m] = mu + self.PAD
            mapy[:m] = mv
            vals = cv2.remap(
                level,
                mapx.reshape(rows, cols),
                mapy.reshape(rows, cols),
                cv2.INTER_LINEAR,
                borderMode=cv2.BORDER_REPLICATE,
            ).reshape(rows * cols, 3)[:m]
            weight = np.zeros((n, 1), np.float32)
            weight[use_lo] = 1.0 - frac[use_lo]
            weight[use_hi] += frac[use_hi]
            out[sel] += vals * weight[sel]
        return out


# ---- camera motion -------------------------------------------------------------------------------


def _rot(axis: int, angle: float) -> np.ndarray:
    c, s = math.cos(angle), math.sin(angle)
    i, j = [(1, 2), (2, 0), (0, 1)][axis]
    m = np.eye(3)
    m[i, i], m[i, j], m[j, i], m[j, j] = c, -s, s, c
    return m


class _Trajectory:
    """Camera-to-world poses (mm) for frame times ``k / fps``."""

    def __init__(self, cfg: SimulatorConfig, tube: _Tube, rng: np.random.Generator):
        mo = cfg.motion
        self.times = np.arange(cfg.n_frames) / cfg.fps
        duration = max(cfg.n_frames / cfg.fps, 1e-6)
        period = rng.uniform(2.0, 5.0)
        phase = rng.uniform(0, 2 * np.pi)
        w = 2 * np.pi / period
        t = self.times
        # z(t) = integral of v (1 + a sin(w t + phase))
        z = mo.speed_mm_s * (t - mo.speed_variation / w * (np.cos(w * t + phase) - np.cos(phase)))

        def smooth(amplitude: float) -> np.ndarray:
            freqs = rng.uniform(0.1, 0.5, 2)
            phases = rng.uniform(0, 2 * np.pi, 2)
            return amplitude * (
                0.6 * np.sin(2 * np.pi * freqs[0] * t + phases[0])
                + 0.4 * np.sin(2 * np.pi * freqs[1] * t + phases[1])
            )

        off = mo.lateral_offset * tube.r0
        ox, oy = smooth(off), smooth(off)
        wob = np.deg2rad(mo.wobble_deg)
        angles = np.stack([smooth(wob), smooth(wob), smooth(wob * 0.5)])  # pitch (x), yaw (y), roll (z)
        n_events = int(rng.poisson(mo.rotation_rate_hz * duration))
        self.events = []
        for _ in range(n_events):
            axis = int(rng.integers(0, 3))
            amp = np.deg2rad(mo.rotation_deg) * rng.uniform(0.5, 1.0) * (1 if rng.random() < 0.5 else -1)
            start = rng.uniform(-0.3 * mo.rotation_duration_s, duration)
            s = np.clip((t - start) / mo.rotation_duration_s, 0.0, 1.0)
            if axis == 2:  # roll: the camera turns and stays turned
                angles[2] += amp * (3 * s**2 - 2 * s**3)
            else:  # pitch / yaw: look at the wall and come back
                angles[axis] += amp * np.sin(np.pi * s) ** 2
            self.events.append({"axis": "xyz"[axis], "start_s": float(start), "deg": float(np.rad2deg(amp))})
        poses = np.zeros((cfg.n_frames, 4, 4))
        for k in range(cfg.n_frames):
            cx, cy = tube.centre(z[k])
            fwd = tube.tangent(z[k])
            right = np.cross([0.0, 1.0, 0.0], fwd)
            right /= np.linalg.norm(right)
            down = np.cross(fwd, right)
            base = np.stack([right, down, fwd], axis=1)
            rot = base @ _rot(2, angles[2, k]) @ _rot(1, angles[1, k]) @ _rot(0, angles[0, k])
            poses[k, :3, :3] = rot
            poses[k, :3, 3] = [cx + ox[k], cy + oy[k], z[k]]
            poses[k, 3, 3] = 1.0
        self.poses_mm = poses


_POOL: tuple[int, ThreadPoolExecutor] | None = None


def _pool() -> ThreadPoolExecutor:
    """One pool per process for ray chunks (numpy releases the GIL inside ufuncs). A forked child
    (e.g. a DataLoader worker) gets its own pool: the parent's threads do not exist there."""
    global _POOL
    if _POOL is None or _POOL[0] != os.getpid():
        workers = max(1, min(os.cpu_count() or 1, 8))
        _POOL = (os.getpid(), ThreadPoolExecutor(max_workers=workers, thread_name_prefix="synth"))
    return _POOL[1]


# ---- renderer ------------------------------------------------------------------------------------


class EndoscopySimulator:
    """Renders frames of one synthetic sequence; deterministic for ``config.seed``.

    ``render(k)`` -> :class:`Frame` with rgb (H, W, 3) uint8, depth (H, W) float32 metres (NaN: no
    wall within ``far_mm``), T_world_cam (4, 4) metres, K (3, 3) pixels.
    """

    def __init__(self, config: SimulatorConfig):
        config.validate()
        self.config = config
        rng = np.random.default_rng(config.seed)
        self.tube = _Tube(config.geometry, rng)
        self.trajectory = _Trajectory(config, self.tube, rng)
        z_cam = self.trajectory.poses_mm[:, 2, 3]
        self._check_inside()
        margin = 2.0 * config.geometry.radius_mm
        self.texture = _Texture(
            config.texture,
            config.colour,
            config.geometry.radius_mm,
            (float(z_cam.min() - margin), float(z_cam.max() + config.far_mm + margin)),
            rng,
        )
        h, w = config.height, config.width
        self.K = intrinsics_from_fov(w, h, config.fov_deg)
        v, u = np.meshgrid(np.arange(h, dtype=np.float64), np.arange(w, dtype=np.float64), indexing="ij")
        pix = np.stack([u.ravel(), v.ravel(), np.ones(h * w)], axis=0)
        self._rays_cam = np.linalg.inv(self.K) @ pix  # (3, N), z component 1: ray parameter = depth
        half_diag = math.hypot((w - 1) / 2.0, (h - 1) / 2.0)
        r2 = ((u - self.K[0, 2]) ** 2 + (v - self.K[1, 2]) ** 2).ravel() / half_diag**2
        self._vignette = (1.0 - config.lighting.vignetting * r2).astype(np.float32)
        self._lipschitz_bound = self._lipschitz(
            (float(z_cam.min() - margin), float(z_cam.max() + config.far_mm + margin)), config.seed
        )
        if config.geometry.shape == "cavity":
            # enabled after the Lipschitz estimate: the dome's tip has unbounded slope, and a sphere-tracing
            # step past it lands in solid tissue (f > 0), which the march still brackets
            self.tube.dome_start = float(z_cam.max() + config.geometry.radius_mm)

    def _check_inside(self) -> None:
        for k, pose in enumerate(self.trajectory.poses_mm):
            f, _, _ = self.tube.implicit(*(pose[:3, 3, None]))
            if f[0] > -0.5 * self.config.near_mm:
                raise SimulatorConfigError(
                    f"camera of frame {k} is outside or touching the wall (f={f[0]:.2f} mm); reduce "
                    "motion.lateral_offset, geometry.fold_depth or geometry.bump_amplitude"
                )

    def __len__(self) -> int:
        return self.config.n_frames

    @property
    def poses(self) -> np.ndarray:
        """(N, 4, 4) camera-to-world poses, translation in metres."""
        out = self.trajectory.poses_mm.copy()
        out[:, :3, 3] /= 1000.0
        return out

    def _lipschitz(self, z_range: tuple[float, float], seed: int) -> float:
        """Upper bound (x1.25 margin) of |grad f| inside the lumen, from 20k sampled points."""
        rng = np.random.default_rng([seed, 99])
        n = 20000
        z = rng.uniform(*z_range, n)
        theta = rng.uniform(0, 2 * np.pi, n)
        rho = self.tube.r0 * np.sqrt(rng.uniform(0, 1, n)) * 1.2
        cx, cy = self.tube.centre(z)
        p = np.stack([cx + rho * np.cos(theta), cy + rho * np.sin(theta), z])
        eps = 1e-3
        grad = np.empty_like(p)
        for axis in range(3):
            q1, q2 = p.copy(), p.copy()
            q1[axis] += eps
            q2[axis] -= eps
            grad[axis] = (self.tube.implicit(*q1)[0] - self.tube.implicit(*q2)[0]) / (2 * eps)
        return 1.25 * float(np.linalg.norm(grad, axis=0).max())

    def _march(self, origin: np.ndarray, dirs: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """First sign change of f along rays ``origin + t * dirs`` (mm): bracket (lo, hi), NaN on a miss.

        Each step is the larger of a geometric step (t * ratio, reaching ``far_mm`` in
        ``march_samples`` steps) and the sphere-tracing step -f / (L |dir|), which cannot pass the
        wall because L bounds |grad f|; so deep-lumen rays advance fast and no ray takes more than
        ``march_samples`` evaluations.
        """
        cfg = self.config
        n = dirs.shape[1]
        lo = np.full(n, np.nan)
        hi = np.full(n, np.nan)
        active = np.arange(n)
        d32 = dirs.astype(np.float32)
        o32 = origin.astype(np.float32)
        inv_speed = (1.0 / (self._lipschitz_bound * np.linalg.norm(dirs, axis=0))).astype(np.float32)
        ratio = np.float32((cfg.far_mm / cfg.near_mm) ** (1.0 / (cfg.march_samples - 1)))
        far = np.float32(cfg.far_mm)
        t = np.full(n, cfg.near_mm, np.float32)
        prev = np.zeros(n, np.float32)
        for _ in range(cfg.march_samples + 1):
            d = d32[:, active]
            ta = t[active]
            f, _, _ = self.tube.implicit(o32[0] + ta * d[0], o32[1] + ta * d[1], o32[2] + ta * d[2])
            crossed = f > 0
            idx = active[crossed]
            lo[idx], hi[idx] = prev[idx], t[idx]
            keep = ~crossed & (ta < far)  # a ray evaluated at far without a crossing is a miss
            active, f, ta = active[keep], f[keep], ta[keep]
            if active.size == 0:
                break
            prev[active] = ta
            t[active] = np.minimum(np.maximum(ta * ratio, ta - f * inv_speed[active]), far)
        return lo, hi

    def _refine(self, origin, dirs, lo, hi) -> np.ndarray:
        """Root of f in the bracket [lo, hi] (mm), float64: 4 bisections, 8 Illinois regula falsi steps.

        Converges to |f| < 1e-9 mm for the smooth wall; the bracket is kept, so it cannot escape.
        """

        def f_at(t):
            p = origin[:, None] + t[None] * dirs
            return self.tube.implicit(p[0], p[1], p[2])[0]

        for _ in range(4):
            mid = 0.5 * (lo + hi)
            inside = f_at(mid) < 0
            lo = np.where(inside, mid, lo)
            hi = np.where(inside, hi, mid)
        f_lo, f_hi = f_at(lo), f_at(hi)
        side = np.zeros(lo.shape, np.int8)
        t = lo
        for _ in range(8):
            denom = f_hi - f_lo
            t = np.where(
                denom > 0, (lo * f_hi - hi * f_lo) / np.where(denom > 0, denom, 1.0), 0.5 * (lo + hi)
            )
            t = np.clip(t, lo, hi)
            ft = f_at(t)
            inside = ft < 0
            # Illinois: halve the stale end's value when the same side is kept twice
            lo, f_lo = np.where(inside, t, lo), np.where(inside, ft, np.where(side == -1, 0.5 * f_lo, f_lo))
            hi, f_hi = np.where(inside, hi, t), np.where(inside, np.where(side == 1, 0.5 * f_hi, f_hi), ft)
            side = np.where(inside, 1, -1).astype(np.int8)
            if ft.size == 0 or np.abs(ft).max() < 1e-9:  # converged everywhere (typically 6 steps)
                break
        return t

    CHUNKS = 8  # fixed ray partition: results do not depend on the number of threads

    def _trace(self, origin: np.ndarray, dirs: np.ndarray, albedo_only: bool = False):
        """Depth (N,) mm (NaN on a miss) and linear RGB (N, 3) for rays ``origin + t * dirs``."""
        cfg = self.config
        n = dirs.shape[1]
        lo, hi = self._march(origin, dirs)
        hit = np.flatnonzero(np.isfinite(lo))
        depth_mm = np.full(n, np.nan)
        rgb_lin = np.zeros((n, 3), np.float32)
        if hit.size:
            d = dirs[:, hit]
            t = self._refine(origin, d, lo[hit], hi[hit])
            depth_mm[hit] = t
            p = origin[:, None] + t[None] * d
            f0, cos_t, sin_t = self.tube.implicit(p[0], p[1], p[2])
            # outward normal from forward differences of f (eps well above float64 round-off)
            eps = 1e-4
            grad = np.empty_like(p)
            for axis in range(3):
                q = p.copy()
                q[axis] += eps
                grad[axis] = (self.tube.implicit(q[0], q[1], q[2])[0] - f0) / eps
            normal = -grad / np.linalg.norm(grad, axis=0, keepdims=True)  # facing into the lumen
            to_cam = origin[:, None] - p
            dist = np.linalg.norm(to_cam, axis=0)
            view = to_cam / dist
            cos_i = np.clip(np.sum(normal * view, axis=0), 0.0, 1.0)
            footprint = dist / self.K[0, 0] / np.maximum(cos_i, 0.25)
            # texels around theta shrink with the local radius (folds, the cavity dome's tip): widen
            # the footprint so the mip level blurs instead of aliasing into a pinwheel
            cx, cy = self.tube.centre(p[2])
            rho = np.hypot(p[0] - cx, p[1] - cy)
            footprint = footprint * np.maximum(1.0, self.tube.r0 / np.maximum(rho, 1e-3))
            albedo = self.texture.sample(p[2], cos_t, sin_t, footprint)
            li = cfg.lighting
            irradiance = (li.intensity * (self.tube.r0 / dist) ** 2).astype(np.float32)
            diffuse = albedo * cos_i[:, None].astype(np.float32)
            specular = (li.specular * cos_i**li.shininess).astype(np.float32)  # half vector = view
            if albedo_only:
                rgb_lin[hit] = albedo
            else:
                rgb_lin[hit] = irradiance[:, None] * (diffuse + specular[:, None]) + li.ambient * albedo
        return depth_mm, rgb_lin

    def render(self, k: int, albedo_only: bool = False) -> Frame:
        """Frame ``k``. With ``albedo_only`` the image is the unlit tissue colour (gamma-encoded, no
        vignetting or noise): a view-independent picture for checking geometry without lighting."""
        cfg = self.config
        if not 0 <= k < cfg.n_frames:
            raise IndexError(f"frame {k} out of range for a {cfg.n_frames}-frame simulation")
        return self._render_mm(self.trajectory.poses_mm[k], k, albedo_only)

    def render_pose(self, T_world_cam: np.ndarray, index: int = 0, albedo_only: bool = False) -> Frame:
        """The scene seen from any camera pose ``T_world_cam`` (4, 4), camera-to-world, metres.

        ``index`` keys the sensor noise (same pose and index: same image) and sets ``Frame.index`` and
        ``stamp_ns``. Raises ValueError for a pose outside the lumen (:meth:`wall_distance` is 0 there).
        """
        T = np.asarray(T_world_cam, dtype=np.float64)
        if T.shape != (4, 4) or not np.all(np.isfinite(T)):
            raise ValueError(f"T_world_cam must be a finite (4, 4) matrix, got shape {T.shape}")
        if self.wall_distance(T[:3, 3], n_dirs=0) <= 0.0:
            raise ValueError(f"camera at {T[:3, 3].tolist()} m is not inside the lumen")
        pose_mm = T.copy()
        pose_mm[:3, 3] *= 1000.0
        return self._render_mm(pose_mm, index, albedo_only)

    def wall_distance(self, position_m, n_dirs: int = 200) -> float:
        """Distance (m) from ``position_m`` (3,) to the nearest wall point along ``n_dirs`` rays spread
        evenly over the sphere (inf when none hits within ``far_mm``); 0 when the point is not inside
        the lumen. With ``n_dirs=0`` only the inside test is made (inf inside)."""
        p = np.asarray(position_m, dtype=np.float64).reshape(3) * 1000.0
        f, _, _ = self.tube.implicit(p[0:1], p[1:2], p[2:3])
        if not f[0] < 0:
            return 0.0
        if n_dirs <= 0:
            return math.inf
        i = np.arange(n_dirs) + 0.5  # Fibonacci sphere
        polar = np.arccos(1.0 - 2.0 * i / n_dirs)
        azimuth = np.pi * (1.0 + 5**0.5) * i
        dirs = np.stack([np.sin(polar) * np.cos(azimuth), np.sin(polar) * np.sin(azimuth), np.cos(polar)])
        lo, hi = self._march(p, dirs)
        hit = np.isfinite(lo)
        if not hit.any():
            return math.inf
        return float(self._refine(p, dirs[:, hit], lo[hit], hi[hit]).min()) / 1000.0

    def axis_distance(self, T_world_cam: np.ndarray) -> float:
        """Depth (m) of the wall along the optical axis of camera pose ``T_world_cam`` (inf: no wall
        within ``far_mm``): the ground-truth distance to tissue straight ahead."""
        T = np.asarray(T_world_cam, dtype=np.float64)
        origin, axis = T[:3, 3] * 1000.0, T[:3, 2:3].copy()
        lo, hi = self._march(origin, axis)
        if not np.isfinite(lo[0]):
            return math.inf
        return float(self._refine(origin, axis, lo, hi)[0]) / 1000.0

    def _render_mm(self, pose: np.ndarray, k: int, albedo_only: bool) -> Frame:
        cfg = self.config
        h, w = cfg.height, cfg.width
        origin = pose[:3, 3]
        dirs = pose[:3, :3] @ self._rays_cam  # (3, N); z in the camera frame is 1 per unit t
        bounds = np.linspace(0, h * w, self.CHUNKS + 1).astype(int)
        parts = [(origin, dirs[:, a:b]) for a, b in zip(bounds[:-1], bounds[1:], strict=True)]
        # numpy releases the GIL inside ufuncs, so threads use every core
        results = list(_pool().map(lambda part: self._trace(*part, albedo_only=albedo_only), parts))
        depth_mm = np.concatenate([r[0] for r in results])
        rgb_lin = np.concatenate([r[1] for r in results])
        if not albedo_only:
            rgb_lin *= self._vignette[:, None]
        img = np.clip(rgb_lin, 0.0, 1.0) ** (1.0 / cfg.lighting.gamma)
        if cfg.lighting.noise_std > 0 and not albedo_only:
            noise_rng = np.random.default_rng([cfg.seed, k, 7])
            img = img + noise_rng.normal(0.0, cfg.lighting.noise_std, img.shape).astype(np.float32)
        rgb = np.clip(np.round(img * 255.0), 0, 255).astype(np.uint8).reshape(h, w, 3)
        T = pose.copy()
        T[:3, 3] /= 1000.0
        return Frame(
            rgb=rgb,
            K=self.K.copy(),
            depth=(depth_mm / 1000.0).astype(np.float32).reshape(h, w),
            T_world_cam=T,
            stamp_ns=int(round(k * 1e9 / cfg.fps)),
            index=k,
            sequence=f"synth_seed{cfg.seed}",
        )

    def __iter__(self) -> Iterator[Frame]:
        for k in range(len(self)):
            yield self.render(k)

    def sequence(self, name: str | None = None) -> Sequence:
        """The simulation as a :class:`Sequence` (frames rendered on access)."""
        cfg = self.config
        label = name or f"synth_seed{cfg.seed}"

        def load(k: int) -> Frame:
            frame = self.render(k)
            frame.sequence = label
            return frame

        return Sequence(
            name=label,
            length=cfg.n_frames,
            load=load,
            meta={
                "source": "synthetic",
                "fps": cfg.fps,
                "depth_unit": "m",
                "pose_convention": "T_world_cam",
                "rotation_events": self.trajectory.events,
            },
        )


def colon_preset(seed: int, **overrides) -> SimulatorConfig:
    """Domain-randomised colon / lumen scene for ``seed``: the target preset with lumen shape (radius,
    folds, haustra, bends), texture, colour, light and motion drawn from wide ranges; the shape is
    re-drawn (with a derived seed) until the camera path stays inside the lumen."""
    rng = np.random.default_rng([seed, 31337])
    for attempt in range(20):
        base = _target()
        cfg = replace(
            base,
            seed=seed + 100_000 * attempt,
            fov_deg=float(rng.uniform(70, 110)),
            geometry=replace(
                base.geometry,
                shape=str(rng.choice(["tube", "tube", "cavity"])),
                radius_mm=float(rng.uniform(8, 18)),
                bump_amplitude=float(rng.uniform(0.03, 0.2)),
                bump_wavelength_mm=float(rng.uniform(15, 45)),
                fold_depth=float(rng.uniform(0.05, 0.45)),
                fold_spacing_mm=float(rng.uniform(10, 32)),
                fold_sharpness=float(rng.uniform(1.5, 7)),
                bend_amplitude_mm=float(rng.uniform(2, 12)),
            ),
            texture=replace(
                base.texture,
                vessel_density=float(rng.uniform(0.3, 2.5)),
                vessel_contrast=float(rng.uniform(0.2, 0.7)),
                mottle_strength=float(rng.uniform(0.05, 0.3)),
                grain_strength=float(rng.uniform(0.02, 0.09)),
            ),
            colour=ColourConfig(
                base_rgb=tuple(float(v) for v in rng.uniform([0.7, 0.25, 0.2], [0.95, 0.6, 0.45])),
                vessel_rgb=tuple(float(v) for v in rng.uniform([0.3, 0.02, 0.05], [0.6, 0.2, 0.2])),
                hue_jitter=float(rng.uniform(0.02, 0.07)),
            ),
            lighting=replace(
                base.lighting,
                intensity=float(rng.uniform(0.6, 1.8)),
                specular=float(rng.uniform(0.1, 0.9)),
                shininess=float(rng.uniform(20, 90)),
                vignetting=float(rng.uniform(0.1, 0.5)),
                noise_std=float(rng.uniform(0.004, 0.02)),
            ),
            motion=replace(
                base.motion,
                speed_mm_s=float(rng.uniform(4, 18)),
                wobble_deg=float(rng.uniform(1, 6)),
                rotation_deg=float(rng.uniform(5, 35)),
                lateral_offset=float(rng.uniform(0.05, 0.3)),
            ),
        )
        cfg = replace(cfg, **overrides)
        try:
            cfg.validate()
            EndoscopySimulator(replace(cfg, height=8, width=8, n_frames=cfg.n_frames))
            return cfg
        except SimulatorConfigError:
            continue
    raise SimulatorConfigError(f"no valid colon scene for seed {seed} in 20 draws")
