"""Streaming top-k against a full sort."""

import torch

from tracin.engine.topk import StreamingRanking


def test_streaming_blocks_equal_full_sort():
    generator = torch.Generator().manual_seed(0)
    scores = torch.randn(37, 23, generator=generator)
    ranking = StreamingRanking(37, 5)
    for c0 in range(0, 23, 6):  # column blocks, rows in chunks, out of order
        for r0 in (30, 0, 10, 20):
            r1 = min(r0 + 10, 37) if r0 != 30 else 37
            ranking.update(r0, scores[r0:r1, c0 : c0 + 6], c0)
    result = ranking.result()
    order = scores.argsort(dim=1, descending=True)
    assert torch.equal(result.top_index, order[:, :5])
    assert torch.equal(result.top_score, scores.gather(1, order[:, :5]))
    assert torch.equal(result.bottom_index, scores.argsort(dim=1)[:, :5])
