"""NT-Xent and MoCo's InfoNCE against naive references written with explicit loops over anchors."""

import math

import pytest
import torch

from training.losses import gather_with_grad, info_nce_with_queue, nt_xent


def naive_nt_xent(z1, z2, temperature):
    """SimCLR's loss, term by term: 2N anchors, each with one positive and 2N - 2 negatives."""
    z = torch.cat([z1, z2]).double()
    z = z / z.norm(dim=1, keepdim=True)
    n2 = len(z)
    n = n2 // 2
    total = 0.0
    for k in range(n2):
        positive = (k + n) % n2
        numerator = math.exp(float(z[k] @ z[positive]) / temperature)
        denominator = sum(math.exp(float(z[k] @ z[j]) / temperature) for j in range(n2) if j != k)
        total += -math.log(numerator / denominator)
    return total / n2


@pytest.mark.parametrize("batch", [1, 2, 7])
@pytest.mark.parametrize("dim", [2, 16])
@pytest.mark.parametrize("temperature", [0.07, 0.5, 1.0])
def test_nt_xent_matches_the_naive_loop(batch, dim, temperature):
    g = torch.Generator().manual_seed(batch * 100 + dim)
    z1, z2 = torch.randn(batch, dim, generator=g), torch.randn(batch, dim, generator=g)
    assert nt_xent(z1, z2, temperature).item() == pytest.approx(naive_nt_xent(z1, z2, temperature), rel=1e-5)


def test_nt_xent_is_symmetric_in_the_views_and_ignores_scale():
    g = torch.Generator().manual_seed(0)
    z1, z2 = torch.randn(5, 8, generator=g), torch.randn(5, 8, generator=g)
    assert nt_xent(z1, z2).item() == pytest.approx(nt_xent(z2, z1).item(), rel=1e-6)
    assert nt_xent(3 * z1, 0.5 * z2).item() == pytest.approx(nt_xent(z1, z2).item(), rel=1e-5)


def test_nt_xent_rewards_aligned_views():
    g = torch.Generator().manual_seed(1)
    z = torch.randn(6, 32, generator=g)
    aligned = nt_xent(z, z + 0.01 * torch.randn(6, 32, generator=g), 0.1)
    unrelated = nt_xent(z, torch.randn(6, 32, generator=g), 0.1)
    assert aligned < unrelated
    # B = 1: each view's only other view is its positive, so every anchor scores -log(1) = 0
    one = nt_xent(torch.tensor([[1.0, 0.0]]), torch.tensor([[0.0, 1.0]]), 1.0)
    assert one.item() == pytest.approx(0.0, abs=1e-6)
    # B = 2 by hand: anchor a=(1,0) has positive (1,0) (sim 1) and negatives (0,1), (0,1) (sim 0), t = 1:
    # loss = -log(e / (e + 2)) for all four anchors
    a, b = torch.tensor([[1.0, 0.0], [0.0, 1.0]]), torch.tensor([[1.0, 0.0], [0.0, 1.0]])
    assert nt_xent(a, b, 1.0).item() == pytest.approx(-math.log(math.e / (math.e + 2)), rel=1e-6)


def test_nt_xent_gradients_match_the_naive_loop():
    g = torch.Generator().manual_seed(2)
    z1 = torch.randn(3, 4, generator=g, dtype=torch.float64, requires_grad=True)
    z2 = torch.randn(3, 4, generator=g, dtype=torch.float64, requires_grad=True)
    nt_xent(z1.float(), z2.float(), 0.3).backward()
    fast = (z1.grad.clone(), z2.grad.clone())
    z1.grad = z2.grad = None

    # the naive loop again, but in autograd-friendly tensor ops
    z = torch.nn.functional.normalize(torch.cat([z1, z2]), dim=1)
    terms = []
    for k in range(6):
        others = torch.stack([z[k] @ z[j] / 0.3 for j in range(6) if j != k])
        terms.append(-(z[k] @ z[(k + 3) % 6] / 0.3) + torch.logsumexp(others, 0))
    torch.stack(terms).mean().backward()
    torch.testing.assert_close(fast[0].double(), z1.grad, rtol=1e-4, atol=1e-6)
    torch.testing.assert_close(fast[1].double(), z2.grad, rtol=1e-4, atol=1e-6)


def test_nt_xent_refuses_mismatched_views_and_missing_process_group():
    with pytest.raises(ValueError, match=r"\(B, d\)"):
        nt_xent(torch.randn(3, 4), torch.randn(2, 4))
    with pytest.raises(RuntimeError, match="no torch.distributed process group"):
        gather_with_grad(torch.randn(2, 4), world_size=2)


@pytest.mark.parametrize("temperature", [0.07, 0.2, 1.0])
def test_info_nce_with_queue_matches_the_naive_loop(temperature):
    g = torch.Generator().manual_seed(3)
    q, k, queue = torch.randn(4, 8, generator=g), torch.randn(4, 8, generator=g), torch.randn(10, 8, generator=g)
    unit = lambda x: x.double() / x.double().norm(dim=-1, keepdim=True)  # noqa: E731
    expected = 0.0
    for i in range(4):
        pos = math.exp(float(unit(q[i]) @ unit(k[i])) / temperature)
        neg = sum(math.exp(float(unit(q[i]) @ unit(queue[j])) / temperature) for j in range(10))
        expected += -math.log(pos / (pos + neg)) / 4
    assert info_nce_with_queue(q, k, queue, temperature).item() == pytest.approx(expected, rel=1e-5)


def naive_supcon(z, groups, temperature):
    """SupCon's L_out term by term: each view's positives are the other views of its group."""
    z = torch.nn.functional.normalize(z.double(), dim=1)
    n, total = len(z), 0.0
    for k in range(n):
        denominator = sum(math.exp(float(z[k] @ z[j]) / temperature) for j in range(n) if j != k)
        positives = [p for p in range(n) if p != k and groups[p] == groups[k]]
        log_probs = [math.log(math.exp(float(z[k] @ z[p]) / temperature) / denominator) for p in positives]
        total += -sum(log_probs) / len(positives)
    return total / n


@pytest.mark.parametrize("groups", [[0, 1, 2, 0, 1, 2], [0, 0, 1, 1, 0, 0, 1, 1], [3, 3, 3, 5, 5, 3]])
def test_supcon_matches_the_naive_loop(groups):
    from training.losses import supcon

    g = torch.Generator().manual_seed(len(groups))
    z = torch.randn(len(groups), 8, generator=g)
    got = supcon(z, torch.tensor(groups), temperature=0.2).item()
    assert got == pytest.approx(naive_supcon(z, groups, 0.2), rel=1e-5)


def test_supcon_with_only_the_two_views_as_positives_is_nt_xent():
    from training.losses import supcon

    g = torch.Generator().manual_seed(3)
    z1, z2 = torch.randn(6, 8, generator=g), torch.randn(6, 8, generator=g)
    groups = torch.arange(6).repeat(2)
    assert supcon(torch.cat([z1, z2]), groups, 0.5).item() == pytest.approx(nt_xent(z1, z2, 0.5).item(), rel=1e-5)


def test_supcon_refuses_a_view_without_a_positive():
    from training.losses import supcon

    with pytest.raises(ValueError, match="positive"):
        supcon(torch.randn(3, 4), torch.tensor([0, 0, 1]))


def test_multi_positive_clip_with_distinct_groups_is_open_clips_loss():
    import open_clip

    from training.losses import multi_positive_clip

    g = torch.Generator().manual_seed(0)
    img = torch.nn.functional.normalize(torch.randn(7, 16, generator=g), dim=1)
    txt = torch.nn.functional.normalize(torch.randn(7, 16, generator=g), dim=1)
    scale = torch.tensor(14.0)
    groups = torch.arange(7)
    expected = open_clip.ClipLoss()(img, txt, scale).item()
    assert multi_positive_clip(img, txt, scale, groups, groups).item() == pytest.approx(expected, rel=1e-5)


def test_multi_positive_clip_spreads_the_target_over_the_group():
    """Two images with one caption: each image's target is uniform over the caption's two copies, and a
    caption's over both images; written out with explicit log-softmax sums."""
    from training.losses import multi_positive_clip

    g = torch.Generator().manual_seed(1)
    img = torch.nn.functional.normalize(torch.randn(4, 8, generator=g), dim=1)
    txt = torch.nn.functional.normalize(torch.randn(4, 8, generator=g), dim=1)
    groups = torch.tensor([0, 0, 1, 2])
    scale = torch.tensor(5.0)
    logits = scale * img @ txt.T
    pos = groups[:, None] == groups[None, :]
    i2t = -torch.stack([torch.log_softmax(logits[i], 0)[pos[i]].mean() for i in range(4)]).mean()
    t2i = -torch.stack([torch.log_softmax(logits.T[j], 0)[pos[j]].mean() for j in range(4)]).mean()
    got = multi_positive_clip(img, txt, scale, groups, groups).item()
    assert got == pytest.approx(((i2t + t2i) / 2).item(), rel=1e-5)
