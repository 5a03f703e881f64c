"""Ensembles: member checks before any job, assembly (load weights-only, probe, write a manifest with
checksums and the ensemble's identity), and loading for jobs.

An ensemble has two member groups (``members`` for generation, ``validation_members`` held out), each
assembled into its own manifest, so a change of the held-out members reruns scoring, never generation.
"""

from __future__ import annotations

from collections.abc import Mapping
from pathlib import Path
from typing import Any

import torch
from torch import nn

from ..config import check_arguments, check_numbers_are_numbers, import_object
from ..errors import MEIConfigError
from ..files import read_json, write_json
from ..modality import Modality
from ..objectives.base import row_forward_kwargs
from .ground_truth import ground_truth_kind
from ..hashing import canonical_json, sha256_files, sha256_text, source_hashes
from ..models.ensemble import EnsembleModel
from .paths import MEMBER_GROUPS

#: what a member may be loaded from; exactly the files a rule must wait for
MEMBER_FILE_KEYS = ("checkpoint", "torchscript", "files")


def load_member(member: Mapping[str, Any], key: str, base: Path = Path(".")) -> nn.Module:
    """A member from a TorchScript file, or a ``state_dict`` checkpoint + builder import path + kwargs.

    Checkpoints are loaded with ``weights_only=True``: a checkpoint cannot run code on load. A
    Lightning checkpoint (a ``state_dict`` beside OmegaConf ``hyper_parameters``) loads too: its
    ``state_dict`` is taken and ``state_dict_prefix`` (e.g. ``model.``) stripped from its keys.
    Every failure, in user code too, is reported with the member's key and file.
    """
    if "torchscript" in member:
        path = base / member["torchscript"]
        try:
            model = torch.jit.load(str(path), map_location="cpu")
        except Exception as error:
            raise MEIConfigError(f"{key}.torchscript: cannot load {str(path)!r}: {error}") from error
    else:
        builder = import_object(member["builder"], f"{key}.builder")
        kwargs = dict(member.get("builder_kwargs") or {})
        check_arguments(builder, kwargs, f"{key}.builder_kwargs")
        try:
            model = builder(**kwargs)
        except MEIConfigError:
            raise
        except Exception as error:  # the lab's own code: say which member and builder
            raise MEIConfigError(f"{key}.builder: {member['builder']} failed: {type(error).__name__}: {error}") from error
        if not isinstance(model, nn.Module):
            raise MEIConfigError(f"{key}.builder: {member['builder']} returned a {type(model).__name__}, not a torch.nn.Module")
        if "checkpoint" in member:
            path = base / member["checkpoint"]
            state = _state_dict(path, member.get("state_dict_prefix"), f"{key}.checkpoint")
            try:
                model.load_state_dict(state)
            except Exception as error:
                raise MEIConfigError(f"{key}.checkpoint: {str(path)!r} does not fit {member['builder']}: {error}{_prefix_hint(model, state, key)}") from error
    model.eval()
    for parameter in model.parameters():
        parameter.requires_grad_(False)
    return model


def _state_dict(path: Path, prefix: str | None, key: str) -> Mapping[str, Any]:
    try:
        with torch.serialization.safe_globals(_lightning_safe_globals()):
            state = torch.load(path, map_location="cpu", weights_only=True)
    except FileNotFoundError:
        raise MEIConfigError(f"{key}: file {str(path)!r} not found (resolved to {str(path.resolve())!r})") from None
    except Exception as error:  # unpickling refused or corrupt file: say which file
        if "omegaconf" in str(error) and not _lightning_safe_globals():
            # torch's own advice (add_safe_globals) cannot work without the package: say what does
            raise MEIConfigError(f"{key}: {str(path)!r} is a Lightning checkpoint whose hyper_parameters are OmegaConf objects, "
                                 "and omegaconf is not installed: `pip install omegaconf` to load it (weights-only, as plain data)") from None
        raise MEIConfigError(f"{key}: cannot load {str(path)!r} weights-only: {error}") from error
    if isinstance(state, Mapping) and isinstance(state.get("state_dict"), Mapping):
        state = state["state_dict"]  # Lightning (and many training scripts) nest the weights
    if not isinstance(state, Mapping) or not all(isinstance(k, str) for k in state):
        raise MEIConfigError(f"{key}: {str(path)!r} holds a {type(state).__name__}, not a state_dict (a mapping of parameter names to tensors)")
    if prefix:
        state = {k[len(prefix):] if k.startswith(prefix) else k: v for k, v in state.items()}
    return state


def _prefix_hint(model: nn.Module, state: Mapping[str, Any], key: str) -> str:
    """When the checkpoint's keys are the model's behind a common prefix (a LightningModule's
    ``model.``), say which ``state_dict_prefix`` would load it."""
    wanted = set(model.state_dict())
    for name in state:
        for end in range(len(name)):
            if name[end] == "." and name[end + 1 :] in wanted:
                prefix = name[: end + 1]
                if {k[len(prefix):] for k in state if k.startswith(prefix)} >= wanted:
                    return f" (the keys carry the prefix {prefix!r}: set {key}.state_dict_prefix: {prefix!r})"
    return ""


def _lightning_safe_globals() -> list[Any]:
    """OmegaConf's containers, which Lightning pickles as ``hyper_parameters``: plain data, allowed
    when OmegaConf is installed (without it such a checkpoint could not be unpickled at all)."""
    try:
        import omegaconf
        from omegaconf import base, nodes
    except ImportError:
        return []
    import collections
    import typing

    node_types = [getattr(nodes, name) for name in ("AnyNode", "StringNode", "IntegerNode", "FloatNode", "BooleanNode", "EnumNode", "PathNode", "BytesNode") if hasattr(nodes, name)]
    return [omegaconf.DictConfig, omegaconf.ListConfig, base.ContainerMetadata, base.Metadata, *node_types,
            typing.Any, dict, list, int, float, str, bool, collections.defaultdict]


def member_files(member: Mapping[str, Any]) -> list[str]:
    """The files a member is loaded from: its checkpoint or TorchScript file, plus declared data files."""
    files = [member[k] for k in ("checkpoint", "torchscript") if k in member]
    return files + list(member.get("files") or [])


def check_ensemble(name: str, ensemble: Mapping[str, Any], base: Path, produced: set[str],
                   input_stats: Mapping[str, Any] | None = None) -> dict[str, dict[str, Any]]:
    """Everything about an ensemble's members that can be checked before any job: files exist (or a
    demo rule makes them), builders import, one dataset. Returns the spec of each member group (what
    its manifest is assembled from, including the source hash of user builder modules, and
    ``input_stats``: the statistics as ``quality.resolve_input_stats`` records them)."""
    for group in MEMBER_GROUPS:
        for i, member in enumerate(ensemble.get(group) or []):
            key = f"ensembles.{name}.{group}[{i}]"
            for field_name in MEMBER_FILE_KEYS:
                paths = member.get(field_name) or []
                for j, path in enumerate([paths] if isinstance(paths, str) else paths):
                    where = field_name if isinstance(paths, str) else f"{field_name}[{j}]"
                    if path not in produced and not (base / path).exists():
                        raise MEIConfigError(f"{key}.{where}: file {path!r} not found (resolved to {str((base / path).resolve())!r})")
            if "builder" in member:
                import_object(member["builder"], f"{key}.builder")
    declared = {m.get("dataset_id", ensemble.get("dataset_id")) for g in MEMBER_GROUPS for m in ensemble.get(g) or []}
    if len(declared) > 1:
        raise MEIConfigError(
            f"ensembles.{name}: members declare different dataset_id values {sorted(map(str, declared))}; mixing datasets is not supported"
        )
    truth = ensemble.get("ground_truth")
    if truth:
        kind = ground_truth_kind(truth["kind"], f"ensembles.{name}.ground_truth.kind")
        if truth["file"] not in produced and not (base / truth["file"]).exists():
            raise MEIConfigError(f"ensembles.{name}.ground_truth.file: file {truth['file']!r} not found (resolved to {str((base / truth['file']).resolve())!r})")
        if hasattr(kind, "check") and (base / truth["file"]).exists():
            kind.check(str(base / truth["file"]), ensemble["input_shape"], ensemble["outputs"], f"ensembles.{name}.ground_truth.file")
    # max_batch travels to the jobs through the manifest, outside the ensemble's identity (ensemble_hash)
    shared = {k: ensemble[k] for k in ("input_shape", "outputs", "dataset_id", "data_key", "max_batch") if k in ensemble}
    if input_stats is not None:
        shared["input_stats"] = dict(input_stats)
    for group in MEMBER_GROUPS:
        for k, v in enumerate(ensemble.get(group) or []):
            check_numbers_are_numbers(v.get("builder_kwargs"), f"ensembles.{name}.{group}[{k}].builder_kwargs")
    specs = {}
    for group in MEMBER_GROUPS:
        members = list(ensemble.get(group) or [])
        specs[group] = {"name": name, "group": group, **shared, group: members, "sources": source_hashes(members)}
    # ground truth is for validation only: it is the validate rule's input (Plan.ground_truths), not
    # part of any member group, so a new truth file reruns validation and nothing before it
    return specs


def probe_members(name: str, ensemble: Mapping[str, Any], base: Path, known: Mapping[str, int], probed: dict[str, int],
                  input_stats: Mapping[str, Any] | None = None) -> None:
    """Load every member whose files exist and check it answers the declared input shape with the
    declared number of outputs, and that ``input_stats`` are plausible for it (``check_stats``), before
    any job. Results are cached by the member's spec, its files' size and modification time, its
    builder's source and the statistics (``known`` → ``probed``), so a dry run loads nothing twice;
    members made by demo rules are checked by their assembly job instead."""
    for group in MEMBER_GROUPS:
        for i, member in enumerate(ensemble.get(group) or []):
            key = f"ensembles.{name}.{group}[{i}]"
            files = member_files(member)
            if not all((base / f).exists() for f in files):
                continue
            stats = [(f, (base / f).stat().st_size, (base / f).stat().st_mtime_ns) for f in files]
            fingerprint = sha256_text(canonical_json({
                "member": member, "input_shape": ensemble["input_shape"], "data_key": ensemble.get("data_key"),
                "files": stats, "sources": source_hashes(member), "input_stats": input_stats,
            }))
            if fingerprint not in known:
                model = load_member(member, key, base)
                outputs = _probe(model, ensemble["input_shape"], key, ensemble.get("data_key"))
                check_stats(model, key, name, ensemble["input_shape"], input_stats, ensemble.get("data_key"))
            else:
                outputs = known[fingerprint]
            if outputs != ensemble["outputs"]:
                raise MEIConfigError(f"{key}: the member has {outputs} outputs but ensembles.{name}.outputs is {ensemble['outputs']}")
            probed[fingerprint] = outputs


def group_files(spec: Mapping[str, Any]) -> list[str]:
    """Files a member group's assembly reads (its rule's inputs), the stimulus sample of
    ``input_stats.from`` among them: a changed sample is assembled (and checked) again. The ground
    truth is not: only validation reads it."""
    sample = (spec.get("input_stats") or {}).get("from")
    return [f for m in spec[spec["group"]] for f in member_files(m)] + ([sample] if sample else [])


def check_stats(model: nn.Module, key: str, name: str, input_shape: list[int], input_stats: Mapping[str, Any] | None,
                data_key: str | None = None) -> None:
    """Refuse or warn (``input_stats.check``) when the stated statistics are implausible for this
    member (the rule: ``quality.stats_check``). Connectome inputs have no stimulus statistics."""
    if not input_stats or len(input_shape) not in (3, 4) or input_stats.get("check") == "off":
        return
    from .quality import judge_stats, stats_check

    stats = {k: input_stats[k] for k in ("mean", "std", "range") if k in input_stats}
    forward = (lambda x: model(x, data_key=data_key)) if data_key is not None else model
    verdict = stats_check(model, input_shape, stats, forward)
    judge_stats([(key, verdict)], input_stats.get("check", "refuse"), f"ensembles.{name}.input_stats")


def _probe(model: nn.Module, input_shape: list[int], key: str, data_key: str | None = None) -> int:
    with torch.no_grad():
        try:
            zeros = torch.zeros(1, *input_shape)
            output = model(zeros, **row_forward_kwargs(data_key))
        except Exception as error:  # a model that rejects the declared shape: say so with the key
            raise MEIConfigError(f"{key}: the member fails on an input of shape {[1, *input_shape]}: {error}") from error
    # connectome models ([S, L] inputs) answer B×N×L: their units are the neurons of dim 1
    return int(output.shape[1] if Modality.of(input_shape, key) is Modality.CONNECTOME else output.shape[-1])


def assemble_ensemble(spec_path: str, manifest_path: str, base: str | Path = ".") -> dict[str, Any]:
    """Load and probe every member of one group, and write its manifest: the members with their file
    checksums and ``ensemble_hash``, the identity of this group's models (results carry it)."""
    base = Path(base)
    spec = read_json(spec_path)
    name, group = spec["name"], spec["group"]
    entries = []
    for i, member in enumerate(spec[group]):
        key = f"ensembles.{name}.{group}[{i}]"
        model = load_member(member, key, base)
        outputs = _probe(model, spec["input_shape"], key, spec.get("data_key"))
        if outputs != spec["outputs"]:
            raise MEIConfigError(f"{key}: the member has {outputs} outputs but ensembles.{name}.outputs is {spec['outputs']}")
        # members made by a demo rule are first seen here: their statistics are judged before any generation job
        check_stats(model, key, name, spec["input_shape"], spec.get("input_stats"), spec.get("data_key"))
        dataset_id = member.get("dataset_id", spec.get("dataset_id"))
        entries.append({**member, "sha256": sha256_files(base, member_files(member)), "dataset_id": dataset_id})
    manifest = {k: v for k, v in spec.items() if k != group}
    manifest[group] = entries
    identity = {k: manifest.get(k) for k in ("input_shape", "outputs", "data_key", "sources")} | {"members": entries}
    if manifest.get("input_stats"):
        # the statistics define the baseline responses stored with every MEI; the check mode changes no result
        identity["input_stats"] = {k: v for k, v in manifest["input_stats"].items() if k != "check"}
    manifest["ensemble_hash"] = sha256_text(canonical_json(identity))
    write_json(manifest_path, manifest)
    return manifest


def load_ensemble(manifest: Mapping[str, Any], base: str | Path = ".") -> EnsembleModel | None:
    """The mean ensemble of a group's manifest (``None`` when the group is empty)."""
    group = manifest["group"]
    members = [load_member(m, f"ensembles.{manifest['name']}.{group}[{i}]", Path(base)) for i, m in enumerate(manifest.get(group) or [])]
    if not members:
        return None
    return EnsembleModel(*members).eval()
