"""The command line, end to end on tiny images; every bad input is one line on stderr."""

from __future__ import annotations

import json
import os
import shutil
import sys
import threading
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from impasto.cli import main

from conftest import FAST_CONTENT_LAYERS, FAST_STYLE_LAYERS, ctrl_c_when, impasto_command, png_bomb, run_child, to_uint8, write_png

FAST = [
    "--size", "48", "--min-size", "24", "--iterations", "3", "--initial-iterations", "3", "--device", "cpu",
    "--style-layers", ",".join(FAST_STYLE_LAYERS), "--content-layers", ",".join(FAST_CONTENT_LAYERS), "--quiet",
]  # fmt: skip
# Two scales (34 and 48 px long side), three iterations each.
TOTAL_ITERATIONS = 6


@pytest.fixture
def fast(synthetic_weights) -> list[str]:
    return FAST + ["--weights", str(synthetic_weights)]


def cli(capsys, *args) -> tuple[int, str, str]:
    code = main([str(a) for a in args])
    captured = capsys.readouterr()
    return code, captured.out, captured.err


def assert_one_line_error(code: int, err: str, *fragments: str) -> None:
    assert code != 0
    lines = err.strip().splitlines()
    assert len(lines) == 1, err
    assert lines[0].startswith("impasto: error:"), err
    assert "Traceback" not in err
    for fragment in fragments:
        assert fragment in lines[0]


def test_run_writes_the_output(capsys, tmp_path, content_path, style_path, fast):
    out = tmp_path / "out.png"
    code, _, err = cli(capsys, content_path, style_path, "-o", out, *fast)
    assert code == 0, err
    assert Image.open(out).size == (48, 40)
    assert f"wrote {out}" in err


def test_json_summary(capsys, tmp_path, content_path, style_path, fast):
    out, summary = tmp_path / "out.jpg", tmp_path / "run.json"
    code, _, err = cli(capsys, content_path, f"{style_path}:0.6", f"{style_path}:0.4", "-o", out, "--json", summary, *fast)
    assert code == 0, err
    data = json.loads(summary.read_text())
    assert set(data["losses"]) == {"content", "style", "tv", "total"}
    assert all(isinstance(v, float) for v in data["losses"].values())
    assert data["size"] == [48, 40] and data["output"] == str(out)
    assert data["iterations"] == TOTAL_ITERATIONS
    assert data["interrupted"] is False
    assert data["settings"]["size"] == 48 and data["settings"]["style_layers"] == list(FAST_STYLE_LAYERS)
    assert Image.open(out).format == "JPEG"
    # What went in, so the summary alone makes the picture again.
    assert data["content"] == str(content_path) and data["masks"] is None and data["keep_mask"] is None
    assert data["styles"] == [{"path": str(style_path), "weight": 0.6}, {"path": str(style_path), "weight": 0.4}]


def test_json_to_stdout(capsys, tmp_path, content_path, style_path, fast):
    code, out, err = cli(capsys, content_path, style_path, "-o", tmp_path / "out.png", "--json", "-", *fast)
    assert code == 0, err
    assert json.loads(out)["losses"]["total"] > 0


def test_save_every_writes_numbered_frames(capsys, tmp_path, content_path, style_path, fast):
    out = tmp_path / "painting.png"
    code, _, err = cli(capsys, content_path, style_path, "-o", out, "--save-every", "2", *fast)
    assert code == 0, err
    frames = tmp_path / "painting_frames"
    assert sorted(p.name for p in frames.iterdir()) == ["00002.png", "00004.png", "00006.png"]
    # Iteration 2 is at the coarse scale (24x20): enlarged, so every frame is the output's size.
    assert {Image.open(frames / name).size for name in ("00002.png", "00004.png", "00006.png")} == {(48, 40)}


def test_the_gif_frame_count_said_is_the_gifs_own(capsys, tmp_path, content_path, style_path, fast):
    gif = tmp_path / "p.gif"
    # A step too small to change a pixel: the frames of each scale are alike, and Pillow merges them.
    code, _, err = cli(capsys, content_path, style_path, "-o", tmp_path / "o.png", *fast, "--optimizer", "adam", "--lr", "1e-9",
                       "--gif", gif, "--gif-frames", TOTAL_ITERATIONS)  # fmt: skip
    assert code == 0, err
    with Image.open(gif) as g:
        written = g.n_frames
    assert written < TOTAL_ITERATIONS and f"wrote {gif} ({written} frames)" in err


def test_iterations_count_at_a_size_with_one_scale(capsys, tmp_path, content_path, style_path, fast):
    # 48 px is under twice --min-size 48: one scale, which is the output's, so --iterations is what it runs.
    for given in ("5", "50"):  # 50, the default's value, given all the same
        code, out, err = cli(capsys, content_path, style_path, "-o", tmp_path / f"o{given}.png", *fast, "--min-size", "48",
                             "--iterations", given, "--json", "-")  # fmt: skip
        assert code == 0, err
        assert json.loads(out)["iterations"] == int(given)


@pytest.mark.parametrize("flag", ["-o", "--json", "--gif", "--plot"])
def test_overwrite(capsys, tmp_path, content_path, style_path, fast, flag):
    if flag == "--plot":
        pytest.importorskip("matplotlib", reason="--plot needs impasto[viz]")
    outputs = {"-o": tmp_path / "out.png", "--json": tmp_path / "run.json", "--gif": tmp_path / "progress.gif", "--plot": tmp_path / "losses.png"}
    theirs = outputs[flag]
    theirs.write_bytes(b"an older result")
    every = [arg for name, path in outputs.items() for arg in (name, path)]
    code, _, err = cli(capsys, content_path, style_path, *every, *fast)
    assert_one_line_error(code, err, str(theirs), "already exists", "--overwrite")
    assert "wrote" not in err  # refused before the run, not after it
    assert theirs.read_bytes() == b"an older result"
    assert not any(path.exists() for path in outputs.values() if path != theirs)
    code, _, err = cli(capsys, content_path, style_path, *every, "--overwrite", *fast)
    assert code == 0, err
    assert Image.open(outputs["-o"]).size == (48, 40)
    assert json.loads(outputs["--json"].read_text())["output"] == str(outputs["-o"])
    assert Image.open(outputs["--gif"]).format == "GIF" and Image.open(outputs["--plot"]).format == "PNG"


@pytest.mark.parametrize("good_calls", [4, 0])
def test_a_loss_that_turns_nan(capsys, tmp_path, content_path, style_path, fast, monkeypatch, good_calls):
    import impasto.losses as L

    real_tv, calls = L.tv_loss, {"n": 0}

    def tv_that_blows_up(image):
        calls["n"] += 1
        value = real_tv(image)
        return value * float("nan") if calls["n"] > good_calls else value

    monkeypatch.setattr(L, "tv_loss", tv_that_blows_up)
    out = tmp_path / "out.png"
    # One scale (48 px is under twice --min-size 48) of ten iterations.
    code, _, err = cli(capsys, content_path, style_path, "-o", out, *fast, "--min-size", "48", "--iterations", "10", "--optimizer", "adam", "--lr", "0.01")
    if good_calls == 0:
        # Not one good picture to keep: an error, and nothing written.
        assert code == 2
        assert_one_line_error(code, err, "the loss became nan at iteration 1", "--lr")
        assert not out.exists()
        return
    # Four good iterations: their best picture is kept, and the exit status says the run was cut short.
    assert code == 1, err
    assert Image.open(out).size == (48, 40)
    lines = err.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith(f"wrote {out}"), err
    assert "the loss became nan at iteration 5" in lines[0] and "--lr" in lines[0] and "best image so far kept" in lines[0]


def test_version_and_an_unknown_command(capsys):
    import impasto

    with pytest.raises(SystemExit) as stopped:
        main(["--version"])
    assert stopped.value.code == 0 and capsys.readouterr().out.strip() == f"impasto {impasto.__version__}"
    # One version, pyproject.toml's, whichever way the command is started.
    import re
    import sys

    pyproject = (Path(__file__).resolve().parents[1] / "pyproject.toml").read_text()
    declared = re.search(r'^version = "([^"]+)"', pyproject, re.MULTILINE).group(1)
    assert impasto.__version__ == declared
    assert run_child([sys.executable, "-m", "impasto", "--version"]).stdout.strip() == f"impasto {declared}"
    # Where there is no `resource` module (Windows) the package still imports.
    without = run_child([sys.executable, "-c", "import sys; sys.modules['resource'] = None; from impasto.batch.work import peak_rss_mib; w = sys.modules['impasto.batch.work']; w.PROC_STATUS = '/no/such/file'; print(peak_rss_mib())"])
    assert without.returncode == 0 and without.stdout.strip() == "None", without.stderr
    code, _, err = cli(capsys, "frobnicate")
    assert_one_line_error(code, err, "unknown command 'frobnicate'", "batch", "video", "impasto PHOTO PAINTING -o OUT")
    # A misspelt command is one even with a run's worth of arguments after it.
    code, _, err = cli(capsys, "vidoe", "clip.mp4", "painting.jpg", "-o", "out.mp4")
    assert_one_line_error(code, err, "unknown command 'vidoe': did you mean `impasto video`?")


@pytest.mark.skipif(not Path("/proc/self/status").exists(), reason="Linux's /proc")
def test_a_program_started_by_a_large_process_reports_its_own_peak_memory_not_that_processs():
    # The speed benchmark and batch workers start fresh processes to read each one's peak.
    import sys

    held = bytearray(1536 * 1024**2)
    held[:: 4096] = b"\x01" * len(held[:: 4096])  # resident, not just reserved
    child = run_child([sys.executable, "-c", "from impasto.batch.work import peak_rss_mib; print(peak_rss_mib())"])
    assert child.returncode == 0, child.stderr
    # A Python with impasto imported (about 500 MiB with a CUDA build of torch); not this process's 1.5 GiB and more.
    assert 5 < float(child.stdout) < 1024
    del held


@pytest.mark.parametrize(
    "args, fragments",
    [
        (["--style-wieght", "10"], ["unrecognized arguments: --style-wieght 10 (did you mean --style-weight?)", "see impasto --help"]),
        (["--size", "abc"], ["argument --size: invalid int value: 'abc'"]),
        (["batch", "--contnets", "photos/", "-o", "out/"], ["impasto batch: error:", "(did you mean --contents?)"]),
        # Abbreviations are not options: argparse's default read --devic as --device, and
        # `serve --gif g.gif` as --gif-frames.
        (["--devic", "cpu"], ["unrecognized arguments: --devic cpu (did you mean --device?)"]),
        (["serve", "--gif", "g.gif"], ["impasto serve: error: unrecognized arguments: --gif g.gif"]),
    ],
)
def test_a_mistyped_option_is_one_line_with_a_guess(capsys, tmp_path, args, fragments):
    # The usage block argparse prints above its error would push the error out of sight.
    argv = args if args[0] in ("batch", "serve") else ["photo.jpg", "painting.jpg", "-o", str(tmp_path / "out.png"), *args]
    with pytest.raises(SystemExit) as stopped:
        main(argv)
    err = capsys.readouterr().err
    assert stopped.value.code == 2 and len(err.strip().splitlines()) == 1, err
    assert err.startswith("impasto") and all(f in err for f in fragments), err


def test_demo(capsys, tmp_path, monkeypatch, fast):
    monkeypatch.chdir(tmp_path)
    code, _, err = cli(capsys, "demo", "-o", "demo.png", *fast)
    assert code == 0, err
    assert "chelsea" in err and "starry_night" in err
    assert max(Image.open(tmp_path / "demo.png").size) == 48
    # Without -o, a second demo gets a name of its own instead of a refusal or an overwrite.
    for _ in range(2):
        code, _, err = cli(capsys, "demo", *fast)
        assert code == 0, err
    assert (tmp_path / "impasto-demo.png").is_file() and "impasto-demo-2.png" in err


BAD_INPUTS = {
    # case: (the arguments, built from the folder holding the inputs; what the error line must contain)
    "missing content": (lambda d: [d / "nope.png", d / "style.png", "-o", d / "out.png"], ["nope.png", "no such file"]),
    "missing style": (lambda d: [d / "content.png", d / "nope.jpg", "-o", d / "out.png"], ["nope.jpg: no such file"]),
    "not an image": (lambda d: [d / "notes.png", d / "style.png", "-o", d / "out.png"], ["notes.png", "not a readable image"]),
    "1-pixel image": (lambda d: [d / "dot.png", d / "style.png", "-o", d / "out.png"], ["too small"]),
    "unknown layer": (lambda d: [d / "content.png", d / "style.png", "-o", d / "out.png", "--style-layers", "conv1_1,conv9_9"], ["unknown layer 'conv9_9' for vgg19"]),
    "negative style weight": (lambda d: [d / "content.png", d / "style.png", "-o", d / "out.png", "--style-weight", "-1"], ["--style-weight must be a non-negative number, not -1"]),
    "blend weight not a number": (lambda d: [d / "content.png", f"{d / 'style.png'}:abc", "-o", d / "out.png"], ["style.png:abc: the weight after ':' must be a number"]),
    "negative blend weight": (lambda d: [d / "content.png", f"{d / 'style.png'}:-1", "-o", d / "out.png"], ["non-negative"]),
    "missing output folder": (lambda d: [d / "content.png", d / "style.png", "-o", d / "no" / "out.png"], ["does not exist"]),
    "unknown model": (lambda d: [d / "content.png", d / "style.png", "-o", d / "out.png", "--model", "vgg13"], ["--model must be one of vgg16, vgg19, not 'vgg13'"]),
    "missing weights": (lambda d: [d / "content.png", d / "style.png", "-o", d / "out.png", "--weights", d / "none.pth"], ["none.pth: no such file or folder"]),
    "unknown preserve-color": (lambda d: [d / "content.png", d / "style.png", "-o", d / "out.png", "--preserve-color", "sepia"], ["--preserve-color must be one of luminance, histogram", "not 'sepia'"]),
    "negative save-every": (lambda d: [d / "content.png", d / "style.png", "-o", d / "out.png", "--save-every", "-1"], ["--save-every must be a whole number, zero or more, not -1"]),
    "two outputs, one file": (lambda d: [d / "content.png", d / "style.png", "-o", d / "out.png", "--json", d / "out.png"], ["--json", "the same file as -o"]),
    "output too thin": (lambda d: [d / "strip.png", d / "style.png", "-o", d / "out.png"], ["the output would be 48x1: the short side must be at least 16 px (a larger --size, or"]),
    "unknown output extension": (lambda d: [d / "content.png", d / "style.png", "-o", d / "out.xyz"], ["out.xyz", "unknown image extension '.xyz'"]),
    "no output extension": (lambda d: [d / "content.png", d / "style.png", "-o", d / "out"], ["no extension to say the image format"]),
    "painting too large": (lambda d: [d / "content.png", d / "style.png", "-o", d / "out.png", "--style-scale", "100000"], ["smaller --style-scale"]),
    # 90 Mpx: over impasto's 80 Mpx limit, under Pillow's own refusal (twice its 89 Mpx warning), so ours speaks.
    "huge photo": (lambda d: [d / "huge.png", d / "style.png", "-o", d / "out.png"], ["huge.png: 10000x9000 is too large to read (limit 80 Mpx)"]),
    "huge painting": (lambda d: [d / "content.png", d / "huge.png", "-o", d / "out.png"], ["huge.png: 10000x9000 is too large to read (limit 80 Mpx)"]),
    "seed out of range": (lambda d: [d / "content.png", d / "style.png", "-o", d / "out.png", "--seed", str(10**23)], ["--seed must be between 0 and 2**63-1"]),
    "GIF duration infinite": (lambda d: [d / "content.png", d / "style.png", "-o", d / "out.png", "--gif", d / "g.gif", "--gif-duration", "inf"],
                              ["--gif-duration must be above 0 and at most 600 seconds, not inf"]),
    "empty init": (lambda d: [d / "content.png", d / "style.png", "-o", d / "out.png", "--init", ""], ["--init must be palette, content, noise, style or an image file; '': no such file"]),
    "empty preset": (lambda d: [d / "content.png", d / "style.png", "-o", d / "out.png", "--preset", ""], ["unknown preset ''"]),
    "weights with the wrong hash": (lambda d: [d / "content.png", d / "style.png", "-o", d / "out.png", "--weights", d / "vgg19-deadbeef.safetensors"],
                                    ["vgg19-deadbeef.safetensors: sha256", "does not match the expected deadbeef"]),
}


@pytest.mark.parametrize("case", list(BAD_INPUTS))
def test_bad_input_is_one_line_on_stderr(capsys, tmp_path, content_array, style_array, fast, synthetic_weights, case):
    write_png(tmp_path / "content.png", content_array)
    write_png(tmp_path / "style.png", style_array)
    write_png(tmp_path / "dot.png", content_array[:1, :1])
    write_png(tmp_path / "strip.png", np.tile(content_array[:8], (1, 6, 1)))  # 48 px wide at most: 48x1 or so
    (tmp_path / "notes.png").write_text("shopping list\n")
    (tmp_path / "huge.png").write_bytes(png_bomb(10_000, 9_000))
    try:  # a link, not an 80 MB copy for every case; the name's hash is what is checked
        os.link(synthetic_weights, tmp_path / "vgg19-deadbeef.safetensors")
    except OSError:
        shutil.copyfile(synthetic_weights, tmp_path / "vgg19-deadbeef.safetensors")
    build, fragments = BAD_INPUTS[case]
    # A --weights given by the case comes last and wins over the synthetic one.
    code, _, err = cli(capsys, *fast, *build(tmp_path))
    assert_one_line_error(code, err, *fragments)
    assert code == 2
    assert not (tmp_path / "out.png").exists()


def test_an_output_name_pillow_cannot_write_fails_before_the_run(capsys, tmp_path, content_array, style_array, fast, monkeypatch):
    import impasto.api

    write_png(tmp_path / "content.png", content_array)
    write_png(tmp_path / "style.png", style_array)
    monkeypatch.setattr(impasto.api.Stylizer, "run", lambda *a, **k: pytest.fail("the run started"))
    code, _, err = cli(capsys, *fast, tmp_path / "content.png", tmp_path / "style.png", "-o", tmp_path / "out.xyz")
    assert_one_line_error(code, err, "unknown image extension")
    code, _, err = cli(capsys, "sweep", *fast, tmp_path / "content.png", tmp_path / "style.png", "--grid", "tv_weight=0,1", "-o", tmp_path / "sheet")
    assert_one_line_error(code, err, "no extension to say the image format")


@pytest.fixture
def read_only_folder(tmp_path, request):
    """A folder nothing can be written in, even by root (CI runs as root): immutable, or skipped.
    Named `locked`, or as an indirect parametrisation says."""
    import os
    import subprocess

    folder = tmp_path / getattr(request, "param", "locked")
    folder.mkdir()
    if os.geteuid() != 0:
        folder.chmod(0o555)
        yield folder
        folder.chmod(0o755)
        return
    if subprocess.run(["chattr", "+i", str(folder)], capture_output=True).returncode != 0:
        pytest.skip("chattr +i is not available here to make a folder root cannot write in")
    yield folder
    subprocess.run(["chattr", "-i", str(folder)], check=True)


def test_an_output_folder_that_cannot_be_written_is_refused_before_the_run(capsys, read_only_folder, content_path, style_path, fast):
    for flags in (["-o", read_only_folder / "out.png"], ["-o", read_only_folder.parent / "out.png", "--gif", read_only_folder / "g.gif"]):
        code, _, err = cli(capsys, content_path, style_path, *flags, *fast)
        assert_one_line_error(code, err, f"cannot write in {read_only_folder}")
        assert "wrote" not in err  # refused before the run, not after it
    assert not (read_only_folder.parent / "out.png").exists()


def test_frames_of_an_earlier_run_are_refused_before_the_run(capsys, tmp_path, content_path, style_path, fast):
    out = tmp_path / "painting.png"
    (tmp_path / "painting_frames").mkdir()
    (tmp_path / "painting_frames" / "00002.png").write_bytes(b"an earlier frame")
    code, _, err = cli(capsys, content_path, style_path, "-o", out, "--save-every", "2", *fast)
    assert_one_line_error(code, err, "painting_frames", "already holds frames", "--overwrite")
    assert not out.exists() and (tmp_path / "painting_frames" / "00002.png").read_bytes() == b"an earlier frame"
    code, _, err = cli(capsys, content_path, style_path, "-o", out, "--save-every", "2", "--overwrite", *fast)
    assert code == 0, err
    assert Image.open(tmp_path / "painting_frames" / "00002.png").size == (48, 40)


def test_json_named_as_the_frames_folder_is_refused_before_the_run(capsys, tmp_path, content_path, style_path, fast):
    # It used to run to the end, then fail renaming the summary over the frames' folder.
    out = tmp_path / "painting.png"
    code, _, err = cli(capsys, content_path, style_path, "-o", out, "--save-every", "2", "--json", tmp_path / "painting_frames", *fast)
    assert_one_line_error(code, err, "painting_frames", "--json", "give each output its own name")
    assert not out.exists() and not (tmp_path / "painting_frames").exists()


def test_json_into_a_pipe_or_a_link_is_written_through_it(tmp_path):
    from impasto.cli import write_summary

    target = tmp_path / "summary.json"
    link = tmp_path / "latest.json"
    link.symlink_to(target)
    write_summary({"losses": {"total": 1.5}}, str(link))
    assert link.is_symlink() and json.loads(target.read_text()) == {"losses": {"total": 1.5}}
    pipe = tmp_path / "pipe"
    os.mkfifo(pipe)
    received: list[str] = []
    reader = threading.Thread(target=lambda: received.append(pipe.read_text()))
    reader.start()
    write_summary({"a": 1}, str(pipe))
    reader.join(timeout=10)
    assert pipe.is_fifo() and json.loads(received[0]) == {"a": 1}


def test_earlier_frames_are_kept_when_the_run_fails_before_it_paints(capsys, tmp_path, style_path, fast):
    # --overwrite replaces them with this run's frames: a run that cannot start has none to give.
    (tmp_path / "painting_frames").mkdir()
    (tmp_path / "painting_frames" / "00002.png").write_bytes(b"an earlier frame")
    code, _, err = cli(capsys, tmp_path / "typo.png", style_path, "-o", tmp_path / "painting.png", "--save-every", "2", "--overwrite", *fast)
    assert_one_line_error(code, err, "typo.png: no such file")
    assert (tmp_path / "painting_frames" / "00002.png").read_bytes() == b"an earlier frame"


@pytest.mark.parametrize("read_only_folder", ["out_frames"], indirect=True)
def test_a_frames_folder_that_is_a_file_or_cannot_be_written_is_refused_before_the_run(capsys, tmp_path, read_only_folder, content_path,
                                                                                      style_path, fast, monkeypatch):  # fmt: skip
    import impasto.api

    # A frames folder that could not be written in failed at the first frame, the run under way.
    monkeypatch.setattr(impasto.api, "optimise", lambda *a, **k: pytest.fail("the run started"))
    code, _, err = cli(capsys, content_path, style_path, "-o", tmp_path / "out.png", "--save-every", "2", *fast)
    assert_one_line_error(code, err, f"cannot write in {read_only_folder}")
    (tmp_path / "painting_frames").write_bytes(b"a file, not a folder")
    code, _, err = cli(capsys, content_path, style_path, "-o", tmp_path / "painting.png", "--save-every", "2", *fast)
    assert_one_line_error(code, err, "painting_frames: exists and is not a folder (--save-every writes its frames there)")
    assert not (tmp_path / "out.png").exists() and not (tmp_path / "painting.png").exists()


# -- in a child process ---------------------------------------------------------------------------


def test_console_script_help_and_exit_codes(tmp_path, style_path, synthetic_weights):
    helped = run_child([*impasto_command(), "--help"])
    assert helped.returncode == 0
    assert "usage: impasto" in helped.stdout and "--style-weight" in helped.stdout
    missing = [str(tmp_path / "nope.png"), str(style_path), "-o", str(tmp_path / "o.png"), "--weights", str(synthetic_weights)]
    failed = run_child([*impasto_command(), *missing])
    assert failed.returncode == 2
    assert failed.stderr.strip().splitlines() == [f"impasto: error: {tmp_path / 'nope.png'}: no such file"]


def test_help_and_presets_answer_without_loading_torch():
    # torch takes seconds to import here: `impasto --help`, `impasto presets` and the package's
    # light names (Settings, errors, presets) must not wait for it; the rest loads on first use.
    probe = (
        "import sys, runpy; sys.argv = ['impasto', *sys.argv[1:]]\n"
        "try: runpy.run_module('impasto.cli', run_name='__main__')\n"
        "except SystemExit: pass\n"
        "import impasto; impasto.Settings(size=64).validate(); impasto.PRESETS\n"
        "sys.stderr.write('torch loaded' if 'torch' in sys.modules else 'torch not loaded')"
    )  # fmt: skip
    for argv in (["--help"], ["presets"]):
        child = run_child([sys.executable, "-c", probe, *argv])
        assert child.returncode == 0 and child.stderr.endswith("torch not loaded"), child.stderr
    # Then the API is there as before: impasto.batch and impasto.sweep are the functions, even
    # once their modules are imported by name; a notebook's completion (dir) lists them all.
    probe = "import impasto.batch, impasto.sweep, impasto; print(impasto.batch.__name__, impasto.sweep.__name__, impasto.stylize.__name__, set(impasto.__all__) <= set(dir(impasto)))"
    child = run_child([sys.executable, "-c", probe])
    assert child.stdout.split() == ["batch", "sweep", "stylize", "True"], child.stderr


def run_console(tmp_path: Path, content_path: Path, style_path: Path, fast: list[str]):
    out = tmp_path / "out.png"
    return out, run_child([*impasto_command(), str(content_path), str(style_path), "-o", str(out), *fast])


def test_console_script_end_to_end(tmp_path, content_path, style_path, fast):
    out, done = run_console(tmp_path, content_path, style_path, fast)
    assert done.returncode == 0, done.stderr
    assert Image.open(out).size == (48, 40)
    assert "Traceback" not in done.stderr
    assert "Warning" not in done.stderr, done.stderr  # e.g. PyTorch's float() of a tensor that requires grad


def test_ctrl_c_keeps_the_best_picture_so_far(tmp_path, content_path, style_path, fast):
    out, summary = tmp_path / "out.png", tmp_path / "run.json"
    # Far more iterations than the test waits for: only the Ctrl-C can end this run in time.
    argv = [*impasto_command(), str(content_path), str(style_path), "-o", str(out), "--json", str(summary), "--save-every", "1",
            *fast, "--no-multiscale", "--iterations", "5000"]  # fmt: skip
    # A frame on disk means iterations have been painted: a picture exists to keep.
    painted = tmp_path / "out_frames" / "00002.png"
    proc = ctrl_c_when(argv, painted.exists, "a painted frame")
    err = proc.stderr
    assert proc.returncode == 130, err
    assert "Traceback" not in err
    assert "(interrupted; best image so far kept)" in err and f"wrote {out}" in err, err
    with Image.open(out) as picture:
        assert picture.size == (48, 40)
        picture.load()  # a whole picture, not a file cut short
    data = json.loads(summary.read_text())
    assert data["interrupted"] is True and 2 <= data["iterations"] < 5000


def test_absurd_size_is_one_line_and_fast(tmp_path, content_path, style_path, fast):
    # In a child capped at 6 GiB of address space, so the bug cannot take this machine down.
    done = run_child(
        [*impasto_command(), str(content_path), str(style_path), "-o", str(tmp_path / "o.png"), *fast, "--size", "200000"],
        memory_gib=6,
        timeout=120,
    )
    assert done.returncode == 2, done.stderr[-2000:]
    lines = done.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("impasto: error:") and "GiB" in lines[0], done.stderr[-2000:]
    assert not (tmp_path / "o.png").exists()


def test_a_painting_much_smaller_than_its_use_is_one_warning_line_and_the_run_goes_on(capsys, tmp_path, content_path, style_array, fast):
    small, out = tmp_path / "small.png", tmp_path / "out.png"
    write_png(small, style_array[:16:2, :20:2])  # 10x8 px, to be used at 48 px: 4.8x enlarged
    code, _, err = cli(capsys, content_path, small, "-o", out, *fast)
    assert code == 0, err
    warnings = [line for line in err.splitlines() if line.startswith("impasto: warning:")]
    assert len(warnings) == 1, err
    assert f"{small} is 10x8" in warnings[0] and "--style-scale 0.42" in warnings[0]
    assert "Warning" not in err.replace("impasto: warning:", "")  # no Python warning block around it
    assert Image.open(out).size == (48, 40)


def test_a_painting_large_enough_gives_no_warning(capsys, tmp_path, content_path, style_path, fast):
    code, _, err = cli(capsys, content_path, style_path, "-o", tmp_path / "out.png", *fast)
    assert code == 0 and "warning" not in err.lower(), err


def test_a_cut_out_photo_gives_a_cut_out_picture(capsys, tmp_path, content_array, style_path, fast):
    rgba = np.dstack([to_uint8(content_array), np.full(content_array.shape[:2], 255, np.uint8)])
    rgba[:, :12, 3] = 0  # the left quarter of the 48x40 photo is transparent
    photo = tmp_path / "cut.png"
    Image.fromarray(rgba, "RGBA").save(photo)
    png, jpg, gif = tmp_path / "out.png", tmp_path / "out.jpg", tmp_path / "out.gif"
    code, _, err = cli(capsys, photo, style_path, "-o", png, "--gif", gif, "--save-every", "3", *fast)
    assert code == 0, err
    coarse = np.asarray(Image.open(tmp_path / "out_frames" / "00003.png"))  # the 24x20 coarse scale's last, enlarged
    assert coarse.shape == (40, 48, 4) and coarse[:, :11, 3].max() == 0 and coarse[:, 13:, 3].min() == 255
    out = np.asarray(Image.open(png))
    assert out.shape == (40, 48, 4)
    assert out[:, :11, 3].max() == 0 and out[:, 13:, 3].min() == 255  # the photo's transparency, at the output's size
    assert out[:, 13:, :3].std() > 0  # and a painted picture where it is opaque
    code, _, err = cli(capsys, photo, style_path, "-o", jpg, *fast)
    assert code == 0, err
    flat = np.asarray(Image.open(jpg)).astype(int)
    assert flat.shape == (40, 48, 3) and flat[:, :10].min() > 240  # a JPEG shows it as it would look on white
    with Image.open(gif) as animation:
        animation.seek(animation.n_frames - 1)
        last = np.asarray(animation.convert("RGB")).astype(int)
    assert last[:, :10].min() > 240  # the GIF's frames too


def test_coarse_to_fine_options_with_no_multiscale_are_said_to_change_nothing(capsys, tmp_path, content_path, style_path, fast):
    code, _, err = cli(capsys, content_path, style_path, "-o", tmp_path / "o.png", *fast, "--no-multiscale", "--scale-factor", "1.5")
    assert code == 0, err
    # FAST gives --min-size and --initial-iterations too: all three are named, once.
    warning = [line for line in err.splitlines() if line.startswith("impasto: warning:")]
    assert warning == ["impasto: warning: --min-size, --scale-factor, --initial-iterations only apply to coarse-to-fine runs: "
                       "with --no-multiscale they change nothing"]  # fmt: skip
    code, _, err = cli(capsys, content_path, style_path, "-o", tmp_path / "o2.png", *fast)
    assert code == 0 and "warning" not in err


def test_no_output_may_be_an_input_even_with_overwrite(capsys, tmp_path, content_path, style_path, fast):
    """A typo (-o photo.jpg) with --overwrite would replace the photo or the painting."""
    before = {p: p.read_bytes() for p in (content_path, style_path)}
    cases = [
        (["-o", content_path], ["is the photo, an input", "even with --overwrite"]),
        (["-o", tmp_path / "o.png", "--plot", style_path], ["--plot", "is the painting", "an input"]),
        (["-o", tmp_path / "o.png", "--json", style_path], ["--json", "is the painting"]),
        (["-o", tmp_path / "start.png", "--init", tmp_path / "start.png"], ["is the --init picture"]),
    ]
    Image.open(content_path).save(tmp_path / "start.png")
    for extra, fragments in cases:
        code, _, err = cli(capsys, content_path, style_path, *extra, "--overwrite", *fast)
        assert_one_line_error(code, err, *fragments)
    code, _, err = cli(capsys, "sweep", content_path, style_path, "--grid", "seed=1,2", "-o", content_path, "--overwrite", *fast)
    assert_one_line_error(code, err, "is the photo, an input")
    assert {p: p.read_bytes() for p in (content_path, style_path)} == before


def test_options_that_change_nothing_in_the_run_asked_for_are_said(capsys, tmp_path, content_path, style_path, fast):
    code, _, err = cli(capsys, content_path, style_path, "-o", tmp_path / "a.png", "--style-loss", "meanstd", "--gram-shift", "-1",
                       "--gif-frames", "10", *fast)  # fmt: skip
    assert code == 0, err
    warnings = [line for line in err.splitlines() if line.startswith("impasto: warning:")]
    assert any("--gram-shift only applies to the Gram loss" in w and "--style-loss meanstd" in w for w in warnings), err
    assert any("--gif-frames and --gif-duration" in w and "without --gif" in w for w in warnings), err
    # Given where they apply, nothing is said.
    code, _, err = cli(capsys, content_path, style_path, "-o", tmp_path / "b.png", "--gram-shift", "-1", "--gif", tmp_path / "b.gif",
                       "--gif-frames", "3", *fast)  # fmt: skip
    assert code == 0 and "impasto: warning:" not in err, err


def test_the_json_summary_names_the_preset(capsys, tmp_path, content_path, style_path, fast):
    for preset, name in ((["--preset", "fast"], "fast"), ([], None)):
        code, out, err = cli(capsys, content_path, style_path, "-o", tmp_path / f"{name}.png", *preset, *fast, "--json", "-")
        assert code == 0, err
        assert json.loads(out)["preset"] == name


def test_the_progress_bar_fills_by_work_not_by_iterations(capsys, stylizer, make_settings, content_array, style_array):
    # Counted in iterations it was half full after the coarse scale's 3 cheap iterations of 6,
    # and its time left said so: a 512 px run's bar promised seconds where minutes were left.
    from impasto.cli import RunBar

    bar, seen = RunBar(), []

    def callback(progress) -> None:
        bar.update(progress)
        seen.append((progress.scale, progress.step, progress.size, bar.bar.n, bar.bar.desc))

    settings = make_settings(size=48, min_size=24, multiscale=True, initial_iterations=3, iterations=3)
    stylizer.run(content_array, style_array, settings, callback=callback)
    bar.close()
    sizes = sorted({size for _, _, size, _, _ in seen})
    assert len(sizes) == 2 and len(seen) == 6
    coarse, fine = (w * h for w, h in sizes)
    after_coarse = next(n for scale, step, _, n, _ in seen if scale == 0 and step == 3)
    assert after_coarse == pytest.approx(coarse / (coarse + fine), abs=0.01) and after_coarse < 0.4  # not 3 of 6
    assert seen[-1][3] == pytest.approx(1.0) and seen[-1][4].startswith(f"scale 2/2 {sizes[1][0]}x{sizes[1][1]} step 3/3")
    assert "100%" in capsys.readouterr().err


@pytest.mark.parametrize("native", [False, True])
def test_bf16_asked_for_on_a_cpu_that_emulates_it_is_warned_of_once(capsys, tmp_path, content_path, style_path, fast, monkeypatch, native):
    # Emulated bf16 ran a VGG19 pass 21x slower than fp32 on an AVX2 CPU, with nothing said.
    from impasto import device

    monkeypatch.setattr(device, "native_bf16_cpu", lambda: native)
    monkeypatch.setitem(device.NATIVE_CPU, "bf16", (lambda: native, "AVX512-BF16 or AMX"))
    monkeypatch.setattr(device, "_said_emulated", set())
    for run in range(2):  # a process's second run is not told again
        code, _, err = cli(capsys, content_path, style_path, "-o", tmp_path / f"{run}.png", *fast, "--precision", "bf16")
        said = [line for line in err.splitlines() if "emulated" in line]
        assert code == 0 and len(said) == (1 if run == 0 and not native else 0), err
        if said:
            assert "no native bf16 (AVX512-BF16 or AMX)" in said[0] and "--precision auto runs fp32 here" in said[0]
    code, _, err = cli(capsys, content_path, style_path, "-o", tmp_path / "auto.png", *fast)
    assert code == 0 and "emulated" not in err  # auto never picks what the CPU would emulate


def test_a_flat_background_painted_by_default_is_said_and_can_be_refused(capsys, tmp_path, style_path, fast):
    from conftest import textured_image

    photo = textured_image(40, 48, seed=4)
    plain = write_png(tmp_path / "photo.png", photo)
    photo[:, :12] = 1.0  # a product shot's background, flattened on white
    cut_out = write_png(tmp_path / "cut_out.png", photo)
    code, _, err = cli(capsys, cut_out, style_path, "-o", tmp_path / "a.png", *fast)
    assert code == 0 and "flat background" in err and "--flat-content 1" in err, err
    for photo_path, given in ((cut_out, ["--flat-content", "1"]), (cut_out, ["--flat-content", "0.1"]), (plain, [])):
        code, _, err = cli(capsys, photo_path, style_path, "-o", tmp_path / "b.png", "--overwrite", *fast, *given)
        assert code == 0 and "flat background" not in err, (given, err)  # asked for, or not decided so


def test_the_presets_listing_is_options_as_typed():
    # `impasto presets` shows what each preset sets as options: typed back, they give its settings.
    from impasto.cli import build_run_parser, settings_from_args
    from impasto.presets import PRESETS, describe_presets
    from impasto.settings import Settings

    listed: dict[str, list[str]] = {}
    for line in describe_presets().splitlines():
        if line and not line.startswith(" ") and ": " in line:
            name = line.split(":")[0]
            listed[name] = []
        elif line.startswith("    --"):
            listed[name] += line.split()
    assert set(listed) == set(PRESETS)
    for name, options in listed.items():
        args = build_run_parser().parse_args(["photo.jpg", "painting.jpg", "-o", "out.png", *options])
        assert settings_from_args(args) == Settings.from_preset(name), name
