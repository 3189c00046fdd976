"""Video (issue #6): temporal consistency, frame rate and count, audio, resume, bad input.

The clips are made here: a textured picture panned 2 px a frame, 8 frames of 64x48 at
12 fps, written with imageio-ffmpeg; the network is the synthetic VGG19 of conftest.
"""

from __future__ import annotations

import json
import logging
import re
import subprocess
from fractions import Fraction
from pathlib import Path

import numpy as np
import pytest

from conftest import BLUISH, smooth_image, textured_image, to_uint8, write_png

imageio_ffmpeg = pytest.importorskip("imageio_ffmpeg", reason="the video extra is not installed")
pytest.importorskip("cv2", reason="the video extra is not installed")

import impasto  # noqa: E402
from impasto import ImpastoError, Settings, Stylizer  # noqa: E402
from impasto.cli import main  # noqa: E402
from impasto.video import measure_warping_error, output_size, stylize_video  # noqa: E402
from impasto.video.flow import FlowEstimator, FrameMotion, warping_error  # noqa: E402
from impasto.video.io import audio_codec_of, encode, mux_audio, probe, read_frames  # noqa: E402

FRAMES, WIDTH, HEIGHT, STEP, FPS = 8, 64, 48, 2, 12


def panned_frames(frames: int = FRAMES, width: int = WIDTH, height: int = HEIGHT, step: int = STEP) -> list[np.ndarray]:
    """A wide textured picture seen through a window that moves `step` px right each frame."""
    import cv2

    wide = width + step * frames
    # Blurred noise for grain: unlike stripes it has no period a flow could mistake a shift for.
    grain = cv2.GaussianBlur(np.random.default_rng(2).uniform(0, 1, (height, wide, 3)), (0, 0), 1.2)
    grain = (grain - grain.min()) / (grain.max() - grain.min())
    picture = to_uint8(0.6 * smooth_image(height, wide, seed=3) + 0.4 * grain)
    return [np.ascontiguousarray(picture[:, step * t : step * t + width]) for t in range(frames)]


def write_clip(path: Path, frames: list[np.ndarray], fps: float = FPS) -> Path:
    h, w = frames[0].shape[:2]
    # Nearly lossless, so the flow sees the pan and not the codec.
    writer = imageio_ffmpeg.write_frames(str(path), (w, h), fps=fps, quality=None, output_params=["-crf", "10"],
                                         macro_block_size=2, ffmpeg_log_level="error")  # fmt: skip
    writer.send(None)
    for frame in frames:
        writer.send(frame)
    writer.close()
    return path


def ffmpeg(*args: str) -> None:
    subprocess.run([imageio_ffmpeg.get_ffmpeg_exe(), "-hide_banner", "-loglevel", "error", "-y", *args], check=True)


def track_seconds(path: Path, track: str) -> float:
    """How long a file's first video ("v") or audio ("a") track plays, as ffmpeg decodes it."""
    done = subprocess.run([imageio_ffmpeg.get_ffmpeg_exe(), "-hide_banner", "-nostats", "-i", str(path), "-map", f"0:{track}:0",
                           "-f", "null", "-"], capture_output=True, text=True, check=True)  # fmt: skip
    h, m, s = re.findall(r"time=(\d+):(\d+):([\d.]+)", done.stderr)[-1]
    return int(h) * 3600 + int(m) * 60 + float(s)


@pytest.fixture(scope="module")
def clips(tmp_path_factory) -> dict[str, Path]:
    folder = tmp_path_factory.mktemp("clips")
    pan = write_clip(folder / "pan.mp4", panned_frames())
    with_audio = folder / "pan_audio.mp4"
    ffmpeg("-i", str(pan), "-f", "lavfi", "-i", f"sine=frequency=440:duration={FRAMES / FPS}", "-map", "0:v", "-map", "1:a",
           "-c:v", "copy", "-c:a", "aac", "-shortest", str(with_audio))  # fmt: skip
    short_audio = folder / "pan_short_audio.mp4"  # sound for the first half only
    ffmpeg("-i", str(pan), "-f", "lavfi", "-i", f"sine=frequency=440:duration={FRAMES / FPS / 2}", "-map", "0:v", "-map", "1:a",
           "-c:v", "copy", "-c:a", "aac", str(short_audio))  # fmt: skip
    audio_only = folder / "tone.m4a"
    ffmpeg("-f", "lavfi", "-i", "sine=frequency=440:duration=0.5", "-c:a", "aac", str(audio_only))
    no_tracks = folder / "empty.mp4"
    ffmpeg("-f", "lavfi", "-i", "color=c=red:s=64x48:r=12", "-frames:v", "0", str(no_tracks))
    one_frame = write_clip(folder / "one_frame.mp4", panned_frames(frames=1))
    not_video = folder / "notes.mp4"
    not_video.write_text("this is text, not a video\n")
    style = write_png(folder / "style.png", textured_image(48, 40, *BLUISH))
    return {"pan": pan, "audio": with_audio, "short_audio": short_audio, "audio_only": audio_only, "no_tracks": no_tracks,
            "not_video": not_video, "one_frame": one_frame, "style": style}  # fmt: skip


@pytest.fixture
def settings(make_settings):
    # From each content frame as it is: the per-frame baseline flickers because each frame's
    # run lands in a different optimum, as it does with real weights. (With the default start,
    # the frame in the painting's palette, these tiny random-weight runs land closer together,
    # and the check below would measure the start rather than the temporal mode.)
    return make_settings(size=64, iterations=8, initial_iterations=8, init="content")


class CountingStylizer(Stylizer):
    """A Stylizer that counts the frames it is asked to paint."""

    def __init__(self) -> None:
        super().__init__(download=False)
        self.runs = 0

    def run(self, *args, **kwargs):
        self.runs += 1
        return super().run(*args, **kwargs)


def test_temporal_mode_flickers_much_less_than_per_frame(clips, settings, stylizer, tmp_path):
    temporal = stylize_video(clips["pan"], clips["style"], tmp_path / "temporal.mp4", settings, stylizer=stylizer)
    baseline = stylize_video(clips["pan"], clips["style"], tmp_path / "baseline.mp4", settings, temporal=False, stylizer=stylizer)
    assert temporal.warping_error < 0.2 * baseline.warping_error, (temporal.warping_error, baseline.warping_error)
    # The same holds for the encoded files, measured independently of the run's bookkeeping.
    encoded_temporal, content_floor = measure_warping_error(clips["pan"], tmp_path / "temporal.mp4")
    encoded_baseline, _ = measure_warping_error(clips["pan"], tmp_path / "baseline.mp4")
    assert encoded_temporal < 0.2 * encoded_baseline
    assert content_floor < 0.1 * encoded_temporal  # the flow itself is good: the pan is tracked
    for result in (temporal, baseline):
        info = probe(result.output)
        assert (info.frames, info.fps, info.size) == (FRAMES, FPS, (WIDTH, HEIGHT))
        assert not result.audio and not result.input_audio
        assert len(result.pair_errors) == FRAMES - 1
        assert not result.frames_dir.exists()  # removed once the video is written


def test_temporal_frames_follow_the_pan(clips, settings, stylizer, tmp_path):
    """A stylised frame, shifted back by the pan, matches the one before it (away from the edge)."""
    stylize_video(clips["pan"], clips["style"], tmp_path / "out.mp4", settings, stylizer=stylizer, keep_frames=True)
    from PIL import Image

    frames = [np.asarray(Image.open(p), dtype=np.float64) / 255 for p in sorted((tmp_path / "out_frames").glob("frame_*.png"))]
    assert len(frames) == FRAMES
    last, previous = frames[-1], frames[-2]
    shifted = np.abs(last[:, : -STEP - 4] - previous[:, STEP : -4]).mean()
    unshifted = np.abs(last[:, : -STEP - 4] - previous[:, : -STEP - 4]).mean()
    assert shifted < 0.5 * unshifted


def test_resume_skips_finished_frames(clips, settings, tmp_path):
    output = tmp_path / "out.mp4"

    def stop_after_three(news):
        if news.step is None and news.frame == 2:
            return False
        return None

    first = CountingStylizer()
    stopped = stylize_video(clips["pan"], clips["style"], output, settings, stylizer=first, callback=stop_after_three)
    assert stopped.interrupted and stopped.output is None and not output.exists()
    assert first.runs == 3 and len(list((tmp_path / "out_frames").glob("frame_*.png"))) == 3
    done_before = {p.name: p.stat().st_mtime_ns for p in (tmp_path / "out_frames").glob("frame_*.png")}

    news = []
    second = CountingStylizer()
    result = stylize_video(clips["pan"], clips["style"], output, settings, stylizer=second, keep_frames=True, callback=news.append)
    assert second.runs == FRAMES - 3 and result.resumed == 3
    assert [n.frame for n in news if n.step is None and n.resumed] == [0, 1, 2]
    assert any(n.step is not None and n.frame == 3 for n in news)  # progress within a frame too
    for name, mtime in done_before.items():
        assert (tmp_path / "out_frames" / name).stat().st_mtime_ns == mtime
    assert probe(output).frames == FRAMES


def test_ctrl_c_gives_the_videos_result_so_far(clips, settings, stylizer, tmp_path):
    import impasto

    def ctrl_c_in_the_third_frame(news):
        if news.step is not None and news.frame == 2:
            raise KeyboardInterrupt

    with pytest.raises(impasto.Interrupted) as stop:
        stylize_video(clips["pan"], clips["style"], tmp_path / "out.mp4", settings, stylizer=stylizer, callback=ctrl_c_in_the_third_frame)
    # The video's result (two frames done, on disk for a rerun), not the cut frame's own picture.
    result = stop.value.result
    assert result.frames == 2 and result.interrupted and result.stopped_reason == "interrupted"
    assert len(list((tmp_path / "out_frames").glob("frame_*.png"))) == 2


def test_a_cut_starts_the_next_shot_afresh(clips, settings, tmp_path):
    shot_a = panned_frames(frames=3)
    shot_b = [np.ascontiguousarray(f[::-1, ::-1]) for f in panned_frames(frames=3)]  # another picture, turned over
    clip = write_clip(tmp_path / "cut.mp4", shot_a + shot_b)
    starts = []

    class Recording(CountingStylizer):
        def run(self, *args, **kwargs):
            starts.append(kwargs.get("init_image") is None)
            return super().run(*args, **kwargs)

    result = stylize_video(clip, clips["style"], tmp_path / "out.mp4", settings, stylizer=Recording())
    assert starts == [True, False, False, True, False, False]
    assert result.cuts == 1 and len(result.pair_errors) == 4


def test_resume_refuses_frames_of_another_run(clips, settings, tmp_path):
    output = tmp_path / "out.mp4"
    stylize_video(clips["pan"], clips["style"], output, settings, stylizer=CountingStylizer(), end_frame=3,
                  callback=lambda n: False if n.step is None and n.frame == 0 else None)  # fmt: skip
    with pytest.raises(ImpastoError, match="different run .*style_weight|different run .*settings"):
        stylize_video(clips["pan"], clips["style"], output, settings.replace(style_weight=99), stylizer=CountingStylizer(), end_frame=3)
    again = CountingStylizer()
    stylize_video(clips["pan"], clips["style"], output, settings.replace(style_weight=99), stylizer=again, end_frame=3, overwrite=True)
    assert again.runs == 3


@pytest.mark.parametrize("suffix", [".mov", ".mkv"])
def test_audio_track_kept_with_a_frame_range_and_size(clips, settings, stylizer, tmp_path, suffix):
    output = tmp_path / f"cut{suffix}"
    result = stylize_video(clips["audio"], clips["style"], output, settings, stylizer=stylizer, start_frame=2, end_frame=6, size=32)
    assert result.audio and result.input_audio
    info = probe(output)
    assert (info.frames, info.fps, info.size) == (4, FPS, (32, 24))
    assert audio_codec_of(output) == "aac"
    # The cut audio must not delay the picture (a copied track once delayed mkv's video by the cut).
    header = subprocess.run([imageio_ffmpeg.get_ffmpeg_exe(), "-hide_banner", "-i", str(output)], capture_output=True, text=True).stderr
    video_line = next(line for line in header.splitlines() if " Video: " in line)
    assert ", start " not in video_line or ", start 0.000000" in video_line, video_line


def test_a_sound_track_shorter_than_the_picture_keeps_every_frame(clips, settings, stylizer, tmp_path):
    output = tmp_path / "short_sound.mp4"
    result = stylize_video(clips["short_audio"], clips["style"], output, settings, stylizer=stylizer, size=32)
    assert result.audio and probe(output).frames == FRAMES


def test_output_sizes_are_even():
    from impasto import Settings

    assert output_size((65, 49), None, Settings()) == (64, 48)  # the input's size, made even
    assert output_size((1920, 1080), None, Settings()) == (512, 288)  # at most the settings' size
    assert output_size((1920, 1080), 300, Settings()) == (300, 168)  # 168.75 -> 169 -> even
    # Not squeezed into a square: too small a size for the aspect is said, not distorted.
    # From Python the advice names the keyword, not the flag.
    with pytest.raises(ImpastoError, match=r"would be 16x11: the short side must be at least 16 px \(a larger size, or"):
        output_size((96, 64), 16, Settings())


def test_flow_tracks_a_pan_and_masks_what_enters_the_frame():
    frames = panned_frames(frames=2, step=3)
    motion = FlowEstimator().motion(frames[0], frames[1])
    middle = motion.mask[8:-8, 8:-8]
    assert middle.mean() > 0.9
    assert motion.mask[:, -2:].mean() < 0.5  # the 3 px strip that entered on the right came from nowhere
    assert warping_error(frames[0], frames[1], motion) < 2e-3
    assert warping_error(frames[0], frames[0][:, ::-1].copy(), motion) > 10 * warping_error(frames[0], frames[1], motion)


def test_cli_end_to_end_with_report(clips, synthetic_weights, tmp_path, capsys):
    output = tmp_path / "out.mp4"
    args = ["video", str(clips["pan"]), str(clips["style"]), "-o", str(output), "--report", "--json", "-", "--quiet",
            "--weights", str(synthetic_weights), "--device", "cpu", "--size", "48", "--no-multiscale", "--iterations", "3",
            "--style-layers", "conv1_1,conv2_1", "--content-layers", "conv2_2", "--end-frame", "4"]  # fmt: skip
    assert main(args) == 0
    captured = capsys.readouterr()
    summary = json.loads(captured.out)
    assert summary["frames"] == 4 and summary["fps"] == FPS and summary["size"] == [48, 36]
    assert "warping error (temporal)" in captured.err and f"wrote {output}" in captured.err
    assert main(args) == 2  # the output exists now
    assert "already exists" in capsys.readouterr().err
    # Temporal options without temporal consistency change nothing: said, not ignored silently.
    flicker = tmp_path / "flicker.mp4"
    assert main(["video", str(clips["pan"]), str(clips["style"]), "-o", str(flicker), "--no-temporal", "--temporal-weight", "5",
                 "--quiet", "--weights", str(synthetic_weights), *args[args.index("--quiet") + 1:]]) == 0  # fmt: skip
    assert "impasto: warning: --temporal-weight only applies to temporal runs" in capsys.readouterr().err
    # --json naming the video itself would replace it with JSON once the video is written.
    other = tmp_path / "other.mp4"
    assert main(["video", str(clips["pan"]), str(clips["style"]), "-o", str(other), "--json", str(other), "--quiet",
                 "--weights", str(synthetic_weights)]) == 2  # fmt: skip
    assert "--json" in capsys.readouterr().err and not other.exists()


@pytest.mark.parametrize(
    "which, message",
    [
        ("not_video", "not a video ffmpeg can read"),
        ("audio_only", "has no video track"),
        ("no_tracks", "holds no video frames"),
        ("missing", "no such file"),
        ("style", "is a single picture, not a video"),  # a photo given as the video
        ("one_frame", "the video has a single frame, so there is no motion to follow; take the frame out"),
    ],
)
def test_bad_inputs_give_one_line_errors(clips, synthetic_weights, tmp_path, capsys, which, message):
    source = clips.get(which, tmp_path / "missing.mp4")
    code = main(["video", str(source), str(clips["style"]), "-o", str(tmp_path / "out.mp4"), "--weights", str(synthetic_weights)])
    err = capsys.readouterr().err
    assert code == 2 and f"impasto: error: {source}: {message}" in err and len(err.strip().splitlines()) == 1
    assert not (tmp_path / "out.mp4").exists() and not (tmp_path / "out_frames").exists()


def test_bad_options_give_errors(clips, settings, tmp_path):
    with pytest.raises(ImpastoError, match=r"start-frame 20 is past the end \(the video has 8 frames"):
        stylize_video(clips["pan"], clips["style"], tmp_path / "out.mp4", settings, start_frame=20)
    with pytest.raises(ImpastoError, match="no frames in the range 5..5"):
        stylize_video(clips["pan"], clips["style"], tmp_path / "out.mp4", settings, start_frame=5, end_frame=5)
    with pytest.raises(ImpastoError, match="unknown video extension"):
        stylize_video(clips["pan"], clips["style"], tmp_path / "out.png", settings)
    with pytest.raises(ImpastoError, match="temporal_weight must be a non-negative number"):
        stylize_video(clips["pan"], clips["style"], tmp_path / "out.mp4", settings, temporal_weight=-1)
    # Zero iterations would carry the first frame along the motion, unpainted from then on.
    with pytest.raises(ImpastoError, match=r"iterations 0 would leave every frame after the first unpainted; give frame_iterations"):
        stylize_video(clips["pan"], clips["style"], tmp_path / "out.mp4", settings.replace(iterations=0))
    stylize_video(clips["pan"], clips["style"], tmp_path / "ok.mp4", settings.replace(iterations=0), frame_iterations=1,
                  end_frame=2)  # fmt: skip
    assert (tmp_path / "ok.mp4").exists()
    # Masks as the Python API takes them: a lone one for a lone style, else one per style.
    mask = np.full((8, 8), 255, np.uint8)
    with pytest.raises(ImpastoError, match=r"^2 masks given for 1 styles: give one per style \(None: everywhere\)$"):
        stylize_video(clips["pan"], clips["style"], tmp_path / "out.mp4", settings, masks=[mask, mask])
    stylize_video(clips["pan"], clips["style"], tmp_path / "masked.mp4", settings.replace(iterations=0), frame_iterations=1,
                  end_frame=2, masks=mask)  # fmt: skip
    assert (tmp_path / "masked.mp4").exists()
    (tmp_path / "a_file").write_text("mine")
    with pytest.raises(ImpastoError, match=r"exists and is not a folder \(choose another frames_dir\)"):
        stylize_video(clips["pan"], clips["style"], tmp_path / "out.mp4", settings, frames_dir=tmp_path / "a_file")


@pytest.mark.parametrize("module", ["cv2", "imageio_ffmpeg"])
def test_missing_extra_is_named(clips, settings, tmp_path, monkeypatch, module):
    monkeypatch.setitem(__import__("sys").modules, module, None)  # makes `import module` fail
    with pytest.raises(ImpastoError, match=r"pip install 'impasto\[video\]'"):
        stylize_video(clips["pan"], clips["style"], tmp_path / "out.mp4", settings)
    assert not (tmp_path / "out_frames").exists()


class NanOnThirdFrame(CountingStylizer):
    """As if the loss stopped being a number during the third frame (after its first iterations)."""

    def run(self, *args, **kwargs):
        result = super().run(*args, **kwargs)
        if self.runs == 3:
            result.interrupted, result.stopped_reason = True, "the loss became nan at iteration 5"
        return result


def test_a_frame_whose_loss_stops_being_a_number_keeps_its_best_picture_and_the_video_goes_on(clips, settings, tmp_path):
    from impasto.errors import ImpastoWarning

    output = tmp_path / "out.mp4"
    with pytest.warns(ImpastoWarning, match="frame 2: the loss became nan at iteration 5; its best picture so far is kept"):
        result = stylize_video(clips["pan"], clips["style"], output, settings, stylizer=NanOnThirdFrame(), size=32)
    assert result.frames == FRAMES and probe(output).frames == FRAMES


class OutOfMemoryOnThirdFrame(CountingStylizer):
    """As if the device ran out of memory part-way through the third frame."""

    def run(self, *args, **kwargs):
        result = super().run(*args, **kwargs)
        if self.runs == 3:
            result.interrupted, result.stopped_reason = True, "out of memory on cuda:0 for a 32x24 output; a smaller size needs less"
        return result


def test_running_out_of_memory_stops_the_video_and_keeps_the_finished_frames(clips, settings, tmp_path):
    with pytest.raises(ImpastoError, match=r"^frame 2: out of memory on cuda:0 for a 32x24 output.*; the 2 finished frames are kept in \S*out_frames"):
        stylize_video(clips["pan"], clips["style"], tmp_path / "out.mp4", settings, stylizer=OutOfMemoryOnThirdFrame(), size=32)
    assert not (tmp_path / "out.mp4").exists()
    assert len(list((tmp_path / "out_frames").glob("*.png"))) == 2  # for the rerun: the half-painted third is not kept


def test_cli_error_part_way_is_on_its_own_line_and_says_where_the_frames_are(clips, synthetic_weights, tmp_path, capsys, monkeypatch):
    monkeypatch.setattr("impasto.video.run.Stylizer", OutOfMemoryOnThirdFrame)
    output = tmp_path / "out.mp4"
    assert main(["video", str(clips["pan"]), str(clips["style"]), "-o", str(output), "--weights", str(synthetic_weights),
                 "--device", "cpu", "--size", "32", "--no-multiscale", "--iterations", "2", "--style-layers", "conv1_1",
                 "--content-layers", "conv2_2"]) == 2  # fmt: skip
    err = capsys.readouterr().err
    # Not glued to the frames' progress bar (split on newlines only: the bar redraws with carriage returns).
    line = next(text for text in err.split("\n") if "impasto: error" in text)
    assert line.startswith("impasto: error: frame 2: out of memory"), repr(line)
    assert "the 2 finished frames are kept in" in line


class NanFromTheStartOnThirdFrame(CountingStylizer):
    """As if the third frame's loss were not a number from its first iteration."""

    def run(self, *args, **kwargs):
        if self.runs == 2:
            self.runs += 1
            from impasto import NonFiniteLoss

            raise NonFiniteLoss("at scale 1: the loss became nan at iteration 1; try a lower lr")
        return super().run(*args, **kwargs)


def test_a_frame_not_finite_from_the_start_keeps_its_start_and_the_video_goes_on(clips, settings, tmp_path):
    from impasto.errors import ImpastoWarning

    output = tmp_path / "out.mp4"
    # A dict as the settings, as stylize() takes them.
    with pytest.warns(ImpastoWarning, match="frame 2: at scale 1: the loss became nan at iteration 1.*keeps its starting picture"):
        result = stylize_video(clips["pan"], clips["style"], output, settings.to_dict(), stylizer=NanFromTheStartOnThirdFrame(), size=32)
    assert result.frames == FRAMES and probe(output).frames == FRAMES


def test_ctrl_c_between_frames_gives_the_videos_result_too(clips, settings, stylizer, tmp_path):
    import impasto

    def ctrl_c_after_the_second_frame(news):
        if news.step is None and news.frame == 1:
            raise KeyboardInterrupt

    with pytest.raises(impasto.Interrupted) as stop:
        stylize_video(clips["pan"], clips["style"], tmp_path / "out.mp4", settings, stylizer=stylizer, callback=ctrl_c_after_the_second_frame)
    assert stop.value.result.frames == 2 == len(list((tmp_path / "out_frames").glob("frame_*.png")))


def test_a_variable_frame_rate_clip_is_painted_whole_with_its_sound(clips, settings, tmp_path):
    """Read at the constant rate the output is written at, a frame shown longer comes again:
    the whole clip is painted, at its length, and its sound is not cut short."""
    clip = tmp_path / "vfr.mkv"
    # 4 frames 1/12 s apart, then 4 shown 1/4 s each: 8 frames over 1.08 s and more (the last one's length is the
    # container's to say), 14 and more at 12 fps.
    ffmpeg("-i", str(clips["pan"]), "-f", "lavfi", "-i", "sine=frequency=440:duration=1.3", "-map", "0:v", "-map", "1:a",
           "-vf", "setpts='if(lt(N,4),N/12,1/3+(N-4)/4)/TB'", "-fps_mode", "vfr", "-c:v", "libx264", "-crf", "10",
           "-c:a", "aac", str(clip))  # fmt: skip
    info = probe(clip)
    assert (info.file_frames, info.fps) == (FRAMES, FPS) and info.frames >= 14
    assert sum(1 for _ in read_frames(info)) == info.frames  # counting and reading agree
    painter = CountingStylizer()
    output = tmp_path / "out.mp4"
    result = stylize_video(clip, clips["style"], output, settings, stylizer=painter, size=32)
    assert result.frames == info.frames == probe(output).frames and result.audio
    assert painter.runs == FRAMES  # a frame that comes again is not painted again
    assert track_seconds(output, "v") >= 14 / FPS and track_seconds(output, "a") >= 14 / FPS  # not 8 / FPS


def test_an_animated_gif_is_read_at_its_frame_rate(clips, settings, stylizer, tmp_path, monkeypatch):
    gif = tmp_path / "pan.gif"
    ffmpeg("-i", str(clips["pan"]), "-vf", "fps=10", "-frames:v", "4", str(gif))  # ffmpeg reads no fps for a GIF, only a tbr
    info = probe(gif)
    assert (info.fps, info.frames) == (10, 4)
    result = stylize_video(gif, clips["style"], tmp_path / "out.mp4", settings, stylizer=stylizer, size=32, end_frame=2)
    assert probe(result.output).fps == 10
    # From the header when ffmpeg's filters do not say the rate (older ffmpeg builds).
    from impasto.video import io

    monkeypatch.setattr(io, "_ffmpeg_rate", lambda path: None)
    assert probe(gif).rate == 10
    assert io._header_rate("Stream #0:0: Video: gif, bgra, 160x120, 10 tbr, 100 tbn") == 10
    assert io._header_rate("Stream #0:0: Video: h264, yuv420p, 160x120, 29.97 fps, 29.97 tbr, 30k tbn") == Fraction(30000, 1001)
    assert (io._fraction(23.98), io._fraction(6.67), io._fraction(0)) == (Fraction(24000, 1001), Fraction(667, 100), None)


def test_what_a_pan_brings_in_starts_from_the_photo_not_from_smeared_edge_pixels():
    photo = panned_frames(frames=1)[0]
    h, w = photo.shape[:2]
    painted = np.ascontiguousarray(photo[:, ::-1, ::-1])  # another picture, another palette
    painted[:, -1] = (255, 0, 0)  # an edge that smearing would draw as red streaks
    grid_x, grid_y = np.meshgrid(np.arange(w, dtype=np.float32), np.arange(h, dtype=np.float32))
    motion = FrameMotion(grid_x + 3, grid_y, np.ones((h, w), np.float32))  # a pan: 3 columns come in on the right
    carried = motion.carry(painted, photo)
    assert carried.dtype == np.uint8 and np.array_equal(carried[:, : w - 4], painted[:, 3:-1])  # whole pixels: moved exactly
    assert motion.outside[:, -3:].all() and not motion.outside[:, :-3].any()
    new = carried[:, -3:].reshape(-1, 3).astype(float)
    assert (np.abs(new - (255, 0, 0)).sum(axis=1) > 60).all()  # no red streaks
    # The photo's picture in the painting's colours.
    assert np.corrcoef(new[:, 1], photo[:, -3:, 1].ravel())[0, 1] > 0.99
    assert np.allclose(new.mean(axis=0), painted.reshape(-1, 3).mean(axis=0), atol=40)
    # The mask of a real flow leaves them out of the temporal loss.
    frames = panned_frames(frames=2, step=3)
    flow = FlowEstimator().motion(frames[0], frames[1])
    assert flow.outside.any() and not flow.mask[flow.outside].any()


def test_carried_frames_stay_sharp_over_many_frames():
    """A picture moved half a pixel 30 times: bilinear warps blur it, Catmull-Rom keeps it sharp
    (and, unlike OpenCV's bicubic, does not sharpen it into ringing)."""
    import cv2

    photo = panned_frames(frames=1)[0]
    h, w = photo.shape[:2]
    grid_x, grid_y = np.meshgrid(np.arange(w, dtype=np.float32), np.arange(h, dtype=np.float32))
    motion = FrameMotion(grid_x + 0.5, grid_y, np.ones((h, w), np.float32))
    carried = bilinear = photo
    for _ in range(30):
        carried = motion.carry(carried, photo)
        bilinear = np.clip(np.rint(motion.warp(bilinear.astype(np.float32))), 0, 255).astype(np.uint8)

    def sharpness(frame: np.ndarray) -> float:
        return float(cv2.Laplacian(cv2.cvtColor(frame[:, :-20], cv2.COLOR_RGB2GRAY), cv2.CV_64F).var())

    assert 0.6 * sharpness(photo) < sharpness(carried) <= 1.05 * sharpness(photo)
    assert sharpness(bilinear) < 0.5 * sharpness(carried)


def test_a_frame_starts_from_the_previous_painting_carried_along(clips, settings, tmp_path):
    starts = []

    class Recording(CountingStylizer):
        def run(self, content, *args, **kwargs):
            starts.append((np.array(content), kwargs.get("init_image")))
            return super().run(content, *args, **kwargs)

    stylize_video(clips["pan"], clips["style"], tmp_path / "out.mp4", settings, stylizer=Recording(), size=32, end_frame=2,
                  keep_frames=True)  # fmt: skip
    from PIL import Image

    first = np.asarray(Image.open(tmp_path / "out_frames" / "frame_000000.png").convert("RGB"))
    (content_0, _), (content_1, start_1) = starts
    assert np.array_equal(start_1, FlowEstimator().motion(content_0, content_1).carry(first, content_1))


@pytest.mark.parametrize("suffix, codec", [(".mp4", "aac"), (".m4v", "aac"), (".mov", "pcm_s16le"), (".mkv", "pcm_s16le")])
def test_pcm_sound_is_copied_only_into_containers_whose_players_play_it(clips, tmp_path, suffix, codec):
    source = tmp_path / "pcm.mkv"
    ffmpeg("-i", str(clips["audio"]), "-c:v", "copy", "-c:a", "pcm_s16le", str(source))
    output = tmp_path / f"out{suffix}"
    assert mux_audio(clips["pan"], probe(source), 0.0, FRAMES / FPS, output)
    assert audio_codec_of(output) == codec


@pytest.mark.parametrize("suffix", [".mp4", ".webm"])
def test_a_written_video_shows_its_colours_in_a_player(tmp_path, suffix):
    # Players take an untagged HD video for BT.709; ffmpeg left to itself converts with BT.601's
    # matrix and tags nothing, which turned this green 22 levels darker in them.
    colours = np.array([(200, 40, 40), (40, 180, 60), (50, 70, 200), (230, 200, 60), (128, 128, 128)], np.uint8)
    frame = np.repeat(colours, 256, axis=0)[None].repeat(720, axis=0)  # 720x1280, five bars
    path = tmp_path / f"out{suffix}"
    encode([frame] * 3, (1280, 720), 25, path)
    header = subprocess.run([imageio_ffmpeg.get_ffmpeg_exe(), "-hide_banner", "-i", str(path)], capture_output=True, text=True).stderr
    assert re.search(r"yuv420p\(tv, bt709[,)]", header), header  # matrix, primaries and transfer all BT.709
    shown = subprocess.run(
        [imageio_ffmpeg.get_ffmpeg_exe(), "-v", "error", "-i", str(path), "-frames:v", "1",
         "-vf", "scale=in_color_matrix=bt709:in_range=tv", "-f", "rawvideo", "-pix_fmt", "rgb24", "-"],
        capture_output=True, check=True,
    ).stdout  # fmt: skip
    bars = np.frombuffer(shown, np.uint8).reshape(720, 1280, 3)[360, 128::256].astype(int)
    assert np.abs(bars - colours).max() <= 3, bars
    assert np.abs(next(read_frames(probe(path)))[360, 128::256].astype(int) - colours).max() <= 3  # and impasto reads it back so


HDR_COLOURS = np.array([(200, 40, 40), (40, 180, 60), (50, 70, 200), (128, 128, 128)], np.uint8)


def write_hlg_clip(folder: Path, frames: int = 3) -> Path:
    """A clip as a phone records it by default: HLG, BT.2020 primaries, 10 bits, losslessly
    encoded from 256x64 frames of the four HDR_COLOURS as bars."""
    from impasto.video.io import _has_filters

    if not _has_filters("zscale", "tonemap"):
        pytest.skip("this ffmpeg has no zscale (libzimg) to write an HLG clip with")
    frame = np.repeat(HDR_COLOURS, 64, axis=0)[None].repeat(64, axis=0)
    raw = folder / "frames.rgb"
    raw.write_bytes(frame.tobytes() * frames)
    hlg = folder / "hlg.mp4"
    ffmpeg("-f", "rawvideo", "-pix_fmt", "rgb24", "-s", "256x64", "-r", "25", "-i", str(raw),
           "-vf", "zscale=tin=iec61966-2-1:pin=bt709:t=arib-std-b67:p=bt2020:m=bt2020nc:r=tv:npl=203,format=yuv420p10le",
           "-colorspace", "bt2020nc", "-color_primaries", "bt2020", "-color_trc", "arib-std-b67", "-c:v", "libx265",
           "-x265-params", "log-level=error:lossless=1", str(hlg))  # fmt: skip
    return hlg


def test_a_phones_hdr_video_is_read_as_a_player_shows_it(tmp_path, monkeypatch):
    colours = HDR_COLOURS
    hlg = write_hlg_clip(tmp_path)
    info = probe(hlg)
    assert info.hdr == "HLG"
    bars = next(read_frames(info))[32, 32::64].astype(int)
    # As shown, not grey and dim (read as plain video: 146, 68, 52 for the red); the highlights'
    # roll-off takes a little off the brightest channel.
    assert np.abs(bars - colours).max() <= 15, bars
    assert bars[0, 0] - bars[0, 1] >= 140 and np.ptp(bars[3]) <= 2
    # Frames that leave their primaries unstated, the container stating them (a remux), read the same
    # (zscale, left to take them from the frames, stopped: "no path between colorspaces").
    remuxed = tmp_path / "remuxed.mp4"
    ffmpeg("-i", str(hlg), "-c", "copy", "-bsf:v", "hevc_metadata=colour_primaries=2", str(remuxed))
    assert np.array_equal(next(read_frames(probe(remuxed))), next(read_frames(info)))
    # An ffmpeg that cannot tone-map says what that does to the colours, and reads the frames anyway.
    monkeypatch.setattr(impasto.video.io, "_has_filters", lambda *names: False)
    with pytest.warns(UserWarning, match=r"hlg.mp4: an HDR \(HLG\) video, and this ffmpeg cannot tone-map it .* washed out"):
        assert probe(hlg).hdr is None


def test_painting_an_hdr_video_says_its_output_is_sdr(clips, synthetic_weights, tmp_path, capsys):
    hlg = write_hlg_clip(tmp_path)
    output = tmp_path / "out.mp4"
    assert main(["video", str(hlg), str(clips["style"]), "-o", str(output), "--quiet", "--json", "-", "--weights", str(synthetic_weights),
                 "--device", "cpu", "--size", "96", "--no-multiscale", "--iterations", "2", "--style-layers", "conv1_1",
                 "--content-layers", "conv2_2"]) == 0  # fmt: skip
    captured = capsys.readouterr()
    said = f"{hlg} is HDR video (HLG): its frames were read tone-mapped to SDR, as an ordinary screen shows them, and the output is SDR"
    assert said in captured.err and said in json.loads(captured.out)["notes"]


def test_a_rotated_phone_video_is_read_upright_without_imageio_ffmpegs_size_warning(clips, tmp_path, caplog):
    rotated = tmp_path / "rotated.mp4"
    ffmpeg("-display_rotation", "90", "-i", str(clips["pan"]), "-c", "copy", str(rotated))

    def size_warnings() -> list[str]:
        return [r.getMessage() for r in caplog.records if "different from the source frame size" in r.getMessage()]

    with caplog.at_level(logging.WARNING, logger="imageio_ffmpeg"):
        info = probe(rotated)
        frames = list(read_frames(info, 0, 2))
        assert info.size == (HEIGHT, WIDTH) and frames[0].shape == (WIDTH, HEIGHT, 3)
        assert size_warnings() == []
        reader = imageio_ffmpeg.read_frames(str(rotated))  # imageio-ffmpeg on its own still says it
        next(reader)
        reader.close()
        assert len(size_warnings()) == 1


def test_cli_ctrl_c_writes_the_json_of_the_frames_done(clips, synthetic_weights, tmp_path, capsys, monkeypatch):
    from impasto.video.cli import ProgressBars

    def ctrl_c_in_the_second_frame(self, news):
        if news.step is not None and news.frame == 1:
            raise KeyboardInterrupt

    monkeypatch.setattr(ProgressBars, "__call__", ctrl_c_in_the_second_frame)
    summary = tmp_path / "r.json"
    args = ["video", str(clips["pan"]), str(clips["style"]), "-o", str(tmp_path / "out.mp4"), "--json", str(summary), "--quiet",
            "--weights", str(synthetic_weights), "--device", "cpu", "--size", "32", "--no-multiscale", "--iterations", "3",
            "--style-layers", "conv1_1,conv2_1", "--content-layers", "conv2_2", "--end-frame", "3"]  # fmt: skip
    assert main(args) == 130
    assert "run the same command again to resume" in capsys.readouterr().err
    written = json.loads(summary.read_text())
    assert written["frames"] == 1 and written["interrupted"] and written["stopped_reason"] == "interrupted"
    assert written["output"] is None
    # "Run the same command again": it resumes, replacing the cut-short summary without --overwrite.
    monkeypatch.undo()
    assert main(args) == 0, capsys.readouterr().err
    assert json.loads(summary.read_text())["interrupted"] is False


class SettingsRecorder(CountingStylizer):
    """Notes the settings each frame was painted with."""

    def __init__(self) -> None:
        super().__init__()
        self.seen: list[Settings] = []

    def run(self, *args, **kwargs):
        result = super().run(*args, **kwargs)
        self.seen.append(result.settings)
        return result


@pytest.mark.parametrize("temporal", [True, False])
def test_the_default_flat_content_is_decided_once_on_the_first_frame(clips, settings, tmp_path, temporal):
    # A white background in the first frame alone: deciding frame by frame would switch looks after it.
    frames = panned_frames()
    frames[0] = frames[0].copy()
    frames[0][:, : WIDTH // 3] = 255
    clip = write_clip(tmp_path / "cut_out.mp4", frames)
    recorder = SettingsRecorder()
    result = stylize_video(clip, clips["style"], tmp_path / "out.mp4", settings, stylizer=recorder, temporal=temporal)
    assert len(recorder.seen) == FRAMES
    assert {s.flat_content for s in recorder.seen} == {impasto.optimize.FLAT_BACKGROUND_FLOOR}
    # Said once for the video, not by each frame's run (whose flat_content was given).
    [note] = result.notes
    assert note.startswith("the first frame has a flat background") and result.summary()["notes"] == [note]
