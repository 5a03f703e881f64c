"""An offline results browser: ``results/browse/index.html`` opens from the file system (no server, no
network) and shows every MEI of a run: a sortable, filterable, paged table with a thumbnail per row, a
page per neuron (all its MEIs on one colour scale around the stimulus mean, its traces, for videos a
clip and the peak pixel's time course) and a method comparison per ``grid``.

Two steps, so that a changed method redraws only its own pictures:

* :func:`draw_thumbnails` (one job per ensemble and method): sprite sheets of the method's MEIs, each
  thumbnail on its own symmetric scale around the stimulus mean, and ``meta.json`` with each MEI's
  scale (its largest deviation from the mean). The page puts a neuron's MEIs on one scale with a CSS
  ``contrast()`` of (own scale ÷ common scale): pixels are linear around mid grey, so this is exact up
  to 8-bit rounding, and no pixel is read back (a page from ``file://`` may not read image pixels).
* :func:`write_browser` (one job): the table of every MEI as one script (``data.js``, columnar),
  traces in scripts per block of neurons (loaded when a neuron page opens), and the page itself with
  its hand-written JavaScript and CSS inlined (``browse_assets/``; no library, nothing to bundle).

Thumbnails: images at their own size up to ``THUMBNAIL_BOX`` pixels (larger ones sampled down to fit),
videos by their frame of most contrast, connectome inputs (sensory × layer) as a heatmap stretched to
``THUMBNAIL_BOX`` square. Channels become colours as in the GIFs (``video_export``): one grey, two
green/magenta, three RGB; more than three: the first channel in grey.

Size and load time for 50,000 MEIs: README.md, "Looking at the results" (``benchmarks/browse.py``).
"""

from __future__ import annotations

import json
import math
import os
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import pyarrow.parquet as pq
import xarray as xr

from ..errors import MEIConfigError
from ..files import atomic_path, read_json, write_json
from .report import TRUTH_COLUMNS, gif_name

#: the longest side of a thumbnail in pixels (smaller inputs keep their own size)
THUMBNAIL_BOX = 40
#: thumbnails per sprite sheet, in rows of ``SHEET_COLUMNS``: a page of the table loads a few sheets
SHEET_COLUMNS = 16
SHEET_SIZE = 256
#: neurons per trace script (a neuron page loads one)
TRACE_BLOCK = 64
#: significant digits of the numbers in the page's data (the table shows 3)
DIGITS = 4
ASSETS = Path(__file__).with_name("browse_assets")


# ------------------------------------------------------------------------------------------ thumbnails


def _kind(dims: Sequence[str]) -> str:
    return "connectome" if "sensory" in dims else "video" if "time" in dims else "image"


def _cell_shape(kind: str, height: int, width: int, box: int) -> tuple[int, int]:
    if kind == "connectome":  # sensory × layer: a heatmap stretched to the box
        return box, box
    scale = min(1.0, box / max(height, width))
    return max(1, round(height * scale)), max(1, round(width * scale))


def _to_rgb(levels: np.ndarray) -> np.ndarray:
    """``M×C×H×W`` uint8 → ``M×H×W×3``: one channel grey, two green/magenta (R = B = channel 1), three RGB."""
    channels = levels.shape[1]
    if channels == 2:
        return np.stack([levels[:, 1], levels[:, 0], levels[:, 1]], axis=-1)
    if channels == 3:
        return np.moveaxis(levels, 1, -1)
    return np.repeat(levels[:, 0, ..., None], 3, axis=-1)


def thumbnails(meis: np.ndarray, kind: str, mean: Sequence[float], box: int = THUMBNAIL_BOX) -> dict[str, np.ndarray]:
    """Thumbnails of ``M`` MEIs (``M×C×H×W`` images, ``M×C×T×H×W`` videos, ``M×S×L`` connectome
    inputs) as ``M×h×w×3`` uint8, each on its own scale ``mean ± limit`` (``limit``: ``M``, the MEI's
    largest deviation from the stimulus mean; NaN for a missing or non-finite MEI, drawn mid grey).
    Videos also give ``temporal``: ``M×C×T``, each channel's time course at the pixel of largest
    deviation in the frame of most contrast (the frame drawn)."""
    count = meis.shape[0]
    if kind == "connectome":
        deviation = meis[:, None].astype(np.float32)  # M×1×S×L: one heatmap channel, around 0
    else:
        centre = np.asarray(mean, np.float32).reshape((1, -1) + (1,) * (meis.ndim - 2))
        if centre.shape[1] not in (1, meis.shape[1]):
            raise MEIConfigError(f"input_stats.mean: {centre.shape[1]} values for {meis.shape[1]} channels")
        deviation = (meis - centre).astype(np.float32)
    finite = np.isfinite(deviation.reshape(count, -1)).all(1)
    deviation = np.where(finite.reshape((-1,) + (1,) * (deviation.ndim - 1)), deviation, 0.0)
    result: dict[str, np.ndarray] = {}
    if kind == "video":  # M×C×T×H×W: the frame of most contrast, and its peak pixel's time course
        size = np.abs(deviation).max(axis=1)  # M×T×H×W
        frame = size.reshape(count, size.shape[1], -1).max(-1).argmax(1)
        rows = np.arange(count)
        peak = size[rows, frame].reshape(count, -1).argmax(1)
        y, x = np.unravel_index(peak, size.shape[-2:])
        result["temporal"] = deviation[rows, :, :, y, x]  # M×C×T
        deviation = deviation[rows, :, frame]  # M×C×H×W
    limit = np.abs(deviation).reshape(count, -1).max(1)
    safe = np.where(limit > 0, limit, 1.0)
    levels = np.clip(np.round(127.5 + 127.5 * deviation / safe[:, None, None, None]), 0, 255).astype(np.uint8)
    height, width = levels.shape[-2:]
    cell = _cell_shape(kind, height, width, box)
    rows_index = (np.arange(cell[0]) * height // cell[0])[:, None]
    columns_index = (np.arange(cell[1]) * width // cell[1])[None, :]
    result["pixels"] = _to_rgb(levels[:, :, rows_index, columns_index])
    result["limit"] = np.where(finite, limit, np.nan).astype(np.float32)
    return result


def sheet_layout(count: int, cell: tuple[int, int], columns: int = SHEET_COLUMNS, per_sheet: int = SHEET_SIZE) -> dict[str, Any]:
    """Where thumbnail ``i`` of a method lies: sheet ``i // per_sheet``, then row-major in ``columns``."""
    return {"cell": list(cell), "columns": columns, "per_sheet": per_sheet, "sheets": [f"sheet{k}.png" for k in range(math.ceil(count / per_sheet))]}


def draw_thumbnails(zarr_path: str, method: str, out_dir: str, gif_folder: str | None = None,
                    box: int = THUMBNAIL_BOX) -> dict[str, Any]:
    """Sprite sheets of every MEI of one method of an ensemble (``out_dir/sheet<k>.png``) and
    ``out_dir/meta.json``: the order of the thumbnails (seed, then neuron, then ``mei_index``), each
    MEI's scale, and for videos each MEI's temporal trace and the folder of its GIFs. The stimulus
    mean is the store's (its ``input_stats``, as the ensemble's manifest resolved them, ``from:``
    included; 0 without)."""
    import imageio.v3 as imageio

    dataset = xr.open_zarr(zarr_path)
    mean = (dataset.attrs.get("input_stats") or {}).get("mean") or [0.0]
    if method not in dataset["method"].values:
        raise MEIConfigError(f"{zarr_path}: no method {method!r} (it has {list(map(str, dataset['method'].values))})")
    meis = dataset["mei"].sel({"method": method})
    kind = _kind(meis.dims)
    has_index = "mei_index" in meis.dims
    seeds = [int(s) for s in dataset["seed"].values]
    neurons = [int(n) for n in dataset["neuron"].values]
    n_meis = int(dataset.sizes["mei_index"]) if has_index else 1
    item_shape = meis.shape[3 if has_index else 2:]
    pixels, limits, temporal = [], [], []
    for seed in seeds:  # one (method, seed) slab at a time: memory bounded by a slab
        slab = np.asarray(meis.sel({"seed": seed}).values, np.float32).reshape(-1, *item_shape)
        drawn = thumbnails(slab, kind, mean, box)
        pixels.append(drawn["pixels"])
        limits.append(drawn["limit"])
        if "temporal" in drawn:
            temporal.append(drawn["temporal"])
    pixels_all = np.concatenate(pixels)
    cell = pixels_all.shape[1:3]
    layout = sheet_layout(len(pixels_all), cell)
    folder = Path(out_dir)
    folder.mkdir(parents=True, exist_ok=True)
    per_sheet, columns = layout["per_sheet"], layout["columns"]
    grey = kind == "connectome" or item_shape[0] not in (2, 3)
    for k, name in enumerate(layout["sheets"]):
        chunk = pixels_all[k * per_sheet:(k + 1) * per_sheet]
        lines = math.ceil(len(chunk) / columns)
        padded = np.full((lines * columns, *chunk.shape[1:]), 255, np.uint8)
        padded[:len(chunk)] = chunk
        # (lines·columns)×h×w×3 → (lines·h)×(columns·w)×3
        sheet = padded.reshape(lines, columns, cell[0], cell[1], 3).transpose(0, 2, 1, 3, 4).reshape(lines * cell[0], columns * cell[1], 3)
        if grey:  # a third of the bytes
            sheet = sheet[..., 0]
        with atomic_path(str(folder / name), suffix=".png") as temporary:
            imageio.imwrite(temporary, sheet, extension=".png")
    meta = {
        "ensemble": str(dataset.attrs.get("ensemble", "")), "method": method, "kind": kind, "channels": int(item_shape[0]) if kind != "connectome" else 1,
        "input_shape": [int(s) for s in item_shape], "mean": list(map(float, mean)), "seeds": seeds, "neurons": neurons, "n_meis": n_meis,
        **layout, "limit": _rounded(np.concatenate(limits)),
        "temporal": _rounded(np.concatenate(temporal)) if temporal else None,
        "gif_folder": gif_folder if kind == "video" else None,
    }
    write_json(folder / "meta.json", meta)
    return meta


def thumbnail_positions(meta: dict[str, Any], seeds: np.ndarray, neurons: np.ndarray, mei_index: np.ndarray) -> np.ndarray:
    """The thumbnail number of each MEI ``(seed, neuron, mei_index)`` in the order ``draw_thumbnails``
    drew them; −1 for an MEI it did not draw."""
    seed_position = pd.Index(meta["seeds"]).get_indexer(seeds)
    neuron_position = pd.Index(meta["neurons"]).get_indexer(neurons)
    position = (seed_position * len(meta["neurons"]) + neuron_position) * meta["n_meis"] + mei_index
    return np.where((seed_position >= 0) & (neuron_position >= 0) & (mei_index < meta["n_meis"]), position, -1)


def _rounded(values: np.ndarray) -> Any:
    """Nested lists with ``DIGITS`` significant digits and None for NaN (JSON has no NaN)."""
    array = np.asarray(values, np.float64)
    scale = np.where(np.isfinite(array) & (array != 0), 10.0 ** (DIGITS - 1 - np.floor(np.log10(np.abs(np.where(array == 0, 1, array))))), 1.0)
    rounded = np.round(array * scale) / scale
    return np.where(np.isfinite(rounded), rounded, None).tolist()


# ------------------------------------------------------------------------------------------ the page

#: scores.parquet columns shown, under the names the page uses
SCORE_COLUMNS = {"ensemble": "ensemble", "method": "method", "seed": "seed", "neuron_id": "neuron", "mei_index": "mei_index", "score": "score",
                 "heldout_score": "heldout", "n_iterations": "n_iterations", "stop_reason": "stop_reason", "status": "status"}
#: text columns stored once per distinct value (codes in the rows)
CODED = ("ensemble", "method", "stop_reason", "status", "quality_flags")
KEYS = ["ensemble", "method", "seed", "neuron_id", "mei_index"]


def _rows(scores: pd.DataFrame, validation: pd.DataFrame) -> tuple[pd.DataFrame, dict[str, str]]:
    """One row per MEI: scores, the first ground-truth column each ensemble has, quality flags when the
    scores have them."""
    truth_of: dict[str, str] = {}
    rows = scores.copy()
    rows["truth"] = np.nan
    for ensemble, group in validation.groupby("ensemble", sort=False):
        column = next((c for c in TRUTH_COLUMNS if c in group and group[c].notna().any()), None)
        if column is None:
            continue
        truth_of[str(ensemble)] = column
        merged = rows.loc[rows["ensemble"] == ensemble, KEYS].merge(group[KEYS + [column]], on=KEYS, how="left")
        rows.loc[rows["ensemble"] == ensemble, "truth"] = merged[column].to_numpy(np.float64)
    return rows, truth_of


def _columnar(rows: pd.DataFrame) -> dict[str, Any]:
    columns: dict[str, Any] = {}
    codes: dict[str, list[str]] = {}
    for name in rows.columns:
        values = rows[name]
        if name in CODED:
            categorical = pd.Categorical(values.fillna("").astype(str))
            codes[name] = [str(c) for c in categorical.categories]
            columns[name] = categorical.codes.astype(int).tolist()
        elif name in ("score", "heldout", "truth", "limit"):
            columns[name] = _rounded(values.to_numpy(np.float64))
        else:
            columns[name] = values.to_numpy(np.int64).tolist()
    return {"count": len(rows), "columns": columns, "codes": codes}


def write_browser(scores_path: str, validation_path: str, traces_path: str, thumbnail_dirs: Sequence[str], out_index: str, out_data: str,
                  out_traces: str, grids: dict[str, dict[str, dict[str, Any]]] | None = None) -> None:
    """The page (``out_index``), the table of every MEI (``out_data``) and the traces per block of
    neurons (``out_traces/<ensemble>/block<k>.js``) from the results tables and the thumbnails of
    :func:`draw_thumbnails`. ``grids``: ensemble → grid → ``{"methods", "labels", "figure"}`` (the
    grid's methods, their labels and its PNG, ``report.grid_figure``)."""
    browse = Path(out_index).parent
    scores = pd.read_parquet(scores_path)
    extra = [c for c in ("quality_flags",) if c in scores]
    rows, truth_of = _rows(scores[list(SCORE_COLUMNS) + extra], pd.read_parquet(validation_path))
    rows = rows.rename(columns=SCORE_COLUMNS)
    if "quality_flags" in rows:  # a list per MEI or a string (None or NaN: none): one comma-separated string
        rows["quality_flags"] = rows["quality_flags"].map(lambda v: ",".join(map(str, v)) if isinstance(v, (list, tuple, np.ndarray)) else ("" if v is None or v != v else str(v)))
    rows["thumb"] = -1
    rows["limit"] = np.nan
    ensembles: dict[str, dict[str, Any]] = {}
    temporal: dict[str, dict[str, Any]] = {}
    for folder in thumbnail_dirs:
        meta = read_json(Path(folder) / "meta.json")
        ensemble, method = meta["ensemble"], meta["method"]
        selected = ((rows["ensemble"] == ensemble) & (rows["method"] == method)).to_numpy()
        position = thumbnail_positions(meta, rows.loc[selected, "seed"].to_numpy(), rows.loc[selected, "neuron"].to_numpy(), rows.loc[selected, "mei_index"].to_numpy())
        limits = np.asarray([np.nan if v is None else v for v in meta["limit"]], np.float64)
        rows.loc[selected, "thumb"] = position
        rows.loc[selected, "limit"] = np.where(position >= 0, limits[np.maximum(position, 0)], np.nan)
        entry = ensembles.setdefault(ensemble, {"kind": meta["kind"], "channels": meta["channels"], "input_shape": meta["input_shape"], "mean": meta["mean"],
                                                "cell": meta["cell"], "columns": meta["columns"], "per_sheet": meta["per_sheet"], "neurons": meta["neurons"],
                                                "truth": truth_of.get(ensemble), "methods": {}, "grids": {}, "trace_block": TRACE_BLOCK})
        relative = os.path.relpath(folder, browse)
        entry["methods"][method] = {"sheets": [f"{relative}/{name}".replace(os.sep, "/") for name in meta["sheets"]],
                                    "gifs": os.path.relpath(meta["gif_folder"], browse).replace(os.sep, "/") if meta.get("gif_folder") else None,
                                    "gif_name": gif_name("{neuron}")}
        if meta.get("temporal") is not None:
            temporal.setdefault(ensemble, {})[method] = meta
    for ensemble, by_grid in (grids or {}).items():
        if ensemble in ensembles:
            for grid, members in by_grid.items():
                figure = members.get("figure")
                ensembles[ensemble]["grids"][grid] = {**members, "figure": os.path.relpath(figure, browse).replace(os.sep, "/") if figure else None}
    traces_root = Path(out_traces)
    traces_root.mkdir(parents=True, exist_ok=True)
    _write_traces(traces_path, ensembles, temporal, traces_root)
    data = {"ensembles": ensembles, "rows": _columnar(rows), "traces": os.path.relpath(out_traces, browse).replace(os.sep, "/")}
    with atomic_path(out_data, suffix=".js") as temporary:
        Path(temporary).write_text(f"window.MEI_BROWSER_DATA = {json.dumps(data, separators=(',', ':'), allow_nan=False)};\n")
    page = (ASSETS / "index.html").read_text()
    page = page.replace("/*STYLE*/", (ASSETS / "browse.css").read_text()).replace("/*SCRIPT*/", (ASSETS / "browse.js").read_text())
    page = page.replace("DATA_SCRIPT", os.path.relpath(out_data, browse).replace(os.sep, "/"))
    with atomic_path(out_index, suffix=".html") as temporary:
        Path(temporary).write_text(page)


def _write_traces(traces_path: str, ensembles: dict[str, dict[str, Any]], temporal: dict[str, dict[str, Any]], root: Path) -> None:
    """``root/<ensemble>/block<k>.js``: for the ``TRACE_BLOCK`` neurons of block ``k`` (in the store's
    neuron order) every tracked value per step, and for videos each MEI's temporal trace."""
    columns = ["ensemble", "method", "seed", "neuron_id", "mei_index", "tracker", "step", "value"]
    traces = pq.read_table(traces_path, columns=columns).to_pandas() if Path(traces_path).exists() else pd.DataFrame(columns=columns)
    for ensemble, entry in ensembles.items():
        block_of = {int(n): i // TRACE_BLOCK for i, n in enumerate(entry["neurons"])}
        blocks: dict[int, dict[str, Any]] = {k: {} for k in set(block_of.values())}
        series_keys = ["neuron_id", "method", "seed", "mei_index", "tracker"]
        mine = traces[traces["ensemble"] == ensemble].sort_values(series_keys + ["step"])
        # one series per (MEI, tracker), contiguous after the sort: cut the columns at its starts
        # (pandas' per-group objects would cost more than the JSON itself for 50,000 MEIs)
        group = mine.groupby(series_keys, sort=False).ngroup().to_numpy()
        starts = np.flatnonzero(np.diff(group, prepend=-1))
        ends = np.append(starts[1:], len(group))
        steps, values = mine["step"].astype(int).tolist(), _rounded(mine["value"].to_numpy())
        heads = mine.iloc[starts][series_keys].itertuples(index=False)
        for (neuron, method, seed, index, tracker), start, end in zip(heads, starts, ends):
            series = blocks[block_of[int(neuron)]].setdefault(str(int(neuron)), {}).setdefault("traces", {})
            series.setdefault(f"{method}|{int(seed)}|{int(index)}", {})[str(tracker)] = [steps[start:end], values[start:end]]
        for method, meta in temporal.get(ensemble, {}).items():
            n_neurons, n_meis = len(meta["neurons"]), meta["n_meis"]
            for position, curves in enumerate(meta["temporal"]):
                seed_position, rest = divmod(position, n_neurons * n_meis)
                neuron_position, index = divmod(rest, n_meis)
                neuron = meta["neurons"][neuron_position]
                key = f"{method}|{meta['seeds'][seed_position]}|{index}"
                blocks[block_of[neuron]].setdefault(str(neuron), {}).setdefault("temporal", {})[key] = curves
        folder = root / ensemble
        folder.mkdir(parents=True, exist_ok=True)
        for block, payload in blocks.items():
            with atomic_path(str(folder / f"block{block}.js"), suffix=".js") as temporary:
                Path(temporary).write_text(f"MEI_BROWSER.addTraces({json.dumps(ensemble)},{block},{json.dumps(payload, separators=(',', ':'), allow_nan=False)});\n")


# ------------------------------------------------------------------------------------------ headless Chromium

#: flags for a headless run that touches no network and no profile of the user's
CHROMIUM_FLAGS = ("--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run", "--disable-background-networking",
                  "--disable-component-update", "--disable-sync", "--hide-scrollbars", "--allow-file-access-from-files")


def find_chromium() -> str | None:
    """Debian's ``chromium`` (or Google's ``chromium-browser`` / ``google-chrome``) on the PATH."""
    import shutil

    return next((path for name in ("chromium", "chromium-browser", "google-chrome") if (path := shutil.which(name))), None)


def open_in_chromium(index: str | os.PathLike, fragment: str = "", screenshot: str | os.PathLike | None = None, window: tuple[int, int] = (1280, 900),
                     timeout: float = 120.0, budget_ms: int | None = 3000) -> str:
    """Open ``index`` (a file) at ``#fragment`` in headless Chromium; returns the DOM after the page's
    scripts ran (``--dump-dom``), or writes a PNG of the window (``screenshot``) and returns ''.
    ``budget_ms``: virtual time given to timers and image loads (None: none, for load-time measurement)."""
    import subprocess
    import tempfile

    chromium = find_chromium()
    if chromium is None:
        raise FileNotFoundError("no chromium on the PATH (Debian: apt-get install chromium)")
    url = Path(index).resolve().as_uri() + (f"#{fragment}" if fragment else "")
    with tempfile.TemporaryDirectory(prefix="mei-browse-chromium-") as profile:
        command = [chromium, *CHROMIUM_FLAGS, f"--user-data-dir={profile}", f"--window-size={window[0]},{window[1]}"]
        if budget_ms is not None:
            command.append(f"--virtual-time-budget={budget_ms}")
        command += [f"--screenshot={Path(screenshot).resolve()}"] if screenshot else ["--dump-dom"]
        result = subprocess.run([*command, url], capture_output=True, text=True, timeout=timeout)
    if result.returncode != 0:
        raise RuntimeError(f"chromium failed ({result.returncode}): {result.stderr[-2000:]}")
    return result.stdout
