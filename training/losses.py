"""Contrastive losses as pure functions with documented shapes.

Nothing here looks up the process group's rank or moves tensors between devices:
the caller passes ``rank`` and ``world_size``. With ``world_size > 1`` the features
of every process are gathered *with* gradient (``torch.distributed.nn.all_gather``),
so each process scores its own anchors against the whole global batch and the
gradient of a negative flows back to the process that computed it. With DDP averaging
the gradients, ``world_size`` processes on ``B`` images each then train exactly like
one process on ``world_size * B`` images.
"""

from __future__ import annotations

import torch
import torch.distributed as dist
import torch.nn.functional as F


def gather_with_grad(x: torch.Tensor, world_size: int) -> torch.Tensor:
    """(B, d) on each of ``world_size`` processes -> (world_size * B, d), rows in rank order, differentiable."""
    if world_size == 1:
        return x
    if not (dist.is_available() and dist.is_initialized()):
        raise RuntimeError(f"world_size={world_size} but no torch.distributed process group is initialised")
    import torch.distributed.nn

    return torch.cat(torch.distributed.nn.all_gather(x), dim=0)


@torch.no_grad()
def gather_no_grad(x: torch.Tensor, world_size: int) -> torch.Tensor:
    """(B, d) on each process -> (world_size * B, d) in rank order, no gradient (e.g. MoCo's keys for the queue)."""
    if world_size == 1:
        return x
    if not (dist.is_available() and dist.is_initialized()):
        raise RuntimeError(f"world_size={world_size} but no torch.distributed process group is initialised")
    out = [torch.empty_like(x) for _ in range(world_size)]
    dist.all_gather(out, x.contiguous())
    return torch.cat(out, dim=0)


def nt_xent(z1: torch.Tensor, z2: torch.Tensor, temperature: float = 0.5, rank: int = 0,
            world_size: int = 1) -> torch.Tensor:
    """SimCLR's normalised-temperature cross-entropy (NT-Xent), averaged over this process's 2B anchors.

    z1, z2: (B, d) projections of two augmented views of the same B images on this process; row i of
            ``z1`` and row i of ``z2`` are a positive pair. They need not be normalised (cosine similarity
            is used) and are computed in float32 whatever the autocast dtype.
    Every other of the 2N - 2 views of the global batch (N = world_size * B) is a negative:

        loss_k = -log( exp(s(k, pos(k)) / t) / sum_{j != k} exp(s(k, j) / t) )

    Returns a scalar tensor (mean of loss_k over the local anchors).
    """
    if z1.shape != z2.shape or z1.ndim != 2:
        raise ValueError(f"z1 and z2 must both be (B, d); got {tuple(z1.shape)} and {tuple(z2.shape)}")
    b = z1.shape[0]
    local = F.normalize(torch.cat([z1, z2]).float(), dim=1)  # (2B, d): local views, z1 rows then z2 rows
    everyone = gather_with_grad(local, world_size)  # (W * 2B, d): rank r's block is [z1_r; z2_r]
    logits = local @ everyone.T / temperature  # (2B, W * 2B)
    offset = rank * 2 * b  # where this process's own block starts in the gathered columns
    rows = torch.arange(2 * b, device=local.device)
    self_cols = offset + rows
    positive_cols = offset + (rows + b) % (2 * b)  # z1[i] <-> z2[i]
    logits = logits.masked_fill(F.one_hot(self_cols, logits.shape[1]).bool(), float("-inf"))
    return F.cross_entropy(logits, positive_cols)


def info_nce_with_queue(q: torch.Tensor, k: torch.Tensor, queue: torch.Tensor,
                        temperature: float = 0.2) -> torch.Tensor:
    """MoCo's InfoNCE: each query against its own key (positive) and every key in the queue (negatives).

    q: (B, d) queries (with gradient); k: (B, d) keys from the momentum encoder (no gradient);
    queue: (K, d) keys of earlier batches. All are L2-normalised here in float32.
    Returns the mean over the B queries of -log softmax(logits)[positive], logits = [q.k, q.queue] / t.
    """
    q = F.normalize(q.float(), dim=1)
    k = F.normalize(k.float(), dim=1).detach()
    queue = F.normalize(queue.float(), dim=1).detach()
    positive = (q * k).sum(dim=1, keepdim=True)  # (B, 1)
    negative = q @ queue.T  # (B, K)
    logits = torch.cat([positive, negative], dim=1) / temperature  # (B, 1 + K)
    return F.cross_entropy(logits, torch.zeros(len(q), dtype=torch.long, device=q.device))


def _soft_cross_entropy(logits: torch.Tensor, positives: torch.Tensor) -> torch.Tensor:
    """Mean over rows of the cross-entropy against the uniform distribution over each row's positives.

    logits: (R, C) float; positives: (R, C) bool with at least one True per row."""
    target = positives.float() / positives.sum(dim=1, keepdim=True)
    return -(target * F.log_softmax(logits, dim=1)).sum(dim=1).mean()


def multi_positive_clip(image: torch.Tensor, text: torch.Tensor, logit_scale: torch.Tensor,
                        image_groups: torch.Tensor, text_groups: torch.Tensor, rank: int = 0,
                        world_size: int = 1) -> torch.Tensor:
    """CLIP's symmetric InfoNCE where every (image, text) pair of the same group is a positive.

    image: (Bi, d) image embeddings on this process (e.g. two views of B items: Bi = 2B);
    text:  (Bt, d) text embeddings on this process; both already L2-normalised;
    logit_scale: () the learnt inverse temperature (exp already applied, as open_clip's model returns it);
    image_groups: (Bi,) int64, text_groups: (Bt,) int64: items sharing a caption (or a group column)
    share a group id, and each image's own caption must be in the batch (so every row has a positive).
    With one view per item and all groups distinct this is exactly open_clip's ClipLoss. The target of
    each row is uniform over its positives (SupCon's "out" form, as in multi-positive CLIP variants).
    Returns the mean of the image->text and text->image terms over this process's rows.
    """
    all_text = gather_with_grad(text.float(), world_size)  # (W * Bt, d)
    all_image = gather_with_grad(image.float(), world_size)  # (W * Bi, d)
    all_tg = gather_no_grad(text_groups, world_size)
    all_ig = gather_no_grad(image_groups, world_size)
    i2t = logit_scale * image.float() @ all_text.T  # (Bi, W * Bt)
    t2i = logit_scale * text.float() @ all_image.T  # (Bt, W * Bi)
    loss_i = _soft_cross_entropy(i2t, image_groups[:, None] == all_tg[None, :])
    loss_t = _soft_cross_entropy(t2i, text_groups[:, None] == all_ig[None, :])
    return (loss_i + loss_t) / 2


def supcon(z: torch.Tensor, groups: torch.Tensor, temperature: float = 0.1, rank: int = 0,
           world_size: int = 1) -> torch.Tensor:
    """Supervised contrastive loss (Khosla et al. 2020, L_out) over views: views of one group are positives.

    z: (N, d) projections of this process's N views (unnormalised; cosine similarity, float32);
    groups: (N,) int64; two augmentations of one image share a group, and so may different images
    (e.g. two vendors' drawings of one emoji). Each view must have at least one positive besides itself.
    With groups = [0..B-1, 0..B-1] (two views per image, nothing else shared) this is NT-Xent.

        loss_k = - 1/|P(k)| sum_{p in P(k)} log( exp(s(k,p)/t) / sum_{j != k} exp(s(k,j)/t) )

    Returns the mean of loss_k over the local views.
    """
    local = F.normalize(z.float(), dim=1)
    everyone = gather_with_grad(local, world_size)  # (W * N, d)
    all_groups = gather_no_grad(groups, world_size)
    logits = local @ everyone.T / temperature  # (N, W * N)
    n = local.shape[0]
    self_mask = F.one_hot(rank * n + torch.arange(n, device=z.device), logits.shape[1]).bool()
    logits = logits.masked_fill(self_mask, float("-inf"))
    positives = (groups[:, None] == all_groups[None, :]) & ~self_mask
    if not bool(positives.any(dim=1).all()):
        raise ValueError("every view needs a positive besides itself (e.g. a second view of its image)")
    log_prob = F.log_softmax(logits, dim=1).masked_fill(~positives, 0.0)
    return -(log_prob.sum(dim=1) / positives.sum(dim=1)).mean()
