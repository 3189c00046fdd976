"""A picture's run: its objective and its way through the scales (each scale's descent: descent.py).

A run goes coarse to fine (scales.py). Each scale starts from the previous result
upsampled, recomputes the content and style targets at its own size (the
style image is resized with the output, so strokes keep their size relative
to the picture; style_stats.py), and spends its iterations where they are cheap: many at the
coarsest scale, few at the finest. A scale too large for memory is optimised in
overlapping tiles, one after another, blended into one picture (tiles.py).
"""

from __future__ import annotations

import time
from collections import Counter
from dataclasses import dataclass, field
from typing import Callable, Iterator, Mapping, Optional, Sequence, cast

import torch

from . import color
from . import losses as L
from .descent import descend_keeping_best
from .device import autocast_off, mixed_precision, seeded_generator
from .errors import ImpastoError, NonFiniteLoss, option
from .grain import held_detail, painting_grain
from .images import box_mean, resize_tensor
from .scales import min_side, plan_iterations, plan_scales, scale_settings
from .settings import Settings
from .style_stats import StatsCache, style_long_side, style_pieces, style_size, style_statistics
from .tiles import Region, blend_weights, choose_tile, layer_crop, plan_tiles, style_margins, tile_overlap
from .vgg import FeatureExtractor, ReluWith


@dataclass
class Progress:
    """One iteration's news. `image` is the picture its `losses` were measured on (for a picture
    cut into tiles, the whole picture as it stood), a tensor of its own: a callback may keep it."""

    scale: int  # 0-based
    scales: int
    size: tuple[int, int]  # (width, height) of this scale
    step: int  # 1-based within the scale
    steps: int
    done: int  # iterations finished over all scales
    total: int
    losses: dict[str, float]
    image: torch.Tensor
    elapsed: float
    tile: int = 0  # 0-based, of `tiles` this scale is cut into (plan_tiles)
    tiles: int = 1
    # The share (0-1) of the run's work done, counted as pixels x iterations: a fine scale's
    # iteration costs many coarse ones. None where the caller does not count it (audio).
    work: Optional[float] = None

    @property
    def is_last(self) -> bool:
        """The run's last iteration (at a coarser scale when the finest has none to run)."""
        return self.done == self.total


@dataclass
class StyleInput:
    image: torch.Tensor  # (1, 3, h, w) in [0, 1], any size
    weight: float = 1.0
    mask: Optional[torch.Tensor] = None  # (1, 1, H, W) in [0, 1] over the output; None = everywhere


@dataclass
class Outcome:
    image: Optional[torch.Tensor] = None  # best image of the last scale reached
    losses: dict[str, float] = field(default_factory=dict)
    history: list[dict[str, float]] = field(default_factory=list)


# Local contrast (standard deviation of luminance, 0-1) at and above which an area of the
# photo counts as detailed: its content weight is whole. 0.05 is ~13 grey levels; the
# white quarter of benchmarks/heldout.py's cut-out has 0, the coffee cup beside it more.
FLAT_CONTRAST = 0.05
# The default (flat_content None) frees flat areas only on a photo with a flat background: a
# tenth of it or more of one colour (to within half a grey level), as a cut-out on white, a
# scan's margin or a studio backdrop has and gradients have not (of the quality benchmark's
# photos, the astronaut has most: 3.3%, where its shadows clip to black). A camera's pixel noise
# is averaged out first, over 1/FLAT_BACKGROUND_DENOISE of the picture (5 px at 512): else a grey
# backdrop with noise of 2 grey levels a pixel is not freed and gets the blocks as badly as a
# white one (benchmarks/README.md, held-out inputs), while the benchmark's photos measure the
# same either way. Measured on the photo at 512 px at most, so the same photo gets the same
# picture at every --size.
FLAT_BACKGROUND_SHARE = 0.1
FLAT_BACKGROUND_CONTRAST = 0.5 / 255
FLAT_BACKGROUND_DENOISE = 100
FLAT_BACKGROUND_FLOOR = 0.1
FLAT_ANALYSIS_SIZE = 512
# The fine content layers' weight where the photo is flat (whole where it has detail). At 0 the
# painting's statistics, held off the detail, crowd into the smooth areas (a sky): the picture
# as a whole moves away from the photo (the rocket with The Scream, the astronaut with The
# Starry Night). At 1 the sky is held as well, and the Shipwreck's large shapes do not form in
# the rocket's sky. Half wins all three (benchmarks/README.md, session 39).
FINE_CONTENT_FLOOR = 0.5


def local_contrast(content: torch.Tensor, denoise: int = 1) -> torch.Tensor:
    """(1, 1, H, W) standard deviation of a (1, 3, H, W) photo's luminance over a window of 1/16
    of the picture around each pixel (0-1), on the photo's device; with `denoise` (odd) > 1, of
    the luminance averaged over `denoise` x `denoise` pixels first, so a camera's pixel noise,
    which averages out, is not counted as contrast."""
    # In float64: E[y²] - E[y]² of a flat area is rounding noise in float32 (~0.0001, not 0).
    luma = content.cpu().double().mean(dim=1, keepdim=True)  # moved, then converted (see losses._float64)
    if denoise > 1:
        luma = box_mean(luma, denoise)
    k = max(3, max(content.shape[-2:]) // 16 | 1)  # a window of 1/16 of the picture, odd
    mean = box_mean(luma, k)
    spread = (box_mean(luma * luma, k) - mean * mean).clamp_min(0).sqrt()
    return spread.to(content.device, content.dtype)


def flat_weights(content: torch.Tensor, floor: float) -> torch.Tensor:
    """(1, 1, H, W) content weights for a (1, 3, H, W) photo: `floor` where it is flat, 1 where
    its local contrast reaches FLAT_CONTRAST, in proportion between.

    On a flat area the content loss holds the painting's larger shapes back and leaves a
    regular pattern of small cells (benchmarks/README.md, held-out inputs); there is nothing
    of the photo to keep there, so a lower weight lets the painting fill it.
    """
    return (local_contrast(content) / FLAT_CONTRAST).clamp(floor, 1.0)


def content_fine_layers(settings: Settings) -> tuple[str, ...]:
    """The fine content layers `settings` adds to its content layers (none without content layers:
    texture synthesis keeps no part of the photo)."""
    if not settings.content_layers:
        return ()
    return tuple(k for k in dict.fromkeys(settings.fine_content_layers) if k not in settings.content_layers)


def flat_background_share(content: torch.Tensor) -> float:
    """The share (0-1) of a (1, 3, H, W) photo that is of one colour around it (to within half a grey level)."""
    h, w = content.shape[-2:]
    scale = min(1.0, FLAT_ANALYSIS_SIZE / max(h, w))
    small = resize_tensor(content, (max(1, round(h * scale)), max(1, round(w * scale))))
    denoise = max(small.shape[-2:]) // FLAT_BACKGROUND_DENOISE | 1
    return float((local_contrast(small, denoise) < FLAT_BACKGROUND_CONTRAST).float().mean())


def resolve_flat_content(settings: Settings, content: torch.Tensor) -> Settings:
    """`settings` with the default flat_content (None) decided for the (1, 3, H, W) photo
    `content`: FLAT_BACKGROUND_FLOOR where it has a flat background, else 1; a number given is kept."""
    if settings.flat_content is not None:
        return settings
    flat = flat_background_share(content) >= FLAT_BACKGROUND_SHARE
    return settings.replace(flat_content=FLAT_BACKGROUND_FLOOR if flat else 1.0)


def flat_background_notes(asked: Settings, ran: Settings, photo: str = "the photo") -> list[str]:
    """A run's notes (api.Result.notes) on its flat background: one line when the run, not its
    user, lowered the content weight there (`asked` left flat_content unset and `ran` is
    resolve_flat_content's), since that changes the look of that area; else none."""
    if asked.flat_content is not None or ran.flat_content is None or ran.flat_content >= 1:
        return []
    return [f"{photo} has a flat background (a tenth or more of it of one colour), so the painting fills it freely "
            f"(content weight {ran.flat_content:g} there); to hold it to the photo like the rest, use {option('flat_content', 1)}"]  # fmt: skip


class Objective:
    """The weighted sum of content, style and TV losses at one scale."""

    def __init__(
        self,
        extractor: FeatureExtractor,
        settings: Settings,
        content: torch.Tensor,
        styles: Sequence[StyleInput],
        size: tuple[int, int],
        cache: Optional["StatsCache"] = None,
        extra_loss: Optional["ExtraLoss"] = None,
        region: Optional[Region] = None,
        tile: int = 0,
        style_offsets: Optional[Mapping[str, L.Stats]] = None,
        style_margins: Optional[L.Crop] = None,
    ) -> None:
        """The objective of the (w, h) `size` scale; with `region`, of that tile of it: the
        content target is the tile's, the style targets the whole picture's (so strokes keep
        their size), computed in `tile`-sized pieces where the style image is that large, and
        moved by `style_offsets` (tile_style_offsets), layer by layer, where given; its style
        losses leave out `style_margins` (tiles.style_margins) where given."""
        self.extractor = extractor
        self.extra_loss = extra_loss
        self.settings = settings
        self.margins = style_margins if style_margins and any(style_margins) else None
        w, h = size
        x0, y0, x1, y1 = region or (0, 0, w, h)
        pairs = chain_pairs(settings)
        with torch.no_grad():
            photo = resize_tensor(content, (h, w))
            content_feats = extractor(photo[..., y0:y1, x0:x1])
            fine = content_fine_layers(settings)
            self.content_targets = {k: content_feats[k].detach() for k in settings.content_layers + fine}
            self.content_energy = {k: t.pow(2).mean() for k, t in self.content_targets.items()}
            # None (one weight everywhere) unless asked.
            self.content_weights: dict[str, Optional[torch.Tensor]] = {k: None for k in self.content_targets}
            flat = settings.flat_content is not None and settings.flat_content < 1
            if flat or fine:
                # Measured once (the photo's local contrast), each use clamps it to its own floor;
                # of the whole picture: a tile's edge is not an edge of the photo.
                detail = flat_weights(photo, 0.0)[..., y0:y1, x0:x1]
            if flat:
                for k in self.content_targets:
                    self.content_weights[k] = _mask_like(detail.clamp_min(cast(float, settings.flat_content)), content_feats[k])
            if fine:
                # fine_content_weight where the photo has detail, half that where it is smooth (FINE_CONTENT_FLOOR).
                for k in fine:
                    weight = settings.fine_content_weight * cast(torch.Tensor, _mask_like(detail.clamp_min(FINE_CONTENT_FLOOR), content_feats[k]))  # a mask given: a tensor
                    prior = self.content_weights[k]
                    self.content_weights[k] = weight if prior is None else weight * prior
            per_style, per_style_chain = [], []
            for style in styles:
                sw, sh = style_size(style.image.shape, style_long_side(max(w, h), settings), min_side(settings))
                stats, chain = style_statistics(extractor, style.image, (sh, sw), settings.style_layers, pairs, cache, tile)
                per_style.append(stats)
                per_style_chain.append(chain)
        if region is not None:
            # One crop per mask tensor: styles sharing a mask must still share it (_group_by_mask).
            crops = {id(s.mask): _crop_mask(s.mask, size, region) for s in styles if s.mask is not None}
            styles = [StyleInput(s.image, s.weight, crops.get(id(s.mask))) for s in styles]
        self.style_losses: list[tuple[str, float, L.StyleLossFn]] = []
        layer_weights = settings.layer_weights()
        groups = _group_by_mask(styles)
        for layer, lw in zip(settings.style_layers, layer_weights):
            for mask, members in groups:
                target = L.blend_stats([per_style[i][layer] for i in members], [styles[i].weight for i in members])
                if style_offsets is not None:
                    target = L.Stats(target.mean + style_offsets[layer].mean, target.moment + style_offsets[layer].moment)
                crop = self._crop(layer, content_feats[layer])
                fn = L.make_style_loss(settings.style_loss, target, settings.gram_shift, _crop_mask_map(_mask_like(mask, content_feats[layer]), crop))
                if crop is not None:
                    fn = fn.cropped(crop) if isinstance(fn, L.FusableLoss) else _on_crop(fn, crop)
                self.style_losses.append((layer, lw / len(groups), fn))
        # A layer's only style loss, where a ReLU follows the layer, is computed inside that ReLU
        # (losses.FusableLoss): the map's two gradients meet in one backward pass.
        count = Counter(layer for layer, _, _ in self.style_losses)
        self.fused = {layer: fn for layer, _, fn in self.style_losses if count[layer] == 1 and isinstance(fn, L.FusableLoss) and extractor.relu_follows(layer)}
        # Chained inference: one cross-layer term per adjacent pair, weighted like its shallower layer.
        self.chain_losses: list[tuple[str, str, float, L.ChainLossFn]] = []
        for (a, b), lw in zip(pairs, layer_weights):
            for mask, members in groups:
                cross = L.blend_cross_stats([per_style_chain[i][(a, b)] for i in members], [styles[i].weight for i in members])
                ends = self._crop(a, content_feats[a]), self._crop(b, content_feats[b])
                chain_fn = L.chain_loss(cross, settings.gram_shift, _crop_mask_map(_mask_like(mask, content_feats[a]), ends[0]))
                if self.margins is not None:
                    chain_fn = _on_crops(chain_fn, *ends)
                self.chain_losses.append((a, b, lw / len(groups), chain_fn))

    def _crop(self, layer: str, features: torch.Tensor) -> Optional[L.Crop]:
        """What the style losses of `layer` leave out of maps like `features`: the margins in its pixels."""
        return None if self.margins is None else layer_crop(features.shape, layer, self.margins)

    def __call__(self, image: torch.Tensor) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
        total, parts, _ = self._evaluate(image)
        return total, parts

    def terms(self, image: torch.Tensor) -> dict[str, float]:
        """The objective at `image` split into its weighted terms: total, content, tv, one per
        style layer (and chained pair), and any extra loss; they sum to the total. For seeing
        which terms a run spends its iterations on (benchmarks/fine_scale.py)."""
        with torch.no_grad():
            total, parts, weighted = self._evaluate(image)
        s = self.settings
        out = {"total": float(total), "content": s.content_weight * float(parts["content"]), "tv": s.tv_weight * float(parts["tv"])}
        for name, value in weighted:
            out[name] = out.get(name, 0.0) + s.style_weight * float(value)
        out.update({k: float(v) for k, v in parts.items() if k not in ("content", "style", "tv")})
        return out

    def _evaluate(self, image: torch.Tensor) -> tuple[torch.Tensor, dict[str, torch.Tensor], list[tuple[str, torch.Tensor]]]:
        # The losses compute in fp32 even under mixed precision (a Gram matrix sums products over
        # every pixel and overflows fp16's 65504 at the first layers), from the features as they
        # come: each upcasts what it needs (losses.py).
        fused: dict[str, torch.Tensor] = {}

        def relu_with(layer: str, fn: L.FusableLoss) -> ReluWith:
            def relu(features: torch.Tensor) -> torch.Tensor:
                with autocast_off(features.device):
                    fused[layer], out = fn.with_relu(features)
                return out

            return relu

        feats = self.extractor(image, {layer: relu_with(layer, fn) for layer, fn in self.fused.items()})
        with autocast_off(image.device):
            return self._losses(image, feats, fused)

    def _losses(
        self, image: torch.Tensor, feats: dict[str, torch.Tensor], fused: dict[str, torch.Tensor]
    ) -> tuple[torch.Tensor, dict[str, torch.Tensor], list[tuple[str, torch.Tensor]]]:
        """The objective from the maps `feats`, and `fused`, the style losses already computed
        with their layers' ReLUs."""
        s = self.settings
        if self.content_targets:
            # The mean over the content layers, the fine layers' terms added on top: a fine layer
            # weighing less where the photo is smooth must not lower the others' weight there.
            content = cast(torch.Tensor, sum(L.content_loss(feats[k], t, self.content_weights[k], self.content_energy[k]) for k, t in self.content_targets.items())) / len(s.content_layers)
        else:  # no content layers: texture synthesis
            content = image.new_zeros(())
        # Style terms, each already times its layer weight; named so terms() can report them.
        weighted = [(layer, w * (fused[layer] if layer in fused else fn(feats[layer]))) for layer, w, fn in self.style_losses]
        weighted += [(f"{a}x{b}", w * fn(feats[a], feats[b])) for a, b, w, fn in self.chain_losses]
        style = cast(torch.Tensor, sum(v for _, v in weighted)) if weighted else image.new_zeros(())
        tv = L.tv_loss(image.float())
        total = s.content_weight * content + s.style_weight * style + s.tv_weight * tv
        parts = {"content": content, "style": style, "tv": tv}
        if self.extra_loss is not None:
            for name, value in self.extra_loss(image).items():
                total = total + value
                parts[name] = value
        return total, parts, weighted


def _crop_mask_map(mask: Optional[torch.Tensor], crop: Optional[L.Crop]) -> Optional[torch.Tensor]:
    return None if mask is None else L.crop_map(mask, crop)


def _on_crop(fn: L.StyleLossFn, crop: L.Crop) -> L.StyleLossFn:
    return lambda features: fn(L.crop_map(features, crop))


def _on_crops(fn: L.ChainLossFn, shallow: Optional[L.Crop], deep: Optional[L.Crop]) -> L.ChainLossFn:
    return lambda a, b: fn(L.crop_map(a, shallow), L.crop_map(b, deep))


def photo_detail(content: torch.Tensor, coarse: tuple[int, int], fine: tuple[int, int]) -> torch.Tensor:
    """The photo at the (w, h) `fine` size minus its round trip through `coarse`: the detail
    an upsampled coarse result lacks, which the finest scale would otherwise rebuild slowly."""
    (cw, ch), (fw, fh) = coarse, fine
    sharp = resize_tensor(content, (fh, fw))
    return sharp - resize_tensor(resize_tensor(content, (ch, cw)), (fh, fw))


def tile_style_offsets(
    extractor: FeatureExtractor, canvas: torch.Tensor, tiles: Sequence[Region], layers: Sequence[str], margins: Sequence[L.Crop]
) -> list[dict[str, L.Stats]]:
    """For each tile of a scale, how the statistics of its part of the picture differ from the
    whole picture's, as the scale starts (the coarser scales' result, which fitted whole).

    A tile matched to the painting's statistics as they are must hold all of the painting on
    its own: a tile of plain sky gets the village's and the moon's colours, as blotches. Each
    tile's targets moved by its offset keep the layout the coarse scales gave, while the
    tiles' targets still average (by area) to the painting's. Each tile is measured as its style
    losses will see it, without its `margins` (tiles.style_margins, one per tile).
    """
    per_tile, areas = [], []
    with torch.no_grad():
        for (x0, y0, x1, y1), edges in zip(tiles, margins):
            features = extractor(canvas[..., y0:y1, x0:x1])
            per_tile.append({layer: L.feature_stats(L.crop_map(features[layer], layer_crop(features[layer].shape, layer, edges)).float()) for layer in layers})
            top, bottom, left, right = edges
            areas.append((x1 - x0 - left - right) * (y1 - y0 - top - bottom))
    whole = {layer: L.blend_stats([stats[layer] for stats in per_tile], areas) for layer in layers}
    return [{layer: L.Stats(stats[layer].mean - whole[layer].mean, stats[layer].moment - whole[layer].moment) for layer in layers}
            for stats in per_tile]  # fmt: skip


def scale_start(
    image: torch.Tensor,
    content: torch.Tensor,
    coarse: Optional[tuple[int, int]],
    fine: tuple[int, int],
    settings: Settings,
    styles: Sequence[StyleInput] = (),
    generator: Optional[torch.Generator] = None,
) -> torch.Tensor:
    """The start of the (w, h) `fine` scale from the result at `coarse` (None: the first scale).

    The coarse scale cannot hold the photo's fine detail, and the finer scale is slow to
    rebuild it through the content loss (benchmarks/fine_scale.py): so it is put back here,
    `settings.upsample_detail` of it. Not for texture synthesis, where there is no photo to keep.
    Nor can it hold the painting's fine grain, which the finer scale grows slowly from a smooth
    start: `settings.upsample_grain` of it is added where the picture lacks it (grain.py), its
    phases drawn from `generator` (None: from the run's seed).
    """
    w, h = fine
    start = resize_tensor(image, (h, w))
    if coarse is not None and settings.upsample_detail > 0 and settings.content_layers and settings.content_weight > 0:
        start = start + settings.upsample_detail * photo_detail(content, coarse, fine)
    if coarse is not None and settings.upsample_grain > 0 and styles:
        generator = generator or seeded_generator(settings.seed)
        start = start.clamp(0, 1)
        held = held_detail(start, coarse)
        grain = blend_by_painting(styles, lambda s: painting_grain(start, s.image, coarse, settings, generator, held), torch.zeros_like(start))
        start = start + settings.upsample_grain * grain
    return start.clamp(0, 1)


def _crop_mask(mask: torch.Tensor, size: tuple[int, int], region: Region) -> torch.Tensor:
    """The part of a (1, 1, H, W) output mask over `region` of the (w, h) `size` scale."""
    w, h = size
    x0, y0, x1, y1 = region
    return torch.nn.functional.interpolate(mask, size=(h, w), mode="bilinear", align_corners=False)[..., y0:y1, x0:x1]


def _mask_like(mask: Optional[torch.Tensor], features: torch.Tensor) -> Optional[torch.Tensor]:
    """A (1, 1, H, W) output mask as (h, w) at a layer's resolution, or None for everywhere."""
    if mask is None:
        return None
    return torch.nn.functional.interpolate(mask, size=tuple(features.shape[-2:]), mode="bilinear", align_corners=False)[0, 0]


def _group_by_mask(styles: Sequence[StyleInput]) -> list[tuple[Optional[torch.Tensor], list[int]]]:
    """Styles without a mask blend into one target, and so do styles sharing one mask tensor
    (the API gives every unmasked style the same "not kept" mask under --keep-mask);
    each other masked style is its own region."""
    groups: list[tuple[Optional[torch.Tensor], list[int]]] = []
    unmasked = [i for i, s in enumerate(styles) if s.mask is None]
    if unmasked:
        groups.append((None, unmasked))
    for i, s in enumerate(styles):
        if s.mask is not None:
            for mask, members in groups:
                if mask is s.mask:
                    members.append(i)
                    break
            else:
                groups.append((s.mask, [i]))
    # A region whose styles all weigh 0 has no painting to match: it keeps the photo, not a 0/0 blend.
    return [(mask, members) for mask, members in groups if sum(styles[i].weight for i in members) > 0]


def chain_pairs(settings: Settings) -> list[tuple[str, str]]:
    """Adjacent style layers, shallow first, for chained inference (empty when it is off)."""
    if not settings.style_chain:
        return []
    return list(zip(settings.style_layers[:-1], settings.style_layers[1:]))


def initial_image(settings: Settings, content: torch.Tensor, styles: Sequence[StyleInput], size: tuple[int, int], init_image: Optional[torch.Tensor]) -> torch.Tensor:
    w, h = size
    if init_image is not None:  # given explicitly, or by a file path in settings.init
        return resize_tensor(init_image, (h, w))
    if settings.init == "content" or (settings.init == "palette" and settings.preserve_color is not None):
        return resize_tensor(content, (h, w))
    if settings.init == "palette":
        # The photo in the paintings' colours. From the photo's own, the run spends its coarse
        # iterations moving colours and can settle short of the painting's palette (the cat with
        # The Scream: VGG16 style distance 0.026 against 0.009 from here; benchmarks/README.md,
        # session 29). With colours kept (preserve_color) the photo's are the point: it starts from the photo.
        return palette_start(resize_tensor(content, (h, w)), styles)
    if settings.init == "noise":
        g = seeded_generator(settings.seed)
        # Noise around the content's mean colour converges faster than uniform noise.
        noise = torch.rand(1, 3, h, w, generator=g).to(content)
        return (content.mean(dim=(2, 3), keepdim=True) + (noise - 0.5) * 0.5).clamp(0, 1)
    if settings.init == "style":
        return resize_tensor(styles[0].image, (h, w))
    raise ImpastoError(f"init {settings.init!r}: no image given")


def palette_start(photo: torch.Tensor, styles: Sequence[StyleInput]) -> torch.Tensor:
    """The photo in the paintings' colours (color.in_palette: their blend's mean and covariance).
    Where masks confine the paintings, each region takes its own painting's colours (blended by
    weight where regions overlap), and where none paints (a painting of weight 0, a kept region)
    the photo stays as it is."""
    if all(s.mask is None for s in styles):
        return color.in_palette(photo, [s.image for s in styles], [s.weight for s in styles])
    return blend_by_painting(styles, lambda s: color.match_histogram(photo, s.image), photo)


def blend_by_painting(styles: Sequence[StyleInput], each: Callable[[StyleInput], torch.Tensor], outside: torch.Tensor) -> torch.Tensor:
    """`each(style)` (1, C, H, W) of every painting of weight above 0, blended by weight where
    paintings overlap, each in its mask's region; `outside` where none paints (a painting of
    weight 0, a kept region), and a soft mask's edge (coverage under 1) fading into it."""
    h, w = outside.shape[-2:]
    coverage, weights = outside.new_zeros(1, 1, h, w), outside.new_zeros(1, 1, h, w)
    blended = torch.zeros_like(outside)
    for s in styles:
        if s.weight <= 0:
            continue
        where = outside.new_ones(1, 1, h, w) if s.mask is None else resize_tensor(s.mask.to(outside), (h, w)).clamp(0, 1)
        blended += s.weight * where * each(s)
        weights += s.weight * where
        coverage += where
    coverage = coverage.clamp(max=1.0)
    return torch.where(weights > 0, coverage * blended / weights.clamp_min(1e-12) + (1 - coverage) * outside, outside)


ExtraLoss = Callable[[torch.Tensor], dict[str, torch.Tensor]]


def uses_cuda_graph(settings: Settings, device: torch.device) -> bool:
    """Whether a picture's descent records its passes as a CUDA graph: on CUDA unless switched
    off, and not for the W2 loss, whose eigendecomposition (cuSOLVER) checks its convergence from
    the host, which no graph can record; its failed capture also left cuSOLVER failing the plain
    passes after it (an H200, torch 2.11), so it is not tried."""
    return settings.cuda_graphs and device.type == "cuda" and settings.style_loss in L.CAPTURABLE_STYLE_LOSSES


def optimise(
    extractor: FeatureExtractor,
    settings: Settings,
    content: torch.Tensor,
    styles: Sequence[StyleInput],
    outcome: Outcome,
    init_image: Optional[torch.Tensor] = None,
    cache: Optional[StatsCache] = None,
    extra_loss: Optional[ExtraLoss] = None,
) -> Iterator[Progress]:
    """Yield a Progress per iteration, keeping `outcome` up to date as it goes.

    `outcome` holds the best image and losses so far, so a caller that stops
    early (Ctrl-C, a cancel) still has them. Raises NonFiniteLoss if the loss
    blows up; `outcome` then holds the last good image. `extra_loss(image)`
    returns further weighted terms (for example video's temporal loss), called
    with the image at each scale's size.
    """
    width, height = content.shape[-1], content.shape[-2]
    sizes = plan_scales(width, height, settings)
    steps = plan_iterations(len(sizes), settings)
    device = content.device
    tile = choose_tile(*sizes[-1], settings, device)
    if tile and extra_loss is not None:
        raise ImpastoError(f"a {sizes[-1][0]}x{sizes[-1][1]} output would be cut into tiles, which an extra loss (video's temporal term) cannot follow; choose a smaller {option('size')}")
    # The smallest pieces any painting needs serve them all.
    pieces = min((p for s in styles if (p := style_pieces(s.image.shape, max(sizes[-1]), settings, device, tile))), default=0)
    tiles_per_scale = [plan_tiles(w, h, tile) for w, h in sizes]
    if tile and cache is None:
        cache = StatsCache()  # each tile's objective needs the same style statistics: take them once
    total = sum(n * len(tiles) for n, tiles in zip(steps, tiles_per_scale))
    # Pixels x iterations: what an iteration costs grows with its pixels, so a progress GIF
    # spread by this gives the finest scale, most of the time, its share of the frames.
    work_total = sum(n * (x1 - x0) * (y1 - y0) for n, tiles in zip(steps, tiles_per_scale) for x0, y0, x1, y1 in tiles)
    work_done = 0
    # No torch.manual_seed here: nothing below draws from the global generator (a noise start
    # has its own), and reseeding it would repeat the caller's own random draws after each run.
    autocast = mixed_precision(settings, device)
    graphed = uses_cuda_graph(settings, device)
    start = time.perf_counter()
    done = 0
    history = outcome.history
    image = initial_image(settings, content, styles, sizes[0], init_image)
    outcome.image = image.clone()
    grain_draws = seeded_generator(settings.seed)  # one stream over the scales: each upsampling draws its own grain
    for index, (size, n, tiles) in enumerate(zip(sizes, steps, tiles_per_scale)):
        # The picture of this scale, holding the best pixels found so far (of each tile).
        canvas = scale_start(outcome.image, content, sizes[index - 1] if index else None, size, settings, styles, grain_draws).contiguous()
        outcome.image = canvas
        if n == 0:
            outcome.losses = {}  # a coarser scale's losses (its own weights, its own size) do not describe this picture
        whole = len(tiles) == 1
        settings_here = scale_settings(settings, max(size), max(sizes[-1]))
        kept: list[tuple[int, dict[str, float]]] = []  # (area, best losses) of each tile done
        # A masked painting's tile is already matched to its own region (the mask's crop).
        offsets: Sequence[Optional[Mapping[str, L.Stats]]] = [None] * len(tiles)
        margins: Sequence[Optional[L.Crop]] = [None] * len(tiles)
        if not whole:
            edges = [style_margins(region, size, tile_overlap(tile)) for region in tiles]
            margins = edges
            if all(s.mask is None for s in styles):
                offsets = tile_style_offsets(extractor, canvas, tiles, settings_here.style_layers, edges)
        for number, region in enumerate(tiles):
            x0, y0, x1, y1 = region
            objective = Objective(extractor, settings_here, content, styles, size, cache, extra_loss, None if whole else region, pieces, offsets[number], margins[number])
            param = canvas[..., y0:y1, x0:x1].clone()
            # A tile is pasted over what was there before it, by its blend weights.
            under = None if whole else param.clone()
            weight = None if whole else blend_weights(region, tile_overlap(tile), size, device)
            best: dict[str, float] = {}

            def keep(pixels: torch.Tensor, losses: dict[str, float]) -> None:
                canvas[..., y0:y1, x0:x1] = pixels if whole else under + weight * (pixels - under)  # type: ignore[operator]
                outcome.losses = losses
                best.clear()
                best.update(losses)

            try:
                for step in descend_keeping_best(objective, param, n, settings, keep, autocast=autocast, graphed=graphed):
                    done += 1
                    work_done += (x1 - x0) * (y1 - y0)
                    # The content weight of this scale (coarse_content raises it below the output's size),
                    # so a plot can weight each row's terms as they added up to its total.
                    history.append({"scale": index, "iteration": done, **step.losses, "content_weight": settings_here.content_weight})
                    # The pixels the step's losses were measured on (a copy of their own), not the
                    # step's result, so a callback sees a picture and losses that belong together.
                    # A tiled scale shows the whole canvas: copied, since later tiles paint on it.
                    shown = step.scored if whole else canvas.clone()
                    yield Progress(index, len(sizes), size, number * n + step.number, n * len(tiles), done, total, step.losses, shown,
                                   time.perf_counter() - start, number, len(tiles), work_done / work_total)
            except NonFiniteLoss as exc:
                where = f"scale {index + 1}" + ("" if whole else f", tile {number + 1} of {len(tiles)}")
                raise NonFiniteLoss(f"at {where}: {exc}", canvas) from None
            kept.append(((x1 - x0) * (y1 - y0), dict(best)))
        if not whole and all(losses for _, losses in kept):
            # A summary for the caller: the tiles' own objectives, weighted by area. Each is
            # normalised by its own part of the photo, so it is not the whole picture's objective.
            area = sum(a for a, _ in kept)
            outcome.losses = {k: sum(a * losses[k] for a, losses in kept) / area for k in kept[0][1]}
