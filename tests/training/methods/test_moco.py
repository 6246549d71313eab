"""MoCo's queue (write pointer, wrap-around) and momentum update, by hand."""

import pytest
import torch

from training.backbones import build_backbone
from training.methods.moco import MoCoMethod, MoCoModel

SPEC = {"name": "small-cnn", "width": 4, "depth": 1, "norm": "bn"}


def _model(queue_size=5, out_dim=2):
    torch.manual_seed(0)
    return MoCoModel(build_backbone(SPEC), hidden_dim=8, out_dim=out_dim, queue_size=queue_size)


def test_enqueue_overwrites_the_oldest_rows_and_wraps_around():
    m = _model(queue_size=5)
    keys = lambda *vals: torch.tensor([[v, -v] for v in vals], dtype=torch.float32)  # noqa: E731
    m.enqueue(keys(1, 2, 3))
    assert int(m.queue_ptr) == 3
    assert m.queue[:3, 0].tolist() == [1, 2, 3]
    m.enqueue(keys(4, 5, 6, 7))  # rows 3, 4, then wraps to 0, 1
    assert int(m.queue_ptr) == 2
    assert m.queue[:, 0].tolist() == [6, 7, 3, 4, 5]
    m.enqueue(keys(8, 9, 10, 11, 12))  # exactly the queue's size: a full lap back to row 2
    assert int(m.queue_ptr) == 2 and m.queue[:, 0].tolist() == [11, 12, 8, 9, 10]
    m.enqueue(keys(*range(20, 27)))  # more keys than rows: the newest 5 (22..26) from row 2 on
    assert int(m.queue_ptr) == 2 and m.queue[:, 0].tolist() == [25, 26, 22, 23, 24]


def test_momentum_update_is_an_exponential_moving_average():
    m = _model()
    q0 = {n: p.detach().clone() for n, p in m.backbone.named_parameters()}
    k0 = {n: p.detach().clone() for n, p in m.key_backbone.named_parameters()}
    assert all(torch.equal(q0[n], k0[n]) for n in q0)  # the key encoder starts as a copy
    with torch.no_grad():
        for p in m.backbone.parameters():
            p.add_(1.0)
        m.backbone.net[1].running_mean.fill_(7.0)
    m.momentum_update(0.9)
    for n, p in m.key_backbone.named_parameters():
        torch.testing.assert_close(p, 0.9 * k0[n] + 0.1 * (q0[n] + 1.0))
    assert torch.equal(m.key_backbone.net[1].running_mean, torch.full((4,), 7.0))  # buffers copied
    m.momentum_update(1.0)  # m = 1: the key encoder does not move
    for n, p in m.key_backbone.named_parameters():
        torch.testing.assert_close(p, 0.9 * k0[n] + 0.1 * (q0[n] + 1.0))


def test_a_step_scores_against_the_old_queue_then_enqueues_its_keys():
    m = _model(queue_size=6, out_dim=3)
    method = MoCoMethod(m, temperature=0.2, momentum=0.5)
    g = torch.Generator().manual_seed(1)
    v1, v2 = torch.randn(4, 3, 8, 8, generator=g), torch.randn(4, 3, 8, 8, generator=g)
    before = m.queue.clone()
    loss = method.training_step([v1, v2])["loss"]
    loss.backward()  # the queue changed after the loss was computed; backward must still work
    assert int(m.queue_ptr) == 4 and torch.equal(m.queue[4:], before[4:])
    from training.losses import info_nce_with_queue

    with torch.no_grad():
        q, k = m(v1, v2)
    assert loss.item() == pytest.approx(info_nce_with_queue(q, k, before, 0.2).item(), rel=1e-5)
    torch.testing.assert_close(m.queue[:4], k)  # the keys of view 2, normalised
    assert all(p.grad is None for p in m.key_backbone.parameters())  # keys carry no gradient
    assert all(p.grad is not None for p in m.backbone.parameters())
    key_before = [p.clone() for p in m.key_head.parameters()]
    method.after_step()
    for p_k, p_old, p_q in zip(m.key_head.parameters(), key_before, m.head.parameters()):
        torch.testing.assert_close(p_k, 0.5 * p_old + 0.5 * p_q)


def test_symmetric_loss_uses_both_views_as_queries():
    m = _model(queue_size=16, out_dim=3)
    g = torch.Generator().manual_seed(2)
    v1, v2 = torch.randn(4, 3, 8, 8, generator=g), torch.randn(4, 3, 8, 8, generator=g)
    MoCoMethod(m, symmetric=True).training_step([v1, v2])
    assert int(m.queue_ptr) == 4  # one key per image is enqueued either way
