"""Tests of primkd.data.viz: the label palette and the contact sheet of a prepared dataset."""

import numpy as np

from primkd.data.layout import DEPTH_SCALE, depth_scale
from primkd.data.viz import contact_sheet, label_palette
from primkd.io import read_image, read_json, write_json, write_png

from fake_data import make_dataset


def test_label_palette_gives_forty_distinct_colours_and_black_elsewhere():
    palette = label_palette()
    assert palette.shape == (256, 3) and palette.dtype == np.uint8
    assert len({tuple(c) for c in palette[:40]}) == 40
    assert not palette[40:].any()


def test_contact_sheet_reads_the_depth_scale_of_meta(tmp_path):
    # The same scene stored in millimetres and in quarter-millimetres draws the same sheet: depth is shown in metres.
    mm = make_dataset(tmp_path / "mm")
    quarter = make_dataset(tmp_path / "quarter")
    meta = read_json(quarter / "meta.json")
    write_json(quarter / "meta.json", {**meta, "depth_scale": 4000})
    for png in (quarter / "Depth").glob("*.png"):
        write_png(png, read_image(png, "depth").astype(np.uint16) * 4)
    assert depth_scale(read_json(mm / "meta.json")) == DEPTH_SCALE
    assert depth_scale(read_json(quarter / "meta.json")) == 4000
    contact_sheet(mm, tmp_path / "mm.png", num=2)
    contact_sheet(quarter, tmp_path / "quarter.png", num=2)
    assert np.array_equal(read_image(tmp_path / "mm.png"), read_image(tmp_path / "quarter.png"))
