"""L-BFGS directions for descent.descend(), which makes the moves itself.

Quasi-Newton without a line search, as torch.optim.LBFGS(max_iter=1) ran it here until
session 25: each iteration one gradient, one direction from the last `history` pairs of
(move, change of gradient), one step of the learning rate. descend() then changes the step (a
first step of about a grey level, the clamp to the pixels' bounds, half a step back after a
landing far uphill), and L-BFGS must learn its curvature from the move actually made. torch's
optimiser only knew the step it had proposed, so descend() rewrote its private state ("d" and
"t") after each move; here the move is simply told. It also keeps each gradient as autograd
made it (a fresh tensor every iteration) instead of copying it, and computes no direction for
a step that is taken back.

On a GPU every number read back to Python waits for the device to finish all the work queued
before it, and leaves it idle while Python queues the next: the two-loop recursion reads none
(its coefficients stay on the device as 0-d tensors), and learning a pair reads one pair of numbers.
"""

from __future__ import annotations

from collections import deque
from typing import Optional

import torch

# A pair whose curvature y·s is not above this is skipped, as torch's LBFGS skips it: a move
# too small (or along a direction the gradient did not change) says nothing of the curvature.
MIN_CURVATURE = 1e-10


class LBFGS:
    """The memory of one descent: feed it each gradient (`learn`), ask it for a direction
    (`direction`), and tell it the move made from the point that gradient was taken at (`moved`)."""

    def __init__(self, history: int) -> None:
        self.pairs: deque[tuple[torch.Tensor, torch.Tensor, float]] = deque(maxlen=history)  # (s, y, 1/y·s)
        self.scale = 1.0  # y·s / y·y of the newest pair: the initial inverse Hessian's diagonal
        self._grad: Optional[torch.Tensor] = None  # the gradient the last move started from
        self._move: Optional[torch.Tensor] = None

    def learn(self, grad: torch.Tensor) -> None:
        """Take in the gradient at the point the last move reached: the pair (that move, the
        change of gradient) joins the memory, the oldest leaving it when it is full. `grad` (flat)
        is kept, not copied: the caller must not change it after."""
        if self._grad is not None and self._move is not None:
            change = grad - self._grad
            curvature, change_norm = torch.stack((change.dot(self._move), change.dot(change))).tolist()  # one read
            if curvature > MIN_CURVATURE:
                self.pairs.append((self._move, change, 1.0 / curvature))
                self.scale = curvature / change_norm
        self._grad, self._move = grad, None

    @property
    def gradient(self) -> torch.Tensor:
        """The last gradient learnt (flat)."""
        assert self._grad is not None, "learn() a gradient first"
        return self._grad

    def direction(self) -> torch.Tensor:
        """-H g for the last gradient learnt, H the memory's inverse Hessian (the two-loop
        recursion); steepest descent while the memory is empty."""
        q = self.gradient.neg()
        # Each alpha is rho·(s·q); kept as s·q, with rho applied in the update, one kernel fewer.
        dots = []
        for s, y, rho in reversed(self.pairs):
            dot = s.dot(q)
            q.addcmul_(y, dot, value=-rho)
            dots.append(dot)
        q.mul_(self.scale)
        for (s, y, rho), dot in zip(self.pairs, reversed(dots)):
            q.addcmul_(s, dot - y.dot(q), value=rho)  # (alpha - beta)·s, beta = rho·(y·q)
        return q

    def moved(self, move: torch.Tensor) -> None:
        """The move (flat, a tensor of its own) made from the point of the last gradient learnt."""
        self._move = move

    def forget(self) -> None:
        """Start again from steepest descent, as when a direction does not descend."""
        self.pairs.clear()
        self.scale = 1.0
