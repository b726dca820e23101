"""Non-maximum suppression on the host, in NumPy: hard (greedy) and weighted, per class or class-agnostic.

``nms`` is greedy NMS with torchvision's semantics: boxes in decreasing order of score (ties keep their
order), each kept box suppresses the later ones whose IoU with it is strictly above the threshold; with
``class_ids`` only boxes of the same class suppress each other (what ``torchvision.ops.batched_nms`` does with
its coordinate-offset trick, done here with a class mask, exact at any coordinate size). The kept indices come
back in decreasing order of score.

``weighted_nms`` clusters exactly as ``nms`` does (a suppressed box joins the cluster of the first kept box
that suppresses it) and replaces each kept box by the score-weighted mean of its cluster's corners, keeping
the kept box's score: MediaPipe's ``WeightedNonMaxSuppression``.

Greedy NMS is sequential by nature; here it runs over blocks of candidates in score order: a block is first
checked against the boxes kept so far (one vectorised IoU), then the survivors are resolved among themselves
with one square IoU (per class, only the pairs of the same class) and a loop over the boxes it keeps, never over
the candidates. ``max_detections`` stops it as soon as that many are kept: the result is exactly the first
``max_detections`` of the full NMS, and only about the best few ``max_detections`` candidates are ever sorted.
"""

from __future__ import annotations

import numpy as np

# Candidates are resolved in blocks of growing size: the first block holds the best boxes (of every object), the
# later ones mostly fall to the boxes already kept (a cheap kept x block check), so only a few reach the square
# within-block check.
_FIRST_BLOCK, _MAX_BLOCK = 64, 512


def box_iou(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """IoU (N, M) of boxes ``a`` (N, 4) and ``b`` (M, 4), x1, y1, x2, y2; 0 where both have no area."""
    a, b = np.asarray(a, np.float32).reshape(-1, 4), np.asarray(b, np.float32).reshape(-1, 4)
    inter, union = _inter_union(a, b)
    out = np.zeros_like(inter)
    np.divide(inter, union, out=out, where=union > 0)
    return out


def nms(
    boxes: np.ndarray,
    scores: np.ndarray,
    iou_threshold: float,
    *,
    class_ids: np.ndarray | None = None,
    max_detections: int | None = None,
) -> np.ndarray:
    """Indices (int64) of the boxes greedy NMS keeps, in decreasing order of score (see the module's notes).

    ``boxes`` (N, 4) x1, y1, x2, y2; ``class_ids`` (N,) makes it per class, None class-agnostic;
    ``max_detections`` keeps at most that many (the best), None all.
    """
    keep, _ = _greedy(boxes, scores, iou_threshold, class_ids, max_detections, clusters=False)
    return keep


def weighted_nms(
    boxes: np.ndarray,
    scores: np.ndarray,
    iou_threshold: float,
    *,
    class_ids: np.ndarray | None = None,
    max_detections: int | None = None,
) -> tuple[np.ndarray, np.ndarray]:
    """Weighted NMS: the indices kept (as ``nms`` returns them) and their boxes (K, 4) float32, each the
    score-weighted mean of the corners of the boxes it suppressed and its own. Scores stay the kept boxes'."""
    boxes = np.asarray(boxes, np.float32).reshape(-1, 4)
    scores = np.asarray(scores, np.float32).reshape(-1)
    keep, owner = _greedy(boxes, scores, iou_threshold, class_ids, max_detections, clusters=True)
    if keep.size == 0:
        return keep, np.zeros((0, 4), np.float32)
    member = owner >= 0
    w = scores[member].astype(np.float64)
    sums = np.stack(
        [np.bincount(owner[member], weights=w * boxes[member, j], minlength=keep.size) for j in range(4)], axis=1
    )
    total = np.bincount(owner[member], weights=w, minlength=keep.size)
    merged = boxes[keep].astype(np.float64)
    ok = total > 0  # a cluster of zero total score (every score 0) keeps its box
    merged[ok] = sums[ok] / total[ok, None]
    return keep, merged.astype(np.float32)


def _inter_union(a: np.ndarray, b: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    w = np.minimum(a[:, None, 2], b[None, :, 2]) - np.maximum(a[:, None, 0], b[None, :, 0])
    h = np.minimum(a[:, None, 3], b[None, :, 3]) - np.maximum(a[:, None, 1], b[None, :, 1])
    np.maximum(w, 0, out=w)
    np.maximum(h, 0, out=h)
    inter = w * h
    area_a = (a[:, 2] - a[:, 0]) * (a[:, 3] - a[:, 1])
    area_b = (b[:, 2] - b[:, 0]) * (b[:, 3] - b[:, 1])
    return inter, area_a[:, None] + area_b[None, :] - inter


def _overlaps(a: np.ndarray, b: np.ndarray, ca: np.ndarray | None, cb: np.ndarray | None, t: float) -> np.ndarray:
    """Which pairs (len(a), len(b)) suppress each other: IoU strictly above ``t`` (and the same class)."""
    inter, union = _inter_union(a, b)
    # inter / union > t, without dividing: union > 0 wherever inter > 0, and 0 > t * 0 is false as 0/0 > t is
    out = inter > t * union
    if ca is not None:
        out &= ca[:, None] == cb[None, :]
    return out


def _score_order(scores: np.ndarray, head: int | None) -> tuple[np.ndarray, np.ndarray | None]:
    """Indices by decreasing score, ties in index order (a stable sort). With ``head``, only about the best
    ``head`` are sorted (found in linear time); the rest come back unsorted, to be sorted if ever needed."""
    n = scores.shape[0]
    if head is None or n <= 2 * head:
        return np.argsort(-scores, kind="stable"), None
    cut = scores[np.argpartition(-scores, head - 1)[head - 1]]  # the head-th best score
    top = np.flatnonzero(scores >= cut)  # ties at the cut included, so the head is a prefix of the full order
    return top[np.argsort(-scores[top], kind="stable")], np.flatnonzero(~(scores >= cut))


def _block_overlaps(boxes: np.ndarray, classes: np.ndarray | None, t: float) -> np.ndarray:
    """``_overlaps(boxes, boxes, classes, classes, t)``. With many classes, only the pairs of the same class are
    computed (listed class by class, in one vectorised pass) rather than the whole square."""
    m = boxes.shape[0]
    if classes is None or m < 64:
        return _overlaps(boxes, boxes, classes, classes, t)
    by_class = np.argsort(classes, kind="stable")
    sorted_classes = classes[by_class]
    starts = np.flatnonzero(np.concatenate([[True], sorted_classes[1:] != sorted_classes[:-1]]))
    sizes = np.diff(np.concatenate([starts, [m]]))
    pairs = int((sizes * sizes).sum())
    if 4 * pairs > m * m:
        return _overlaps(boxes, boxes, classes, classes, t)
    size_at = np.repeat(sizes, sizes)  # per class-sorted position: its class's count and first position
    start_at = np.repeat(starts, sizes)
    rows = np.repeat(np.arange(m), size_at)
    first = np.cumsum(size_at) - size_at
    cols = np.repeat(start_at, size_at) + np.arange(pairs) - np.repeat(first, size_at)
    a, b = by_class[rows], by_class[cols]
    ba, bb = boxes[a], boxes[b]
    w = np.minimum(ba[:, 2], bb[:, 2]) - np.maximum(ba[:, 0], bb[:, 0])
    h = np.minimum(ba[:, 3], bb[:, 3]) - np.maximum(ba[:, 1], bb[:, 1])
    inter = np.maximum(w, 0) * np.maximum(h, 0)
    area = (boxes[:, 2] - boxes[:, 0]) * (boxes[:, 3] - boxes[:, 1])
    hit = inter > t * (area[a] + area[b] - inter)
    out = np.zeros((m, m), bool)
    out[a[hit], b[hit]] = True
    return out


def _greedy(
    boxes: np.ndarray,
    scores: np.ndarray,
    t: float,
    class_ids: np.ndarray | None,
    limit: int | None,
    *,
    clusters: bool,
) -> tuple[np.ndarray, np.ndarray]:
    """Greedy NMS over blocks. Returns the kept indices (score order) and, when ``clusters``, per box the
    position in ``keep`` of the kept box whose cluster it joined (-1: none)."""
    boxes = np.asarray(boxes, np.float32).reshape(-1, 4)
    scores = np.asarray(scores).reshape(-1)
    n = boxes.shape[0]
    if scores.shape[0] != n:
        raise ValueError(f"nms: {n} boxes but {scores.shape[0]} scores")
    classes_in = None if class_ids is None else np.asarray(class_ids).reshape(-1)
    if classes_in is not None and classes_in.shape[0] != n:
        raise ValueError(f"nms: {n} boxes but {classes_in.shape[0]} class ids")
    limit = n if limit is None else max(0, int(limit))
    if n == 0 or limit == 0:
        return np.zeros(0, np.int64), np.full(n, -1, np.int64)
    # A limited hard NMS rarely looks past its first few blocks: sort those, and the rest only if reached.
    order, rest = _score_order(scores, None if clusters or limit >= n else max(4 * limit, 1024))
    sboxes = boxes[order]
    classes = None if classes_in is None else classes_in[order]
    owner = np.full(n, -1, np.int64)  # by sorted position
    kept: list[int] = []  # sorted positions
    cap = min(limit, n)
    kept_boxes = np.empty((cap, 4), np.float32)
    kept_classes = None if classes is None else np.empty(cap, classes.dtype)
    start, block_size = 0, _FIRST_BLOCK
    while len(kept) < limit:
        if start >= order.shape[0]:
            if rest is None:
                break
            tail = rest[np.argsort(-scores[rest], kind="stable")]
            order, rest = np.concatenate([order, tail]), None
            sboxes = np.concatenate([sboxes, boxes[tail]])
            classes = None if classes is None else np.concatenate([classes, classes_in[tail]])
        # no bigger than twice the boxes still wanted: past the limit, its square check would be wasted
        stop = min(order.shape[0], start + min(block_size, max(_FIRST_BLOCK, 2 * (limit - len(kept)))))
        block_size = min(2 * block_size, _MAX_BLOCK)
        block = sboxes[start:stop]
        bclass = None if classes is None else classes[start:stop]
        k = len(kept)
        if k:
            ov = _overlaps(kept_boxes[:k], block, None if kept_classes is None else kept_classes[:k], bclass, t)
            hit = ov.any(axis=0)
            if clusters:
                owner[start:stop][hit] = ov[:, hit].argmax(axis=0)
            idx = np.flatnonzero(~hit)
        else:
            idx = np.arange(stop - start)
        if idx.size:
            sub = block[idx]
            subc = None if bclass is None else bclass[idx]
            ov = _block_overlaps(sub, subc, t)
            live = np.ones(idx.size, bool)
            free = ~ov
            # the first live box is kept; it clears the ones it overlaps. Every live box before it is gone, so
            # argmax finds the next; the loop runs once a kept box.
            while len(kept) < limit:
                i = int(live.argmax())
                if not live[i]:
                    break
                j = len(kept)
                kept.append(start + int(idx[i]))
                kept_boxes[j] = sub[i]
                if kept_classes is not None:
                    kept_classes[j] = subc[i]
                if clusters:
                    joined = live & ov[i]
                    joined[i] = False
                    owner[start + idx[joined]] = j
                live &= free[i]
                live[i] = False  # (ov[i, i] is false for a box of no area)
            if clusters and len(kept) >= limit:
                owner[start + idx[live]] = -2  # stopped inside this block: resolved below, against every kept box
        start = stop
    kept_at = np.asarray(kept, np.int64)
    keep = order[kept_at]
    if clusters:
        owner[kept_at] = np.arange(kept_at.size)
        owner[start:][owner[start:] == -1] = -2  # never examined after an early stop
        _join_pending(sboxes, classes, kept_boxes[: kept_at.size], kept_classes, owner, t)
        inverse = np.empty(n, np.int64)
        inverse[order] = np.arange(n)
        owner = owner[inverse]
    return keep, owner


def _join_pending(
    sboxes: np.ndarray,
    classes: np.ndarray | None,
    kept_boxes: np.ndarray,
    kept_classes: np.ndarray | None,
    owner: np.ndarray,
    t: float,
) -> None:
    """After an early stop, the boxes left unresolved (owner -2, all after the last kept box) join the cluster
    of the first kept box that overlaps them: MediaPipe's weighted NMS takes every remaining box into a kept
    box's cluster before it checks the detection count."""
    pending = np.flatnonzero(owner == -2)
    kc = None if kept_classes is None else kept_classes[: kept_boxes.shape[0]]
    for s in range(0, pending.size, _MAX_BLOCK):
        part = pending[s : s + _MAX_BLOCK]
        ov = _overlaps(kept_boxes, sboxes[part], kc, None if classes is None else classes[part], t)
        owner[part] = np.where(ov.any(axis=0), ov.argmax(axis=0), -1)
