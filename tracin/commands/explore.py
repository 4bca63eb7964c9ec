"""tracin-explore: the page of a finished score file (tracin.results.explore), its lines printed."""

from __future__ import annotations

from tracin.options import ExploreOptions
from tracin.results.explore import explore


def explore_run(options: ExploreOptions) -> None:
    """Write the page (and the export where asked), printing where they went."""
    for line in explore(options):
        print(line, flush=True)
