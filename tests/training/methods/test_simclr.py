"""SimCLR's step and registration: NT-Xent over the projections of two views, its options wired into its parts."""

from pathlib import Path

import pytest
import torch
from PIL import Image

from training.backbones import build_backbone
from training.losses import nt_xent
from training.methods.simclr import SimCLRConfig, SimCLRMethod, SimCLRModel, build


def _views(b: int = 6) -> tuple[torch.Tensor, torch.Tensor]:
    g = torch.Generator().manual_seed(0)
    return torch.randn(b, 3, 16, 16, generator=g), torch.randn(b, 3, 16, 16, generator=g)


@pytest.mark.parametrize("joint", [True, False])
def test_the_loss_is_nt_xent_of_the_two_views_projections(joint):
    torch.manual_seed(0)
    model = SimCLRModel(build_backbone({"name": "small-cnn", "width": 4, "depth": 2}), 16, 8).eval()
    view1, view2 = _views()
    with torch.no_grad():
        got = SimCLRMethod(model, temperature=0.3, joint_views=joint).training_step([view1, view2])["loss"]
        expected = nt_xent(model(view1), model(view2), 0.3)
    # in eval mode batch norm uses its running statistics: one pass over both views or one per view agree
    assert got.item() == pytest.approx(expected.item(), rel=1e-5)


def test_build_follows_the_options():
    cfg = SimCLRConfig(data=Path("x"), out=Path("x.safetensors"), backbone={"name": "small-cnn", "width": 4,
                       "depth": 1}, image_size=16, temperature=0.7, proj_hidden=12, proj_dim=6, separate_views=True,
                       batch_augment=False)
    task = build(cfg)
    assert task.step.temperature == 0.7 and task.step.joint_views is False and task.step.model is task.model
    assert task.model.head[-1].out_features == 6 and task.model.head[0].out_features == 12
    assert task.batched is False and task.summary == {"temperature": 0.7}
    views = task.transform(Image.new("RGB", (20, 20), "orange"))
    assert len(views) == 2 and views[0].shape == (3, 16, 16)
