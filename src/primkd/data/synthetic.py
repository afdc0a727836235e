"""Embedded synthetic RGB-D dataset: procedural indoor scenes rendered by vectorised ray casting (docs/design.md §6).

A scene is a room (floor, four walls, ceiling) seen by a pinhole camera with NYU Depth V2's intrinsics, furnished with
composite boxes, vertical cylinders and ellipsoids, and with flat items on the walls. Each primitive is intersected
with all the rays of its projected bounding rectangle at once (numpy arrays, no per-pixel loop); the nearest hit
gives the metric depth (camera z), the NYU-40 label and the surface point where the albedo is evaluated.

Both modalities carry information the other lacks, in the balance of NYU Depth V2 (RGB carries most classes, depth
supplements it; the knobs of :class:`SceneParams`, calibrated in docs/calibration.md):

* appearance first: each furniture class wears a colour family of its own (cyan-blue cabinets, khaki-lime stone
  counters, dark-wood tables, yellow-orange boxes, pink-violet beds, dark green sofas, red chairs, vivid violet bags,
  lamps with amber shades on dark bronze poles), except a fraction ``shared_appearance`` of objects (none in the
  calibrated setting), which wear their material's generic look (any wood for cabinet, counter, table and box;
  muted fabric for bed, sofa and bag; any plastic for chair): only their shape and height above the floor tell those
  apart;
* appearance only: picture, whiteboard, window and door are regions of a wall's surface (exactly the wall's depth);
  only their colour and texture tell them apart from the wall.

Sensor model. Depth: clean camera-z depth plus Gaussian noise with the Kinect axial σ(z) = 1.2 mm + 1.9 mm·(z/m −
0.4)² (Nguyen et al. 2012, times ``depth_noise``), disparity quantised in ``disparity_step_px`` steps (Kinect v1:
1/8 px), then millimetres, with holes (value 0) where the structured-light projector, 7.5 cm to the camera's left,
cannot see the surface (bands right of depth edges), at grazing angles, in a few dropout blobs, as sparse speckles, on
dark surfaces, window glass and depth edges (in the fractions the knobs set), and outside 0.4 m – ``max_range_m``.
RGB: per-class colours with per-instance jitter, procedural textures, Lambertian shading from a point light plus
ambient light, vignetting, gamma, slight blur and noise.

World frame: x right, y up (floor at y = 0), z into the room; the camera frame is x right, y down, z forward, so the
camera-z depth of a hit at ray parameter t is t itself (rays are (x̃, ỹ, 1) in camera coordinates). Randomness: a
scene seed seeds three independent streams (layout and materials; depth sensor; RGB sensor), so a scene's layout does
not depend on the image size or the knobs, and image ``i`` of a split uses :func:`scene_seed` (dataset seed, split, i)
only.
"""

from __future__ import annotations

import colorsys
import dataclasses
import functools
import math
import os
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import cv2
import numpy as np
from tqdm import tqdm

from primkd.data.layout import IGNORE_INDEX, NYU40_CLASSES, NYU_SIZE, SPLITS, Layout, scaled_intrinsics, write_split
from primkd.data.viz import contact_sheet, label_palette  # noqa: F401 (re-exported for tests/test_synthetic.py)
from primkd.data.workers import process_pool
from primkd.io import atomic_dir, write_json, write_png

# The NYU-40 classes the generator draws (labels are indices into NYU40_CLASSES).
SYNTHETIC_CLASS_NAMES = (
    "wall", "floor", "ceiling", "cabinet", "counter", "table", "box", "bed", "sofa", "chair", "lamp", "bag",
    "picture", "whiteboard", "window", "door",
)
CLASS_ID = {name: NYU40_CLASSES.index(name) for name in SYNTHETIC_CLASS_NAMES}
# Classes that are painted on a wall's surface: same depth as the wall, different colour and texture.
APPEARANCE_ONLY_CLASSES = ("picture", "whiteboard", "window", "door")

PROJECTOR_BASELINE_M = 0.075  # structured-light projector sits this far left of the depth camera
DEPTH_RANGE_M = (0.4, 10.0)  # valid sensor range; depth outside it is stored as 0
LATTICE = 16  # side of the value-noise lattice of each material
DARK_ALBEDO = 0.03  # linear albedo luminance below which a surface absorbs enough IR to lose its depth reading
DEPTH_EDGE_JUMP = 0.05  # relative depth step between neighbours that counts as a depth discontinuity
_EPS = 1e-4  # smallest accepted ray parameter (metres)

# Room faces as returned by the ray-room intersection: 2·axis + (ray goes towards the upper bound).
FACE_LEFT, FACE_RIGHT, FACE_FLOOR, FACE_CEILING, FACE_BACK, FACE_FAR = range(6)
_VISIBLE_WALLS = (FACE_LEFT, FACE_RIGHT, FACE_FAR)  # the camera stands near the back wall, looking along +z
KINECT_FOCAL_PX = 580.0  # IR camera focal length at 640 columns: sets the disparity, whatever the rendered size


@dataclass(frozen=True)
class SceneParams:
    """The knobs that set how much each modality tells (params.yaml ``data.synthetic``; docs/calibration.md).

    Defaults are the calibrated values of params.yaml. Each knob changes only what it names: the layout (room,
    camera, objects) of a scene seed never depends on them, and the RGB image does not depend on the depth knobs.
    """

    shared_appearance: float = 0.0  # probability that a piece of furniture takes its material's generic look
    depth_noise: float = 1.0  # factor on the Kinect axial noise sigma(z)
    disparity_step_px: float = 0.125  # disparity quantisation step (Kinect v1: 1/8 px); 0 = millimetre steps only
    dark_holes: float = 0.5  # fraction of dark-surface pixels (linear albedo luminance < DARK_ALBEDO) with no reading
    glass_holes: float = 0.3  # fraction of window-glass pixels with no reading (the IR pattern passes through)
    edge_holes: float = 0.5  # probability that a pixel on a depth discontinuity has no reading
    max_range_m: float = 8.0  # readings beyond this depth are dropped

    def __post_init__(self) -> None:
        fractions = ("shared_appearance", "dark_holes", "glass_holes", "edge_holes")
        bad = [f"{k}={getattr(self, k)}" for k in fractions if not 0.0 <= getattr(self, k) <= 1.0]
        bad += [f"{k}={getattr(self, k)}" for k in ("depth_noise", "disparity_step_px") if getattr(self, k) < 0]
        bad += [f"max_range_m={self.max_range_m}"] if not DEPTH_RANGE_M[0] < self.max_range_m <= 20 else []
        if bad:
            raise ValueError(f"synthetic scene parameters out of range: {', '.join(bad)}; fix data.synthetic in "
                             "params.yaml (fractions in [0, 1], noise and step >= 0, max_range_m in (0.4, 20])")

    @classmethod
    def from_params(cls, synthetic: dict) -> SceneParams:
        """The knobs of a params.yaml ``data.synthetic`` section (its size and seed keys are ignored)."""
        return cls(**{k: synthetic[k] for k in cls.__dataclass_fields__ if k in synthetic})


# ----------------------------------------------------------------------------------------------------------------
# Camera
# ----------------------------------------------------------------------------------------------------------------

@dataclass(frozen=True, eq=False)
class _Camera:
    origin: np.ndarray  # (3,) metres, world frame
    rot: np.ndarray  # 3×3 world_from_camera


def _rotation(yaw: float, pitch: float, roll: float) -> np.ndarray:
    """World-from-camera rotation: yaw about +y, pitch down (positive) about x, roll about the optical axis."""
    c, s = math.cos(yaw), math.sin(yaw)
    r_yaw = np.array([[c, 0, s], [0, 1, 0], [-s, 0, c]])
    c, s = math.cos(pitch), math.sin(pitch)
    r_pitch = np.array([[1, 0, 0], [0, c, -s], [0, s, c]])
    c, s = math.cos(roll), math.sin(roll)
    r_roll = np.array([[c, -s, 0], [s, c, 0], [0, 0, 1]])
    y_down_to_up = np.diag([1.0, -1.0, 1.0])
    return r_yaw @ r_pitch @ r_roll @ y_down_to_up


def _project(cam: _Camera, points: np.ndarray, intr: dict[str, float]) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """0-based pixel coordinates (u, v) and camera depth z of world ``points`` (N×3)."""
    pc = (points - cam.origin) @ cam.rot  # (N, 3) camera coordinates, rot^T (p - o)
    z = pc[:, 2]
    with np.errstate(divide="ignore", invalid="ignore"):
        u = intr["fx"] * pc[:, 0] / z + intr["cx"] - 1
        v = intr["fy"] * pc[:, 1] / z + intr["cy"] - 1
    return u, v, z


def _camera_rays(cam: _Camera, intr: dict[str, float], height: int, width: int) -> tuple[np.ndarray, ...]:
    """World ray directions (dx, dy, dz), each H×W float32, scaled so that the camera-z component is 1."""
    xc = ((np.arange(width) + 1 - intr["cx"]) / intr["fx"])[None, :]  # (1, W), 1-based principal point
    yc = ((np.arange(height) + 1 - intr["cy"]) / intr["fy"])[:, None]  # (H, 1)
    r = cam.rot
    return tuple((r[k, 0] * xc + r[k, 1] * yc + r[k, 2]).astype(np.float32) for k in range(3))


# ----------------------------------------------------------------------------------------------------------------
# Materials: base colour, value-noise lattice, and a procedural albedo function per kind
# ----------------------------------------------------------------------------------------------------------------

@dataclass(frozen=True, eq=False)
class _Material:
    kind: str  # key of _ALBEDO
    color: np.ndarray  # (3,) linear albedo
    lattice: np.ndarray  # LATTICE×LATTICE value-noise lattice in [0, 1]
    accents: np.ndarray  # (k, 3) linear extra colours (frame, palette, grout, marker, knob)
    # metres: wall items (width, height); floors (plank / tile size, 0); laminate and upholstery (door / cushion width,
    # 0); cardboard (offset of the tape strip, 0)
    size: tuple[float, float] = (0.0, 0.0)


def _material(rng: np.random.Generator, kind: str, srgb, accents=(), size=(0.0, 0.0)) -> _Material:
    """A material from sRGB colours in [0, 1] (stored linear, gamma 2.2)."""
    accents = np.clip(np.asarray(accents, dtype=np.float64).reshape(-1, 3), 0, 1) ** 2.2  # (k, 3)
    color = np.clip(np.asarray(srgb, dtype=np.float64), 0, 1) ** 2.2
    lattice = rng.random((LATTICE, LATTICE)).astype(np.float32)
    return _Material(kind, color.astype(np.float32), lattice, accents.astype(np.float32), size)


def _jitter(rng: np.random.Generator, srgb, amount: float = 0.03) -> np.ndarray:
    return np.clip(np.asarray(srgb, dtype=np.float64) + rng.uniform(-amount, amount, 3), 0, 1)


def _hsv(rng: np.random.Generator, sat: tuple[float, float], val: tuple[float, float]) -> np.ndarray:
    return np.array(colorsys.hsv_to_rgb(rng.random(), rng.uniform(*sat), rng.uniform(*val)))


def _hue(rng: np.random.Generator, hue: tuple[float, float], sat: tuple[float, float],
         val: tuple[float, float]) -> np.ndarray:
    """An sRGB colour from a hue band (fractions of the colour circle), saturation and value ranges."""
    return np.array(colorsys.hsv_to_rgb(rng.uniform(*hue) % 1.0, rng.uniform(*sat), rng.uniform(*val)))


_LIGHT_WOOD, _DARK_WOOD = np.array([0.80, 0.62, 0.42]), np.array([0.38, 0.23, 0.12])
_WALL_PAINTS = ((0.82, 0.80, 0.74), (0.84, 0.76, 0.62), (0.74, 0.74, 0.72), (0.68, 0.76, 0.82), (0.72, 0.80, 0.70),
                (0.86, 0.74, 0.64), (0.80, 0.70, 0.72))
_PLASTICS = ((0.12, 0.12, 0.13), (0.55, 0.56, 0.58), (0.70, 0.15, 0.12), (0.15, 0.30, 0.60), (0.20, 0.50, 0.30),
             (0.88, 0.88, 0.86), (0.85, 0.60, 0.15))
_DOOR_PAINTS = ((0.90, 0.90, 0.88), (0.30, 0.30, 0.32), (0.45, 0.22, 0.15), (0.30, 0.40, 0.55), (0.55, 0.36, 0.20))
_FRAMES = ((0.08, 0.08, 0.08), (0.75, 0.60, 0.25), (0.92, 0.92, 0.90), (0.45, 0.28, 0.15))


def _wood_srgb(rng: np.random.Generator, darkness: tuple[float, float] = (0.0, 1.0)) -> np.ndarray:
    """A wood tone between light oak (darkness 0) and walnut (1), jittered: any tone for the generic wood look."""
    t = rng.uniform(*darkness)
    return _jitter(rng, (1 - t) * _LIGHT_WOOD + t * _DARK_WOOD)


def _fabric_srgb(rng: np.random.Generator) -> np.ndarray:
    """Shared by bed and sofa: a muted colour of any hue."""
    return _hsv(rng, (0.15, 0.55), (0.35, 0.80))


_METAL = (0.72, 0.72, 0.74)


def _shared_look(rng: np.random.Generator, name: str) -> _Material:
    """The generic look of an object's material, the same for every class made of it: any wood (cabinet, counter,
    table, box), any muted fabric (bed, sofa, bag), any plastic (chair)."""
    if name in ("bed", "sofa", "bag"):
        return _material(rng, "fabric", _fabric_srgb(rng))
    if name == "chair":
        return _material(rng, "plastic", _jitter(rng, _PLASTICS[rng.integers(len(_PLASTICS))]))
    return _material(rng, "wood", _wood_srgb(rng))


def _own_look(rng: np.random.Generator, name: str) -> _Material:
    """The look typical of one class: a colour family (hue band) of its own, and a texture.

    The families stand in for the appearance cues an ImageNet-pretrained RGB network reads on real images, which a
    tiny network trained from scratch on 160 small images cannot learn; they are kept apart from each other and from
    the neutral wall paints so that colour alone carries the class.
    """
    if name == "cabinet":  # painted fronts, cyan to blue, with door seams and metal handles
        paint = _hue(rng, (0.48, 0.62), (0.3, 0.6), (0.35, 0.7))
        return _material(rng, "laminate", paint, [_METAL], size=(rng.uniform(0.35, 0.6), 0.0))
    if name == "counter":  # speckled khaki-to-lime stone (beige and black granites looked like walls and tables)
        stone = _hue(rng, (0.17, 0.24), (0.35, 0.6), (0.55, 0.8))
        return _material(rng, "stone", stone, [np.clip(1.0 - stone, 0.1, 0.9)])
    if name == "table":  # strongly grained dark wood (darker than any floorboards)
        return _material(rng, "wood", _wood_srgb(rng, (0.55, 1.0)))
    if name == "box":  # yellow-orange storage boxes with a strip of tape (kraft looked like light floorboards)
        paint = _hue(rng, (0.10, 0.16), (0.7, 0.9), (0.75, 0.95))
        return _material(rng, "cardboard", paint, [_jitter(rng, paint * 0.8, 0.04)], size=(rng.uniform(-0.1, 0.1), 0))
    if name == "bed":  # pastel pink to violet duvets
        return _material(rng, "bedding", _hue(rng, (0.78, 0.96), (0.3, 0.55), (0.72, 0.9)))
    if name == "sofa":  # dark green upholstery with cushion seams
        return _material(rng, "upholstery", _hue(rng, (0.26, 0.42), (0.35, 0.7), (0.2, 0.5)),
                         size=(rng.uniform(0.5, 0.7), 0.0))
    if name == "chair":  # bright red plastic
        return _material(rng, "plastic", _hue(rng, (-0.03, 0.05), (0.7, 0.9), (0.55, 0.85)))
    # bag: vivid violet nylon (the darker blue-violet of earlier rounds looked like the cabinets' blues)
    return _material(rng, "fabric", _hue(rng, (0.68, 0.76), (0.75, 0.95), (0.55, 0.8)))


def _value_noise(lattice: np.ndarray, x: np.ndarray, y: np.ndarray) -> np.ndarray:
    """Smooth noise in [0, 1]: bilinear interpolation (smoothstep weights) of a periodic lattice at (x, y)."""
    g = lattice.shape[0]
    x0, y0 = np.floor(x), np.floor(y)
    fx, fy = x - x0, y - y0
    fx, fy = fx * fx * (3 - 2 * fx), fy * fy * (3 - 2 * fy)
    i0, j0 = x0.astype(np.int64) % g, y0.astype(np.int64) % g
    i1, j1 = (i0 + 1) % g, (j0 + 1) % g
    top = lattice[j0, i0] * (1 - fx) + lattice[j0, i1] * fx
    bottom = lattice[j1, i0] * (1 - fx) + lattice[j1, i1] * fx
    return top * (1 - fy) + bottom * fy


def _fbm(lattice: np.ndarray, x: np.ndarray, y: np.ndarray, octaves: int = 3) -> np.ndarray:
    """Fractal sum of value noise, normalised to [0, 1]."""
    total = np.zeros_like(x)
    for k in range(octaves):
        total += 0.5**k * _value_noise(lattice, x * 2**k + 5.3 * k, y * 2**k + 1.7 * k)
    return total / (2 - 0.5 ** (octaves - 1))


def _gain(m: _Material, g: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Albedo ``m.color`` times a per-pixel gain, and no emission."""
    return m.color * g[:, None], np.zeros_like(g)


def _paint(m: _Material, u: np.ndarray, v: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    return _gain(m, 0.95 + 0.1 * _fbm(m.lattice, u * 2.0, v * 2.0))


def _plastic(m: _Material, u: np.ndarray, v: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    return _gain(m, 0.95 + 0.08 * _fbm(m.lattice, u * 3.0, v * 3.0))


def _wood(m: _Material, u: np.ndarray, v: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    grain = np.sin(2 * np.pi * (v * 14 + 2.5 * _fbm(m.lattice, u * 1.2, v * 4)))
    return _gain(m, 0.82 + 0.1 * grain + 0.16 * _fbm(m.lattice, u * 6 + 7.1, v * 6))


def _fabric(m: _Material, u: np.ndarray, v: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    return _gain(m, 0.8 + 0.25 * _fbm(m.lattice, u * 25, v * 25) + 0.1 * _fbm(m.lattice, u * 2 + 3.3, v * 2))


def _carpet(m: _Material, u: np.ndarray, v: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    return _gain(m, 0.75 + 0.35 * _fbm(m.lattice, u * 30, v * 30))


def _lampshade(m: _Material, u: np.ndarray, v: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    albedo, _ = _gain(m, 0.92 + 0.08 * _fbm(m.lattice, u * 8, v * 8))
    return albedo, np.full_like(u, 0.6)


def _planks(m: _Material, u: np.ndarray, v: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Floorboards running along v, ``size[0]`` metres wide, 1.2 m long with staggered joints."""
    k = np.floor(u / m.size[0])
    row = k.astype(np.int64) % LATTICE
    seam = np.abs(u / m.size[0] - k - 0.5) > 0.46
    joint = ((v + 1.2 * m.lattice[row, 1]) / 1.2) % 1 < 0.012
    grain = 0.92 + 0.08 * np.sin(2 * np.pi * (u * 40 + 3 * _fbm(m.lattice, u * 2, v * 0.5)))
    g = (0.8 + 0.35 * m.lattice[row, 0]) * grain * np.where(seam | joint, 0.6, 1.0)
    return _gain(m, g)


def _tiles(m: _Material, u: np.ndarray, v: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Square tiles of ``size[0]`` metres with grout lines (accent 0)."""
    iu, iv = np.floor(u / m.size[0]), np.floor(v / m.size[0])
    grout = (u / m.size[0] - iu < 0.03) | (v / m.size[0] - iv < 0.03)
    tone = m.lattice[iv.astype(np.int64) % LATTICE, iu.astype(np.int64) % LATTICE]
    albedo, emit = _gain(m, (0.9 + 0.15 * tone) * (0.96 + 0.08 * _fbm(m.lattice, u * 6, v * 6)))
    albedo[grout] = m.accents[0]
    return albedo, emit


def _frame_mask(m: _Material, u: np.ndarray, v: np.ndarray, width: float) -> np.ndarray:
    w, h = m.size
    return (u < width) | (u > w - width) | (v < width) | (v > h - width)


def _picture(m: _Material, u: np.ndarray, v: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """A colourful smooth image mixing three palette colours (accents 1..3) inside a frame (accent 0)."""
    a = np.clip((_fbm(m.lattice, u * 4, v * 4) - 0.5) * 3 + 0.5, 0, 1)[:, None]
    b = np.clip((_fbm(m.lattice, u * 3 + 11, v * 3 + 5) - 0.5) * 3 + 0.5, 0, 1)[:, None]
    albedo = (m.accents[1] * (1 - a) + m.accents[2] * a) * (1 - b) + m.accents[3] * b
    albedo[_frame_mask(m, u, v, 0.015 + 0.05 * min(m.size))] = m.accents[0]
    return albedo, np.zeros_like(u)


def _whiteboard(m: _Material, u: np.ndarray, v: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """A glossy white board with an aluminium frame (accent 0) and three wavy marker strokes (accent 1)."""
    w, h = m.size
    albedo, emit = _gain(m, 0.97 + 0.04 * _fbm(m.lattice, u * 1.5, v * 1.5))
    for k in range(3):
        centre, freq, phase = h * (0.25 + 0.5 * m.lattice[k, 0]), 6 + 10 * m.lattice[k, 1], 6 * m.lattice[k, 2]
        span = (u > w * (0.1 + 0.3 * m.lattice[k, 3])) & (u < w * (0.5 + 0.4 * m.lattice[k, 4]))
        stroke = np.abs(v - centre - 0.04 * h * np.sin(u * freq + phase)) < 0.008
        albedo[span & stroke] = m.accents[1]
    albedo[_frame_mask(m, u, v, 0.025)] = m.accents[0]
    return albedo, emit


def _window(m: _Material, u: np.ndarray, v: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Bright sky (zenith accent 1, horizon accent 2, clouds) behind a frame with mullion and transom (accent 0)."""
    w, h = m.size
    t = np.clip(v / h, 0, 1)[:, None]
    clouds = np.clip((_fbm(m.lattice, u * 1.5, v * 3) - 0.45) * 3, 0, 0.7)[:, None]
    albedo = (m.accents[2] * (1 - t) + m.accents[1] * t) * (1 - clouds) + 0.95 * clouds
    emit = np.full_like(u, 0.9)
    frame = _frame_mask(m, u, v, 0.06) | (np.abs(u - w / 2) < 0.025) | (np.abs(v - 0.65 * h) < 0.025)
    albedo[frame], emit[frame] = m.accents[0], 0.0
    return albedo, emit


def _door(m: _Material, u: np.ndarray, v: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """A painted door with two recessed panels (darker outlines) and a metal knob (accent 0)."""
    w, h = m.size
    albedo, emit = _gain(m, 0.95 + 0.08 * _fbm(m.lattice, u * 2, v * 2))
    for lo, hi in ((0.12, 0.45 * h), (0.55 * h, h - 0.12)):
        inside = (u > 0.12) & (u < w - 0.12) & (v > lo) & (v < hi)
        inner = (u > 0.135) & (u < w - 0.135) & (v > lo + 0.015) & (v < hi - 0.015)
        albedo[inside & ~inner] *= 0.65
    albedo[(u - (w - 0.08)) ** 2 + (v - 0.95) ** 2 < 0.03**2] = m.accents[0]
    return albedo, emit


def _laminate(m: _Material, u: np.ndarray, v: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Flat paint with dark seams between doors ``size[0]`` metres wide and a handle (accent 0) beside each seam."""
    w = m.size[0]
    f = (u / w) % 1.0
    albedo, emit = _gain(m, np.where((f < 0.015) | (f > 0.985), 0.45, 0.97 + 0.05 * _fbm(m.lattice, u * 3, v * 3)))
    handle = (np.abs(f * w - 0.06) < 0.012) & (np.abs(v) < 0.08)
    albedo[handle] = m.accents[0]
    return albedo, emit


def _stone(m: _Material, u: np.ndarray, v: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Granite: fine speckles of a contrasting colour (accent 0) over a cloudy base."""
    albedo, emit = _gain(m, 0.85 + 0.3 * _fbm(m.lattice, u * 5, v * 5))
    speckle = _value_noise(m.lattice, u * 90 + 3.1, v * 90 + 7.7) > 0.78
    albedo[speckle] = m.accents[0]
    return albedo, emit


def _cardboard(m: _Material, u: np.ndarray, v: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Board with fibrous noise and a 5 cm strip of tape (accent 0) along u at offset ``size[0]``."""
    albedo, emit = _gain(m, 0.9 + 0.15 * _fbm(m.lattice, u * 40, v * 8))
    albedo[np.abs(v - m.size[0]) < 0.025] = m.accents[0]
    return albedo, emit


def _bedding(m: _Material, u: np.ndarray, v: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Sheets and duvets: soft folds (low-frequency shading bands)."""
    folds = np.sin(2 * np.pi * (u * 2.5 + 1.5 * _fbm(m.lattice, u * 1.5, v * 1.5)))
    return _gain(m, 0.9 + 0.08 * folds + 0.05 * _fbm(m.lattice, u * 20, v * 20))


def _upholstery(m: _Material, u: np.ndarray, v: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Woven fabric with dark seams between cushions ``size[0]`` metres wide."""
    f = (u / m.size[0]) % 1.0
    seam = (f < 0.02) | (f > 0.98)
    return _gain(m, np.where(seam, 0.5, 0.85 + 0.25 * _fbm(m.lattice, u * 30, v * 30)))


_ALBEDO: dict[str, Callable[[_Material, np.ndarray, np.ndarray], tuple[np.ndarray, np.ndarray]]] = {
    "paint": _paint, "plastic": _plastic, "wood": _wood, "fabric": _fabric, "carpet": _carpet,
    "lampshade": _lampshade, "planks": _planks, "tiles": _tiles, "picture": _picture, "whiteboard": _whiteboard,
    "window": _window, "door": _door, "laminate": _laminate, "stone": _stone, "cardboard": _cardboard,
    "bedding": _bedding, "upholstery": _upholstery,
}


# ----------------------------------------------------------------------------------------------------------------
# Scene description and sampling
# ----------------------------------------------------------------------------------------------------------------

@dataclass(frozen=True, eq=False)
class _Part:
    kind: str  # "box", "cylinder" (vertical axis) or "ellipsoid"
    center: tuple[float, float, float]  # world metres
    half: tuple[float, float, float]  # box half extents; cylinder (r, half height, r); ellipsoid radii
    yaw: float  # rotation about +y, radians
    label: int
    material: _Material


@dataclass(frozen=True, eq=False)
class _WallItem:
    face: int  # FACE_LEFT, FACE_RIGHT or FACE_FAR
    s0: float  # start along the wall (z on side walls, x on the far wall), metres
    y0: float  # bottom edge above the floor, metres
    label: int
    material: _Material  # material.size = (width, height)


@dataclass(frozen=True, eq=False)
class _Object:
    """A composite object in its own frame: origin at the footprint centre on the floor, front towards +z."""

    label: int
    parts: list[tuple[str, tuple[float, float, float], tuple[float, float, float], _Material]]
    half_w: float  # footprint half extent along local x
    half_d: float  # footprint half extent along local z
    against_wall: bool


@dataclass(frozen=True, eq=False)
class _Scene:
    room: tuple[float, float, float]  # extents along x, y (ceiling height), z
    camera: _Camera
    parts: list[_Part]
    footprints: list[tuple[float, float, float, float, float]]  # objects' (x, z, half_w, half_d, yaw) on the floor
    items: list[_WallItem]
    wall: _Material
    floor: _Material
    ceiling: _Material
    light: np.ndarray  # (3,) point light position
    light_power: float
    ambient: float


def _box(center, size, m: _Material):
    """A box part from its centre and full size (local frame)."""
    return "box", tuple(center), tuple(s / 2 for s in size), m


def _make_table(rng: np.random.Generator, look: np.random.Generator, shared: bool) -> _Object:
    w, d, h, top = rng.uniform(0.8, 1.6), rng.uniform(0.6, 1.0), rng.uniform(0.70, 0.78), rng.uniform(0.03, 0.05)
    m = _shared_look(look, "table") if shared else _own_look(look, "table")
    legs = [_box((sx * (w / 2 - 0.06), (h - top) / 2, sz * (d / 2 - 0.06)), (0.05, h - top, 0.05), m)
            for sx in (-1, 1) for sz in (-1, 1)]
    return _Object(CLASS_ID["table"], [_box((0, h - top / 2, 0), (w, top, d), m), *legs], w / 2, d / 2, False)


def _make_box(rng: np.random.Generator, look: np.random.Generator, shared: bool) -> _Object:
    w, d, h = rng.uniform(0.3, 0.6), rng.uniform(0.3, 0.6), rng.uniform(0.2, 0.55)
    m = _shared_look(look, "box") if shared else _own_look(look, "box")
    return _Object(CLASS_ID["box"], [_box((0, h / 2, 0), (w, h, d), m)], w / 2, d / 2, False)


def _make_cabinet(rng: np.random.Generator, look: np.random.Generator, shared: bool) -> _Object:
    w, d, h = rng.uniform(0.5, 1.2), rng.uniform(0.4, 0.6), rng.uniform(1.2, 2.0)
    m = _shared_look(look, "cabinet") if shared else _own_look(look, "cabinet")
    return _Object(CLASS_ID["cabinet"], [_box((0, h / 2, 0), (w, h, d), m)], w / 2, d / 2, True)


def _make_counter(rng: np.random.Generator, look: np.random.Generator, shared: bool) -> _Object:
    w, d, h = rng.uniform(1.2, 2.4), rng.uniform(0.55, 0.65), rng.uniform(0.86, 0.94)
    m_body = m_top = _shared_look(look, "counter") if shared else _own_look(look, "counter")
    body = _box((0, (h - 0.04) / 2, -0.02), (w - 0.02, h - 0.04, d - 0.04), m_body)
    return _Object(CLASS_ID["counter"], [body, _box((0, h - 0.02, 0), (w, 0.04, d), m_top)], w / 2, d / 2, True)


def _make_bed(rng: np.random.Generator, look: np.random.Generator, shared: bool) -> _Object:
    w, length, base, mattress = rng.uniform(0.9, 1.8), rng.uniform(1.9, 2.1), rng.uniform(0.25, 0.35), \
        rng.uniform(0.15, 0.22)
    m_base = m_top = _shared_look(look, "bed") if shared else _own_look(look, "bed")
    parts = [_box((0, base / 2, 0), (w, base, length), m_base),
             _box((0, base + mattress / 2, 0), (w - 0.04, mattress, length - 0.04), m_top)]
    return _Object(CLASS_ID["bed"], parts, w / 2, length / 2, True)


def _make_sofa(rng: np.random.Generator, look: np.random.Generator, shared: bool) -> _Object:
    w, d, seat, back, arm = rng.uniform(1.5, 2.2), rng.uniform(0.8, 0.95), rng.uniform(0.40, 0.45), \
        rng.uniform(0.8, 0.9), rng.uniform(0.55, 0.65)
    aw, bt = 0.15, 0.2  # arm width, back thickness
    m = _shared_look(look, "sofa") if shared else _own_look(look, "sofa")
    parts = [_box((0, seat / 2, bt / 2), (w - 2 * aw, seat, d - bt), m),
             _box((0, back / 2, -d / 2 + bt / 2), (w, back, bt), m),
             *[_box((sx * (w / 2 - aw / 2), arm / 2, bt / 2), (aw, arm, d - bt), m) for sx in (-1, 1)]]
    return _Object(CLASS_ID["sofa"], parts, w / 2, d / 2, True)


def _make_chair(rng: np.random.Generator, look: np.random.Generator, shared: bool) -> _Object:
    s, seat, back = rng.uniform(0.4, 0.5), rng.uniform(0.43, 0.48), rng.uniform(0.8, 0.95)
    m = _shared_look(look, "chair") if shared else _own_look(look, "chair")
    legs = [_box((sx * (s / 2 - 0.03), (seat - 0.04) / 2, sz * (s / 2 - 0.03)), (0.035, seat - 0.04, 0.035), m)
            for sx in (-1, 1) for sz in (-1, 1)]
    parts = [_box((0, seat - 0.02, 0), (s, 0.04, s), m), _box((0, (seat + back) / 2, -s / 2 + 0.015),
                                                               (s, back - seat, 0.03), m), *legs]
    return _Object(CLASS_ID["chair"], parts, s / 2, s / 2, False)


def _make_lamp(rng: np.random.Generator, look: np.random.Generator, shared: bool) -> _Object:
    h = rng.uniform(1.3, 1.7)
    # dark bronze pole and base (the grey metal of earlier rounds looked like the wall paints)
    metal = _material(look, "plastic", _jitter(look, (0.28, 0.22, 0.16), 0.04))
    # amber shades, lit from inside (cream ones looked like the wall paints)
    shade = _material(look, "lampshade", _hue(look, (0.06, 0.09), (0.55, 0.75), (0.9, 1.0)))
    parts = [("cylinder", (0, 0.015, 0), (0.14, 0.015, 0.14), metal),
             ("cylinder", (0, h / 2, 0), (0.015, h / 2 - 0.03, 0.015), metal)]
    if rng.random() < 0.5:
        r = rng.uniform(0.16, 0.22)
        parts.append(("cylinder", (0, h - 0.1, 0), (r, 0.14, r), shade))
    else:
        r = rng.uniform(0.15, 0.2)
        parts.append(("ellipsoid", (0, h - 0.05 - r, 0), (r, r, r), shade))
    return _Object(CLASS_ID["lamp"], parts, 0.22, 0.22, False)


def _make_bag(rng: np.random.Generator, look: np.random.Generator, shared: bool) -> _Object:
    rx, ry, rz = rng.uniform(0.18, 0.28), rng.uniform(0.14, 0.24), rng.uniform(0.09, 0.15)
    m = _shared_look(look, "bag") if shared else _own_look(look, "bag")
    return _Object(CLASS_ID["bag"], [("ellipsoid", (0, 0.97 * ry, 0), (rx, ry, rz), m)], rx, rz, False)


_MAKERS = {"table": _make_table, "box": _make_box, "cabinet": _make_cabinet, "counter": _make_counter,
           "bed": _make_bed, "sofa": _make_sofa, "chair": _make_chair, "lamp": _make_lamp, "bag": _make_bag}

# Room types: (class, min count, max count) for furniture (placed in this order) and for wall items.
_ROOM_TYPES = (
    ((("bed", 1, 1), ("cabinet", 0, 2), ("table", 0, 1), ("box", 1, 2), ("lamp", 0, 1), ("bag", 0, 2),
      ("chair", 0, 1)), (("door", 0, 1), ("window", 0, 1), ("picture", 1, 2))),
    ((("sofa", 1, 1), ("cabinet", 0, 1), ("table", 1, 1), ("box", 1, 2), ("chair", 0, 2), ("lamp", 0, 1),
      ("bag", 0, 1)), (("door", 0, 1), ("window", 0, 2), ("picture", 1, 3))),
    ((("cabinet", 0, 2), ("table", 1, 2), ("box", 1, 2), ("chair", 1, 3), ("bag", 0, 2), ("lamp", 0, 1)),
     (("door", 0, 1), ("whiteboard", 1, 1), ("window", 0, 1), ("picture", 0, 1))),
    ((("counter", 1, 2), ("cabinet", 1, 2), ("table", 0, 1), ("box", 0, 2), ("chair", 0, 2), ("bag", 0, 1)),
     (("door", 0, 1), ("window", 1, 1), ("picture", 0, 1))),
)


def _footprint(x: float, z: float, half_w: float, half_d: float, yaw: float) -> tuple[float, float, float, float]:
    """Axis-aligned floor rectangle (x0, x1, z0, z1) around a footprint rotated by ``yaw``."""
    c, s = abs(math.cos(yaw)), abs(math.sin(yaw))
    ex, ez = c * half_w + s * half_d, s * half_w + c * half_d
    return x - ex, x + ex, z - ez, z + ez


def _overlaps(a: tuple[float, ...], b: tuple[float, ...], margin: float) -> bool:
    return a[0] < b[1] + margin and b[0] < a[1] + margin and a[2] < b[3] + margin and b[2] < a[3] + margin


def _visible(cam: _Camera, point, margin: float = 0.05) -> bool:
    """Whether a world point projects inside the NYU image (``margin`` as a fraction of its size), in front."""
    u, v, z = _project(cam, np.asarray(point, dtype=np.float64)[None], scaled_intrinsics(*NYU_SIZE))
    h, w = NYU_SIZE
    return bool(z[0] > 0.5 and margin * w < u[0] < (1 - margin) * w and margin * h < v[0] < (1 - margin) * h)


def _place_object(obj: _Object, room, cam: _Camera, taken: list, wall_spans: list,
                  rng: np.random.Generator) -> tuple[list[_Part], tuple[float, ...] | None]:
    """Place ``obj`` on the floor (against a visible wall or free-standing in view).

    Returns:
        The object's parts in world coordinates and its footprint (x, z, half_w, half_d, yaw), or ([], None) if no
        free spot was found.
    """
    width, _, depth = room
    cam_xz = (float(cam.origin[0]), float(cam.origin[2]))
    for _ in range(40):
        if obj.against_wall:
            face = _VISIBLE_WALLS[rng.integers(3)]
            length = depth if face != FACE_FAR else width
            along = rng.uniform(obj.half_w + 0.05, length - obj.half_w - 0.05)
            x, z, yaw = {FACE_LEFT: (obj.half_d + 0.01, along, math.pi / 2),
                         FACE_RIGHT: (width - obj.half_d - 0.01, along, -math.pi / 2),
                         FACE_FAR: (along, depth - obj.half_d - 0.01, math.pi)}[face]
        else:
            cam_yaw = math.atan2(cam.rot[0, 2], cam.rot[2, 2])
            bearing, dist = cam_yaw + rng.uniform(-0.45, 0.45), rng.uniform(1.4, 5.0)
            x, z = cam_xz[0] + dist * math.sin(bearing), cam_xz[1] + dist * math.cos(bearing)
            yaw = rng.choice([0.0, math.pi / 2]) + rng.normal(0, 0.1) if obj.label == CLASS_ID["table"] \
                else rng.uniform(-math.pi, math.pi)
        rect = _footprint(x, z, obj.half_w, obj.half_d, yaw)
        inside = rect[0] > 0.005 and rect[1] < width - 0.005 and rect[2] > 0.005 and rect[3] < depth - 0.005
        near_cam = _overlaps(rect, (cam_xz[0], cam_xz[0], cam_xz[1], cam_xz[1]), 1.0)
        top = max(p[1][1] + p[2][1] for p in obj.parts)
        if inside and not near_cam and not any(_overlaps(rect, r, 0.05) for r in taken) \
                and _visible(cam, (x, top / 2, z)):
            taken.append(rect)
            if obj.against_wall:
                wall_spans.append((face, along - obj.half_w, along + obj.half_w))
            c, s, yaw = math.cos(yaw), math.sin(yaw), float(yaw)
            parts = [_Part(kind, (float(x + lc[0] * c + lc[2] * s), float(lc[1]), float(z - lc[0] * s + lc[2] * c)),
                           tuple(float(h) for h in half), yaw, obj.label, m) for kind, lc, half, m in obj.parts]
            return parts, (float(x), float(z), obj.half_w, obj.half_d, yaw)
    return [], None


def _item_material(rng: np.random.Generator, name: str, wall_srgb: np.ndarray, size) -> _Material:
    """Appearance of a wall item; its mean colour is kept away from the wall's (appearance is its only cue)."""
    if name == "picture":
        palette = [_hsv(rng, (0.4, 0.9), (0.3, 0.95)) for _ in range(3)]
        return _material(rng, "picture", _jitter(rng, (0.5, 0.5, 0.5)),
                         [_FRAMES[rng.integers(len(_FRAMES))], *palette], size)
    if name == "whiteboard":
        marker = ((0.1, 0.1, 0.12), (0.1, 0.2, 0.6), (0.7, 0.1, 0.1))[rng.integers(3)]
        return _material(rng, "whiteboard", _jitter(rng, (0.95, 0.96, 0.97), 0.01), [(0.72, 0.74, 0.76), marker],
                         size)
    if name == "window":
        zenith, horizon = _jitter(rng, (0.45, 0.62, 0.92), 0.05), _jitter(rng, (0.80, 0.88, 0.95), 0.03)
        return _material(rng, "window", horizon, [_jitter(rng, (0.93, 0.93, 0.92), 0.02), zenith, horizon], size)
    while True:  # door
        paint = _wood_srgb(rng) if rng.random() < 0.4 else _jitter(rng, _DOOR_PAINTS[rng.integers(5)])
        if np.abs(paint - wall_srgb).max() > 0.15:
            return _material(rng, "door", paint, [(0.75, 0.72, 0.65)], size)


def _item_size(rng: np.random.Generator, name: str, ceiling: float) -> tuple[float, float, float]:
    """(width, height, bottom height) of a wall item, metres."""
    if name == "picture":
        w, h = rng.uniform(0.3, 1.0), rng.uniform(0.3, 0.8)
        return w, h, min(rng.uniform(1.3, 1.8), ceiling - 0.15 - h / 2) - h / 2
    if name == "whiteboard":
        return rng.uniform(1.2, 2.0), rng.uniform(0.9, 1.2), rng.uniform(0.8, 1.0)
    if name == "window":
        y0 = rng.uniform(0.8, 1.0)
        return rng.uniform(0.8, 1.6), min(rng.uniform(1.0, 1.4), ceiling - 0.2 - y0), y0
    return rng.uniform(0.8, 0.95), rng.uniform(2.0, 2.1), 0.0  # door


def _place_item(name: str, rng: np.random.Generator, room, cam: _Camera, items: list[_WallItem],
                wall_spans: list, wall_srgb: np.ndarray) -> _WallItem | None:
    """Hang a wall item on a visible wall, clear of the other items (and, for doors, of furniture)."""
    width, height, depth = room
    w, h, y0 = _item_size(rng, name, height)
    for _ in range(30):
        face = _VISIBLE_WALLS[rng.integers(3)]
        length = depth if face != FACE_FAR else width
        if length - w < 0.7:
            continue
        s0 = rng.uniform(0.3, length - 0.3 - w)
        clash = any(it.face == face and s0 < it.s0 + it.material.size[0] + 0.1 and it.s0 < s0 + w + 0.1
                    and y0 < it.y0 + it.material.size[1] + 0.1 and it.y0 < y0 + h + 0.1 for it in items)
        blocked = name == "door" and any(f == face and s0 < b + 0.05 and a < s0 + w + 0.05 for f, a, b in wall_spans)
        s_mid, y_mid = s0 + w / 2, y0 + h / 2
        centre = {FACE_LEFT: (0.0, y_mid, s_mid), FACE_RIGHT: (width, y_mid, s_mid), FACE_FAR: (s_mid, y_mid, depth)}
        if not clash and not blocked and _visible(cam, centre[face]):
            return _WallItem(face, s0, y0, CLASS_ID[name], _item_material(rng, name, wall_srgb, (w, h)))
    return None


def _floor_material(rng: np.random.Generator) -> _Material:
    kind = ("planks", "tiles", "carpet")[rng.integers(3)]
    if kind == "planks":
        # floorboards are light (oak, pine) so that a table's own dark wood stands out against the floor
        return _material(rng, "planks", _wood_srgb(rng, (0.0, 0.35)), size=(rng.uniform(0.12, 0.2), 0.0))
    if kind == "tiles":
        tile = _jitter(rng, (0.78, 0.76, 0.72), 0.12)
        return _material(rng, "tiles", tile, [tile * 0.6], size=(rng.uniform(0.3, 0.6), 0.0))
    return _material(rng, "carpet", _hsv(rng, (0.1, 0.45), (0.25, 0.6)))


def _sample_scene(rng: np.random.Generator, knobs: SceneParams) -> _Scene:
    """Room, camera, light, furniture and wall items of one scene.

    Each object draws its look from its own stream (seeded from ``rng``) and the shared-look coin from ``rng``, so
    that ``knobs.shared_appearance`` changes objects' appearance but never the layout.
    """
    room = (rng.uniform(3.2, 6.0), rng.uniform(2.5, 3.0), rng.uniform(3.5, 7.0))
    origin = np.array([rng.uniform(0.35, 0.65) * room[0], rng.uniform(1.0, 1.6), rng.uniform(0.3, 0.9)])
    rot = _rotation(math.radians(rng.uniform(-25, 25)), math.radians(rng.uniform(3, 15)),
                    math.radians(rng.uniform(-4, 4)))
    cam = _Camera(origin, rot)
    wall_srgb = _jitter(rng, _WALL_PAINTS[rng.integers(len(_WALL_PAINTS))])
    furniture, wall_items = _ROOM_TYPES[rng.integers(len(_ROOM_TYPES))]
    parts, footprints, taken, spans, items = [], [], [], [], []
    for name, lo, hi in furniture:
        for _ in range(rng.integers(lo, hi + 1)):
            look = np.random.default_rng(int(rng.integers(1 << 62)))
            shared = bool(rng.random() < knobs.shared_appearance)
            placed, footprint = _place_object(_MAKERS[name](rng, look, shared), room, cam, taken, spans, rng)
            parts += placed
            footprints += [footprint] if footprint is not None else []
    for name, lo, hi in wall_items:
        for _ in range(rng.integers(lo, hi + 1)):
            item = _place_item(name, rng, room, cam, items, spans, wall_srgb)
            items += [item] if item is not None else []
    light = np.array([rng.uniform(0.25, 0.75) * room[0], room[1] - 0.15, rng.uniform(0.3, 0.8) * room[2]],
                     dtype=np.float32)
    return _Scene(room, cam, parts, footprints, items, _material(rng, "paint", wall_srgb), _floor_material(rng),
                  _material(rng, "paint", _jitter(rng, (0.92, 0.92, 0.90), 0.02)), light,
                  float(rng.uniform(0.9, 1.4)), float(rng.uniform(0.25, 0.4)))


# ----------------------------------------------------------------------------------------------------------------
# Ray casting
# ----------------------------------------------------------------------------------------------------------------

def _hit_box(o, d, half) -> np.ndarray:
    """Nearest positive ray parameter of an axis-aligned box centred at 0 (slab test); inf where missed."""
    near, far = -np.inf, np.inf
    with np.errstate(divide="ignore", invalid="ignore"):
        for k in range(3):
            inv = 1.0 / d[k]
            t1, t2 = (-half[k] - o[k]) * inv, (half[k] - o[k]) * inv
            near, far = np.maximum(near, np.minimum(t1, t2)), np.minimum(far, np.maximum(t1, t2))
    return np.where((near <= far) & (near > _EPS), near, np.inf)


def _hit_cylinder(o, d, half) -> np.ndarray:
    """Nearest hit of a capped cylinder with axis y (radius half[0], half height half[1]) seen from outside."""
    r, hh = half[0], half[1]
    a = d[0] * d[0] + d[2] * d[2]
    b = o[0] * d[0] + o[2] * d[2]  # half of the linear coefficient
    disc = b * b - a * (o[0] ** 2 + o[2] ** 2 - r * r)
    with np.errstate(invalid="ignore", divide="ignore"):
        t = (-b - np.sqrt(disc)) / a
        side = (disc >= 0) & (t > _EPS) & (np.abs(o[1] + t * d[1]) <= hh)
        t = np.where(side, t, np.inf)
        if abs(o[1]) > hh:  # the camera sees one cap
            tc = (math.copysign(hh, o[1]) - o[1]) / d[1]
            on_cap = (tc > _EPS) & ((o[0] + tc * d[0]) ** 2 + (o[2] + tc * d[2]) ** 2 <= r * r)
            t = np.minimum(t, np.where(on_cap, tc, np.inf))
    return t


def _hit_ellipsoid(o, d, half) -> np.ndarray:
    """Nearest hit of an ellipsoid with radii ``half`` centred at 0, seen from outside."""
    os_ = [o[k] / half[k] for k in range(3)]
    ds = [d[k] / half[k] for k in range(3)]
    a = ds[0] * ds[0] + ds[1] * ds[1] + ds[2] * ds[2]
    b = os_[0] * ds[0] + os_[1] * ds[1] + os_[2] * ds[2]
    disc = b * b - a * (os_[0] ** 2 + os_[1] ** 2 + os_[2] ** 2 - 1)
    with np.errstate(invalid="ignore"):
        t = (-b - np.sqrt(disc)) / a
    return np.where((disc >= 0) & (t > _EPS), t, np.inf)


_HIT = {"box": _hit_box, "cylinder": _hit_cylinder, "ellipsoid": _hit_ellipsoid}


def _to_local(vec: tuple, yaw: float) -> tuple:
    """Rotate (x, y, z) components by −yaw about +y (world → part frame); works on floats and arrays."""
    c, s = math.cos(yaw), math.sin(yaw)
    return vec[0] * c - vec[2] * s, vec[1], vec[0] * s + vec[2] * c


def _room_exit(o: np.ndarray, rays: tuple[np.ndarray, ...], room) -> tuple[np.ndarray, np.ndarray]:
    """Ray parameter where each ray leaves the room box [0, room] (H×W), and which face it hits (H×W int8)."""
    ts = []
    with np.errstate(divide="ignore"):
        for k in range(3):
            ok, hi = float(o[k]), float(room[k])
            ts.append(np.where(rays[k] > 0, (hi - ok) / rays[k], -ok / rays[k]))
    ts = np.stack(ts)  # (3, H, W)
    axis = ts.argmin(axis=0)
    t = np.take_along_axis(ts, axis[None], axis=0)[0]
    towards_upper = np.take_along_axis(np.stack(rays), axis[None], axis=0)[0] > 0
    return t.astype(np.float32), (2 * axis + towards_upper).astype(np.int8)


def _screen_rect(part: _Part, cam: _Camera, intr: dict[str, float], height: int, width: int):
    """Pixel rectangle (v0, v1, u0, u1) that contains the part's projection, or None when it is off screen."""
    corners = np.array([[sx, sy, sz] for sx in (-1, 1) for sy in (-1, 1) for sz in (-1, 1)]) * part.half  # (8, 3)
    c, s = math.cos(part.yaw), math.sin(part.yaw)
    world = np.stack([corners[:, 0] * c + corners[:, 2] * s, corners[:, 1], -corners[:, 0] * s + corners[:, 2] * c],
                     axis=1) + part.center  # (8, 3)
    u, v, z = _project(cam, world, intr)
    if (z < 0.05).any():
        return 0, height, 0, width
    u0, u1 = max(int(np.floor(u.min())) - 1, 0), min(int(np.ceil(u.max())) + 2, width)
    v0, v1 = max(int(np.floor(v.min())) - 1, 0), min(int(np.ceil(v.max())) + 2, height)
    return (v0, v1, u0, u1) if u0 < u1 and v0 < v1 else None


def _cast(scene: _Scene, rays: tuple[np.ndarray, ...], intr: dict[str, float]):
    """Z-buffered ray casting: depth t (H×W float32), owning part index (−1 = room) and room face."""
    o = scene.camera.origin
    t, face = _room_exit(o, rays, scene.room)
    owner = np.full(t.shape, -1, dtype=np.int16)
    height, width = t.shape
    for i, part in enumerate(scene.parts):
        rect = _screen_rect(part, scene.camera, intr, height, width)
        if rect is None:
            continue
        win = np.s_[rect[0]:rect[1], rect[2]:rect[3]]
        o_local = _to_local(tuple(float(x) for x in o - part.center), part.yaw)
        d_local = _to_local((rays[0][win], rays[1][win], rays[2][win]), part.yaw)
        tp = _HIT[part.kind](o_local, d_local, part.half)
        closer = tp < t[win]
        t[win][closer] = tp[closer]
        owner[win][closer] = i
    return t, owner, face


# ----------------------------------------------------------------------------------------------------------------
# Surfaces: label, normal and albedo of every pixel
# ----------------------------------------------------------------------------------------------------------------

def _part_surface(part: _Part, points: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """World normals (N×3) and surface coordinates (u, v) in metres of hits ``points`` (N×3) on ``part``."""
    p = _to_local(tuple(points[:, k] - part.center[k] for k in range(3)), part.yaw)
    hx, hy, hz = part.half
    if part.kind == "box":
        ratio = np.stack([np.abs(p[k]) / part.half[k] for k in range(3)], axis=1)  # (N, 3)
        axis = ratio.argmax(axis=1)
        normal = np.zeros((len(axis), 3), dtype=np.float32)
        normal[np.arange(len(axis)), axis] = np.sign(np.stack(p, axis=1)[np.arange(len(axis)), axis])
        u = np.where(axis == 0, p[2], p[0]) + 3.7 * axis
        v = np.where(axis == 1, p[2], p[1])
    elif part.kind == "cylinder":
        radial = np.sqrt(p[0] ** 2 + p[2] ** 2) / hx
        cap = np.abs(p[1]) / hy > radial
        normal = np.stack([np.where(cap, 0, p[0] / hx), np.where(cap, np.sign(p[1]), 0),
                           np.where(cap, 0, p[2] / hx)], axis=1)
        u = np.where(cap, p[0], np.arctan2(p[0], p[2]) * hx)
        v = np.where(cap, p[2], p[1])
    else:
        normal = np.stack([p[0] / hx**2, p[1] / hy**2, p[2] / hz**2], axis=1)
        u, v = np.arctan2(p[0], p[2]) * (hx + hz) / 2, p[1]
    normal /= np.linalg.norm(normal, axis=1, keepdims=True)
    c, s = math.cos(part.yaw), math.sin(part.yaw)
    world = np.stack([normal[:, 0] * c + normal[:, 2] * s, normal[:, 1], -normal[:, 0] * s + normal[:, 2] * c], 1)
    return world.astype(np.float32), u.astype(np.float32), v.astype(np.float32)


_FACE_NORMAL = np.array([[1, 0, 0], [-1, 0, 0], [0, 1, 0], [0, -1, 0], [0, 0, 1], [0, 0, -1]], dtype=np.float32)
_FACE_AXES = ((2, 1), (2, 1), (0, 2), (0, 2), (0, 1), (0, 1))  # world axes giving (u, v) on each room face


def _room_surface(scene: _Scene, f: int, points: np.ndarray, label: np.ndarray, albedo: np.ndarray,
                  emit: np.ndarray) -> None:
    """Fill label/albedo/emission (N, N×3, N) of hits ``points`` on room face ``f``, wall items included."""
    u, v = points[:, _FACE_AXES[f][0]], points[:, _FACE_AXES[f][1]]
    material = {FACE_FLOOR: scene.floor, FACE_CEILING: scene.ceiling}.get(f, scene.wall)
    label[:] = {FACE_FLOOR: CLASS_ID["floor"], FACE_CEILING: CLASS_ID["ceiling"]}.get(f, CLASS_ID["wall"])
    albedo[:], emit[:] = _ALBEDO[material.kind](material, u, v)
    for item in scene.items:
        if item.face != f:
            continue
        w, h = item.material.size
        on = (u >= item.s0) & (u < item.s0 + w) & (v >= item.y0) & (v < item.y0 + h)
        label[on] = item.label
        albedo[on], emit[on] = _ALBEDO[item.material.kind](item.material, u[on] - item.s0, v[on] - item.y0)


def _surfaces(scene: _Scene, rays: tuple[np.ndarray, ...], t: np.ndarray, owner: np.ndarray, face: np.ndarray):
    """Per-pixel (flattened, N = H·W) label, world hit points, normals, linear albedo and emission."""
    d = np.stack([r.ravel() for r in rays], axis=1)  # 3 × (H, W) -> (N, 3)
    points = scene.camera.origin.astype(np.float32) + t.ravel()[:, None] * d  # (N, 3)
    n = len(points)
    label, emit = np.empty(n, dtype=np.uint8), np.empty(n, dtype=np.float32)
    albedo, normal = np.empty((n, 3), dtype=np.float32), np.empty((n, 3), dtype=np.float32)
    key = np.where(owner.ravel() >= 0, owner.ravel().astype(np.int32), -1 - face.ravel().astype(np.int32))  # (N,)
    order = np.argsort(key, kind="stable")
    keys, starts = np.unique(key[order], return_index=True)
    for k, idx in zip(keys, np.split(order, starts[1:]), strict=True):
        if k >= 0:
            part = scene.parts[k]
            normal[idx], u, v = _part_surface(part, points[idx])
            label[idx] = part.label
            albedo[idx], emit[idx] = _ALBEDO[part.material.kind](part.material, u, v)
        else:
            normal[idx] = _FACE_NORMAL[-1 - k]
            sub_label, sub_albedo, sub_emit = label[idx], albedo[idx], emit[idx]
            _room_surface(scene, -1 - k, points[idx], sub_label, sub_albedo, sub_emit)
            label[idx], albedo[idx], emit[idx] = sub_label, sub_albedo, sub_emit
    return label, points, normal, albedo, emit, d


def _lambert(scene: _Scene, points: np.ndarray, normal: np.ndarray) -> np.ndarray:
    """Irradiance factor (N,): ambient + point light with cosine law and a soft 1/r² fall-off."""
    to_light = scene.light - points  # (N, 3)
    dist2 = (to_light * to_light).sum(axis=1)
    cos = np.maximum((normal * to_light).sum(axis=1) / np.sqrt(dist2), 0)
    return scene.ambient + scene.light_power * cos * 6.0 / (6.0 + dist2)


def _floor_occlusion(scene: _Scene, points: np.ndarray) -> np.ndarray:
    """Light reaching floor ``points`` (N×3) around and under objects (N,): 1 far away, down to 0.45 beneath."""
    visible = np.ones(len(points), dtype=np.float32)
    for x, z, half_w, half_d, yaw in scene.footprints:
        lx, _, lz = _to_local((points[:, 0] - x, None, points[:, 2] - z), yaw)
        out_x, out_z = np.maximum(np.abs(lx) - half_w, 0), np.maximum(np.abs(lz) - half_d, 0)
        visible *= 1 - 0.55 * np.exp(-np.sqrt(out_x * out_x + out_z * out_z) / 0.12)
    return visible


# ----------------------------------------------------------------------------------------------------------------
# Sensors
# ----------------------------------------------------------------------------------------------------------------

def _projector_shadow(z: np.ndarray, fx: float) -> np.ndarray:
    """Pixels (H×W bool) the projector, PROJECTOR_BASELINE_M left of the camera, cannot see.

    A pixel at column u and depth z appears at projector column u + fx·b/z; along a row, a pixel is occluded when a
    pixel to its left lands further right in the projector image.
    """
    up = np.arange(z.shape[1], dtype=np.float32) + fx * PROJECTOR_BASELINE_M / z  # (H, W)
    left_max = np.maximum.accumulate(up, axis=1)
    return np.concatenate([np.zeros_like(up[:, :1], dtype=bool), up[:, 1:] < left_max[:, :-1] - 0.05], axis=1)


def _dropout_blobs(height: int, width: int, rng: np.random.Generator) -> np.ndarray:
    """One to three random ellipses (H×W bool) where the sensor returns nothing (specular or dark spots)."""
    mask = np.zeros((height, width), dtype=np.uint8)
    for _ in range(rng.integers(1, 4)):
        centre = (int(rng.uniform(0, width)), int(rng.uniform(0, height)))
        axes = (max(1, int(rng.uniform(0.01, 0.035) * width)), max(1, int(rng.uniform(0.01, 0.035) * width)))
        cv2.ellipse(mask, centre, axes, rng.uniform(0, 180), 0, 360, 1, thickness=-1)
    return mask.astype(bool)


def _smooth_field(height: int, width: int, rng: np.random.Generator, cell: int = 4) -> np.ndarray:
    """Random field (H×W) varying over about ``cell`` pixels, uniform on [0, 1): ``field < p`` keeps a fraction p of
    the pixels, in blotches rather than as salt noise."""
    coarse = rng.random((height // cell + 2, width // cell + 2), dtype=np.float32)
    smooth = cv2.resize(coarse, (width, height), interpolation=cv2.INTER_LINEAR)
    ranks = np.empty(smooth.size, dtype=np.float32)
    ranks[smooth.ravel().argsort(kind="stable")] = np.arange(smooth.size, dtype=np.float32) / smooth.size
    return ranks.reshape(height, width)  # interpolation piles values up mid-range; ranks spread them evenly


def _depth_edges(z: np.ndarray) -> np.ndarray:
    """Pixels (H×W bool) whose depth differs from a 4-neighbour's by more than DEPTH_EDGE_JUMP relative."""
    edge = np.zeros(z.shape, dtype=bool)
    jump_v = np.abs(np.diff(z, axis=0)) > DEPTH_EDGE_JUMP * np.minimum(z[1:], z[:-1])
    jump_h = np.abs(np.diff(z, axis=1)) > DEPTH_EDGE_JUMP * np.minimum(z[:, 1:], z[:, :-1])
    edge[1:] |= jump_v
    edge[:-1] |= jump_v
    edge[:, 1:] |= jump_h
    edge[:, :-1] |= jump_h
    return edge


def _depth_sensor(z: np.ndarray, cos_view: np.ndarray, fx: float, rng: np.random.Generator,
                  knobs: SceneParams | None = None, dark: np.ndarray | None = None,
                  glass: np.ndarray | None = None) -> np.ndarray:
    """Kinect-like uint16 millimetre depth (H×W) from clean camera-z depth ``z`` (metres), 0 = missing.

    ``dark`` and ``glass`` (H×W bool) mark dark and window-glass surfaces, which lose their reading in
    ``knobs.dark_holes`` / ``knobs.glass_holes`` of their area (in blotches, as on a real sensor).
    """
    knobs = SceneParams() if knobs is None else knobs
    height, width = z.shape
    sigma = knobs.depth_noise * (0.0012 + 0.0019 * (z - 0.4) ** 2)
    noisy = z + sigma * rng.standard_normal(z.shape, dtype=np.float32)
    if knobs.disparity_step_px > 0:  # the sensor measures disparity f·b/z in fixed sub-pixel steps
        scale = KINECT_FOCAL_PX * PROJECTOR_BASELINE_M
        with np.errstate(divide="ignore"):
            steps = np.maximum(np.rint(scale / noisy / knobs.disparity_step_px), 1)
        noisy = (scale / (steps * knobs.disparity_step_px)).astype(np.float32)
    holes = (_projector_shadow(z, fx) | _dropout_blobs(height, width, rng)
             | ((cos_view < 0.12) & (rng.random(z.shape, dtype=np.float32) < 0.6))
             | (rng.random(z.shape, dtype=np.float32) < 0.002)
             | (noisy < DEPTH_RANGE_M[0]) | (noisy > knobs.max_range_m))
    # The draws below happen whatever the knobs, so that one knob never reshuffles another's holes.
    field = _smooth_field(height, width, rng)
    edge_draw = rng.random(z.shape, dtype=np.float32)
    if dark is not None:
        holes |= dark & (field < knobs.dark_holes)
    if glass is not None:
        holes |= glass & (field < knobs.glass_holes)
    holes |= _depth_edges(z) & (edge_draw < knobs.edge_holes)
    mm = np.rint(noisy * 1000.0)
    mm[holes] = 0
    return mm.astype(np.uint16)


def _rgb_sensor(linear: np.ndarray, rng: np.random.Generator) -> np.ndarray:
    """uint8 RGB (H×W×3) from linear radiance: vignetting, gamma 2.2, slight blur, shot and read noise."""
    height, width = linear.shape[:2]
    yy, xx = np.mgrid[0:height, 0:width].astype(np.float32)
    r2 = ((xx - width / 2) / (width / 2)) ** 2 + ((yy - height / 2) / (width / 2)) ** 2
    srgb = 255.0 * np.clip(linear * (1 - 0.18 * r2)[..., None], 0, 1) ** (1 / 2.2)
    srgb = cv2.GaussianBlur(srgb, (0, 0), sigmaX=0.5 * max(1.0, width / 640))
    noise = rng.standard_normal(srgb.shape, dtype=np.float32) * np.sqrt(2.0 + 0.04 * srgb)
    return np.clip(np.rint(srgb + noise), 0, 255).astype(np.uint8)


# ----------------------------------------------------------------------------------------------------------------
# Public API
# ----------------------------------------------------------------------------------------------------------------

def render_scene(seed: int, height: int, width: int, knobs: SceneParams | None = None) -> dict:
    """Render one synthetic RGB-D scene.

    Args:
        seed: non-negative scene seed; the same seed gives identical arrays, and the layout does not depend on the
            image size.
        height: image height in pixels.
        width: image width in pixels (NYU intrinsics are scaled per axis, see :func:`scaled_intrinsics`).
        knobs: modality-balance parameters (default: :class:`SceneParams`, the calibrated values).

    Returns:
        {"rgb": H×W×3 uint8 (RGB order), "depth_mm": H×W uint16 (camera-z millimetres, 0 = missing),
        "label": H×W uint8 (NYU-40 index 0..39; every ray hits a surface, so the ignore value 255 never occurs),
        "intrinsics": {"fx", "fy", "cx", "cy"} (pixels, 1-based principal point)}.
    """
    if seed < 0 or height < 8 or width < 8:
        raise ValueError(f"render_scene: need seed >= 0 and an image of at least 8×8 pixels, got seed={seed}, "
                         f"{height}×{width}")
    knobs = SceneParams() if knobs is None else knobs
    # Separate streams: layout, depth sensor, RGB sensor (a depth knob never changes the RGB image).
    layout_seq, depth_seq, rgb_seq = np.random.SeedSequence(seed).spawn(3)
    scene = _sample_scene(np.random.default_rng(layout_seq), knobs)
    intr = scaled_intrinsics(height, width)
    rays = _camera_rays(scene.camera, intr, height, width)
    t, owner, face = _cast(scene, rays, intr)
    label, points, normal, albedo, emit, d = _surfaces(scene, rays, t, owner, face)
    light = _lambert(scene, points, normal)
    on_floor = label == CLASS_ID["floor"]
    light[on_floor] *= _floor_occlusion(scene, points[on_floor])
    linear = albedo * (light + emit)[:, None]  # (N, 3)
    cos_view = np.abs((normal * d).sum(axis=1)) / np.linalg.norm(d, axis=1)
    luminance = albedo @ np.array([0.2126, 0.7152, 0.0722], dtype=np.float32)  # (N,)
    dark = (luminance < DARK_ALBEDO).reshape(height, width)
    glass = ((label == CLASS_ID["window"]) & (emit > 0)).reshape(height, width)  # panes, not the frame
    depth_mm = _depth_sensor(t, cos_view.reshape(height, width), intr["fx"], np.random.default_rng(depth_seq),
                             knobs, dark, glass)  # cos_view (N,) -> (H, W)
    rgb = _rgb_sensor(linear.reshape(height, width, 3), np.random.default_rng(rgb_seq))  # (N, 3) -> (H, W, 3)
    return {"rgb": rgb, "depth_mm": depth_mm, "label": label.reshape(height, width), "intrinsics": intr}  # (H, W)


def scene_seed(seed: int, split: str, index: int) -> int:
    """Seed of image ``index`` of ``split`` in a dataset generated with ``seed``; depends on nothing else."""
    return int(np.random.SeedSequence([seed, SPLITS.index(split), index]).generate_state(1, np.uint64)[0])


def _write_scene(job: tuple[str, int], root: Path, height: int, width: int, seed: int,
                 knobs: SceneParams | None = None) -> list[int]:
    """Render one image of the dataset into ``root``; return the label values it contains."""
    split, index = job
    name, layout = f"{split}_{index:04d}", Layout(root)
    scene = render_scene(scene_seed(seed, split, index), height, width, knobs)
    write_png(layout.rgb(name), scene["rgb"])
    write_png(layout.depth(name), scene["depth_mm"])
    write_png(layout.label(name), scene["label"])
    return np.unique(scene["label"]).tolist()


def generate_dataset(out_dir: str | os.PathLike, num_train: int, num_test: int, height: int, width: int, seed: int,
                     workers: int = 1, knobs: SceneParams | None = None) -> Path:
    """Write a synthetic dataset in the prepared layout (see primkd.data.layout), atomically.

    Image i of a split ("train_0000", "test_0000", ...) depends only on (``seed``, split, i), so a larger dataset
    starts with the images of a smaller one. meta.json holds the 40 NYU-40 class names (labels index them), the
    scaled intrinsics, ``present_classes`` (sorted label values occurring in any image), the seed and the sizes.

    Args:
        out_dir: destination folder; replaced as a whole once every file is written.
        num_train: number of training images (≥ 1).
        num_test: number of test images (≥ 1).
        height: image height in pixels.
        width: image width in pixels.
        seed: dataset seed (≥ 0).
        workers: processes rendering in parallel (1 = in this process).
        knobs: modality-balance parameters (default: :class:`SceneParams`); recorded in meta.json.

    Returns:
        ``out_dir`` as a Path.
    """
    if num_train < 1 or num_test < 1 or seed < 0 or workers < 1:
        raise ValueError(f"generate_dataset: need num_train >= 1, num_test >= 1, seed >= 0 and workers >= 1, got "
                         f"{num_train}, {num_test}, {seed}, {workers}; fix the synthetic section of params.yaml")
    jobs = [("train", i) for i in range(num_train)] + [("test", i) for i in range(num_test)]
    knobs = SceneParams() if knobs is None else knobs
    present: set[int] = set()
    with atomic_dir(out_dir) as tmp:
        work = functools.partial(_write_scene, root=tmp, height=height, width=width, seed=seed, knobs=knobs)
        bar = functools.partial(tqdm, total=len(jobs), desc="synthetic scenes", unit="img")
        if workers > 1:
            with process_pool(workers, __name__) as pool:
                for classes in bar(pool.map(work, jobs, chunksize=max(1, len(jobs) // (8 * workers)))):
                    present.update(classes)
        else:
            for classes in bar(map(work, jobs)):
                present.update(classes)
        for split, count in (("train", num_train), ("test", num_test)):
            write_split(tmp, split, [f"{split}_{i:04d}" for i in range(count)])
        write_json(Layout(tmp).meta_path, {
            "name": "synthetic", "classes": list(NYU40_CLASSES), "present_classes": sorted(present),
            "ignore_index": IGNORE_INDEX, "intrinsics": scaled_intrinsics(height, width), "depth_scale": 1000,
            "seed": seed, "num_train": num_train, "num_test": num_test, "height": height, "width": width,
            "scene_params": dataclasses.asdict(knobs),
        })
    return Path(out_dir)
