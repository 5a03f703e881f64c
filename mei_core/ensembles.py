"""Ensemble assembly: load members weights-only, check they agree, write a manifest with checksums."""

from __future__ import annotations

from collections.abc import Mapping
from pathlib import Path
from typing import Any

import torch
from torch import nn

from .config import check_arguments, import_object
from .errors import MEIConfigError
from .files import read_json, sha256_file, write_json
from .models.ensemble import EnsembleModel

MEMBER_GROUPS = ("members", "validation_members")


def load_member(member: Mapping[str, Any], key: str, base: Path = Path(".")) -> nn.Module:
    """A member from a TorchScript file, or a ``state_dict`` checkpoint + builder import path + kwargs.

    Checkpoints are loaded with ``weights_only=True``: a checkpoint cannot run code on load.
    """
    if "torchscript" in member:
        path = base / member["torchscript"]
        try:
            model = torch.jit.load(str(path), map_location="cpu")
        except (RuntimeError, ValueError, OSError) as error:
            raise MEIConfigError(f"{key}.torchscript: cannot load {str(path)!r}: {error}") from error
    else:
        builder = import_object(member["builder"], f"{key}.builder")
        kwargs = dict(member.get("builder_kwargs") or {})
        check_arguments(builder, kwargs, f"{key}.builder_kwargs")
        try:
            model = builder(**kwargs)
        except (OSError, ValueError, TypeError) as error:  # e.g. a builder reading a missing data file
            raise MEIConfigError(f"{key}.builder: {member['builder']} failed: {type(error).__name__}: {error}") from error
        if "checkpoint" not in member:  # a builder-only member (e.g. a connectome built from its files)
            model.eval()
            for parameter in model.parameters():
                parameter.requires_grad_(False)
            return model
        path = base / member["checkpoint"]
        try:
            state = torch.load(path, map_location="cpu", weights_only=True)
        except FileNotFoundError:
            raise MEIConfigError(f"{key}.checkpoint: file {str(path)!r} not found") from None
        except Exception as error:  # unpickling refused or corrupt file: say which file
            raise MEIConfigError(f"{key}.checkpoint: cannot load {str(path)!r} weights-only: {error}") from error
        if isinstance(state, Mapping) and "state_dict" in state and isinstance(state["state_dict"], Mapping):
            state = state["state_dict"]
        try:
            model.load_state_dict(state)
        except RuntimeError as error:
            raise MEIConfigError(f"{key}.checkpoint: {str(path)!r} does not fit {member['builder']}: {error}") from error
    model.eval()
    for parameter in model.parameters():
        parameter.requires_grad_(False)
    return model


def member_files(member: Mapping[str, Any]) -> list[str]:
    """The files a member is loaded from: its checkpoint or TorchScript file, plus declared data files."""
    files = [member[k] for k in ("checkpoint", "torchscript") if k in member]
    return files + list(member.get("files") or [])


def _sha256_of_files(base: Path, files: list[str]) -> str:
    import hashlib

    digest = hashlib.sha256()
    for file in files:
        digest.update(f"{file}\0{sha256_file(base / file)}\0".encode())
    return digest.hexdigest()


def _probe(model: nn.Module, input_shape: list[int], key: str, data_key: str | None = None) -> int:
    with torch.no_grad():
        try:
            zeros = torch.zeros(1, *input_shape)
            output = model(zeros, data_key=data_key) if data_key is not None else model(zeros)
        except Exception as error:  # a model that rejects the declared shape: say so with the key
            raise MEIConfigError(f"{key}: the member fails on an input of shape {[1, *input_shape]}: {error}") from error
    # connectome models ([S, L] inputs) answer B×N×L: their units are the neurons of dim 1
    return int(output.shape[1] if len(input_shape) == 2 else output.shape[-1])


def assemble_ensemble(spec_path: str, manifest_path: str, base: str | Path = ".") -> dict[str, Any]:
    """Check every member of the ensemble in ``spec_path`` and write its manifest."""
    base = Path(base)
    spec = read_json(spec_path)
    name = spec["name"]
    manifest: dict[str, Any] = {
        "name": name,
        "input_shape": spec["input_shape"],
        "outputs": spec["outputs"],
        "ground_truth": spec.get("ground_truth"),
    }
    dataset_ids = set()
    for group in MEMBER_GROUPS:
        entries = []
        for i, member in enumerate(spec.get(group) or []):
            key = f"ensembles.{name}.{group}[{i}]"
            model = load_member(member, key, base)
            outputs = _probe(model, spec["input_shape"], key, spec.get("data_key"))
            if outputs != spec["outputs"]:
                raise MEIConfigError(f"{key}: the member has {outputs} outputs but ensembles.{name}.outputs is {spec['outputs']}")
            files = member_files(member)
            digest = sha256_file(base / files[0]) if len(files) == 1 else _sha256_of_files(base, files)
            dataset_id = member.get("dataset_id", spec.get("dataset_id"))
            dataset_ids.add(dataset_id)
            entries.append({**member, "sha256": digest, "dataset_id": dataset_id})
        manifest[group] = entries
    if len(dataset_ids) > 1:
        raise MEIConfigError(
            f"ensembles.{name}: members come from different datasets {sorted(map(str, dataset_ids))}; mixing datasets is not supported"
        )
    manifest["dataset_id"] = next(iter(dataset_ids)) if dataset_ids else None
    write_json(manifest_path, manifest)
    return manifest


def load_ensemble(manifest: Mapping[str, Any], group: str = "members", base: str | Path = ".") -> EnsembleModel | None:
    """The mean ensemble of ``group`` from a manifest (``None`` when the group is empty)."""
    members = [load_member(m, f"ensembles.{manifest['name']}.{group}[{i}]", Path(base)) for i, m in enumerate(manifest.get(group) or [])]
    if not members:
        return None
    return EnsembleModel(*members).eval()
