"""RotNet's rotated copies and labels agree: label r is the picture turned r * 90 degrees counter-clockwise."""

import pytest
import torch

from training.backbones import build_backbone
from training.methods.rotnet import RotNetMethod, RotNetModel, rotate_batch


def _marked(b: int, size: int = 4) -> torch.Tensor:
    """Images whose only bright pixel is in the top-left corner, image i at value i + 1."""
    x = torch.zeros(b, 3, size, size)
    for i in range(b):
        x[i, :, 0, 0] = i + 1
    return x


def test_labels_name_the_rotation_of_each_copy():
    x = _marked(3)
    rotated, labels = rotate_batch(x)
    assert rotated.shape == (12, 3, 4, 4)
    assert labels.tolist() == [0] * 3 + [1] * 3 + [2] * 3 + [3] * 3
    # counter-clockwise: the top-left corner goes to bottom-left (90), bottom-right (180), top-right (270)
    corner = {0: (0, 0), 1: (3, 0), 2: (3, 3), 3: (0, 3)}
    for row, (image, label) in enumerate(zip(rotated, labels.tolist())):
        i = row % 3
        bright = (image[0] > 0).nonzero().tolist()
        assert bright == [list(corner[label])], (row, label)
        assert image[0][corner[label]].item() == i + 1  # copies keep the order of the batch


def test_rotating_by_the_label_back_recovers_the_original():
    x = torch.randn(2, 3, 5, 5)
    rotated, labels = rotate_batch(x)
    for image, label, original in zip(rotated, labels.tolist(), x.repeat(4, 1, 1, 1)):
        assert torch.equal(torch.rot90(image, -label, dims=(1, 2)), original)


def test_non_square_images_are_refused():
    with pytest.raises(ValueError, match="square"):
        rotate_batch(torch.zeros(1, 3, 4, 6))


def test_training_step_learns_rotations():
    torch.manual_seed(0)
    model = RotNetModel(build_backbone({"name": "small-cnn", "width": 4, "depth": 1}))
    method = RotNetMethod(model)
    x = _marked(4, size=6) + 0.01 * torch.randn(4, 3, 6, 6)
    opt = torch.optim.Adam(model.parameters(), lr=0.05)
    first = None
    for _ in range(40):
        out = method.training_step([x])
        first = first if first is not None else out["loss"].item()
        opt.zero_grad()
        out["loss"].backward()
        opt.step()
    assert out["loss"].item() < 0.5 * first and out["rotation_acc"].item() == 1.0
