"""openretina users train with Lightning: their checkpoints load weights-only, as members."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch
from omegaconf import DictConfig, OmegaConf

from mei_core import MEIConfigError
from mei_core.demo.v1 import build_demo_cnn
from mei_core.pipeline.ensembles import load_member

KWARGS = {"n_neurons": 4, "in_shape": [1, 12, 12], "channels": 3, "kernel_sizes": [3, 3]}


def lightning_checkpoint(path: Path, model: torch.nn.Module) -> None:
    """What ``Trainer.save_checkpoint`` writes for a LightningModule holding the model as ``self.model``:
    the weights under ``state_dict`` with the attribute's prefix, OmegaConf hyper-parameters, loop state."""
    torch.save({
        "epoch": 7,
        "global_step": 700,
        "pytorch-lightning_version": "2.4.0",
        "state_dict": {f"model.{k}": v for k, v in model.state_dict().items()},
        "hyper_parameters": OmegaConf.create({"model": {"channels": 3, "kernel_sizes": [3, 3]}, "lr": 0.005, "data_keys": ["s1", "s2"]}),
        "optimizer_states": [{"state": {}, "param_groups": [{"lr": 0.005, "params": [0, 1]}]}],
        "lr_schedulers": [],
        "callbacks": {},
    }, path)


def test_a_lightning_checkpoint_loads_weights_only_with_its_prefix_stripped(tmp_path):
    model = build_demo_cnn(init_seed=3, **KWARGS).eval()
    lightning_checkpoint(tmp_path / "epoch=7.ckpt", model)
    assert isinstance(torch.load(tmp_path / "epoch=7.ckpt", weights_only=False)["hyper_parameters"], DictConfig)
    with pytest.raises(Exception, match="Unsupported global"):  # plain weights-only loading refuses it
        torch.load(tmp_path / "epoch=7.ckpt", weights_only=True)
    member = {"checkpoint": "epoch=7.ckpt", "builder": "mei_core.demo.v1.build_demo_cnn", "builder_kwargs": KWARGS, "state_dict_prefix": "model."}
    loaded = load_member(member, "ensembles.e.members[0]", tmp_path)
    x = torch.randn(2, 1, 12, 12, generator=torch.Generator().manual_seed(0))
    with torch.no_grad():
        torch.testing.assert_close(loaded(x), model(x))


def test_without_the_prefix_the_error_names_the_member_and_the_missing_keys(tmp_path):
    lightning_checkpoint(tmp_path / "last.ckpt", build_demo_cnn(init_seed=1, **KWARGS))
    member = {"checkpoint": "last.ckpt", "builder": "mei_core.demo.v1.build_demo_cnn", "builder_kwargs": KWARGS}
    with pytest.raises(MEIConfigError, match=r"(?s)ensembles.e.members\[0\].checkpoint: '.*last.ckpt' does not fit .*Missing key\(s\).*set ensembles.e.members\[0\].state_dict_prefix: 'model.'"):
        load_member(member, "ensembles.e.members[0]", tmp_path)


def test_a_pickled_payload_is_still_refused(tmp_path):
    import os

    torch.save({"state_dict": {}, "payload": os.system}, tmp_path / "evil.ckpt")
    member = {"checkpoint": "evil.ckpt", "builder": "mei_core.demo.v1.build_demo_cnn", "builder_kwargs": KWARGS}
    with pytest.raises(MEIConfigError, match=r"checkpoint: cannot load '.*evil.ckpt' weights-only"):
        load_member(member, "ensembles.e.members[0]", tmp_path)
