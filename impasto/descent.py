"""The descent loop: a tensor's pixels (or a spectrogram's bins) moved to lower a score, by
L-BFGS (its moves made here, its directions from lbfgs.py) or Adam, under mixed precision where
asked, its passes replayed as a CUDA graph where asked (cuda_graph.py). Pictures (optimize.py)
and sounds (audio/) both descend through it.
"""

from __future__ import annotations

import math
from typing import Callable, Iterator, NamedTuple, Optional

import torch

from .cuda_graph import Replay
from .device import autocast_to
from .errors import NonFiniteLoss, option
from .lbfgs import LBFGS
from .settings import Settings


# L-BFGS's memory: how many pairs of steps and gradient changes it keeps. Each pair costs four
# passes over a picture-sized vector every iteration (and 24 bytes a pixel); 20 pairs converge
# as 50 did, iteration for iteration, on the default's 512 px run, and 10 did not (benchmarks/HISTORY, session 21).
LBFGS_HISTORY = 20


def make_optimizer(settings: Settings, param: torch.Tensor) -> Optional[torch.optim.Optimizer]:
    """Adam for `param`; None for L-BFGS, whose moves descend() makes itself (lbfgs.py)."""
    if settings.optimizer == "lbfgs":
        return None
    return torch.optim.Adam([param], lr=settings.learning_rate())


class Step(NamedTuple):
    """One optimiser iteration: its 1-based number, the losses of the pixels it scored, and those pixels."""

    number: int
    losses: dict[str, float]
    scored: torch.Tensor


# fp16 gradients of these losses underflow to noise near convergence (the per-element
# gradient is divided by each layer's size): the loss is multiplied by this before the
# backward pass and the gradient divided after, as a gradient scaler does for training.
LOSS_SCALE = 2.0**16


class LossScale:
    """fp16's loss scale through one descent, as a gradient scaler keeps it: lowered by an
    overflow, it stays lowered, so the next iteration does not pay a second backward pass
    again; after GROWTH_INTERVAL iterations without one it is doubled again (up to LOSS_SCALE),
    since small gradients near convergence need it high."""

    GROWTH_INTERVAL = 20

    def __init__(self, autocast: Optional[torch.dtype]) -> None:
        self.value = LOSS_SCALE if autocast == torch.float16 else 1.0
        self.good = 0.0  # the last value that did not overflow (0: none yet)
        self.streak = 0

    def overflowed(self) -> None:
        # Right after a growth, back to what worked; else down by 256, a few passes at most.
        self.value = self.good if 0 < self.good < self.value else max(1.0, self.value / 256)
        self.streak = 0

    def succeeded(self) -> None:
        self.good, self.streak = self.value, self.streak + 1
        if self.streak >= self.GROWTH_INTERVAL and self.value < LOSS_SCALE:
            self.value, self.streak = min(LOSS_SCALE, self.value * 2), 0


# What descends: a function of the pixels giving the loss and its named parts.
Score = Callable[[torch.Tensor], tuple[torch.Tensor, dict[str, torch.Tensor]]]
# What a pass returns: the loss, its parts, and the gradient of the loss times the loss scale.
Scored = tuple[torch.Tensor, dict[str, torch.Tensor], Optional[torch.Tensor]]


def gradient(
    score: Score,
    param: torch.Tensor,
    autocast: Optional[torch.dtype] = None,
    loss_scale: Optional[LossScale] = None,
) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
    """`score(param)` with its gradient in `param.grad`; under fp16 autocast, through a scaled loss."""

    def scored(scale: float) -> Scored:
        param.grad = None
        with autocast_to(param.device, autocast):
            value, parts = score(param)
        (value * scale).backward()
        return value, parts, param.grad

    value, parts, grad, scale = scaled(scored, autocast, loss_scale or LossScale(autocast))
    if scale != 1.0:
        assert grad is not None
        grad.div_(scale)
    return value, parts


def scaled(scored: Callable[[float], Scored], autocast: Optional[torch.dtype], loss_scale: LossScale) -> tuple[torch.Tensor, dict[str, torch.Tensor], Optional[torch.Tensor], float]:
    """`scored(scale)` (the loss, its parts and the gradient of scale x the loss), called again
    with a lower scale while a finite loss's gradient overflows fp16; and the scale it used."""
    while True:
        scale = loss_scale.value
        value, parts, grad = scored(scale)
        # Redone only for a finite loss whose gradient overflowed (a loss that is not a number
        # is descend()'s to report); one read of the device for both.
        if scale == 1.0 or grad is None or not bool(torch.isfinite(value) & ~torch.isfinite(grad).all()):
            break
        loss_scale.overflowed()  # an fp16 overflow in the backward pass: redo it scaled less
    if autocast == torch.float16:
        loss_scale.succeeded()
    return value, parts, grad, scale


class GraphedGradient:
    """gradient() for a CUDA tensor, its passes recorded once as a CUDA graph and replayed
    (cuda_graph.Replay: at 512 px a replay takes a fraction of the host time its ~340 launches
    do). The graph reads its own copy of the pixels and its own loss scale, refilled before
    each replay; the gradient it writes is copied into `param.grad`, which L-BFGS keeps."""

    def __init__(
        self,
        score: Score,
        param: torch.Tensor,
        autocast: Optional[torch.dtype],
        loss_scale: LossScale,
    ) -> None:
        self.autocast, self.loss_scale = autocast, loss_scale
        self.pixels = param.detach().clone().requires_grad_(True)
        self.scale = torch.ones((), device=param.device)  # on the device: a new scale needs no new graph

        def passes() -> Scored:
            self.pixels.grad = None  # so the capture allocates the gradient in the graph's memory
            with autocast_to(param.device, autocast, cache=False):
                value, parts = score(self.pixels)
            (value * self.scale).backward()
            return value, parts, self.pixels.grad

        self.replay = Replay(passes, param.device)

    def __call__(self, param: torch.Tensor) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
        def scored(scale: float) -> Scored:
            with torch.no_grad():
                self.pixels.copy_(param)
                self.scale.fill_(scale)
            return self.replay()

        value, parts, grad, scale = scaled(scored, self.autocast, self.loss_scale)
        assert grad is not None
        param.grad = grad / scale  # a copy: the next replay overwrites the graph's own
        return value, parts


def descend(
    score: Score,
    param: torch.Tensor,
    steps: int,
    settings: Settings,
    bounds: Optional[tuple[float, float]] = (0.0, 1.0),
    autocast: Optional[torch.dtype] = None,
    graphed: bool = False,
) -> Iterator[Step]:
    """Minimise `score(param)` in place for `steps` iterations with the settings' optimiser.

    The one descent loop of the project: images and audio spectrograms both go
    through it. It yields a Step after each iteration (the caller tracks the best
    and reports), keeps `param` within `bounds`, and raises NonFiniteLoss the
    moment the loss stops being a number. With `autocast` (a dtype) `score` runs
    under mixed precision and the gradient is computed with a scaled loss. `graphed` (on CUDA):
    `score`'s passes are recorded once as a CUDA graph and replayed (GraphedGradient).
    """
    param.requires_grad_(True)
    optimizer = make_optimizer(settings, param)
    memory = LBFGS(LBFGS_HISTORY) if optimizer is None else None
    last: dict[str, float] = {}
    loss_scale = LossScale(autocast)
    replayed = GraphedGradient(score, param, autocast, loss_scale) if graphed else None

    def closure() -> torch.Tensor:
        value, parts = replayed(param) if replayed is not None else gradient(score, param, autocast, loss_scale)
        if bounds is not None and memory is not None:
            hold_at_bounds(param, bounds)
        last.clear()
        # All in one read of the device: each float() of a GPU tensor waits for its queue to empty.
        numbers = torch.stack([v.detach().reshape(()).to(value.dtype) for v in (*parts.values(), value)]).tolist()
        last.update(zip((*parts, "total"), numbers))
        return value

    kept: Optional[torch.Tensor] = None  # the pixels scored by the last step that was not taken back
    lowest = math.inf  # the lowest loss a step has scored
    for number in range(1, steps + 1):
        before = param.detach().clone()  # what `closure` scores during this step
        if optimizer is not None:
            optimizer.step(closure)  # type: ignore[arg-type]  # torch's stub says float; Adam takes a closure
        else:
            closure()
        if not all(math.isfinite(v) for v in last.values()):
            hint = f"a lower {option('lr')} or smaller weights" + (f", or {option('precision', 'fp32')}" if autocast is not None else "")
            raise NonFiniteLoss(f"the loss became {last.get('total')} at iteration {number}; try {hint}", before)
        if memory is None:
            if bounds is not None:
                with torch.no_grad():
                    param.clamp_(*bounds)
        else:
            assert param.grad is not None
            memory.learn(param.grad.reshape(-1))
            with torch.no_grad():
                if kept is not None and last["total"] > BLOW_UP * lowest:
                    param.copy_(kept.lerp(before, 0.5))  # halfway back: see BLOW_UP
                else:
                    lbfgs_step(memory, param, number == 1, settings.learning_rate(), bounds)
                    kept = before
                    lowest = min(lowest, last["total"])
            memory.moved((param.detach() - before).reshape(-1))
        yield Step(number, dict(last), before)


def lbfgs_step(memory: LBFGS, param: torch.Tensor, first: bool, lr: float, bounds: Optional[tuple[float, float]]) -> None:
    """Move `param` along L-BFGS's direction by the learning rate, then into `bounds`. The first
    step of a descent (steepest descent, no curvature known yet) moves the pixel it moves most
    by FIRST_STEP of the bounds' range; without bounds it is torch's, min(1, 1/|g|₁) x lr. A
    direction that does not descend (the memory's curvature gone wrong) starts the memory
    again, with such a first step."""
    direction = memory.direction()
    if not first and float(direction.dot(memory.gradient)) >= 0:
        memory.forget()
        direction, first = memory.direction(), True
    move = direction.view_as(param)
    if first and bounds is not None:
        biggest = float(move.abs().max())
        param.add_(move, alpha=FIRST_STEP * (bounds[1] - bounds[0]) / biggest if biggest > 0 else 0.0)
    elif first:
        param.add_(move, alpha=min(1.0, 1.0 / max(float(move.abs().sum()), 1e-30)) * lr)
    else:
        param.add_(move, alpha=lr)
    if bounds is not None:
        param.clamp_(*bounds)


# L-BFGS within the pixels' bounds, in the manner of L-BFGS-B without its line search: it learns
# the curvature from pairs (move, change of gradient), and a clamp after each step changes the
# move (2-4% of the pixels at each step of a 512 px run). So L-BFGS is told the move the clamp let
# it make, not the step it proposed; and a pixel held at 0 or 1 has the part of its gradient
# that points out of bounds zeroed (hold_at_bounds), or it steers every later direction into
# the clamp again. Without both, the tail of a 512 px run jumped (1.25 to 1.44 and back within
# fifteen iterations); with them it falls smoothly and reaches the textbook's final loss about
# a fifth sooner (benchmarks/HISTORY, session 23). Telling it of the move alone, without holding
# those pixels, once sent a run's finest scale from 11 to 258.


# How far above the lowest loss yet an L-BFGS step may land before descend() takes it back,
# halfway, again until a landing is not so far above the lowest (not the last: landings each a
# little higher must not ratchet it up). L-BFGS's own steps rise now and then by a few percent;
# this is a bad estimate of the curvature, with no line search to catch it. Before FIRST_STEP,
# a 512 px scale's first quasi-Newton step once went from 11.7 to 336 and spent 20 iterations
# coming back. L-BFGS keeps what the landing taught it of the curvature. Starting it again
# from the pixels before instead stalled short runs: each restart's first step led to the same
# overshoot (benchmarks/HISTORY, session 24).
BLOW_UP = 2.0


# How far the first L-BFGS step of a descent moves the pixel it moves most: about a grey level.
# torch's first step is 1/|g|₁ long, which shrinks with the pixel count: a millionth of a grey
# level a pixel at 512 px, so small that the change of gradient it shows L-BFGS, from which the
# next step's curvature comes, is mostly bf16's rounding. About a grey level shows the
# curvature: the 512 px tail reaches the textbook's loss at 165 iterations, not 185, and is
# lower at 50 (benchmarks/HISTORY.md, session 24).
FIRST_STEP = 0.003


def hold_at_bounds(param: torch.Tensor, bounds: tuple[float, float]) -> None:
    """Zero the gradient of the pixels at a bound that it would push past it."""
    if param.grad is not None:
        with torch.no_grad():
            grad = param.grad
            grad.masked_fill_(((param <= bounds[0]) & (grad > 0)) | ((param >= bounds[1]) & (grad < 0)), 0.0)


def descend_keeping_best(
    score: Score,
    param: torch.Tensor,
    steps: int,
    settings: Settings,
    keep: Callable[[torch.Tensor, dict[str, float]], None],
    bounds: Optional[tuple[float, float]] = (0.0, 1.0),
    autocast: Optional[torch.dtype] = None,
    graphed: bool = False,
) -> Iterator[Step]:
    """descend(), calling `keep(param, losses)` each time a step scores better than any before,
    so a run stopped at any point (a callback, Ctrl-C, a loss that blows up) has its best."""
    best_value = math.inf
    for step in descend(score, param, steps, settings, bounds=bounds, autocast=autocast, graphed=graphed):
        if step.losses["total"] < best_value:
            best_value = step.losses["total"]
            keep(step.scored, step.losses)
        yield step
    if steps > 0:
        # The final parameters were never scored; score them so "best" is honest.
        with torch.no_grad(), autocast_to(param.device, autocast):
            value, parts = score(param.detach())
        final = {k: float(v) for k, v in parts.items()} | {"total": float(value)}
        if math.isfinite(final["total"]) and final["total"] <= best_value:
            keep(param.detach().clone(), final)
