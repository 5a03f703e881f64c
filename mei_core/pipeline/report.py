"""Pictures of MEIs: one PNG grid per (ensemble, method)."""

from __future__ import annotations

import math

import matplotlib

matplotlib.use("Agg")  # jobs have no display
import matplotlib.pyplot as plt
import numpy as np
import pandas as pd
import xarray as xr

from ..files import atomic_path
from ..stored import first_meis


def mei_grid(zarr_path: str, method: str, out_path: str, validation_path: str | None = None, max_neurons: int = 48) -> None:
    """MEIs of the first seed for up to ``max_neurons`` neurons, titled with neuron id, score and
    (when known) the correlation to the true filter."""
    dataset = xr.open_zarr(zarr_path)
    seed = int(dataset["seed"].values[0])
    meis, scores = first_meis(dataset, method), first_meis(dataset, method, "score")
    neurons = dataset["neuron"].values[:max_neurons]
    # one ground-truth figure per MEI where validation has one: filter r, spatial r, or target RMSE
    correlation: dict[int, str] = {}
    if validation_path:
        validation = pd.read_parquet(validation_path)
        ensemble = dataset.attrs.get("ensemble")
        rows = validation[(validation["method"] == method) & (validation["seed"] == seed) & (validation["mei_index"] == 0)]
        if ensemble is not None and "ensemble" in rows:
            rows = rows[rows["ensemble"] == ensemble]
        for column, label in (("filter_correlation", "r"), ("spatial_correlation", "r_xy"), ("target_rmse", "rmse")):
            if column in rows and rows[column].notna().any():
                correlation = {int(n): f"{label}={v:.2g}" for n, v in zip(rows["neuron_id"], rows[column]) if np.isfinite(v)}
                break
    columns = min(8, len(neurons))
    lines = math.ceil(len(neurons) / columns)
    video = "time" in meis.dims
    rows_per_line = 2 if video else 1  # videos: a frame, and under it the time course of its peak pixel
    figure, axes = plt.subplots(lines * rows_per_line, columns, figsize=(1.6 * columns, 2.0 * lines * rows_per_line), squeeze=False)
    for axis in axes.flat:
        axis.axis("off")
    for index, neuron in enumerate(neurons):
        line, column = divmod(index, columns)
        axis = axes[line * rows_per_line, column]
        image = np.asarray(meis.sel({"neuron": neuron}).values)
        if video:  # the frame with the most contrast, and the peak pixel's trace per channel
            frame = int(np.abs(image).reshape(image.shape[0], image.shape[1], -1).max(-1).max(0).argmax())
            y, x = np.unravel_index(np.abs(image[:, frame]).max(0).argmax(), image.shape[-2:])
            trace_axis = axes[line * rows_per_line + 1, column]
            trace_axis.axis("on")
            for channel, colour in zip(range(image.shape[0]), ("tab:green", "tab:purple", "tab:blue")):
                trace_axis.plot(image[channel, :, y, x], color=colour, linewidth=1)
            trace_axis.axhline(0, color="0.7", linewidth=0.5)
            trace_axis.set_xticks([0, image.shape[1] - 1])
            trace_axis.set_yticks([])
            trace_axis.set_xlabel("frame", fontsize=6, labelpad=0)
            trace_axis.tick_params(labelsize=6)
            image = image[:, frame]
        if "sensory" in meis.dims:  # connectome inputs: sensory neurons × layers
            picture = image
        else:
            picture = image[0] if image.shape[0] != 3 else np.moveaxis(image, 0, -1)
        limit = float(np.nanmax(np.abs(picture))) or 1.0
        connectome = "sensory" in meis.dims
        axis.imshow(picture, cmap="gray", vmin=-limit, vmax=limit, aspect="auto" if connectome else "equal",
                    interpolation="nearest" if connectome else "antialiased")
        title = f"n{int(neuron)} s={float(scores.sel({'neuron': neuron})):.2g}"
        if int(neuron) in correlation:
            title += f"\n{correlation[int(neuron)]}"
        axis.set_title(title, fontsize=7)
    figure.suptitle(f"{dataset.attrs.get('ensemble', '')} · {method} · seed {seed}", fontsize=9)
    figure.tight_layout()
    with atomic_path(out_path, suffix=".png") as temporary:
        figure.savefig(temporary, dpi=110)
    plt.close(figure)


#: ground-truth columns of validation tables, by preference (the first present is plotted)
TRUTH_COLUMNS = ("filter_correlation", "spatial_correlation", "target_rmse")


def grid_figure(validation_path: str, methods: list[str], labels: list[str], title: str, out_path: str) -> None:
    """The methods of one grid side by side: median score, held-out score ÷ score and (where the
    truth is known) the ground-truth metric per cell type, against the grid value."""
    validation = pd.read_parquet(validation_path)
    validation = validation[validation["method"].isin(methods)]
    truth = next((c for c in TRUTH_COLUMNS if c in validation and validation[c].notna().any()), None)
    panels = ["score", "heldout ratio"] + ([truth] if truth else [])
    figure, axes = plt.subplots(1, len(panels), figsize=(3.4 * len(panels), 3.0), squeeze=False)
    positions = np.arange(len(methods))
    groups = validation.groupby("cell_type") if "cell_type" in validation and truth else [("all", validation)]
    for axis, panel in zip(axes[0], panels):
        for group_name, group in (groups if panel == truth else [("all", validation)]):
            by_method = group.groupby("method")
            if panel == "score":
                values = by_method["score"].median()
            elif panel == "heldout ratio":
                values = (group["heldout_score"] / group["score"]).groupby(group["method"]).median()
            else:
                values = by_method[panel].median()
            axis.plot(positions, [values.get(m, np.nan) for m in methods], marker="o", label=str(group_name))
        axis.set_title(panel, fontsize=9)
        axis.set_xticks(positions, labels, rotation=30, fontsize=7)
        if panel == truth and "cell_type" in validation:
            axis.legend(fontsize=7)
    figure.suptitle(title, fontsize=9)
    figure.tight_layout()
    with atomic_path(out_path, suffix=".png") as temporary:
        figure.savefig(temporary, dpi=110)
    plt.close(figure)


def gif_name(neuron: int | str) -> str:
    """The file name of a neuron's GIF in its method's video folder (the results browser fills in
    ``"{neuron}"`` itself)."""
    return f"neuron{neuron}.gif"


def video_gifs(zarr_path: str, method: str, out_dir: str, fps: float = 5.0, max_neurons: int | None = None) -> list[str]:
    """One looping GIF per neuron (first seed, first MEI) of a video ensemble: ``out_dir/neuron<k>.gif``
    with ``k`` the neuron id, beside the PNG grid (e.g. ``results/figures/<ensemble>/<method>/``).
    Image and connectome ensembles have no time axis: nothing is written and ``[]`` returned."""
    from pathlib import Path

    from .video_export import export_video

    dataset = xr.open_zarr(zarr_path)
    meis = dataset["mei"]
    if "time" not in meis.dims:
        return []
    meis = first_meis(dataset, method)
    neurons = dataset["neuron"].values if max_neurons is None else dataset["neuron"].values[:max_neurons]
    folder = Path(out_dir)
    folder.mkdir(parents=True, exist_ok=True)
    written = []
    for neuron in neurons:
        path = folder / gif_name(int(neuron))
        with atomic_path(str(path), suffix=".gif") as temporary:
            export_video(np.asarray(meis.sel({"neuron": neuron}).values), temporary, fps=fps)
        written.append(str(path))
    return written
