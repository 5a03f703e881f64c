"""The offline results browser: built by the workflow for a tiny real run and opened in headless Chromium."""

from __future__ import annotations

from html.parser import HTMLParser
from pathlib import Path

import imageio.v3 as imageio
import numpy as np
import pandas as pd
import pytest
import xarray as xr

from mei_core.pipeline.browse import draw_thumbnails, find_chromium, open_in_chromium, sheet_layout, thumbnail_positions, thumbnails, write_browser
from mei_core.files import read_json
from workflow_support import copy_project, edited, make_project, planned_outputs, read_config, snakemake, tiny_config, write_config

needs_chromium = pytest.mark.skipif(find_chromium() is None, reason="no chromium on the PATH (Debian: apt-get install chromium; .ci/run installs it as root)")


# ----------------------------------------------------------------------------------- thumbnails alone


def test_a_thumbnail_is_its_mei_around_the_stimulus_mean_on_its_own_scale():
    meis = np.zeros((2, 1, 4, 4), np.float32) + 0.5  # stimulus mean 0.5
    meis[0, 0, 1, 2] = 2.5  # +2 above the mean: white
    meis[0, 0, 3, 3] = -0.5  # −1: a quarter below mid grey
    meis[1, 0, 0, 0] = np.nan  # a missing MEI: mid grey, no scale
    drawn = thumbnails(meis, "image", [0.5])
    assert drawn["pixels"].shape == (2, 4, 4, 3)
    assert drawn["limit"][0] == 2.0 and np.isnan(drawn["limit"][1])
    grey = drawn["pixels"][0, ..., 0]
    assert grey[1, 2] == 255 and grey[3, 3] == 64 and grey[0, 0] == 128
    assert (drawn["pixels"][1] == 128).all()


def test_thumbnails_centre_on_the_stores_stimulus_mean_whatever_the_config_spells(tmp_path):
    # a store of display-level MEIs (input_stats resolved from a sample: the config holds only `from:`)
    meis = np.full((1, 1, 2, 1, 6, 6), 120.0, np.float32)
    meis[0, 0, 1, 0, 2:4, 2:4] = 200.0
    store = xr.Dataset({"mei": (("method", "seed", "neuron", "channel", "y", "x"), meis)},
                       coords={"method": ["default"], "seed": [0], "neuron": [0, 1]})
    store.attrs["input_stats"] = {"from": "sample.npy", "mean": [120.0], "std": [45.0], "range": [0.0, 255.0]}
    store.to_zarr(tmp_path / "e.zarr")
    meta = draw_thumbnails(str(tmp_path / "e.zarr"), "default", str(tmp_path / "thumbs"))
    sheet = imageio.imread(tmp_path / "thumbs" / "sheet0.png")
    assert meta["mean"] == [120.0]
    assert abs(int(np.asarray(sheet)[0, 0, ...].flat[0]) - 128) <= 1  # the grey MEI (all at the mean) is mid grey, not white


def test_an_mei_drawn_in_a_batch_equals_the_one_drawn_alone():
    meis = np.random.default_rng(0).normal(size=(5, 2, 6, 30, 20)).astype(np.float32)  # videos, two channels
    batch = thumbnails(meis, "video", [0.0, 0.0], box=10)
    alone = thumbnails(meis[3:4], "video", [0.0, 0.0], box=10)
    for name in ("pixels", "limit", "temporal"):
        np.testing.assert_array_equal(batch[name][3:4], alone[name])
    assert batch["pixels"].shape == (5, 10, 7, 3)  # 30×20 sampled down to fit 10


def test_a_video_thumbnail_is_its_frame_of_most_contrast_and_the_peak_pixels_time_course():
    video = np.zeros((1, 2, 5, 3, 3), np.float32)
    video[0, 1, 3, 2, 1] = -4.0  # the peak: UV channel, frame 3, pixel (2, 1)
    video[0, 0, :, 2, 1] = [0.0, 1.0, 2.0, 3.0, 1.0]
    drawn = thumbnails(video, "video", [0.0, 0.0])
    np.testing.assert_array_equal(drawn["temporal"][0], video[0, :, :, 2, 1])
    # two channels: green is channel 0, red and blue channel 1 (as in the GIFs)
    assert tuple(drawn["pixels"][0, 2, 1]) == (0, 223, 0)
    assert drawn["limit"][0] == 4.0


def test_a_connectome_input_is_a_heatmap_filling_the_box():
    drawn = thumbnails(np.linspace(-1, 1, 2 * 100 * 5, dtype=np.float32).reshape(2, 100, 5), "connectome", [], box=40)
    assert drawn["pixels"].shape == (2, 40, 40, 3)


def test_sheet_layout_places_thumbnails_row_major_on_sheets_of_fixed_size():
    layout = sheet_layout(600, (12, 12), columns=16, per_sheet=256)
    assert layout["sheets"] == ["sheet0.png", "sheet1.png", "sheet2.png"]


# ----------------------------------------------------------------------------------- a real run


class _Rows(HTMLParser):
    """The table rows, the neuron page's MEIs and every element with an id, from a dumped DOM."""

    def __init__(self) -> None:
        super().__init__()
        self.rows: list[dict[str, str]] = []
        self.figures: list[dict[str, str]] = []
        self.ids: dict[str, dict[str, str]] = {}
        self.thumbs: list[str] = []

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        attributes = {k: v or "" for k, v in attrs}
        if tag == "tr" and "data-row" in attributes:
            self.rows.append(attributes)
        if tag == "figure" and "data-seed" in attributes:
            self.figures.append(attributes)
        if tag == "span" and "thumb" in attributes.get("class", ""):
            self.thumbs.append(attributes.get("style", ""))
        if "id" in attributes:
            self.ids[attributes["id"]] = attributes


def page(index: Path, fragment: str) -> _Rows:
    parser = _Rows()
    parser.feed(open_in_chromium(index, fragment))
    return parser


@pytest.fixture(scope="module")
def finished(tmp_path_factory):
    """The tiny project (4 neurons × 2 methods) with two seeds, run once."""
    config = tiny_config()
    config["seeds"] = [0, 1]
    folder = make_project(tmp_path_factory.mktemp("browse") / "project", config)
    snakemake(folder, timeout=1800)  # ≈ 1.5 min alone; much longer on a machine shared by many test runs
    return folder


@pytest.mark.slow
def test_the_run_writes_the_browser_with_one_sprite_per_method(finished):
    browse = finished / "results" / "browse"
    assert (browse / "index.html").exists() and (browse / "data.js").exists()
    for method in ("fast", "slow"):
        meta = read_json(browse / "thumbnails" / "tiny" / method / "meta.json")
        assert meta["sheets"] == ["sheet0.png"] and meta["seeds"] == [0, 1] and meta["neurons"] == [0, 1, 2, 3]
    assert "http://" not in (browse / "index.html").read_text() and "https://" not in (browse / "index.html").read_text()


@pytest.mark.slow
def test_every_rows_thumbnail_is_that_meis_picture(finished):
    scores = pd.read_parquet(finished / "results" / "scores.parquet")
    dataset = xr.open_zarr(finished / "results" / "tiny.zarr")
    for method, rows in scores.groupby("method"):
        folder = finished / "results" / "browse" / "thumbnails" / "tiny" / method
        meta = read_json(folder / "meta.json")
        sheet = imageio.imread(folder / "sheet0.png")
        positions = thumbnail_positions(meta, rows["seed"].to_numpy(), rows["neuron_id"].to_numpy(), rows["mei_index"].to_numpy())
        assert sorted(positions) == list(range(8))
        height, width = meta["cell"]
        for (_, row), position in zip(rows.iterrows(), positions):
            line, column = divmod(int(position), meta["columns"])
            mei = dataset["mei"].sel({"method": method, "seed": row["seed"], "neuron": row["neuron_id"]}).values
            expected = thumbnails(mei[None], "image", [0.0])["pixels"][0]
            # one channel: a grey PNG, each of the thumbnail's three colours
            np.testing.assert_array_equal(sheet[line * height:(line + 1) * height, column * width:(column + 1) * width], expected[..., 0])


@pytest.mark.slow
@needs_chromium
def test_the_table_lists_every_mei(finished):
    scores = pd.read_parquet(finished / "results" / "scores.parquet")
    shown = page(finished / "results" / "browse" / "index.html", "per=1000")
    assert shown.ids["summary"]["data-total"] == str(len(scores)) == str(len(shown.rows)) == "16"
    listed = sorted((r["data-method"], int(r["data-seed"]), int(r["data-neuron"]), int(r["data-mei"])) for r in shown.rows)
    assert listed == sorted(zip(scores["method"], scores["seed"], scores["neuron_id"], scores["mei_index"]))
    assert len(shown.thumbs) == 16 and all("sheet0.png" in style for style in shown.thumbs)


@pytest.mark.slow
@needs_chromium
def test_sorting_by_score_reorders_the_table(finished):
    index = finished / "results" / "browse" / "index.html"
    unsorted = [float(r["data-score"]) for r in page(index, "").rows]
    descending = [float(r["data-score"]) for r in page(index, "sort=-score").rows]
    ascending = [float(r["data-score"]) for r in page(index, "sort=score").rows]
    assert descending == sorted(unsorted, reverse=True) != unsorted
    assert ascending == sorted(unsorted)
    scores = pd.read_parquet(finished / "results" / "scores.parquet")
    np.testing.assert_allclose(descending, np.sort(scores["score"].to_numpy())[::-1], rtol=1e-3)  # the page keeps 4 digits


@pytest.mark.slow
@needs_chromium
def test_a_filter_keeps_only_the_matching_meis_and_a_wrong_column_is_named(finished):
    index = finished / "results" / "browse" / "index.html"
    kept = page(index, "filter=method%3Dslow+seed%3D1").rows
    assert sorted(int(r["data-neuron"]) for r in kept) == [0, 1, 2, 3] and {(r["data-method"], r["data-seed"]) for r in kept} == {("slow", "1")}
    assert "unknown column 'colour'" in open_in_chromium(index, "filter=colour%3Dred")


@pytest.mark.slow
@needs_chromium
def test_a_neuron_page_shows_all_its_seeds_and_methods_on_one_scale(finished):
    shown = page(finished / "results" / "browse" / "index.html", "neuron=tiny/2")
    assert shown.ids["summary"]["data-count"] == "4"
    assert sorted((f["data-method"], f["data-seed"]) for f in shown.figures) == [("fast", "0"), ("fast", "1"), ("slow", "0"), ("slow", "1")]
    # the common scale is the largest deviation from the mean among the neuron's MEIs: that MEI keeps
    # its own contrast (1), every other one is drawn with less
    dataset = xr.open_zarr(finished / "results" / "tiny.zarr")
    largest = float(np.abs(dataset["mei"].sel({"neuron": 2}).values).max())
    assert float(shown.ids["scale"]["data-limit"]) == pytest.approx(largest, rel=1e-3)
    contrasts = sorted(float(style.split("contrast(")[1].split(")")[0]) for style in shown.thumbs)
    assert contrasts[-1] == pytest.approx(1.0, abs=1e-3) and contrasts[0] < 1.0


@pytest.mark.slow
@needs_chromium
def test_a_grid_compares_its_methods_side_by_side_under_their_labels(finished, tmp_path):
    results = finished / "results"
    index = tmp_path / "browse" / "index.html"
    write_browser(str(results / "scores.parquet"), str(results / "validation.parquet"), str(results / "traces.parquet"),
                  [str(results / "browse" / "thumbnails" / "tiny" / m) for m in ("fast", "slow")], str(index), str(tmp_path / "browse" / "data.js"),
                  str(tmp_path / "browse" / "traces"), grids={"tiny": {"steps": {"methods": ["slow", "fast"], "labels": ["n=10", "n=6"], "figure": None}}})
    dom = open_in_chromium(index, "compare=tiny/steps")
    shown = _Rows()
    shown.feed(dom)
    assert shown.ids["summary"]["data-methods"] == "2"
    assert dom.index('data-method="slow">n=10') < dom.index('data-method="fast">n=6')
    assert len(shown.thumbs) == 4 * 2  # the first seed's MEI of each neuron under each method


@pytest.mark.slow
@needs_chromium
def test_quality_flags_are_a_column_when_the_scores_have_them(finished, tmp_path):
    results = finished / "results"
    scores = pd.read_parquet(results / "scores.parquet")
    scores["quality_flags"] = [["low_gain", "clipped"] if n == 2 else [] for n in scores["neuron_id"]]
    scores.to_parquet(tmp_path / "scores.parquet")
    index = tmp_path / "browse" / "index.html"
    write_browser(str(tmp_path / "scores.parquet"), str(results / "validation.parquet"), str(results / "traces.parquet"),
                  [str(results / "browse" / "thumbnails" / "tiny" / m) for m in ("fast", "slow")], str(index), str(tmp_path / "browse" / "data.js"),
                  str(tmp_path / "browse" / "traces"))
    dom = open_in_chromium(index, "filter=flags~clipped")
    shown = _Rows()
    shown.feed(dom)
    assert sorted(int(r["data-neuron"]) for r in shown.rows) == [2, 2, 2, 2]
    assert dom.count('<td class="flags" data-key="quality_flags">low_gain,clipped</td>') == 4
    # scores without the column (results of an older version) give no flags column at all
    scores.drop(columns="quality_flags").to_parquet(tmp_path / "old_scores.parquet")
    old = tmp_path / "old" / "index.html"
    write_browser(str(tmp_path / "old_scores.parquet"), str(results / "validation.parquet"), str(results / "traces.parquet"),
                  [str(results / "browse" / "thumbnails" / "tiny" / m) for m in ("fast", "slow")], str(old), str(tmp_path / "old" / "data.js"),
                  str(tmp_path / "old" / "traces"))
    assert 'data-key="quality_flags"' not in open_in_chromium(old, "")


@pytest.mark.slow
@needs_chromium
def test_a_screenshot_of_the_table_is_not_blank(finished, tmp_path):
    shot = tmp_path / "table.png"
    open_in_chromium(finished / "results" / "browse" / "index.html", "sort=-score", screenshot=shot)
    pixels = imageio.imread(shot)
    assert pixels.shape[:2] == (900, 1280)
    colours = np.unique(pixels[..., :3].reshape(-1, 3), axis=0)
    assert len(colours) > 50  # text, the header bar and grey-level thumbnails, not one background colour


@pytest.mark.slow
def test_changing_one_method_redraws_only_that_methods_thumbnails(finished, tmp_path):
    project = copy_project(finished, tmp_path / "project")
    assert planned_outputs(project) == {}
    config = edited(read_config(project))
    config["methods"]["slow"]["config"]["stopper"]["kwargs"]["num_iterations"] = 11
    write_config(project, config)
    planned = planned_outputs(project)
    assert planned["browse_thumbnails"] == ["results/browse/thumbnails/tiny/slow"]
    assert planned["browse"] == ["results/browse/index.html", "results/browse/data.js", "results/browse/traces"]
