"""Optical flow between content frames, warping, occlusion masks and the warping error.

After Ruder, Dosovitskiy & Brox 2016 ("Artistic style transfer for videos"): the flow
is computed on the content frames (OpenCV's DIS flow), the previous stylised frame is
warped backwards into the current one, and pixels where the forward and backward flows
disagree (occlusions, disocclusions) or that sit on a motion boundary are masked out.

The picture a frame starts from (`FrameMotion.carry`) is warped bicubically (Catmull-Rom): bilinear
warps, repeated frame after frame, blur the painting (the variance of the Laplacian halved
over 40 frames of a slow pan), and its pixels that come from outside the previous frame
start from the content frame in the painting's colours, not from its smeared edge.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import numpy as np

from ..errors import ImpastoError
from .io import INSTALL_HINT


def require_cv2() -> Any:
    try:
        import cv2
    except ImportError:
        raise ImpastoError(f"video needs OpenCV for optical flow: {INSTALL_HINT}") from None
    return cv2


@dataclass
class FrameMotion:
    """How frame t relates to frame t-1: where each of its pixels came from, and which to trust."""

    map_x: np.ndarray  # (H, W) float32: x in frame t-1 of each pixel of frame t
    map_y: np.ndarray
    mask: np.ndarray  # (H, W) float32: 1 where the warp is trusted, 0 at occlusions and motion boundaries

    @property
    def trusted(self) -> float:
        """The fraction of pixels whose warp is trusted."""
        return float(self.mask.mean())

    @property
    def outside(self) -> np.ndarray:
        """(H, W) bool: pixels of frame t that came from outside frame t-1 (what a pan brings in)."""
        return outside_of(self.map_x, self.map_y)

    def warp(self, previous: np.ndarray) -> np.ndarray:
        """Frame t-1 (HxWxC, float32 or uint8) moved to where its pixels are in frame t, bilinearly
        (as the warping error is measured); pixels from outside take its nearest edge pixel."""
        cv2 = require_cv2()
        return cv2.remap(previous, self.map_x, self.map_y, cv2.INTER_LINEAR, borderMode=cv2.BORDER_REPLICATE)

    def carry(self, previous: np.ndarray, content: np.ndarray) -> np.ndarray:
        """The picture frame t starts from: stylised frame t-1 (HxWx3 uint8) moved along the motion,
        by Catmull-Rom bicubic interpolation (clipped to 0..255), so that it stays sharp over many frames; the pixels
        that came from outside it (and are out of the mask) from `content`, frame t's photo, with
        the colours of the painting (each channel's mean and spread made those of frame t-1), not
        from frame t-1's edge smeared into streaks."""
        warped = remap_catmull_rom(previous.astype(np.float32), self.map_x, self.map_y)
        outside = self.outside
        if outside.any():
            painted = previous.reshape(-1, previous.shape[-1]).astype(np.float64)
            photo = content.reshape(-1, content.shape[-1]).astype(np.float64)
            scale = painted.std(axis=0) / np.maximum(photo.std(axis=0), 1e-6)
            recoloured = (content.astype(np.float64) - photo.mean(axis=0)) * scale + painted.mean(axis=0)
            warped[outside] = recoloured[outside]
        return np.clip(np.rint(warped), 0, 255).astype(np.uint8)


def outside_of(map_x: np.ndarray, map_y: np.ndarray) -> np.ndarray:
    """Where a backward map samples outside the picture it maps from (same size)."""
    h, w = map_x.shape
    return (map_x < 0) | (map_x > w - 1) | (map_y < 0) | (map_y > h - 1)


def remap_catmull_rom(image: np.ndarray, map_x: np.ndarray, map_y: np.ndarray) -> np.ndarray:
    """`image` (HxWxC float32) sampled at (map_x, map_y) by Catmull-Rom bicubic interpolation, past
    the edges as the nearest edge pixel (as cv2.remap with BORDER_REPLICATE).

    Not cv2.remap's INTER_CUBIC: its kernel (a = -0.75) lifts middle frequencies by up to 3% a
    warp, which frame after frame compounds into ringing (a picture panned half a pixel 40
    times got 3.4 times its variance of the Laplacian); Catmull-Rom's (a = -0.5) does not (it kept
    0.8 times, bilinear 0.3 times).
    """
    h, w = image.shape[:2]
    x0, y0 = np.floor(map_x), np.floor(map_y)

    def weights(t: np.ndarray) -> list[np.ndarray]:
        t = t[..., None]  # over the channels
        t2, t3 = t * t, t * t * t
        return [-0.5 * t3 + t2 - 0.5 * t, 1.5 * t3 - 2.5 * t2 + 1, -1.5 * t3 + 2 * t2 + 0.5 * t, 0.5 * t3 - 0.5 * t2]

    columns = [np.clip(x0 + k, 0, w - 1).astype(np.intp) for k in (-1, 0, 1, 2)]
    rows = [np.clip(y0 + k, 0, h - 1).astype(np.intp) for k in (-1, 0, 1, 2)]
    out = np.zeros(map_x.shape + image.shape[2:], dtype=np.float32)
    for row, wy in zip(rows, weights(map_y - y0)):
        for column, wx in zip(columns, weights(map_x - x0)):
            out += wy * wx * image[row, column]
    return out


class FlowEstimator:
    """Dense DIS optical flow; one instance per video (OpenCV reuses its buffers)."""

    def __init__(self) -> None:
        cv2 = require_cv2()
        self._cv2 = cv2
        self._dis = cv2.DISOpticalFlow_create(cv2.DISOPTICAL_FLOW_PRESET_MEDIUM)

    def flow(self, source: np.ndarray, target: np.ndarray) -> np.ndarray:
        """(H, W, 2) displacement taking each pixel of `source` to its place in `target`."""
        return self._dis.calc(self._grey(source), self._grey(target), None)

    def motion(self, previous: np.ndarray, current: np.ndarray) -> FrameMotion:
        """Backward warp from `previous` to `current` (RGB uint8 frames of one size) and its mask."""
        backward = self.flow(current, previous)
        forward = self.flow(previous, current)
        h, w = backward.shape[:2]
        grid_x, grid_y = np.meshgrid(np.arange(w, dtype=np.float32), np.arange(h, dtype=np.float32))
        map_x, map_y = grid_x + backward[..., 0], grid_y + backward[..., 1]
        mask = consistency_mask(backward, forward, map_x, map_y, self._cv2)
        return FrameMotion(map_x, map_y, mask)

    def _grey(self, frame: np.ndarray) -> np.ndarray:
        if frame.ndim == 2:
            return frame
        return self._cv2.cvtColor(np.ascontiguousarray(frame), self._cv2.COLOR_RGB2GRAY)


def consistency_mask(backward: np.ndarray, forward: np.ndarray, map_x: np.ndarray, map_y: np.ndarray, cv2: Any) -> np.ndarray:
    """Ruder et al.'s mask: 0 where going back then forth does not return home, on motion
    boundaries, and where a pixel came from outside the previous frame; 1 elsewhere."""
    # The forward flow at the place each pixel came from; it should undo the backward flow.
    forward_there = cv2.remap(forward, map_x, map_y, cv2.INTER_LINEAR, borderMode=cv2.BORDER_REPLICATE)
    round_trip = np.sum((forward_there + backward) ** 2, axis=-1)
    magnitudes = np.sum(forward_there**2, axis=-1) + np.sum(backward**2, axis=-1)
    occluded = round_trip > 0.01 * magnitudes + 0.5
    du_y, du_x = np.gradient(backward[..., 0])
    dv_y, dv_x = np.gradient(backward[..., 1])
    boundary = du_x**2 + du_y**2 + dv_x**2 + dv_y**2 > 0.01 * np.sum(backward**2, axis=-1) + 0.002
    outside = outside_of(map_x, map_y)
    return (~(occluded | boundary | outside)).astype(np.float32)


def warping_error(previous: np.ndarray, current: np.ndarray, motion: FrameMotion) -> float:
    """Mean squared difference, in [0, 1] pixel units, between `current` and `previous` warped
    into it, over the pixels the mask trusts (the usual temporal-consistency metric)."""
    prev = previous.astype(np.float32) / 255.0 if previous.dtype == np.uint8 else previous.astype(np.float32)
    cur = current.astype(np.float32) / 255.0 if current.dtype == np.uint8 else current.astype(np.float32)
    squared = ((cur - motion.warp(prev)) ** 2).mean(axis=-1)
    trusted = float(motion.mask.sum())
    if trusted == 0:
        return float("nan")  # a cut: nothing of the previous frame is visible
    return float((squared * motion.mask).sum() / trusted)
