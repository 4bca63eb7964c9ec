"""Top-k along the rows of a score matrix that arrives in blocks, both signs, never held whole; and TopK,
what TracIn.top_k returns (the test side, the train side or both)."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Optional

import torch
from torch import Tensor

from tracin.errors import TracinError


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


SIDES = ("test", "train", "both")  # what TracIn.top_k ranks


class TopK:
    """test: per test example, its k strongest proponents (top) and opponents (bottom) among the
    train examples; train: per train example, the k test examples it raises most (top) and lowers
    most (bottom). Indices are positions in the data given. Reading a side top_k was not asked for is a
    TracinError that says how to ask for it."""

    def __init__(self, test: Optional[Ranking], train: Optional[Ranking]):
        self._sides = {"test": test, "train": train}

    def _side(self, name: str) -> Ranking:
        if self._sides[name] is None:
            raise TracinError(
                f"top_k ranked only the {'train' if name == 'test' else 'test'} side: call "
                f"top_k(..., side={name!r}) or side='both' for the {name} side"
            )
        return self._sides[name]

    @property
    def test(self) -> Ranking:
        return self._side("test")

    @property
    def train(self) -> Ranking:
        return self._side("train")

    def has(self, side: str) -> bool:
        """Whether top_k ranked this side ("test" or "train")."""
        return self._sides[side] is not None
