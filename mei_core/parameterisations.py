"""Parameterisations: the optimised variable is not the stimulus (the ``parameterisation`` slot).

Every class decodes a batch of variables (``B×variable``) into stimuli (``B×C×H×W`` or
``B×C×T×H×W``), each row on its own, vectorised over rows. Used by the gradient engine (the method
slot ``parameterisation``; the default is ``Pixels``) and by gradient-free methods
(``mei_core.cmaes``, which flattens one row's variable into the search vector).

- ``Pixels``: the identity.
- ``Spectral``: lucent's Fourier parameterisation: the variable is a real tensor of rFFT coefficients
  (real, imaginary) scaled by ``1/|f|**decay_power``, decoded with ``irfft2`` per row and channel (and
  frame); ``max_frequency`` keeps only the lowest frequencies (a truncated Fourier basis).
- ``ColourDecorrelated``: 3 decorrelated channels mixed by a fixed matrix (lucent's ImageNet colour
  square root by default).
- ``Sigmoid`` / ``Tanh``: squash into ``[x_min, x_max]``.
- ``AddMean``: adds the per-channel stimulus mean, so a decoder of contrast (``Gabor``, ``DoG``,
  ``Pixels`` around 0) gives stimuli around the mean (the ``cma_es`` preset's last step).
- ``Gabor`` / ``DoG``: a few interpretable parameters per row (images only), each raw parameter
  unconstrained and mapped onto its range, so a unit normal draw is a sensible start.
- ``LinearBasis``: ``mean + z @ basis`` (e.g. a PCA basis from :func:`pca_basis`).
- ``Decoder``: any callable given by import path (differentiable or not).
- ``Chain``: several in order (a list in the slot): ``[Spectral, ColourDecorrelated, Sigmoid]``.
- ``CPPN``: lucent's compositional pattern-producing network, one per row (images only).
- ``FixedChannels``: some channels held at given values, the others optimised (built by the method
  option ``fixed_channels``, which also holds them at the contrast budget's centre in the variable).
"""

from __future__ import annotations

import functools
import inspect
import math
from collections.abc import Mapping, Sequence
from typing import Any

import torch
from torch import Tensor, nn

from .components import Parameterisation, Postprocessor, Step
from .config import build_components, import_object
from .errors import MEIConfigError
from .ops import float_array

__all__ = ["Pixels", "Spectral", "ColourDecorrelated", "Sigmoid", "Tanh", "AddMean", "Gabor", "DoG", "LinearBasis", "Decoder", "Chain", "CPPN"]


def _stimulus_shape(p: Parameterisation) -> tuple[int, ...]:
    shape = getattr(p, "_stimulus_shape", None)
    if shape is None:
        raise RuntimeError(f"{type(p).__name__}: call initial_shape(stimulus_shape) before decoding")
    return shape


def _check_rows(p: Parameterisation, variable: Tensor, expected: tuple[int, ...]) -> None:
    if tuple(variable.shape[1:]) != tuple(expected):
        raise ValueError(f"{type(p).__name__}: expected variables B×{'×'.join(map(str, expected))}, got {tuple(variable.shape)}")


def _image_shape(p: Parameterisation, stimulus_shape: tuple[int, ...]) -> tuple[int, int, int]:
    if len(stimulus_shape) != 3:
        raise ValueError(f"{type(p).__name__} makes images C×H×W, the stimulus shape is {tuple(stimulus_shape)}")
    return tuple(int(s) for s in stimulus_shape)  # type: ignore[return-value]


def _between(raw: Tensor, low: float, high: float) -> Tensor:
    return low + (high - low) * torch.sigmoid(raw)


class Pixels(Parameterisation):
    """The variable is the stimulus."""

    def __call__(self, variable: Tensor) -> Tensor:
        return variable


class Spectral(Parameterisation):
    """lucent's ``fft_image``: the variable (``C×Hf×Wf×2``, ``C×T×Hf×Wf×2`` for videos) holds the real
    and imaginary parts of the rFFT of every channel (and frame), multiplied by
    ``1 / max(|f|, 1/max(H, W))**decay_power`` and decoded with an orthonormal ``irfft2``. The scale is
    normalised so that a unit-normal variable decodes to pixels of about unit variance (pink noise for
    ``decay_power = 1``), and steps of equal size move low frequencies most.

    ``max_frequency``: keep only frequencies of at most that many cycles per image along each axis
    (``Hf = 2·k + 1``, ``Wf = k + 1``): a truncated Fourier basis of ``C·(2k+1)·(k+1)·2`` numbers."""

    def __init__(self, decay_power: float = 1.0, max_frequency: int | None = None):
        if max_frequency is not None and (isinstance(max_frequency, bool) or int(max_frequency) != max_frequency or max_frequency < 0):
            raise ValueError(f"max_frequency must be a non-negative integer or null, got {max_frequency!r}")
        self.decay_power = float(decay_power)
        self.max_frequency = None if max_frequency is None else int(max_frequency)

    def initial_shape(self, stimulus_shape: tuple[int, ...]) -> tuple[int, ...]:
        *lead, h, w = (int(s) for s in stimulus_shape)
        ky = torch.fft.fftfreq(h, d=1.0 / h, dtype=torch.float64).round()  # cycles per image
        kx = torch.fft.rfftfreq(w, d=1.0 / w, dtype=torch.float64).round()
        radius = torch.sqrt((ky / h)[:, None] ** 2 + (kx / w)[None, :] ** 2)  # cycles per pixel
        scale = 1.0 / radius.clamp_min(1.0 / max(h, w)) ** self.decay_power
        # expected pixel variance of a unit-normal variable: inner rFFT columns stand for two bins
        weight = torch.full((len(kx),), 2.0, dtype=torch.float64)
        weight[0] = 1.0
        if w % 2 == 0:
            weight[-1] = 1.0
        scale = scale / torch.sqrt((scale**2 * weight).sum() * 2.0 / (h * w))
        keep = self.max_frequency
        self._rows = None if keep is None else (ky.abs() <= keep).nonzero().flatten()
        self._columns = None if keep is None else (kx <= keep).nonzero().flatten()
        if keep is not None:
            scale = scale[self._rows][:, self._columns]
        self._scale = scale.float()
        self._stimulus_shape = (*lead, h, w)
        self._variable_shape = (*lead, *scale.shape, 2)
        return self._variable_shape

    def __call__(self, variable: Tensor) -> Tensor:
        *_, h, w = _stimulus_shape(self)
        _check_rows(self, variable, self._variable_shape)
        if self._scale.device != variable.device or self._scale.dtype != variable.dtype:
            self._scale = self._scale.to(variable)
        coefficients = torch.view_as_complex(variable.contiguous()) * self._scale
        if self._rows is not None:  # truncated: the kept block inside a zero spectrum
            rows, columns = self._rows.to(variable.device), self._columns.to(variable.device)
            wide = coefficients.new_zeros(*coefficients.shape[:-1], w // 2 + 1).index_copy(-1, columns, coefficients)
            spectrum = coefficients.new_zeros(*coefficients.shape[:-2], h, w // 2 + 1).index_copy(-2, rows, wide)
        else:
            spectrum = coefficients
        return torch.fft.irfft2(spectrum, s=(h, w), norm="ortho")


#: lucent's ImageNet colour correlation square root (``color_correlation_svd_sqrt``)
LUCENT_COLOUR_SQRT = [[0.26, 0.09, 0.02], [0.27, 0.00, -0.05], [0.27, -0.09, 0.03]]


class ColourDecorrelated(Parameterisation):
    """The variable's channels are decorrelated colour components; the stimulus is ``M @ channels``
    at every pixel. ``matrix`` (C×C) defaults to lucent's ImageNet colour square root, divided (as
    lucent does) by its largest column norm."""

    def __init__(self, matrix: Sequence[Sequence[float]] | None = None):
        m = torch.tensor(LUCENT_COLOUR_SQRT if matrix is None else matrix, dtype=torch.float32)
        if m.dim() != 2 or m.shape[0] != m.shape[1]:
            raise ValueError(f"matrix must be square C×C, got shape {tuple(m.shape)}")
        if matrix is None:
            m = m / m.norm(dim=0).max()
        self.matrix = m

    def initial_shape(self, stimulus_shape: tuple[int, ...]) -> tuple[int, ...]:
        if stimulus_shape[0] != self.matrix.shape[0]:
            raise ValueError(f"ColourDecorrelated: a {self.matrix.shape[0]}×{self.matrix.shape[0]} matrix needs {self.matrix.shape[0]} channels, the stimulus has {stimulus_shape[0]}")
        return tuple(stimulus_shape)

    def __call__(self, variable: Tensor) -> Tensor:
        if variable.shape[1] != self.matrix.shape[0]:
            raise ValueError(f"ColourDecorrelated: expected {self.matrix.shape[0]} channels, got {tuple(variable.shape)}")
        return torch.einsum("cd,bd...->bc...", self.matrix.to(variable), variable)

    def __repr__(self) -> str:
        return f"ColourDecorrelated(matrix={self.matrix.tolist()})"


class Sigmoid(Parameterisation):
    """``x_min + (x_max − x_min)·sigmoid(v)``: stimuli always inside ``[x_min, x_max]``."""

    def __init__(self, x_min: float = 0.0, x_max: float = 1.0):
        if not x_max > x_min:
            raise ValueError(f"x_max ({x_max}) must be greater than x_min ({x_min})")
        self.x_min, self.x_max = float(x_min), float(x_max)

    def __call__(self, variable: Tensor) -> Tensor:
        return _between(variable, self.x_min, self.x_max)


class Tanh(Parameterisation):
    """``centre + half_range·tanh(v)``: stimuli always inside ``[x_min, x_max]``, 0 ↦ the centre."""

    def __init__(self, x_min: float = -1.0, x_max: float = 1.0):
        if not x_max > x_min:
            raise ValueError(f"x_max ({x_max}) must be greater than x_min ({x_min})")
        self.x_min, self.x_max = float(x_min), float(x_max)

    def __call__(self, variable: Tensor) -> Tensor:
        return (self.x_max + self.x_min) / 2 + (self.x_max - self.x_min) / 2 * torch.tanh(variable)


class AddMean(Parameterisation):
    """``mean + v`` with ``mean`` per channel (a float, or one value per channel): a decoder of
    contrast around 0 followed by this gives stimuli around the stimulus mean, in any units."""

    def __init__(self, mean: float | Sequence[float] = 0.0):
        values = [float(v) for v in mean] if isinstance(mean, (list, tuple)) else [float(mean)]
        if not values or not all(math.isfinite(v) for v in values):
            raise ValueError(f"mean must be finite numbers (one per channel), got {mean!r}")
        self.mean = torch.tensor(values)

    def __call__(self, variable: Tensor) -> Tensor:
        if len(self.mean) not in (1, variable.shape[1]):
            raise ValueError(f"AddMean: {len(self.mean)} means for {variable.shape[1]} channels")
        return variable + self.mean.to(variable).view(1, -1, *([1] * (variable.dim() - 2)))

    def __repr__(self) -> str:
        return f"AddMean(mean={self.mean.tolist()})"


class _Grid:
    def _grid(self, like: Tensor) -> tuple[Tensor, Tensor]:
        _, h, w = _stimulus_shape(self)  # type: ignore[arg-type]
        grid = getattr(self, "_cached_grid", None)
        if grid is None or grid[0].device != like.device or grid[0].dtype != like.dtype:
            grid = (torch.arange(h, dtype=like.dtype, device=like.device), torch.arange(w, dtype=like.dtype, device=like.device))
            self._cached_grid = grid
        return grid


class Gabor(_Grid, Parameterisation):
    """A sum of ``n_components`` Gabor patches, images ``C×H×W``. Variable ``n_components×(7 + C)``,
    per component: centre x, y (sigmoid over the image), orientation ``π/2·u``, wavelength and envelope
    sigma (sigmoid into ``wavelength_range`` / ``sigma_range`` pixels), aspect ``max_aspect**tanh(u)``
    (envelope across/along), phase ``π·u``, and one weight per channel (its amplitude)."""

    n_shape = 7

    def __init__(self, n_components: int = 1, wavelength_range: Sequence[float] | None = None,
                 sigma_range: Sequence[float] | None = None, max_aspect: float = 2.0):
        if int(n_components) < 1:
            raise ValueError(f"n_components must be >= 1, got {n_components}")
        self.n_components = int(n_components)
        self.wavelength_range = None if wavelength_range is None else tuple(float(v) for v in wavelength_range)
        self.sigma_range = None if sigma_range is None else tuple(float(v) for v in sigma_range)
        self.max_aspect = float(max_aspect)
        for name in ("wavelength_range", "sigma_range"):
            value = getattr(self, name)
            if value is not None and (len(value) != 2 or not 0 < value[0] < value[1]):
                raise ValueError(f"{name} must be [low, high] with 0 < low < high, got {value!r}")

    def initial_shape(self, stimulus_shape: tuple[int, ...]) -> tuple[int, ...]:
        c, h, w = _image_shape(self, stimulus_shape)
        self._stimulus_shape = (c, h, w)
        self._wavelengths = self.wavelength_range or (2.5, float(max(h, w)))
        self._sigmas = self.sigma_range or (1.0, max(h, w) / 2.0)
        return (self.n_components, self.n_shape + c)

    def __call__(self, variable: Tensor) -> Tensor:
        c, h, w = _stimulus_shape(self)
        _check_rows(self, variable, (self.n_components, self.n_shape + c))
        gy, gx = self._grid(variable)
        u = variable.unsqueeze(-1).unsqueeze(-1)  # B×K×P×1×1
        cx, cy = torch.sigmoid(u[:, :, 0]) * (w - 1), torch.sigmoid(u[:, :, 1]) * (h - 1)
        theta, phase = u[:, :, 2] * (math.pi / 2), u[:, :, 6] * math.pi
        wavelength = _between(u[:, :, 3], *self._wavelengths)
        sigma = _between(u[:, :, 4], *self._sigmas)
        aspect = self.max_aspect ** torch.tanh(u[:, :, 5])
        dx, dy = gx - cx, gy[:, None] - cy  # B×K×H×W
        along = dx * torch.cos(theta) + dy * torch.sin(theta)
        across = -dx * torch.sin(theta) + dy * torch.cos(theta)
        patch = torch.exp(-(along**2 + (aspect * across) ** 2) / (2 * sigma**2)) * torch.cos(2 * math.pi * along / wavelength + phase)
        return torch.einsum("bkc,bkhw->bchw", variable[:, :, self.n_shape :], patch)


class DoG(_Grid, Parameterisation):
    """A difference of Gaussians (centre-surround), images ``C×H×W``. Variable ``5 + C``: centre x, y
    (sigmoid over the image), centre sigma (sigmoid into ``sigma_range`` pixels), surround/centre sigma
    ratio (sigmoid into ``[1, max_ratio]``), surround weight ``2·sigmoid(u)`` (1, balanced, at 0), and one
    weight per channel (amplitude; its sign makes ON or OFF). Each Gaussian has unit integral."""

    def __init__(self, sigma_range: Sequence[float] | None = None, max_ratio: float = 4.0):
        self.sigma_range = None if sigma_range is None else tuple(float(v) for v in sigma_range)
        if self.sigma_range is not None and (len(self.sigma_range) != 2 or not 0 < self.sigma_range[0] < self.sigma_range[1]):
            raise ValueError(f"sigma_range must be [low, high] with 0 < low < high, got {sigma_range!r}")
        if not max_ratio > 1:
            raise ValueError(f"max_ratio must be > 1, got {max_ratio}")
        self.max_ratio = float(max_ratio)

    def initial_shape(self, stimulus_shape: tuple[int, ...]) -> tuple[int, ...]:
        c, h, w = _image_shape(self, stimulus_shape)
        self._stimulus_shape = (c, h, w)
        self._sigmas = self.sigma_range or (0.5, max(h, w) / 4.0)
        return (5 + c,)

    def __call__(self, variable: Tensor) -> Tensor:
        c, h, w = _stimulus_shape(self)
        _check_rows(self, variable, (5 + c,))
        gy, gx = self._grid(variable)
        u = variable[:, :5, None, None]
        cx, cy = torch.sigmoid(u[:, 0]) * (w - 1), torch.sigmoid(u[:, 1]) * (h - 1)
        sigma_centre = _between(u[:, 2], *self._sigmas)
        sigma_surround = sigma_centre * _between(u[:, 3], 1.0, self.max_ratio)
        r2 = (gx - cx) ** 2 + (gy[:, None] - cy) ** 2  # B×H×W
        centre = torch.exp(-r2 / (2 * sigma_centre**2)) / (2 * math.pi * sigma_centre**2)
        surround = torch.exp(-r2 / (2 * sigma_surround**2)) / (2 * math.pi * sigma_surround**2)
        profile = centre - 2 * torch.sigmoid(u[:, 4]) * surround
        return variable[:, 5:, None, None] * profile[:, None]


class LinearBasis(Parameterisation):
    """``mean + z @ basis``: ``basis`` (an array, nested list or ``.npy`` path) is ``K×stimulus shape``
    (or ``K×D``); the variable is the ``K`` coefficients. :func:`pca_basis` makes one from images."""

    def __init__(self, basis: Any, mean: Any = None):
        self.basis = float_array(basis, "LinearBasis basis")
        self.mean = None if mean is None else float_array(mean, "LinearBasis mean")

    def initial_shape(self, stimulus_shape: tuple[int, ...]) -> tuple[int, ...]:
        size = math.prod(stimulus_shape)
        if self.basis[0].numel() != size:
            raise ValueError(f"LinearBasis: basis vectors of {self.basis[0].numel()} numbers for stimuli {tuple(stimulus_shape)} ({size})")
        if self.mean is not None and self.mean.numel() != size:
            raise ValueError(f"LinearBasis: mean of {self.mean.numel()} numbers for stimuli {tuple(stimulus_shape)} ({size})")
        self._stimulus_shape = tuple(stimulus_shape)
        return (len(self.basis),)

    def __call__(self, variable: Tensor) -> Tensor:
        _check_rows(self, variable, (len(self.basis),))
        flat = variable @ self.basis.reshape(len(self.basis), -1).to(variable)
        if self.mean is not None:
            flat = flat + self.mean.reshape(1, -1).to(variable)
        return flat.reshape(len(variable), *_stimulus_shape(self))

    def __repr__(self) -> str:
        return f"LinearBasis(basis={tuple(self.basis.shape)}, mean={None if self.mean is None else tuple(self.mean.shape)})"


def pca_basis(images: Tensor, n_components: int) -> tuple[Tensor, Tensor]:
    """The top ``n_components`` principal components of ``images`` (``N×C×H×W``), each scaled by its
    standard deviation (so unit-normal coefficients give images of the data's variance), sign fixed
    (largest entry positive), and the mean image: ``(K×C×H×W, C×H×W)`` for :class:`LinearBasis`."""
    flat = images.flatten(1).double()
    mean = flat.mean(0)
    _, singular, vh = torch.linalg.svd(flat - mean, full_matrices=False)
    vh = vh[:n_components]
    signs = torch.sign(vh.gather(1, vh.abs().argmax(1, keepdim=True)))
    basis = vh * signs * (singular[:n_components, None] / math.sqrt(max(len(flat) - 1, 1)))
    return basis.reshape(-1, *images.shape[1:]).float(), mean.reshape(images.shape[1:]).float()


class Decoder(Parameterisation):
    """Any decoder by import path: ``decoder`` is a function ``f(z: B×dimension) -> B×stimulus`` or a
    class (an ``nn.Module`` such as a generator network) built with ``kwargs`` and then called;
    functions receive ``kwargs`` as keyword arguments. Differentiable or not: gradient-free methods
    never ask for its gradient."""

    def __init__(self, decoder: str, dimension: int, kwargs: Mapping[str, Any] | None = None):
        if isinstance(dimension, bool) or int(dimension) != dimension or dimension < 1:
            raise ValueError(f"dimension must be a positive integer, got {dimension!r}")
        try:
            target = import_object(decoder, "decoder")
        except MEIConfigError as error:
            raise ValueError(str(error)) from None
        kwargs = dict(kwargs or {})
        if inspect.isclass(target):
            target = target(**kwargs)
            if isinstance(target, nn.Module):
                target.eval()
        elif kwargs:
            target = functools.partial(target, **kwargs)
        if not callable(target):
            raise ValueError(f"decoder {decoder!r} is not callable")
        self.decoder, self.dimension, self._function = decoder, int(dimension), target

    def initial_shape(self, stimulus_shape: tuple[int, ...]) -> tuple[int, ...]:
        self._stimulus_shape = tuple(stimulus_shape)
        return (self.dimension,)

    def __call__(self, variable: Tensor) -> Tensor:
        _check_rows(self, variable, (self.dimension,))
        if isinstance(self._function, nn.Module):
            self._function.to(variable.device)
        stimulus = self._function(variable)
        expected = (len(variable), *_stimulus_shape(self))
        if tuple(stimulus.shape) != expected:
            raise ValueError(f"decoder {self.decoder!r} returned {tuple(stimulus.shape)} for {tuple(variable.shape)}, expected {expected}")
        return stimulus


class Chain(Parameterisation):
    """Several parameterisations applied in order (the first decodes the optimised variable)."""

    def __init__(self, parameterisations: Sequence[Parameterisation]):
        self.parameterisations = list(parameterisations)

    def initial_shape(self, stimulus_shape: tuple[int, ...]) -> tuple[int, ...]:
        shape = tuple(stimulus_shape)
        for p in reversed(self.parameterisations):
            shape = tuple(p.initial_shape(shape))
        return shape

    def __call__(self, variable: Tensor) -> Tensor:
        for p in self.parameterisations:
            variable = p(variable)
        return variable


def build_parameterisation(spec: Any, key: str) -> Parameterisation:
    """The ``parameterisation`` slot: none (``Pixels``), one spec, or a list applied in order."""
    built = build_components(spec, key)
    for i, p in enumerate(built):
        if not isinstance(p, Parameterisation):
            where = f"{key}[{i}]" if isinstance(spec, (list, tuple)) else key
            raise MEIConfigError(f"{where}: {type(p).__name__} must subclass mei_core.components.Parameterisation "
                                 f"(initial_shape(stimulus_shape) and __call__(variable) -> stimulus)")
    return Pixels() if not built else built[0] if len(built) == 1 else Chain(built)


class CPPN(Parameterisation):
    """lucent's CPPN (``lucent.optvis.param.cppn``): every row's variable is the weights and biases
    of its own small network that maps each pixel's coordinates ``(x, y)`` (``x`` along the height,
    ``y`` along the width, both in ``[−√3, √3]``) to the stimulus: ``layers`` 1×1 layers of
    ``hidden_channels``, each followed by lucent's composite activation ``[atan(h)/0.67,
    atan(h)²/0.6]`` (with an instance norm first when ``normalize``), the last by
    ``x_min + (x_max − x_min)·sigmoid`` (lucent: 0…1). Images only.

    A layer's weights are the variable times ``√(1/in_channels)`` and its biases the variable times
    ``bias_scale``, so a unit-normal start is lucent's weight initialisation (lucent also zeros the
    biases and the last layer's weights, which leaves a grey start for its optimiser to leave).
    All rows decode in one batched matrix product per layer.
    """

    def __init__(self, hidden_channels: int = 24, layers: int = 8, normalize: bool = False,
                 x_min: float = 0.0, x_max: float = 1.0, bias_scale: float = 0.1):
        if hidden_channels < 1 or layers < 2:
            raise ValueError(f"CPPN needs hidden_channels >= 1 and layers >= 2, got {hidden_channels} and {layers}")
        if not x_max > x_min:
            raise ValueError(f"x_max ({x_max}) must be greater than x_min ({x_min})")
        self.hidden_channels, self.layers, self.normalize = int(hidden_channels), int(layers), bool(normalize)
        self.x_min, self.x_max, self.bias_scale = float(x_min), float(x_max), float(bias_scale)

    def layer_shapes(self, channels: int) -> list[tuple[int, int]]:
        """``(out_channels, in_channels)`` of every layer."""
        shapes = [(self.hidden_channels, 2)] + [(self.hidden_channels, 2 * self.hidden_channels)] * (self.layers - 2)
        return shapes + [(channels, 2 * self.hidden_channels)]

    def initial_shape(self, stimulus_shape: tuple[int, ...]) -> tuple[int, ...]:
        self._stimulus_shape = _image_shape(self, stimulus_shape)
        return (sum(o * i + o for o, i in self.layer_shapes(self._stimulus_shape[0])),)

    def coordinates(self, height: int, width: int, like: Tensor) -> Tensor:
        """``2×(H·W)``: lucent's ``x`` (varies along the height) and ``y`` (along the width)."""
        r = 3**0.5
        x = torch.linspace(-r, r, height, dtype=like.dtype, device=like.device).view(-1, 1).expand(height, width)
        y = torch.linspace(-r, r, width, dtype=like.dtype, device=like.device).view(1, -1).expand(height, width)
        return torch.stack([x, y]).reshape(2, height * width)

    def weights(self, variable: Tensor) -> list[tuple[Tensor, Tensor]]:
        """Every layer's ``(B×out×in weights, B×out biases)`` decoded from the rows' variables."""
        channels = _stimulus_shape(self)[0]
        found, start = [], 0
        for out_c, in_c in self.layer_shapes(channels):
            weight = variable[:, start : start + out_c * in_c].reshape(-1, out_c, in_c) * (1.0 / in_c) ** 0.5
            start += out_c * in_c
            bias = variable[:, start : start + out_c] * self.bias_scale
            start += out_c
            found.append((weight, bias))
        return found

    def __call__(self, variable: Tensor) -> Tensor:
        channels, height, width = _stimulus_shape(self)
        _check_rows(self, variable, self.initial_shape((channels, height, width)))
        h = self.coordinates(height, width, variable).expand(len(variable), 2, height * width)
        layers = self.weights(variable)
        for i, (weight, bias) in enumerate(layers):
            h = torch.baddbmm(bias[:, :, None], weight, h)  # B×out×(H·W)
            if self.normalize:  # InstanceNorm2d(affine=False): per row and channel over the pixels
                h = (h - h.mean(-1, keepdim=True)) / torch.sqrt(h.var(-1, unbiased=False, keepdim=True) + 1e-5)
            if i < len(layers) - 1:
                h = torch.atan(h)
                h = torch.cat([h / 0.67, (h * h) / 0.6], dim=1)
        return _between(h, self.x_min, self.x_max).reshape(len(variable), channels, height, width)


class FixedChannels(Parameterisation):
    """Optimise some channels of images ``B×C×H×W`` or videos ``B×C×T×H×W`` and hold the others
    fixed: the method option ``fixed_channels`` (``mei_core.options``; config/README.md,
    ``methods.<name>``), which builds this and its :meth:`hold`.

    The variable has every channel. Decoding writes ``values`` into the fixed ``channels``
    (``torch.where``: bitwise the given values, no gradient into them), so the model, the regularizers
    and the returned MEIs see them there. In the variable the fixed channels sit at ``centre`` (the
    centre of the contrast budget, :func:`mei_core.postprocessors.budget_centre`; 0 without one):
    :meth:`hold` puts them there before the initial projection and every step's postprocessing, so
    a budget measured around that centre spends nothing on them; it is spent on the optimised
    channels' contrast alone.

    ``values``: ``"mean"`` (the centre, i.e. the stimulus mean the presets take from
    ``input_stats``), a number, one number per fixed channel, or an array or ``.npy`` path: a whole
    stimulus (``C×…`` or ``1×C×…``, e.g. an earlier MEI) whose fixed channels are taken, or the fixed
    channels alone (``len(channels)×…``), broadcast against one channel's ``H×W`` / ``T×H×W``.
    The same for every row, so an item's MEI does not depend on its batch."""

    def __init__(self, channels: Sequence[int], values: Any = "mean", centre: Sequence[float] | Tensor | None = None,
                 key: str = "fixed_channels"):
        self.key = key
        if isinstance(channels, (int, str)) or not isinstance(channels, Sequence) or not channels or \
                any(isinstance(c, bool) or not isinstance(c, int) for c in channels):
            raise MEIConfigError(f"{key}.channels: must be a non-empty list of channel indices (integers), got {channels!r}")
        self.channels = [int(c) for c in channels]
        self.centre = None if centre is None else torch.as_tensor(centre, dtype=torch.float32).flatten()
        if isinstance(values, str) and values == "mean":
            if self.centre is None:
                raise MEIConfigError(f"{key}.values: 'mean' is the centre of the method's contrast budget (ChangeNormAroundMean's "
                                     "mean, which presets take from input_stats), and this method's postprocessing has none: "
                                     "give the values (a number, one per fixed channel, or an array or .npy)")
            self.values: Any = "mean"
        elif isinstance(values, (int, float)) and not isinstance(values, bool):
            self.values = torch.tensor([float(values)])
        elif isinstance(values, (list, tuple)) and values and all(isinstance(v, (int, float)) and not isinstance(v, bool) for v in values):
            if len(values) != len(self.channels):
                raise MEIConfigError(f"{key}.values: {len(values)} numbers for {len(self.channels)} fixed channels {self.channels}: "
                                     "give one number, one per fixed channel, or an array")
            self.values = torch.tensor([float(v) for v in values])
        else:
            try:
                self.values = float_array(values, f"{key}.values")
            except (ValueError, TypeError) as error:
                raise MEIConfigError(f"{key}.values: must be 'mean', a number, one number per fixed channel, an array or a .npy path "
                                     f"({error})") from None
        if isinstance(self.values, Tensor) and not bool(torch.isfinite(self.values).all()):
            raise MEIConfigError(f"{key}.values: must be finite numbers")

    def initial_shape(self, stimulus_shape: tuple[int, ...]) -> tuple[int, ...]:
        shape = tuple(int(s) for s in stimulus_shape)
        key = self.key
        if len(shape) not in (3, 4):
            raise MEIConfigError(f"{key}: fixed channels need images C×H×W or videos C×T×H×W; the stimuli are {list(shape)}")
        n = shape[0]
        for c in self.channels:
            if not -n <= c < n:
                raise MEIConfigError(f"{key}.channels: channel {c} does not exist: the stimuli {list(shape)} have {n} channel(s), 0…{n - 1}")
        fixed = sorted({c % n for c in self.channels})
        if len(fixed) != len(self.channels):
            raise MEIConfigError(f"{key}.channels: {self.channels} names a channel twice")
        if len(fixed) == n:
            raise MEIConfigError(f"{key}.channels: {self.channels} fixes every channel of {list(shape)}: nothing is left to optimise")
        order = [c % n for c in self.channels]  # values are given in the order of `channels`
        rest = (1,) * (len(shape) - 1)
        centre = torch.zeros(n) if self.centre is None else self.centre
        if len(centre) not in (1, n):
            raise MEIConfigError(f"{key}: the contrast budget's mean has {len(centre)} values for {n} channels")
        centre = centre.expand(n).reshape(1, n, *rest).clone()
        mask = torch.zeros(1, n, *rest, dtype=torch.bool)
        mask[:, fixed] = True
        values = torch.zeros(1, *shape)
        if isinstance(self.values, str):  # "mean"
            values[:] = centre
        elif self.values.dim() == 1 and len(self.values) in (1, len(order)):
            values[:, order] = self.values.expand(len(order)).reshape(len(order), *rest)
        else:
            values[:, order] = self._channels_of(self.values, shape, order)
        self._stimulus_shape, self._mask, self._values, self._centre = shape, mask, values, centre
        return shape

    def _channels_of(self, array: Tensor, shape: tuple[int, ...], order: list[int]) -> Tensor:
        """The fixed channels of ``array`` (a whole stimulus, or the fixed channels alone)."""
        given = tuple(array.shape)
        if array.dim() == len(shape) + 1 and array.shape[0] == 1:
            array = array[0]
        if array.dim() == len(shape) and array.shape[0] == shape[0]:
            array = array[order]
        if array.dim() != len(shape) or array.shape[0] != len(order):
            raise MEIConfigError(f"{self.key}.values: an array of shape {list(given)} for stimuli {list(shape)} with fixed channels "
                                 f"{self.channels}: give a whole stimulus ({shape[0]}×…, or 1×{shape[0]}×…, e.g. an earlier MEI) "
                                 f"or the fixed channels alone ({len(order)}×…)")
        try:
            return array.expand(len(order), *shape[1:])
        except RuntimeError:
            raise MEIConfigError(f"{self.key}.values: an array of shape {list(given)} does not fit stimuli {list(shape)} "
                                 f"(each channel is {list(shape[1:])})") from None

    def _on(self, like: Tensor) -> None:
        if self._values.device != like.device or self._values.dtype != like.dtype:
            self._mask = self._mask.to(like.device)
            self._values, self._centre = self._values.to(like), self._centre.to(like)

    def __call__(self, variable: Tensor) -> Tensor:
        shape = _stimulus_shape(self)
        if tuple(variable.shape[1:]) != shape:
            raise MEIConfigError(f"{self.key}: decoded stimuli {list(variable.shape[1:])}, but the channels were checked against {list(shape)}")
        self._on(variable)
        return torch.where(self._mask, self._values, variable)

    def hold(self) -> "HoldChannels":
        """The postprocessor that puts the variable's fixed channels at the budget's centre."""
        return HoldChannels(self)

    def __repr__(self) -> str:
        values = self.values if isinstance(self.values, str) else f"array{list(self.values.shape)}"
        return f"FixedChannels(channels={self.channels}, values={values})"


class HoldChannels(Postprocessor):
    """:class:`FixedChannels`'s fixed channels of the variable at the contrast budget's centre."""

    def __init__(self, fixed: FixedChannels):
        self.fixed = fixed

    def __call__(self, x: Tensor, step: Step) -> Tensor:
        fixed = self.fixed
        _stimulus_shape(fixed)
        fixed._on(x)
        return torch.where(fixed._mask, fixed._centre, x)
