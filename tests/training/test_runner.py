"""The registry and the one runner: a new method is one module in training/methods, and nothing else changes."""

import sys
import textwrap

import pytest
from PIL import Image

import training.methods
from tests.conftest import SAMPLE
from training.encoder import load_encoder, read_metadata
from training.methods import registered
from training.runner import method_of

# A whole training method in one module: an alignment task (pull an image's two views together,
# no negatives), its option, its step and its encoder, as a new method's author would write it.
ALIGN = '''
from dataclasses import dataclass

import torch.nn.functional as F
from torch import nn

from training import image_only
from training.augment import Views, simclr_transform
from training.backbones import build_backbone
from training.image_only import ImageOnlyConfig, Task, preprocess_for
from training.options import option


class AlignModel(nn.Module):
    def __init__(self, backbone, dim):
        super().__init__()
        self.backbone, self.head = backbone, nn.Linear(backbone.out_dim, dim)

    def forward(self, x):
        return F.normalize(self.head(self.backbone(x)), dim=1)


@dataclass
class AlignStep:
    model: nn.Module

    def training_step(self, batch):
        view1, view2 = batch
        return {"loss": (2 - 2 * (self.model(view1) * self.model(view2)).sum(dim=1)).mean()}


@dataclass
class AlignConfig(ImageOnlyConfig):
    head_dim: int = option(16, "output width of the head")


def build(cfg, dist):
    model = AlignModel(build_backbone(cfg.backbone), cfg.head_dim)
    return Task(model, AlignStep(model), Views(simclr_transform(preprocess_for(cfg), cfg.augmentation)))


METHOD = image_only.method("align", "pull two views of an image together", AlignConfig, build)
'''


@pytest.fixture
def align_module(tmp_path, monkeypatch):
    """training/methods with one more module in it (on the package's path, as a file dropped into the folder)."""
    folder = tmp_path / "more_methods"
    folder.mkdir()
    (folder / "align.py").write_text(textwrap.dedent(ALIGN))
    monkeypatch.setattr(training.methods, "__path__", [*training.methods.__path__, str(folder)])
    registered.cache_clear()
    yield
    sys.modules.pop("training.methods.align", None)
    registered.cache_clear()


def test_the_four_methods_register_themselves():
    methods = registered()
    assert sorted(methods) == ["clip", "moco", "rotnet", "simclr"]
    assert len({m.config for m in methods.values()}) == 4  # one config type each: run() finds the method by it
    cfg = methods["rotnet"].config(data=SAMPLE, out=SAMPLE / "x.safetensors")
    assert method_of(cfg) is methods["rotnet"]
    with pytest.raises(ValueError, match="no training method"):
        method_of(object())


def test_one_module_adds_a_method_to_the_command_line_the_runner_and_the_loader(align_module, tmp_path, capsys):
    from training.__main__ import main

    assert "align" in registered()
    out = tmp_path / "align.safetensors"
    code = main(["align", "--data", str(SAMPLE / "google"), "--out", str(out),
                 "--backbone", "small-cnn,width=4,depth=1", "--image-size", "16", "--batch-size", "8",
                 "--steps", "2", "--workers", "0", "--no-progress", "--head-dim", "4", "--min-scale", "0.5"])
    assert code == 0, capsys.readouterr().err
    meta = read_metadata(out)
    assert meta["kind"] == "align" and meta["run"]["method"] == "align" and meta["run"]["config"]["head_dim"] == 4
    assert meta["run"]["config"]["augment"]["min_scale"] == 0.5  # the shared augmentation flags reach it
    encoder = load_encoder(out)  # an image-only kind the loader never heard of: its backbone
    assert encoder.kind == "align" and not encoder.can_encode_text
    assert encoder.encode_images([Image.open(next((SAMPLE / "google").iterdir()))]).shape == (1, meta["dim"])
