"""Connectome models: a sparse recurrent network unrolled over a few synaptic hops, and what is needed
to fit it and to ask it for target activations (the model side of connectome_interpreter 2.9.5's
``activation_maximisation.py``, batched and vectorised).

Shapes: ``B`` rows (batch items), ``n`` = ``n_all`` neurons, ``S`` sensory neurons, ``L`` layers
(= time steps = synaptic hops). Weights have the post-synaptic neuron in ROWS and the pre-synaptic one
in COLUMNS (``pre = W @ a``).

Forward semantics of :class:`MultilayeredNetwork` (connectome_interpreter's)
------------------------------------------------------------------------------
Input ``x`` is ``B×S×L``; ``u = cap(x)`` where ``cap(v) = min(1, v if v >= threshold else 0)``
(``torch.where`` and ``clamp``, as connectome_interpreter: the gradient is passed through unchanged
inside ``[threshold, 1]`` and is zero below the threshold and above 1; the jumps are not smoothed).
With per-neuron ``slope_i``/``bias_i`` taken from neuron ``i``'s group (``bias = |raw_bias|``)::

    a = 0 (B×n);  a[:, sensory] = u[:, :, 0]                       # the state before layer 0
    for t in 0 .. L-1:
        pre   = W @ a                                              # divisive edges removed from W
        s     = slope                                               # no divisive normalisation
        s     = slope * relu(1 + D @ (strength_pre * a))            # with divisive normalisation
        z     = s * pre + |bias|
        a     = f(where(z >= threshold, z, 0))                     # f = tanh by default
        if t < L-1:                                                # the input of step t+1 joins
            a[:, sensory] = min(1, a[:, sensory] + u[:, :, t+1])   # the state that layer t+1 reads
        out[:, :, t] = a

So input step 0 is the state layer 0 reads, input step ``t >= 1`` is added onto the sensory neurons'
activations of layer ``t-1`` (it is part of ``out[:, :, t-1]`` and is what layer ``t`` propagates), and
nothing is added after the last layer: exactly connectome_interpreter's order. ``D`` holds the removed
divisive edges (``D[post, pre] = w``, negative) and ``strength_pre`` the strength of the pre-synaptic
neuron's group.

Deliberate differences from connectome_interpreter
---------------------------------------------------
* Divisive normalisation sums over a post neuron's divisive inputs: ``slope · max(0, 1 + Σ_pre
  w·a_pre·strength)``; connectome_interpreter loops over the edges, multiplying the slope by
  ``max(0, 1 + w·a_pre·strength)`` per edge (identical with one divisive input per neuron). Its loop
  also fails for batches of more than one row; ours is one sparse product per layer.
* ``activation_function`` replaces only ``f`` (tanh): slopes, biases and the threshold still apply.
  connectome_interpreter's custom function replaced the whole ``tanh(thresh(slope·x + bias))``.
* The cap at 1 after adding the input applies to the sensory neurons only (the ones that received
  input); connectome_interpreter capped every neuron. Identical with tanh (which never exceeds 1).
* There are always per-group parameters (``idx_to_group=None`` makes every neuron its own group) and
  the bias is always ``|raw_bias|``; connectome_interpreter used a raw ``default_bias`` (which could be
  negative) when no groups were given.
* The model keeps no ``self.activations`` (which kept the whole graph alive between calls).
* Sensory indices must be distinct (connectome_interpreter summed the input of repeated indices).

Everything is per row: row ``b`` of the output depends on row ``b`` of the input only.

Speed: ``W`` is a CSR tensor with int32 indices, its transpose is cached as a second CSR tensor, and
the product is a custom ``autograd.Function`` whose backward is ``W^T @ grad`` (no COO
``torch.sparse.mm``, whose backward transposes and coalesces on every call).
"""

from __future__ import annotations

import math
import warnings
from collections.abc import Callable, Hashable, Mapping, Sequence
from typing import Any, NamedTuple

import numpy as np
import pandas as pd
import scipy.sparse as sp
import torch
import torch.nn.functional as F
from torch import Tensor, nn

__all__ = [
    "Connectome",
    "MultilayeredNetwork",
    "TargetActivation",
    "activation_table",
    "csr_matmul",
    "random_connectome",
    "saliency",
    "target_loss",
    "train_model",
]

WeightsLike = sp.spmatrix | sp.sparray | np.ndarray | Tensor


# ----------------------------------------------------------------------------- sparse product


def _to_scipy_csr(weights: WeightsLike) -> sp.csr_matrix:
    if isinstance(weights, Tensor):
        weights = weights.detach().cpu()
        if weights.layout == torch.strided:
            weights = sp.csr_matrix(weights.numpy())
        else:
            coo = weights.to_sparse_coo().coalesce()
            row, col = coo.indices().numpy()
            weights = sp.csr_matrix((coo.values().numpy(), (row, col)), shape=tuple(coo.shape))
    elif isinstance(weights, np.ndarray):
        weights = sp.csr_matrix(weights)
    elif not sp.issparse(weights):
        raise TypeError(f"weights must be a scipy.sparse matrix, a numpy array or a torch tensor, got {type(weights).__name__}")
    weights = sp.csr_matrix(weights, copy=True)
    weights.sum_duplicates()
    weights.eliminate_zeros()
    return weights


def _csr_tensor(matrix: sp.csr_matrix, dtype: torch.dtype) -> Tensor:
    """A torch CSR tensor with int32 indices (about 1.5× faster products than int64 on CPU)."""
    index_dtype = torch.int32 if matrix.nnz < 2**31 - 1 and max(matrix.shape) < 2**31 - 1 else torch.int64
    with warnings.catch_warnings():
        # torch warns once that CSR support is "beta"; the few ops used here are tested in
        # tests/test_connectome.py (values, gradients, dtype and device moves)
        warnings.filterwarnings("ignore", message="Sparse CSR tensor support is in beta")
        return torch.sparse_csr_tensor(
            torch.from_numpy(matrix.indptr.astype(np.int64)).to(index_dtype),
            torch.from_numpy(matrix.indices.astype(np.int64)).to(index_dtype),
            torch.from_numpy(np.asarray(matrix.data)).to(dtype),
            size=matrix.shape,
            check_invariants=True,
        )


class _CSRMatmul(torch.autograd.Function):
    """``W @ x`` for a constant CSR ``W`` and dense ``x`` (n×B); backward ``W^T @ grad`` with the cached
    CSR transpose. The backward is itself this Function, so double backward works too."""

    @staticmethod
    def forward(ctx: Any, x: Tensor, w: Tensor, wt: Tensor) -> Tensor:
        ctx.w, ctx.wt = w, wt
        return torch.mm(w, x)

    @staticmethod
    def backward(ctx: Any, grad: Tensor) -> tuple[Tensor | None, None, None]:
        if not ctx.needs_input_grad[0]:
            return None, None, None
        return _CSRMatmul.apply(grad.contiguous(), ctx.wt, ctx.w), None, None


def csr_matmul(w: Tensor, wt: Tensor, x: Tensor) -> Tensor:
    """``w @ x`` (``w``: CSR n×m, ``wt``: its transpose as CSR m×n, ``x``: dense m×B) -> n×B,
    differentiable in ``x``; ``w`` itself gets no gradient."""
    return _CSRMatmul.apply(x, w, wt)


# ----------------------------------------------------------------------------- the network


def _just_below(value: float, dtype: torch.dtype) -> float:
    """The largest ``dtype`` number below ``value`` (as a Python float)."""
    np_dtype = {torch.float16: np.float16, torch.float32: np.float32, torch.float64: np.float64}.get(dtype)
    if np_dtype is None:  # bfloat16 and others: compare in float32, close enough for a threshold
        np_dtype = np.float32
    return float(np.nextafter(np_dtype(value), np_dtype(-np.inf)))


def _groups_of(idx_to_group: Mapping[int, Hashable] | Sequence[Hashable] | None, n: int) -> list[Hashable]:
    if idx_to_group is None:
        return list(range(n))
    if isinstance(idx_to_group, Mapping):
        missing = [i for i in range(n) if i not in idx_to_group]
        if missing:
            raise ValueError(f"idx_to_group has no group for {len(missing)} neurons (first: {missing[:5]})")
        return [idx_to_group[i] for i in range(n)]
    groups = list(idx_to_group)
    if len(groups) != n:
        raise ValueError(f"idx_to_group has {len(groups)} entries for {n} neurons")
    return groups


def _ordered_names(names: list[Hashable]) -> list[Hashable]:
    unique = list(dict.fromkeys(names))
    try:
        return sorted(unique)  # connectome_interpreter's parameter order
    except TypeError:  # mixed, unorderable names: order of first appearance
        return unique


class MultilayeredNetwork(nn.Module):
    """A connectome unrolled over ``num_layers`` synaptic hops (semantics: module docstring).

    Args:
        all_weights: n×n connectome (scipy.sparse, numpy or torch, dense or sparse), post-synaptic
            neurons in rows, pre-synaptic in columns.
        sensory_indices: the ``S`` distinct neurons that receive the input, in input order.
        num_layers: ``L``, the number of hops (the input's last dimension).
        threshold: values below it are set to 0, in the input and before ``f``.
        tanh_steepness: the slope of every group not in ``slope_dict``.
        idx_to_group: group name of every neuron (a mapping ``index -> name`` covering all neurons,
            or a sequence of n names). Neurons of a group share slope, bias and divisive strength.
            ``None``: every neuron is its own group, named by its index.
        default_bias: the bias of every group not in ``bias_dict`` (used as ``|bias|``).
        bias_dict, slope_dict: ``{group: value}``.
        divisive_normalization: ``{pre_group: [post_groups]}``. Those edges leave ``W`` and instead
            scale the slope of the post neuron (weights must be negative, as in connectome_interpreter).
        divisive_strength: one number for every pre group, or ``{pre_group: strength}`` naming each.
        activation_function: ``f`` (default ``torch.tanh``), applied elementwise.
        dtype: of the weights and parameters.

    Parameters (``nn.Parameter``, one entry per group, trainable with :func:`train_model`):
    ``slope``, ``raw_biases`` (bias = ``|raw_biases|``) and ``divisive_strength`` (one per pre group of
    ``divisive_normalization``, in its key order; ``None`` without it). ``groups`` lists the group names
    in parameter order. The weights are non-persistent buffers, so ``.to(device)`` moves them and
    ``state_dict`` holds the parameters only.
    """

    def __init__(
        self,
        all_weights: WeightsLike,
        sensory_indices: Sequence[int] | np.ndarray | Tensor,
        num_layers: int = 2,
        threshold: float = 0.01,
        tanh_steepness: float = 5.0,
        idx_to_group: Mapping[int, Hashable] | Sequence[Hashable] | None = None,
        default_bias: float = 0.0,
        bias_dict: Mapping[Hashable, float] | None = None,
        slope_dict: Mapping[Hashable, float] | None = None,
        divisive_normalization: Mapping[Hashable, Sequence[Hashable]] | None = None,
        divisive_strength: float | Mapping[Hashable, float] = 1.0,
        activation_function: Callable[[Tensor], Tensor] | None = None,
        dtype: torch.dtype = torch.float32,
    ):
        super().__init__()
        weights = _to_scipy_csr(all_weights)
        n = weights.shape[0]
        if weights.shape != (n, n):
            raise ValueError(f"all_weights must be square (n_all×n_all), got {weights.shape}")
        if num_layers < 1:
            raise ValueError(f"num_layers must be >= 1, got {num_layers}")
        sensory = np.asarray(torch.as_tensor(sensory_indices).cpu(), dtype=np.int64).reshape(-1)
        if len(np.unique(sensory)) != len(sensory) or (len(sensory) and (sensory.min() < 0 or sensory.max() >= n)):
            raise ValueError("sensory_indices must be distinct neuron indices in [0, n_all)")

        self.n_neurons, self.num_layers, self.threshold = n, int(num_layers), float(threshold)
        self.tanh_steepness, self.default_bias = float(tanh_steepness), float(default_bias)
        self.activation_function = activation_function if activation_function is not None else torch.tanh
        self.idx_to_group = idx_to_group

        names = _groups_of(idx_to_group, n)
        self.groups = _ordered_names(names)
        group_id = {g: i for i, g in enumerate(self.groups)}
        neuron_group = np.fromiter((group_id[g] for g in names), dtype=np.int64, count=n)
        slope_dict, bias_dict = dict(slope_dict or {}), dict(bias_dict or {})
        for name, given in (("slope_dict", slope_dict), ("bias_dict", bias_dict)):
            unknown = [g for g in given if g not in group_id]
            if unknown:
                raise ValueError(f"{name} names groups that no neuron belongs to: {unknown[:5]}")
        self.slope = nn.Parameter(torch.tensor([float(slope_dict.get(g, self.tanh_steepness)) for g in self.groups], dtype=dtype))
        self.raw_biases = nn.Parameter(torch.tensor([float(bias_dict.get(g, self.default_bias)) for g in self.groups], dtype=dtype))

        self.divisive_normalization = dict(divisive_normalization) if divisive_normalization else None
        divisive = None
        if self.divisive_normalization:
            weights, divisive, strengths, pre_slot = self._split_divisive(weights, neuron_group, group_id, divisive_strength)
            self.divisive_strength = nn.Parameter(torch.tensor(strengths, dtype=dtype))
        else:
            self.register_parameter("divisive_strength", None)
            pre_slot = np.zeros(n, dtype=np.int64)

        self.register_buffer("group_index", torch.from_numpy(neuron_group), persistent=False)
        self.register_buffer("sensory_indices", torch.from_numpy(sensory), persistent=False)
        self.register_buffer("divisive_slot", torch.from_numpy(pre_slot), persistent=False)
        self.register_buffer("weights", _csr_tensor(weights, dtype), persistent=False)
        self.register_buffer("weights_t", _csr_tensor(weights.T.tocsr(), dtype), persistent=False)
        self.register_buffer("divisive_weights", None if divisive is None else _csr_tensor(divisive, dtype), persistent=False)
        self.register_buffer("divisive_weights_t", None if divisive is None else _csr_tensor(divisive.T.tocsr(), dtype), persistent=False)

    def _split_divisive(
        self, weights: sp.csr_matrix, neuron_group: np.ndarray, group_id: dict, divisive_strength: Any
    ) -> tuple[sp.csr_matrix, sp.csr_matrix, list[float], np.ndarray]:
        """Move the edges ``pre_group -> post_groups`` out of ``W`` into ``D``; per-pre-group strengths
        and, per neuron, the index of its pre group's strength (0 for the others, which D never reads)."""
        if self.idx_to_group is None:
            raise ValueError("divisive_normalization needs idx_to_group")
        n_groups = len(self.groups)
        is_divisive_pair = np.zeros((n_groups, n_groups), dtype=bool)  # [pre group, post group]
        strengths: list[float] = []
        pre_slot_of_group = np.zeros(n_groups, dtype=np.int64)
        for slot, (pre, posts) in enumerate(self.divisive_normalization.items()):
            for name in (pre, *posts):
                if name not in group_id:
                    raise ValueError(f"divisive_normalization names group {name!r} that no neuron belongs to")
            is_divisive_pair[group_id[pre], [group_id[p] for p in posts]] = True
            pre_slot_of_group[group_id[pre]] = slot
            if isinstance(divisive_strength, Mapping):
                if pre not in divisive_strength:
                    raise ValueError(f"divisive_strength has no value for pre group {pre!r}")
                strengths.append(float(divisive_strength[pre]))
            else:
                strengths.append(float(divisive_strength))
        coo = weights.tocoo()
        divisive_edge = is_divisive_pair[neuron_group[coo.col], neuron_group[coo.row]]
        if np.any(coo.data[divisive_edge] > 0):
            raise ValueError("divisive normalisation weights must be negative (inhibitory); some are positive")
        keep, move = ~divisive_edge, divisive_edge
        shape = weights.shape
        kept = sp.csr_matrix((coo.data[keep], (coo.row[keep], coo.col[keep])), shape=shape)
        moved = sp.csr_matrix((coo.data[move], (coo.row[move], coo.col[move])), shape=shape)
        return kept, moved, strengths, pre_slot_of_group[neuron_group]

    @property
    def all_weights(self) -> Tensor:
        """connectome_interpreter's name for the connectome (here CSR, without divisive edges)."""
        return self.weights

    @property
    def biases(self) -> Tensor:
        """Per-group bias as used: ``|raw_biases|``."""
        return self.raw_biases.abs()

    @property
    def n_sensory(self) -> int:
        return int(self.sensory_indices.numel())

    def forward(self, x: Tensor) -> Tensor:
        """``x``: B×S×L (or S×L for one row) -> activations B×n×L (or n×L), a permuted view of an
        L×n×B tensor (call ``.contiguous()`` for a ``view``)."""
        single = x.dim() == 2
        if single:
            x = x.unsqueeze(0)
        if x.dim() != 3 or x.shape[1] != self.n_sensory or x.shape[2] != self.num_layers:
            raise ValueError(f"expected input B×{self.n_sensory}×{self.num_layers}, got {tuple(x.shape)}")
        # F.threshold keeps values > its threshold; the largest float below ours makes that ">="
        threshold = _just_below(self.threshold, x.dtype)
        # neuron-major state (n×B): the CSR product and the per-neuron parameters need no transposes
        u = F.threshold(x, threshold, 0.0).clamp(max=1.0).permute(2, 1, 0)  # L×S×B
        sensory = self.sensory_indices
        a = x.new_zeros(self.n_neurons, x.shape[0]).index_copy(0, sensory, u[0])
        slope = self.slope[self.group_index].unsqueeze(1)
        bias = self.raw_biases.abs()[self.group_index].unsqueeze(1)
        strength = None if self.divisive_strength is None else self.divisive_strength[self.divisive_slot].unsqueeze(1)
        outputs = []
        for t in range(self.num_layers):
            pre = _CSRMatmul.apply(a, self.weights, self.weights_t)
            s = slope
            if strength is not None:
                gain = 1.0 + _CSRMatmul.apply(strength * a, self.divisive_weights, self.divisive_weights_t)
                s = slope * torch.relu(gain)
            a = self.activation_function(F.threshold(torch.addcmul(bias, s, pre), threshold, 0.0))
            if t < self.num_layers - 1:
                a = a.index_copy(0, sensory, (a.index_select(0, sensory) + u[t + 1]).clamp(max=1.0))
            outputs.append(a)
        # stacking contiguous L×n×B blocks is a memcpy; B×n×L is then a view (a strided copy cost as
        # much as two layers)
        out = torch.stack(outputs).permute(2, 1, 0)
        return out[0] if single else out

    def extra_repr(self) -> str:
        return (
            f"n_neurons={self.n_neurons}, n_synapses={self.weights._nnz()}, n_sensory={self.n_sensory}, "
            f"num_layers={self.num_layers}, threshold={self.threshold}, groups={len(self.groups)}, "
            f"divisive_edges={0 if self.divisive_weights is None else self.divisive_weights._nnz()}"
        )


# ----------------------------------------------------------------------------- targets


def target_loss(
    activations: Tensor, rows: Tensor, layers: Tensor, neurons: Tensor, values: Tensor, p: float = 2.0,
    reduction: str = "mean",
) -> Tensor:
    """Per-row mean (``reduction="sum"``: sum) of ``|activation - value|^p`` over that row's targets
    (``p=2``: squared error).

    ``activations``: B×n×L; ``rows``, ``layers``, ``neurons``, ``values``: K aligned target entries
    (row of ``activations``, layer, neuron, target value), any mix of rows. Returns B values; a row
    without targets gets 0.
    """
    if reduction not in ("mean", "sum"):
        raise ValueError(f"reduction must be 'mean' or 'sum', got {reduction!r}")
    n_rows = activations.shape[0]
    device = activations.device
    rows, layers, neurons = rows.to(device), layers.to(device), neurons.to(device)
    predicted = activations[rows, neurons, layers]
    error = (predicted - values.to(device=device, dtype=predicted.dtype)).abs()
    error = error.square() if p == 2 else error.pow(p)
    total = predicted.new_zeros(n_rows).index_add(0, rows, error)
    if reduction == "sum":
        return total
    count = torch.bincount(rows, minlength=n_rows).clamp(min=1).to(total.dtype)
    return total / count


class TargetActivation:
    """Target activations per row.

    ``targets``: ``{layer: {neuron: value}}`` (the same for every row), or a DataFrame with columns
    ``layer``, ``neuron`` (or connectome_interpreter's ``neuron_idx``), ``value`` and optionally
    ``batch`` (the row the target is for; without it every row gets every target).
    ``batch_size``: default 1, or ``max(batch) + 1`` with a ``batch`` column.

    :meth:`loss` gives each row's mean squared error to its targets.
    """

    def __init__(self, targets: Mapping[int, Mapping[int, float]] | pd.DataFrame, batch_size: int | None = None):
        if isinstance(targets, pd.DataFrame):
            frame = targets.rename(columns={"neuron_idx": "neuron"}) if "neuron" not in targets else targets
            missing = {"layer", "neuron", "value"} - set(frame.columns)
            if missing:
                raise ValueError(f"targets DataFrame lacks columns {sorted(missing)}")
            per_row = "batch" in frame.columns
            batch = frame["batch"].to_numpy(np.int64) if per_row else np.zeros(len(frame), np.int64)
            layer, neuron = frame["layer"].to_numpy(np.int64), frame["neuron"].to_numpy(np.int64)
            value = frame["value"].to_numpy(np.float64)
        else:
            per_row = False
            entries = [(int(l), int(k), float(v)) for l, neurons in targets.items() for k, v in neurons.items()]
            layer = np.array([e[0] for e in entries], dtype=np.int64)
            neuron = np.array([e[1] for e in entries], dtype=np.int64)
            value = np.array([e[2] for e in entries], dtype=np.float64)
            batch = np.zeros(len(entries), np.int64)
        self.per_row = per_row
        self.batch_size = int(batch_size) if batch_size is not None else (int(batch.max()) + 1 if per_row and len(batch) else 1)
        order = np.argsort(batch, kind="stable")
        self.batch = torch.as_tensor(batch[order], dtype=torch.long)
        self.layer = torch.as_tensor(layer[order], dtype=torch.long)
        self.neuron = torch.as_tensor(neuron[order], dtype=torch.long)
        self.value = torch.as_tensor(value[order], dtype=torch.float32)
        lookup_size = max(self.batch_size, int(batch.max()) + 1 if len(batch) else 0)
        # entries are sorted by batch row: row r owns entries starts[r] … starts[r] + counts[r] − 1
        self.counts = torch.bincount(self.batch, minlength=lookup_size)
        self.starts = torch.cumsum(self.counts, 0) - self.counts

    @classmethod
    def of(cls, targets: Any) -> "TargetActivation":
        """Ours from ours, connectome_interpreter's ``TargetActivation`` (its ``targets_df`` and
        ``batch_size``), a ``{layer: {neuron: value}}`` dict or a DataFrame."""
        if isinstance(targets, cls):
            return targets
        if hasattr(targets, "targets_df") and hasattr(targets, "batch_size"):  # connectome_interpreter's dataclass
            return cls(targets.targets_df, batch_size=int(targets.batch_size))
        if isinstance(targets, (pd.DataFrame, Mapping)):
            return cls(targets)
        raise TypeError(f"targets: expected a TargetActivation (ours or connectome_interpreter's), a dict or a DataFrame, got {type(targets).__name__}")

    def to(self, device: torch.device | str) -> "TargetActivation":
        for name in ("batch", "layer", "neuron", "value", "counts", "starts"):
            setattr(self, name, getattr(self, name).to(device))
        return self

    def frame(self) -> pd.DataFrame:
        """The targets as a DataFrame (columns batch, layer, neuron, value)."""
        return pd.DataFrame({k: getattr(self, k).cpu().numpy() for k in ("batch", "layer", "neuron", "value")})

    def select(self, n_rows: int, rows: Tensor | None = None) -> tuple[Tensor, Tensor, Tensor, Tensor]:
        """Target entries of ``n_rows`` activation rows, as aligned (local row, layer, neuron, value)
        tensors for :func:`target_loss`. Activation row ``i`` is scored against the targets of batch
        row ``rows[i]`` (default ``i``); ``rows`` may repeat (several inputs for one target set)."""
        if not self.per_row:
            k = len(self.value)
            local = torch.arange(n_rows, device=self.value.device).repeat_interleave(k)
            return local, self.layer.repeat(n_rows), self.neuron.repeat(n_rows), self.value.repeat(n_rows)
        if rows is None:
            rows = torch.arange(n_rows, device=self.batch.device)
        rows = rows.to(self.batch.device)
        counts = self.counts[rows]
        local = torch.arange(n_rows, device=rows.device).repeat_interleave(counts)
        offset = torch.arange(len(local), device=rows.device) - (torch.cumsum(counts, 0) - counts).repeat_interleave(counts)
        entry = self.starts[rows].repeat_interleave(counts) + offset
        return local, self.layer[entry], self.neuron[entry], self.value[entry]

    def loss(self, activations: Tensor, rows: Tensor | None = None) -> Tensor:
        """``activations``: B×n×L of the global rows ``rows`` (default ``0..B-1``) -> B mean squared
        errors (0 for a row without targets)."""
        local, layer, neuron, value = self.select(activations.shape[0], rows)
        return target_loss(activations, local, layer, neuron, value)

    def __repr__(self) -> str:
        return f"TargetActivation(n_targets={len(self.value)}, batch_size={self.batch_size}, per_row={self.per_row})"


# ----------------------------------------------------------------------------- analysis


def saliency(
    model: MultilayeredNetwork,
    inputs: Tensor,
    neurons_of_interest: Mapping[int, Sequence[int]],
    method: str = "vanilla",
    normalize: bool = False,
) -> Tensor:
    """Gradient of each row's summed activations ``{layer: [neurons]}`` with respect to its input.

    ``inputs``: B×S×L (or S×L). ``method``: ``"vanilla"`` (the gradient) or ``"input_x_gradient"``
    (input × gradient). ``normalize``: divide each row by its largest ``|value|`` (rows of zeros stay
    zero; connectome_interpreter divided by the largest signed value). Returns the input's shape.
    """
    if method not in ("vanilla", "input_x_gradient"):
        raise ValueError(f"unknown saliency method {method!r}; use 'vanilla' or 'input_x_gradient'")
    x = inputs.detach().clone().requires_grad_(True)
    activations = model(x)
    single = activations.dim() == 2
    if single:
        activations = activations.unsqueeze(0)
    layers = [int(layer) for layer, ids in neurons_of_interest.items() for _ in ids]
    neurons = [int(i) for ids in neurons_of_interest.values() for i in ids]
    if not neurons:
        return torch.zeros_like(x.detach())
    signal = activations[:, torch.tensor(neurons, dtype=torch.long, device=x.device), torch.tensor(layers, dtype=torch.long, device=x.device)]
    # rows are independent, so the gradient of the batch sum is every row's own gradient
    (grad,) = torch.autograd.grad(signal.sum(), x)
    maps = grad if method == "vanilla" else x.detach() * grad
    if normalize:
        flat = maps.reshape(1 if single else maps.shape[0], -1)
        scale = flat.abs().amax(dim=1, keepdim=True)
        flat = flat / torch.where(scale > 0, scale, torch.ones_like(scale))
        maps = flat.reshape(maps.shape)
    return maps


def activation_table(
    activations: Tensor | np.ndarray,
    idx_to_group: Mapping[int, Hashable] | Sequence[Hashable] | None = None,
    neuron_ids: Sequence[int] | np.ndarray | None = None,
) -> pd.DataFrame:
    """Tidy long table of ``activations`` (B×n×L, or n×L as one row): columns ``batch``, ``neuron``,
    ``layer``, ``activation`` and, with ``idx_to_group``, ``group``; one line per (row, neuron, layer),
    ordered by row, then neuron (in ``neuron_ids`` order, default all), then layer."""
    values = activations.detach().cpu().numpy() if isinstance(activations, Tensor) else np.asarray(activations)
    if values.ndim == 2:
        values = values[None]
    if values.ndim != 3:
        raise ValueError(f"activations must be B×n×L or n×L, got shape {values.shape}")
    n_rows, n, n_layers = values.shape
    ids = np.arange(n) if neuron_ids is None else np.asarray(neuron_ids, dtype=np.int64).reshape(-1)
    chosen = values[:, ids, :]
    table = pd.DataFrame({
        "batch": np.repeat(np.arange(n_rows), len(ids) * n_layers),
        "neuron": np.tile(np.repeat(ids, n_layers), n_rows),
        "layer": np.tile(np.arange(n_layers), n_rows * len(ids)),
        "activation": chosen.reshape(-1),
    })
    if idx_to_group is not None:
        lookup = idx_to_group if isinstance(idx_to_group, Mapping) else dict(enumerate(idx_to_group))
        group_of_id = [lookup[int(i)] for i in ids]
        table["group"] = np.tile(np.repeat(np.asarray(group_of_id, dtype=object), n_layers), n_rows)
    return table


# ----------------------------------------------------------------------------- fitting


def train_model(
    model: MultilayeredNetwork,
    inputs: Tensor,
    targets: pd.DataFrame,
    epochs: int = 100,
    lr: float = 0.01,
    val_fraction: float = 0.2,
    seed: int = 0,
    param_change_penalty: float = 0.01,
    loss: str = "l1",
    train_slopes: bool = True,
    train_biases: bool = True,
    train_divisive_strength: bool = True,
) -> tuple[MultilayeredNetwork, pd.DataFrame]:
    """Fit the per-group slopes, biases and divisive strengths to target activations (full-batch Adam).

    ``inputs``: N×S×L. ``targets``: columns ``batch`` (row of ``inputs``), ``layer``, ``neuron``
    (or ``neuron_idx``), ``value``. The rows are split once, by ``torch.Generator().manual_seed(seed)``,
    into ``round(N·val_fraction)`` validation rows (at least 1 when ``val_fraction > 0`` and N ≥ 2) and
    training rows. Objective: mean over training rows of the row's mean error to its targets (``loss``:
    ``"l1"`` absolute, connectome_interpreter's; ``"mse"`` squared) + ``param_change_penalty`` × the L1
    norm of every trained parameter's change from its initial value.

    Returns the model (trained in place; ``requires_grad`` of its parameters restored) and a history
    DataFrame with one line per epoch 0..epochs — the parameters after that many updates: ``epoch``,
    ``train_loss`` and ``val_loss`` (target errors only, NaN without validation rows) and ``penalty``.
    """
    if loss not in ("l1", "mse"):
        raise ValueError(f"loss must be 'l1' or 'mse', got {loss!r}")
    p = 1.0 if loss == "l1" else 2.0
    n = inputs.shape[0]
    device = model.weights.device
    inputs = inputs.detach().to(device=device, dtype=model.slope.dtype)
    n_val = 0 if val_fraction <= 0 or n < 2 else min(n - 1, max(1, round(n * val_fraction)))
    order = torch.randperm(n, generator=torch.Generator().manual_seed(seed))
    val_rows, train_rows = order[:n_val].sort().values, order[n_val:].sort().values
    target = TargetActivation(targets, batch_size=n)
    if not target.per_row:
        raise ValueError("targets need a 'batch' column naming the input row of each target")
    train_targets = target.select(len(train_rows), train_rows)
    val_targets = target.select(len(val_rows), val_rows) if n_val else None
    train_x, val_x = inputs[train_rows.to(device)], inputs[val_rows.to(device)]

    def error(x: Tensor, selected: tuple[Tensor, Tensor, Tensor, Tensor]) -> Tensor:
        return target_loss(model(x), *selected, p=p).mean()

    chosen = [(model.slope, train_slopes), (model.raw_biases, train_biases), (model.divisive_strength, train_divisive_strength)]
    trained = [param for param, flag in chosen if param is not None and flag]
    previous = [(param, param.requires_grad) for param, _ in chosen if param is not None]
    for param, flag in chosen:
        if param is not None:
            param.requires_grad_(flag)
    initial = [param.detach().clone() for param in trained]
    optimizer = torch.optim.Adam(trained, lr=lr)
    history = []
    try:
        for epoch in range(epochs + 1):
            last = epoch == epochs or not trained
            with torch.set_grad_enabled(not last):
                train_error = error(train_x, train_targets)
                penalty = sum((param - start).abs().sum() for param, start in zip(trained, initial)) if trained else train_error.new_zeros(())
                objective = train_error + param_change_penalty * penalty
            with torch.no_grad():
                val_error = error(val_x, val_targets).item() if val_targets is not None else math.nan
            history.append({"epoch": epoch, "train_loss": train_error.item(), "val_loss": val_error, "penalty": float(penalty.detach())})
            if last:
                break
            optimizer.zero_grad(set_to_none=True)
            objective.backward()
            optimizer.step()
    finally:
        for param, flag in previous:
            param.requires_grad_(flag)
            param.grad = None
    return model, pd.DataFrame(history)


# ----------------------------------------------------------------------------- synthetic connectomes


class Connectome(NamedTuple):
    """``weights``: n×n scipy CSR (post rows, pre columns); ``sensory_indices``: sorted int array;
    ``idx_to_group``: neuron index -> group name; ``inhibitory_groups``: groups with negative outputs."""

    weights: sp.csr_matrix
    sensory_indices: np.ndarray
    idx_to_group: dict[int, str]
    inhibitory_groups: list[str]


def random_connectome(
    n_neurons: int,
    n_synapses: int,
    n_sensory: int,
    seed: int = 0,
    n_groups: int = 20,
    n_sensory_groups: int = 4,
    inhibitory_fraction: float = 0.4,
    inhibitory_gain: float = 1.5,
    dtype: type = np.float32,
) -> Connectome:
    """A synthetic connectome for tests, demos and benchmarks (deterministic per ``seed``).

    ``n_sensory`` random neurons are sensory (groups ``sensory_0..``, excitatory, no incoming synapses:
    they carry the input). The others fall into ``n_groups`` groups ``type_0..``; a fraction
    ``inhibitory_fraction`` of those groups is inhibitory (Dale's law: all of a neuron's outgoing
    weights share its group's sign). ``n_synapses`` distinct (post, pre) pairs, post never sensory, with
    log-normal magnitudes, inhibitory ones × ``inhibitory_gain``; each post neuron's row is then
    normalised to ``Σ|w| = 1`` (an input-proportion matrix, like connectome_interpreter's ``inprop``), so
    ``|W @ a| <= 1`` for activations in [0, 1]. With the defaults, uniform [0, 1] input and slope 5,
    the mean activation stays at 0.2-0.3 over 5 layers (about 70 % of neurons active): neither
    saturating (0.85 with 25 % inhibitory groups at gain 1) nor dying out.
    """
    rng = np.random.default_rng(seed)
    if not 0 < n_sensory < n_neurons:
        raise ValueError("need 0 < n_sensory < n_neurons")
    n_post = n_neurons - n_sensory
    if n_synapses > n_post * n_neurons:
        raise ValueError(f"at most {n_post * n_neurons} distinct synapses fit")
    sensory = np.sort(rng.choice(n_neurons, n_sensory, replace=False))
    is_sensory = np.zeros(n_neurons, dtype=bool)
    is_sensory[sensory] = True
    posts = np.flatnonzero(~is_sensory)

    group_number = np.empty(n_neurons, dtype=np.int64)
    group_number[sensory] = rng.integers(0, n_sensory_groups, n_sensory)
    group_number[posts] = rng.integers(0, n_groups, n_post)
    inhibitory = np.sort(rng.choice(n_groups, int(round(inhibitory_fraction * n_groups)), replace=False))
    names = np.where(is_sensory, "sensory_", "type_").astype(object) + group_number.astype(str).astype(object)
    sign = np.where(~is_sensory & np.isin(group_number, inhibitory), -1.0, 1.0)

    # distinct pairs: oversample with replacement, deduplicate, keep a random subset of the right size
    chosen = np.zeros(0, dtype=np.int64)
    while len(chosen) < n_synapses:
        draw = rng.integers(0, n_post * n_neurons, int(1.2 * (n_synapses - len(chosen))) + 16)
        chosen = np.unique(np.concatenate([chosen, draw]))
    chosen = rng.permutation(chosen)[:n_synapses]
    post, pre = posts[chosen // n_neurons], chosen % n_neurons
    weight = np.where(sign[pre] < 0, -inhibitory_gain, 1.0) * rng.lognormal(0.0, 1.0, n_synapses)
    row_sum = np.bincount(post, weights=np.abs(weight), minlength=n_neurons)
    weight = weight / row_sum[post]
    matrix = sp.csr_matrix((weight.astype(dtype), (post, pre)), shape=(n_neurons, n_neurons))
    return Connectome(
        weights=matrix,
        sensory_indices=sensory,
        idx_to_group={i: str(g) for i, g in enumerate(names)},
        inhibitory_groups=[f"type_{g}" for g in inhibitory],
    )


# --------------------------------------------------------------------------- files (pipeline members)


def save_connectome(connectome: Connectome, weights_path: str, network_path: str) -> None:
    """Write a connectome as a scipy ``.npz`` weight matrix and a JSON of sensory indices and groups."""
    import json

    sp.save_npz(weights_path, connectome.weights.tocsr())
    with open(network_path, "w") as handle:
        json.dump({
            "sensory_indices": [int(i) for i in connectome.sensory_indices],
            "groups": [str(connectome.idx_to_group[i]) for i in range(connectome.weights.shape[0])],
            "inhibitory_groups": list(connectome.inhibitory_groups),
        }, handle)


def load_network(
    weights: str,
    network: str | None = None,
    num_layers: int = 5,
    sensory_indices: str | None = None,
    groups: str | None = None,
    **kwargs: Any,
) -> MultilayeredNetwork:
    """Pipeline builder: a ``MultilayeredNetwork`` from a scipy ``.npz`` weight matrix (post rows, pre
    columns) plus either ``network`` — a JSON with ``sensory_indices`` and per-neuron ``groups`` — or
    ``sensory_indices`` (a CSV with column ``neuron``, or ``.npy``/``.txt`` of indices) and an optional
    ``groups`` table (CSV or Parquet with columns ``neuron, group``). ``kwargs`` go to the network
    (``threshold``, ``tanh_steepness``, ``slope_dict``, ``divisive_normalization``, …). The model's
    ``neuron_groups`` names each neuron's group (for activation tables)."""
    import json

    try:
        matrix = sp.load_npz(weights)
    except (OSError, ValueError) as error:
        raise ValueError(f"cannot read the weight matrix {weights!r} (a scipy.sparse .npz): {error}") from error
    if network is not None:
        with open(network) as handle:
            description = json.load(handle)
        sensory, names = description["sensory_indices"], description.get("groups")
    elif sensory_indices is not None:
        sensory = _read_indices(sensory_indices)
        names = None
        if groups is not None:
            table = pd.read_parquet(groups) if str(groups).endswith(".parquet") else pd.read_csv(groups)
            if not {"neuron", "group"} <= set(table.columns):
                raise ValueError(f"the group table {groups!r} needs columns neuron, group")
            by_neuron = dict(zip(table["neuron"].astype(int), table["group"].astype(str)))
            names = [by_neuron.get(i, "ungrouped") for i in range(matrix.shape[0])]
    else:
        raise ValueError("give either network (JSON) or sensory_indices (+ optional groups)")
    model = MultilayeredNetwork(matrix, sensory, num_layers=num_layers, idx_to_group=names, **kwargs)
    model.neuron_groups = list(names) if names is not None else None
    return model


def _read_indices(path: str) -> list[int]:
    if str(path).endswith(".npy"):
        return [int(i) for i in np.load(path)]
    if str(path).endswith(".csv"):
        table = pd.read_csv(path)
        if "neuron" not in table.columns:
            raise ValueError(f"the sensory table {path!r} needs a column neuron")
        return [int(i) for i in table["neuron"]]
    return [int(i) for i in np.loadtxt(path, dtype=np.int64, ndmin=1)]
