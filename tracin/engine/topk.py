"""Top-k along the rows of a score matrix that arrives in blocks, both signs, never held whole."""

from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import Tensor


@dataclass
class Ranking:
    """For each of n rows, the k columns with the largest scores (top_*, largest first) and the k with
    the smallest (bottom_*, smallest first). index: Tensor[n, k] int64 column positions; score:
    Tensor[n, k] float32."""

    top_index: Tensor
    top_score: Tensor
    bottom_index: Tensor
    bottom_score: Tensor


class StreamingRanking:
    """Keeps the running top-k and bottom-k of n rows while blocks of scores arrive.

    Tables start at -inf/+inf with index -1, so after every column has been seen once (k must not
    exceed the number of columns) they hold the exact top-k and bottom-k.
    """

    def __init__(self, n_rows: int, k: int, device: torch.device | str = "cpu"):
        self.k = k
        self.top_score = torch.full((n_rows, k), float("-inf"), device=device)
        self.bottom_score = torch.full((n_rows, k), float("inf"), device=device)
        self.top_index = torch.full((n_rows, k), -1, dtype=torch.int64, device=device)
        self.bottom_index = self.top_index.clone()

    def update(self, row_start: int, scores: Tensor, col_start: int) -> None:
        """scores: Tensor[r, c] for rows row_start.. and columns col_start.."""
        rows = slice(row_start, row_start + scores.shape[0])
        cols = torch.arange(col_start, col_start + scores.shape[1], device=scores.device).expand_as(scores)
        self.top_score[rows], self.top_index[rows] = self._merge(
            self.top_score[rows], self.top_index[rows], scores, cols, largest=True
        )
        self.bottom_score[rows], self.bottom_index[rows] = self._merge(
            self.bottom_score[rows], self.bottom_index[rows], scores, cols, largest=False
        )

    def _merge(self, values: Tensor, index: Tensor, new_values: Tensor, new_index: Tensor, largest: bool):
        values = torch.cat([values, new_values], dim=1)
        kept, order = values.topk(self.k, dim=1, largest=largest, sorted=True)
        return kept, torch.cat([index, new_index], dim=1).gather(1, order)

    def result(self) -> Ranking:
        return Ranking(self.top_index.cpu(), self.top_score.cpu(), self.bottom_index.cpu(), self.bottom_score.cpu())
