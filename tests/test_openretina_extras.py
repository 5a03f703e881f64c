"""openretina extras: video MEIs as GIF / MP4, GIFs per neuron for the report, and an inner-layer
sweep over all channels."""

from __future__ import annotations

from pathlib import Path

import imageio.v2 as imageio
import numpy as np
import pytest
import torch
import xarray as xr

from mei_core import MEIConfigError
from mei_core.methods import batched_gradient_ascent
from mei_core.objectives import build_objective
from mei_core.objectives.kinds import as_table, table_rows
from mei_core.pipeline.report import video_gifs
from mei_core.pipeline.video_export import export_video, video_frames
from openretina_like import SessionModel


def test_frames_put_zero_at_mid_grey_and_map_green_and_uv():
    video = np.zeros((2, 3, 2, 2))
    video[0, 1, 0, 0] = 2.0  # green bright
    video[1, 2, 1, 1] = -2.0  # UV dark
    frames = video_frames(video, upscale=1)
    assert frames.shape == (3, 2, 2, 3) and frames.dtype == np.uint8
    assert frames[0, 0, 0].tolist() == [128, 128, 128]  # zero: mid grey
    assert frames[1, 0, 0].tolist() == [128, 255, 128]  # channel 0 → green
    assert frames[2, 1, 1].tolist() == [0, 128, 0]  # channel 1 → red and blue (magenta)
    assert video_frames(np.ones((1, 1, 3, 5)), upscale=None).shape == (1, 96, 160, 3)  # shorter side ≥ 96
    assert video_frames(np.ones((1, 1, 3, 5)), upscale=3, even=True).shape == (1, 12, 20, 3)
    minmax = video_frames(np.array([[[[1.0, 3.0]]]]), scale="minmax", upscale=1)
    assert minmax[0, 0, :, 0].tolist() == [0, 255]
    with pytest.raises(ValueError, match="C×T×H×W"):
        video_frames(np.zeros((2, 4, 4)))


def test_gif_and_mp4_hold_the_frames(tmp_path: Path):
    video = torch.zeros(1, 6, 8, 8)
    for t in range(6):
        video[0, t, t : t + 2, 2:4] = 1.0  # a bar moving down
    gif = export_video(video, tmp_path / "bar.gif", fps=4)
    frames = imageio.mimread(gif)
    assert len(frames) == 6 and frames[0].shape[:2] == (96, 96)
    expected = video_frames(video.numpy())
    assert all(np.array_equal(np.asarray(f)[..., :3], e) for f, e in zip(frames, expected))
    assert imageio.get_reader(gif).get_meta_data()["duration"] == 250  # ms per frame at 4 fps
    mp4 = export_video(video, tmp_path / "bar.mp4", fps=4)
    reader = imageio.get_reader(mp4)
    decoded = [f for f in reader]
    assert len(decoded) == 6 and reader.get_meta_data()["fps"] == 4.0
    # lossy, but the bar is where it should be: bright rows move down one per frame (12 px at ×12)
    assert [int(np.argmax(f[:, 30, 1])) // 12 for f in decoded] == [0, 1, 2, 3, 4, 5]
    with pytest.raises(ValueError, match=".gif or .mp4"):
        export_video(video, tmp_path / "bar.avi")


@pytest.mark.filterwarnings("ignore::UserWarning")  # zarr's notes on string coordinates and consolidated metadata
def test_report_writes_a_gif_per_neuron_of_a_video_ensemble(tmp_path: Path):
    meis = np.random.default_rng(0).normal(size=(1, 2, 3, 2, 4, 6, 6)).astype(np.float32)
    dataset = xr.Dataset(
        {"mei": (("method", "seed", "neuron", "channel", "time", "y", "x"), meis)},
        coords={"method": ["m"], "seed": [5, 6], "neuron": [10, 11, 12]},
    )
    dataset.to_zarr(tmp_path / "video.zarr")
    written = video_gifs(str(tmp_path / "video.zarr"), "m", str(tmp_path / "figures" / "retina" / "m"), fps=2)
    assert [Path(p).name for p in written] == ["neuron10.gif", "neuron11.gif", "neuron12.gif"]
    first = imageio.mimread(written[1])
    assert len(first) == 4
    assert np.array_equal(np.asarray(first[2])[..., :3], video_frames(meis[0, 0, 1])[2])  # seed 5, neuron 11
    images = xr.Dataset({"mei": (("method", "seed", "neuron", "channel", "y", "x"), meis[:, :, :, :, 0])},
                        coords={"method": ["m"], "seed": [5, 6], "neuron": [10, 11, 12]})
    images.to_zarr(tmp_path / "images.zarr")
    assert video_gifs(str(tmp_path / "images.zarr"), "m", str(tmp_path / "none")) == []


def test_inner_kind_sweeps_all_channels_of_a_layer(tmp_path: Path):
    spec = {"kind": "inner", "data_key": "session_a", "kwargs": {"layer": "core", "channels": "all", "n_channels": 4}}
    rows = table_rows(spec, 3, tmp_path, "objectives.retina")
    assert [(r["neuron_id"], r["output_unit"]) for r in rows] == [(0, 0), (1, 1), (2, 2), (3, 3)]
    model = SessionModel()
    objective = build_objective(model, as_table(rows))
    x = torch.randn(4, 2, 10, 8, 8, generator=torch.Generator().manual_seed(0))
    with torch.no_grad():
        centre = model.core(x)[:, :, :, 3, 3]  # B×4×T': the 6×6 map's centre
    torch.testing.assert_close(objective(x, torch.arange(4)), centre[torch.arange(4), torch.arange(4)].mean(1))
    method = {"initial": "RandomNormal", "optimizer": {"path": "torch.optim.SGD", "kwargs": {"lr": 1.0}},
              "stopper": {"path": "NumIterations", "kwargs": {"num_iterations": 5}},
              "postprocessing": {"path": "ChangeNorm", "kwargs": {"norm": 5.0}}}
    result = batched_gradient_ascent(build_objective(model, as_table(rows)), method, seeds=[0] * 4, shape=(2, 10, 8, 8))
    start = torch.randn((2, 10, 8, 8), generator=torch.Generator().manual_seed(0))
    start = start * 5.0 / start.norm()
    with torch.no_grad():
        assert torch.all(result.scores > objective(start[None].expand(4, -1, -1, -1, -1), torch.arange(4)))

    wrong_width = table_rows({**spec, "kwargs": {**spec["kwargs"], "n_channels": 6}}, 3, tmp_path, "objectives.retina")
    with pytest.raises(ValueError, match=r"layer 'core' has 4 channels, but .* n_channels = 6"):
        build_objective(model, as_table(wrong_width))(x[:1], torch.zeros(1, dtype=torch.long))
    listed = table_rows({**spec, "kwargs": {"layer": "core", "channels": [1, 3]}}, 3, tmp_path, "objectives.retina")
    assert [r["output_unit"] for r in listed] == [1, 3]
    with pytest.raises(MEIConfigError, match=r"objectives\.retina\.kwargs\.n_channels: required with channels: all"):
        table_rows({**spec, "kwargs": {"layer": "core", "channels": "all"}}, 3, tmp_path, "objectives.retina")
    with pytest.raises(MEIConfigError, match=r"objectives\.retina\.neurons: give either neurons or kwargs\.channels"):
        table_rows({**spec, "neurons": [0]}, 3, tmp_path, "objectives.retina")
