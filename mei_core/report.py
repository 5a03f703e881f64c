"""Pictures of MEIs: one PNG grid per (ensemble, method)."""

from __future__ import annotations

import math

import matplotlib

matplotlib.use("Agg")  # jobs have no display
import matplotlib.pyplot as plt
import numpy as np
import pandas as pd
import xarray as xr

from .files import atomic_path


def mei_grid(zarr_path: str, method: str, out_path: str, validation_path: str | None = None, max_neurons: int = 48) -> None:
    """MEIs of the first seed for up to ``max_neurons`` neurons, titled with neuron id, score and
    (when known) the correlation to the true filter."""
    dataset = xr.open_zarr(zarr_path)
    seed = int(dataset["seed"].values[0])
    selection = {"method": method, "seed": seed}
    meis = dataset["mei"].sel(selection)
    if "mei" in meis.dims:
        meis = meis.isel(mei=0)
    neurons = dataset["neuron"].values[:max_neurons]
    scores = dataset["score"].sel(selection)
    if "mei" in scores.dims:
        scores = scores.isel(mei=0)
    correlation = {}
    if validation_path:
        validation = pd.read_parquet(validation_path)
        if "filter_correlation" in validation:
            rows = validation[(validation["method"] == method) & (validation["seed"] == seed) & (validation["mei_index"] == 0)]
            correlation = dict(zip(rows["neuron_id"], rows["filter_correlation"]))
    columns = min(8, len(neurons))
    lines = math.ceil(len(neurons) / columns)
    figure, axes = plt.subplots(lines, columns, figsize=(1.6 * columns, 2.0 * lines), squeeze=False)
    for axis in axes.flat:
        axis.axis("off")
    for axis, neuron in zip(axes.flat, neurons):
        image = np.asarray(meis.sel({"neuron": neuron}).values)
        if "time" in meis.dims:  # videos: show the frame with the most contrast
            frame = int(np.abs(image).reshape(image.shape[0], image.shape[1], -1).max(-1).max(0).argmax())
            image = image[:, frame]
        if "sensory" in meis.dims:  # connectome inputs: sensory neurons × layers
            picture = image
        else:
            picture = image[0] if image.shape[0] != 3 else np.moveaxis(image, 0, -1)
        limit = float(np.nanmax(np.abs(picture))) or 1.0
        axis.imshow(picture, cmap="gray", vmin=-limit, vmax=limit, aspect="auto" if "sensory" in meis.dims else "equal")
        title = f"n{int(neuron)} s={float(scores.sel({'neuron': neuron})):.2g}"
        if neuron in correlation:
            title += f"\nr={correlation[neuron]:.2f}"
        axis.set_title(title, fontsize=7)
    figure.suptitle(f"{dataset.attrs.get('ensemble', '')} · {method} · seed {seed}", fontsize=9)
    figure.tight_layout()
    with atomic_path(out_path, suffix=".png") as temporary:
        figure.savefig(temporary, dpi=110)
    plt.close(figure)
