"""HHA encoding of depth (Gupta et al., ECCV 2014), computed as Depth2HHA-python computes it (docs/design.md §4).

HHA turns one depth map into three uint8 channels: horizontal **disparity** (31000 / depth in cm), **height** above
the lowest point (cm, along the estimated gravity direction) and the **angle** between each surface normal and
gravity (degrees + 38). This implementation computes the reference's numbers with whole-image running-sum box filters
and a closed-form 3×3 solve per pixel, about 70× less CPU time per 480×640 image than the reference in the same process
(bench/hha_speed.py, docs/BENCHMARKS.md). Conventions that the numbers depend on:

- Camera coordinates: x right, y down, z forward; the principal point (cx, cy) is **1-based** (MATLAB), so the pixel at
  0-based column u, row v back-projects to X = (u + 1 − cx)·Z/fx, Y = (v + 1 − cy)·Z/fy.
- Everything is in centimetres and float64 (float32 loses the precision the normal solve needs).
- Normals come from a least-squares plane fit aX + bY + cZ = 1 over a square window (zero padding, missing pixels
  dropped); a window with fewer than two valid pixels has a NaN normal. Windows whose valid pixels are collinear in
  the image have no defined normal: the reference returns one set by rounding noise, and so does this code (a
  different one), which is why such pixels may differ.
- On disk the channels are disparity, height, angle in PNG R, G, B order.
"""

from __future__ import annotations

import os
import threading
from collections.abc import Iterable, Sequence
from concurrent.futures import as_completed
from pathlib import Path

import cv2
import numpy as np
from tqdm import tqdm

from primkd.data.layout import SPLITS, Layout, intrinsics_for, read_meta, read_split
from primkd.data.layout import depth_scale as layout_depth_scale
from primkd.data.workers import process_pool
from primkd.io import DataError, read_image, write_png

ANGLE_RADIUS = 3  # 7×7 window for the normals of the angle channel
GRAVITY_RADIUS = 10  # 21×21 window for the normals that gravity is estimated from
GRAVITY_PASSES = ((45.0, 5), (15.0, 5))  # (threshold in degrees, iterations) of the gravity estimate
GRAVITY_MARGIN = 0.03  # |y·n| band around a threshold whose normals are re-classified at each iteration
GRAVITY_CHUNK = 32768  # normals per chunk when the gravity scatter matrix is summed from scratch
DISPARITY_CM = 31000.0  # disparity = DISPARITY_CM / max(Z_cm, MIN_DEPTH_CM)
MIN_DEPTH_CM = 100.0
ANGLE_OFFSET_DEG = 38.0  # 128 − 90: the angle channel stores angle + 38
MIN_HEIGHT_FLOOR_CM = -90.0  # if the lowest point is above this height ...
DEFAULT_MIN_HEIGHT_CM = -130.0  # ... the floor is assumed this far below the camera instead
IDENTITY_ANGLE_DEG = 0.1  # gravity closer than this to the camera's y axis is taken as the y axis itself
BAND_ROWS = 32  # rows per band of the normal solve (keeps its temporaries in the CPU cache; 16 and 64 are slower)


def check_depth(depth_m: np.ndarray, source: str = "depth", out: np.ndarray | None = None) -> np.ndarray:
    """Check a depth map and return it as float64 metres (a copy, in ``out`` if given).

    Args:
        depth_m: H×W depth in metres, 0 = missing.
        source: name of the file (or array) the depth came from, used in error messages.
        out: optional H×W float64 array to copy the depth into.

    Raises:
        DataError: the array is not 2-D or real-valued, or holds NaN, ±Inf or negative values.
    """
    depth = np.asarray(depth_m)
    if depth.ndim != 2:
        raise DataError(f"{source}: depth must be a single-channel H×W map, got shape {depth.shape}")
    if not (np.issubdtype(depth.dtype, np.floating) or np.issubdtype(depth.dtype, np.integer)):
        raise DataError(f"{source}: depth must be real-valued metres, got dtype {depth.dtype}")
    if out is None:
        depth = depth.astype(np.float64)
    else:
        np.copyto(out, depth)
        depth = out
    n_bad = depth.size - np.count_nonzero(np.isfinite(depth))
    if n_bad:
        raise DataError(f"{source}: depth holds {n_bad} NaN or infinite values; encode missing depth as 0")
    n_negative = np.count_nonzero(depth < 0)
    if n_negative:
        raise DataError(f"{source}: depth holds {n_negative} negative values; depth must be metres >= 0, 0 = missing")
    return depth


def pixel_rays(shape: tuple[int, int], intrinsics: dict) -> tuple[np.ndarray, np.ndarray]:
    """Normalised image coordinates X/Z of each column and Y/Z of each row.

    Args:
        shape: (H, W).
        intrinsics: {"fx", "fy", "cx", "cy"} in pixels, 1-based principal point.

    Returns:
        x_over_z of shape (1, W) and y_over_z of shape (H, 1), so that X = x_over_z·Z and Y = y_over_z·Z.
    """
    H, W = shape
    x_over_z = (np.arange(1, W + 1, dtype=np.float64) - float(intrinsics["cx"])) / float(intrinsics["fx"])
    y_over_z = (np.arange(1, H + 1, dtype=np.float64) - float(intrinsics["cy"])) / float(intrinsics["fy"])
    return x_over_z[None, :], y_over_z[:, None]  # (1, W), (H, 1)


class _Workspace:
    """The full-image buffers of one image shape (~70 MB at 480×640), kept between calls in each thread.

    Allocating them afresh for every image makes the kernel map and zero new pages each time (about a quarter of the
    encoding's CPU time, as system time); a dataset conversion encodes many images of one shape.
    """

    def __init__(self, shape: tuple[int, int]) -> None:
        self.shape = shape
        self.sums = [np.empty((9, *shape)) for _ in (GRAVITY_RADIUS, ANGLE_RADIUS)]  # window sums per radius
        self.normals = np.empty((3, *shape))  # the gravity normals
        self.scratch = np.empty((5, *shape))  # the per-pixel terms being summed
        self.depth, self.height = np.empty(shape), np.empty(shape)
        self.solve = np.empty((7, BAND_ROWS, shape[1]))  # the normal solve's band temporaries
        self.gravity = np.empty((6, GRAVITY_CHUNK))  # the gravity estimate's chunk temporaries


_LOCAL = threading.local()


def _workspace(shape: tuple[int, int]) -> _Workspace:
    """This thread's workspace for images of ``shape`` (replacing one of another shape)."""
    workspace = getattr(_LOCAL, "workspace", None)
    if workspace is None or workspace.shape != shape:
        _LOCAL.workspace = workspace = None  # free the old buffers before allocating the new ones
        _LOCAL.workspace = workspace = _Workspace(shape)
    return workspace


def _window_sums(depth_cm: np.ndarray, valid: np.ndarray, x: np.ndarray, y: np.ndarray, radii: Sequence[int],
                 sums: Sequence[np.ndarray] | None = None, scratch: np.ndarray | None = None) -> list[np.ndarray]:
    """Window sums of the terms of the normal equations of a·x̃ + b·ỹ + c = 1/Z, for each radius.

    The nine per-pixel terms are x̃², x̃ỹ, x̃, ỹ², ỹ, 1 (entries of AᵀA) and x̃/Z, ỹ/Z, 1/Z (Aᵀb), zero at invalid
    pixels. Each is computed once into a scratch map and summed at once over the (2r+1)×(2r+1) window of every radius
    (zero outside the image): the map is still in the CPU cache, and whole-image running-sum box filters do not
    recompute the overlapping halos that filtering bands of rows would (1.6× the work at radius 10).

    Args:
        depth_cm, valid: H×W depth (cm) and validity.
        x, y: X/Z of each column (1×W) and Y/Z of each row (H×1).
        radii: window radii.
        sums: optional 9×H×W output buffers, one per radius.
        scratch: optional 5×H×W buffer for the terms.

    Returns:
        Per radius, 9×H×W sums in the order above.
    """
    scratch = np.empty((5, *depth_cm.shape)) if scratch is None else scratch
    one, inv_z, x_one, y_one, term = scratch
    np.copyto(one, valid)
    np.maximum(depth_cm, np.finfo(np.float64).tiny, out=inv_z)  # 1/Z where valid, 0 elsewhere, without a masked divide
    np.divide(one, inv_z, out=inv_z)
    np.multiply(one, x, out=x_one)
    np.multiply(one, y, out=y_one)
    terms = ((x_one, x), (x_one, y), (x_one, None), (y_one, y), (y_one, None), (one, None),
             (inv_z, x), (inv_z, y), (inv_z, None))  # each term is the product of the pair
    sums = [np.empty((9, *depth_cm.shape)) for _ in radii] if sums is None else sums
    for k, (base, factor) in enumerate(terms):
        if factor is not None:
            np.multiply(base, factor, out=term)
        for radius, out in zip(radii, sums):
            size = 2 * radius + 1
            cv2.boxFilter(base if factor is None else term, -1, (size, size), dst=out[k], normalize=False,
                          borderType=cv2.BORDER_CONSTANT)
    return list(sums)


def _unit_normals(sums: np.ndarray, out: np.ndarray, invalid: float, scratch: np.ndarray,
                  normalise: bool = True) -> None:
    """Unit plane normals adj(AᵀA)·Aᵀb / |·| of a band from its nine window sums (9×h×W) into ``out`` (3×h×W).

    ``invalid`` (NaN, or 0 for the gravity estimate) where a window holds fewer than two valid pixels. The ~40
    elementwise operations on band arrays are what this costs, so they write into the 7×h×W ``scratch``. With
    ``normalise`` false the normals are left unnormalised and ``invalid`` is not applied (the caller does both).
    """
    a0, a1, a2, a3, a4, a5, b0, b1, b2 = sums  # AᵀA = [[a0, a1, a2], [a1, a3, a4], [a2, a4, a5]], Aᵀb = (b0, b1, b2)
    adj, tmp = scratch[:6], scratch[6]
    for k, (p, q, r, s) in enumerate(((a3, a5, a4, a4), (a2, a4, a1, a5), (a1, a4, a2, a3),
                                      (a0, a5, a2, a2), (a1, a2, a0, a4), (a0, a3, a1, a1))):
        np.multiply(p, q, out=adj[k])  # adj_k = p·q − r·s
        np.multiply(r, s, out=tmp)
        adj[k] -= tmp
    for i, (j, k, m) in enumerate(((0, 1, 2), (1, 3, 4), (2, 4, 5))):  # row i of the symmetric adjugate times Aᵀb
        np.multiply(adj[j], b0, out=out[i])
        np.multiply(adj[k], b1, out=tmp)
        out[i] += tmp
        np.multiply(adj[m], b2, out=tmp)
        out[i] += tmp
    if not normalise:
        return
    norm = adj[0]  # reused as scratch
    np.multiply(out[0], out[0], out=norm)
    np.multiply(out[1], out[1], out=tmp)
    norm += tmp
    np.multiply(out[2], out[2], out=tmp)
    norm += tmp
    np.sqrt(norm, out=norm)
    with np.errstate(invalid="ignore", divide="ignore"):
        np.divide(1.0, norm, out=norm)
    norm[a5 < 1.5] = invalid  # a5 counts the valid pixels of each window
    out *= norm


def _orient(normals: np.ndarray, depth_cm: np.ndarray, x: np.ndarray, y: np.ndarray) -> None:
    """Flip unit normals (3×h×W, in place) to point away from the camera: N·P >= 0 at the centre point P, or N_z >= 0
    where Z = 0 (and where N·P = 0)."""
    toward_point = normals[0] * x + normals[1] * y + normals[2]  # sign of N·P where Z > 0
    flip = np.where((depth_cm > 0) & (toward_point != 0), toward_point < 0, normals[2] < 0)
    normals *= 1.0 - 2.0 * flip


def compute_normals(depth_cm: np.ndarray, valid: np.ndarray, intrinsics: dict, radius: int,
                    orient: bool = True) -> np.ndarray:
    """Unit surface normals by a least-squares plane fit over a (2r+1)×(2r+1) window.

    The plane aX + bY + cZ = 1 is fitted to the valid pixels of the window (zero padding outside the image) by
    solving the 3×3 normal equations with the adjugate; its normal (a, b, c) is normalised and, if ``orient``, flipped
    to point away from the camera (N·P >= 0 at the centre point P; pixels with Z = 0, or N·P = 0, get N_z >= 0).

    Args:
        depth_cm: H×W depth in centimetres (float64); also gives the centre points used for orientation.
        valid: H×W bool, the pixels that take part in the fits.
        intrinsics: {"fx", "fy", "cx", "cy"}, 1-based principal point.
        radius: window radius r.
        orient: whether to orient the normals (gravity estimation does not need it).

    Returns:
        3×H×W unit normals (x, y, z), NaN where the window holds fewer than two valid pixels.
    """
    x, y = pixel_rays(depth_cm.shape, intrinsics)
    return _normals_from_sums(_window_sums(depth_cm, valid, x, y, [radius])[0], depth_cm, x, y, orient)


def _normals_from_sums(sums: np.ndarray, depth_cm: np.ndarray, x: np.ndarray, y: np.ndarray,
                       orient: bool, invalid: float = np.nan, out: np.ndarray | None = None,
                       scratch: np.ndarray | None = None) -> np.ndarray:
    """Unit (and optionally oriented) normals 3×H×W from the window sums 9×H×W, band by band of rows so that the
    solve's buffers (``scratch``, 7×BAND_ROWS×W) stay in the CPU cache; ``invalid`` where a window has fewer than two
    valid pixels."""
    normals = np.empty((3, *depth_cm.shape)) if out is None else out
    scratch = np.empty((7, BAND_ROWS, depth_cm.shape[1])) if scratch is None else scratch
    for rows in _bands(depth_cm.shape[0]):
        _unit_normals(sums[:, rows], normals[:, rows], invalid, scratch[:, :rows.stop - rows.start])
        if orient:
            _orient(normals[:, rows], depth_cm[rows], x, y[rows])
    return normals


def _bands(height: int) -> list[slice]:
    """Row slices of at most ``BAND_ROWS`` rows covering ``height`` rows."""
    return [slice(start, min(start + BAND_ROWS, height)) for start in range(0, height, BAND_ROWS)]


def _weighted_scatter(nn: np.ndarray, weight: np.ndarray, out: np.ndarray | None = None) -> np.ndarray:
    """Σ_i w_i n_i n_iᵀ of 3×M normals as a 3×3 matrix (six dot products; faster than a 3×M×3 matmul); ``out``: an
    optional 3×M buffer for the weighted normals."""
    wx, wy, wz = np.multiply(nn, weight, out=out)  # (3, M)
    x, y, z = nn
    xy, xz, yz = wx @ y, wx @ z, wy @ z
    return np.array([[wx @ x, xy, xz], [xy, wy @ y, yz], [xz, yz, wz @ z]])


class _Scatter:
    """Σ_wall nnᵀ − Σ_floor nnᵀ for any y close to a reference direction, without re-classifying every normal.

    A normal whose |y_ref·n| is further than ``margin`` from both thresholds keeps its class for every y with
    |y − y_ref| < margin (|Δ(y·n)| <= |Δy| for a unit n), so the contribution of those normals is summed once; only
    the normals near a threshold are re-classified per call.
    """

    def __init__(self, nn: np.ndarray, y_ref: np.ndarray, sin_t: float, cos_t: float, margin: float,
                 scratch: np.ndarray) -> None:
        """``scratch``: a 6×GRAVITY_CHUNK float64 buffer for the chunk temporaries.

        Fixed classes: wall if |y_ref·n| <= sin θ − margin, floor if >= cos θ + margin, neither if between sin θ +
        margin and cos θ − margin; every other normal is near a threshold and re-classified per call.
        """
        self.y_ref, self.margin, self.sin_t, self.cos_t = y_ref, margin, sin_t, cos_t
        self.fixed, near_parts = np.zeros((3, 3)), []
        wall_max, floor_min = sin_t - margin, cos_t + margin  # classes that no y within margin/2 can change
        middle = (sin_t + margin, cos_t - margin)  # neither wall nor floor for every such y (empty at θ = 45°)
        for start in range(0, nn.shape[1], GRAVITY_CHUNK):  # chunks keep the temporaries in the CPU cache
            chunk = nn[:, start:start + GRAVITY_CHUNK]  # (3, C)
            similarity, term, weight = scratch[:3, :chunk.shape[1]]
            _abs_dot(y_ref, chunk, similarity, term)
            wall, floor = similarity <= wall_max, similarity >= floor_min
            near = ~(wall | floor | ((similarity >= middle[0]) & (similarity <= middle[1])))
            np.subtract(wall, floor, out=weight, dtype=np.float64)
            self.fixed += _weighted_scatter(chunk, weight, scratch[3:, :chunk.shape[1]])
            near_parts.append(np.flatnonzero(near) + start)
        self.near_nn = nn[:, np.concatenate(near_parts)]  # (3, K)

    def _weight(self, similarity: np.ndarray) -> np.ndarray:
        """+1 for wall normals (|y·n| < sin θ), −1 for floor normals (|y·n| > cos θ), 0 otherwise."""
        return np.subtract(similarity < self.sin_t, similarity > self.cos_t, dtype=np.float64)

    def covers(self, y: np.ndarray) -> bool:
        """Whether ``y`` is close enough to the reference direction for the fixed part to hold (with slack)."""
        return bool(np.linalg.norm(y - self.y_ref) < 0.5 * self.margin)

    def __call__(self, y: np.ndarray) -> np.ndarray:
        """The 3×3 scatter matrix for direction ``y`` (requires ``covers(y)``)."""
        similarity, term = np.empty((2, self.near_nn.shape[1]))
        return self.fixed + _weighted_scatter(self.near_nn, self._weight(_abs_dot(y, self.near_nn, similarity, term)))


def _abs_dot(y: np.ndarray, nn: np.ndarray, out: np.ndarray, term: np.ndarray) -> np.ndarray:
    """|y·n| of each of the 3×C normals into ``out`` (C); written out because ``y @ nn`` on a strided 3×C view is
    about ten times slower."""
    np.multiply(nn[0], y[0], out=out)
    for i in (1, 2):
        np.multiply(nn[i], y[i], out=term)
        out += term
    return np.abs(out, out=out)


def estimate_gravity(normals: np.ndarray, passes: Sequence[tuple[float, int]] = GRAVITY_PASSES,
                     y0: Sequence[float] = (0.0, 1.0, 0.0), scratch: np.ndarray | None = None) -> np.ndarray:
    """Estimate the gravity (down) direction from a normal field, as the reference ``getYDir`` does.

    Each iteration splits the normals into a floor set (|y·n| > cos θ) and a wall set (|y·n| < sin θ) and takes the
    new y as the eigenvector of the smallest eigenvalue of Σ_wall nnᵀ − Σ_floor nnᵀ, sign-aligned with the previous y.
    An iteration that returns y unchanged ends its pass early (the rest of the pass would repeat it exactly).

    Args:
        normals: 3×H×W normals (unit length, any orientation); NaN normals are ignored. Zero normals may stand for
            missing ones too: they are counted as walls but add nothing to the scatter matrix.
        passes: (θ in degrees, iterations) per pass.
        y0: starting direction (camera y axis, pointing down).
        scratch: optional 6×GRAVITY_CHUNK float64 buffer for temporaries.

    Returns:
        Unit 3-vector in camera coordinates.

    Raises:
        DataError: no normal is valid.
    """
    nn = normals.reshape(3, -1)  # (3, M)
    missing = np.isnan(nn[0])
    if missing.any():
        nn = np.compress(~missing, nn, axis=1)
    if not nn.any():
        raise DataError("no valid surface normal to estimate gravity from (too few valid depth pixels)")
    y = np.asarray(y0, dtype=np.float64)
    scratch = np.empty((6, GRAVITY_CHUNK)) if scratch is None else scratch
    for angle_deg, iterations in passes:
        theta = np.pi * angle_deg / 180.0
        scatter = None
        for _ in range(iterations):
            if scatter is None or not scatter.covers(y):
                scatter = _Scatter(nn, y, np.sin(theta), np.cos(theta), GRAVITY_MARGIN, scratch)
            new_y = np.linalg.eigh(scatter(y))[1][:, 0]  # eigenvector of the smallest eigenvalue
            new_y = new_y if new_y @ y >= 0 else -new_y
            if np.array_equal(new_y, y):
                break
            y = new_y
    return y


def _height_axis(gravity: np.ndarray) -> np.ndarray:
    """The downward axis that heights are measured along: ``gravity``, or the camera y axis if within 0.1° of it."""
    angle_deg = np.degrees(np.arccos(np.clip(gravity[1] / np.linalg.norm(gravity), -1.0, 1.0)))
    return gravity if angle_deg > IDENTITY_ANGLE_DEG else np.array([0.0, 1.0, 0.0])


def _floor_offset(lowest_cm: float) -> float:
    """Height of the floor: the lowest point, or −130 cm if the lowest point is above −90 cm."""
    return lowest_cm if lowest_cm <= MIN_HEIGHT_FLOOR_CM else DEFAULT_MIN_HEIGHT_CM


def _to_uint8(channel: np.ndarray, out: np.ndarray) -> None:
    """Round half to even and clamp at 255 (all channels are >= 0 by construction) into the uint8 ``out``; overwrites
    ``channel``."""
    np.rint(channel, out=channel)
    np.minimum(channel, 255.0, out=channel)
    out[...] = channel


def _angle_channel(normals: np.ndarray, count: np.ndarray, depth_cm: np.ndarray, x: np.ndarray, y: np.ndarray,
                   gravity: np.ndarray, out: np.ndarray, scratch: np.ndarray) -> None:
    """The angle channel of a band into the uint8 ``out`` (h×W): the angle between the oriented unit normal and
    gravity, in degrees + 38 (218 where the window holds fewer than two valid pixels, ``count`` < 1.5).

    ``normals`` (3×h×W) are neither normalised nor oriented: orienting only flips a normal's sign (see _orient), so
    the sign and the length are applied to its dot product with gravity; ``scratch`` holds four h×W buffers.
    """
    cos_angle, toward, term, norm = scratch[:4]
    for dot, factors in ((cos_angle, gravity), (toward, (x, y, 1.0)), (norm, normals)):
        np.multiply(normals[0], factors[0], out=dot)
        np.multiply(normals[1], factors[1], out=term)
        dot += term
        np.multiply(normals[2], factors[2], out=term)
        dot += term
    flip = np.where((depth_cm > 0) & (toward != 0), toward < 0, normals[2] < 0)
    np.multiply(flip, -2.0, out=term)  # the sign as a factor ±1: a masked np.negative(where=) is 5–20× slower
    term += 1.0
    cos_angle *= term
    np.sqrt(norm, out=norm)
    with np.errstate(invalid="ignore", divide="ignore"):
        cos_angle /= norm
    cos_angle[count < 1.5] = np.nan
    np.clip(cos_angle, -1.0, 1.0, out=cos_angle)
    np.arccos(cos_angle, out=cos_angle)
    cos_angle *= 180.0 / np.pi  # what np.degrees computes (bit for bit), without its unvectorised loop
    cos_angle += ANGLE_OFFSET_DEG
    cos_angle[np.isnan(cos_angle)] = 180.0 + ANGLE_OFFSET_DEG
    np.rint(cos_angle, out=cos_angle)
    out[...] = cos_angle  # within 38..218


def compute_hha(depth_m: np.ndarray, intrinsics: dict, missing: np.ndarray | None = None,
                source: str = "depth") -> np.ndarray:
    """HHA encoding of one depth map.

    Steps: (1) gravity from the 21×21-window normals; (2) per band of rows: 7×7-window normals, the angle to gravity
    (NaN → 180°), disparity and the height −y·P; (3) heights relative to the floor (the lowest point, holes at P = 0
    included, or −130 cm). All channels are rounded half to even and clamped at 255.

    Args:
        depth_m: H×W depth in metres (any real dtype; computed in float64), 0 = missing.
        intrinsics: {"fx", "fy", "cx", "cy"} in pixels, **1-based** principal point.
        missing: H×W bool, pixels without a sensor reading (dropped from the normal fits); defaults to depth == 0.
            Pixels with depth 0 are always treated as missing. For in-painted depth (NYU), pass the raw mask.
        source: name used in error messages (e.g. the depth file).

    Returns:
        H×W×3 uint8: disparity, height, angle (the on-disk PNG R, G, B order).

    Raises:
        DataError: invalid depth values, a mask of the wrong shape, or no valid depth pixel at all.
    """
    shape = np.shape(depth_m)
    workspace = _workspace(shape) if len(shape) == 2 else None  # else check_depth raises
    depth_cm = check_depth(depth_m, source, out=workspace.depth if workspace else None)
    depth_cm *= 100.0  # check_depth returned a float64 copy
    valid = _valid_mask(depth_cm, missing, source)
    x, y = pixel_rays(depth_cm.shape, intrinsics)
    gravity_sums, sums = _window_sums(depth_cm, valid, x, y, (GRAVITY_RADIUS, ANGLE_RADIUS), workspace.sums,
                                      workspace.scratch)
    # zero instead of NaN normals: they add nothing to the scatter, and need no compaction
    normals = _normals_from_sums(gravity_sums, depth_cm, x, y, orient=False, invalid=0.0, out=workspace.normals,
                                 scratch=workspace.solve)
    gravity = estimate_gravity(normals, scratch=workspace.gravity)
    axis = _height_axis(gravity)
    hha = np.empty((*depth_cm.shape, 3), dtype=np.uint8)
    height = workspace.height
    normals, scratch = np.empty((3, BAND_ROWS, depth_cm.shape[1])), workspace.solve
    for rows in _bands(depth_cm.shape[0]):
        h = rows.stop - rows.start
        band, depth = normals[:, :h], depth_cm[rows]
        _unit_normals(sums[:, rows], band, np.nan, scratch[:, :h], normalise=False)
        _angle_channel(band, sums[5, rows], depth, x, y[rows], gravity, hha[rows, :, 2], scratch[:, :h])
        buffer = scratch[0, :h]
        np.maximum(depth, MIN_DEPTH_CM, out=buffer)
        np.divide(DISPARITY_CM, buffer, out=buffer)
        _to_uint8(buffer, hha[rows, :, 0])
        np.add(axis[0] * x, axis[1] * y[rows], out=buffer)
        buffer += axis[2]
        np.multiply(buffer, depth, out=height[rows])
        np.negative(height[rows], out=height[rows])  # −y·P
    floor = _floor_offset(float(height.min()))
    for rows in _bands(depth_cm.shape[0]):
        buffer = scratch[0, :rows.stop - rows.start]
        np.subtract(height[rows], floor, out=buffer)
        _to_uint8(buffer, hha[rows, :, 1])
    return hha


def _valid_mask(depth_cm: np.ndarray, missing: np.ndarray | None, source: str) -> np.ndarray:
    """H×W bool: pixels that take part in the normal fits (not missing and depth > 0)."""
    valid = depth_cm > 0
    if missing is not None:
        missing = np.asarray(missing, dtype=bool)
        if missing.shape != depth_cm.shape:
            raise DataError(f"{source}: missing mask has shape {missing.shape}, depth has {depth_cm.shape}")
        valid &= ~missing
    if not valid.any():
        raise DataError(f"{source}: every depth pixel is missing (0); HHA needs valid depth")
    return valid


def read_depth(depth_path: str | os.PathLike, depth_scale: float = 1000.0) -> np.ndarray:
    """Read depth in metres from a uint16 PNG (value / ``depth_scale``) or a float ``.npy`` (already metres).

    Returns:
        H×W float64 metres, 0 = missing.

    Raises:
        DataError: a missing or unreadable file, or (``.npy``) a non-float array or NaN, ±Inf or negative values.
    """
    path = Path(depth_path)
    if path.suffix.lower() == ".npy":
        if not path.is_file():
            raise DataError(f"{path}: file not found")
        try:
            depth = np.load(path, allow_pickle=False)
        except (ValueError, OSError) as e:
            raise DataError(f"{path}: not a readable .npy array ({e}); re-create the file") from e
        if not np.issubdtype(depth.dtype, np.floating):
            raise DataError(f"{path}: a .npy depth map must hold float metres, found {depth.dtype}")
        return check_depth(depth, str(path))
    return read_image(path, kind="depth").astype(np.float64) / depth_scale


def read_missing(missing_path: str | os.PathLike) -> np.ndarray:
    """Read a missing-depth mask PNG (uint8, non-zero = missing) as H×W bool."""
    return read_image(missing_path, kind="gray") != 0


def hha_from_file(depth_path: str | os.PathLike, out_path: str | os.PathLike, intrinsics: dict,
                  depth_scale: float = 1000.0, missing_path: str | os.PathLike | None = None) -> None:
    """Encode one depth file as an HHA PNG, written atomically.

    Args:
        depth_path: uint16 PNG (units of 1/``depth_scale`` m, 0 = missing) or float ``.npy`` in metres.
        out_path: destination PNG; decodes as RGB = (disparity, height, angle).
        intrinsics: {"fx", "fy", "cx", "cy"}, 1-based principal point.
        depth_scale: PNG units per metre (1000 for millimetres).
        missing_path: optional mask PNG (non-zero = missing); default: missing where depth == 0.
    """
    depth = read_depth(depth_path, depth_scale)
    problem = intrinsics_problem(intrinsics, *depth.shape)
    if problem:
        raise DataError(f"{depth_path}: {problem} for its {depth.shape[0]}×{depth.shape[1]} depth map; pass the "
                        f"camera's --fx --fy (focal lengths, > 0) and --cx --cy (principal point, 1-based, inside the "
                        f"image) in pixels")
    missing = read_missing(missing_path) if missing_path is not None else None
    if missing is not None and missing.shape != depth.shape:
        raise DataError(f"{missing_path}: mask shape {missing.shape} differs from {depth_path} {depth.shape}")
    write_png(out_path, compute_hha(depth, intrinsics, missing, source=str(depth_path)), rgb=True)


def intrinsics_problem(intrinsics: dict, height: int, width: int) -> str | None:
    """What is wrong with camera intrinsics for a ``height``×``width`` image (non-finite values, a focal length that
    is not positive, a principal point outside the image), or None."""
    values = {k: float(intrinsics[k]) for k in ("fx", "fy", "cx", "cy")}
    bad = [k for k, v in values.items() if not np.isfinite(v)]
    if bad:
        return f"{', '.join(f'{k} = {values[k]}' for k in bad)} is not a number"
    bad = [k for k in ("fx", "fy") if values[k] <= 0]
    if bad:
        return f"the focal length {', '.join(f'{k} = {values[k]:g}' for k in bad)} is not positive"
    size = {"cx": width, "cy": height}
    bad = [k for k, n in size.items() if not 0.5 <= values[k] <= n + 0.5]
    if bad:
        return f"the principal point {', '.join(f'{k} = {values[k]:g}' for k in bad)} lies outside the image"
    return None


def _is_up_to_date(out_path: Path, inputs: Iterable[Path]) -> bool:
    """Whether ``out_path`` exists and is newer than every input file."""
    if not out_path.is_file():
        return False
    out_time = out_path.stat().st_mtime_ns
    return all(out_time > p.stat().st_mtime_ns for p in inputs)


def _dataset_names(root: Path) -> list[str]:
    """Names of the train and test splits, each once, in split order."""
    return list(dict.fromkeys(name for split in SPLITS for name in read_split(root, split)))


def convert_dataset(data_root: str | os.PathLike, out_dir: str | os.PathLike, workers: int = 1, force: bool = False,
                    names: Sequence[str] | None = None, progress: bool = True) -> dict:
    """Write ``out_dir/<name>.png`` (HHA) for every image of a prepared dataset (layout.py).

    Depth comes from ``Depth/<name>.png`` (scaled by meta.json ``depth_scale``, default 1000 = mm), the missing mask
    from ``Missing/<name>.png`` when present, the intrinsics from meta.json (per image if given). An output newer than
    its depth, mask and meta.json is kept unless ``force``.

    Args:
        data_root: prepared dataset folder.
        out_dir: folder for the HHA PNGs.
        workers: number of processes (1 = run in this process).
        force: recompute outputs that look up to date.
        names: images to convert; default all names of train.txt and test.txt.
        progress: show a progress bar.

    Returns:
        {"converted": n, "skipped": m}.
    """
    layout, out_dir = Layout(Path(data_root)), Path(out_dir)
    meta = read_meta(layout.root)
    depth_scale = layout_depth_scale(meta)
    names = _dataset_names(layout.root) if names is None else list(dict.fromkeys(names))
    out_dir.mkdir(parents=True, exist_ok=True)
    jobs = []
    for name in names:
        depth, mask, out = layout.depth(name), layout.missing(name), out_dir / f"{name}.png"
        if not depth.is_file():
            raise DataError(f"{depth}: depth image of {name!r} not found; re-run the prepare stage")
        mask_path = mask if mask.is_file() else None
        inputs = [depth, layout.meta_path] + ([mask] if mask_path else [])
        if force or not _is_up_to_date(out, inputs):
            jobs.append((depth, out, intrinsics_for(meta, name), depth_scale, mask_path))
    _run_jobs(jobs, workers, progress)
    return {"converted": len(jobs), "skipped": len(names) - len(jobs)}


def _run_jobs(jobs: list[tuple], workers: int, progress: bool = True) -> None:
    """Run ``hha_from_file(*job)`` for every job, in ``workers`` processes, with a progress bar if ``progress``."""
    with tqdm(total=len(jobs), desc="HHA", unit="img", disable=not (jobs and progress)) as bar:
        if workers <= 1 or len(jobs) <= 1:
            for job in jobs:
                hha_from_file(*job)
                bar.update()
            return
        with process_pool(workers, __name__) as pool:
            futures = [pool.submit(hha_from_file, *job) for job in jobs]
            try:
                for future in as_completed(futures):
                    future.result()  # re-raises a worker's error, which names its depth file
                    bar.update()
            except BaseException:
                for future in futures:
                    future.cancel()
                raise
