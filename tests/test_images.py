"""Reading every kind of image a user may have, writing safely, and colour transfer."""

from __future__ import annotations

import io
import struct
import sys
import warnings

import numpy as np
import PIL
import pytest
import torch
from PIL import Image

from impasto import color, images
from impasto.errors import ImpastoError
from impasto.images import load_image, load_image_and_alpha, pil_to_tensor, save_image, with_alpha

from conftest import heic_bytes, smooth_image, textured_image, to_uint8

ORIENTATION = 0x0112


def two_tone(height: int, width: int) -> np.ndarray:
    """Left half red, right half blue (uint8 HxWx3)."""
    a = np.zeros((height, width, 3), np.uint8)
    a[:, : width // 2] = (255, 0, 0)
    a[:, width // 2 :] = (0, 0, 255)
    return a


# Display P3's primaries as an ICC profile states them (adapted to D50), and D50 itself.
P3_COLORANTS = ((0.5151, 0.2412, -0.0011), (0.2919, 0.6922, 0.0419), (0.1571, 0.0666, 0.7841))
SRGB_COLORANTS = ((0.4361, 0.2225, 0.0139), (0.3851, 0.7169, 0.0971), (0.1431, 0.0606, 0.7141))
D50 = (0.9642, 1.0, 0.8249)


def icc_profile(description: str, colorants=P3_COLORANTS, gamma: float = 2.2) -> bytes:
    """A minimal ICC v2 RGB display profile (three colorants and one gamma curve), as a phone or a
    camera embeds in its pictures; built here because no profile file ships with the test machine."""

    def xyz(v):
        return b"XYZ \0\0\0\0" + b"".join(struct.pack(">i", round(c * 65536)) for c in v)

    text = description.encode() + b"\0"
    desc = b"desc\0\0\0\0" + struct.pack(">I", len(text)) + text + b"\0" * 8 + b"\0\0\0" + b"\0" * 67
    curve = b"curv\0\0\0\0" + struct.pack(">IH", 1, round(gamma * 256)) + b"\0\0"
    tags = [(b"desc", desc), (b"wtpt", xyz(D50)), (b"rXYZ", xyz(colorants[0])), (b"gXYZ", xyz(colorants[1])),
            (b"bXYZ", xyz(colorants[2])), (b"rTRC", curve), (b"gTRC", curve), (b"bTRC", curve),
            (b"cprt", b"text\0\0\0\0public domain\0\0\0")]  # fmt: skip
    table, data = b"", b""
    offset = 128 + 4 + 12 * len(tags)
    for sig, body in tags:
        body += b"\0" * (-len(body) % 4)
        table += sig + struct.pack(">II", offset + len(data), len(body))
        data += body
    size = offset + len(data)
    header = (struct.pack(">I", size) + b"\0" * 4 + struct.pack(">I", 0x02100000) + b"mntrRGB XYZ " + b"\0" * 12
              + b"acsp" + b"\0" * 24 + struct.pack(">I", 0) + xyz(D50)[8:] + b"\0" * 48)  # fmt: skip
    assert len(header) == 128
    return header + struct.pack(">I", len(tags)) + table + data


def srgb_decode(v: np.ndarray) -> np.ndarray:
    return np.where(v <= 0.04045, v / 12.92, ((v + 0.055) / 1.055) ** 2.4)


def srgb_encode(v: np.ndarray) -> np.ndarray:
    return np.where(v <= 0.0031308, 12.92 * v, 1.055 * v ** (1 / 2.4) - 0.055)


# Four colours a phone photo might hold, the last grey; colour_blocks lays them out 16 px square each.
BLOCK_COLOURS = np.array([[200, 100, 50], [60, 160, 90], [90, 110, 200], [128, 128, 128]], np.uint8)


def colour_blocks() -> np.ndarray:
    """BLOCK_COLOURS as four 16x16 blocks side by side (uint8 16x64x3); a block's middle row is [8, 8::16]."""
    return np.repeat(np.repeat(BLOCK_COLOURS[None], 16, axis=0), 16, axis=1)


def p3_as_srgb(rgb: np.ndarray) -> np.ndarray:
    """What a colour-managed viewer shows for 8-bit values in the profile above, as 8-bit sRGB:
    P3 to XYZ (D50) to linear sRGB by the two sets of colorants, then sRGB's own transfer curve."""
    linear = (rgb / 255.0) ** 2.2
    xyz = linear @ np.array(P3_COLORANTS)
    return srgb_encode(np.clip(xyz @ np.linalg.inv(np.array(SRGB_COLORANTS)), 0, 1)) * 255.0


@pytest.mark.parametrize("suffix", [".jpg", ".png", ".heic"])
def test_a_wide_gamut_photo_reads_as_it_looks(tmp_path, suffix):
    # A phone photo in Display P3: its values read as sRGB would be duller than the photo looks.
    if suffix == ".heic":
        pytest.importorskip("pillow_heif").register_heif_opener()  # to write one; impasto registers it to read one
    path = tmp_path / f"phone{suffix}"
    Image.fromarray(colour_blocks()).save(path, icc_profile=icc_profile("Display P3 (test)"), **{".jpg": {"quality": 100}, ".heic": {"quality": -1}}.get(suffix, {}))  # lossless where it can be
    a = np.asarray(load_image(path)).astype(float)
    got = a[8, 8::16]  # each block's middle row
    want = p3_as_srgb(BLOCK_COLOURS.astype(float))
    assert np.abs(got - want).max() <= 3, (got, want)
    # The saturated orange gets more saturated in sRGB, not left as it was stored.
    assert got[0, 0] - got[0, 2] > 150 + 10
    # Grey stays grey.
    assert np.ptp(got[3]) <= 2


@pytest.mark.parametrize("primaries, transfer, converted", [(12, 13, True), (1, 13, False), (12, 16, False)])
def test_a_heic_that_states_its_colours_without_a_profile(primaries, transfer, converted):
    # Display P3 stated by the file's nclx box (H.273 code 12) with sRGB's curve: converted. sRGB's
    # own primaries (1): as stored. An HDR curve (16, PQ) needs tone mapping, not a matrix: as stored.
    pytest.importorskip("pillow_heif").register_heif_opener()
    # Display P3 to sRGB in linear light, as CSS Color 4 and browsers publish it (not derived here).
    p3_to_srgb = np.array([[1.2249, -0.2247, 0.0], [-0.0420, 1.0419, 0.0], [-0.0197, -0.0786, 1.0979]])
    stored = io.BytesIO()
    Image.fromarray(colour_blocks()).save(
        stored, format="HEIF", quality=-1, nclx_profile={"color_primaries": primaries, "transfer_characteristics": transfer,
                                                          "matrix_coefficients": 6, "full_range_flag": 1})  # fmt: skip
    got = np.asarray(load_image(stored.getvalue()))[8, 8::16].astype(float)
    want = srgb_encode(np.clip(srgb_decode(BLOCK_COLOURS / 255.0) @ p3_to_srgb.T, 0, 1)) * 255.0 if converted else BLOCK_COLOURS
    assert np.abs(got - want).max() <= 2, (got, want)


def test_an_srgb_photo_and_a_broken_profile_read_unchanged(tmp_path):
    pixels = np.random.default_rng(0).integers(0, 256, (12, 12, 3), dtype=np.uint8)
    srgb = tmp_path / "srgb.png"
    Image.fromarray(pixels).save(srgb, icc_profile=icc_profile("sRGB IEC61966-2.1", SRGB_COLORANTS))
    assert np.array_equal(np.asarray(load_image(srgb)), pixels)  # no round trip through a colour engine
    broken = tmp_path / "broken.png"
    Image.fromarray(pixels).save(broken, icc_profile=b"not a profile")
    with pytest.warns(UserWarning, match=r"broken.png: its colour profile cannot be read .*read as sRGB"):
        image = load_image(broken)
    assert np.array_equal(np.asarray(image), pixels)


def test_a_pillow_without_littlecms_reads_a_profiled_photo_as_srgb_and_says_so(tmp_path, monkeypatch):
    pixels = np.full((12, 12, 3), (200, 100, 50), np.uint8)
    path = tmp_path / "phone.png"
    Image.fromarray(pixels).save(path, icc_profile=icc_profile("Display P3 (test)"))
    # As if Pillow had no LittleCMS: the module cannot be imported (nor found on PIL from an earlier import).
    monkeypatch.setitem(sys.modules, "PIL.ImageCms", None)
    monkeypatch.delattr(PIL, "ImageCms", raising=False)
    with pytest.warns(UserWarning, match=r"phone.png: has a colour profile, and this Pillow was built without LittleCMS"):
        image = load_image(path)
    assert np.array_equal(np.asarray(image), pixels)


def test_a_transparent_wide_gamut_png_keeps_its_transparency(tmp_path):
    rgba = np.zeros((10, 10, 4), np.uint8)
    rgba[..., :3] = (200, 100, 50)
    rgba[:, :5, 3] = 255  # the right half transparent
    path = tmp_path / "cut-out.png"
    Image.fromarray(rgba).save(path, icc_profile=icc_profile("Display P3 (test)"))
    image, alpha = load_image_and_alpha(path)
    assert alpha is not None and np.asarray(alpha)[0, 0] == 255 and np.asarray(alpha)[0, 9] == 0
    assert np.abs(np.asarray(image)[0, 0].astype(float) - p3_as_srgb(np.array([200.0, 100, 50]))).max() <= 3
    assert tuple(np.asarray(image)[0, 9]) == (255, 255, 255)  # composited on white, as any transparent input


def test_exif_orientation_is_applied(tmp_path):
    path = tmp_path / "rotated.jpg"
    exif = Image.Exif()
    exif[ORIENTATION] = 6  # stored sideways: display = stored rotated 90° clockwise
    Image.fromarray(two_tone(20, 40)).save(path, exif=exif.tobytes(), quality=95)
    image = load_image(path)
    assert image.size == (20, 40)  # width and height swapped
    a = np.asarray(image).astype(int)
    # The stored left (red) half is now on top, the blue half at the bottom.
    assert a[5, 10, 0] > 200 and a[5, 10, 2] < 60
    assert a[35, 10, 2] > 200 and a[35, 10, 0] < 60


def test_greyscale_becomes_rgb(tmp_path):
    grey = (np.arange(12 * 10).reshape(12, 10) * 2).astype(np.uint8)
    Image.fromarray(grey, "L").save(tmp_path / "grey.png")
    image = load_image(tmp_path / "grey.png")
    assert image.mode == "RGB"
    assert np.array_equal(np.asarray(image), np.repeat(grey[..., None], 3, axis=2))


def test_rgba_is_composited_on_white(tmp_path):
    a = np.zeros((10, 12, 4), np.uint8)
    a[:, :4] = (255, 0, 0, 0)  # fully transparent red
    a[:, 4:8] = (0, 0, 255, 255)  # opaque blue
    a[:, 8:] = (0, 0, 0, 128)  # half transparent black
    Image.fromarray(a, "RGBA").save(tmp_path / "alpha.png")
    out = np.asarray(load_image(tmp_path / "alpha.png")).astype(int)
    assert out.shape == (10, 12, 3)
    assert (out[:, :4] == 255).all()
    assert (out[:, 4:8] == (0, 0, 255)).all()
    assert np.allclose(out[:, 8:], 127, atol=1)


def test_16_bit_png_is_scaled_to_8_bits(tmp_path):
    values = np.zeros((10, 10), np.uint16)
    values[:, 3:6] = 32768
    values[:, 6:] = 65535
    Image.fromarray(values).save(tmp_path / "deep.png")
    assert Image.open(tmp_path / "deep.png").mode == "I;16"
    out = np.asarray(load_image(tmp_path / "deep.png")).astype(int)
    assert (out[:, :3] == 0).all()
    assert np.allclose(out[:, 3:6], 128, atol=1)
    assert (out[:, 6:] == 255).all()


def test_palette_image_keeps_its_colours(tmp_path):
    rgb = two_tone(10, 12)
    Image.fromarray(rgb).convert("P", palette=Image.Palette.ADAPTIVE, colors=4).save(tmp_path / "palette.png")
    assert Image.open(tmp_path / "palette.png").mode == "P"
    assert np.array_equal(np.asarray(load_image(tmp_path / "palette.png")), rgb)


def test_palette_transparency_is_composited_on_white(tmp_path):
    p = Image.fromarray(two_tone(10, 12)).convert("P", palette=Image.Palette.ADAPTIVE, colors=4)
    red_index = p.getpixel((0, 0))
    p.save(tmp_path / "transparent.png", transparency=red_index)
    out = np.asarray(load_image(tmp_path / "transparent.png")).astype(int)
    assert (out[:, :6] == 255).all()
    assert (out[:, 6:] == (0, 0, 255)).all()


def test_bad_inputs_are_user_errors(tmp_path):
    Image.new("RGB", (1, 1)).save(tmp_path / "dot.png")
    (tmp_path / "notes.jpg").write_text("this is not a picture\n")
    with pytest.raises(ImpastoError, match="too small"):
        load_image(tmp_path / "dot.png")
    with pytest.raises(ImpastoError, match="notes.jpg"):
        load_image(tmp_path / "notes.jpg")
    with pytest.raises(ImpastoError, match="no such file"):
        load_image(tmp_path / "missing.png")
    with pytest.raises(ImpastoError, match=r"^https://example.com/x.jpg: a web address; pictures are read from files, so download it first$"):
        load_image("https://example.com/x.jpg")
    with pytest.raises(ImpastoError, match="folder"):
        load_image(tmp_path)
    with pytest.raises(ImpastoError, match="too small"):
        load_image(np.zeros((1, 1, 3), np.uint8))


def test_a_heic_photo_is_read_with_the_heic_extra(tmp_path):
    picture = smooth_image(40, 56)
    (tmp_path / "IMG_0001.HEIC").write_bytes(heic_bytes(picture))
    for source in (tmp_path / "IMG_0001.HEIC", (tmp_path / "IMG_0001.HEIC").read_bytes()):
        image = load_image(source)
        assert image.size == (56, 40)
        # HEVC is lossy: the colours are the photo's within a few levels, not exactly.
        assert np.abs(np.asarray(image, np.float64) / 255 - picture).mean() < 0.02
    # A file that starts as a HEIC photo but holds none is named as such, not as a missing extra.
    (tmp_path / "IMG_0002.HEIC").write_bytes(b"\x00\x00\x00\x18ftypheic\x00\x00\x00\x00mif1heic" + bytes(64))
    with pytest.raises(ImpastoError, match=r"^.*IMG_0002.HEIC: a HEIC/HEIF file that pillow-heif cannot decode \(damaged\?\)$"):
        load_image(tmp_path / "IMG_0002.HEIC")


def test_a_heic_photo_without_the_extra_gets_advice_instead_of_not_an_image(tmp_path, without_heic_extra):
    # A real phone's photo, which Pillow alone does not read.
    (tmp_path / "IMG_0001.HEIC").write_bytes(heic_bytes(smooth_image(40, 56)))
    advice = r"HEIC/HEIF photos need the heic extra \(pip install 'impasto\[heic\]'\), or convert it to JPEG or PNG first"
    with pytest.raises(ImpastoError, match=rf"IMG_0001.HEIC: {advice}"):
        load_image(tmp_path / "IMG_0001.HEIC")
    # Known by its content, so an upload (bytes, no name) gets the advice too, and a file that
    # is not HEIC whatever its name does not.
    with pytest.raises(ImpastoError, match=rf"the given file: {advice}"):
        load_image((tmp_path / "IMG_0001.HEIC").read_bytes())
    (tmp_path / "notes.heic").write_text("not a picture at all\n")
    with pytest.raises(ImpastoError, match=r"notes.heic: not a readable image"):
        load_image(tmp_path / "notes.heic")


def test_a_video_or_sound_given_as_a_picture_points_to_its_command(tmp_path):
    (tmp_path / "clip.MP4").write_bytes(b"\x00\x00\x00\x20ftypisom" + bytes(64))
    (tmp_path / "voice.wav").write_bytes(b"RIFF\x24\x00\x00\x00WAVEfmt " + bytes(64))
    with pytest.raises(ImpastoError, match=r"clip.MP4: a video, not an image; `impasto video` paints videos"):
        load_image(tmp_path / "clip.MP4")
    with pytest.raises(ImpastoError, match=r"voice.wav: a sound file, not an image; `impasto audio` restyles sounds"):
        load_image(tmp_path / "voice.wav")


def test_huge_images_are_refused_with_their_size_and_the_limit(tmp_path, monkeypatch):
    # The limits lowered so the test needs no 80 Mpx file; the paths are the ones a huge file takes.
    monkeypatch.setattr(images, "MAX_INPUT_PIXELS", 1_000_000)
    Image.new("RGB", (2000, 1500)).save(tmp_path / "wide.png")
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # no stray warning from Pillow before the message
        monkeypatch.setattr(Image, "MAX_IMAGE_PIXELS", 2_500_000)  # Pillow warns past 2.5 Mpx, refuses past 5
        with pytest.raises(ImpastoError, match=r"wide.png: 2000x1500 is too large to read \(limit 1 Mpx\)"):
            load_image(tmp_path / "wide.png")
        monkeypatch.setattr(Image, "MAX_IMAGE_PIXELS", 1_200_000)  # now Pillow refuses (past 2.4 Mpx) first
        with pytest.raises(ImpastoError, match=r"wide.png: over 2 Mpx, too large to read \(limit 1 Mpx\)"):
            load_image(tmp_path / "wide.png")


def test_the_input_limit_is_the_documented_one_and_below_pillows_own():
    import re
    from pathlib import Path

    readme = (Path(__file__).resolve().parents[1] / "README.md").read_text()
    documented = re.search(r"Inputs over (\d+) Mpx are refused", readme)
    assert documented, "the README no longer states the input limit"
    assert images.MAX_INPUT_PIXELS == int(documented.group(1)) * 1_000_000 == 80_000_000
    # Below Pillow's default guard (89 Mpx, which only warns up to twice that), so impasto's
    # message, with the picture's size and the limit, is the one a huge input gets.
    assert images.MAX_INPUT_PIXELS < Image.MAX_IMAGE_PIXELS


def test_arrays_and_tensors_are_accepted():
    rgb = to_uint8(smooth_image(10, 14))  # H=10, W=14: a transpose would show
    as_float = rgb.astype(np.float32) / 255.0
    sources = {
        "hwc uint8": rgb,
        "hwc float": as_float,
        "chw float": np.ascontiguousarray(as_float.transpose(2, 0, 1)),
        "tensor 1x3xHxW": torch.from_numpy(as_float).permute(2, 0, 1)[None],
        "tensor 3xHxW": torch.from_numpy(as_float).permute(2, 0, 1),
        "pil": Image.fromarray(rgb),
        # np.asarray(image).astype(np.float32) keeps 0-255: read as such, not as a white picture.
        "hwc float 0-255": rgb.astype(np.float32),
        "tensor float 0-255": torch.from_numpy(rgb.astype(np.float32)).permute(2, 0, 1),
    }
    for name, source in sources.items():
        image = load_image(source)
        assert image.mode == "RGB" and image.size == (14, 10), name
        assert np.abs(np.asarray(image).astype(int) - rgb).max() <= 1, name
    grey = load_image(np.full((9, 9), 0.5))
    assert np.asarray(grey).shape == (9, 9, 3) and np.allclose(np.asarray(grey), 128, atol=1)
    # An RGBA array keeps its transparency, as the same picture from a file does.
    rgba = np.dstack([rgb, np.full((10, 14), 255, np.uint8)])
    rgba[:, :7, 3] = 0
    image, alpha = load_image_and_alpha(rgba)
    assert alpha is not None and np.asarray(alpha)[:, :7].max() == 0 and np.asarray(alpha)[:, 7:].min() == 255
    assert np.asarray(image)[:, :7].min() == 255  # the picture itself is as it looks on white
    with pytest.raises(ImpastoError, match="HxWxC with 2-4 channels"):
        load_image(np.zeros((10, 14, 5), np.uint8))


def test_bytes_and_open_files_are_read_and_other_things_refused(tmp_path):
    rgb = to_uint8(smooth_image(10, 14))
    Image.fromarray(rgb).save(tmp_path / "a.png")
    data = (tmp_path / "a.png").read_bytes()
    with open(tmp_path / "a.png", "rb") as handle:
        for source in (data, handle):
            assert np.array_equal(np.asarray(load_image(source)), rgb)
    # Plain words, not Pillow's exception class (UnidentifiedImageError) that a user cannot act on.
    with pytest.raises(ImpastoError, match=r"^the given file: not a readable image \(no picture format Pillow knows\)$"):
        load_image(b"not a picture")
    with pytest.raises(ImpastoError, match="cannot read a picture from NoneType"):
        load_image(None)


def test_save_refuses_to_overwrite_unless_asked(tmp_path):
    target = tmp_path / "out.png"
    save_image(Image.new("RGB", (9, 9), "red"), target)
    with pytest.raises(ImpastoError, match="already exists"):
        save_image(Image.new("RGB", (9, 9), "blue"), target)
    assert np.asarray(Image.open(target))[0, 0].tolist() == [255, 0, 0]
    save_image(Image.new("RGB", (9, 9), "blue"), target, overwrite=True)
    assert np.asarray(Image.open(target))[0, 0].tolist() == [0, 0, 255]


def test_save_refuses_a_missing_folder_or_unknown_extension(tmp_path):
    with pytest.raises(ImpastoError, match="does not exist"):
        save_image(Image.new("RGB", (9, 9)), tmp_path / "no" / "out.png")
    with pytest.raises(ImpastoError, match="extension"):
        save_image(Image.new("RGB", (9, 9)), tmp_path / "out.xyz")
    with pytest.raises(ImpastoError, match="folder"):
        save_image(Image.new("RGB", (9, 9)), tmp_path)
    assert list(tmp_path.iterdir()) == []


def test_save_is_atomic(tmp_path, monkeypatch):
    target = tmp_path / "out.png"
    save_image(Image.new("RGB", (9, 9), "red"), target)
    before = target.read_bytes()
    real_save = Image.Image.save

    def crash_halfway(self, fp, *args, **kwargs):
        real_save(self, fp, *args, **kwargs)
        with open(fp, "r+b") as f:
            f.truncate(10)  # a half-written file ...
        raise OSError("disk full")  # ... and then the failure

    monkeypatch.setattr(Image.Image, "save", crash_halfway)
    with pytest.raises(OSError, match="disk full"):
        save_image(Image.new("RGB", (9, 9), "blue"), target, overwrite=True)
    assert target.read_bytes() == before
    assert [p.name for p in tmp_path.iterdir()] == ["out.png"]


def test_jpeg_output_is_written_as_jpeg(tmp_path):
    path = save_image(Image.new("RGB", (9, 9), "green"), tmp_path / "out.jpg")
    assert Image.open(path).format == "JPEG"


# -- colour ---------------------------------------------------------------------------------------


def image_tensor(array: np.ndarray) -> torch.Tensor:
    return torch.from_numpy(np.ascontiguousarray(array)).float().permute(2, 0, 1)[None]


def gaussian_colours(mean, mix, height: int, width: int, seed: int) -> torch.Tensor:
    """(1, 3, H, W) pixels drawn around `mean` with colour covariance mix @ mixᵀ (full rank)."""
    z = torch.randn(3, height * width, generator=torch.Generator().manual_seed(seed), dtype=torch.float64)
    x = torch.tensor(mean, dtype=torch.float64)[:, None] + torch.tensor(mix, dtype=torch.float64) @ z
    return x.reshape(1, 3, height, width).float()


@pytest.mark.parametrize("mode", ["eigen", "cholesky"])
def test_match_histogram_gives_the_reference_mean_and_covariance(mode):
    # Moderate spread on both sides so that no value is clipped.
    source = gaussian_colours([0.5, 0.45, 0.4], [[0.06, 0.0, 0.0], [0.03, 0.04, 0.0], [0.0, 0.02, 0.05]], 30, 30, seed=2)
    reference = gaussian_colours([0.4, 0.5, 0.6], [[0.05, 0.02, 0.0], [0.0, 0.07, 0.0], [0.01, -0.03, 0.04]], 20, 25, seed=3)
    out = color.match_histogram(source, reference, mode)
    assert out.shape == source.shape
    assert (out.dtype, out.device) == (source.dtype, source.device)  # the maths is on the CPU in float64, the result is not
    assert 0 < out.min() and out.max() < 1

    def moments(t: torch.Tensor):
        x = t.reshape(3, -1).double()
        return x.mean(1), torch.cov(x)

    (mean_out, cov_out), (mean_ref, cov_ref), (mean_src, cov_src) = moments(out), moments(reference), moments(source)
    assert torch.allclose(mean_out, mean_ref, atol=1e-4)
    assert torch.allclose(cov_out, cov_ref, rtol=1e-2, atol=2e-5)
    assert not torch.allclose(mean_src, mean_ref, atol=0.05)  # it had something to do
    assert not torch.allclose(cov_src, cov_ref, atol=1e-3)


def test_blended_paintings_palette_is_their_pixels_pooled_by_weight():
    # Weights equal to the pixel counts: the pooled pixels' own mean and covariance (torch.cov's
    # 1/(n-1) against the mixture's 1/n: equal to a part in the pixel count).
    a = gaussian_colours([0.3, 0.5, 0.6], [[0.05, 0.0, 0.0], [0.02, 0.06, 0.0], [0.0, 0.01, 0.04]], 20, 30, seed=4)
    b = gaussian_colours([0.7, 0.4, 0.2], [[0.04, 0.0, 0.0], [0.0, 0.03, 0.0], [0.02, 0.0, 0.05]], 10, 20, seed=5)
    mean, cov = color.mixture_stats([a, b], [600, 200])
    pooled = torch.cat([a.reshape(3, -1), b.reshape(3, -1)], dim=1).double()
    assert torch.allclose(mean[:, 0], pooled.mean(1), atol=1e-9)
    assert torch.allclose(cov, torch.cov(pooled), rtol=5e-3, atol=1e-6)
    # One painting alone is its own palette, whatever its weight.
    alone_mean, alone_cov = color.mixture_stats([b], [0.3])
    assert torch.allclose(alone_mean[:, 0], b.reshape(3, -1).double().mean(1)) and torch.allclose(alone_cov, torch.cov(b.reshape(3, -1).double()))


def test_in_palette_gives_the_photo_the_paintings_colours_and_keeps_its_picture():
    photo = gaussian_colours([0.5, 0.45, 0.4], [[0.06, 0.0, 0.0], [0.03, 0.04, 0.0], [0.0, 0.02, 0.05]], 30, 30, seed=2)
    painting = gaussian_colours([0.4, 0.5, 0.6], [[0.05, 0.02, 0.0], [0.0, 0.07, 0.0], [0.01, -0.03, 0.04]], 20, 25, seed=3)
    out = color.in_palette(photo, [painting], [1.0])
    assert out.shape == photo.shape
    mean_out, mean_painting = out.reshape(3, -1).mean(1), painting.reshape(3, -1).mean(1)
    assert torch.allclose(mean_out, mean_painting, atol=1e-4)
    # An affine map of the colours: the photo's pixels keep their order along each channel's
    # main direction, so its picture survives (correlation near 1 with the photo's brightness).
    brightness = lambda t: t.reshape(3, -1).mean(0)  # noqa: E731
    assert torch.corrcoef(torch.stack([brightness(out), brightness(photo)]))[0, 1] > 0.8


def test_combine_luminance_keeps_the_content_chroma():
    content = image_tensor(smooth_image(16, 20, (0.45, 0.30, 0.30), (0.60, 0.50, 0.40), seed=4))
    grey = image_tensor(np.repeat(textured_image(16, 20, (0.3,) * 3, (0.6,) * 3, seed=5)[..., :1], 3, axis=2))
    out = color.combine_luminance(grey, content)
    assert 0 < out.min() and out.max() < 1  # no clipping, so the identity is exact
    yiq_out, yiq_content, yiq_grey = color.rgb_to_yiq(out), color.rgb_to_yiq(content), color.rgb_to_yiq(grey)
    assert torch.allclose(yiq_out[:, 1:], yiq_content[:, 1:], atol=1e-5)  # content's I and Q
    assert torch.allclose(yiq_out[:, :1], yiq_grey[:, :1], atol=1e-5)  # stylised Y
    assert not torch.allclose(yiq_out[:, :1], yiq_content[:, :1], atol=1e-2)


def test_match_luminance_gives_the_content_brightness_and_keeps_the_style_contrast():
    style = image_tensor(textured_image(24, 24, seed=6))
    content = image_tensor(smooth_image(20, 28, seed=7))
    out = color.match_luminance(style, content)
    assert torch.allclose(out[:, 0], out[:, 1]) and torch.allclose(out[:, 0], out[:, 2])  # grey
    y_content, y_style = color.luminance(content)[:, 0], color.luminance(style)[:, 0]
    assert 0 < out.min() and out.max() < 1  # no clipping, so the statistics are exact
    assert out[:, 0].mean().item() == pytest.approx(y_content.mean().item(), abs=1e-3)
    assert out[:, 0].std().item() == pytest.approx(y_style.std().item(), rel=1e-3)
    assert abs(y_style.std().item() - y_content.std().item()) > 0.01  # the two differ, so the test tells


def test_yiq_round_trip():
    image = image_tensor(smooth_image(8, 9, seed=8))
    assert torch.allclose(color.yiq_to_rgb(color.rgb_to_yiq(image)), image, atol=1e-5)
    assert torch.allclose(pil_to_tensor(Image.fromarray(to_uint8(smooth_image(8, 9, seed=8)))), image, atol=1 / 255)


def test_dark_16_bit_image_stays_dark(tmp_path):
    # All values <= 255 in a 16-bit file are still 16-bit values: near black, not mid grey.
    path = tmp_path / "dark16.png"
    Image.fromarray(np.full((20, 30), 200, dtype=np.uint16)).save(path)
    assert Image.open(path).mode.startswith("I")
    rgb = np.asarray(load_image(path))
    assert rgb.max() <= 1


def test_transparency_is_read_beside_the_picture_and_kept_by_formats_that_hold_it(tmp_path):
    a = np.full((20, 30, 4), 200, np.uint8)
    a[..., 3] = 255
    a[:, :10, 3] = 0  # a cut-out: the left third transparent
    Image.fromarray(a, "RGBA").save(tmp_path / "cut.png")
    picture, alpha = load_image_and_alpha(tmp_path / "cut.png")
    assert picture.mode == "RGB" and alpha is not None
    assert np.asarray(alpha)[:, :10].max() == 0 and np.asarray(alpha)[:, 10:].min() == 255
    a[..., 3] = 255  # an alpha band that hides nothing is no transparency
    Image.fromarray(a, "RGBA").save(tmp_path / "opaque.png")
    assert load_image_and_alpha(tmp_path / "opaque.png")[1] is None
    assert load_image_and_alpha(tmp_path / "cut.png")[0].size == load_image(tmp_path / "cut.png").size

    rgba = with_alpha(Image.new("RGB", (30, 20), (10, 20, 30)), alpha)
    save_image(rgba, tmp_path / "out.png")
    save_image(rgba, tmp_path / "out.jpg")
    kept = np.asarray(Image.open(tmp_path / "out.png"))
    assert kept.shape == (20, 30, 4) and kept[:, :10, 3].max() == 0 and kept[:, 10:, 3].min() == 255
    flat = np.asarray(Image.open(tmp_path / "out.jpg")).astype(int)
    assert flat.shape == (20, 30, 3)
    assert flat[:, :8].min() > 245 and flat[:, 12:].max() < 40  # on white where transparent, itself elsewhere


def test_a_float_tiff_in_0_1_is_read_as_bright_as_it_is(tmp_path):
    # Scientific and HDR tools write float TIFFs in 0-1: read as 0-255 they were all but black.
    ramp = np.tile(np.linspace(0, 1, 64, dtype=np.float32), (16, 1))
    Image.fromarray(ramp, mode="F").save(tmp_path / "ramp.tif")
    grey = np.asarray(load_image(tmp_path / "ramp.tif").convert("L"))
    assert grey.max() == 255 and grey.min() == 0 and abs(int(grey[0, 32]) - 130) <= 2


@pytest.mark.parametrize("kind", ["bool", "torch bool", "int64 0/1", "uint8 0/1"])
def test_a_mask_of_zeros_and_ones_is_black_and_white(kind):
    from impasto.api import load_mask

    half = np.zeros((16, 20), dtype=bool)
    half[:, 10:] = True
    mask = {"bool": half, "torch bool": torch.from_numpy(half), "int64 0/1": half.astype(np.int64), "uint8 0/1": half.astype(np.uint8)}[kind]
    loaded = load_mask(mask, (20, 16), torch.device("cpu"))
    assert float(loaded[..., 15:].min()) == 1.0 and float(loaded[..., :5].max()) == 0.0


@pytest.mark.parametrize("suffix", [".png", ".jpg"])
def test_a_file_cut_short_is_named_so(tmp_path, suffix):
    whole = tmp_path / f"whole{suffix}"
    Image.fromarray((textured_image(96, 128) * 255).astype(np.uint8)).save(whole)
    cut = tmp_path / f"cut{suffix}"
    cut.write_bytes(whole.read_bytes()[: whole.stat().st_size // 2])
    with pytest.raises(ImpastoError, match="the file is cut short"):
        load_image(cut)


def test_a_float_picture_in_0_255_may_overshoot_below_0_a_little():
    # A Lanczos or cubic resize of a 0-255 float picture dips a little below 0: still a picture.
    a = np.random.default_rng(0).uniform(0, 255, (32, 32, 3)).astype(np.float32)
    a[0, 0, 0] = -2.5
    assert load_image(a).getpixel((0, 0))[0] == 0


def test_a_closed_pil_image_is_a_one_line_error(tmp_path):
    Image.fromarray(two_tone(10, 12)).save(tmp_path / "a.png")
    with Image.open(tmp_path / "a.png") as lazy:  # never loaded: Pillow's bare assert
        pass
    loaded = Image.open(tmp_path / "a.png")
    loaded.load()
    loaded.close()  # loaded, then closed: Pillow's ValueError
    for image in (lazy, loaded):
        with pytest.raises(ImpastoError, match=r"^the PIL image is closed \(used after its `with Image.open\(...\)` block\?\)"):
            load_image(image)
    with Image.open(tmp_path / "a.png") as still_open:  # a lazily opened one still open is read as before
        assert np.array_equal(np.asarray(load_image(still_open)), two_tone(10, 12))


@pytest.mark.parametrize("high", [1.5, 5.0, 300.0, np.inf])
def test_a_float_picture_outside_0_1_and_0_255_is_refused_not_clipped_or_rescaled(high):
    # 1.5 was clipped to 1 (white), 5 read as 0-255 (near black), 300 clipped to 255: none is asked for.
    a = np.full((10, 12, 3), 0.5, np.float32)
    a[0, 0, 0] = high
    with pytest.raises(ImpastoError, match=r"^a float image reaches .*: float pictures are 0-1 or 0-255 \(clip it into one"):
        load_image(a)
    with pytest.raises(ImpastoError, match="float pictures are 0-1 or 0-255"):
        load_image(torch.from_numpy(a).permute(2, 0, 1))


def test_a_float_picture_may_overshoot_its_range_a_little_and_is_clipped():
    # A resize's ringing: up to 5% of the range past either end.
    a = np.full((10, 12, 3), 0.5, np.float32)
    a[0, 0] = (1.04, -0.04, 0.0)
    assert load_image(a).getpixel((0, 0)) == (255, 0, 0) and load_image(a).getpixel((1, 1)) == (128, 128, 128)
    b = np.full((10, 12, 3), 128.0, np.float32)
    b[0, 0] = (265.0, -10.0, 0.0)
    assert load_image(b).getpixel((0, 0)) == (255, 0, 0) and load_image(b).getpixel((1, 1)) == (128, 128, 128)
