"""Embedded ground-truth demo: a simulated V1 population and a small CNN fitted to it (the pipeline's
demo kind ``v1``, which makes them, is ``mei_core.demo.v1``).

Because the population's preferred stimuli are known, MEIs computed on the fitted CNN can
be scored against the truth (``filter_correlation``, ``relative_activation``).

Pieces
------
* ``GroundTruthV1.random(n_simple=12, n_complex=8, n_dog=4, size=24, seed=0)``: Gabor LN
  simple cells, quadrature-energy complex cells and ON/OFF difference-of-Gaussians cells on
  ``B×1×24×24`` float32 images; ``forward`` gives clean rates (expected spike counts,
  mean 8 per image over pink noise).  ``to_dict()/from_dict()`` is a JSON-able round trip.
* ``pink_noise(n, size, generator)``: 1/f images, each exactly mean 0 and std
  ``PINK_NOISE_STD = 1`` (so every image has L2 norm ``size``, i.e. 24).
* ``simulate_responses`` / ``demo_dataset``: Poisson counts of the clean rates.
* ``DemoCNN`` / ``build_demo_cnn(**kwargs)``: conv 9×9 → ELU → conv 7×7 → ELU (16 channels,
  valid padding, 24→16→10 pixels), factorised readout (10×10 mask × 16 features + bias per
  neuron), output ``elu + 1``.
* ``train_demo_cnn``: Poisson loss, Adam, L1 on readout masks, bitwise deterministic per seed.

Chosen defaults and measured figures
------------------------------------
Defaults: 5000 pink-noise images (10 % held out), 20 epochs, batch 64, Adam lr 5e-3,
mask L1 0.05, 16 channels, no batchnorm; population seed 0 with 12/8/4 cells.
Measured with ``torch.set_num_threads(1)`` on the 2-core dev box, train seeds 0/1/2:

* training: 27-29 s CPU per member (31-43 s wall with other jobs running); data 0.6 s.
* test correlation to clean rates: simple 0.975/0.969/0.971, complex 0.939/0.936/0.933,
  DoG 0.987/0.984/0.981.
* MEIs of each member (x ~ N(0,1); 200 steps of gradient ascent, gradient Gaussian-blurred
  with sigma 1.5 → 0.25, divided by its mean |.|, step lr, rescale to L2 norm 24, clamp to
  ±3): median ``filter_correlation`` at lr 1.0 simple 0.967/0.955/0.958, complex
  0.960/0.954/0.953, DoG 0.906/0.907/0.899 (lr 0.3: ~0.005 lower for simple/complex,
  ~0.02 lower for DoG); worst single neuron 0.92.  MEIs of the 3-member mean: 0.977 simple,
  0.970 complex, 0.923 DoG.  The same loop on the true population (the ceiling, set by
  the ±3 clamp flattening the filter peaks) reaches 0.991 / 0.985 / 0.948.
  Population seeds 1 and 2 gave simple 0.961 / 0.949 and complex 0.945 / 0.937.

What mattered: low enough Gabor frequencies (wavelength 0.28-0.40 × size) for pink noise,
whose power falls as 1/f^2, to drive the cells well; a mean rate of 8 instead of 3 (less
Poisson noise, +0.03-0.05 MEI r on complex cells); the mask L1.  A Laplacian smoothness
penalty on the first layer and 32 channels did not help.
"""

from __future__ import annotations

import math
import time
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn

PINK_NOISE_STD = 1.0
CELL_TYPES = ("simple", "complex", "dog")

DEFAULT_N_IMAGES = 5000
DEFAULT_EPOCHS = 20
DEFAULT_BATCH_SIZE = 64
DEFAULT_LR = 5e-3
DEFAULT_MASK_L1 = 0.05


# --------------------------------------------------------------------------- stimuli


def pink_noise(n: int, size: int = 24, generator: torch.Generator | None = None) -> torch.Tensor:
    """``n`` images of 1/f noise, shape ``n×1×size×size`` float32.

    Amplitude spectrum ∝ 1/|f| (power ∝ 1/|f|², like natural images); the DC
    component is removed and every image is rescaled to mean 0 and standard
    deviation exactly ``PINK_NOISE_STD`` (= 1.0, population std over its pixels),
    so every image has L2 norm ``size * PINK_NOISE_STD``.
    """
    white = torch.randn(n, 1, size, size, generator=generator, dtype=torch.float64)
    fy = torch.fft.fftfreq(size, dtype=torch.float64)
    fx = torch.fft.fftfreq(size, dtype=torch.float64)
    radius = torch.sqrt(fy[:, None] ** 2 + fx[None, :] ** 2)
    amplitude = torch.where(radius > 0, 1.0 / radius.clamp_min(1e-12), torch.zeros_like(radius))
    pink = torch.fft.ifft2(torch.fft.fft2(white) * amplitude).real
    pink = pink - pink.mean(dim=(-2, -1), keepdim=True)
    pink = pink / pink.std(dim=(-2, -1), keepdim=True, unbiased=False) * PINK_NOISE_STD
    return pink.float()


# --------------------------------------------------------------------------- population


def _pixel_grid(size: int) -> tuple[torch.Tensor, torch.Tensor]:
    coords = torch.arange(size, dtype=torch.float64)
    return torch.meshgrid(coords, coords, indexing="ij")  # (y, x)


def _gabor(size: int, cell: dict[str, Any], phase: float) -> torch.Tensor:
    y, x = _pixel_grid(size)
    dx, dy = x - cell["cx"], y - cell["cy"]
    along = dx * math.cos(cell["theta"]) + dy * math.sin(cell["theta"])
    across = -dx * math.sin(cell["theta"]) + dy * math.cos(cell["theta"])
    envelope = torch.exp(-(along**2 + (cell["aspect"] * across) ** 2) / (2 * cell["sigma"] ** 2))
    return envelope * torch.cos(2 * math.pi * along / cell["wavelength"] + phase)


def _dog(size: int, cell: dict[str, Any]) -> torch.Tensor:
    y, x = _pixel_grid(size)
    r2 = (x - cell["cx"]) ** 2 + (y - cell["cy"]) ** 2
    centre = torch.exp(-r2 / (2 * cell["sigma_center"] ** 2))
    surround = torch.exp(-r2 / (2 * cell["sigma_surround"] ** 2))
    # Unit-sum lobes with equal weight give a balanced (zero-DC) centre-surround profile.
    return cell["polarity"] * (centre / centre.sum() - surround / surround.sum())


def _zero_mean_unit_norm(f: torch.Tensor) -> torch.Tensor:
    # Images are zero-mean, so a filter's DC part is invisible to every response;
    # removing it makes "optimal stimulus = filter direction" exact.
    f = f - f.mean()
    return f / f.norm()


def _cell_filters(size: int, cell: dict[str, Any]) -> tuple[torch.Tensor, torch.Tensor]:
    """(primary, quadrature) float64 filters of one cell; quadrature is zero unless complex."""
    if cell["type"] == "simple":
        return _zero_mean_unit_norm(_gabor(size, cell, cell["phase"])), torch.zeros(size, size, dtype=torch.float64)
    if cell["type"] == "dog":
        return _zero_mean_unit_norm(_dog(size, cell)), torch.zeros(size, size, dtype=torch.float64)
    if cell["type"] == "complex":
        pair = torch.stack([_gabor(size, cell, 0.0), _gabor(size, cell, math.pi / 2)]).reshape(2, -1)
        pair = pair - pair.mean(dim=1, keepdim=True)
        # Symmetric (Loewdin) orthonormalisation: both filters stay Gabor-like and the
        # energy e^2 + o^2 becomes exactly phase invariant with max |x|^2 at any phase.
        gram = pair @ pair.T
        eigval, eigvec = torch.linalg.eigh(gram)
        inv_sqrt = eigvec @ torch.diag(eigval.rsqrt()) @ eigvec.T
        pair = (inv_sqrt @ pair).reshape(2, size, size)
        return pair[0], pair[1]
    raise ValueError(f"unknown cell type {cell['type']!r}")


class GroundTruthV1(nn.Module):
    """Simulated V1-like population with known filters; ``forward`` gives clean rates.

    Rates are expected spike counts per image presentation. With ``z = <f, x> / drive_scale``
    (``drive_scale`` = std of ``<f, x>`` over pink noise, so ``z`` is ~unit variance):

    * simple:  ``gain * softplus(slope * z + offset)`` with a zero-mean unit-norm Gabor ``f``;
    * complex: ``gain * (z_even^2 + z_odd^2) / 2`` with an orthonormal quadrature Gabor pair;
    * dog:     ``gain * softplus(slope * z + offset)`` with a balanced difference of
      Gaussians ``f`` (polarity +1 ON centre, -1 OFF centre).

    Simple/DoG rates increase monotonically with the projection onto ``f`` and complex rates
    with the squared length of the projection onto the pair, so for a stimulus of L2 norm
    ``rho`` the optimum is ``rho * f`` (any unit combination of the pair for complex).
    Filters are zero-mean because images are: a filter's DC part could never be measured.
    The population is fully described by ``to_dict()`` (JSON-able) and also has the filters
    as buffers, so ``state_dict`` works too.
    """

    def __init__(self, cells: list[dict[str, Any]], size: int = 24) -> None:
        super().__init__()
        self.size = int(size)
        self.cells = [dict(cell) for cell in cells]
        self.cell_types: list[str] = [cell["type"] for cell in self.cells]
        primary, quadrature = zip(*(_cell_filters(self.size, cell) for cell in self.cells))
        self.register_buffer("primary", torch.stack(primary).float())
        self.register_buffer("quadrature", torch.stack(quadrature).float())

        def column(key: str, default: float) -> torch.Tensor:
            return torch.tensor([float(cell.get(key, default)) for cell in self.cells])

        self.register_buffer("gain", column("gain", 1.0))
        self.register_buffer("slope", column("slope", 1.0))
        self.register_buffer("offset", column("offset", 0.0))
        self.register_buffer("drive_scale", column("drive_scale", 1.0))
        self.register_buffer("is_complex", torch.tensor([t == "complex" for t in self.cell_types]))

    @property
    def n_neurons(self) -> int:
        return len(self.cells)

    @classmethod
    def random(
        cls,
        n_simple: int = 12,
        n_complex: int = 8,
        n_dog: int = 4,
        size: int = 24,
        seed: int = 0,
        mean_rate: float = 8.0,
        wavelength_range: tuple[float, float] = (0.28, 0.40),
    ) -> "GroundTruthV1":
        """Seeded random population (neurons ordered simple, complex, dog).

        ``mean_rate`` sets the gains so each neuron's mean expected count over pink noise
        is that value.  Gabor wavelengths are ``wavelength_range * size`` pixels with envelope
        sigma 0.38-0.5 wavelengths and centres such that centre +- 2.2 sigma lies inside the
        image (capped at the central 3 pixels for the largest fields); DoG centre sigma is
        0.08-0.11 size, surround 1.6-2x that, ON and OFF alternating.  Low-ish frequencies
        suit pink noise, whose power falls as 1/f^2, and large fields keep the optimal
        stimulus at norm ``size`` from saturating a +-3 pixel clamp too much.
        """
        rng = torch.Generator().manual_seed(int(seed))

        def uniform(low: float, high: float) -> float:
            return low + (high - low) * torch.rand((), generator=rng, dtype=torch.float64).item()

        def centre(radius: float) -> tuple[float, float]:
            # The receptive field (centre +- radius) must lie inside the image.
            low, high = radius, size - 1 - radius
            return uniform(low, high), uniform(low, high)

        def gabor_params() -> dict[str, Any]:
            wavelength = uniform(*wavelength_range) * size
            sigma = wavelength * uniform(0.38, 0.5)
            cx, cy = centre(min(2.2 * sigma, size / 2 - 1.5))
            return dict(cx=cx, cy=cy, theta=uniform(0.0, math.pi), wavelength=wavelength,
                        sigma=sigma, aspect=uniform(0.8, 1.2))

        cells: list[dict[str, Any]] = []
        for _ in range(n_simple):
            cells.append(dict(type="simple", **gabor_params(), phase=uniform(0.0, 2 * math.pi),
                              slope=uniform(1.5, 2.5), offset=uniform(-1.5, -0.5)))
        for _ in range(n_complex):
            cells.append(dict(type="complex", **gabor_params()))
        for _ in range(n_dog):
            sigma_center = uniform(0.08, 0.11) * size
            cx, cy = centre(min(2.5 * sigma_center * 1.8, size / 2 - 1.5))
            cells.append(dict(type="dog", cx=cx, cy=cy, sigma_center=sigma_center,
                              sigma_surround=sigma_center * uniform(1.6, 2.0),
                              polarity=1.0 if len(cells) % 2 == 0 else -1.0,  # ON and OFF both present
                              slope=uniform(1.5, 2.5), offset=uniform(-1.5, -0.5)))

        # Calibrate drive scales and gains on a fixed pink-noise sample so that rates are
        # comparable across neurons regardless of filter frequency.
        population = cls(cells, size)
        calibration = pink_noise(4096, size, torch.Generator().manual_seed(int(seed) + 7919))
        flat = calibration.reshape(len(calibration), -1).double()
        drive = flat @ population.primary.reshape(len(cells), -1).double().T
        drive_q = flat @ population.quadrature.reshape(len(cells), -1).double().T
        for i, cell in enumerate(cells):
            if cell["type"] == "complex":
                cell["drive_scale"] = math.sqrt(0.5 * (drive[:, i].var() + drive_q[:, i].var()).item())
                z2 = (drive[:, i] ** 2 + drive_q[:, i] ** 2) / cell["drive_scale"] ** 2 / 2
                cell["gain"] = mean_rate / z2.mean().item()
            else:
                cell["drive_scale"] = drive[:, i].std().item()
                z = drive[:, i] / cell["drive_scale"]
                cell["gain"] = mean_rate / F.softplus(cell["slope"] * z + cell["offset"]).mean().item()
        return cls(cells, size)

    def to_dict(self) -> dict[str, Any]:
        """JSON-able description; ``from_dict`` rebuilds a population with identical rates."""
        return {"kind": "GroundTruthV1", "version": 1, "size": self.size,
                "cells": [dict(cell) for cell in self.cells]}

    @classmethod
    def from_dict(cls, description: dict[str, Any]) -> "GroundTruthV1":
        return cls([dict(cell) for cell in description["cells"]], int(description["size"]))

    def filters(self, neuron: int) -> torch.Tensor:
        """True filter: ``1×H×W`` for simple/dog, ``2×1×H×W`` (even, odd) pair for complex."""
        if self.cell_types[neuron] == "complex":
            return torch.stack([self.primary[neuron], self.quadrature[neuron]])[:, None].clone()
        return self.primary[neuron][None].clone()

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """Clean rates ``B×N`` (expected spike counts) for images ``B×1×H×W``."""
        flat = x.reshape(x.shape[0], -1).to(self.primary.dtype)
        z = flat @ self.primary.reshape(self.n_neurons, -1).T / self.drive_scale
        z_quad = flat @ self.quadrature.reshape(self.n_neurons, -1).T / self.drive_scale
        linear_nonlinear = self.gain * F.softplus(self.slope * z + self.offset)
        energy = self.gain * (z**2 + z_quad**2) / 2
        return torch.where(self.is_complex, energy, linear_nonlinear)


def simulate_responses(
    population: GroundTruthV1, images: torch.Tensor, generator: torch.Generator | None = None
) -> torch.Tensor:
    """Poisson spike counts (float32, ``B×N``) drawn around the population's clean rates.

    Rates are expected counts per image; ``GroundTruthV1.random`` scales them to a mean of
    ``mean_rate=8`` over pink noise, so the noise is moderate (Poisson SNR sqrt(8) ~ 2.8 at
    the mean; optimal stimuli drive ~10-60x the mean rate).
    """
    with torch.no_grad():
        rates = population(images)
    return torch.poisson(rates, generator=generator)


def demo_dataset(
    population: GroundTruthV1, n_images: int = DEFAULT_N_IMAGES, seed: int = 0
) -> tuple[torch.Tensor, torch.Tensor]:
    """Seeded (pink-noise images ``n×1×S×S``, Poisson counts ``n×N``) for ``population``."""
    generator = torch.Generator().manual_seed(int(seed))
    images = pink_noise(n_images, population.size, generator)
    return images, simulate_responses(population, images, generator)


# --------------------------------------------------------------------------- CNN model


class FactorisedReadout(nn.Module):
    """Per neuron: a spatial mask (H'×W') times feature weights (C), plus a bias."""

    def __init__(self, n_neurons: int, channels: int, height: int, width: int) -> None:
        super().__init__()
        self.mask = nn.Parameter(torch.zeros(n_neurons, height, width))
        self.features = nn.Parameter(torch.zeros(n_neurons, channels))
        self.bias = nn.Parameter(torch.zeros(n_neurons))

    def forward(self, feature_map: torch.Tensor) -> torch.Tensor:
        batch, channels = feature_map.shape[:2]
        # Pool space first (B×C×N), then mix channels: cheaper than a full B×N×C×H×W product.
        pooled = feature_map.reshape(batch, channels, -1) @ self.mask.reshape(len(self.mask), -1).T
        return (pooled * self.features.T).sum(dim=1) + self.bias


class DemoCNN(nn.Module):
    """Two valid convolutions (ELU) and a factorised readout; output ``elu(.) + 1 > 0``, ``B×N``.

    All constructor arguments are JSON-able so a checkpoint is ``state_dict`` + the builder
    ``mei_core.demo.v1.build_demo_cnn`` + these kwargs.  Parameters are initialised from
    ``init_seed`` with a private generator (the global RNG is neither used nor advanced).
    With ``batchnorm=True`` the model must be in ``eval()`` mode when computing MEIs.
    """

    def __init__(
        self,
        n_neurons: int,
        in_shape: tuple[int, int, int] | list[int] = (1, 24, 24),
        channels: int = 16,
        kernel_sizes: tuple[int, int] | list[int] = (9, 7),
        batchnorm: bool = False,
        init_seed: int = 0,
    ) -> None:
        super().__init__()
        in_channels, height, width = (int(v) for v in in_shape)
        self.n_neurons = int(n_neurons)
        self.in_shape = (in_channels, height, width)
        with torch.random.fork_rng(devices=[]):  # keep default layer inits off the global RNG
            self.core, height, width = conv_core(in_channels, height, width, channels, kernel_sizes, batchnorm)
            self.readout = FactorisedReadout(self.n_neurons, channels, height, width)
        self.reset_parameters(torch.Generator().manual_seed(int(init_seed)))

    @torch.no_grad()
    def reset_parameters(self, generator: torch.Generator) -> None:
        init_conv_core(self.core, generator)
        readout = self.readout
        readout.mask.copy_(torch.rand(readout.mask.shape, generator=generator) / readout.mask[0].numel())
        readout.features.copy_(torch.randn(readout.features.shape, generator=generator) / math.sqrt(readout.features.shape[1]))
        readout.bias.zero_()

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return F.elu(self.readout(self.core(x))) + 1.0


def conv_core(in_channels: int, height: int, width: int, channels: int, kernel_sizes: Any, batchnorm: bool) -> tuple[nn.Sequential, int, int]:
    """Valid convolutions (``channels`` each, optional BatchNorm) with ELUs, and the output's height
    and width."""
    layers: list[nn.Module] = []
    previous = in_channels
    for kernel in kernel_sizes:
        layers.append(nn.Conv2d(previous, channels, int(kernel), bias=not batchnorm))
        if batchnorm:
            layers.append(nn.BatchNorm2d(channels))
        layers.append(nn.ELU())
        previous = channels
        height, width = height - int(kernel) + 1, width - int(kernel) + 1
    return nn.Sequential(*layers), height, width


@torch.no_grad()
def init_conv_core(core: nn.Module, generator: torch.Generator) -> None:
    """He-normal convolution weights drawn from ``generator``, zero biases, fresh BatchNorm: a CNN
    core initialised deterministically per seed."""
    for module in core:
        if isinstance(module, nn.Conv2d):
            fan_in = module.weight[0].numel()
            module.weight.copy_(torch.randn(module.weight.shape, generator=generator) * math.sqrt(2.0 / fan_in))
            if module.bias is not None:
                module.bias.zero_()
        elif isinstance(module, nn.BatchNorm2d):
            module.reset_parameters()


def build_demo_cnn(**kwargs: Any) -> DemoCNN:
    """Builder used by checkpoints: ``build_demo_cnn(**json_kwargs).load_state_dict(...)``."""
    return DemoCNN(**kwargs)


def _per_neuron_correlation(prediction: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
    prediction = prediction.double() - prediction.double().mean(0)
    target = target.double() - target.double().mean(0)
    denominator = prediction.norm(dim=0) * target.norm(dim=0)
    return torch.where(denominator > 0, (prediction * target).sum(0) / denominator.clamp_min(1e-300), 0.0)


def train_demo_cnn(
    images: torch.Tensor,
    responses: torch.Tensor,
    seed: int = 0,
    epochs: int = DEFAULT_EPOCHS,
    batch_size: int = DEFAULT_BATCH_SIZE,
    lr: float = DEFAULT_LR,
    *,
    population: GroundTruthV1 | None = None,
    test_fraction: float = 0.1,
    mask_l1: float = DEFAULT_MASK_L1,
    model_kwargs: dict[str, Any] | None = None,
) -> tuple[DemoCNN, dict[str, Any]]:
    """Fit a ``DemoCNN`` to (images, spike counts) with Poisson loss and Adam.

    Deterministic: the seed drives the init, the train/test split and the shuffling through
    private generators, so two calls with equal inputs (and equal thread count) give
    bitwise-identical weights.  The last ``test_fraction`` of a seeded permutation is held
    out; metrics correlate predictions there with the population's CLEAN rates when
    ``population`` is given (else with the noisy counts).  The model is returned in eval mode.
    """
    started, started_cpu = time.perf_counter(), time.process_time()
    generator = torch.Generator().manual_seed(int(seed))
    n_images, n_neurons = responses.shape
    kwargs = dict(n_neurons=n_neurons, in_shape=list(images.shape[1:]), init_seed=int(seed))
    kwargs.update(model_kwargs or {})
    model = build_demo_cnn(**kwargs)

    order = torch.randperm(n_images, generator=generator)
    n_test = max(1, int(round(test_fraction * n_images)))
    train_index, test_index = order[: n_images - n_test], order[n_images - n_test :]
    train_images, train_responses = images[train_index], responses[train_index].float()
    with torch.no_grad():
        # Start at the mean count so early epochs fit tuning, not the overall rate (elu(b)+1 = mean).
        model.readout.bias.copy_((train_responses.mean(0) - 1.0).clamp_min(-0.9))

    loss_function = nn.PoissonNLLLoss(log_input=False, full=False, reduction="mean")
    optimiser = torch.optim.Adam(model.parameters(), lr=lr)
    losses: list[float] = []
    model.train()
    for _ in range(int(epochs)):
        permutation = torch.randperm(len(train_index), generator=generator)
        total, batches = 0.0, 0
        for start in range(0, len(permutation), int(batch_size)):
            batch = permutation[start : start + int(batch_size)]
            prediction = model(train_images[batch])
            loss = loss_function(prediction, train_responses[batch])
            penalty = mask_l1 * model.readout.mask.abs().sum() / n_neurons
            optimiser.zero_grad(set_to_none=True)
            (loss + penalty).backward()
            optimiser.step()
            total += loss.item()
            batches += 1
        losses.append(total / max(batches, 1))
    model.eval()

    with torch.no_grad():
        prediction = model(images[test_index])
        target = population(images[test_index]) if population is not None else responses[test_index]
    correlation = _per_neuron_correlation(prediction, target)
    metrics: dict[str, Any] = {
        "seed": int(seed),
        "epochs": int(epochs),
        "n_train": int(len(train_index)),
        "n_test": int(len(test_index)),
        "target": "clean_rates" if population is not None else "responses",
        "train_loss": losses,
        "test_correlation": [float(v) for v in correlation],
        "train_seconds": time.perf_counter() - started,
        "train_cpu_seconds": time.process_time() - started_cpu,
        "model_kwargs": kwargs,
    }
    if population is not None:
        metrics["mean_test_correlation_by_type"] = {
            cell_type: float(correlation[[t == cell_type for t in population.cell_types]].mean())
            for cell_type in CELL_TYPES
            if cell_type in population.cell_types
        }
    return model, metrics


# --------------------------------------------------------------------------- validation metrics


def _pearson(a: torch.Tensor, b: torch.Tensor) -> float:
    a = a.flatten().double()
    b = b.flatten().double()
    a = a - a.mean()
    b = b - b.mean()
    denominator = (a.norm() * b.norm()).item()
    return float((a @ b).item() / denominator) if denominator > 0 else 0.0


def filter_correlation(mei: torch.Tensor, population: GroundTruthV1, neuron: int) -> float:
    """Similarity of an image (``1×H×W``) to the neuron's true filter, in [-1, 1].

    simple / dog: Pearson r between the image and the filter (sign matters: an inverted
    filter drives the cell least).  complex: phase-invariant r = max over phase of the
    Pearson r with ``cos(phase)*even + sin(phase)*odd``.  Because the pair is zero-mean and
    orthonormal, that maximum equals ``sqrt(r_even^2 + r_odd^2)`` (always >= 0), which is
    what is computed.
    """
    image = mei.detach().cpu().reshape(-1)
    if population.cell_types[neuron] == "complex":
        even, odd = population.filters(neuron).cpu()
        return math.sqrt(_pearson(image, even) ** 2 + _pearson(image, odd) ** 2)
    return _pearson(image, population.filters(neuron).cpu())


def optimal_stimulus(population: GroundTruthV1, neuron: int, norm: float) -> torch.Tensor:
    """The neuron's best image (``1×H×W``) of L2 norm ``norm``: its filter scaled to that norm.

    Exact because every rate is monotonic in the projection onto the (unit-norm,
    zero-mean) filter; for complex cells any unit combination of the pair is optimal,
    the even filter is returned.
    """
    return population.primary[neuron][None].clone() * norm


def relative_activation(mei: torch.Tensor, population: GroundTruthV1, neuron: int) -> float:
    """True rate at ``mei`` divided by the true rate at the optimal stimulus of equal L2 norm.

    1.0 means the MEI is as good as the best possible image of its norm (it cannot exceed
    1 except by floating-point error).
    """
    image = mei.detach().cpu().float().reshape(1, 1, population.size, population.size)
    best = optimal_stimulus(population, neuron, float(image.norm()))[None]
    with torch.no_grad():
        rates = population(torch.cat([image, best.to(image)]))[:, neuron]
    return float(rates[0] / rates[1])
