import pytest
import torch

from training.backbones import build_backbone, parse_backbone


@pytest.mark.parametrize("spec, dim", [
    ({"name": "small-cnn"}, 128),
    ({"name": "small-cnn", "width": 8, "depth": 2, "norm": "gn"}, 16),
    ({"name": "small-cnn", "width": 4, "depth": 1, "norm": "none"}, 4),
    ({"name": "small-cnn", "width": 4, "depth": 2, "grid": 2}, 8 * 2 * 2),
    ({"name": "resnet18", "small_stem": True}, 512),
    ({"name": "timm:resnet10t"}, 512),
])
def test_backbones_map_images_to_out_dim_features(spec, dim):
    torch.manual_seed(0)
    net = build_backbone(spec).eval()
    assert net.out_dim == dim
    with torch.no_grad():
        assert net(torch.randn(2, 3, 16, 16)).shape == (2, dim)


def test_small_stem_keeps_the_resolution_of_small_images():
    plain, small = build_backbone({"name": "resnet18"}), build_backbone({"name": "resnet18", "small_stem": True})
    assert plain.net.conv1.kernel_size == (7, 7) and plain.net.conv1.stride == (2, 2)
    assert small.net.conv1.kernel_size == (3, 3) and small.net.conv1.stride == (1, 1)
    assert isinstance(small.net.maxpool, torch.nn.Identity)
    seen = {}
    small.net.layer1.register_forward_hook(lambda m, i, o: seen.update(layer1=o.shape))
    with torch.no_grad():
        small.eval()(torch.randn(1, 3, 32, 32))
    assert seen["layer1"][-2:] == (32, 32)  # no downsampling before layer1


def test_the_same_spec_and_seed_build_the_same_network():
    spec = {"name": "small-cnn", "width": 4, "depth": 2}
    torch.manual_seed(3)
    a = build_backbone(spec).state_dict()
    torch.manual_seed(3)
    b = build_backbone(spec).state_dict()
    assert a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a)


def test_command_line_specs():
    assert parse_backbone("resnet18,small_stem=true") == {"name": "resnet18", "small_stem": True}
    assert parse_backbone("small-cnn, width=16, norm=gn") == {"name": "small-cnn", "width": 16, "norm": "gn"}
    assert parse_backbone('{"name": "timm:resnet10t"}') == {"name": "timm:resnet10t"}
    with pytest.raises(ValueError, match="key=value"):
        parse_backbone("small-cnn,wide")


@pytest.mark.parametrize("spec, message", [
    ({"name": "vgg11"}, "unknown backbone"),
    ({"name": "small-cnn", "widht": 3}, "bad options"),
    ({"name": "small-cnn", "norm": "ln"}, "unknown norm"),
    ({"name": "small-cnn", "grid": 0}, "grid must be"),
    ({"name": "timm:no_such_model_xyz"}, "cannot build backbone"),
])
def test_bad_specs_are_refused_clearly(spec, message):
    with pytest.raises(ValueError, match=message):
        build_backbone(spec)


def test_a_grid_keeps_where_things_are():
    """Global pooling sees a dot in the top-left and the same dot in the bottom-right alike; a 2x2 grid does not."""
    torch.manual_seed(0)
    top_left, bottom_right = torch.zeros(1, 3, 16, 16), torch.zeros(1, 3, 16, 16)
    top_left[..., 4, 4] = 1.0  # both dots' 5x5 receptive footprints stay clear of the border
    bottom_right[..., 11, 11] = 1.0
    for grid, differs in ((1, False), (2, True)):
        net = build_backbone({"name": "small-cnn", "width": 4, "depth": 1, "norm": "none", "grid": grid}).eval()
        with torch.no_grad():
            a, b = net(top_left), net(bottom_right)
        assert (not torch.allclose(a, b, atol=1e-6)) == differs
