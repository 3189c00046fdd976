"""L-BFGS directions for optimize.descend(), which makes the moves itself.

Quasi-Newton without a line search, as torch.optim.LBFGS(max_iter=1) ran it here until
session 25: each iteration one gradient, one direction from the last `history` pairs of
(move, change of gradient), one step of the learning rate. descend() then changes the step (a
first step of about a grey level, the clamp to the pixels' bounds, half a step back after a
landing far uphill), and L-BFGS must learn its curvature from the move actually made. torch's
optimiser only knew the step it had proposed, so descend() rewrote its private state ("d" and
"t") after each move; here the move is simply told. It also keeps each gradient as autograd
made it (a fresh tensor every iteration) instead of copying it, and computes no direction for
a step that is taken back.
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
            curvature = float(change.dot(self._move))
            if curvature > MIN_CURVATURE:
                self.pairs.append((self._move, change, 1.0 / curvature))
                self.scale = curvature / float(change.dot(change))
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
        alphas = []
        for s, y, rho in reversed(self.pairs):
            alpha = float(s.dot(q)) * rho
            q.add_(y, alpha=-alpha)
            alphas.append(alpha)
        q.mul_(self.scale)
        for (s, y, rho), alpha in zip(self.pairs, reversed(alphas)):
            beta = float(y.dot(q)) * rho
            q.add_(s, alpha=alpha - beta)
        return q

    def moved(self, move: torch.Tensor) -> None:
        """The move (flat, a tensor of its own) made from the point of the last gradient learnt."""
        self._move = move

    def forget(self) -> None:
        """Start again from steepest descent, as when a direction does not descend."""
        self.pairs.clear()
        self.scale = 1.0
