"""HHA encoding: parity with the Depth2HHA-python fixtures, hand-checked scenes, file I/O and dataset conversion."""

import json
import os

import cv2
import numpy as np
import pytest

from primkd.data.hha import (
    GRAVITY_RADIUS,
    compute_hha,
    compute_normals,
    convert_dataset,
    estimate_gravity,
    hha_from_file,
)
from primkd.io import DataError, read_image, write_json, write_png

SCENES = {"holes": ("depth.npy", "ref_hha"), "clean": ("depth_clean.npy", "ref_hha_clean")}


def _intrinsics(fixtures_dir) -> dict:
    meta = json.loads((fixtures_dir / "hha" / "scene_meta.json").read_text())
    return {key: meta[key] for key in ("fx", "fy", "cx", "cy")}


@pytest.fixture(scope="module")
def parity(fixtures_dir) -> dict:
    """Per scene: input depth, our HHA, the reference HHA and the reference yDir (computed once per module)."""
    folder, intrinsics = fixtures_dir / "hha", _intrinsics(fixtures_dir)
    out = {}
    for scene, (depth_file, ref_stem) in SCENES.items():
        depth = np.load(folder / depth_file)
        out[scene] = {
            "depth": depth,
            "ours": compute_hha(depth, intrinsics).astype(np.int64),
            "ref": np.load(folder / f"{ref_stem}_rgb.npy").astype(np.int64),
            "ydir": np.array(json.loads((folder / f"{ref_stem}_ydir.json").read_text())["yDir"]),
        }
    return out


# --- parity with the reference (fixtures/README.md, "Tolerances" -> HHA) -------------------------------------------


@pytest.mark.parametrize("scene", SCENES)
def test_disparity_channel_is_exact(parity, scene):
    case = parity[scene]
    diff = case["ours"][..., 0] != case["ref"][..., 0]
    assert not diff.any(), f"{scene}: disparity differs from the reference at {diff.sum()} pixels (must be exact)"


@pytest.mark.parametrize("scene", SCENES)
def test_height_channel_within_tolerance(parity, scene):
    case = parity[scene]
    delta = np.abs(case["ours"][..., 1] - case["ref"][..., 1])
    assert delta.max() <= 1, f"{scene}: height max |Δ| = {delta.max()} (tolerance 1)"
    assert (delta > 0).mean() <= 0.01, f"{scene}: height differs at {100 * (delta > 0).mean():.3f}% of pixels (≤ 1%)"


@pytest.mark.parametrize("scene", SCENES)
def test_angle_channel_on_valid_centres(parity, scene):
    case = parity[scene]
    valid = case["depth"] != 0
    delta = np.abs(case["ours"][..., 2] - case["ref"][..., 2])[valid]
    assert (delta > 0).mean() <= 0.005, f"{scene}: angle differs at {100 * (delta > 0).mean():.3f}% (≤ 0.5%)"
    assert (delta > 1).mean() <= 1e-4, f"{scene}: angle differs by > 1 at {100 * (delta > 1).mean():.4f}% (≤ 0.01%)"


@pytest.mark.parametrize("scene", SCENES)
def test_angle_channel_mean_difference(parity, scene):
    case = parity[scene]
    mean_abs = np.abs(case["ours"][..., 2] - case["ref"][..., 2]).mean()
    assert mean_abs <= 1.0, f"{scene}: angle mean |Δ| over all pixels = {mean_abs:.3f} (tolerance 1.0)"


@pytest.mark.parametrize("scene", SCENES)
def test_gravity_matches_reference_ydir(fixtures_dir, parity, scene):
    depth_cm = parity[scene]["depth"].astype(np.float64) * 100.0
    normals = compute_normals(depth_cm, depth_cm > 0, _intrinsics(fixtures_dir), GRAVITY_RADIUS, orient=False)
    y = estimate_gravity(normals)
    angle_deg = np.degrees(np.arccos(np.clip(y @ parity[scene]["ydir"], -1.0, 1.0)))
    # Heights reach ~800 cm, so matching the height channel needs yDir to ~1e-5 rad; 0.01° is 1.7e-4 rad.
    assert angle_deg < 0.01, f"{scene}: estimated gravity is {angle_deg:.5f}° from the reference yDir"
    assert np.isclose(np.linalg.norm(y), 1.0)


def _brute_force_gravity(normals: np.ndarray) -> np.ndarray:
    """Direct transcription of docs/design.md §4 step 3: every normal re-classified at every iteration."""
    nn = normals.reshape(3, -1)  # (3, H*W)
    nn = nn[:, ~np.isnan(nn[0])]
    y = np.array([0.0, 1.0, 0.0])
    for angle_deg, iterations in ((45, 5), (15, 5)):
        theta = np.deg2rad(angle_deg)
        for _ in range(iterations):
            similarity = np.abs(y @ nn)
            wall, floor = nn[:, similarity < np.sin(theta)], nn[:, similarity > np.cos(theta)]
            _, vectors = np.linalg.eigh(wall @ wall.T - floor @ floor.T)
            y = vectors[:, 0] * np.sign(vectors[:, 0] @ y)
    return y


def test_gravity_fast_path_equals_brute_force(fixtures_dir, parity):
    depth_cm = parity["holes"]["depth"].astype(np.float64) * 100.0
    normals = compute_normals(depth_cm, depth_cm > 0, _intrinsics(fixtures_dir), GRAVITY_RADIUS, orient=False)
    assert np.allclose(estimate_gravity(normals), _brute_force_gravity(normals), rtol=0, atol=1e-10)


@pytest.mark.parametrize("seed", [0, 1])
def test_gravity_fast_path_equals_brute_force_on_spread_normals(seed):
    """Normals spread over the sphere, so that many change class as y moves away from the start (0, 1, 0)."""
    rng = np.random.default_rng(seed)
    g = np.array([0.3, 0.9, 0.3]) / np.linalg.norm([0.3, 0.9, 0.3])
    floor = g + 0.15 * rng.standard_normal((4000, 3))
    wall = np.cross(g, rng.standard_normal((4000, 3))) + 0.05 * rng.standard_normal((4000, 3))
    other = rng.standard_normal((2000, 3))
    normals = np.concatenate([floor, wall, other]).T  # (3, 10000)
    normals /= np.linalg.norm(normals, axis=0)
    assert np.allclose(estimate_gravity(normals), _brute_force_gravity(normals), rtol=0, atol=1e-10)


# --- hand-checked scenes ----------------------------------------------------------------------------------------------

TINY_INTRINSICS = {"fx": 50.0, "fy": 50.0, "cx": 25.5, "cy": 20.5}


def _floor_scene(camera_height_cm: float, gravity: np.ndarray, shape=(40, 50)) -> np.ndarray:
    """Depth (m) of a camera looking at an infinite floor: floor points P satisfy g·P = camera height."""
    H, W = shape
    x = (np.arange(1, W + 1) - TINY_INTRINSICS["cx"]) / TINY_INTRINSICS["fx"]  # 1-based principal point
    y = (np.arange(1, H + 1) - TINY_INTRINSICS["cy"]) / TINY_INTRINSICS["fy"]
    ray_dot_g = gravity[0] * x[None, :] + gravity[1] * y[:, None] + gravity[2]  # g·(x̃, ỹ, 1)
    assert (ray_dot_g > 0).all(), "every pixel must see the floor"
    return camera_height_cm / ray_dot_g / 100.0


TILTED_GRAVITY = np.array([0.08, 0.866, 0.5]) / np.linalg.norm([0.08, 0.866, 0.5])


def test_floor_scene_gravity_normals_angle_and_height():
    depth = _floor_scene(125.0, TILTED_GRAVITY)
    depth[10:13, 20:23] = 0.0  # a 3×3 hole
    normals = compute_normals(depth * 100.0, depth > 0, TINY_INTRINSICS, radius=3)
    assert np.allclose(normals, TILTED_GRAVITY[:, None, None], atol=1e-8), "floor normals must equal g"
    assert np.allclose(estimate_gravity(normals), TILTED_GRAVITY, atol=1e-10)

    hha = compute_hha(depth, TINY_INTRINSICS)
    hole = depth == 0
    assert (hha[..., 2] == 38).all(), "angle 0° between the floor normal and gravity is stored as 38"
    assert (hha[..., 1][~hole] == 0).all(), "floor points are the lowest points: height 0"
    assert (hha[..., 1][hole] == 125).all(), "holes sit at P = 0, 125 cm above the floor"
    expected_disparity = np.rint(31000.0 / np.maximum(depth * 100.0, 100.0))
    assert (hha[..., 0][~hole] == expected_disparity[~hole]).all()
    assert (hha[..., 0][hole] == 255).all(), "Z = 0 is clamped to 100 cm: 310 -> 255"


def test_low_camera_uses_default_floor_130cm_below():
    hha = compute_hha(_floor_scene(50.0, TILTED_GRAVITY), TINY_INTRINSICS)
    # The lowest point is only 50 cm below the camera (> −90 cm), so the floor is taken at −130 cm: 130 − 50 = 80.
    assert (hha[..., 1] == 80).all()


def test_disparity_rounds_half_to_even_and_clamps():
    depth = _floor_scene(125.0, TILTED_GRAVITY)
    depth[30, 5:9] = [4.96, 124.0, 1.24, 0.5]  # 31000 / Z_cm = 62.5, 2.5, 250, 620
    assert compute_hha(depth, TINY_INTRINSICS)[30, 5:9, 0].tolist() == [62, 2, 250, 255]


def test_normals_point_away_from_camera_and_by_sign_of_z_at_holes():
    """A floor whose normal has N_z < 0: valid pixels keep N·P > 0 (N = g); hole centres (P = 0) get N_z > 0 (−g)."""
    g = np.array([0.08, 0.866, -0.2]) / np.linalg.norm([0.08, 0.866, -0.2])
    intrinsics = {**TINY_INTRINSICS, "cy": -20.0}  # the image sees only rays far below the optical axis
    rows = (np.arange(1, 41) - intrinsics["cy"]) / intrinsics["fy"]
    cols = (np.arange(1, 51) - intrinsics["cx"]) / intrinsics["fx"]
    depth_cm = 125.0 / (g[0] * cols[None, :] + g[1] * rows[:, None] + g[2])
    depth_cm[20, 25] = 0.0
    normals = compute_normals(depth_cm, depth_cm > 0, intrinsics, radius=3)
    hole = depth_cm == 0
    assert np.allclose(normals[:, ~hole], g[:, None], atol=1e-8)
    assert np.allclose(normals[:, hole], -g[:, None], atol=1e-8)


def test_windows_with_fewer_than_two_valid_pixels_are_nan():
    depth_cm = np.zeros((20, 20))
    depth_cm[10, 10] = 200.0
    normals = compute_normals(depth_cm, depth_cm > 0, TINY_INTRINSICS, radius=3)
    assert np.isnan(normals).all(), "one valid pixel defines no plane"


def test_explicit_missing_mask_drops_inpainted_pixels_from_the_fits(fixtures_dir, parity):
    depth, intrinsics = parity["holes"]["depth"], _intrinsics(fixtures_dir)
    holes = depth == 0
    inpainted = np.where(holes, 2.0, depth)
    ours = compute_hha(inpainted, intrinsics, missing=holes)
    assert np.array_equal(ours[..., 2][~holes], parity["holes"]["ours"][..., 2][~holes])
    assert (ours[..., 0][holes] == np.rint(31000 / 200.0)).all(), "disparity uses the in-painted depth"


@pytest.mark.parametrize("bad, what", [(np.nan, "NaN"), (np.inf, "infinite"), (-0.5, "negative")])
def test_invalid_depth_values_are_rejected(bad, what):
    depth = np.ones((8, 8))
    depth[2, 3] = bad
    with pytest.raises(DataError, match=f"scene_7.*{what}"):
        compute_hha(depth, TINY_INTRINSICS, source="scene_7")


def test_all_missing_depth_is_rejected():
    with pytest.raises(DataError, match="every depth pixel is missing"):
        compute_hha(np.zeros((8, 8)), TINY_INTRINSICS)


# --- the per-thread workspace of full-image buffers ------------------------------------------------------------------


def test_workspace_reuse_across_shapes_gives_the_same_encoding(fixtures_dir, parity):
    """Buffers kept from an earlier image (of another shape, or the same) must not leak into the next encoding."""
    depth, intrinsics = parity["holes"]["depth"], _intrinsics(fixtures_dir)
    first = compute_hha(depth, intrinsics)
    crop = compute_hha(depth[40:200, 100:420], intrinsics)
    again = compute_hha(depth, intrinsics)
    assert np.array_equal(first, again)
    assert np.array_equal(first, parity["holes"]["ours"].astype(np.uint8))
    assert not np.array_equal(crop, first[40:200, 100:420]), "the crop has its own gravity and floor"


def test_threads_encode_concurrently_with_their_own_buffers(fixtures_dir, parity):
    from concurrent.futures import ThreadPoolExecutor

    intrinsics = _intrinsics(fixtures_dir)
    depths = [parity["holes"]["depth"], parity["clean"]["depth"]] * 3
    with ThreadPoolExecutor(max_workers=3) as pool:
        results = list(pool.map(lambda d: compute_hha(d, intrinsics), depths))
    for depth_index, result in enumerate(results):
        scene = ("holes", "clean")[depth_index % 2]
        assert np.array_equal(result, parity[scene]["ours"].astype(np.uint8)), f"{scene} differs in a thread"


# --- files ------------------------------------------------------------------------------------------------------------


def test_png_channel_order_round_trip(fixtures_dir, parity, tmp_path):
    folder = fixtures_dir / "hha"
    assert np.array_equal(read_image(folder / "ref_hha.png", "rgb"), parity["holes"]["ref"]), "fixture convention"
    out = tmp_path / "hha.png"
    hha_from_file(folder / "depth.npy", out, _intrinsics(fixtures_dir))
    assert np.array_equal(read_image(out, "rgb"), parity["holes"]["ours"]), "decoded RGB = disparity, height, angle"
    assert np.array_equal(cv2.imread(str(out))[..., ::-1], parity["holes"]["ours"]), "OpenCV reads it as BGR"


def test_hha_from_uint16_png_in_millimetres(fixtures_dir, tmp_path):
    depth_mm = np.rint(np.load(fixtures_dir / "hha" / "depth.npy")[100:220, 200:360] * 1000).astype(np.uint16)
    write_png(tmp_path / "d.png", depth_mm)
    hha_from_file(tmp_path / "d.png", tmp_path / "hha.png", TINY_INTRINSICS)
    expected = compute_hha(depth_mm / 1000.0, TINY_INTRINSICS)
    assert np.array_equal(read_image(tmp_path / "hha.png", "rgb"), expected)
    assert not list(tmp_path.glob(".*")), "atomic write leaves no temporary file"


@pytest.mark.parametrize("bad, what", [(np.nan, "NaN"), (-1.0, "negative")])
def test_hha_from_file_names_the_bad_file(tmp_path, bad, what):
    depth = np.ones((8, 8), dtype=np.float32)
    depth[0, 0] = bad
    np.save(tmp_path / "bad_depth.npy", depth)
    with pytest.raises(DataError, match=rf"bad_depth\.npy.*{what}"):
        hha_from_file(tmp_path / "bad_depth.npy", tmp_path / "out.png", TINY_INTRINSICS)
    assert not (tmp_path / "out.png").exists()


def test_corrupt_npy_is_reported_with_its_name(tmp_path):
    (tmp_path / "broken.npy").write_bytes(b"garbage")
    with pytest.raises(DataError, match=r"broken\.npy"):
        hha_from_file(tmp_path / "broken.npy", tmp_path / "out.png", TINY_INTRINSICS)


# --- dataset conversion -----------------------------------------------------------------------------------------------


def _tiny_dataset(root, fixtures_dir) -> dict:
    """Three 48×64 crops of the fixture scene as a prepared dataset; image b has a Missing mask, c own intrinsics."""
    depth = np.load(fixtures_dir / "hha" / "depth.npy")
    crops = {"a": depth[200:248, 0:64], "b": depth[300:348, 300:364], "c": depth[100:148, 500:564]}
    crops_mm = {name: np.rint(crop * 1000).astype(np.uint16) for name, crop in crops.items()}
    for name, crop_mm in crops_mm.items():
        write_png(root / "Depth" / f"{name}.png", crop_mm)
    missing_b = np.zeros((48, 64), dtype=np.uint8)
    missing_b[10:20, 10:30] = 1
    write_png(root / "Missing" / "b.png", missing_b)
    (root / "train.txt").write_text("a\nb\n")
    (root / "test.txt").write_text("c\n")
    own = {"fx": 500.0, "fy": 505.0, "cx": 30.5, "cy": 20.5}
    write_json(root / "meta.json", {"classes": ["x"], "intrinsics": TINY_INTRINSICS, "depth_scale": 1000,
                                    "intrinsics_per_image": {"c": own}})
    return {"depth": {name: mm / 1000.0 for name, mm in crops_mm.items()}, "missing_b": missing_b == 1, "own": own}


def test_convert_dataset_outputs_skip_and_force(fixtures_dir, tmp_path):
    info = _tiny_dataset(tmp_path / "data", fixtures_dir)
    out = tmp_path / "hha"
    assert convert_dataset(tmp_path / "data", out) == {"converted": 3, "skipped": 0}
    expected = {"a": compute_hha(info["depth"]["a"], TINY_INTRINSICS),
                "b": compute_hha(info["depth"]["b"], TINY_INTRINSICS, missing=info["missing_b"]),
                "c": compute_hha(info["depth"]["c"], info["own"])}
    for name, image in expected.items():
        assert np.array_equal(read_image(out / f"{name}.png", "rgb"), image), f"{name}.png"

    assert convert_dataset(tmp_path / "data", out) == {"converted": 0, "skipped": 3}
    # Timestamps in the past, so that a rewritten output is always newer than its inputs.
    t0 = (out / "a.png").stat().st_mtime - 100
    for path in (tmp_path / "data").rglob("*"):
        os.utime(path, (t0, t0))
    for depth_or_mask, output in (("Depth/a.png", "a.png"), ("Missing/b.png", "b.png")):
        os.utime(tmp_path / "data" / depth_or_mask, (t0 + 10, t0 + 10))
        os.utime(out / output, (t0 + 5, t0 + 5))
        assert convert_dataset(tmp_path / "data", out) == {"converted": 1, "skipped": 2}, f"{depth_or_mask} is newer"
    assert convert_dataset(tmp_path / "data", out, force=True) == {"converted": 3, "skipped": 0}


def test_convert_dataset_in_worker_processes(fixtures_dir, tmp_path):
    info = _tiny_dataset(tmp_path / "data", fixtures_dir)
    result = convert_dataset(tmp_path / "data", tmp_path / "hha", workers=2, names=["a", "c"])
    assert result == {"converted": 2, "skipped": 0}
    assert np.array_equal(read_image(tmp_path / "hha" / "c.png", "rgb"), compute_hha(info["depth"]["c"], info["own"]))
    assert not (tmp_path / "hha" / "b.png").exists()


def test_convert_dataset_errors_name_the_depth_file(fixtures_dir, tmp_path):
    _tiny_dataset(tmp_path / "data", fixtures_dir)
    (tmp_path / "data" / "Depth" / "b.png").write_bytes(b"not a png")
    with pytest.raises(DataError, match=r"Depth/b\.png"):
        convert_dataset(tmp_path / "data", tmp_path / "hha", workers=2)
    (tmp_path / "data" / "Depth" / "b.png").unlink()
    with pytest.raises(DataError, match=r"Depth/b\.png.*not found"):
        convert_dataset(tmp_path / "data", tmp_path / "hha")



@pytest.mark.parametrize(("flags", "problem"), [
    ({"fx": "-30"}, "the focal length fx = -30 is not positive"),
    ({"fy": "0"}, "the focal length fy = 0 is not positive"),
    ({"fx": "nan"}, "fx = nan is not a number"),
    ({"fy": "inf"}, "fy = inf is not a number"),
    ({"cx": "5000"}, "the principal point cx = 5000 lies outside the image"),
    ({"cy": "0"}, "the principal point cy = 0 lies outside the image"),
])
def test_hha_depth_command_names_bad_intrinsics(tmp_path, capsys, flags, problem):
    """`primkd hha --depth` blamed a focal length of 0, NaN or inf on "too few valid depth pixels" and accepted a
    negative one or a principal point far outside the image."""
    from primkd import cli

    write_png(tmp_path / "d.png", np.full((24, 32), 1500, np.uint16))
    given = {"fx": "50", "fy": "50", "cx": "16.5", "cy": "12.5", **flags}
    with pytest.raises(SystemExit) as info:
        cli.main(["hha", "--depth", str(tmp_path / "d.png"), "--out", str(tmp_path / "hha.png"),
                  *[arg for k, v in given.items() for arg in (f"--{k}", v)]])
    err = capsys.readouterr().err
    assert info.value.code == 2 and "Traceback" not in err
    assert (f"ERROR primkd: {tmp_path / 'd.png'}: {problem} for its 24×32 depth map; pass the camera's --fx --fy "
            f"(focal lengths, > 0) and --cx --cy (principal point, 1-based, inside the image) in pixels\n") in err
    assert not (tmp_path / "hha.png").exists()
