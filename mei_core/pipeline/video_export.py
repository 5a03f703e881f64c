"""Video MEIs as animations: GIF (imageio with Pillow) or MP4 (imageio with imageio-ffmpeg).

A video MEI is ``C×T×H×W`` (``1×C×T×H×W`` is accepted). Pixels are mapped to 8-bit with zero at mid
grey: ``scale: symmetric`` (default) maps ``±max|x|`` of the whole video to 0 and 255, ``minmax``
maps the video's minimum and maximum to 0 and 255 (openretina's ``save_stimulus_to_mp4_video``).
Channels become colours: one channel grey; two channels (green, UV as in retina data) green and
magenta (R = B = channel 1, G = channel 0); three channels RGB. Frames are enlarged by repeating
pixels (``upscale``; by default the smallest factor that makes the shorter side at least 96 px).
"""

from __future__ import annotations

import math
from pathlib import Path
from typing import Any

import numpy as np

__all__ = ["export_video", "video_frames"]

SCALES = ("symmetric", "minmax")


def _as_array(mei: Any) -> np.ndarray:
    if hasattr(mei, "detach"):
        mei = mei.detach().cpu().numpy()
    array = np.asarray(mei, dtype=np.float64)
    if array.ndim == 5 and array.shape[0] == 1:
        array = array[0]
    if array.ndim != 4:
        raise ValueError(f"export_video needs a video C×T×H×W, got shape {array.shape}")
    if array.shape[0] not in (1, 2, 3):
        raise ValueError(f"export_video maps 1, 2 or 3 channels to colours, got {array.shape[0]} channels")
    if not np.all(np.isfinite(array)):
        raise ValueError("export_video: the video has NaN or infinite pixels")
    return array


def video_frames(mei: Any, scale: str = "symmetric", upscale: int | None = None, even: bool = False) -> np.ndarray:
    """The RGB frames ``T×H'×W'×3`` (uint8) of a video MEI ``C×T×H×W``; ``even`` makes both sides
    even (what H.264 needs) by raising the upscale factor."""
    if scale not in SCALES:
        raise ValueError(f"scale must be one of {SCALES}, got {scale!r}")
    array = _as_array(mei)
    if scale == "symmetric":
        limit = float(np.abs(array).max()) or 1.0
        unit = (array / limit + 1.0) / 2.0
    else:
        low, high = float(array.min()), float(array.max())
        unit = (array - low) / ((high - low) or 1.0)
    levels = np.clip(np.round(unit * 255.0), 0, 255).astype(np.uint8)
    channels, _, height, width = levels.shape
    if channels == 1:
        rgb = np.stack([levels[0]] * 3, axis=-1)
    elif channels == 2:
        rgb = np.stack([levels[1], levels[0], levels[1]], axis=-1)
    else:
        rgb = np.moveaxis(levels, 0, -1)
    factor = upscale if upscale is not None else max(1, math.ceil(96 / min(height, width)))
    if factor < 1:
        raise ValueError(f"upscale must be >= 1, got {upscale}")
    if even and ((height * factor) % 2 or (width * factor) % 2):
        factor += 1
    if factor > 1:
        rgb = rgb.repeat(factor, axis=1).repeat(factor, axis=2)
    return np.ascontiguousarray(rgb)


def export_video(mei: Any, path: str | Path, fps: float = 5.0, scale: str = "symmetric", upscale: int | None = None) -> Path:
    """Write a video MEI ``C×T×H×W`` as ``path`` (``.gif`` or ``.mp4``, by its suffix) at ``fps``
    frames per second; the GIF loops forever. Returns the path."""
    import imageio.v2 as imageio

    path = Path(path)
    if fps <= 0:
        raise ValueError(f"fps must be > 0, got {fps}")
    suffix = path.suffix.lower()
    if suffix not in (".gif", ".mp4"):
        raise ValueError(f"export_video writes .gif or .mp4, got {str(path)!r}")
    frames = video_frames(mei, scale, upscale, even=suffix == ".mp4")
    path.parent.mkdir(parents=True, exist_ok=True)
    if suffix == ".gif":
        imageio.mimwrite(path, list(frames), format="GIF", duration=1000.0 / fps, loop=0)
    else:
        try:
            import imageio_ffmpeg  # noqa: F401
        except ImportError as error:
            raise RuntimeError("writing .mp4 needs the imageio-ffmpeg package (pip install imageio-ffmpeg); .gif needs only imageio") from error
        imageio.mimwrite(path, list(frames), format="FFMPEG", fps=fps, codec="libx264", macro_block_size=1, quality=8)
    return path
