"""One pass of the loop recorded as a CUDA graph and replayed.

On a GPU the descent loop is bound by the host, not the GPU: an iteration launches about 340
kernels (the network's forward and backward passes, the losses), and launching them took
10-15 ms of host time at 512 px on an H200, whose GPU was busy about 2.6 ms of it
(benchmarks/README.md, "On a GPU"). A CUDA graph records those launches once and replays them
as one. Only CUDA has graphs; elsewhere nothing here is used.
"""

from __future__ import annotations

from typing import Callable, Generic, Optional, TypeVar

import torch

from .errors import on_command_line, option, warn

T = TypeVar("T")

# Eager calls before the capture: the first call sets up what is made once (cuDNN's choice of
# algorithms, cuBLAS's workspace, the losses' cached splits, the network's weights cast and
# laid out), which must not happen inside a capture. They are real calls, not thrown away.
WARMUP = 2


class Replay(Generic[T]):
    """`fn()`, called eagerly for its first WARMUP calls, then recorded once in a CUDA graph and
    replayed at each later call.

    `fn` must read its inputs from tensors that it owns and the caller refills in place, and it
    must not read the device from the host (no `.item()`, no `float(tensor)`): a graph replays
    kernels, not Python. What a replay returns is the same tensors each time, overwritten by the
    next call: read them or copy them before calling again. If the capture fails, `fn` is run
    eagerly from then on, with a warning, so a run is slower but never wrong.
    """

    def __init__(self, fn: Callable[[], T], device: torch.device, warmup: int = WARMUP) -> None:
        self.fn = fn
        self.device = device
        self.warmup = warmup
        self.calls = 0
        self.graph: Optional[torch.cuda.CUDAGraph] = None
        self.outputs: Optional[T] = None
        self.eager = False  # the capture failed: fn is run as it is
        # Work before a capture runs on a stream of its own, as torch's capture needs: the
        # default stream may hold nothing the capture's stream depends on.
        self.stream = torch.cuda.Stream(device)

    def __call__(self) -> T:
        if self.graph is not None:
            self.graph.replay()
            return self.outputs  # type: ignore[return-value]
        if self.eager:
            return self.fn()
        if self.calls < self.warmup:
            self.calls += 1
            return self._on_side_stream()
        self._capture()
        return self()

    def _on_side_stream(self) -> T:
        current = torch.cuda.current_stream(self.device)
        self.stream.wait_stream(current)
        with torch.cuda.stream(self.stream):
            out = self.fn()
        current.wait_stream(self.stream)
        return out

    def _capture(self) -> None:
        graph = torch.cuda.CUDAGraph()
        try:
            with torch.cuda.device(self.device), torch.cuda.graph(graph):
                outputs = self.fn()
        except RuntimeError as exc:
            torch.cuda.synchronize(self.device)
            self.eager = True
            first = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
            off = "--no-cuda-graphs" if on_command_line() else option("cuda_graphs", False)
            warn(f"this run's passes could not be recorded as a CUDA graph ({first}); they run without one, slower on a GPU ({off} skips the attempt)")
            return
        self.graph, self.outputs = graph, outputs
