"""Tests of the embedded synthetic RGB-D dataset (primkd.data.synthetic, DESIGN.md §6)."""

import cv2
import numpy as np
import pytest

from primkd.config import ConfigError, validate
from primkd.data import synthetic
from primkd.data.layout import IGNORE_INDEX, NYU40_CLASSES, Layout, read_meta, read_split
from primkd.data.synthetic import (
    APPEARANCE_ONLY_CLASSES,
    CLASS_ID,
    SceneParams,
    contact_sheet,
    generate_dataset,
    render_scene,
    scaled_intrinsics,
    scene_seed,
)
from primkd.io import read_image

SYNTHETIC_IDS = set(CLASS_ID.values())


@pytest.fixture(scope="module")
def small_scenes() -> list[dict]:
    """60 scenes at 120×160 (seeds 0..59)."""
    return [render_scene(s, 120, 160) for s in range(60)]


@pytest.fixture(scope="module")
def shared_look_scenes() -> list[dict]:
    """The scenes of ``small_scenes`` with every geometry-only-group object in its group's shared look."""
    return [render_scene(s, 120, 160, SceneParams(shared_appearance=1.0)) for s in range(60)]


@pytest.fixture(scope="module")
def medium_scenes() -> list[dict]:
    """12 scenes at 240×320 (seeds 0..11), depth without noise or disparity steps (for plane fits)."""
    return [render_scene(s, 240, 320, SceneParams(depth_noise=0.0, disparity_step_px=0.0)) for s in range(12)]


def _points(scene: dict) -> tuple[np.ndarray, np.ndarray]:
    """Back-projected camera points (H×W×3, metres, 1-based principal point) and the valid-depth mask."""
    z = scene["depth_mm"].astype(np.float64) / 1000
    k = scene["intrinsics"]
    v, u = np.mgrid[0 : z.shape[0], 0 : z.shape[1]]
    xyz = np.stack([(u + 1 - k["cx"]) / k["fx"] * z, (v + 1 - k["cy"]) / k["fy"] * z, z], axis=-1)  # (H, W, 3)
    return xyz, z > 0


def _height_above_floor(scene: dict) -> tuple[np.ndarray, np.ndarray]:
    """Height of every pixel's point above the plane fitted to the floor pixels (H×W), and the valid mask."""
    xyz, valid = _points(scene)
    floor = xyz[(scene["label"] == CLASS_ID["floor"]) & valid]  # (N, 3)
    centre = floor.mean(axis=0)
    normal = np.linalg.svd(floor - centre, full_matrices=False)[2][2]
    normal = normal if normal @ -centre > 0 else -normal  # towards the camera (above the floor)
    return (xyz - centre) @ normal, valid


def test_scaled_intrinsics_by_hand():
    half = scaled_intrinsics(240, 320)
    assert half["fx"] == pytest.approx(518.857901 / 2)
    assert half["fy"] == pytest.approx(519.469611 / 2)
    assert half["cx"] == pytest.approx((325.582449 - 0.5) / 2 + 0.5)  # 163.0412245
    assert half["cy"] == pytest.approx(127.118083)  # (253.736166 - 0.5) / 2 + 0.5
    assert scaled_intrinsics(480, 640) == pytest.approx({"fx": 518.857901, "fy": 519.469611, "cx": 325.582449,
                                                         "cy": 253.736166})
    # The 1-based image centre of 640 columns (320.5) maps to that of 320 columns (160.5); axes scale separately.
    assert (320.5 - 0.5) * 0.5 + 0.5 == 160.5
    tall = scaled_intrinsics(480, 320)
    assert tall["fy"] == pytest.approx(519.469611) and tall["cy"] == pytest.approx(253.736166)
    assert tall["cx"] == pytest.approx(half["cx"])


def test_render_dtypes_shapes_and_ranges():
    scene = render_scene(3, 120, 160)
    assert scene["rgb"].dtype == np.uint8 and scene["rgb"].shape == (120, 160, 3)
    assert scene["depth_mm"].dtype == np.uint16 and scene["depth_mm"].shape == (120, 160)
    assert scene["label"].dtype == np.uint8 and scene["label"].shape == (120, 160)
    assert scene["intrinsics"] == scaled_intrinsics(120, 160)
    valid = scene["depth_mm"][scene["depth_mm"] > 0]
    assert valid.min() >= 400 and valid.max() <= 10_000
    assert scene["rgb"].std() > 20 and scene["rgb"].min() < 60 and scene["rgb"].max() > 180


def test_render_is_deterministic_and_size_independent():
    a, b, c = render_scene(7, 60, 80), render_scene(7, 60, 80), render_scene(8, 60, 80)
    for key in ("rgb", "depth_mm", "label"):
        np.testing.assert_array_equal(a[key], b[key])
        assert not np.array_equal(a[key], c[key])
    # The layout does not depend on the image size: each 60×80 pixel centre lies 0.5 px from a 120×160 one.
    big = render_scene(7, 120, 160)
    assert (big["label"][::2, ::2] == a["label"]).mean() > 0.9


def test_render_rejects_bad_arguments():
    with pytest.raises(ValueError, match="seed"):
        render_scene(-1, 64, 64)
    with pytest.raises(ValueError, match="8×8"):
        render_scene(0, 4, 64)


def test_labels_and_classes_per_image(small_scenes):
    with_floor = 0
    for scene in small_scenes:
        present = set(np.unique(scene["label"]).tolist())
        assert present <= SYNTHETIC_IDS | {IGNORE_INDEX}
        assert CLASS_ID["wall"] in present and len(present) >= 5
        with_floor += CLASS_ID["floor"] in present
    assert with_floor >= 57  # a bed close to the camera may hide all of the floor
    seen = set().union(*(np.unique(s["label"]).tolist() for s in small_scenes))
    assert seen == SYNTHETIC_IDS  # every class of the generator shows up in 60 scenes
    assert 12 <= len(SYNTHETIC_IDS) <= 16


def test_depth_holes_present_but_few(small_scenes):
    # Raw Kinect frames of NYU Depth V2 miss roughly 5-25% of their pixels.
    fractions = np.array([(s["depth_mm"] == 0).mean() for s in small_scenes])
    assert (fractions > 0.01).all() and (fractions < 0.3).all() and 0.03 < np.median(fractions) < 0.15


def test_projector_shadow_band_by_hand():
    # Foreground at 1 m (columns 0-9), background at 2 m, fx = 100: the projector (7.5 cm to the left) sees the
    # background at column u shifted by 3.75 px, the foreground edge at 9 + 7.5; columns 10, 11, 12 (u + 3.75 < 16.5)
    # are hidden from it. The opposite step (background left of foreground) casts no shadow.
    z = np.full((2, 20), 2.0, dtype=np.float32)
    z[0, :10] = 1.0
    z[1, 10:] = 1.0
    shadow = synthetic._projector_shadow(z, fx=100.0)
    assert np.flatnonzero(shadow[0]).tolist() == [10, 11, 12]
    assert not shadow[1].any()


def test_depth_noise_grows_with_z_squared_and_range_limits():
    rng = np.random.default_rng(0)
    flat = np.ones((200, 200), dtype=np.float32)
    facing = np.ones_like(flat)
    for z in (1.0, 4.0):
        mm = synthetic._depth_sensor(flat * z, facing, fx=500.0, rng=rng, knobs=MM_STEPS)
        valid = mm[mm > 0].astype(np.float64)
        expected = 1000 * (0.0012 + 0.0019 * (z - 0.4) ** 2)  # 1.88 mm at 1 m, 25.8 mm at 4 m
        assert np.sqrt(valid.var() - 1 / 12) == pytest.approx(expected, rel=0.1)  # minus quantisation variance
        assert valid.mean() == pytest.approx(1000 * z, abs=1.0)
    assert not synthetic._depth_sensor(flat * 12.0, facing, fx=500.0, rng=rng, knobs=MM_STEPS).any()  # beyond 10 m
    short = SceneParams(disparity_step_px=0.0, max_range_m=3.0)
    assert not synthetic._depth_sensor(flat * 3.5, facing, fx=500.0, rng=rng, knobs=short).any()


MM_STEPS = SceneParams(depth_noise=1.0, disparity_step_px=0.0, max_range_m=10.0)  # the sensor without quantisation


def test_disparity_quantisation_steps_grow_with_z_squared():
    # Without noise, depth takes the values f·b / (k·step): at 4 m the levels are ~z²·step/(f·b) = 46 mm apart.
    z = np.linspace(3.9, 4.1, 400, dtype=np.float32)[None].repeat(4, axis=0)  # (4, 400) a slanted surface
    knobs = SceneParams(depth_noise=0.0, disparity_step_px=0.125)
    mm = synthetic._depth_sensor(z, np.ones_like(z), fx=500.0, rng=np.random.default_rng(0), knobs=knobs)
    levels = np.unique(mm[mm > 0])
    fb = synthetic.KINECT_FOCAL_PX * synthetic.PROJECTOR_BASELINE_M
    expected = {round(1000 * fb / (k * 0.125)) for k in range(1, 2000) if 3.85 < fb / (k * 0.125) < 4.15}
    assert set(levels.tolist()) <= expected and len(levels) >= 4
    assert np.diff(levels).mean() == pytest.approx(1000 * 4.0**2 * 0.125 / fb, rel=0.1)


def test_dark_glass_and_edge_holes_follow_their_knobs():
    z = np.full((120, 160), 2.0, dtype=np.float32)
    z[:, 80:] = 3.0  # one depth step between columns 79 and 80
    facing, dark = np.ones_like(z), np.zeros(z.shape, dtype=bool)
    dark[:60] = True  # top half dark, bottom half glass
    glass = ~dark

    def missing(**knobs) -> np.ndarray:
        params = SceneParams(**{"depth_noise": 0.0, "disparity_step_px": 0.0, "dark_holes": 0.0, "glass_holes": 0.0,
                                "edge_holes": 0.0, **knobs})
        return synthetic._depth_sensor(z, facing, fx=100.0, rng=np.random.default_rng(1), knobs=params, dark=dark,
                                       glass=glass) == 0

    base = missing()
    assert base.mean() < 0.1  # blobs, speckles and the projector shadow right of the step only
    for knob, region in (("dark_holes", dark), ("glass_holes", glass)):
        for fraction in (0.3, 0.7):
            extra = missing(**{knob: fraction}) & ~base & region
            assert extra.sum() / (region & ~base).sum() == pytest.approx(fraction, abs=0.12), (knob, fraction)
    edge = np.zeros(z.shape, dtype=bool)
    edge[:, 79:81] = True
    assert (missing(edge_holes=1.0) & ~base == edge & ~base).all()
    assert not (missing(edge_holes=0.0) & ~base).any()


def test_scene_params_validation_and_from_params():
    with pytest.raises(ValueError, match=r"shared_appearance=1\.5.*data\.synthetic"):
        SceneParams(shared_appearance=1.5)
    with pytest.raises(ValueError, match=r"max_range_m=0\.3"):
        SceneParams(max_range_m=0.3)
    knobs = SceneParams.from_params({"num_train": 4, "seed": 1, "height": 8, "dark_holes": 0.25})
    assert knobs == SceneParams(dark_holes=0.25)


def test_params_yaml_knobs_are_the_code_defaults():
    import yaml

    from primkd.config import REPO_ROOT

    section = yaml.safe_load((REPO_ROOT / "params.yaml").read_text())["data"]["synthetic"]
    assert SceneParams.from_params(section) == SceneParams()


@pytest.mark.parametrize(("key", "value"), [("shared_appearance", 1.5), ("dark_holes", -0.1), ("glass_holes", "a"),
                                            ("edge_holes", 2), ("depth_noise", -1), ("disparity_step_px", 1.5),
                                            ("max_range_m", 0.4), ("unknown_knob", 1)])
def test_schema_rejects_bad_knobs(key, value):
    import yaml

    from primkd.config import REPO_ROOT

    raw = yaml.safe_load((REPO_ROOT / "params.yaml").read_text())
    validate(raw)  # the committed file is valid
    raw["data"]["synthetic"][key] = value
    with pytest.raises(ConfigError, match=r"data\.synthetic"):
        validate(raw)
    raw = yaml.safe_load((REPO_ROOT / "params.yaml").read_text())
    raw["presets"]["demo"]["data"]["synthetic"][key] = value  # a preset override is checked too
    with pytest.raises(ConfigError, match=r"presets\.demo\.data\.synthetic"):
        validate(raw)


def test_knobs_change_only_what_they_name():
    for seed in range(4):
        base = render_scene(seed, 60, 80, SceneParams(shared_appearance=0.5))
        sensor = render_scene(seed, 60, 80, SceneParams(shared_appearance=0.5, depth_noise=2.0, dark_holes=1.0,
                                                        glass_holes=1.0, edge_holes=1.0, max_range_m=5.0))
        look = render_scene(seed, 60, 80, SceneParams(shared_appearance=0.0, dark_holes=0.0))
        np.testing.assert_array_equal(base["label"], sensor["label"])  # the layout never moves
        np.testing.assert_array_equal(base["label"], look["label"])
        np.testing.assert_array_equal(base["rgb"], sensor["rgb"])  # depth knobs leave the RGB image alone
        assert (sensor["depth_mm"] == 0).sum() > (base["depth_mm"] == 0).sum()
    plain = SceneParams(shared_appearance=1.0, dark_holes=0.0)
    own = SceneParams(shared_appearance=0.0, dark_holes=0.0)
    a, b = render_scene(3, 60, 80, plain), render_scene(3, 60, 80, own)
    np.testing.assert_array_equal(a["depth_mm"], b["depth_mm"])  # appearance leaves depth alone (no dark holes)


def _largest_component(mask: np.ndarray) -> np.ndarray:
    count, comp = cv2.connectedComponents(mask.astype(np.uint8), connectivity=4)
    if count < 2:
        return np.zeros_like(mask)
    return comp == 1 + np.bincount(comp.ravel())[1:].argmax()


def _offset_from_wall(scene: dict, name: str) -> tuple[float, float] | None:
    """Median depth offset (m) of the largest region of ``name`` from the wall plane around it, and the distance of
    their mean colours (RGB levels); None when the region or its wall ring is too small."""
    label, z = scene["label"], scene["depth_mm"].astype(np.float64) / 1000
    region = _largest_component(label == CLASS_ID[name])
    ring = cv2.dilate(region.astype(np.uint8), np.ones((9, 9), np.uint8)).astype(bool) & ~region
    ring &= (label == CLASS_ID["wall"]) & (z > 0)
    inside = region & (z > 0)
    if inside.sum() < 300 or ring.sum() < 100:
        return None
    # A plane's inverse depth is affine in the pixel coordinates: fit 1/z = a·u + b·v + c on the ring.
    v, u = np.nonzero(ring)
    coef = np.linalg.lstsq(np.stack([u, v, np.ones_like(u)], axis=1), 1 / z[ring], rcond=None)[0]
    v, u = np.nonzero(inside)
    offset = np.median(z[inside] - 1 / (np.stack([u, v, np.ones_like(u)], axis=1) @ coef))
    rgb = scene["rgb"].astype(np.float64)
    return float(offset), float(np.linalg.norm(rgb[region].mean(axis=0) - rgb[ring].mean(axis=0)))


def test_appearance_only_classes_lie_on_the_wall_but_look_different(medium_scenes):
    found = {name: 0 for name in (*APPEARANCE_ONLY_CLASSES, "cabinet")}
    for scene in medium_scenes:
        for name in found:
            result = _offset_from_wall(scene, name)
            if result is None:
                continue
            offset, colour_distance = result
            found[name] += 1
            if name == "cabinet":  # control: furniture against a wall protrudes from its plane
                assert offset < -0.2
            else:
                assert abs(offset) < 0.02, name
                assert colour_distance > 30, name
    assert all(count >= 2 for count in found.values()), found


def test_geometry_only_classes_share_appearance_but_not_height(shared_look_scenes):
    height_p95 = {name: [] for name in ("table", "box", "cabinet", "counter", "bed", "sofa")}
    chroma = {name: [] for name in (*height_p95, "wall")}
    for scene in shared_look_scenes:
        if (scene["label"] == CLASS_ID["floor"]).sum() < 100:
            continue
        height, valid = _height_above_floor(scene)
        rgb = scene["rgb"].astype(np.float64)
        rg = (rgb / np.maximum(rgb.sum(axis=-1, keepdims=True), 1))[..., :2]  # (H, W, 2) chromaticity
        for name in chroma:
            mask = scene["label"] == CLASS_ID[name]
            if mask.sum() < 30:
                continue
            chroma[name].append(rg[mask].mean(axis=0))
            if name in height_p95:
                height_p95[name].append(np.percentile(height[mask & valid], 95))
    assert all(len(v) >= 8 for v in height_p95.values()), {k: len(v) for k, v in height_p95.items()}
    top = {name: np.array(v) for name, v in height_p95.items()}
    assert ((top["table"] > 0.65) & (top["table"] < 0.82)).all() and (top["box"] < 0.6).all()
    assert (top["cabinet"] > 1.1).all() and ((top["counter"] > 0.8) & (top["counter"] < 0.97)).all()
    assert (top["bed"] < 0.62).all() and (top["sofa"] > 0.72).all()
    mean = {name: np.mean(v, axis=0) for name, v in chroma.items()}
    for name in ("box", "cabinet", "counter"):
        assert np.abs(mean[name] - mean["table"]).max() < 0.02, name
    assert np.abs(mean["bed"] - mean["sofa"]).max() < 0.07  # fabrics of any hue: few samples, a noisier mean
    assert np.abs(mean["wall"] - mean["table"]).max() > 0.08  # control: a different appearance is detected


def test_own_looks_set_geometry_only_classes_apart():
    # With shared_appearance = 0 every object wears its class's colour family: cyan-blue cabinets, yellow boxes lighter
    # than the dark-wood tables, pink-violet beds, dark green sofas, red chairs, blue-violet bags, khaki-lime counters.
    mean = {}
    for scene in (render_scene(s, 120, 160, SceneParams(shared_appearance=0.0)) for s in range(60)):
        for name in ("cabinet", "table", "box", "bed", "sofa", "chair", "bag", "counter"):
            mask = scene["label"] == CLASS_ID[name]
            if mask.sum() >= 20:
                mean.setdefault(name, []).append(scene["rgb"][mask].astype(np.float64).mean(axis=0))
    r, g, b = np.array([np.mean(mean[n], axis=0) for n in ("cabinet", "table", "box", "bed", "sofa", "chair",
                                                           "bag", "counter")]).T  # (8,) mean sRGB levels per class
    cabinet, table, box, bed, sofa, chair, bag, counter = range(8)
    assert b[cabinet] > r[cabinet] + 20 and b[bag] > g[bag] + 20
    assert min(r[box] - r[table], g[box] - g[table]) > 15
    assert r[bed] > g[bed] + 15 and b[bed] > g[bed] + 5
    assert g[sofa] > r[sofa] + 10 and r[chair] > g[chair] + 60
    assert g[counter] > r[counter] > b[counter] + 25
    shared = [render_scene(s, 120, 160, SceneParams(shared_appearance=1.0))["rgb"] for s in range(3)]
    assert not any(np.array_equal(a, render_scene(s, 120, 160, SceneParams(shared_appearance=0.0))["rgb"])
                   for s, a in enumerate(shared))


def _read_all(root, name: str) -> tuple[np.ndarray, ...]:
    layout = Layout(root)
    return (read_image(layout.rgb(name)), read_image(layout.depth(name), "depth"),
            read_image(layout.label(name), "gray"))


def test_generate_dataset_layout_meta_and_reproducibility(tmp_path):
    root = generate_dataset(tmp_path / "syn", num_train=2, num_test=2, height=48, width=64, seed=5)
    assert read_split(root, "train") == ["train_0000", "train_0001"]
    assert read_split(root, "test") == ["test_0000", "test_0001"]
    meta = read_meta(root)
    assert meta["name"] == "synthetic" and meta["classes"] == list(NYU40_CLASSES) and len(meta["classes"]) == 40
    assert meta["ignore_index"] == 255 and meta["depth_scale"] == 1000 and meta["seed"] == 5
    assert (meta["num_train"], meta["num_test"], meta["height"], meta["width"]) == (2, 2, 48, 64)
    assert meta["intrinsics"] == pytest.approx(scaled_intrinsics(48, 64))
    labels = set()
    for split in ("train", "test"):
        for name in read_split(root, split):
            rgb, depth, label = _read_all(root, name)
            expected = render_scene(scene_seed(5, split, int(name[-4:])), 48, 64)
            np.testing.assert_array_equal(rgb, expected["rgb"])
            np.testing.assert_array_equal(depth, expected["depth_mm"])
            np.testing.assert_array_equal(label, expected["label"])
            labels |= set(np.unique(label).tolist())
    assert meta["present_classes"] == sorted(labels)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["syn"]  # no temporary folder left behind

    # A larger dataset, rendered by two processes, starts with the same images; another seed gives others.
    bigger = generate_dataset(tmp_path / "bigger", num_train=3, num_test=1, height=48, width=64, seed=5, workers=2)
    for a, b in zip(_read_all(root, "train_0001"), _read_all(bigger, "train_0001"), strict=True):
        np.testing.assert_array_equal(a, b)
    assert scene_seed(5, "train", 1) != scene_seed(6, "train", 1) != scene_seed(5, "test", 1)


def test_contact_sheet_writes_png(tmp_path):
    root = generate_dataset(tmp_path / "syn", num_train=1, num_test=3, height=48, width=64, seed=0)
    hha = tmp_path / "hha"
    hha.mkdir()
    for name in read_split(root, "test"):
        cv2.imwrite(str(hha / f"{name}.png"), np.full((48, 64, 3), 128, np.uint8))
    contact_sheet(root, tmp_path / "sheet.png", num=2)
    contact_sheet(root, tmp_path / "sheet_hha.png", num=2, hha_root=hha)
    plain, with_hha = read_image(tmp_path / "sheet.png"), read_image(tmp_path / "sheet_hha.png")
    assert plain.shape[1] < with_hha.shape[1] and plain.std() > 10
    palette = synthetic.label_palette()
    assert palette.shape == (256, 3) and len({tuple(c) for c in palette[:40]}) == 40
