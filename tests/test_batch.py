"""impasto batch: manifests, folder pairing, the index, resume and the local workers."""

from __future__ import annotations

import io
import json
import os
import re
import shutil
import sys
from pathlib import Path

import numpy as np
import pytest
from conftest import heic_bytes, run_python, smooth_image, textured_image, write_png
from PIL import Image

import impasto
from impasto.batch.plan import pair_folders, read_manifest, resolve_settings
from impasto.cli import main
from impasto.errors import ImpastoError, ImpastoWarning


@pytest.fixture
def data(tmp_path) -> Path:
    """photos/ (3 photos) and paintings/ (3 paintings) of tiny images."""
    (tmp_path / "photos").mkdir()
    (tmp_path / "paintings").mkdir()
    for i in range(3):
        write_png(tmp_path / "photos" / f"photo{i}.png", smooth_image(36, 44, seed=i))
        write_png(tmp_path / "paintings" / f"art{i}.png", textured_image(40, 32, seed=20 + i))
    (tmp_path / "photos" / "notes.txt").write_text("not an image")
    return tmp_path


@pytest.fixture
def fast(make_settings):
    return make_settings(size=40, iterations=4)


def settings_flags(settings: impasto.Settings) -> list[str]:
    return [
        "--weights", settings.weights, "--device", "cpu", "--size", str(settings.size), "--no-multiscale",
        "--iterations", str(settings.iterations), "--style-layers", ",".join(settings.style_layers),
        "--content-layers", ",".join(settings.content_layers), "--quiet",
    ]  # fmt: skip


def index_records(folder: Path) -> dict[str, dict]:
    lines = (folder / "index.jsonl").read_text().splitlines()
    records = [json.loads(line) for line in lines]
    assert len({r["output"] for r in records}) == len(records), "the index keeps one record per output"
    return {r["output"]: r for r in records}


# -- manifests -----------------------------------------------------------------------------------


def test_csv_manifest_rows_become_jobs(data):
    (data / "jobs.csv").write_text(
        "content,style,output,style_weight,size\n"
        "photos/photo0.png,paintings/art0.png,first.png,50,\n"
        "photos/photo1.png,paintings/art0.png:0.7;paintings/art1.png:0.3,,,64\n"
        ",,,,\n"  # a blank row is not a job
    )
    jobs = read_manifest(data / "jobs.csv")
    assert len(jobs) == 2
    first, blend = jobs
    assert first.output == "first.png" and first.content == str(data / "photos" / "photo0.png")
    assert first.overrides == {"style_weight": "50"}  # the empty size cell keeps the batch's size
    assert blend.styles == ((str(data / "paintings" / "art0.png"), 0.7), (str(data / "paintings" / "art1.png"), 0.3))
    assert blend.output == "photo1__art0+art1.png"
    assert first.error is None and blend.error is None


def test_jsonl_manifest_with_lists_settings_and_bad_lines(data, fast):
    lines = [
        {"content": "photos/photo0.png", "style": "paintings/art0.png", "settings": {"style_weight": 5}},
        {"content": "photos/photo1.png", "styles": [["paintings/art1.png", 2], {"path": "paintings/art2.png", "weight": 1}], "output": "sub/b"},
        {"content": "photos/photo2.png", "style": "paintings/art0.png", "no_such_setting": 1},
        {"style": "paintings/art0.png"},
        {"content": "photos/photo0.png", "style": [{"path": "paintings/art0.png", "weight": "heavy"}]},
    ]
    text = "\n".join(json.dumps(line) for line in lines) + "\n{not json\n[1, 2]\n"
    (data / "jobs.jsonl").write_text(text)
    jobs = read_manifest(data / "jobs.jsonl")
    assert [j.output for j in jobs[:2]] == ["photo0__art0.png", "sub/b.png"]
    assert jobs[0].overrides == {"style_weight": 5}
    assert jobs[1].styles[0][1] == 2.0 and jobs[1].styles[1][1] == 1.0
    from impasto.batch.plan import plan

    planned = plan(jobs, fast)
    assert planned[0].error is None and planned[0].settings.style_weight == 5
    assert "unknown setting no_such_setting" in planned[2].error and "jobs.jsonl line 3" in planned[2].error
    assert planned[3].error == "jobs.jsonl line 4: no content image"
    assert planned[4].error.startswith("jobs.jsonl line 5: cannot read the style")
    assert planned[5].error.startswith("jobs.jsonl line 6: not valid JSON")
    assert planned[6].error == "jobs.jsonl line 7: each line must be a JSON object"


def test_a_row_may_name_a_preset_under_its_own_values(tmp_path, fast):
    from impasto.batch.plan import jobs_from_rows, plan

    rows = [{"content": "a.png", "style": "b.png", "preset": "novak2016", "style_weight": "7"},
            {"content": "a.png", "style": "c.png", "preset": "nosuch"}]  # fmt: skip
    with_preset, unknown = plan(jobs_from_rows(rows), fast)
    assert with_preset.settings.style_layer_decay == 2 and with_preset.settings.style_weight == 7
    assert with_preset.settings.weights == fast.weights  # the batch's own settings stay under the preset
    assert "nosuch" in unknown.error and unknown.settings is None
    # Options given explicitly (the command line's) beat a row's preset, as in a single run.
    [fixed] = plan(jobs_from_rows(rows[:1]), fast.replace(style_layer_decay=0.5), fixed={"style_layer_decay"})
    assert fixed.settings.style_layer_decay == 0.5 and fixed.settings.gram_shift == -1 and fixed.settings.style_weight == 7


@pytest.mark.parametrize(
    "name, text, message",
    [
        ("jobs.csv", "photo,painting\na.png,b.png\n", "at least 'content' and 'style'"),
        ("jobs.csv", "content,style\n", "has no rows"),
        ("jobs.txt", "content,style\n", "a .csv or .jsonl file"),
        ("jobs.csv", "content,style,output\na.png,b.png,x.png\nc.png,d.png,X.PNG\n", "would both write"),
        ("jobs.csv", "content,style,output\na.png,b.png,../x.png\n", "inside the output folder"),
    ],
)
def test_manifest_errors_are_one_clear_line(tmp_path, name, text, message):
    (tmp_path / name).write_text(text)
    with pytest.raises(ImpastoError, match=message.replace("(", r"\(").replace(".", r"\.")):
        list(impasto.batch(tmp_path / name, tmp_path / "out"))


def test_missing_manifest_and_no_input_exit_2(tmp_path, capsys):
    assert main(["batch", str(tmp_path / "nope.csv"), "-o", str(tmp_path / "out")]) == 2
    assert "impasto: error: " in capsys.readouterr().err
    assert main(["batch", "-o", str(tmp_path / "out")]) == 2
    assert "give a manifest" in capsys.readouterr().err
    assert main(["batch", "--contents", str(tmp_path), "-o", str(tmp_path / "out")]) == 2
    assert "needs both --contents DIR and --styles DIR" in capsys.readouterr().err


# -- folders -------------------------------------------------------------------------------------


def test_folders_every_pair(data):
    jobs = pair_folders(data / "photos", data / "paintings")
    assert len(jobs) == 9  # notes.txt is not an image
    assert sorted(j.output for j in jobs)[:3] == ["photo0__art0.png", "photo0__art1.png", "photo0__art2.png"]


def test_folders_k_random_styles_per_content_repeatable(data):
    def draw(seed):
        return [(Path(j.content).name, Path(j.styles[0][0]).name) for j in pair_folders(data / "photos", data / "paintings", 2, seed)]

    first = draw(7)
    assert len(first) == 6
    for photo in ("photo0.png", "photo1.png", "photo2.png"):
        styles = [s for c, s in first if c == photo]
        assert len(styles) == 2 and len(set(styles)) == 2
    assert draw(7) == first  # same seed, same pairs
    assert any(draw(seed) != first for seed in range(8, 14))  # the seed matters
    # A photo's draw does not depend on the other photos in the folder.
    (data / "photos" / "photo0.png").unlink()
    assert [pair for pair in first if pair[0] != "photo0.png"] == draw(7)


def test_heic_photos_in_a_folder_are_painted_with_the_heic_extra(data, tmp_path):
    phone = tmp_path / "phone"
    phone.mkdir()
    for i, name in enumerate(("IMG_0001.HEIC", "IMG_0002.heic")):
        (phone / name).write_bytes(heic_bytes(smooth_image(24, 32, seed=i)))
    jobs = pair_folders(phone, data / "paintings")
    assert sorted({Path(job.content).name for job in jobs}) == ["IMG_0001.HEIC", "IMG_0002.heic"]
    assert len(jobs) == 2 * len(list((data / "paintings").iterdir()))


def test_heic_photos_without_the_extra_are_named_not_skipped_silently(data, tmp_path, without_heic_extra):
    phone = tmp_path / "phone"
    phone.mkdir()
    for name in ("IMG_0001.HEIC", "IMG_0002.heic"):
        (phone / name).write_bytes(b"\x00\x00\x00\x18ftypheic" + bytes(16))
    advice = r"reading {0} needs the heic extra \(pip install 'impasto\[heic\]'\), or convert {0} to JPEG or PNG first"
    with pytest.raises(ImpastoError, match=r"phone: no images in it \(looked for .*\); 2 HEIC/HEIF photos in it cannot be read: " + advice.format("them")):
        pair_folders(phone, data / "paintings")
    (data / "photos" / "IMG_0003.HEIC").write_bytes(b"\x00\x00\x00\x18ftypheic" + bytes(16))
    with pytest.warns(ImpastoWarning, match=r"photos: 1 HEIC/HEIF photo in it cannot be read: " + advice.format("it") + "; the batch leaves it out"):
        jobs = pair_folders(data / "photos", data / "paintings")
    assert len(jobs) == 9 and not any("IMG_0003" in str(job.content) for job in jobs)


def test_gif_and_avif_paintings_in_a_folder_are_used(data, monkeypatch):
    plan = sys.modules["impasto.batch.plan"]  # the package's `plan` is a function of that module

    art = data / "paintings"
    Image.open(art / "art0.png").save(art / "poster.gif")
    (art / "scan.AVIF").write_bytes(b"\x00\x00\x00\x1cftypavif" + bytes(16))
    monkeypatch.setattr(plan, "avif_readable", lambda: True)
    styles = {Path(job.styles[0][0]).name for job in pair_folders(data / "photos", art)}
    assert {"poster.gif", "scan.AVIF"} <= styles
    # A Pillow too old for AVIF: the file is named, with what it needs, not skipped silently.
    monkeypatch.setattr(plan, "avif_readable", lambda: False)
    with pytest.warns(ImpastoWarning, match=r"paintings: 1 AVIF picture in it cannot be read: reading it needs Pillow 11.3 or later; the batch leaves it out"):
        styles = {Path(job.styles[0][0]).name for job in pair_folders(data / "photos", art)}
    assert "poster.gif" in styles and "scan.AVIF" not in styles


def test_folder_errors(data, tmp_path):
    (tmp_path / "empty").mkdir()
    with pytest.raises(ImpastoError, match="no images in it"):
        pair_folders(tmp_path / "empty", data / "paintings")
    with pytest.raises(ImpastoError, match="no such folder"):
        pair_folders(tmp_path / "absent", data / "paintings")
    with pytest.raises(ImpastoError, match="only 3 styles"):
        pair_folders(data / "photos", data / "paintings", per_content=4)
    with pytest.raises(ImpastoError, match="at least 1"):
        pair_folders(data / "photos", data / "paintings", per_content=0)
    with pytest.raises(ImpastoError, match="is a file; --contents takes a folder"):
        pair_folders(data / "photos" / "photo0.png", data / "paintings")
    (data / "photos" / "photo0.jpg").write_bytes((data / "photos" / "photo0.png").read_bytes())
    with pytest.raises(ImpastoError, match="both write photo0__art0.png; rename one of the pictures"):
        impasto.batch(None, data / "out", contents=data / "photos", styles=data / "paintings")
    # Outputs among the photos would be painted as photos by the same command run again.
    with pytest.raises(ImpastoError, match="the output folder is the contents folder"):
        impasto.batch(None, data / "photos", contents=data / "photos", styles=data / "paintings")


def test_a_tree_of_folders_is_read_with_recursive_and_mirrored_in_the_outputs(data, fast, capsys):
    # ImageNet's layout: one folder per class, the same file names in each.
    tree = data / "train"
    for i, label in enumerate(("class_a", "class_b")):
        (tree / label).mkdir(parents=True)
        write_png(tree / label / "0001.png", smooth_image(36, 44, seed=10 + i))
    (tree / ".thumbnails").mkdir()
    write_png(tree / ".thumbnails" / "0001.png", smooth_image(36, 44))  # hidden: not a photo of the set
    with pytest.raises(ImpastoError, match=r"train: no images in it .*; its subfolders have images: pass recursive=True to read them"):
        pair_folders(tree, data / "paintings")
    jobs = pair_folders(tree, data / "paintings", per_content=1, seed=3, recursive=True)
    assert sorted(str(Path(j.content).relative_to(tree)) for j in jobs) == ["class_a/0001.png", "class_b/0001.png"]
    assert [j.output.split("__")[0] for j in jobs] == ["class_a/0001", "class_b/0001"]
    # Every pair: each painting for each photo, into the photo's subfolder.
    assert len(pair_folders(tree, data / "paintings", recursive=True)) == 6

    out = data / "stylized"
    argv = ["batch", "--contents", str(tree), "--styles", str(data / "paintings"), "--per-content", "1", "--pair-seed", "3",
            "-o", str(out), *settings_flags(fast)]  # fmt: skip
    assert main(argv) == 2
    assert "its subfolders have images: pass --recursive to read them" in capsys.readouterr().err
    assert main([*argv, "--recursive"]) == 0
    assert "2 done, 0 failed" in capsys.readouterr().err
    records = index_records(out)
    assert set(records) == {j.output for j in jobs}
    assert all((out / name).exists() for name in records)
    assert main([*argv, "--recursive"]) == 0
    assert "2 done (2 from an earlier run)" in capsys.readouterr().err
    # Outputs inside a tree read whole would be read as photos by the same command run again.
    with pytest.raises(ImpastoError, match="the output folder is inside the contents folder"):
        impasto.batch(None, tree / "out", fast, contents=tree, styles=data / "paintings", recursive=True)
    with pytest.raises(ImpastoError, match="a manifest names its files"):
        impasto.batch([{"content": "a.png", "style": "b.png"}], out, fast, recursive=True)


def test_paintings_of_one_name_in_two_subfolders_make_two_pictures_with_recursive(data):
    from impasto.batch.plan import plan

    styles = data / "styles"
    for i, painter in enumerate(("monet", "vangogh")):
        (styles / painter).mkdir(parents=True)
        write_png(styles / painter / "001.png", textured_image(40, 32, seed=30 + i))
    write_png(styles / "shipwreck.png", textured_image(40, 32, seed=33))
    jobs = pair_folders(data / "photos", styles, recursive=True)
    # Named by their path in the styles folder; one at its top level keeps its name.
    assert sorted(j.output for j in jobs if j.output.startswith("photo0__")) == [
        "photo0__monet-001.png", "photo0__shipwreck.png", "photo0__vangogh-001.png"]  # fmt: skip
    assert len(plan(jobs, impasto.Settings())) == 9  # no two jobs write one file


def test_the_paintings_are_drawn_from_in_path_order(data):
    """The draw samples the paintings as sorted Paths (by their parts; without case on Windows), the
    order batches have always drawn from, so a --pair-seed draws the same paintings on every OS."""
    import random

    from impasto.batch.plan import list_images

    styles = data / "styles"
    names = ["a-b.png", "a.png", "a/x.png", "B.png", "a/Y.png"]  # as text, "a/x.png" would sort after "a.png"
    for i, name in enumerate(names):
        (styles / name).parent.mkdir(parents=True, exist_ok=True)
        write_png(styles / name, textured_image(40, 32, seed=40 + i))
    in_order = sorted(Path(name) for name in names)
    assert [p.relative_to(styles) for p in list_images(styles, "styles", recursive=True)] == in_order
    for job in pair_folders(data / "photos", styles, per_content=2, seed=4, recursive=True):
        place = Path(job.content).name
        drawn = random.Random(f"4:{place}").sample([styles / p for p in in_order], 2)
        assert Path(job.styles[0][0]) in drawn


# -- running -------------------------------------------------------------------------------------


def test_bad_rows_fail_alone_and_the_exit_status_says_so(data, fast, capsys):
    (data / "jobs.csv").write_text(
        "content,style,output,style_weight,brush\n"
        "photos/photo0.png,paintings/art0.png,good.png,,\n"
        "photos/missing.png,paintings/art0.png,missing.png,,\n"
        "photos/notes.txt,paintings/art0.png,unreadable.png,,\n"
        "photos/photo1.png,paintings/art1.png,unknown.png,,3\n"
        "photos/photo2.png,paintings/art2.png,badvalue.png,lots,\n"
        "photos/photo2.png,paintings/art1.png,good2.png,10,\n"
    )
    out = data / "out"
    code = main(["batch", str(data / "jobs.csv"), "-o", str(out), *settings_flags(fast)])
    assert code == 1
    err = capsys.readouterr().err
    assert "2 done, 4 failed" in err
    records = index_records(out)
    assert {k: r["status"] for k, r in records.items()} == {
        "good.png": "done", "good2.png": "done", "missing.png": "failed", "unreadable.png": "failed",
        "unknown.png": "failed", "badvalue.png": "failed",
    }  # fmt: skip
    assert records["missing.png"]["error"].endswith("missing.png: no such file")
    assert records["unreadable.png"]["error"].endswith("notes.txt: not a readable image (no picture format Pillow knows)")
    assert records["unknown.png"]["error"] == "jobs.csv line 5: unknown setting brush; impasto --help lists them"
    assert records["badvalue.png"]["error"] == "jobs.csv line 6: style_weight: 'lots' is not a number"
    assert records["good2.png"]["overrides"] == {"style_weight": "10"}
    assert records["good.png"]["settings_hash"] != records["good2.png"]["settings_hash"]
    assert set(records["good.png"]["losses"]) >= {"content", "style", "total"}
    assert sorted(p.name for p in out.glob("*.png")) == ["good.png", "good2.png"]
    assert Image.open(out / "good.png").size == (40, 33)

    # Failed jobs stay failed (and the status says so) until --retry-failed, once the cause is fixed.
    write_png(data / "photos" / "missing.png", smooth_image(30, 30, seed=5))
    assert main(["batch", str(data / "jobs.csv"), "-o", str(out), *settings_flags(fast)]) == 1
    assert index_records(out)["missing.png"]["status"] == "failed"
    assert main(["batch", str(data / "jobs.csv"), "-o", str(out), *settings_flags(fast), "--retry-failed"]) == 1
    records = index_records(out)
    assert records["missing.png"]["status"] == "done" and (out / "missing.png").exists()
    assert records["unknown.png"]["status"] == "failed"


def test_the_batch_says_once_how_many_photos_had_their_flat_background_painted(data, fast, capsys):
    for i in range(2):  # two product shots flattened on white, beside the three photos
        cut_out = smooth_image(36, 44, seed=i) + np.random.default_rng(i).uniform(-0.05, 0.05, (36, 44, 1))
        cut_out[:, :11] = 1.0
        write_png(data / "photos" / f"cut_out{i}.png", cut_out)
    (data / "one").mkdir()
    shutil.copy(data / "paintings" / "art0.png", data / "one")
    out = data / "out"
    assert main(["batch", "--contents", str(data / "photos"), "--styles", str(data / "one"), "-o", str(out), *settings_flags(fast)]) == 0
    err = capsys.readouterr().err
    # One line for the batch, with the command line's advice, not one per job.
    assert err.count("flat background") == 1 and "2 jobs: the photo has a flat background" in err and "--flat-content 1" in err
    noted = {name for name, record in index_records(out).items() if record["notes"]}
    assert len(noted) == 2 and all("cut_out" in name for name in noted)


def test_resume_finishes_the_rest_without_redoing_any(data, fast, stylizer):
    out = data / "out"
    hits = stylizer.style_cache.hits
    with impasto.batch(None, out, fast, contents=data / "photos", styles=data / "paintings", stylizer=stylizer) as run:
        assert (run.total, run.to_run) == (9, 9)
        first = [next(run), next(run), next(run)]
    # Leaving the block stopped the batch, as a Ctrl-C or a closed notebook would.
    assert all(r.status == "done" and not r.previous for r in first)
    records = index_records(out)
    assert set(records) == {r.output.name for r in first}
    written = {r.output.name: r.output.stat().st_mtime_ns for r in first}

    again = impasto.batch(None, out, fast, contents=data / "photos", styles=data / "paintings", stylizer=stylizer)
    assert again.to_run == 6
    results = list(again)
    assert sum(r.previous for r in results) == 3 and sum(not r.previous for r in results) == 6
    assert all(r.status == "done" for r in results)
    assert {name: (out / name).stat().st_mtime_ns for name in written} == written
    assert len(index_records(out)) == 9
    # Jobs sharing a painting ran together: each painting's statistics were computed once per run.
    assert stylizer.style_cache.hits - hits >= 9 - 3  # at most one miss per painting
    assert sorted(p.name for p in out.glob("*.png")) == sorted(index_records(out))
    assert results[-1].image().size == (40, 33)

    # Other settings are other jobs: the old pictures are not passed off as theirs, nor replaced.
    other = list(impasto.batch(None, out, fast.replace(style_weight=3), contents=data / "photos", styles=data / "paintings", stylizer=stylizer))
    assert {r.status for r in other} == {"skipped"}
    assert "overwrite=True" in other[0].error  # from Python, the keyword to pass
    assert {name: (out / name).stat().st_mtime_ns for name in written} == written
    # ...nor disowned: a data loader still reads all nine (a mistyped rerun must not empty its
    # view), and the batch that made them, run again, still finds all nine done.
    assert {(r["status"], r["current"]) for r in index_records(out).values()} == {("done", True)}
    rerun = list(impasto.batch(None, out, fast, contents=data / "photos", styles=data / "paintings", stylizer=stylizer))
    assert len(rerun) == 9 and all(r.previous and r.status == "done" for r in rerun)


def test_a_picture_written_by_a_run_killed_before_its_record_is_redone(data, fast, stylizer):
    out = data / "out"
    rows = [{"content": str(data / "photos" / f"photo{i}.png"), "style": str(data / "paintings" / "art0.png")} for i in range(2)]
    first = list(impasto.batch(rows, out, fast, stylizer=stylizer))
    assert [r.status for r in first] == ["done", "done"]
    # The index as a SIGKILL between writing photo1's picture and its record leaves it.
    records = index_records(out)
    records["photo1__art0.png"]["status"] = "writing"
    (out / "index.jsonl").write_text("".join(json.dumps(r) + "\n" for r in records.values()))
    (out / "photo1__art0.png").write_bytes(b"cut short")
    again = {r.output.name: r for r in impasto.batch(rows, out, fast, stylizer=stylizer)}
    assert again["photo0__art0.png"].previous and again["photo0__art0.png"].status == "done"
    assert not again["photo1__art0.png"].previous and again["photo1__art0.png"].status == "done"
    assert Image.open(out / "photo1__art0.png").size == (40, 33)
    assert {r["status"] for r in index_records(out).values()} == {"done"}


def test_an_existing_file_is_skipped_unless_overwrite(data, fast, stylizer):
    out = data / "out"
    out.mkdir()
    (out / "photo0__art0.png").write_bytes(b"mine")
    rows = [{"content": str(data / "photos" / "photo0.png"), "style": str(data / "paintings" / "art0.png")}]
    [result] = impasto.batch(rows, out, fast, stylizer=stylizer)
    assert result.status == "skipped" and (out / "photo0__art0.png").read_bytes() == b"mine"
    [result] = impasto.batch(rows, out, fast, stylizer=stylizer, overwrite=True)
    assert result.status == "done" and Image.open(out / "photo0__art0.png").size == (40, 33)


def test_rows_from_python_and_outputs_in_subfolders(data, fast, stylizer):
    rows = [
        {"content": str(data / "photos" / "photo0.png"), "style": str(data / "paintings" / "art0.png"), "output": "a/b/first"},
        {"content": str(data / "photos" / "photo1.png"), "styles": [str(data / "paintings" / "art1.png")], "tv_weight": 0},
    ]
    results = list(impasto.batch(rows, data / "out", fast, stylizer=stylizer, image_format="jpg"))
    assert [r.status for r in results] == ["done", "done"]
    assert (data / "out" / "a" / "b" / "first.jpg").exists() and (data / "out" / "photo1__art1.jpg").exists()
    assert Image.open(results[0].output).format == "JPEG"
    # The device is not part of a job: the same batch on another device finds it done.
    again = list(impasto.batch(rows, data / "out", fast.replace(device="auto"), stylizer=stylizer, image_format="jpg"))
    assert len(again) == 2 and all(r.previous for r in again)


def test_a_transparent_photo_stays_transparent_as_in_a_single_run(data, fast, stylizer):
    from impasto.batch.work import run_job

    # A cut-out: transparent on the left, opaque on the right.
    photo = Image.fromarray((smooth_image(36, 44) * 255).astype("uint8")).convert("RGBA")
    photo.putalpha(Image.fromarray(((np.arange(44) >= 22) * 255).astype("uint8")[None].repeat(36, 0)))
    photo.save(data / "cutout.png")
    rows = [{"content": str(data / "cutout.png"), "style": str(data / "paintings" / "art0.png")}]
    [result] = impasto.batch(rows, data / "out", fast, stylizer=stylizer)
    picture = Image.open(result.output)
    assert result.status == "done" and picture.mode == "RGBA" and picture.size == (40, 33)
    alpha = np.asarray(picture.getchannel("A"))
    assert alpha[:, :15].max() == 0 and alpha[:, -15:].min() == 255
    assert result.image().mode == "RGBA"
    # Half of it white once flattened: the run painted the background, and the index says so.
    [note] = result.notes
    assert "flat background" in note
    [record] = index_records(data / "out").values()
    assert record["notes"] == [note]
    # The same from bytes, as a Ray actor is sent its images.
    sent = ("cutout.png", (data / "cutout.png").read_bytes())
    art = ("art0.png", (data / "paintings" / "art0.png").read_bytes())
    outcome = run_job(stylizer, fast.to_dict(), sent, [(art, 1.0)])
    assert outcome["ok"] and Image.open(io.BytesIO(outcome["png"])).mode == "RGBA"


def test_resume_does_not_depend_on_how_the_paths_are_spelled(data, fast, stylizer, monkeypatch):
    def run(contents, styles, output):
        return list(impasto.batch(None, output, fast, contents=contents, styles=styles, per_content=1, stylizer=stylizer))

    monkeypatch.chdir(data)
    assert {r.status for r in run("photos", "paintings", "out")} == {"done"}
    written = {p.name: p.stat().st_mtime_ns for p in (data / "out").glob("*.png")}
    # Absolute paths, other relative ones from another folder, a link to the folder: the same batch.
    assert all(r.previous and r.status == "done" for r in run(data / "photos", data / "paintings", data / "out"))
    monkeypatch.chdir(data / "paintings")
    assert all(r.previous and r.status == "done" for r in run("../photos", ".", "../out"))
    (data / "linked").symlink_to(data / "photos", target_is_directory=True)
    assert all(r.previous and r.status == "done" for r in run(data / "linked", data / "paintings", data / "out"))
    assert {p.name: p.stat().st_mtime_ns for p in (data / "out").glob("*.png")} == written

    # A photo replaced by another of the same name: its job is redone (its own picture replaced), not
    # passed off as done, nor taken for someone else's file in the way.
    write_png(data / "photos" / "photo1.png", smooth_image(30, 50, seed=9))
    results = {r.output.name: r for r in run(data / "photos", data / "paintings", data / "out")}
    redone = [name for name, r in results.items() if not r.previous]
    assert [name.split("__")[0] for name in redone] == ["photo1"] and results[redone[0]].status == "done"
    assert Image.open(data / "out" / redone[0]).size == (40, 24)
    assert all(r.previous for name, r in results.items() if name not in redone)


def test_a_batch_moved_with_its_inputs_resumes_there(data, fast, stylizer, monkeypatch, tmp_path_factory):
    def run(output="out"):
        return list(impasto.batch(None, output, fast, contents="photos", styles="paintings", per_content=1, stylizer=stylizer))

    monkeypatch.chdir(data)
    assert {r.status for r in run()} == {"done"}
    written = {p.name: p.stat().st_mtime_ns for p in (data / "out").glob("*.png")}
    # The whole project copied elsewhere (a mounted disk, another machine), the same command run there.
    moved = tmp_path_factory.mktemp("elsewhere") / "project"
    shutil.copytree(data, moved, ignore=shutil.ignore_patterns("*.lock"))
    monkeypatch.chdir(moved)
    results = run()
    assert len(results) == 3 and all(r.previous and r.status == "done" for r in results), [(r.status, r.error) for r in results]
    assert {p.name: p.stat().st_mtime_ns for p in (moved / "out").glob("*.png")} == written
    for record in index_records(moved / "out").values():  # the paths a data loader reads are the new ones
        assert record["current"] and Path(record["content"]).parent == (moved / "photos").resolve()
        assert Path(record["styles"][0][0]).parent == (moved / "paintings").resolve()
    # The output folder moved on its own: the same files and settings, so the same jobs.
    results = tmp_path_factory.mktemp("disk") / "results"
    shutil.move(str(moved / "out"), str(results))
    assert all(r.previous and r.status == "done" for r in run(results))


def test_an_index_written_before_paths_were_resolved_still_counts(data, fast, stylizer, monkeypatch):
    from impasto.batch.plan import job_key

    def run():
        return list(impasto.batch(None, "out", fast, contents="photos", styles="paintings", per_content=1, stylizer=stylizer))

    monkeypatch.chdir(data)
    assert {r.status for r in run()} == {"done"}
    # The records as the batch wrote them before: the paths as spelled ("photos/photo0.png"), no file versions.
    old = {}
    for name, record in index_records(data / "out").items():
        content = f"photos/{Path(record['content']).name}"
        styles = [[f"paintings/{Path(path).name}", weight] for path, weight in record["styles"]]
        key = job_key(content, [tuple(s) for s in styles], record["settings_hash"], None)
        old[name] = {k: v for k, v in record.items() if k not in ("inputs", "settings", "current", "timings", "warnings")}
        old[name] |= {"content": content, "styles": styles, "key": key}
    (data / "out" / "index.jsonl").write_text("".join(json.dumps(r) + "\n" for r in old.values()))
    assert all(r.previous and r.status == "done" for r in run())
    for name, record in index_records(data / "out").items():  # brought up to date
        assert record["key"] != old[name]["key"] and Path(record["content"]).is_absolute()
        assert record["inputs"] and record["current"] is True and record["settings"]["size"] == 40
    # And as the batch wrote them next: keyed on the absolute resolved paths.
    records = index_records(data / "out")
    for record in records.values():
        record["key"] = job_key(record["content"], [tuple(s) for s in record["styles"]], record["settings_hash"], None)
    (data / "out" / "index.jsonl").write_text("".join(json.dumps(r) + "\n" for r in records.values()))
    assert all(r.previous and r.status == "done" for r in run())


def test_a_replaced_input_is_not_current_until_redone_and_a_failed_job_of_one_is_retried(data, fast, stylizer):
    out = data / "out"
    (data / "photos" / "broken.png").write_bytes(b"not a picture yet")
    rows = [{"content": str(data / "photos" / name), "style": str(data / "paintings" / "art0.png")} for name in ("photo0.png", "broken.png")]
    assert sorted((r.output.name, r.status) for r in impasto.batch(rows, out, fast, stylizer=stylizer)) == [
        ("broken__art0.png", "failed"), ("photo0__art0.png", "done")]  # fmt: skip
    # Both inputs replaced: the done job's picture is of the old photo until its job is redone, so
    # a data loader reading meanwhile must not pair it with the new one.
    write_png(data / "photos" / "photo0.png", smooth_image(30, 50, seed=9))
    write_png(data / "photos" / "broken.png", smooth_image(36, 44, seed=8))
    run = impasto.batch(rows, out, fast, stylizer=stylizer)
    assert run.to_run == 2  # the failed one too, without retry_failed: a replaced input is redone
    records = index_records(out)
    assert records["photo0__art0.png"]["status"] == "done" and records["photo0__art0.png"]["current"] is False
    results = {r.output.name: r for r in run}
    assert {name: (r.status, r.previous) for name, r in results.items()} == {
        "photo0__art0.png": ("done", False), "broken__art0.png": ("done", False)}  # fmt: skip
    assert Image.open(out / "photo0__art0.png").size == (40, 24)
    assert all(r["status"] == "done" and r["current"] for r in index_records(out).values())


def test_a_redo_that_fails_keeps_the_old_picture_as_the_batchs_own(data, fast, stylizer):
    out = data / "out"
    rows = [{"content": str(data / "photos" / "photo0.png"), "style": str(data / "paintings" / "art0.png")}]
    assert [r.status for r in impasto.batch(rows, out, fast, stylizer=stylizer)] == ["done"]
    before = (out / "photo0__art0.png").read_bytes()
    # The photo replaced by something that is not a picture: its redo fails, and the old picture stays.
    (data / "photos" / "photo0.png").write_bytes(b"not a picture")
    assert [r.status for r in impasto.batch(rows, out, fast, stylizer=stylizer)] == ["failed"]
    assert (out / "photo0__art0.png").read_bytes() == before
    # Mended: the retry replaces that picture, which this batch made, instead of skipping it as a stranger's.
    write_png(data / "photos" / "photo0.png", smooth_image(30, 50, seed=9))
    results = list(impasto.batch(rows, out, fast, stylizer=stylizer, retry_failed=True))
    assert [(r.status, r.error) for r in results] == [("done", None)]
    assert Image.open(out / "photo0__art0.png").size == (40, 24)


def test_the_index_serves_a_data_loader(data, fast, stylizer, monkeypatch):
    """What a data loader reads from index.jsonl: absolute paths, the settings (the seed among them),
    the timings, and which records belong to the batch as it is now."""

    def draw(seed):
        return {j.output for j in pair_folders(data / "photos", data / "paintings", 1, seed)}

    monkeypatch.chdir(data)
    first = list(impasto.batch(None, "out", fast.replace(seed=5), contents="photos", styles="paintings", per_content=1, seed=1, stylizer=stylizer))
    records = index_records(data / "out")
    assert set(records) == draw(1) and {r.status for r in first} == {"done"}
    for record in records.values():
        content, [[style, weight]] = record["content"], record["styles"]
        assert Path(content).is_absolute() and Path(content) == (data / "photos" / Path(content).name).resolve()
        assert Path(style).is_absolute() and Path(style).parent == (data / "paintings").resolve() and weight == 1.0
        # Every setting (a data loader reads them by name), but the device and whether its passes were
        # replayed as CUDA graphs: a job's picture does not depend on them.
        every = {k: v for k, v in fast.replace(seed=5).to_dict().items() if k not in ("device", "cuda_graphs")}
        assert record["settings"] == json.loads(json.dumps(every)) and record["settings"]["seed"] == 5
        assert record["settings"]["flat_content"] is None  # at its default too: decided for each photo
        assert {"load", "decode", "optimise", "encode", "started_at", "finished_at"} <= set(record["timings"])
        assert record["current"] is True and record["warnings"] == []
    # Another draw of paintings: the jobs no longer drawn keep their records (their pictures are
    # there), marked as not of the batch as it is now.
    other = next(seed for seed in range(2, 50) if draw(seed) != draw(1))
    list(impasto.batch(None, "out", fast.replace(seed=5), contents="photos", styles="paintings", per_content=1, seed=other, stylizer=stylizer))
    records = index_records(data / "out")
    assert set(records) == draw(1) | draw(other)
    assert {name for name, r in records.items() if r["status"] == "done" and r["current"]} == draw(other)
    assert all(not records[name]["current"] for name in draw(1) - draw(other))


def test_a_warning_of_a_job_is_said_once_per_batch_naming_its_file(data, fast, stylizer):
    (data / "small").mkdir()
    write_png(data / "small" / "tiny.png", textured_image(10, 12))
    with pytest.warns(ImpastoWarning) as caught:
        results = list(impasto.batch(None, data / "out", fast, contents=data / "photos", styles=data / "small", stylizer=stylizer))
    said = [str(w.message) for w in caught if issubclass(w.category, ImpastoWarning)]
    assert len(results) == 3 and len(said) == 1, said
    assert said[0].startswith(f"{(data / 'small' / 'tiny.png').resolve()} is 12x10 but is used at"), said
    # Each job's record keeps what it was warned of.
    assert all(r.warnings == said for r in results)
    assert all(r["warnings"] == said for r in index_records(data / "out").values())


def test_a_warning_is_taken_to_name_a_file_only_by_its_whole_name():
    from impasto.batch.work import name_input

    painting = Image.new("RGB", (12, 10))
    styles = [("/art/a.png", painting)]
    # "a.png" inside "data.png" or "a.png.bak" names another file: the job's own are named.
    for message in ("/x/data.png is 12x10 but is used at 40", "a.png.bak is 12x10", "my-a.png is 12x10"):
        assert name_input(message, "/p/cat.jpg", styles) == f"/p/cat.jpg in /art/a.png: {message}"
    for message in ("a.png is 12x10", "/art/a.png: is 12x10", "it is a.png.", "cannot read 'a.png'", "cat.jpg is transparent"):
        assert name_input(message, "/p/cat.jpg", styles) == message


def test_warnings_of_jobs_in_two_threads_stay_with_their_own_job():
    # Two inline batches may run in two threads: each job's record must hold its own warnings,
    # and warnings outside any job must still be warnings.
    import threading

    from impasto.errors import collect_warnings, warn

    first_in, second_done = threading.Event(), threading.Event()
    a: list[str] = []
    b: list[str] = []

    def job_a():
        with collect_warnings(a):
            warn("from A")
            first_in.set()
            second_done.wait(5)

    def job_b():
        first_in.wait(5)
        with collect_warnings(b):
            warn("from B")
        second_done.set()

    threads = [threading.Thread(target=job_a), threading.Thread(target=job_b)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert a == ["from A"] and b == ["from B"]
    with pytest.warns(ImpastoWarning, match="outside any job"):
        warn("outside any job")


def test_a_job_that_runs_out_of_memory_part_way_fails_and_is_redone(data, fast, stylizer, monkeypatch):
    import torch

    real = stylizer.extractor
    calls = {"n": 0}

    def extractor(settings, device):
        network = real(settings, device)

        class Failing:  # the network, whose 4th pass (counted over every job) runs out of memory
            def __call__(self, image, relu_with=None):
                calls["n"] += 1
                if calls["n"] == 4:
                    raise torch.cuda.OutOfMemoryError("CUDA out of memory. Tried to allocate 2.00 GiB")
                return network(image, relu_with)

            def __getattr__(self, name):
                return getattr(network, name)

        return Failing()

    monkeypatch.setattr(stylizer, "extractor", extractor)
    contents = data / "one"
    contents.mkdir()
    shutil.copy(data / "photos" / "photo0.png", contents)
    styles = data / "paintings"
    first = list(impasto.batch(None, data / "out", fast, contents=contents, styles=styles, per_content=1, stylizer=stylizer))
    assert first and all(r.status == "failed" and r.error.startswith("out of memory on cpu") for r in first), first
    assert not any((data / "out" / r.output).exists() for r in first)  # no half-painted picture for the data set
    monkeypatch.setattr(stylizer, "extractor", real)
    again = list(impasto.batch(None, data / "out", fast, contents=contents, styles=styles, per_content=1, stylizer=stylizer, retry_failed=True))
    assert [r.status for r in again] == ["done"] * len(first)


def test_local_workers_share_the_gpus(monkeypatch):
    """No GPU here: torch is told of two, and each worker's jobs are looked at as they reach run_job."""
    import signal

    import torch

    from impasto.batch.local import Task

    local = sys.modules["impasto.batch.local"]
    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
    monkeypatch.setattr(torch.cuda, "device_count", lambda: 2)
    current: list[int] = []
    monkeypatch.setattr(torch.cuda, "set_device", current.append)
    monkeypatch.setattr(signal, "signal", lambda *args: None)  # the worker ignores Ctrl-C: not in this process
    monkeypatch.setattr(local, "make_stylizer", lambda: None)
    devices: list[str] = []
    monkeypatch.setattr(local, "run_job", lambda stylizer, settings, *args: devices.append(settings["device"]) or {"ok": True})

    class Pipe:
        def __init__(self, tasks):
            self.tasks, self.sent = list(tasks), []

        def recv(self):
            return self.tasks.pop(0)

        def send(self, message):
            self.sent.append(message)

    asked = ["auto", "cuda", "cpu", "cuda:0"]
    for slot in range(3):
        devices.clear()
        pipe = Pipe([Task(i, {"device": device}, "a.png", []) for i, device in enumerate(asked)] + [None])
        local._worker_main(slot, 1, pipe)
        assert [m[0] for m in pipe.sent] == ["done"] * 4
        gpu = f"cuda:{slot % 2}"
        assert devices == [gpu, gpu, "cpu", "cuda:0"], (slot, devices)  # a device named exactly is left as named
        assert current[-1] == slot % 2
    # One GPU: nothing to share.
    monkeypatch.setattr(torch.cuda, "device_count", lambda: 1)
    devices.clear()
    local._worker_main(1, 1, Pipe([Task(0, {"device": "auto"}, "a.png", []), None]))
    assert devices == ["auto"]


def test_a_script_without_a_main_guard_is_told_to_add_one(data, fast):
    # Spawned workers import the driver's script again; one that starts a batch at its top
    # level would start one in each worker. What a Python user pastes from the README.
    import subprocess

    script = data / "augment.py"
    script.write_text(
        "import impasto\n"
        f"settings = impasto.Settings(**{fast.to_dict()!r})\n"
        f"for r in impasto.batch(None, {str(data / 'out')!r}, settings, contents={str(data / 'photos')!r}, "
        f"styles={str(data / 'paintings')!r}, per_content=1, workers=2):\n"
        "    print(r.status)\n"
    )
    proc = subprocess.run([sys.executable, str(script)], capture_output=True, text=True, timeout=300, cwd=data)
    assert proc.returncode != 0
    assert 'put the impasto.batch(...) call under `if __name__ == "__main__":`' in proc.stderr.strip().splitlines()[-1]
    assert "bootstrapping phase" not in proc.stderr  # not multiprocessing's traceback from each worker


def test_local_workers_share_four_jobs(data, fast):
    (data / "photos" / "photo2.png").unlink()
    out = data / "out"
    seen = []
    results = list(impasto.batch(
        None, out, fast, contents=data / "photos", styles=data / "paintings", per_content=2, seed=1, workers=2,
        on_progress=lambda worker, name, done, total: seen.append((worker, name, done, total)),
    ))  # fmt: skip
    assert len(results) == 4 and {r.status for r in results} == {"done"}
    records = index_records(out)
    assert set(records) == {r.output.name for r in results}
    assert len({r["worker"] for r in records.values()}) == 2, "both worker processes ran jobs"
    assert {w for w, *_ in seen} == {0, 1} and all(total == 4 for *_, total in seen)
    assert {name for _, name, *_ in seen} == set(records)
    for name in records:
        assert Image.open(out / name).size == (40, 33)


def test_a_job_error_from_a_worker_process_names_the_command_line_flag(data, fast, capsys):
    # The memory check fails in the worker process; its advice must still be a flag, not a keyword.
    manifest = data / "jobs.jsonl"
    photo, art = data / "photos" / "photo0.png", data / "paintings" / "art0.png"
    rows = [{"content": str(photo), "style": str(art), "output": "small.png"},
            {"content": str(photo), "style": str(art), "output": "huge.png", "size": 200_000}]  # fmt: skip
    manifest.write_text("".join(json.dumps(row) + "\n" for row in rows))
    out = data / "out"
    assert main(["batch", str(manifest), "-o", str(out), "--workers", "2", *settings_flags(fast)]) == 1
    capsys.readouterr()
    records = index_records(out)
    assert records["small.png"]["status"] == "done"
    assert "choose a smaller --size" in records["huge.png"]["error"], records["huge.png"]
    assert "IMPASTO_COMMAND_LINE" not in os.environ  # the command line's run is over


def test_a_ray_actor_names_flags_only_when_the_driver_ran_from_the_command_line(data, fast, monkeypatch):
    # The actor class itself, without a cluster: what run_ray gives each actor decides its messages.
    from impasto.batch.cluster import BatchWorker
    from impasto.errors import COMMAND_LINE_ENV

    monkeypatch.setenv(COMMAND_LINE_ENV, "0")  # so the test's end removes what an actor sets
    photo = (data / "photos" / "photo0.png").read_bytes()
    art = (data / "paintings" / "art0.png").read_bytes()
    huge = fast.replace(size=200_000).to_dict()
    from_python = BatchWorker(None, command_line=False).run(huge, ["photo0.png", "art0.png"], [1.0], photo, art)
    assert not from_python["ok"] and from_python["error"].endswith("choose a smaller size"), from_python
    from_cli = BatchWorker(None, command_line=True).run(huge, ["photo0.png", "art0.png"], [1.0], photo, art)
    assert not from_cli["ok"] and "choose a smaller --size" in from_cli["error"], from_cli


def test_cli_folder_mode_and_its_rerun(data, fast, capsys):
    out = data / "out"
    (data / "two").mkdir()
    for name in ("photo0.png", "photo1.png"):
        (data / "two" / name).write_bytes((data / "photos" / name).read_bytes())
    argv = ["batch", "--contents", str(data / "two"), "--styles", str(data / "paintings"), "--per-content", "2",
            "--pair-seed", "3", "-o", str(out), *settings_flags(fast)]  # fmt: skip
    assert main(argv) == 0
    err = capsys.readouterr().err
    assert re.search(r"4 done, 0 failed, 0 skipped in [\d.]+ s \([\d.]+ jobs/min, [\d.]+ s per job\); index: ", err), err
    assert len(index_records(out)) == 4 and len(list(out.glob("*.png"))) == 4
    assert main(argv) == 0
    err = capsys.readouterr().err
    assert "4 done (4 from an earlier run)" in err and "jobs/min" not in err  # nothing painted: no rate to give
    # Other settings into the same folder: nothing painted, so not a success either.
    assert main([*argv, "--style-weight", "7"]) == 1
    err = capsys.readouterr().err
    assert "0 done, 0 failed, 4 skipped" in err and "pass --overwrite, or give these settings an output folder of their own" in err


def test_ctrl_c_stops_the_command_and_the_same_command_finishes(data, fast):
    """A real SIGINT to `impasto batch` (in its own process) mid-batch, then the same command again."""
    import os
    import subprocess

    from conftest import ctrl_c_when, impasto_command

    (data / "photos" / "photo2.png").unlink()
    (data / "paintings" / "art2.png").unlink()
    out = data / "out"
    argv = [*impasto_command(), "batch", "--contents", str(data / "photos"), "--styles", str(data / "paintings"),
            "-o", str(out), *settings_flags(fast.replace(iterations=150))]  # fmt: skip
    # Four jobs of ~1.5 s, and the Ctrl-C sent just after the first one is recorded: three
    # jobs' time for it to land before the batch could finish on its own.
    index = out / "index.jsonl"
    # Into the second job's iterations (0.4 s after the first is recorded), where a run has a
    # best picture so far to offer: the batch must stop, not record that unfinished picture as the job's.
    proc = ctrl_c_when(argv, lambda: index.exists() and '"status": "done"' in index.read_text(), "a job recorded done", settle=0.4)
    err = proc.stderr
    assert proc.returncode == 130, err
    assert "Run the same command again" in err
    stopped = index_records(out)
    assert 1 <= len(stopped) < 4 and {r["status"] for r in stopped.values()} == {"done"}
    # Every record has its picture, and no picture lacks a record (no half-written file either).
    assert sorted(p.name for p in out.iterdir() if p.name != "index.jsonl" and not p.name.startswith(".")) == sorted(stopped)
    written = {name: (out / name).stat().st_mtime_ns for name in stopped}

    rerun = subprocess.run(argv, capture_output=True, text=True, env={**os.environ, "OMP_NUM_THREADS": "1"}, timeout=180)
    assert rerun.returncode == 0, rerun.stderr
    assert f"4 done ({len(stopped)} from an earlier run)" in rerun.stderr
    assert {name: (out / name).stat().st_mtime_ns for name in written} == written
    assert len(index_records(out)) == 4 and len(list(out.glob("*.png"))) == 4


def test_a_local_worker_killed_mid_job_is_replaced_and_its_job_redone_or_failed(data, fast):
    import multiprocessing
    import os
    import signal
    from collections import Counter

    (data / "photos" / "photo2.png").unlink()
    # One batch, retries=1: the first job seen is killed once (its retry finishes it), the
    # second twice (its one retry is killed too, so it fails and says why); the others are left alone.
    quotas, kills = iter([1, 2]), Counter()
    allowed: dict[str, int] = {}

    def kill(worker: int, name: str, done: int, total: int) -> None:
        if not 0 < done < total:
            return
        allowed.setdefault(name, next(quotas, 0))
        if kills[name] < allowed[name]:
            process = next(p for p in multiprocessing.active_children() if p.name == f"impasto-batch-{worker}")
            os.kill(process.pid, signal.SIGKILL)
            kills[name] += 1

    out = data / "out"
    # 60 iterations: the kill, sent at a job's first progress report, lands long before its end.
    results = list(impasto.batch(None, out, fast.replace(iterations=60), contents=data / "photos", styles=data / "paintings",
                                 per_content=2, workers=2, retries=1, on_progress=kill))  # fmt: skip
    assert len(results) == 4 and not multiprocessing.active_children()
    once, twice = (name for name, n in allowed.items() if n)
    assert kills == {once: 1, twice: 2}
    by_name = {r.output.name: r for r in results}
    assert by_name[once].status == "done" and by_name[once].attempts == 2
    assert by_name[twice].status == "failed" and by_name[twice].attempts == 2
    assert "worker lost 2 time(s)" in by_name[twice].error and "exited with code -9" in by_name[twice].error
    others = [r for name, r in by_name.items() if name not in (once, twice)]
    assert [(r.status, r.attempts) for r in others] == [("done", 1), ("done", 1)]
    assert sorted(p.name for p in out.glob("*.png")) == sorted(name for name, r in by_name.items() if r.status == "done")


def test_a_setting_added_later_leaves_earlier_indexes_matching_at_its_default():
    import hashlib

    from impasto.batch.plan import settings_hash

    # flat_content's default was 1 until session 32, upsample_grain's 0 until session 36 (0 in
    # every run before it existed) and fine_content_layers none until session 40: earlier runs had those values.
    settings = impasto.Settings(size=64, flat_content=1.0, upsample_grain=0.0, fine_content_layers=())
    # As an index written before flat_content, upsample_grain, the fine content layers and cuda_graphs existed (cuda_graphs
    # is never in one: how a run is launched, like its device, does not change its picture).
    added = ("device", "flat_content", "upsample_grain", "fine_content_layers", "fine_content_weight", "cuda_graphs")
    before = {k: v for k, v in settings.to_dict().items() if k not in added}
    assert settings_hash(settings) == hashlib.sha256(json.dumps(before, sort_keys=True, default=str).encode()).hexdigest()[:12]
    assert settings_hash(settings.replace(flat_content=0.5)) != settings_hash(settings)  # and it still tells runs apart
    assert settings_hash(settings.replace(upsample_grain=1.0)) != settings_hash(settings)
    assert settings_hash(settings.replace(fine_content_layers=("conv3_2",))) != settings_hash(settings)
    # Today's defaults paint differently (flat_content decided for each photo, the painting's grain): not a match.
    assert settings_hash(settings.replace(flat_content=None)) != settings_hash(settings)
    assert settings_hash(impasto.Settings(size=64, flat_content=1.0, fine_content_layers=())) != settings_hash(settings)
    assert settings_hash(impasto.Settings(size=64, flat_content=1.0, upsample_grain=0.0)) != settings_hash(settings)


def test_two_batches_into_one_folder_at_once_are_refused_not_mixed(data, fast):
    # The second would record the first's pictures as "skipped" and the last to end would keep its index.
    first = impasto.batch(None, data / "out", fast, contents=data / "photos", styles=data / "paintings", per_content=1)
    with pytest.raises(ImpastoError, match=r"out: a batch started earlier in this process into this folder is still open \(its loop was left before the end\): call that run's close\(\)"):
        impasto.batch(None, data / "out", fast, contents=data / "photos", styles=data / "paintings", per_content=1)
    assert {r.status for r in first} == {"done"}
    again = list(impasto.batch(None, data / "out", fast, contents=data / "photos", styles=data / "paintings", per_content=1))
    assert len(again) == 3 and all(r.previous and r.status == "done" for r in again)
    # Another process is named as one.
    held = impasto.batch(None, data / "out", fast, contents=data / "photos", styles=data / "paintings", per_content=1)
    child = run_python(["-c", "import sys, impasto; impasto.batch(None, sys.argv[1], contents=sys.argv[2], styles=sys.argv[3])",
                        str(data / "out"), str(data / "photos"), str(data / "paintings")], timeout=120)
    assert f"another batch is writing into this folder (process {os.getpid()}); wait until it ends" in child.stderr
    held.close()


def test_a_batch_whose_loop_was_left_early_frees_its_folder_when_closed(data, fast):
    for iterate in (True, False):  # left after one result, or never looped over at all
        run = impasto.batch(None, data / "out", fast, contents=data / "photos", styles=data / "paintings", per_content=1)
        if iterate:
            next(run)
        run.close()
    finished = list(impasto.batch(None, data / "out", fast, contents=data / "photos", styles=data / "paintings", per_content=1))
    assert [r.status for r in finished] == ["done"] * 3


def test_ctrl_c_in_a_python_batch_is_a_plain_interrupt_and_settings_may_be_a_dict(data, fast, stylizer, monkeypatch):
    rows = [{"content": str(data / "photos" / f"photo{i}.png"), "style": str(data / "paintings" / "art0.png")} for i in range(3)]
    out = data / "out"
    real_run, calls = impasto.Stylizer.run, {"n": 0}

    def ctrl_c_in_the_second_job(self, *args, **kwargs):
        calls["n"] += 1
        if calls["n"] == 2:
            raise impasto.Interrupted(None)  # as Stylizer.run raises it, carrying that job's picture
        return real_run(self, *args, **kwargs)

    monkeypatch.setattr(impasto.Stylizer, "run", ctrl_c_in_the_second_job)
    done = []
    with pytest.raises(KeyboardInterrupt) as stop:
        for record in impasto.batch(rows, out, fast.to_dict(), stylizer=stylizer):
            done.append(record)
    # One job's half-painted picture is not the batch's result: a plain interrupt, the first job kept.
    assert not isinstance(stop.value, impasto.Interrupted)
    assert [r.status for r in done] == ["done"] and list(index_records(out)) == ["photo0__art0.png"]


def test_iterations_given_by_a_row_or_the_command_line_are_run_at_a_one_scale_size():
    # 48 px is one scale: without a given count it gets initial_iterations (100), as a single run does.
    assert resolve_settings(impasto.Settings(), {"size": "48"}).initial_iterations == 100
    assert resolve_settings(impasto.Settings(), {"size": "48", "iterations": "3"}).initial_iterations == 3
    assert resolve_settings(impasto.Settings(iterations=3), {"size": "48"}, fixed={"iterations"}).initial_iterations == 3
    # At a size with several scales the coarse count stays as it was.
    assert resolve_settings(impasto.Settings(), {"size": "512", "iterations": "3"}).initial_iterations == 100


def test_a_picture_or_a_non_utf8_file_given_as_a_manifest_gets_a_clear_line(tmp_path):
    picture = tmp_path / "cat.jpg"
    picture.write_bytes(b"\xff\xd8\xff\xe0 not text at all \x89\xfe")
    with pytest.raises(ImpastoError, match=r"cat.jpg: a manifest is a .csv or .jsonl file, not '.jpg'$"):
        read_manifest(picture)
    latin1 = tmp_path / "jobs.csv"
    latin1.write_bytes("content,style,output\ncaf\xe9.png,s.png,o.png\n".encode("latin-1"))
    with pytest.raises(ImpastoError, match=r"jobs.csv: the manifest is not UTF-8 text \(save it as UTF-8"):
        read_manifest(latin1)
