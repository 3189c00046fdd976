"""Artist controls on tiny images and random weights: presets, Novak & Nikulin 2016 options,
masks, several styles, sweeps, the progress GIF and the loss plot."""

from __future__ import annotations

import sys
import time

import numpy as np
import pytest
import torch
from PIL import Image

import impasto
from impasto import ImpastoError, Settings
from impasto import losses as L
from impasto.cli import build_run_parser, main, settings_from_args
from impasto.media import FrameRecorder, frame_iterations, plot_losses, write_gif
from impasto.optimize import Objective, StyleInput, chain_pairs
from impasto.vgg import FeatureExtractor
from impasto.style_stats import style_size
from impasto.presets import PRESETS
from impasto.sweep import SweepFailed, cell_filename, cell_label, cells_folder, parse_grid, save_sweep

from conftest import BLUISH, FAST_CONTENT_LAYERS, FAST_STYLE_LAYERS, REDDISH, textured_image, write_png
from test_cli import FAST, assert_one_line_error, cli


@pytest.fixture
def fast(synthetic_weights) -> list[str]:
    return FAST + ["--weights", str(synthetic_weights)]


# -- presets -------------------------------------------------------------------------------------


@pytest.mark.parametrize("name", sorted(PRESETS))
def test_every_preset_is_valid_and_sets_what_it_says(name):
    settings = Settings.from_preset(name).validate()
    for key, value in PRESETS[name].settings.items():
        assert getattr(settings, key) == value


def test_explicit_options_override_a_preset():
    s = Settings.from_preset("novak2016", gram_shift=0.0, size=64)
    assert (s.gram_shift, s.size, s.style_chain, s.style_layers) == (0.0, 64, True, ("all",))
    args = build_run_parser().parse_args(["c.png", "s.png", "-o", "o.png", "--preset", "gatys2015", "--iterations", "7", "--multiscale"])
    s = settings_from_args(args)
    assert (s.iterations, s.multiscale, s.init, s.tv_weight) == (7, True, "noise", 0.0)
    # Without --preset nothing of a preset leaks in.
    assert settings_from_args(build_run_parser().parse_args(["c.png", "s.png", "-o", "o.png"])) == Settings()
    # A list setting is switched off with the word none (an empty value is awkward to type).
    args = build_run_parser().parse_args(["c.png", "s.png", "-o", "o.png", "--fine-content-layers", "none"])
    assert settings_from_args(args).fine_content_layers == ()


def test_unknown_preset_is_one_line(capsys, tmp_path, content_path, style_path, fast):
    code, _, err = cli(capsys, content_path, style_path, "-o", tmp_path / "o.png", *fast, "--preset", "novak")
    assert_one_line_error(code, err, "unknown preset 'novak'", "novak2016", "impasto presets")
    with pytest.raises(ImpastoError, match="unknown preset"):
        Settings.from_preset("nope")


def test_presets_command_lists_each_preset_and_its_settings(capsys):
    code, out, _ = cli(capsys, "presets")
    assert code == 0
    for name, preset in PRESETS.items():
        assert f"{name}:" in out
        for key in preset.settings:
            assert key.replace("_", "-") in out  # --name VALUE, or --name / --no-name for a switch
    assert "Novak & Nikulin 2016" in out


def test_help_names_the_papers(capsys):
    with pytest.raises(SystemExit):
        main(["--help"])
    out = " ".join(capsys.readouterr().out.split())
    for flag in ("--style-layer-decay", "--style-chain", "--gram-shift", "--preset", "--mask", "--keep-mask", "--gif", "--plot"):
        assert flag in out
    assert out.count("Novak & Nikulin 2016") >= 3 and "Gatys et al. 2017" in out


# -- Novak & Nikulin 2016 ------------------------------------------------------------------------


def test_all_layers_and_geometric_weights():
    s = Settings(style_layers="all", style_layer_decay=2.0).for_model("vgg19")
    assert len(s.style_layers) == 16 and s.style_layers[0] == "conv1_1" and s.style_layers[-1] == "conv5_4"
    w = s.layer_weights()
    assert sum(w) == pytest.approx(1.0)
    assert all(a / b == pytest.approx(2.0) for a, b in zip(w, w[1:]))  # each layer half the one before
    assert len(Settings(style_layers="all").for_model("vgg16").style_layers) == 13
    # The decay multiplies explicit weights too.
    s = Settings(style_layers=("conv1_1", "conv2_1"), style_layer_weights=(1.0, 4.0), style_layer_decay=2.0)
    assert s.layer_weights() == pytest.approx((1 / 3, 2 / 3))


@pytest.mark.parametrize(
    "overrides, message",
    [
        (dict(style_layers=("all", "conv1_1")), "'all' stands alone"),
        (dict(style_layer_decay=0.0), "style_layer_decay must be a positive"),
        (dict(style_chain=True, style_layers=("conv1_1",)), "at least two style layers"),
    ],
)
def test_novak_options_are_validated(overrides, message):
    with pytest.raises(ImpastoError, match=message):
        Settings(**overrides).validate()


def test_chain_loss_is_zero_for_identical_cross_moments_and_blends_linearly(shallow_extractor, content_array, style_array):
    image = torch.from_numpy(style_array).permute(2, 0, 1)[None].float()
    feats = shallow_extractor(image)
    a, b = feats["conv1_1"], feats["conv2_1"]  # different sizes and channel counts
    cross = L.cross_stats(a, b)
    assert cross.moment.shape == (64, 128)
    for shift in (0.0, -1.0):
        assert float(L.chain_loss(cross, shift)(a, b)) < 1e-10
        other = shallow_extractor(torch.from_numpy(content_array).permute(2, 0, 1)[None].float())
        assert float(L.chain_loss(cross, shift)(other["conv1_1"], other["conv2_1"])) > 1e-3
    # A mask weights the pixels: halves with weights 1 and 0 blend back to the whole.
    h, w = a.shape[-2:]
    left = torch.zeros(h, w)
    left[:, : w // 2] = 1
    parts = [L.cross_stats(a, b, left), L.cross_stats(a, b, 1 - left)]
    whole = L.blend_cross_stats(parts, [float(left.sum()), float((1 - left).sum())])
    assert torch.allclose(whole.moment, cross.moment, rtol=1e-4, atol=1e-6)


def test_a_short_run_lowers_the_chain_loss(shallow_extractor, content_array, style_array, make_settings):
    settings = make_settings(style_chain=True, gram_shift=-1.0, style_layer_decay=2.0)
    content = torch.from_numpy(content_array).permute(2, 0, 1)[None].float()
    style = torch.from_numpy(style_array).permute(2, 0, 1)[None].float()
    objective = Objective(shallow_extractor, settings, content, [StyleInput(style)], (48, 40))
    assert chain_pairs(settings) == [("conv1_1", "conv2_1"), ("conv2_1", "conv3_1")]
    assert len(objective.chain_losses) == 2

    def chain_value(image):
        feats = shallow_extractor(image)
        return sum(w * fn(feats[a], feats[b]) for a, b, w, fn in objective.chain_losses)

    image = content.clone().requires_grad_(True)
    optimizer = torch.optim.Adam([image], lr=0.02)
    with torch.no_grad():
        start = float(chain_value(image))
    for _ in range(15):
        optimizer.zero_grad()
        objective(image)[0].backward()
        optimizer.step()
    with torch.no_grad():
        assert float(chain_value(image)) < 0.7 * start
    # It falls because the run minimises it: a run without the chain terms lowers it about as
    # much through the Gram terms alone, so the fall by itself would not tell. The objective is
    # the one without them plus the weighted chain terms.
    plain = Objective(shallow_extractor, settings.replace(style_chain=False), content, [StyleInput(style)], (48, 40))
    with torch.no_grad():
        for at in (content, image.detach()):
            chained = settings.style_weight * float(chain_value(at))
            assert chained > 1e-3 * float(plain(at)[0])
            assert float(objective(at)[0]) == pytest.approx(float(plain(at)[0]) + chained, rel=1e-5)


def test_each_style_setting_reaches_the_objective(shallow_extractor, content_array, style_array, make_settings):
    # Their own unit tests check the losses; this checks a run's objective uses them: a setting
    # dropped on its way there would leave every style term as the default's.
    content = torch.from_numpy(content_array).permute(2, 0, 1)[None].float()
    style = torch.from_numpy(style_array).permute(2, 0, 1)[None].float()
    image = torch.rand(content.shape, generator=torch.Generator().manual_seed(0))
    layers = FAST_STYLE_LAYERS

    def style_terms(**given):
        objective = Objective(shallow_extractor, make_settings(**given), content, [StyleInput(style)], (48, 40))
        terms = objective.terms(image)
        return np.array([terms[k] for k in layers])

    default = style_terms()
    assert (default > 0).all()
    for given in (dict(style_loss="w2"), dict(style_loss="meanstd"), dict(gram_shift=-1.0), dict(style_scale=0.5), dict(style_layer_decay=2.0)):
        changed = style_terms(**given)
        assert (np.abs(changed / default - 1) > 0.05).any(), given
    # Layer weights scale each layer's term by its weight, relative to the others.
    weighted = style_terms(style_layer_weights=(3.0, 1.0, 0.0)) / default
    assert weighted[2] == 0 and weighted[0] / weighted[1] == pytest.approx(3.0, rel=1e-4)


def test_objective_terms_split_the_total_by_layer(shallow_extractor, content_array, style_array, make_settings):
    # What benchmarks/fine_scale.py prints: the weighted terms must add up to the objective itself.
    settings = make_settings(style_chain=True)
    content = torch.from_numpy(content_array).permute(2, 0, 1)[None].float()
    style = torch.from_numpy(style_array).permute(2, 0, 1)[None].float()
    objective = Objective(shallow_extractor, settings, content, [StyleInput(style)], (48, 40))
    image = torch.rand_like(content)
    terms = objective.terms(image)
    assert set(settings.style_layers) < set(terms)
    assert "conv1_1xconv2_1" in terms
    with torch.no_grad():
        total, _ = objective(image)
    assert terms["total"] == pytest.approx(float(total), rel=1e-5)
    assert sum(v for k, v in terms.items() if k != "total") == pytest.approx(float(total), rel=1e-4)
    assert terms["content"] > 0 and objective.terms(content)["content"] == 0


def test_novak2016_preset_runs_end_to_end(stylizer, make_settings, content_array, style_array):
    settings = Settings.from_preset("novak2016", **{k: v for k, v in vars(make_settings()).items() if k not in PRESETS["novak2016"].settings})
    result = stylizer.run(content_array, style_array, settings.replace(iterations=3))
    assert len(result.settings.style_layers) == 16  # "all", spelled out once the weights' model is known
    assert all(np.isfinite(v) for v in result.losses.values())
    assert result.losses["style"] < result.history[0]["style"]


# -- masks ---------------------------------------------------------------------------------------


def halves_change(result_image, content_array) -> tuple[float, float]:
    out = np.asarray(result_image, dtype=np.float64) / 255.0
    change = np.abs(out - content_array).mean(axis=2)
    w = change.shape[1]
    return change[:, : w // 3].mean(), change[:, -w // 3 :].mean()


def test_a_mask_confines_its_style(stylizer, make_settings, content_array, style_array):
    h, w = content_array.shape[:2]
    mask = np.zeros((h, w))
    mask[:, : w // 2] = 1.0
    settings = make_settings(style_weight=300.0, iterations=12)
    left, right = halves_change(stylizer.run(content_array, style_array, settings, masks=[mask]).image, content_array)
    assert left > 3 * right
    # Flipped mask, flipped result.
    left, right = halves_change(stylizer.run(content_array, style_array, settings, masks=[1 - mask]).image, content_array)
    assert right > 3 * left


def test_keep_mask_keeps_the_content_exactly_there(stylizer, make_settings, content_array, style_array, tmp_path):
    h, w = content_array.shape[:2]
    keep = np.zeros((h * 2, w * 2), dtype=np.uint8)  # another size: stretched to the output's
    keep[:, w:] = 255
    settings = make_settings(style_weight=300.0, iterations=8, init="noise")
    result = stylizer.run(content_array, [(style_array, 0.5), (style_array[::-1].copy(), 0.5)], settings, keep_mask=write_png(tmp_path / "keep.png", keep), frames=3)
    out = np.asarray(result.image, dtype=np.float64) / 255.0
    kept = np.abs(out[:, w // 2 + 1 :] - content_array[:, w // 2 + 1 :]).max()
    painted = np.abs(out[:, : w // 2 - 1] - content_array[:, : w // 2 - 1]).mean()
    assert kept <= 1 / 255 + 1e-9 and painted > 0.05
    for frame in result.frames:  # the frames handed out show the kept region too
        assert np.abs(np.asarray(frame, dtype=np.float64)[:, w // 2 + 1 :] / 255 - content_array[:, w // 2 + 1 :]).max() <= 1 / 255 + 1e-9


def test_a_run_stopped_at_a_coarse_scale_still_keeps_the_photo_exactly(stylizer, make_settings, tmp_path):
    photo = textured_image(80, 96, low=REDDISH[0], high=REDDISH[1])
    keep = np.zeros((80, 96), dtype=np.uint8)
    keep[:, 48:] = 255
    settings = make_settings(size=96, min_size=24, multiscale=True, iterations=3, initial_iterations=3, preserve_color="luminance")
    calls = []
    # Stopped by its callback at the coarsest scale, as Ctrl-C, a NaN or running out of memory can stop it.
    result = stylizer.run(photo, textured_image(64, 64), settings, keep_mask=write_png(tmp_path / "keep.png", keep),
                          callback=lambda p: calls.append(p.scale) or False)
    assert result.interrupted and calls == [0] and result.image.size == (96, 80)
    out = np.asarray(result.image, dtype=np.float64) / 255.0
    assert np.abs(out[:, 49:] - photo[:, 49:]).max() <= 1 / 255 + 1e-9  # the photo's pixels, not an enlarged copy
    # The photo's colours at full size: in luminance mode only the brightness is the painting's.
    chroma = lambda rgb: impasto.color.rgb_to_yiq(torch.from_numpy(rgb).permute(2, 0, 1)[None].float())[0, 1:]  # noqa: E731
    assert (chroma(out) - chroma(photo)).abs().mean() < 0.01


def test_a_style_of_weight_zero_with_its_own_mask_leaves_its_region_to_the_photo(stylizer, make_settings, content_array, style_array):
    h, w = content_array.shape[:2]
    left = np.zeros((h, w), dtype=np.uint8)
    left[:, : w // 2] = 255
    with pytest.warns(impasto.ImpastoWarning, match="style 2 has weight 0, so its mask's region is matched to no painting"):
        result = stylizer.run(content_array, [(style_array, 1.0), (style_array[::-1].copy(), 0.0)],
                              make_settings(style_weight=300.0, iterations=8), masks=[left, 255 - left])
    out = np.asarray(result.image, dtype=np.float64) / 255.0
    change = np.abs(out - content_array).mean(axis=(0, 2))
    assert np.isfinite(result.losses["total"]) and change[: w // 2 - 2].mean() > 2 * change[w // 2 + 2 :].mean()


def test_mask_options_on_the_command_line(capsys, tmp_path, content_path, style_path, fast):
    mask = write_png(tmp_path / "mask.png", np.full((9, 30), 255, dtype=np.uint8))  # wrong size and aspect: stretched
    out = tmp_path / "out.png"
    code, _, err = cli(capsys, content_path, style_path, f"{style_path}:0.5", "--mask", mask, "--mask", "none", "--keep-mask", mask, "-o", out, *fast)
    assert_one_line_error(code, err, "keep mask is white everywhere")
    code, _, err = cli(capsys, content_path, style_path, f"{style_path}:0.5", "--mask", mask, "--mask", "none", "-o", out, *fast)
    assert code == 0, err
    assert Image.open(out).size == (48, 40)
    code, _, err = cli(capsys, content_path, style_path, style_path, "--mask", mask, "-o", tmp_path / "o2.png", *fast)
    assert_one_line_error(code, err, "1 --mask given for 2 style(s)", "one per style")
    code, _, err = cli(capsys, content_path, style_path, "--mask", tmp_path / "missing.png", "-o", tmp_path / "o3.png", *fast)
    assert_one_line_error(code, err, "missing.png: no such file")


# -- several styles ------------------------------------------------------------------------------


def test_styles_of_any_shape_blend_from_the_command_line(capsys, tmp_path, content_path, fast):
    panorama = write_png(tmp_path / "pano.png", textured_image(10, 300, *BLUISH))  # 30:1, 10 px high
    tower = write_png(tmp_path / "tower.png", textured_image(200, 12, *REDDISH))
    out = tmp_path / "blend.png"
    code, _, err = cli(capsys, content_path, f"{panorama}:0.5", f"{tower}:0.5", "-o", out, *fast)
    assert code == 0, err
    assert Image.open(out).size == (48, 40)
    assert min(style_size(torch.zeros(1, 3, 10, 300).shape, 48)) == 16  # a thin style keeps enough pixels for conv5


def test_style_weights_summing_to_zero_is_one_line(capsys, tmp_path, content_path, style_path, fast):
    code, _, err = cli(capsys, content_path, f"{style_path}:0", f"{style_path}:0", "-o", tmp_path / "o.png", *fast)
    assert_one_line_error(code, err, "not all zero")


# -- progress as pictures ------------------------------------------------------------------------


def test_frame_iterations_are_evenly_spaced():
    assert frame_iterations(100, 5) == [1, 26, 51, 75, 100]
    assert frame_iterations(4, 10) == [1, 2, 3, 4]
    assert frame_iterations(9, 1) == [9]


def test_gif_and_plot_from_the_command_line(capsys, tmp_path, content_path, style_path, fast):
    gif, plot, out = tmp_path / "p.gif", tmp_path / "l.png", tmp_path / "o.png"
    # Adam changes the picture at every step; Pillow merges a frame identical to the one before.
    code, _, err = cli(capsys, content_path, style_path, "-o", out, *fast, "--optimizer", "adam", "--gif", gif, "--gif-frames", 4, "--gif-duration", 2, "--plot", plot)
    assert code == 0, err
    with Image.open(gif) as g:
        assert g.n_frames == 4 and g.size == (48, 40)  # coarse frames upsampled to the output's size
        assert g.info["duration"] == 500 and g.info.get("loop") == 0
    with Image.open(plot) as p:
        assert p.format == "PNG" and p.size == (800, 450)
    code, _, err = cli(capsys, content_path, style_path, "-o", tmp_path / "o2.png", *fast, "--gif", tmp_path / "p.png")
    assert_one_line_error(code, err, "must end in .gif")


def test_gif_and_plot_from_python(stylizer, make_settings, content_array, style_array, tmp_path):
    # From the photo as it is: from the palette start these few Adam steps end above their best,
    # so the last frame (the result, the best) repeats an earlier one, which Pillow merges.
    settings = make_settings(multiscale=True, size=48, min_size=24, scale_factor=2.0, initial_iterations=6, iterations=4, init="content")
    result = stylizer.run(content_array, style_array, settings.replace(optimizer="adam"), frames=5)
    assert len(result.frames) == 5 and {f.size for f in result.frames} == {(48, 40)}
    assert np.array_equal(np.asarray(result.frames[-1]), np.asarray(result.image))
    write_gif(result, tmp_path / "a.gif", duration=1.0)
    with Image.open(tmp_path / "a.gif") as g:
        assert g.n_frames == 5
    fig = plot_losses(result, tmp_path / "l.png")
    ax = fig.axes[0]
    assert ax.get_yscale() == "log"
    labels = [line.get_label() for line in ax.get_lines()]
    # Plain words: no weights, multipliers or setting names in the legend.
    content_label = "content loss"
    assert set(labels) == {content_label, "style loss", "total variation", "total loss", "a finer scale starts"}
    assert labels.count("a finer scale starts") == 1  # two scales, one boundary
    content_line = ax.get_lines()[labels.index(content_label)]
    assert list(content_line.get_xdata()) == list(range(1, 11))
    # Drawn as they add up: at a coarse iteration too, the plotted terms sum to the total (the
    # first iteration's content term is 0, a gap on the log axis).
    lines = {line.get_label(): line.get_ydata() for line in ax.get_lines()}
    for i in (1, 9):
        plotted = sum(lines[name][i] for name in (content_label, "style loss", "total variation"))
        assert plotted == pytest.approx(lines["total loss"][i], rel=1e-4)
    assert Image.open(tmp_path / "l.png").format == "PNG"
    with pytest.raises(ImpastoError, match=r"already exists \(pass overwrite=True to replace it\)"):
        plot_losses(result, tmp_path / "l.png")


def test_missing_matplotlib_names_the_extra(monkeypatch, tmp_path):
    monkeypatch.setitem(sys.modules, "matplotlib", None)
    with pytest.raises(ImpastoError, match=r"pip install 'impasto\[viz\]'"):
        plot_losses([{"iteration": 1, "scale": 0, "content": 1.0, "style": 1.0, "tv": 1.0, "total": 3.0}], tmp_path / "l.png")


def test_a_plot_leaves_the_callers_matplotlib_backend_alone(tmp_path):
    # A notebook's inline backend must survive a plot: figures after it still show.
    matplotlib = pytest.importorskip("matplotlib")
    before = matplotlib.get_backend()
    matplotlib.use("svg")
    try:
        fig = plot_losses([{"iteration": 1, "scale": 0, "content": 1.0, "style": 1.0, "tv": 1.0, "total": 3.0}], tmp_path / "l.png")
        assert matplotlib.get_backend() == "svg"
        assert (tmp_path / "l.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n" and fig.axes
    finally:
        matplotlib.use(before)


def test_gif_frames_are_spread_by_compute_so_the_output_size_gets_its_share(stylizer, make_settings, content_array, style_array):
    # 20 iterations at 24x20 then 4 at 48x40: the finest scale is 4 of 24 iterations but
    # 7680 of 17280 pixel-iterations, so it should hold nearly half the frames, not one.
    settings = make_settings(multiscale=True, size=48, min_size=24, scale_factor=2.0, initial_iterations=20, iterations=4, optimizer="adam")
    recorder = FrameRecorder(6, (48, 40))
    stylizer.run(content_array, style_array, settings, callback=recorder)
    assert recorder.iterations == [1, 8, 15, 21, 23, 24]
    assert len(recorder.frames) == 6


def test_frame_recorder_takes_as_many_frames_as_asked_even_when_one_iteration_is_most_of_the_work():
    from impasto.optimize import Progress

    recorder = FrameRecorder(4, (8, 8))
    work = [0.01, 0.02, 0.03, 0.9, 0.95, 1.0]  # iteration 4 crosses two frames' marks at once
    for done, share in enumerate(work, 1):
        recorder(Progress(0, 1, (8, 8), done, 6, done, 6, {}, torch.rand(1, 3, 8, 8), 0.0, work=share))
    assert recorder.iterations == [1, 4, 5, 6]  # distinct iterations, the last the run's last


def test_frame_recorder_upsamples_coarse_frames():
    from impasto.optimize import Progress

    rec = FrameRecorder(2, (40, 30))
    for done, side in ((1, 10), (2, 20)):
        rec(Progress(0, 1, (side, side), done, 2, done, 2, {}, torch.rand(1, 3, side, side), 0.0))
    assert [f.size for f in rec.frames] == [(40, 30), (40, 30)]


# -- sweeps --------------------------------------------------------------------------------------


def test_sweep_2x2_sheet_and_cells(stylizer, make_settings, content_array, style_array, tmp_path):
    settings = make_settings(iterations=2)
    before = stylizer.style_cache.hits
    result = impasto.sweep(content_array, style_array, {"style_weight": [10, 100], "tv_weight": ["0", "5"]}, settings, stylizer)
    assert [[r.settings.style_weight for r in row] for row in result.results] == [[10, 10], [100, 100]]
    assert [[r.settings.tv_weight for r in row] for row in result.results] == [[0.0, 5.0], [0.0, 5.0]]
    # Every image sits on the sheet where its box says, and the labels make the sheet larger than the cells.
    for (r, c), box in result.boxes.items():
        assert np.array_equal(np.asarray(result.sheet.crop(box)), np.asarray(result.images[r][c]))
    w, h = result.sheet.size
    assert 2 * 48 < w < 2 * 48 + 300 and 2 * 40 + 20 < h < 2 * 40 + 150
    xs = sorted({b[0] for b in result.boxes.values()})
    ys = sorted({b[1] for b in result.boxes.values()})
    assert len(xs) == 2 and len(ys) == 2 and xs[1] - xs[0] >= 48 and ys[1] - ys[0] >= 40
    # The sheet has ink (titles) outside the cells.
    sheet = np.asarray(result.sheet).copy()
    for box in result.boxes.values():
        sheet[box[1] : box[3], box[0] : box[2]] = 255
    assert (sheet < 128).sum() > 50
    # The style statistics were computed once and reused by the other three cells.
    assert stylizer.style_cache.hits - before >= 3


def test_sweep_command_writes_sheet_and_images(capsys, tmp_path, content_path, style_path, fast):
    sheet = tmp_path / "sheet.png"
    code, _, err = cli(capsys, "sweep", content_path, style_path, "--grid", "style-weight=10,100", "--grid", "content_layers=conv1_2,conv2_2", "-o", sheet, *fast)
    assert code == 0, err
    cells = {p.name for p in cells_folder(sheet).iterdir()}
    assert cells == {
        "style_weight=10__content_layers=conv1_2.png", "style_weight=10__content_layers=conv2_2.png",
        "style_weight=100__content_layers=conv1_2.png", "style_weight=100__content_layers=conv2_2.png",
    }  # fmt: skip
    assert Image.open(sheet).size[0] > 2 * 48
    code, _, err = cli(capsys, "sweep", content_path, style_path, "--grid", "style_weight=1", "-o", sheet, *fast)
    assert_one_line_error(code, err, "already exists")


@pytest.mark.parametrize(
    "grid, message",
    [
        (["style_wieght=1,2"], "cannot sweep 'style_wieght'"),
        (["style_weight=1,abc"], "grid style_weight: 'abc' is not a number"),
        (["style_loss=gram,fancy"], "grid cell style_loss=fancy: --style-loss must be one of"),
        (["style_weight"], "SETTING=V1,V2"),
        (["size=32", "tv_weight=1", "style_weight=2"], "one or two settings"),
        (["size=32", "size=40"], "given twice"),
    ],
)
def test_bad_grids_are_one_line(capsys, tmp_path, content_path, style_path, fast, grid, message):
    args = [a for g in grid for a in ("--grid", g)]
    code, _, err = cli(capsys, "sweep", content_path, style_path, *args, "-o", tmp_path / "s.png", *fast)
    assert_one_line_error(code, err, message)
    assert not (tmp_path / "s.png").exists()


def test_grid_values_follow_the_setting_types():
    assert parse_grid("multiscale=on,off") == ("multiscale", [True, False])
    assert parse_grid("style_layers=conv1_1+conv2_1,conv3_1") == ("style_layers", [("conv1_1", "conv2_1"), ("conv3_1",)])
    assert parse_grid("preserve_color=none,luminance") == ("preserve_color", [None, "luminance"])
    assert parse_grid("--iterations=5,10") == ("iterations", [5, 10])
    with pytest.raises(ImpastoError, match="whole number"):
        parse_grid("iterations=1.5")


# -- outputs of a run cut short, replaced or empty -------------------------------------------------


def test_a_sweep_cut_short_keeps_the_cells_it_finished(stylizer, make_settings, content_array, style_array, tmp_path):
    calls = {"n": 0}

    def ctrl_c_in_the_second_cell(progress):
        calls["n"] += 1
        if calls["n"] == 3:  # two iterations per cell: the second cell's first
            raise KeyboardInterrupt

    with pytest.raises(impasto.Interrupted) as stop:
        impasto.sweep(content_array, style_array, {"style_weight": [10, 20, 30]}, make_settings(iterations=2).to_dict(), stylizer,
                      callback=ctrl_c_in_the_second_cell)  # fmt: skip
    partial = stop.value.result
    assert [r is not None for r in partial.results[0]] == [True, False, False]
    assert [values for values, _ in partial.cells()] == [{"style_weight": 10}]
    blank = np.asarray(partial.images[0][2])
    assert blank.min() == blank.max() == 235  # a cell that never ran is blank, not another cell's picture
    written = save_sweep(partial, tmp_path / "s.png")
    assert [p.name for p in written] == ["style_weight=10.png"] and (tmp_path / "s.png").exists()


def fail_in_run(number: int, error: BaseException, monkeypatch) -> None:
    """Stylizer.run raises `error` on its `number`th call, and runs as usual on the others."""
    real_run, calls = impasto.Stylizer.run, {"n": 0}

    def run(self, *args, **kwargs):
        calls["n"] += 1
        if calls["n"] == number:
            raise error
        return real_run(self, *args, **kwargs)

    monkeypatch.setattr(impasto.Stylizer, "run", run)


@pytest.mark.parametrize(
    "error, said",
    [
        (ImpastoError("the painting is too small"), "the painting is too small"),
        (impasto.NonFiniteLoss("the loss became nan at iteration 1"), "the loss became nan at iteration 1"),
        (torch.cuda.OutOfMemoryError("CUDA out of memory. Tried to allocate 2.00 GiB"), "the device ran out of memory (CUDA out of memory."),
    ],
)
def test_a_sweep_cell_that_fails_keeps_the_cells_finished_before_it(stylizer, make_settings, content_array, style_array, tmp_path,
                                                                    monkeypatch, error, said):  # fmt: skip
    fail_in_run(3, error, monkeypatch)  # the second row's first cell
    with pytest.raises(SweepFailed) as failed:
        impasto.sweep(content_array, style_array, {"style_weight": [10, 20], "tv_weight": [0, 5]}, make_settings(iterations=2), stylizer)
    assert isinstance(failed.value, ImpastoError)  # what caught a failed sweep before still does
    assert str(failed.value).startswith(f"grid cell style_weight=20, tv_weight=0: {said}")
    partial = failed.value.result
    assert failed.value.cell == (1, 0)
    assert [[r is not None for r in row] for row in partial.results] == [[True, True], [False, False]]
    blank, marked = np.asarray(partial.images[1][1]), np.asarray(partial.images[1][0])
    assert blank.min() == blank.max() == 235
    red = (marked[..., 0] > 120) & (marked[..., 1] < 60)
    assert red.sum() > 10 and red.mean() < 0.5  # "failed" written on it, not a red square
    for (r, c), box in partial.boxes.items():  # on the sheet as in `images`
        assert np.array_equal(np.asarray(partial.sheet.crop(box)), np.asarray(partial.images[r][c]))
    written = save_sweep(partial, tmp_path / "s.png")  # the finished cells only: a failed cell has no picture
    assert [p.name for p in written] == ["style_weight=10__tv_weight=0.png", "style_weight=10__tv_weight=5.png"]


def test_a_sweep_whose_first_cell_fails_raises_a_plain_one_line_error(stylizer, make_settings, content_array, style_array, monkeypatch):
    fail_in_run(1, torch.cuda.OutOfMemoryError("CUDA out of memory. Tried to allocate 2.00 GiB"), monkeypatch)
    with pytest.raises(ImpastoError, match=r"^grid cell style_weight=10: the device ran out of memory \(CUDA out of memory") as failed:
        impasto.sweep(content_array, style_array, {"style_weight": [10, 20]}, make_settings(iterations=2), stylizer)
    assert not isinstance(failed.value, SweepFailed)  # no sheet of nothing, as with Ctrl-C in the first cell
    monkeypatch.undo()
    fail_in_run(2, RuntimeError("index out of range"), monkeypatch)
    with pytest.raises(RuntimeError, match="^index out of range$"):  # a bug keeps its traceback
        impasto.sweep(content_array, style_array, {"style_weight": [10, 20]}, make_settings(iterations=2), stylizer)


def test_sweep_command_cut_short_writes_the_cells_done(capsys, tmp_path, content_path, style_path, fast, monkeypatch):
    real_run, calls = impasto.Stylizer.run, {"n": 0}

    def run_then_ctrl_c(self, *args, **kwargs):
        calls["n"] += 1
        if calls["n"] == 2:
            raise KeyboardInterrupt
        return real_run(self, *args, **kwargs)

    monkeypatch.setattr(impasto.Stylizer, "run", run_then_ctrl_c)
    sheet = tmp_path / "sheet.png"
    code, _, err = cli(capsys, "sweep", content_path, style_path, "--grid", "style_weight=10,20,30", "-o", sheet, *fast)
    assert code == 130, err
    assert "interrupted: 1 of 3 cells ran" in err
    assert [p.name for p in cells_folder(sheet).iterdir()] == ["style_weight=10.png"] and sheet.exists()


def test_a_sweep_that_cannot_start_shows_its_error_alone(capsys, tmp_path, style_path, fast):
    shown_bar = [a for a in fast if a != "--quiet"]
    code, _, err = cli(capsys, "sweep", tmp_path / "typo.png", style_path, "--grid", "style_weight=10,20", "-o", tmp_path / "s.png", *shown_bar)
    # As a terminal shows it: each line's text after its last carriage return. The progress bar,
    # drawn before the checks, is wiped rather than left above the error as an empty "0/2".
    shown = [line.split("\r")[-1].strip() for line in err.split("\n")]
    assert [line for line in shown if line] == [f"impasto: error: {tmp_path / 'typo.png'}: no such file"] and code == 2


def test_sweep_command_with_a_failed_cell_writes_the_cells_done_and_names_the_cell(capsys, tmp_path, content_path, style_path, fast, monkeypatch):
    fail_in_run(2, ImpastoError("the painting is too small"), monkeypatch)
    sheet = tmp_path / "sheet.png"
    code, _, err = cli(capsys, "sweep", content_path, style_path, "--grid", "style_weight=10,20,30", "-o", sheet, *fast)
    assert code == 2, err
    wrote, error = err.strip().splitlines()  # what was kept, then the error on a line of its own
    assert "1 of 3 cells ran; the failed one is marked on the sheet" in wrote
    assert error == "impasto: error: grid cell style_weight=20: the painting is too small"
    assert [p.name for p in cells_folder(sheet).iterdir()] == ["style_weight=10.png"] and sheet.exists()


def test_a_sweep_cell_stopped_early_is_said_and_the_command_exits_1(capsys, tmp_path, content_path, style_path, fast, monkeypatch):
    real_run, calls = impasto.Stylizer.run, {"n": 0}

    def second_runs_out_of_memory(self, *args, **kwargs):
        calls["n"] += 1
        result = real_run(self, *args, **kwargs)
        if calls["n"] == 2:
            result.interrupted, result.stopped_reason = True, "out of memory on cpu for a 40x33 output; a smaller size needs less"
        return result

    monkeypatch.setattr(impasto.Stylizer, "run", second_runs_out_of_memory)
    sheet = tmp_path / "sheet.png"
    code, _, err = cli(capsys, "sweep", content_path, style_path, "--grid", "style_weight=10,20,30", "-o", sheet, *fast)
    assert code == 1, err
    assert "grid cell style_weight=20: out of memory on cpu" in err and "1 cell stopped early, as warned above" in err
    assert sheet.exists()


def test_overwrite_replaces_frames_and_cells_as_a_set(capsys, tmp_path, content_path, style_path, fast):
    out = tmp_path / "o.png"
    assert cli(capsys, content_path, style_path, "-o", out, *fast, "--save-every", 1)[0] == 0
    assert len(list(tmp_path.glob("o_frames/*.png"))) == 6
    code, _, err = cli(capsys, content_path, style_path, "-o", out, *fast, "--save-every", 3, "--overwrite")
    assert code == 0, err
    assert sorted(p.name for p in tmp_path.glob("o_frames/*.png")) == ["00003.png", "00006.png"]

    sheet = tmp_path / "s.png"
    assert cli(capsys, "sweep", content_path, style_path, "--grid", "tv_weight=1,2,3", "-o", sheet, *fast)[0] == 0
    code, _, err = cli(capsys, "sweep", content_path, style_path, "--grid", "tv_weight=5", "-o", sheet, *fast, "--overwrite")
    assert code == 0, err
    assert [p.name for p in cells_folder(sheet).iterdir()] == ["tv_weight=5.png"]


def test_a_plot_is_a_png_by_name_too(capsys, tmp_path, content_path, style_path, fast):
    code, _, err = cli(capsys, content_path, style_path, "-o", tmp_path / "o.png", *fast, "--plot", tmp_path / "l.jpg")
    assert_one_line_error(code, err, "--plot", "must end in .png")
    assert not (tmp_path / "o.png").exists()


def test_no_iterations_says_there_is_no_gif_or_plot_and_the_last_frame_is_kept(capsys, tmp_path, content_path, style_path, fast):
    code, _, err = cli(capsys, content_path, style_path, "-o", tmp_path / "o.png", *fast, "--initial-iterations", 0,
                       "--iterations", 0, "--gif", tmp_path / "g.gif", "--plot", tmp_path / "l.png")  # fmt: skip
    assert code == 0, err
    assert "no iterations ran, so there is no" in err and str(tmp_path / "g.gif") in err and str(tmp_path / "l.png") in err
    assert not (tmp_path / "g.gif").exists() and (tmp_path / "o.png").exists()
    # Iterations at the coarse scale only: the run's last frame is its last coarse iteration's.
    code, _, err = cli(capsys, content_path, style_path, "-o", tmp_path / "c.png", *fast, "--initial-iterations", 5,
                       "--iterations", 0, "--save-every", 2)  # fmt: skip
    assert code == 0, err
    assert sorted(p.name for p in tmp_path.glob("c_frames/*.png")) == ["00002.png", "00004.png", "00005.png"]


@pytest.mark.parametrize("weight", ["nan", "inf"])
def test_a_style_weight_that_is_not_a_number_is_refused(capsys, tmp_path, content_path, style_path, fast, weight):
    code, _, err = cli(capsys, content_path, f"{style_path}:{weight}", "-o", tmp_path / "o.png", *fast)
    assert_one_line_error(code, err, "style blend weights must be non-negative numbers")
    assert not (tmp_path / "o.png").exists()


def test_a_long_column_title_is_cut_to_its_cell():
    from PIL import ImageDraw

    from impasto.sweep import _fit, load_font

    font, measure = load_font(11), ImageDraw.Draw(Image.new("RGB", (1, 1)))
    shown = _fit("style_layers=conv1_1+conv2_1+conv3_1+conv4_1", 48, font, measure)
    assert measure.textlength(shown, font=font) <= 48 and shown.endswith("…") and shown.startswith("conv1")


def test_plot_weights_given_by_the_caller_are_drawn_as_given():
    rows = [{"iteration": 1, "scale": 0, "content": 1.0, "style": 1.0, "tv": 1.0, "total": 10.0, "content_weight": 5.0},
            {"iteration": 2, "scale": 1, "content": 1.0, "style": 1.0, "tv": 1.0, "total": 5.0, "content_weight": 1.0}]  # fmt: skip
    lines = {line.get_label(): line.get_ydata() for line in plot_losses(rows, weights={"content": 2.0}).axes[0].get_lines()}
    assert list(lines["content loss"]) == [2.0, 2.0]
    lines = {line.get_label(): line.get_ydata() for line in plot_losses(rows).axes[0].get_lines()}
    assert list(lines["content loss"]) == [5.0, 1.0]  # each row's own content weight


def test_every_cell_of_a_sweep_is_checked_before_the_first_runs(capsys, tmp_path, content_path, style_path, fast):
    code, _, err = cli(capsys, "sweep", content_path, style_path, "--grid", f"init=content,{tmp_path / 'none.png'}", "-o", tmp_path / "s.png", *fast)
    assert_one_line_error(code, err, "grid cell init=", "none.png'", "no such file")
    assert not cells_folder(tmp_path / "s.png").exists()


@pytest.mark.parametrize("grid, said", [("size=48,40000", "grid cell size=40000: a "), ("device=cpu,cuda:7", "grid cell device=cuda:7: ")])
def test_a_sweep_cell_too_large_or_on_a_missing_device_is_refused_before_any_run(capsys, tmp_path, content_path, style_path, fast, grid, said):
    flag = "--" + grid.split("=")[0]
    at = fast.index(flag)
    others = fast[:at] + fast[at + 2 :]  # the grid gives it
    started = time.perf_counter()
    code, _, err = cli(capsys, "sweep", content_path, style_path, "--grid", grid, "-o", tmp_path / "s.png", *others)
    assert_one_line_error(code, err, said)
    assert not cells_folder(tmp_path / "s.png").exists() and time.perf_counter() - started < 20


def test_a_swept_iteration_count_is_run_even_at_a_size_of_one_scale(stylizer, make_settings, content_array, style_array):
    settings = make_settings(multiscale=True, size=48, min_size=32, initial_iterations=4)  # 48 < 2 x 32: one scale
    result = impasto.sweep(content_array, style_array, {"iterations": [2, 5]}, settings, stylizer)
    assert [len(r.history) for r in result.results[0]] == [2, 5]


def test_a_python_sweep_takes_single_settings_as_keywords(stylizer, make_settings, content_array, style_array):
    result = impasto.sweep(content_array, style_array, {"tv_weight": [0, 5]}, make_settings(), stylizer, size=32)
    assert [im.size for im in result.images[0]] == [(32, 27), (32, 27)]


def test_a_picture_swept_is_labelled_by_its_name_not_its_folder(tmp_path):
    painting = tmp_path / "deep" / "folder" / "coffee.png"
    assert cell_filename({"init": str(painting)}) == "init=coffee.png.png"
    assert cell_label({"init": str(painting), "tv_weight": 2.0}) == "init=coffee.png, tv_weight=2"


def test_a_plot_is_a_png_whatever_the_caller(tmp_path):
    rows = [{"iteration": 1, "scale": 0, "total": 2.0, "content": 1.0, "style": 1.0, "tv": 0.0}]
    with pytest.raises(ImpastoError, match=r"plot\.svg: the file name must end in \.png \(the plot is a PNG\)$"):
        plot_losses(rows, tmp_path / "plot.svg")
    assert not (tmp_path / "plot.svg").exists()


def test_an_option_the_grid_sweeps_is_said_to_be_replaced(capsys, tmp_path, content_path, style_path, fast):
    code, _, err = cli(capsys, "sweep", content_path, style_path, "--grid", "tv_weight=1,2", "--tv-weight", "5", "-o", tmp_path / "s.png", *fast)
    assert code == 0, err
    assert "impasto: warning: --tv-weight 5 is replaced in every cell by the grid's values of tv_weight" in err


@pytest.mark.parametrize("chain", [False, True])
def test_style_losses_computed_inside_their_layers_relus_give_the_objective_and_gradient_computed_apart(vgg19_features, content_array, style_array, make_settings, chain):
    # The default's Gram losses run inside the ReLU after each layer (Objective.fused), which adds
    # their gradient into the network's; the objective and its gradient are those computed apart,
    # with the maps handed out as before to what else reads them (the chained terms).
    settings = make_settings(style_chain=chain, fine_content_layers=())
    extractor = FeatureExtractor("vgg19", vgg19_features, FAST_STYLE_LAYERS + FAST_CONTENT_LAYERS, "avg", "torchvision")
    content = torch.from_numpy(content_array).permute(2, 0, 1)[None].float()
    style = torch.from_numpy(style_array).permute(2, 0, 1)[None].float()
    objective = Objective(extractor, settings, content, [StyleInput(style)], (48, 40))
    assert set(objective.fused) == {"conv1_1", "conv2_1"}  # the network is cut after conv3_1: no ReLU follows it
    image = torch.rand(content.shape, generator=torch.Generator().manual_seed(0))

    def value_and_gradient():
        x = image.clone().requires_grad_(True)
        value = objective(x)[0]
        value.backward()
        return float(value.detach()), x.grad

    fused = value_and_gradient()
    objective.fused = {}
    apart = value_and_gradient()
    assert fused[0] == pytest.approx(apart[0], rel=1e-6)
    assert torch.allclose(fused[1], apart[1], rtol=1e-4, atol=1e-6 * float(apart[1].abs().max()))


def test_a_masked_or_shifted_gram_loss_is_computed_apart(shallow_extractor, content_array, style_array, make_settings):
    content = torch.from_numpy(content_array).permute(2, 0, 1)[None].float()
    style = torch.from_numpy(style_array).permute(2, 0, 1)[None].float()
    mask = torch.zeros(1, 1, 40, 48)
    mask[..., :24] = 1
    shifted = Objective(shallow_extractor, make_settings(gram_shift=-1.0), content, [StyleInput(style)], (48, 40))
    masked = Objective(shallow_extractor, make_settings(), content, [StyleInput(style, 1.0, mask), StyleInput(style, 1.0, 1 - mask)], (48, 40))
    assert shifted.fused == {} and masked.fused == {}
