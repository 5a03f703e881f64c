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


def stimulus_limits(input_stats: dict | None, picture: np.ndarray) -> tuple[float, float, float]:
    """``(low, centre, high)`` of the colour scale: around the stimulus mean (grey = mean), as far as the
    stimulus's own range reaches from it (``mean ± max|range − mean|``, else ``mean ± 3 std``), so an MEI
    shows its contrast in stimulus units and one made around the wrong mean looks dark or bright.
    Without ``input_stats``: symmetric about 0 to the picture's largest value (connectomes, no stats)."""
    if not input_stats:
        limit = float(np.nanmax(np.abs(picture))) or 1.0
        return -limit, 0.0, limit
    mean = float(np.mean(input_stats["mean"]))
    value_range = input_stats.get("range")
    if value_range is not None:
        values = np.asarray(value_range, dtype=np.float64).reshape(-1)
        half = float(np.max(np.abs(values - mean)))
    else:
        half = 3.0 * float(np.max(input_stats["std"]))
    return mean - half, mean, mean + half


def _display_order(neurons: np.ndarray, types: dict[int, str], columns: int) -> list[tuple[int, int | None]]:
    """Grid slots ``(slot, neuron)``: neurons in table order or, when cell types are known, one block
    of lines per type (in order of first appearance), each starting on a new line."""
    if not types:
        return list(enumerate(int(n) for n in neurons))
    slots, slot = [], 0
    for kind in dict.fromkeys(types.get(int(n), "") for n in neurons):
        for neuron in (int(n) for n in neurons if types.get(int(n), "") == kind):
            slots.append((slot, neuron))
            slot += 1
        slot = -(-slot // columns) * columns  # the next type starts a new line
    return slots


def mei_grid(zarr_path: str, method: str, out_path: str, validation_path: str | None = None, max_neurons: int = 48) -> None:
    """MEIs of the first seed for up to ``max_neurons`` neurons, titled with neuron id, score and
    (when known) the correlation to the true filter, grouped in lines per cell type when known. Drawn
    in stimulus units around ``input_stats.mean`` (``stimulus_limits``); a suspect MEI (a quality flag,
    ``quality.FLAG_RULES``) has a red frame and its flags in the title."""
    dataset = xr.open_zarr(zarr_path)
    input_stats = dataset.attrs.get("input_stats")
    seed = int(dataset["seed"].values[0])
    meis, scores = first_meis(dataset, method), first_meis(dataset, method, "score")
    neurons = dataset["neuron"].values[:max_neurons]
    # one ground-truth figure per MEI where validation has one: filter r, spatial r, or target RMSE
    correlation: dict[int, str] = {}
    flags: dict[int, str] = {}
    types: dict[int, str] = {}
    if validation_path:
        validation = pd.read_parquet(validation_path)
        ensemble = dataset.attrs.get("ensemble")
        rows = validation[(validation["method"] == method) & (validation["seed"] == seed) & (validation["mei_index"] == 0)]
        if ensemble is not None and "ensemble" in rows:
            rows = rows[rows["ensemble"] == ensemble]
        if "quality_flags" in rows:
            flags = {int(n): str(f) for n, f in zip(rows["neuron_id"], rows["quality_flags"]) if isinstance(f, str) and f}
        if "cell_type" in rows and rows["cell_type"].notna().any():
            types = {int(n): str(t) for n, t in zip(rows["neuron_id"], rows["cell_type"])}
        for column, label in (("filter_correlation", "r"), ("spatial_correlation", "r_xy"), ("target_rmse", "rmse")):
            if column in rows and rows[column].notna().any():
                correlation = {int(n): f"{label}={v:.2g}" for n, v in zip(rows["neuron_id"], rows[column]) if np.isfinite(v)}
                break
    columns = min(8, len(neurons))
    slots = _display_order(neurons, types, columns)
    lines = math.ceil((slots[-1][0] + 1) / columns) if slots else 1
    video = "time" in meis.dims
    rows_per_line = 2 if video else 1  # videos: a frame, and under it the time course of its peak pixel
    figure, axes = plt.subplots(lines * rows_per_line, columns, figsize=(1.6 * columns, 2.0 * lines * rows_per_line), squeeze=False)
    for axis in axes.flat:
        axis.axis("off")
    for index, neuron in slots:
        neuron = int(neuron)
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
            trace_axis.axhline(stimulus_limits(input_stats, image)[1], color="0.7", linewidth=0.5)  # the stimulus mean
            trace_axis.set_xticks([0, image.shape[1] - 1])
            trace_axis.set_yticks([])
            trace_axis.set_xlabel("frame", fontsize=6, labelpad=0)
            trace_axis.tick_params(labelsize=6)
            image = image[:, frame]
        if "sensory" in meis.dims:  # connectome inputs: sensory neurons × layers
            picture = image
        else:
            picture = image[0] if image.shape[0] != 3 else np.moveaxis(image, 0, -1)
        low, _, high = stimulus_limits(input_stats, picture)
        if picture.ndim == 3:  # colour: imshow wants [0, 1], mapped from the same limits
            picture = np.clip((picture - low) / (high - low), 0.0, 1.0)
            low, high = 0.0, 1.0
        connectome = "sensory" in meis.dims
        axis.imshow(picture, cmap="gray", vmin=low, vmax=high, aspect="auto" if connectome else "equal",
                    interpolation="nearest" if connectome else "antialiased")
        title = (f"{types[neuron]} " if neuron in types else "") + f"n{neuron} s={float(scores.sel({'neuron': neuron})):.2g}"
        if neuron in correlation:
            title += f"\n{correlation[neuron]}"
        if neuron in flags:  # suspect: a red frame and the flags
            title += f"\n{flags[neuron]}"
            axis.axis("on")
            axis.set_xticks([])
            axis.set_yticks([])
            for spine in axis.spines.values():
                spine.set_edgecolor("red")
                spine.set_linewidth(2)
        axis.set_title(title, fontsize=7, color="red" if neuron in flags else "black")
    scale = ""
    if input_stats:
        low, centre, high = stimulus_limits(input_stats, np.zeros(1))
        scale = f" · grey = mean {centre:.3g}, black {low:.3g}, white {high:.3g}"
    suspect = f" · {len(flags)} suspect (red)" if flags else ""
    figure.suptitle(f"{dataset.attrs.get('ensemble', '')} · {method} · seed {seed}{scale}{suspect}", fontsize=9)
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
