"""The benchmarks' shared pieces: what their tables rest on."""

from __future__ import annotations

import sys
from pathlib import Path

import pytest
import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "benchmarks"))
from common import textbook_baseline  # noqa: E402


class IllConditioned:
    """A stand-in objective shaped like Objective's return, with its minimum at 0.3 everywhere.

    Curvatures from 0.01 to 100, so L-BFGS does not converge within a step of 20 iterations
    and each step runs to its end, as on a real image.
    """

    scales = torch.logspace(-2, 2, 192).reshape(1, 3, 8, 8)

    def __call__(self, image: torch.Tensor):
        return (self.scales * (image - 0.3) ** 2).sum() + ((image - 0.3) ** 4).sum(), {}


@pytest.mark.parametrize("evaluations", [1, 7, 20, 66])
def test_textbook_baseline_runs_exactly_the_evaluations_asked(evaluations):
    # L-BFGS evaluates up to 20 times a step: an equal-time comparison with 66 evaluations
    # must not quietly run 80.
    log: list[tuple[float, float]] = []
    image = textbook_baseline(IllConditioned(), torch.rand(1, 3, 8, 8, generator=torch.Generator().manual_seed(0)), evaluations, log)
    assert len(log) == evaluations
    assert evaluations == 1 or log[-1][1] < log[0][1]  # and it descends
    assert float(image.min()) >= 0 and float(image.max()) <= 1
