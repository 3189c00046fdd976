"""The coarse-to-fine plan, the optimisation loop and what it does when things go wrong."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch

from impasto import Settings
from impasto import losses as L
from impasto import device as impasto_device
from impasto import descent, images, optimize, style_stats, tiles
from impasto.lbfgs import LBFGS
from impasto.errors import ImpastoError
from impasto.presets import get_preset, preset_settings
from impasto.device import mixed_precision
from impasto.scales import plan_iterations, plan_scales, scale_settings
from impasto.tiles import blend_weights, choose_tile, plan_tiles

from conftest import mean_rgb, smooth_image, textured_image, to_tensor, write_png

# -- plans ----------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "width, height, size, min_size, factor",
    [(640, 480, 512, 128, math.sqrt(2)), (300, 900, 700, 100, 2.0), (1000, 1000, 256, 64, 1.5), (50, 40, 48, 32, math.sqrt(2))],
)
def test_plan_scales_go_coarse_to_fine(width, height, size, min_size, factor):
    sizes = plan_scales(width, height, Settings(size=size, min_size=min_size, scale_factor=factor))
    long_sides = [max(s) for s in sizes]
    assert long_sides[-1] == size
    assert long_sides == sorted(set(long_sides))  # strictly growing
    assert long_sides[0] >= min_size * 0.99
    assert long_sides[0] / factor < min_size  # no room for a coarser one
    for small, big in zip(long_sides, long_sides[1:]):
        assert big / small == pytest.approx(factor, rel=0.05)
    for w, h in sizes:
        assert (w >= h) == (width >= height)
        assert w / h == pytest.approx(width / height, rel=0.05)


def test_a_thin_panorama_skips_the_coarse_scales_too_thin_for_conv5():
    # 1000x80 at 256 px: 128x10 would pool away to nothing before conv5, 256x20 is kept.
    assert plan_scales(1000, 80, Settings(size=256)) == [(256, 20)]
    assert plan_scales(1000, 80, Settings(size=512)) == [(256, 20), (512, 41)]


def test_plan_scales_hand_checked():
    sizes = plan_scales(640, 480, Settings(size=512, min_size=128, scale_factor=2 ** 0.5))
    assert [w for w, _ in sizes] == [128, 181, 256, 362, 512]
    assert sizes[-1] == (512, 384)
    assert plan_scales(640, 480, Settings(size=512, min_size=128, scale_factor=2)) == [(128, 96), (256, 192), (512, 384)]


def test_plan_scales_single_scale_when_multiscale_is_off_or_size_is_small():
    assert plan_scales(640, 480, Settings(size=512, multiscale=False)) == [(512, 384)]
    assert plan_scales(480, 640, Settings(size=100, min_size=128)) == [(75, 100)]


def test_plan_iterations_geometric_from_initial_to_final():
    settings = Settings(initial_iterations=300, iterations=60)
    steps = plan_iterations(5, settings)
    assert steps[0] == 300 and steps[-1] == 60
    assert steps == sorted(steps, reverse=True)
    ratios = [b / a for a, b in zip(steps, steps[1:])]
    assert ratios == pytest.approx([0.2**0.25] * 4, rel=0.02)
    assert plan_iterations(1, settings.replace(multiscale=False)) == [60]
    assert plan_iterations(3, Settings(initial_iterations=10, iterations=40)) == [10, 20, 40]


def test_a_multiscale_run_of_one_scale_is_its_coarsest_and_gets_initial_iterations():
    # 50 fine-tuning iterations alone would leave the picture half painted; the page's copy
    # of this plan (app.js planIterations) and its notes say the same.
    assert plan_iterations(1, Settings()) == [100]
    assert plan_iterations(1, Settings(initial_iterations=40, iterations=7)) == [40]
    assert plan_iterations(1, Settings(initial_iterations=40, iterations=7, multiscale=False)) == [7]


def test_progress_follows_the_plan(stylizer, make_settings, content_array, style_array):
    settings = make_settings(multiscale=True, size=48, min_size=24, scale_factor=2.0, initial_iterations=4, iterations=2, optimizer="adam")
    events = []
    result = stylizer.run(content_array, style_array, settings, callback=events.append)
    assert [e.size for e in events] == [(24, 20)] * 4 + [(48, 40)] * 2
    assert [(e.scale, e.step, e.steps) for e in events] == [(0, 1, 4), (0, 2, 4), (0, 3, 4), (0, 4, 4), (1, 1, 2), (1, 2, 2)]
    assert [e.done for e in events] == [1, 2, 3, 4, 5, 6] and {e.total for e in events} == {6}
    assert [e.is_last for e in events] == [False] * 5 + [True]
    assert all(tuple(e.image.shape[-2:]) == (e.size[1], e.size[0]) for e in events)
    assert len(result.history) == 6 and result.image.size == (48, 40)


# -- memory ---------------------------------------------------------------------------------------


def test_memory_check_refuses_absurd_sizes():
    with pytest.raises(ImpastoError, match="GiB"):
        choose_tile(200_000, 150_000, Settings(), torch.device("cpu"))
    assert choose_tile(64, 48, Settings(), torch.device("cpu")) == 0


def test_an_output_larger_than_memory_is_cut_into_tiles_that_fit(monkeypatch):
    gib = 1024**3
    monkeypatch.setattr(tiles, "available_bytes", lambda device: 8 * gib)
    cpu = torch.device("cpu")
    assert choose_tile(1024, 683, Settings(), cpu) == 0  # fits whole: ~2 GiB
    tile = choose_tile(4096, 2731, Settings(), cpu)  # whole it would need ~32 GiB
    assert 256 <= tile < 4096
    assert tiles.CANVAS_BYTES_PER_PIXEL * 4096 * 2731 + impasto_device.estimate_bytes(tile, tile) <= 8 * gib
    assert choose_tile(1024, 683, Settings(tile=300), cpu) == 300  # asked for
    assert choose_tile(200, 100, Settings(tile=300), cpu) == 0  # smaller than one tile
    monkeypatch.setattr(tiles, "available_bytes", lambda device: gib // 8)
    with pytest.raises(ImpastoError, match=r"needs about .* GiB, or .* GiB in 256 px tiles, but only 0.1 GiB is free"):
        choose_tile(4096, 2731, Settings(), cpu)


def test_out_of_memory_advice_halves_what_ran():
    cpu = torch.device("cpu")
    assert tiles.out_of_memory_advice(2048, 1365, cpu, 0) == "out of memory on cpu for a 2048x1365 output; a smaller size, or tiles (tile=1024) needs less"
    assert "tile=768" in tiles.out_of_memory_advice(4096, 2731, cpu, 1600)  # half the tile in use, not of the picture
    assert "tile" not in tiles.out_of_memory_advice(4096, 2731, cpu, 200)  # half of it would be below the smallest tile


def test_without_proc_meminfo_the_memory_check_still_has_a_figure(monkeypatch):
    """macOS has neither /proc/meminfo nor SC_AVPHYS_PAGES: half the machine's memory, not 'unlimited'."""
    import builtins
    import os

    real_open, real_sysconf = builtins.open, os.sysconf

    def no_proc(path, *args, **kwargs):
        if str(path) == "/proc/meminfo":
            raise FileNotFoundError(path)
        return real_open(path, *args, **kwargs)

    def no_avphys(name):
        if name == "SC_AVPHYS_PAGES":
            raise ValueError("unrecognized configuration name")
        return real_sysconf(name)

    monkeypatch.setattr(builtins, "open", no_proc)
    monkeypatch.setattr(os, "sysconf", no_avphys)
    total = real_sysconf("SC_PAGE_SIZE") * real_sysconf("SC_PHYS_PAGES")
    assert impasto_device.available_bytes(torch.device("cpu")) == total // 2


@pytest.mark.parametrize("width, height, tile", [(1000, 700, 256), (4096, 2731, 1600), (300, 90, 64), (257, 256, 256)])
def test_tiles_cover_the_picture_with_overlapping_tiles_no_larger_than_asked(width, height, tile):
    regions = plan_tiles(width, height, tile)
    covered = np.zeros((height, width), dtype=int)
    for x0, y0, x1, y1 in regions:
        assert 0 <= x0 < x1 <= width and 0 <= y0 < y1 <= height
        assert x1 - x0 <= tile and y1 - y0 <= tile
        covered[y0:y1, x0:x1] += 1
    assert covered.min() >= 1  # every pixel
    overlap = tiles.tile_overlap(tile)
    xs = sorted({(x0, x1) for x0, _, x1, _ in regions})
    assert all(a1 - b0 >= overlap for (_, a1), (b0, _) in zip(xs, xs[1:]))  # neighbours share a seam wide enough to blend
    assert plan_tiles(width, height, max(width, height)) == [(0, 0, width, height)]
    assert plan_tiles(width, height, 0) == [(0, 0, width, height)]


def test_a_tile_pastes_nothing_it_drew_at_its_edge_over_a_neighbour():
    cpu = torch.device("cpu")
    alone = blend_weights((0, 0, 100, 80), 48, (100, 80), cpu)[0, 0]
    assert torch.all(alone == 1)  # the only tile: its pixels as they are
    # Two tiles side by side, overlapping in columns 52-100 (thirds of 16).
    first = blend_weights((0, 0, 100, 80), 48, (148, 80), cpu)[0, 0]
    second = blend_weights((52, 0, 148, 80), 48, (148, 80), cpu)[0, 0]
    assert torch.all(first[:, :84] == 1) and torch.all(first[:, 84:].diff(dim=1) < 0) and first[:, -1].max() < 0.1
    assert torch.all(second[:, :16] == 0) and torch.all(second[:, 16:32].diff(dim=1) > 0) and torch.all(second[:, 32:] == 1)
    # Pasted one after the other: the first tile's pixels up to column 68, a blend to 84, then
    # the second tile's, which is full where the first one faded out.
    assert torch.all(second[:, 84 - 52 :] == 1)
    below = blend_weights((52, 40, 148, 120), 48, (148, 120), cpu)[0, 0]
    assert below[0, 50] == 0 and below[50, 0] == 0 and below[50, 50] == 1


def test_a_plain_tile_is_not_asked_to_hold_the_whole_painting(stylizer, make_settings):
    # A picture plain on its left half and busy on its right, cut into two tiles.
    picture = np.concatenate([np.full((64, 64, 3), 0.3), textured_image(64, 64)], axis=1)
    canvas = torch.from_numpy(picture).permute(2, 0, 1)[None].float()
    settings = make_settings()
    extractor = stylizer.extractor(settings, torch.device("cpu"))
    regions = [(0, 0, 72, 64), (56, 0, 128, 64)]  # 16 px of overlap
    margins = [tiles.style_margins(region, (128, 64), 16) for region in regions]
    plain, busy = optimize.tile_style_offsets(extractor, canvas, regions, settings.style_layers, margins)
    areas = [64 * 64, 64 * 64]  # each without the half of the overlap its style losses leave out
    for layer in settings.style_layers:
        # The tiles' targets still average, by area, to the painting's own statistics.
        for part in ("mean", "moment"):
            average = sum(a * getattr(o[layer], part) for a, o in zip(areas, (plain, busy))) / sum(areas)
            assert float(average.abs().max()) < 1e-5 * float(getattr(busy[layer], part).abs().max())
        # The plain tile's target asks for less feature energy than the painting's, the busy one's for more.
        energy = lambda o: float(o[layer].moment.diagonal().sum())  # noqa: E731
        assert energy(plain) < 0 < energy(busy)


def test_a_tiles_style_losses_leave_out_the_edges_it_shares_with_other_tiles(stylizer, make_settings, style_array):
    assert [tiles.layer_stride(n) for n in ("conv1_1", "relu2_2", "conv3_1", "pool3", "conv5_1")] == [1, 2, 4, 8, 16]
    # The second of two tiles side by side: 8 px (half the overlap) on its left, none on the picture's edges.
    region, size = (56, 0, 128, 64), (128, 64)
    assert tiles.style_margins(region, size, 16) == (0, 0, 8, 0)  # top, bottom, left, right
    assert tiles.style_margins((0, 0, 128, 64), size, 16) == (0, 0, 0, 0)
    settings = make_settings(style_layers=("conv1_1",))  # a 3x3 view: what it sees is exact
    extractor = stylizer.extractor(settings, torch.device("cpu"))
    photo = torch.from_numpy(textured_image(64, 128)).permute(2, 0, 1)[None].float()
    style = [optimize.StyleInput(torch.from_numpy(style_array).permute(2, 0, 1)[None].float())]
    tile = torch.rand(1, 3, 64, 72, generator=torch.Generator().manual_seed(3))
    edited = tile.clone()
    edited[..., :6] = 1.0  # white, inside the margin

    def style_term(image: torch.Tensor, margins) -> float:
        objective = optimize.Objective(extractor, settings, photo, style, size, region=region, style_margins=margins)
        return objective.terms(image)["conv1_1"]

    margins = tiles.style_margins(region, size, 16)
    assert style_term(edited, margins) == pytest.approx(style_term(tile, margins), rel=1e-6)
    assert style_term(edited, None) != pytest.approx(style_term(tile, None), rel=1e-3)  # measured with its edge, it moves


# -- the loop -------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "term, weights",
    [
        ("content", dict(content_weight=1.0, style_weight=0.0, tv_weight=0.0)),
        ("style", dict(content_weight=0.0, style_weight=1.0, tv_weight=0.0)),
        ("tv", dict(content_weight=0.01, style_weight=0.0, tv_weight=1.0)),
    ],
)
def test_optimisation_from_noise_lowers_each_loss(stylizer, make_settings, content_array, style_array, term, weights):
    result = stylizer.run(content_array, style_array, make_settings(init="noise", iterations=15, **weights))
    first, last = result.history[0][term], result.losses[term]
    assert first > 1e-3
    assert last < 0.5 * first


def test_optimisation_lowers_the_total_with_every_term_on(stylizer, make_settings, content_array, style_array):
    result = stylizer.run(content_array, style_array, make_settings(init="noise", iterations=15))
    first = result.history[0]
    assert result.losses["total"] < 0.5 * first["total"]
    assert result.losses["style"] < 0.5 * first["style"]
    assert result.losses["total"] <= min(h["total"] for h in result.history)  # the best picture it scored


@pytest.mark.parametrize("optimizer", ["lbfgs", "adam"])
def test_seed_makes_cpu_runs_repeatable(stylizer, make_settings, content_array, style_array, optimizer):
    settings = make_settings(init="noise", iterations=3, optimizer=optimizer, seed=7)
    first = np.asarray(stylizer.run(content_array, style_array, settings).image)
    again = np.asarray(stylizer.run(content_array, style_array, settings).image)
    other = np.asarray(stylizer.run(content_array, style_array, settings.replace(seed=8)).image)
    assert np.array_equal(first, again)
    assert np.abs(first.astype(int) - other.astype(int)).mean() > 1.0


@pytest.mark.parametrize("precision", ["fp32", "fp16"])
def test_a_nan_loss_stops_with_the_last_good_image(stylizer, make_settings, content_array, style_array, monkeypatch, precision):
    calls = {"n": 0}
    real_tv = L.tv_loss

    def tv_that_blows_up(image):
        calls["n"] += 1
        value = real_tv(image)
        return value * float("nan") if calls["n"] > 4 else value

    monkeypatch.setattr(L, "tv_loss", tv_that_blows_up)
    monkeypatch.setattr(impasto_device, "_said_emulated", {"fp16"})  # fp16 on a CPU is this test's point, not its speed
    result = stylizer.run(content_array, style_array, make_settings(optimizer="adam", lr=0.01, iterations=10, precision=precision, init="content"))
    assert result.interrupted
    assert "nan" in result.stopped_reason.lower()
    # Under fp16 the advice includes the way out of it, as a Python caller types it.
    assert ("precision='fp32'" in result.stopped_reason) == (precision == "fp16")
    assert "--" not in result.stopped_reason
    assert len(result.history) == 4  # the fifth iteration was the bad one
    assert all(math.isfinite(v) for v in result.losses.values())
    assert result.image.size == (48, 40)
    # Four small Adam steps from the content: still about the content, not a NaN-turned-black image.
    assert np.abs(mean_rgb(result.image) - mean_rgb(content_array)).max() < 0.05


def test_init_from_a_file(stylizer, make_settings, content_array, style_array, tmp_path):
    green = np.zeros((20, 24, 3))
    green[..., 1] = 0.8
    path = write_png(tmp_path / "start.png", green)
    # No iterations: the output is the start image, resized to the output size.
    result = stylizer.run(content_array, style_array, make_settings(init=str(path), iterations=0))
    assert result.image.size == (48, 40)
    assert np.allclose(mean_rgb(result.image), [0, 0.8, 0], atol=0.01)
    moved = stylizer.run(content_array, style_array, make_settings(init=str(path), iterations=3, optimizer="adam"))
    assert np.abs(mean_rgb(moved.image) - [0, 0.8, 0]).max() < 0.1  # a few steps stay near the start


def test_init_content_and_style_without_iterations(stylizer, make_settings, content_array, style_array):
    content = stylizer.run(content_array, style_array, make_settings(init="content", iterations=0))
    style = stylizer.run(content_array, style_array, make_settings(init="style", iterations=0))
    assert np.abs(np.asarray(content.image) / 255.0 - content_array).max() < 0.02
    assert np.allclose(mean_rgb(style.image), mean_rgb(style_array), atol=0.03)
    with pytest.raises(ImpastoError, match="no such file"):
        stylizer.run(content_array, style_array, make_settings(init="/nonexistent/start.png"))


def test_upsample_detail_carries_the_photos_detail_to_the_finer_scale(stylizer, make_settings, style_array):
    # A fine checkerboard that a 16 px coarse scale cannot hold: plain upsampling loses it,
    # upsample_detail=1 puts it back (no iterations, so the output is the upsampled start).
    h, w = 40, 48
    yy, xx = np.mgrid[0:h, 0:w]
    photo = np.repeat((0.3 + 0.4 * ((yy // 2 + xx // 2) % 2))[..., None], 3, axis=2)
    # Without the painting's grain (upsample_grain), which lands on this start where it lacks detail.
    settings = make_settings(multiscale=True, min_size=16, initial_iterations=0, iterations=0, init="content", upsample_grain=0.0)
    plain = np.asarray(stylizer.run(photo, style_array, settings.replace(upsample_detail=0.0)).image) / 255.0
    carried = np.asarray(stylizer.run(photo, style_array, settings.replace(upsample_detail=1.0)).image) / 255.0
    # Texture synthesis has no photo to keep: nothing is added.
    texture = np.asarray(stylizer.run(photo, style_array, settings.replace(content_layers=())).image) / 255.0
    assert np.abs(plain - photo).mean() > 0.1
    assert np.abs(carried - photo).mean() < 0.02
    assert np.abs(texture - plain).max() < 0.01
    with pytest.raises(ImpastoError, match="upsample_detail"):
        Settings(upsample_detail=1.5).validate()


def test_coarse_content_keeps_the_photos_layout_and_leaves_the_finest_scale_alone(stylizer, make_settings, content_array, style_array):
    # No finest iterations: the output is the coarse result upsampled, where the layout is decided.
    # From the photo as it is, so that the distance to it measures the layout, not a palette.
    # Without the painting's grain (upsample_grain), which would add its own distance to the photo.
    settings = make_settings(multiscale=True, min_size=16, initial_iterations=15, iterations=0, style_weight=3.0, init="content", upsample_grain=0.0)
    plain = np.asarray(stylizer.run(content_array, style_array, settings.replace(coarse_content=1.0)).image) / 255.0
    kept = np.asarray(stylizer.run(content_array, style_array, settings.replace(coarse_content=30.0)).image) / 255.0
    assert np.abs(kept - content_array).mean() < 0.3 * np.abs(plain - content_array).mean()
    # Full at a quarter of the output's size or less, easing to none at the output, whose objective is the user's.
    s = Settings(content_weight=2.0, coarse_content=16.0)
    assert [scale_settings(s, side, 512).content_weight for side in (64, 128, 256, 512)] == pytest.approx([32.0, 32.0, 8.0, 2.0])
    with pytest.raises(ImpastoError, match="coarse_content"):
        Settings(coarse_content=0).validate()


@pytest.mark.parametrize("native_bf16", [False, True])
def test_mixed_precision_by_device_and_by_the_setting(monkeypatch, native_bf16):
    monkeypatch.setattr(impasto_device, "native_bf16_cpu", lambda: native_bf16)
    cpu, cuda, mps = torch.device("cpu"), torch.device("cuda"), torch.device("mps")
    auto_cpu = torch.bfloat16 if native_bf16 else None  # emulated bf16 would be slower than fp32
    assert [mixed_precision(Settings(), d) for d in (cpu, cuda, mps)] == [auto_cpu, torch.float16, None]
    assert mixed_precision(Settings(precision="fp32"), cuda) is None
    assert mixed_precision(Settings(precision="fp32"), cpu) is None
    assert mixed_precision(Settings(precision="fp16"), cpu) == torch.float16
    assert mixed_precision(Settings(precision="bf16"), cuda) == torch.bfloat16
    with pytest.raises(ImpastoError, match="precision must be one of auto, fp32, fp16, bf16"):
        Settings(precision="fp8").validate()


# -- tiled runs -----------------------------------------------------------------------------------


def test_style_statistics_taken_in_pieces_are_those_of_the_whole(shallow_extractor):
    style = torch.from_numpy(textured_image(150, 200)).permute(2, 0, 1)[None].float()
    layers = ("conv1_1", "conv2_1", "conv3_1")
    whole, _ = style_stats.style_statistics(shallow_extractor, style, (150, 200), layers)
    pieces, _ = style_stats.style_statistics(shallow_extractor, style, (150, 200), layers, tile=64)
    for k in layers:
        for mine, true in ((pieces[k].mean, whole[k].mean), (pieces[k].moment, whole[k].moment)):
            err = float((mine - true).norm() / true.norm())
            assert err < 0.02, (k, err)


@pytest.mark.filterwarnings("ignore::impasto.ImpastoWarning")  # its 64 px painting at 300 px is soft, and that is not what it tests
def test_a_tiled_run_paints_every_tile_and_scores_like_a_whole_one(stylizer, make_settings, tmp_path):
    content, style = smooth_image(180, 300), textured_image(64, 64)
    settings = make_settings(size=300, tile=128, iterations=8, style_weight=30.0)
    events = []
    tiled = stylizer.run(content, style, settings, callback=events.append)
    tiles = plan_tiles(300, 180, 128)
    assert len({x for x, *_ in tiles}) == 4 and len({y for _, y, *_ in tiles}) == 2
    assert [e.done for e in events] == list(range(1, 8 * 8 + 1))
    assert [e.step for e in events] == list(range(1, 8 * 8 + 1)) and {e.steps for e in events} == {64}
    assert [e.tile for e in events] == [i // 8 for i in range(64)] and {e.tiles for e in events} == {8}
    assert [e.is_last for e in events] == [False] * 63 + [True]
    for tile in range(8):  # each tile's own objective fell: it was painted, not only carried over
        totals = [e.losses["total"] for e in events if e.tile == tile]
        assert min(totals[1:]) < totals[0]
    assert all(tuple(e.image.shape[-2:]) == (180, 300) for e in events)  # the whole picture as it forms
    assert tiled.image.size == (300, 180)
    out = np.asarray(tiled.image, dtype=np.float64) / 255
    for x0, y0, x1, y1 in tiles:  # the bluish style reached every tile of the reddish photo
        before, after = content[y0:y1, x0:x1].reshape(-1, 3).mean(0), out[y0:y1, x0:x1].reshape(-1, 3).mean(0)
        # By how much is a matter of rounding in 8 iterations of L-BFGS's large early steps on
        # random weights (0.02 to 0.5 a tile, as the last bits of a product change), so any clear shift.
        assert after[2] - after[0] > before[2] - before[0] + 0.01
    whole = stylizer.run(content, style, settings.replace(tile=0))
    # One objective over the whole picture judges both: tiles cost little of the result.
    extractor = stylizer.extractor(settings, torch.device("cpu"))
    objective = optimize.Objective(extractor, settings, torch.from_numpy(content).permute(2, 0, 1)[None].float(),
                                   [optimize.StyleInput(torch.from_numpy(style).permute(2, 0, 1)[None].float())], (300, 180))

    def score(image) -> float:
        return float(objective(torch.from_numpy(np.asarray(image, dtype=np.float32) / 255).permute(2, 0, 1)[None])[0])

    # Eight iterations of L-BFGS's large early steps on random weights land by rounding: with
    # style weights 25, 30 and 35 and either of two L-BFGS codes of the same iteration, the tiled
    # run scored 0.48-0.67 of the start and 0.75-1.42 of the whole run (0.45 and 0.86 when written).
    start = score((content * 255).round())
    assert score(tiled.image) < 0.75 * start
    assert score(tiled.image) < 1.6 * score(whole.image)


@pytest.mark.filterwarnings("ignore::impasto.ImpastoWarning")  # a 64 px painting at 160 px is soft, and that is not what it tests
def test_a_tiled_runs_progress_image_is_a_copy_that_stays_as_it_was(stylizer, make_settings):
    # A callback keeping the picture of an iteration must not see it painted on after.
    settings = make_settings(size=160, tile=128, iterations=2)
    kept, snapshots = [], []

    def keep(progress) -> None:
        kept.append(progress.image)
        snapshots.append(progress.image.clone())

    stylizer.run(smooth_image(96, 160), textured_image(64, 64), settings, callback=keep)
    assert len(kept) == 4  # two tiles of two iterations
    assert all(torch.equal(image, snapshot) for image, snapshot in zip(kept, snapshots))


# -- flat areas -----------------------------------------------------------------------------------


def test_flat_weights_are_the_floor_where_the_photo_is_flat_and_whole_where_it_has_detail():
    photo = torch.full((1, 3, 64, 128), 0.5)
    photo[..., 64:] = torch.rand(1, 1, 64, 64, generator=torch.Generator().manual_seed(0))  # right half: grain
    weights = optimize.flat_weights(photo, 0.1)
    assert weights.shape == (1, 1, 64, 128)
    assert torch.all(weights[..., :48] == 0.1) and torch.all(weights[..., 72:] == 1.0)
    assert torch.all((weights >= 0.1) & (weights <= 1.0))
    assert torch.all(optimize.flat_weights(photo, 1.0) == 1.0)  # 1 is one weight everywhere


def test_fine_content_layers_join_the_content_only_at_the_outputs_scale():
    assert Settings().fine_content_layers == ("conv3_2",)  # the default since session 40
    s = Settings(content_weight=2.0, coarse_content=16.0, fine_content_layers="conv3_2")
    assert [scale_settings(s, side, 512).fine_content_layers for side in (128, 256, 512)] == [(), (), ("conv3_2",)]
    assert scale_settings(s.replace(coarse_content=1.0), 256, 512).fine_content_layers == ()
    # Added to the content layers once each; none without content layers (texture synthesis keeps no photo).
    assert optimize.content_fine_layers(s.replace(fine_content_layers=("conv3_2", "conv4_2", "conv3_2"))) == ("conv3_2",)
    assert optimize.content_fine_layers(s.replace(content_layers=())) == ()
    # The original method's preset is the original objective.
    assert Settings().replace(**preset_settings("gatys2015")).fine_content_layers == ()


def _half_flat_photo() -> np.ndarray:
    """A 40x48 photo: its left half one grey, its right half textured."""
    photo = textured_image(40, 48)
    photo[:, :24] = 0.5
    return photo


def test_fine_content_layers_are_weighted_by_the_photos_detail(stylizer, make_settings, style_array):
    settings = make_settings(fine_content_layers=("conv3_2",), fine_content_weight=0.8)
    photo = to_tensor(_half_flat_photo())
    style = [optimize.StyleInput(to_tensor(style_array))]
    objective = optimize.Objective(stylizer.extractor(settings, torch.device("cpu")), settings, photo, style, (48, 40))
    assert list(objective.content_targets) == ["conv2_2", "conv3_2"]
    assert objective.content_weights["conv2_2"] is None  # the content layers keep one weight everywhere
    weight = objective.content_weights["conv3_2"]
    assert weight.shape[-2:] == objective.content_targets["conv3_2"].shape[-2:]  # conv3_2's 10x12 map
    # fine_content_weight over the textured half, half of it over the flat half: held at 0 there, the
    # painting crowded into the smooth areas and moved the whole picture away from the photo (session 39).
    assert float(weight[..., :3].max()) == pytest.approx(0.8 * optimize.FINE_CONTENT_FLOOR) == 0.4
    assert float(weight[..., -3:].mean()) > 0.95 * 0.8
    # Its term is added to the content layers' mean, not averaged with it: a fine layer that weighs
    # less over a smooth area leaves the content layers' weight there as it was.
    image = torch.rand(1, 3, 40, 48, generator=torch.Generator().manual_seed(2))
    plain = optimize.Objective(objective.extractor, settings.replace(fine_content_layers=()), photo, style, (48, 40))
    fine = L.content_loss(objective.extractor(image)["conv3_2"], objective.content_targets["conv3_2"], weight)
    assert float(objective(image)[1]["content"]) == pytest.approx(float(plain(image)[1]["content"] + fine), rel=1e-5)


def test_flat_content_and_fine_content_layers_multiply(stylizer, make_settings, style_array):
    # A cut-out on white gets both (flat_content 0.1 from the default, conv3_2 by default): the
    # fine layer is the flat areas' floor times its own, each clamped from one measure of the photo.
    settings = make_settings(fine_content_layers=("conv3_2",), fine_content_weight=0.8, flat_content=0.1)
    style = [optimize.StyleInput(to_tensor(style_array))]
    objective = optimize.Objective(stylizer.extractor(settings, torch.device("cpu")), settings, to_tensor(_half_flat_photo()), style, (48, 40))
    coarse, fine = objective.content_weights["conv2_2"], objective.content_weights["conv3_2"]
    assert float(coarse[..., :3].max()) == pytest.approx(0.1)
    assert float(fine[..., :3].max()) == pytest.approx(0.1 * 0.8 * optimize.FINE_CONTENT_FLOOR)
    assert float(coarse[..., -3:].mean()) > 0.95 and float(fine[..., -3:].mean()) > 0.95 * 0.8


def test_fine_content_layers_keep_more_of_the_photos_detail(stylizer, make_settings):
    photo, painting = _half_flat_photo(), smooth_image(40, 48)  # the painting has no fine detail to give
    settings = make_settings(iterations=30, init="content", content_layers=("conv4_2",), style_weight=3.0, fine_content_layers=())
    fine = settings.replace(fine_content_layers=("conv3_2",))  # at the default weight
    extractor = stylizer.extractor(fine, torch.device("cpu"))
    target = extractor(to_tensor(photo))["conv3_2"][..., 7:]  # the textured half of conv3_2's 10x12 map, less its edge

    def distance(s: Settings) -> float:
        out = to_tensor(np.asarray(stylizer.run(photo, painting, s).image) / 255.0)
        return float((extractor(out)["conv3_2"][..., 7:] - target).pow(2).mean())

    assert distance(fine) < 0.8 * distance(settings)


def test_the_loss_scale_grows_back_after_a_run_of_iterations_without_overflow():
    scale = descent.LossScale(torch.float16)
    scale.overflowed()
    assert scale.value == 2.0**8
    for _ in range(descent.LossScale.GROWTH_INTERVAL):
        scale.succeeded()
    assert scale.value == 2.0**9  # doubled once
    scale.overflowed()  # right after growing: back to what worked, not down by 256
    assert scale.value == 2.0**8
    for _ in range(100 * descent.LossScale.GROWTH_INTERVAL):
        scale.succeeded()
    assert scale.value == descent.LOSS_SCALE  # never above it


def test_lbfgs_keeps_descending_when_the_clamp_holds_pixels_at_0_or_1(monkeypatch):
    # An ill-conditioned quadratic whose minimum lies half outside [0, 1]: the clamped optimum
    # is the target clamped. L-BFGS told of its proposed steps rather than the moves the clamp
    # let it make, and steered by gradients pointing out of bounds, stalls on this after a few
    # steps (its direction stops descending), a third of the way from the start to the optimum.
    generator = torch.Generator().manual_seed(0)
    n = 2000
    curvature = torch.logspace(-2, 1, n)[torch.randperm(n, generator=generator)]
    target = torch.rand(n, generator=generator) * 2 - 0.5

    def score(x):
        value = (curvature * (x - target) ** 2).sum()
        return value, {"content": value}

    def gap_after(steps: int) -> float:
        x = torch.full((n,), 0.5)
        list(descent.descend(score, x, steps, Settings()))
        return float(score(x.detach())[0] - score(target.clamp(0, 1))[0])

    start = gap_after(0)
    assert gap_after(60) < 0.03 * start
    # The same descent told of the steps it proposed (after the first, a grey level's), not of
    # the moves the clamp let it make, with the held pixels' gradients left pointing out:
    real_direction, real_moved = LBFGS.direction, LBFGS.moved

    def direction(self):
        self.proposed = real_direction(self)
        return self.proposed

    def moved(self, move):
        real_moved(self, self.proposed.clone() if self.pairs else move)

    monkeypatch.setattr(LBFGS, "direction", direction)
    monkeypatch.setattr(LBFGS, "moved", moved)
    monkeypatch.setattr(descent, "hold_at_bounds", lambda *args: None)
    assert gap_after(60) > 0.2 * start


@pytest.mark.parametrize("pixels", [100, 100_000])
def test_lbfgs_first_step_moves_the_most_moved_pixel_about_a_grey_level_whatever_the_size(pixels):
    # torch's first step is 1/|g|₁ long, so it shrinks with the pixel count (a millionth of a grey
    # level at 512 px); the first step here moves the pixel it moves most by FIRST_STEP.
    target = torch.rand(pixels, generator=torch.Generator().manual_seed(0)) * 0.5 + 0.25

    def score(x):
        value = ((x - target) ** 2).sum()
        return value, {"content": value}

    steps = list(descent.descend(score, torch.full((pixels,), 0.5), 2, Settings()))
    moved = (steps[1].scored - steps[0].scored).abs()
    assert float(moved.max()) == pytest.approx(descent.FIRST_STEP, rel=1e-4)
    assert steps[1].losses["total"] < steps[0].losses["total"]


@pytest.mark.parametrize("landing", [3, 7])
def test_an_lbfgs_step_that_lands_far_uphill_is_taken_back_and_the_descent_goes_on(landing):
    # The pixels scored at step `landing` read 100 times their loss, as the landing of a step
    # from a bad estimate of the curvature does (the first quasi-Newton step's, 3, or a later one's,
    # 7): the next step scores the pixels halfway back, and the descent still ends near the minimum.
    target = torch.linspace(0.2, 0.8, 50)
    curvature = torch.logspace(-1, 1, 50).flip(0)
    calls = []

    def score(x):
        value = (curvature * (x - target) ** 2).sum()
        calls.append(1)
        return value * (100 if len(calls) == landing else 1), {"content": value}

    x = torch.full((50,), 0.5)
    steps = list(descent.descend(score, x, 30, Settings()))
    bad, before = steps[landing - 1], steps[landing - 2]
    assert bad.losses["total"] > descent.BLOW_UP * min(s.losses["total"] for s in steps[: landing - 1])
    assert torch.allclose(steps[landing].scored, (before.scored + bad.scored) / 2)
    assert steps[landing + 1].losses["total"] < before.losses["total"]  # and downhill from there
    assert float(score(x.detach())[1]["content"]) < 1e-3 * steps[0].losses["total"]
    # Adam's steps are its learning rate's, not a curvature's, and are not taken back.
    calls.clear()
    adam = list(descent.descend(score, torch.full((50,), 0.5), landing + 1, Settings(optimizer="adam")))
    assert not torch.allclose(adam[landing].scored, (adam[landing - 2].scored + adam[landing - 1].scored) / 2)


@pytest.mark.parametrize("h, w, k", [(37, 53, 5), (20, 90, 33), (5, 5, 7), (96, 64, 9)])
def test_box_mean_is_the_mean_over_the_window_inside_the_picture(h, w, k):
    x = torch.rand(2, 1, h, w, dtype=torch.float64, generator=torch.Generator().manual_seed(h))
    expected = torch.nn.functional.avg_pool2d(x, kernel_size=k, stride=1, padding=k // 2, count_include_pad=False)
    torch.testing.assert_close(images.box_mean(x, k), expected, rtol=0, atol=1e-12)


def test_flat_content_frees_a_flat_photo_from_its_content_term(stylizer, make_settings, style_array):
    settings = make_settings(size=48)
    extractor = stylizer.extractor(settings, torch.device("cpu"))
    flat_photo = torch.full((1, 3, 40, 48), 0.6)
    style = [optimize.StyleInput(torch.from_numpy(style_array).permute(2, 0, 1)[None].float())]
    image = torch.rand(1, 3, 40, 48, generator=torch.Generator().manual_seed(1))

    def content_term(flat_content: float) -> float:
        objective = optimize.Objective(extractor, settings.replace(flat_content=flat_content), flat_photo, style, (48, 40))
        return float(objective(image)[1]["content"])

    whole = content_term(1.0)
    assert whole > 0
    assert content_term(0.25) == pytest.approx(0.25 * whole, rel=1e-4)  # all of it is flat: the floor everywhere
    assert content_term(0.0) < 1e-3 * whole  # nothing left but rounding



def test_the_fast_preset_paints_the_two_scales_it_promises():
    # A min-size above half the size would leave one scale of the coarse iterations.
    settings = Settings().replace(**preset_settings("fast"))
    assert "two scales" in get_preset("fast").description
    assert [max(wh) for wh in plan_scales(512, 340, settings)] == [128, 256]


def test_a_device_without_autocast_runs_fp32_and_refuses_mixed_precision_clearly(monkeypatch):
    # Older torch builds refuse torch.autocast(device_type="mps"), even to switch it off: the
    # fp32 path must not touch autocast there, and fp16 must be a one-line error, not a traceback.
    def refuse(device_type, *args, **kwargs):
        raise RuntimeError(f"User specified an unsupported autocast device_type '{device_type}'")

    monkeypatch.setattr(torch, "autocast", refuse)
    device = torch.device("cpu")
    with impasto_device.autocast_to(device, None), impasto_device.autocast_off(device):
        pass
    with pytest.raises(ImpastoError, match=r"precision='fp16' is not available on cpu with torch .*; use precision='fp32'"):
        impasto_device.autocast_to(device, torch.float16)


def test_a_cuda_index_past_the_gpus_is_named(monkeypatch):
    # Without the check, cuda:7 on a one-GPU machine failed later, inside torch's memory query.
    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
    monkeypatch.setattr(torch.cuda, "device_count", lambda: 1)
    assert impasto_device.resolve_device("cuda:0") == torch.device("cuda:0")
    with pytest.raises(ImpastoError, match=r"device='cuda:7' asked for, but PyTorch sees 1 CUDA GPU \(cuda:0..0\)"):
        impasto_device.resolve_device("cuda:7")


def test_lbfgs_without_bounds_takes_the_steps_torchs_lbfgs_takes():
    # descend()'s L-BFGS (lbfgs.py) is the algorithm of torch.optim.LBFGS(max_iter=1), told the
    # moves rather than proposing them: where nothing clamps or is taken back, the same steps.
    generator = torch.Generator().manual_seed(0)
    n = 300
    curvature = torch.logspace(-1, 1, n, dtype=torch.float64)[torch.randperm(n, generator=generator)]
    target = torch.rand(n, generator=generator, dtype=torch.float64)

    def score(x):
        value = (curvature * (x - target) ** 2).sum() + (x**4).sum() / 10  # not a quadratic: the curvature moves
        return value, {"content": value}

    ours = [s.scored for s in descent.descend(score, torch.zeros(n, dtype=torch.float64), 40, Settings(), bounds=None)]
    x = torch.zeros(n, dtype=torch.float64, requires_grad=True)
    theirs = torch.optim.LBFGS([x], lr=1, max_iter=1, history_size=descent.LBFGS_HISTORY, tolerance_grad=0.0, tolerance_change=0.0)

    def closure():
        theirs.zero_grad()
        value = score(x)[0]
        value.backward()
        return value

    for i, scored in enumerate(ours):
        torch.testing.assert_close(scored, x.detach(), rtol=1e-9, atol=1e-12, msg=f"iteration {i + 1}")
        theirs.step(closure)
    # And it got somewhere: the gradient all but gone.
    def grad_norm(at):
        at = at.clone().requires_grad_(True)
        score(at)[0].backward()
        return float(at.grad.norm())

    assert grad_norm(ours[-1]) < 1e-3 * grad_norm(ours[0])


def test_the_default_start_is_the_photo_in_the_paintings_colours_and_the_photo_when_colours_are_kept():
    photo = torch.tensor(textured_image(40, 48, (0.55, 0.5, 0.45), (0.7, 0.6, 0.5), seed=1)).permute(2, 0, 1)[None].float()
    blue = torch.tensor(textured_image(30, 30, (0.1, 0.2, 0.6), (0.2, 0.3, 0.9), seed=2)).permute(2, 0, 1)[None].float()
    orange = torch.tensor(textured_image(30, 30, (0.8, 0.4, 0.1), (0.9, 0.6, 0.2), seed=3)).permute(2, 0, 1)[None].float()
    size = (24, 20)
    assert Settings().init == "palette"
    start = optimize.initial_image(Settings(), photo, [optimize.StyleInput(blue)], size, None)
    assert start.shape == (1, 3, 20, 24)
    assert torch.allclose(start.mean(dim=(0, 2, 3)), blue.mean(dim=(0, 2, 3)), atol=0.02)  # the painting's mean colour
    # Two paintings blended 3:1: the mean colour is theirs, mixed by the weights.
    mixed = optimize.initial_image(Settings(), photo, [optimize.StyleInput(blue, 3.0), optimize.StyleInput(orange, 1.0)], size, None)
    expected = 0.75 * blue.mean(dim=(0, 2, 3)) + 0.25 * orange.mean(dim=(0, 2, 3))
    assert torch.allclose(mixed.mean(dim=(0, 2, 3)), expected, atol=0.02)
    # --init content, and any --preserve-color, start from the photo itself.
    from impasto.images import resize_tensor

    photo_small = resize_tensor(photo, (20, 24))
    for settings in (Settings(init="content"), Settings(preserve_color="histogram"), Settings(preserve_color="luminance")):
        assert torch.equal(optimize.initial_image(settings, photo, [optimize.StyleInput(blue)], size, None), photo_small)


def test_a_masked_paintings_colours_start_only_where_it_paints():
    photo = torch.tensor(textured_image(20, 24, (0.55, 0.5, 0.45), (0.7, 0.6, 0.5), seed=1)).permute(2, 0, 1)[None].float()
    blue = torch.tensor(textured_image(30, 30, (0.1, 0.2, 0.6), (0.2, 0.3, 0.9), seed=2)).permute(2, 0, 1)[None].float()
    mask = torch.zeros(1, 1, 40, 48)
    mask[..., :24] = 1.0  # the left half of an output twice the start's size
    start = optimize.palette_start(photo, [optimize.StyleInput(blue, 1.0, mask), optimize.StyleInput(blue, 0.0)])
    left, right = start[..., :, :10], start[..., :, 14:]
    assert torch.equal(right, photo[..., :, 14:])  # no painting there (the other's weight is 0): the photo
    assert torch.allclose(left.mean(dim=(0, 2, 3)), blue.mean(dim=(0, 2, 3)), atol=0.05)  # the painting's colours


class ReplayStandIn:
    """cuda_graph.Replay on a CPU, for what GraphedGradient does around it: `fn` is run at each
    call, and its results are written into the tensors of the first call and returned, as a
    graph's replay overwrites the same tensors each time."""

    def __init__(self, fn, device) -> None:
        self.fn, self.outputs = fn, None

    def __call__(self):
        value, parts, grad = self.fn()
        if self.outputs is None:
            self.outputs = (value.detach(), {k: v.detach() for k, v in parts.items()}, grad)
        else:
            kept_value, kept_parts, kept_grad = self.outputs
            kept_value.copy_(value)
            for k, v in parts.items():
                kept_parts[k].copy_(v)
            kept_grad.copy_(grad)
        return self.outputs


@pytest.mark.parametrize("problem", ["vgg", "flat"])
def test_a_descent_through_the_graphed_gradient_is_the_descent_through_the_launched_one(problem, shallow_extractor, make_settings, monkeypatch):
    # A graph reads its own copy of the pixels and writes the same gradient tensor at every
    # replay; L-BFGS keeps each gradient it learns, so one not copied out would be overwritten
    # (a picture's gradient, channels-last from the network, is copied by L-BFGS's flattening
    # anyway: the flat problem is the one that shows it).
    monkeypatch.setattr(descent, "Replay", ReplayStandIn)
    if problem == "vgg":
        content = torch.from_numpy(smooth_image(40, 48)).permute(2, 0, 1)[None].float()
        style = torch.from_numpy(textured_image(40, 48)).permute(2, 0, 1)[None].float()
        objective = optimize.Objective(shallow_extractor, make_settings(), content, [optimize.StyleInput(style)], (48, 40))
    else:
        generator = torch.Generator().manual_seed(0)
        content = torch.full((500,), 0.5)
        target, curvature = torch.rand(500, generator=generator), torch.logspace(-2, 1, 500)

        def objective(x):
            value = (curvature * (x - target) ** 2).sum()
            return value, {"content": value}

    runs = {}
    for graphs in (True, False):
        param = content.clone()
        steps = list(descent.descend(objective, param, 8, make_settings(), graphed=graphs))
        runs[graphs] = ([s.losses for s in steps], param)
    assert runs[True][0] == runs[False][0]
    assert torch.equal(runs[True][1], runs[False][1])
    assert runs[True][0][-1]["total"] < 0.8 * runs[True][0][0]["total"]


@pytest.mark.parametrize("graphed", [False, True])
def test_an_fp16_overflow_lowers_the_loss_scale_for_the_rest_of_the_descent(graphed, monkeypatch):
    # A convolution's backward pass in fp16 overflows when the loss is scaled by 2**16 (its
    # gradient, 1 per output, becomes 65536 > 65504), not at 2**8: one redo, then no more.
    monkeypatch.setattr(descent, "Replay", ReplayStandIn)
    weight = torch.ones(1, 3, 3, 3) / 27
    passes = []

    def score(x):
        passes.append(1)
        value = torch.nn.functional.conv2d(x, weight).float().sum()
        return value, {"content": value}

    param = torch.rand(1, 3, 8, 8)
    steps = list(descent.descend(score, param, 3, Settings(optimizer="adam", lr=0.01), autocast=torch.float16, graphed=graphed))
    assert len(steps) == 3 and torch.isfinite(param).all()
    assert len(passes) == 4  # 2 + 1 + 1; restarting at 2**16 every iteration would be 6
    # The gradient is the loss's, not the scaled loss's: 1/27 from each of the 9 outputs a pixel feeds.
    assert float(param.grad.abs().max()) == pytest.approx(9 / 27, rel=0.01)


def test_the_default_frees_flat_areas_only_on_a_photo_with_a_flat_background():
    photo = torch.from_numpy(textured_image(120, 160)).permute(2, 0, 1)[None].float()  # grain everywhere
    cut_out = photo.clone()
    cut_out[..., :40] = 1.0  # its left quarter flattened on white, as a product shot's background
    speck = photo.clone()
    speck[..., :50, :20] = 1.0  # a white patch of 5%: not a background
    default = Settings()
    assert default.flat_content is None
    assert optimize.resolve_flat_content(default, cut_out).flat_content == optimize.FLAT_BACKGROUND_FLOOR
    assert optimize.resolve_flat_content(default, photo).flat_content == 1.0
    assert optimize.resolve_flat_content(default, speck).flat_content == 1.0
    # A number given is the user's choice, photo or not.
    assert optimize.resolve_flat_content(default.replace(flat_content=1.0), cut_out).flat_content == 1.0
    assert optimize.resolve_flat_content(default.replace(flat_content=0.5), photo).flat_content == 0.5
    # Measured at one size, so a print and its preview are painted alike.
    big = torch.nn.functional.interpolate(cut_out, scale_factor=8, mode="nearest")
    assert optimize.flat_background_share(big) == pytest.approx(optimize.flat_background_share(cut_out), abs=0.02)


def test_a_cameras_pixel_noise_does_not_hide_a_flat_backdrop_and_a_gradient_is_not_one():
    from conftest import smooth_image, to_uint8

    rng = np.random.default_rng(0)
    y = np.linspace(0, 1, 400)[:, None, None]

    def photo_with(quarter: np.ndarray) -> torch.Tensor:
        """A 600x400 photo (waves and a grain of 3 grey levels) with `quarter` as its left quarter, as 8-bit pixels."""
        picture = smooth_image(400, 600) + rng.uniform(-3, 3, (400, 600, 1)) / 255
        picture[:, :150] = quarter
        return torch.from_numpy(to_uint8(picture) / 255.0).permute(2, 0, 1)[None].float()

    noise = rng.normal(0, 3, (400, 150, 3)) / 255  # each channel's own, as a sensor's
    backdrop = photo_with(230 / 255 + noise)  # a grey studio backdrop
    sky = photo_with((200 - 40 * y) / 255 + noise)  # a clear sky, 40 grey levels darker at the top
    photo = photo_with(smooth_image(400, 150) + rng.uniform(-3, 3, (400, 150, 1)) / 255)
    assert optimize.local_contrast(backdrop)[..., 40:-40, 20:130].mean() * 255 > 1  # the noise, read as it is
    assert optimize.resolve_flat_content(Settings(), backdrop).flat_content == optimize.FLAT_BACKGROUND_FLOOR
    assert optimize.resolve_flat_content(Settings(), sky).flat_content == 1.0
    assert optimize.resolve_flat_content(Settings(), photo).flat_content == 1.0


def test_the_quality_benchmarks_photos_have_no_flat_background_and_a_cut_out_has():
    from PIL import Image, ImageDraw

    from conftest import REAL_IMAGES
    from impasto.images import pil_to_tensor

    names = ["astronaut.png", "chelsea.png", "coffee.png", "rocket.png"]
    if not all((REAL_IMAGES / name).is_file() for name in names):
        pytest.skip(f"the shared photos are not in {REAL_IMAGES}")
    cpu = torch.device("cpu")
    for name in names:
        with Image.open(REAL_IMAGES / name) as image:
            photo = image.convert("RGB")
        assert optimize.resolve_flat_content(Settings(), pil_to_tensor(photo, cpu)).flat_content == 1.0, name
    # benchmarks/heldout.py's cut-out: the coffee cup with its left quarter white.
    with Image.open(REAL_IMAGES / "coffee.png") as image:
        photo = image.convert("RGB")
    ImageDraw.Draw(photo).rectangle((0, 0, photo.width // 4, photo.height), fill="white")
    assert optimize.resolve_flat_content(Settings(), pil_to_tensor(photo, cpu)).flat_content == optimize.FLAT_BACKGROUND_FLOOR
