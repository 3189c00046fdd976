"""What only a CUDA device can show: its passes recorded as CUDA graphs. Skipped without one;
nothing else in the suite needs a GPU."""

import pytest
import torch

import impasto.cuda_graph as cuda_graph
from impasto import descent
from impasto.errors import ImpastoWarning
from impasto.settings import Settings

pytestmark = pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device")


def counting_captures(monkeypatch) -> list[int]:
    captured: list[int] = []
    real = cuda_graph.Replay._capture

    def capture(self):
        real(self)
        captured.append(self.graph is not None)

    monkeypatch.setattr(cuda_graph.Replay, "_capture", capture)
    return captured


@pytest.mark.parametrize("precision", ["fp32", "fp16"])
def test_a_run_replaying_cuda_graphs_descends_as_one_launching_each_kernel(stylizer, make_settings, content_array, style_array, precision, monkeypatch):
    captured = counting_captures(monkeypatch)
    histories = {}
    for graphs in (True, False):
        settings = make_settings(device="cuda", precision=precision, cuda_graphs=graphs, size=64, multiscale=True, iterations=12, initial_iterations=12)
        result = stylizer.run(content_array, style_array, settings)
        histories[graphs] = [row["total"] for row in result.history]
    # One graph a scale, each captured after its warm-up calls and replayed for the rest.
    assert captured == [True, True]
    graphed, launched = histories[True], histories[False]
    assert len(graphed) == len(launched) == 24
    # The same arithmetic: step for step at first (cuDNN's sums may differ in the last bits,
    # which a descent then amplifies a little), and to the same end.
    assert graphed[:4] == pytest.approx(launched[:4], rel=1e-3)
    assert graphed[-1] == pytest.approx(launched[-1], rel=0.03)
    assert graphed[-1] < 0.95 * graphed[12]  # the finer scale's own descent


def test_the_w2_loss_is_not_recorded_and_a_run_with_it_descends(stylizer, make_settings, content_array, style_array, monkeypatch):
    captured = counting_captures(monkeypatch)
    result = stylizer.run(content_array, style_array, make_settings(device="cuda", style_loss="w2", iterations=8))
    assert captured == []
    assert result.history[-1]["total"] < result.history[0]["total"]


def test_a_score_that_reads_the_device_falls_back_to_launching_with_a_warning(monkeypatch):
    captured = counting_captures(monkeypatch)
    target = torch.rand(1000, device="cuda")

    def score(x):
        value = ((x - target) ** 2).sum()
        float(value.detach())  # a read of the device from the host: no graph can hold it
        return value, {"content": value}

    x = torch.full((1000,), 0.5, device="cuda")
    with pytest.warns(ImpastoWarning, match="could not be recorded as a CUDA graph"):
        steps = list(descent.descend(score, x, 8, Settings(), graphed=True))
    assert captured == [False]
    assert steps[-1].losses["total"] < 0.1 * steps[0].losses["total"]
