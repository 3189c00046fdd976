"""The web app's API (issue #5), driven by FastAPI's TestClient on synthetic weights.

Every job here is a 48 px single-scale run of a few iterations on the random VGG19.
"""

from __future__ import annotations

import io
import json
import os
import struct
import time
import warnings
import zlib
from contextlib import contextmanager
from pathlib import Path
from typing import Any, Iterator

import numpy as np
import pytest
from PIL import Image

from conftest import FAST_CONTENT_LAYERS, FAST_STYLE_LAYERS, heic_bytes, png_bomb, smooth_image, textured_image, to_uint8

pytest.importorskip("fastapi", reason="the web extra is not installed (pip install 'impasto[web]')")
pytest.importorskip("multipart", reason="the web extra is not installed (pip install 'impasto[web]')")
pytest.importorskip("httpx", reason="FastAPI's TestClient needs httpx")

with warnings.catch_warnings():
    # Starlette now prefers httpx2 for its test client; httpx (what the dev extra installs) still works.
    warnings.filterwarnings("ignore", message="Using `httpx` with `starlette.testclient` is deprecated")
    from fastapi.testclient import TestClient  # noqa: E402

from impasto import cli  # noqa: E402
from impasto.errors import ImpastoError  # noqa: E402
from impasto.web import check_host, cli_main, is_loopback  # noqa: E402
from impasto.web.app import WebConfig, create_app  # noqa: E402
from impasto.web.jobs import JOB_FILE, write_json_atomic  # noqa: E402
from impasto.web.options import Limits  # noqa: E402

LOCAL = "http://127.0.0.1"


# -- helpers ---------------------------------------------------------------------------------------


def png_bytes(array: np.ndarray, fmt: str = "PNG") -> bytes:
    buffer = io.BytesIO()
    Image.fromarray(to_uint8(array)).save(buffer, format=fmt)
    return buffer.getvalue()


@pytest.fixture(scope="module")
def photo() -> bytes:
    return png_bytes(smooth_image(40, 48))


@pytest.fixture(scope="module")
def painting() -> bytes:
    return png_bytes(textured_image(48, 40))


@pytest.fixture
def base_settings(synthetic_weights) -> dict[str, Any]:
    """The server's own options (`impasto serve --weights ... --size 48 ...`)."""
    return dict(
        weights=str(synthetic_weights),
        device="cpu",
        size=48,
        min_size=32,
        multiscale=False,
        iterations=6,
        initial_iterations=6,
        style_layers=FAST_STYLE_LAYERS,
        content_layers=FAST_CONTENT_LAYERS,
    )


@pytest.fixture
def serve(tmp_path, base_settings, stylizer):
    """serve(**config) -> a context manager giving a TestClient on a fresh app over tmp_path/data."""

    @contextmanager
    def start(**overrides: Any) -> Iterator[TestClient]:
        config = dict(data_dir=tmp_path / "data", base_settings=base_settings, stylizer=stylizer,
                      allowed_hosts=["127.0.0.1", "localhost"])  # fmt: skip
        config.update(overrides)
        with TestClient(create_app(WebConfig(**config)), base_url=LOCAL) as client:
            yield client

    return start


def files(photo: bytes, *styles: bytes, names: tuple[str, ...] = ()) -> list[tuple[str, tuple[str, bytes, str]]]:
    names = names or ("photo.png",) + tuple(f"style{i}.png" for i in range(len(styles)))
    parts = [("content", (names[0], photo, "image/png"))]
    parts += [("style", (name, data, "image/png")) for name, data in zip(names[1:], styles)]
    return parts


def create(client: TestClient, photo: bytes, painting: bytes, expect: int = 201, **data: Any) -> dict[str, Any]:
    form = {k: (json.dumps(v) if isinstance(v, dict) else str(v)) for k, v in data.items()}
    response = client.post("/api/jobs", files=files(photo, painting), data=form)
    assert response.status_code == expect, response.text
    return response.json()


def wait(client: TestClient, job_id: str, until=("done", "cancelled", "failed", "interrupted"), timeout: float = 60) -> dict[str, Any]:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        job = client.get(f"/api/jobs/{job_id}").json()
        if job["status"] in until:
            return job
        time.sleep(0.05)
    raise AssertionError(f"job {job_id} still {job['status']} after {timeout} s")


def wait_for_progress(client: TestClient, job_id: str, timeout: float = 60) -> dict[str, Any]:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        job = client.get(f"/api/jobs/{job_id}").json()
        if job["status"] == "running" and job["progress"] and job["progress"]["done"] >= 2:
            return job
        time.sleep(0.05)
    raise AssertionError(f"job {job_id} made no progress in {timeout} s")


def image_of(response) -> Image.Image:
    return Image.open(io.BytesIO(response.content))


def detail(response) -> str:
    return response.json()["detail"]


# -- the happy path --------------------------------------------------------------------------------


def test_a_job_runs_and_its_result_gif_frames_and_inputs_can_be_fetched(serve, photo, painting, tmp_path):
    with serve() as client:
        job = create(client, photo, painting, settings={"seed": 3, "style_weight": 50})
        assert job["status"] in ("queued", "running")
        assert job["settings"]["style_weight"] == 50 and job["settings"]["size"] == 48
        assert not {"weights", "device", "precision"} & set(job["settings"])  # the server's own business
        done = wait(client, job["id"])
        assert done["status"] == "done", done["error"]
        assert done["progress"]["done"] == done["progress"]["total"] == 6
        assert set(done["losses"]) >= {"content", "style", "total"}
        assert done["notes"] == []  # a photo without a flat background: nothing decided to tell

        result = client.get(done["links"]["result"])
        assert result.status_code == 200 and result.headers["content-type"] == "image/png"
        assert image_of(result).size == (48, 40)  # the photo's aspect, long side 48
        download = client.get(done["links"]["result"] + "?download=1")
        assert "attachment" in download.headers["content-disposition"]

        gif = client.get(done["links"]["gif"])
        assert gif.headers["content-type"] == "image/gif" and image_of(gif).n_frames >= 2
        assert done["frames"] == 6  # every iteration, fewer of them than --gif-frames
        frame = client.get(f"/api/jobs/{job['id']}/frames/0")
        assert image_of(frame).size == (48, 40)
        assert client.get(f"/api/jobs/{job['id']}/frames/6").status_code == 404
        preview = client.get(done["links"]["preview"])
        assert preview.headers["content-type"] == "image/jpeg" and image_of(preview).format == "JPEG"
        stored = client.get(f"/api/jobs/{job['id']}/inputs/style-0")
        assert image_of(stored).size == (40, 48)

        listing = client.get("/api/jobs").json()
        assert [j["id"] for j in listing] == [job["id"]]

    folder = tmp_path / "data" / job["id"]
    assert sorted(p.name for p in folder.iterdir()) == ["content.png", "frames", "job.json", "progress.gif", "result.png", "style-0.png"]
    assert json.loads((folder / JOB_FILE).read_text())["status"] == "done"


def test_a_cut_out_photo_gives_a_cut_out_result(serve, photo, painting):
    rgba = np.asarray(Image.open(io.BytesIO(photo)).convert("RGBA")).copy()
    rgba[:, :12, 3] = 0  # the left quarter transparent
    buffer = io.BytesIO()
    Image.fromarray(rgba).save(buffer, format="PNG")
    with serve() as client:
        done = wait(client, create(client, buffer.getvalue(), painting)["id"])
        assert done["status"] == "done", done["error"]
        alpha = np.asarray(image_of(client.get(done["links"]["result"])).getchannel("A"))
        assert alpha.shape == (40, 48) and alpha[:, :10].max() == 0 and alpha[:, 14:].min() == 255
        # Painted as it looks on white, a quarter of one colour: the run frees it, and the job says so
        # in the words of a client sending JSON fields.
        [note] = done["notes"]
        assert "flat background" in note and "flat_content=1" in note and "--flat-content" not in note


def test_events_stream_the_job_until_it_finishes(serve, photo, painting):
    with serve() as client:
        job = create(client, photo, painting, settings={"iterations": 10})
        events = []
        with client.stream("GET", job["links"]["events"]) as stream:
            assert stream.headers["content-type"].startswith("text/event-stream")
            for line in stream.iter_lines():
                if line.startswith("data: "):
                    events.append(json.loads(line[len("data: "):]))
        assert events and events[-1]["status"] == "done"
        done = [e["progress"]["done"] for e in events if e["progress"]]
        assert done == sorted(done) and done[-1] == 10
        assert "result" in events[-1]["links"]


def test_blend_of_two_styles_and_settings_as_form_fields(serve, photo, painting):
    other = png_bytes(smooth_image(32, 32, seed=5))
    with serve() as client:
        response = client.post("/api/jobs", files=files(photo, painting, other),
                               data={"style_weights": "0.7,0.3", "size": "40", "preserve_color": "luminance",
                                     "style_layers": "fine"})  # fmt: skip
        assert response.status_code == 201, response.text
        job = response.json()
        assert [s["weight"] for s in job["styles"]] == [0.7, 0.3]
        assert job["settings"]["preserve_color"] == "luminance"
        assert job["settings"]["style_layers"] == ["conv1_1", "conv2_1", "conv3_1"]
        done = wait(client, job["id"])
        assert done["status"] == "done", done["error"]
        assert image_of(client.get(done["links"]["result"])).size == (40, 33)


def test_a_preset_from_the_form_applies_under_explicit_settings(serve, photo, painting):
    with serve() as client:
        job = create(client, photo, painting, expect=201, preset="fast", settings={"size": 40, "iterations": 2})
        # `fast` sets size 256 (two scales); the explicit size wins, so the run has one scale.
        assert job["request"]["preset"] == "fast" and job["settings"]["size"] == 40
        assert wait(client, job["id"])["status"] == "done"


# -- invalid input ---------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "data, message",
    [
        ({"settings": "{not json"}, "not valid JSON"),
        ({"settings": "[1, 2]"}, "must be a JSON object"),
        ({"settings": {"colour": "red"}}, "unknown setting 'colour'"),
        ({"settings": {"style_weigth": 5}}, "unknown setting 'style_weigth' (did you mean style_weight?)"),
        ({"settings": {"size": "big"}}, "size must be a whole number"),
        ({"settings": {"size": 12.5}}, "size must be a whole number"),
        ({"size": "abc"}, "size must be a whole number"),
        ({"settings": {"size": 8}}, "size must be at least 16"),
        ({"settings": {"size": 100000}}, "size must be at most 2048"),
        ({"settings": {"iterations": 10**6}}, "iterations must be at most 5000 on this server, not 1000000"),
        ({"settings": {"initial_iterations": 6000}}, "initial_iterations must be at most 5000 on this server, not 6000"),
        ({"settings": {"style_scale": 100}}, "style_scale must be at most 4 on this server"),
        ({"settings": {"style_weight": -1}}, "style_weight must be a non-negative number, not -1"),
        ({"settings": {"style_weight": "NaN"}}, "style_weight must be a finite number"),
        ({"settings": {"multiscale": "maybe"}}, "multiscale must be true or false"),
        ({"settings": {"style_layers": ["conv9_9"]}}, "unknown layer 'conv9_9'"),
        ({"settings": {"style_loss": "best"}}, "style_loss must be one of gram"),
        ({"settings": {"preserve_color": "sepia"}}, "preserve_color must be one of luminance"),
        ({"settings": {"weights": "/etc/passwd"}}, "weights is set by the server"),
        ({"settings": {"device": "cuda:7"}}, "device is set by the server"),
        ({"settings": {"precision": "fp16"}}, "precision is set by the server"),
        ({"settings": {"init": "/etc/passwd"}}, "init must be one of palette, content, noise, style"),
        ({"preset": "vangogh"}, "unknown preset 'vangogh'"),
        ({"style_weights": "1,2"}, "2 weights given for 1 style"),
        ({"style_weights": "-1"}, "at least one above 0"),
        ({"style_weights": "a lot"}, "give numbers"),
    ],
)
def test_bad_settings_get_a_422_with_a_clear_message(serve, photo, painting, data, message, tmp_path):
    with serve() as client:
        response = client.post("/api/jobs", files=files(photo, painting),
                               data={k: json.dumps(v) if isinstance(v, dict) else v for k, v in data.items()})  # fmt: skip
        assert response.status_code == 422
        assert message in detail(response)
        assert client.get("/api/jobs").json() == []
    assert list((tmp_path / "data").iterdir()) == []  # nothing half-made is left behind


def test_missing_files_too_many_styles_and_files_as_settings(serve, photo, painting):
    with serve(limits=Limits(max_styles=2)) as client:
        response = client.post("/api/jobs", files=[("style", ("s.png", painting, "image/png"))])
        assert response.status_code == 422 and "content: Field required" in detail(response)
        response = client.post("/api/jobs", files=[("content", ("c.png", photo, "image/png"))])
        assert response.status_code == 422 and "style: Field required" in detail(response)
        response = client.post("/api/jobs", files=files(photo, painting, painting, painting))
        assert response.status_code == 422 and "at most 2 style images" in detail(response)
        response = client.post("/api/jobs", files=files(photo, painting) + [("size", ("s.txt", b"256", "text/plain"))])
        assert response.status_code == 422 and "size: expected a value" in detail(response)


def test_large_inputs_are_stored_no_larger_than_a_job_can_use(serve, painting, tmp_path):
    wide = png_bytes(smooth_image(60, 120))
    with serve(limits=Limits(max_size=64, max_style_scale=1.5)) as client:
        response = client.post("/api/jobs", files=files(wide, wide))
        assert response.status_code == 201, response.text
        job = response.json()
        assert job["content"]["size"] == [64, 32] and job["styles"][0]["size"] == [96, 48]
        assert Image.open(tmp_path / "data" / job["id"] / "content.png").size == (64, 32)
        wait(client, job["id"])


def test_unknown_and_malformed_job_ids(serve):
    with serve() as client:
        assert client.get("/api/jobs/00000000-0000-4000-8000-000000000000").status_code == 404
        assert client.get("/api/jobs/not-a-uuid").status_code == 422
        assert client.get("/api/jobs/..%2F..%2Fetc%2Fpasswd/result").status_code in (404, 422)
        assert client.post("/api/jobs/00000000-0000-4000-8000-000000000000/cancel").status_code == 404
        response = client.get("/api/jobs/00000000-0000-4000-8000-000000000000/inputs/..%2Fjob")
        assert response.status_code in (404, 422)


def test_result_of_an_unfinished_job_is_404_and_a_running_job_cannot_be_deleted(serve, photo, painting):
    with serve() as client:
        job = create(client, photo, painting, settings={"iterations": 3000, "size": 32})
        wait_for_progress(client, job["id"])
        assert client.get(f"/api/jobs/{job['id']}/result").status_code == 404
        response = client.delete(f"/api/jobs/{job['id']}")
        assert response.status_code == 409 and "cancel it first" in detail(response)
        client.post(f"/api/jobs/{job['id']}/cancel")
        wait(client, job["id"])
        assert client.delete(f"/api/jobs/{job['id']}").status_code == 204
        assert client.get(f"/api/jobs/{job['id']}").status_code == 404


# -- hostile uploads -------------------------------------------------------------------------------


@pytest.mark.parametrize("max_pixels", [50_000_000, 10**12])  # ours refuses it, or Pillow's own guard does
def test_a_png_decompression_bomb_is_refused_before_decoding(serve, photo, max_pixels):
    bomb = png_bomb(100_000, 100_000)
    assert len(bomb) < 20_000
    with serve(max_pixels=max_pixels) as client:
        started = time.monotonic()
        response = client.post("/api/jobs", files=[("content", ("bomb.png", bomb, "image/png")), ("style", ("s.png", photo, "image/png"))])
        assert response.status_code == 413
        assert "Photo (bomb.png): " in detail(response) and "too many pixels" in detail(response)
        assert time.monotonic() - started < 5  # 10 Gpx were never decoded


def test_uploads_are_read_a_few_at_a_time_and_one_kept_waiting_too_long_gets_a_clear_503(serve, photo, painting, monkeypatch):
    # Each upload holds its decoded pictures until they are saved; unbounded, many at once
    # could hold gigabytes. Here one slot: a second upload waits its turn, or is told to retry.
    import threading

    from impasto.web import app as web_app

    real_decode = web_app.decode_upload
    go_on = threading.Event()
    lock = threading.Lock()
    inside, most = [0], [0]

    def slow_decode(*args: Any) -> Image.Image:
        with lock:
            inside[0] += 1
            most[0] = max(most[0], inside[0])
        try:
            go_on.wait(10)
            return real_decode(*args)
        finally:
            with lock:
                inside[0] -= 1

    def wait_until_decoding() -> None:
        deadline = time.monotonic() + 10
        while not inside[0]:
            assert time.monotonic() < deadline, "the first upload was never decoded"
            time.sleep(0.01)

    monkeypatch.setattr(web_app, "decode_upload", slow_decode)
    with serve(upload_slots=1, upload_wait=1.5) as client:
        statuses: list[int] = []

        def post() -> None:
            statuses.append(client.post("/api/jobs", files=files(photo, painting)).status_code)

        uploads = [threading.Thread(target=post) for _ in range(2)]
        uploads[0].start()
        wait_until_decoding()
        uploads[1].start()  # queued behind the first
        time.sleep(0.5)
        go_on.set()
        for upload in uploads:
            upload.join(30)
        assert statuses == [201, 201] and most[0] == 1

        go_on.clear()
        uploads = [threading.Thread(target=post)]
        uploads[0].start()
        wait_until_decoding()
        started = time.monotonic()
        refused = client.post("/api/jobs", files=files(photo, painting))  # kept waiting past upload_wait
        assert refused.status_code == 503 and refused.headers["retry-after"] == "30"
        assert detail(refused) == "the server is busy reading other uploads; try again in a minute"
        assert 1.4 < time.monotonic() - started < 8 and most[0] == 1
        go_on.set()
        uploads[0].join(30)
        assert statuses[-1] == 201
        for job in client.get("/api/jobs").json():
            wait(client, job["id"])


def test_pictures_between_pillows_guard_and_max_megapixels_are_accepted(serve, photo, painting, monkeypatch):
    # Pillow warns from its own limit (~89 Mpx) on: a server given --max-megapixels 120 refused a
    # 100 Mpx picture as over "the limit of 120 Mpx". Here Pillow's limit is made small instead.
    monkeypatch.setattr(Image, "MAX_IMAGE_PIXELS", 1_500)  # the photo (1920 px) is over it, under twice it
    with serve() as client:
        job = create(client, photo, painting)
        assert job["content"]["size"] == [48, 40]
        wait(client, job["id"])
    with serve(max_pixels=1_800) as client:  # the server's own limit still applies, with the picture's size
        response = client.post("/api/jobs", files=files(photo, painting))
        assert response.status_code == 413 and detail(response) == "Photo (photo.png): 48x40 has too many pixels (limit 1800 px)"


def test_serve_raises_pillows_guard_to_its_max_megapixels(monkeypatch, synthetic_weights, tmp_path):
    # Past twice its limit Pillow refuses a picture whatever the server allows: `impasto serve`
    # lifts it to --max-megapixels, and its own check of the size from the header stays first.
    import logging.config

    import uvicorn

    from impasto.web.uploads import allow_pixels

    monkeypatch.setattr(Image, "MAX_IMAGE_PIXELS", Image.MAX_IMAGE_PIXELS)  # put back after the test
    monkeypatch.setattr(logging.config, "dictConfig", lambda config: None)  # leave the test's logging alone
    monkeypatch.setattr(logging.getLogger("uvicorn.access"), "filters", [])
    monkeypatch.setattr(uvicorn.Server, "run", lambda self, *args, **kwargs: None)
    assert cli_main(["--max-megapixels", "200", "--port", str(free_port()), "--data-dir", str(tmp_path / "data"),
                     "--weights", str(synthetic_weights), "--device", "cpu"]) == 0  # fmt: skip
    assert Image.MAX_IMAGE_PIXELS == 200_000_000
    allow_pixels(50_000_000)  # a limit below Pillow's own never lowers it
    assert Image.MAX_IMAGE_PIXELS == 200_000_000


def test_serve_with_a_precision_its_cpu_emulates_says_so_at_the_start(monkeypatch, synthetic_weights, tmp_path):
    # Its jobs cannot change the precision (a server's own setting), so the one who starts it is told.
    import logging.config

    import uvicorn

    from impasto import device
    from impasto.errors import ImpastoWarning

    monkeypatch.setattr(Image, "MAX_IMAGE_PIXELS", Image.MAX_IMAGE_PIXELS)  # serve sets it
    monkeypatch.setattr(logging.config, "dictConfig", lambda config: None)
    monkeypatch.setattr(logging.getLogger("uvicorn.access"), "filters", [])
    monkeypatch.setattr(uvicorn.Server, "run", lambda self, *args, **kwargs: None)
    monkeypatch.setitem(device.NATIVE_CPU, "bf16", (lambda: False, "AVX512-BF16 or AMX"))
    monkeypatch.setattr(device, "_said_emulated", set())
    with pytest.warns(ImpastoWarning, match=r"no native bf16 .* is emulated"):
        assert cli_main(["--port", str(free_port()), "--data-dir", str(tmp_path / "data"), "--weights", str(synthetic_weights),
                         "--device", "cpu", "--precision", "bf16"]) == 0  # fmt: skip


def test_a_job_whose_record_cannot_be_written_leaves_nothing_and_says_why(serve, photo, painting, tmp_path, monkeypatch):
    import errno

    from impasto.web import jobs

    def disk_full(path, data):
        raise OSError(errno.ENOSPC, "No space left on device")

    with serve() as client:
        with monkeypatch.context() as full:
            full.setattr(jobs, "write_json_atomic", disk_full)
            response = client.post("/api/jobs", files=files(photo, painting))
        assert response.status_code == 507
        assert detail(response) == "the server could not store the job's files (No space left on device); see the server log"
        assert client.get("/api/jobs").json() == []
    # No folder of uploads without its record, which no start-up or clean-up would ever find.
    assert [p.name for p in (tmp_path / "data").iterdir() if not p.name.startswith(".")] == []


def test_a_second_server_on_the_same_data_folder_is_refused(monkeypatch, synthetic_weights, tmp_path):
    # It would mark the first one's running jobs interrupted, offer to delete them, and clean up
    # jobs it did not make.
    import logging.config

    import uvicorn

    monkeypatch.setattr(logging.config, "dictConfig", lambda config: None)
    monkeypatch.setattr(logging.getLogger("uvicorn.access"), "filters", [])
    monkeypatch.setattr(Image, "MAX_IMAGE_PIXELS", Image.MAX_IMAGE_PIXELS)
    options = ["--data-dir", str(tmp_path / "data"), "--weights", str(synthetic_weights), "--device", "cpu"]
    refused = []

    def second_server_while_the_first_runs(self, *args, **kwargs):
        with pytest.raises(ImpastoError) as info:
            cli_main(["--port", str(free_port()), *options])
        refused.append(str(info.value))

    monkeypatch.setattr(uvicorn.Server, "run", second_server_while_the_first_runs)
    assert cli_main(["--port", str(free_port()), *options]) == 0
    assert refused == [f"{tmp_path / 'data'}: another impasto serve keeps its jobs in this folder (process {os.getpid()}); "
                       "stop it, or give this server a folder of its own with --data-dir"]
    monkeypatch.setattr(uvicorn.Server, "run", lambda self, *args, **kwargs: None)
    assert cli_main(["--port", str(free_port()), *options]) == 0  # the folder is free once the first has stopped


def free_port() -> int:
    import socket

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def test_a_text_file_named_jpg_is_refused(serve, photo):
    with serve() as client:
        response = client.post("/api/jobs", files=[("content", ("photo.jpg", b"hello, I am text\n" * 20, "image/jpeg")),
                                                   ("style", ("s.png", photo, "image/png"))])  # fmt: skip
        assert response.status_code == 415
        assert detail(response).startswith("Photo (photo.jpg): not a picture")


def test_a_heic_photo_is_refused_with_advice_without_the_heic_extra(serve, photo, without_heic_extra):
    heic = b"\x00\x00\x00\x18ftypheic\x00\x00\x00\x00mif1heic" + bytes(64)  # how an iPhone's photo starts
    with serve() as client:
        response = client.post("/api/jobs", files=[("content", ("IMG_0001.HEIC", heic, "image/heic")),
                                                   ("style", ("s.png", photo, "image/png"))])  # fmt: skip
        assert response.status_code == 415
        assert detail(response).startswith("Photo (IMG_0001.HEIC): HEIC/HEIF pictures are not accepted; convert it to JPEG or PNG first")
        assert "HEIF" not in detail(response).split("accepted: ")[-1]


def test_a_heic_photo_is_accepted_with_the_heic_extra(serve, painting):
    heic = heic_bytes(smooth_image(40, 48))
    with serve() as client:
        response = client.post("/api/jobs", files=[("content", ("IMG_0001.HEIC", heic, "image/heic")),
                                                   ("style", ("s.png", painting, "image/png"))])  # fmt: skip
        assert response.status_code == 201, response.text
        # A damaged one is refused as not a picture, with HEIF among what is accepted.
        broken = heic[:24] + bytes(64)
        response = client.post("/api/jobs", files=[("content", ("IMG_0002.HEIC", broken, "image/heic")),
                                                   ("style", ("s.png", painting, "image/png"))])  # fmt: skip
        assert response.status_code in (400, 415) and "IMG_0002.HEIC" in detail(response), response.text


def test_other_formats_pillow_reads_are_refused_too(serve, photo):
    icon = png_bytes(smooth_image(32, 32), fmt="ICO")
    with serve() as client:
        response = client.post("/api/jobs", files=files(photo, icon))
        assert response.status_code == 415 and "Style picture 1 (style0.png): ICO pictures are not accepted" in detail(response)


def test_truncated_and_tiny_pictures_are_refused(serve, photo):
    tiny = png_bytes(smooth_image(4, 4))
    with serve() as client:
        response = client.post("/api/jobs", files=files(photo[: len(photo) // 2], photo))
        assert response.status_code == 400 and "damaged or truncated" in detail(response)
        response = client.post("/api/jobs", files=files(photo, tiny))
        assert response.status_code == 400 and "Style picture 1 (style0.png):" in detail(response) and "too small" in detail(response)
        response = client.post("/api/jobs", files=files(b"", photo))
        assert response.status_code == 400 and "Photo (photo.png): the file is empty" in detail(response)


def test_a_path_in_the_file_name_is_never_used_as_a_path(serve, photo, painting, tmp_path):
    names = ("../../../escaped.png", "..\\..\\C:\\Windows\\evil.png")
    with serve() as client:
        response = client.post("/api/jobs", files=files(photo, painting, names=names))
        assert response.status_code == 201, response.text
        job = response.json()
        assert job["content"]["name"] == "escaped.png" and job["styles"][0]["name"] == "evil.png"
        wait(client, job["id"])
    assert sorted(p.name for p in tmp_path.iterdir()) == ["data"]  # nothing landed beside the data dir
    assert [p.name for p in (tmp_path / "data").iterdir()] == [job["id"]]
    assert not list(tmp_path.rglob("escaped*")) and not list(tmp_path.rglob("evil*"))


def test_oversize_uploads_are_refused(serve, photo, painting):
    noisy = png_bytes(np.random.default_rng(0).uniform(size=(64, 64, 3)))
    assert len(noisy) > 5000
    with serve(max_upload_bytes=5000) as client:
        response = client.post("/api/jobs", files=files(photo, noisy))
        assert response.status_code == 413 and "Style picture 1 (style0.png): the file is larger than the limit of 5000 bytes" in detail(response)
        # A body larger than every file allowed together is cut off before it is stored.
        response = client.post("/api/jobs", files=files(photo, painting), data={"settings": " " * 200_000 + "{}"})
        assert response.status_code == 413 and "the request is larger than the limit" in detail(response)
        response = client.post("/api/jobs", content=b"x" * 10, headers={"content-length": "999999999", "content-type": "multipart/form-data; boundary=x"})
        assert response.status_code == 413
        assert client.get("/api/jobs").json() == []


# -- cancel ----------------------------------------------------------------------------------------


def test_cancel_a_running_job_keeps_the_best_picture_so_far(serve, photo, painting):
    with serve() as client:
        job = create(client, photo, painting, settings={"iterations": 3000, "size": 32})
        running = wait_for_progress(client, job["id"])
        response = client.post(f"/api/jobs/{job['id']}/cancel")
        assert response.status_code == 200
        cancelled = wait(client, job["id"], timeout=30)
        assert cancelled["status"] == "cancelled" and cancelled["partial"] is True and cancelled["stopped_reason"] == "cancelled"
        assert running["progress"]["done"] <= cancelled["progress"]["done"] < 3000
        assert image_of(client.get(cancelled["links"]["result"])).size == (32, 27)


def test_cancel_a_queued_job_means_it_never_runs(serve, photo, painting):
    with serve(workers=1) as client:
        first = create(client, photo, painting, settings={"iterations": 3000, "size": 32})
        second = create(client, photo, painting)
        wait_for_progress(client, first["id"])
        assert client.get(f"/api/jobs/{second['id']}").json()["status"] == "queued"
        assert client.post(f"/api/jobs/{second['id']}/cancel").json()["status"] == "cancelled"
        client.post(f"/api/jobs/{first['id']}/cancel")
        wait(client, first["id"])
        time.sleep(0.3)  # the worker has taken the cancelled job off the queue by now
        second = client.get(f"/api/jobs/{second['id']}").json()
        assert second["status"] == "cancelled" and second["started"] is None and not second["result"]


# -- restarts --------------------------------------------------------------------------------------


def test_a_restart_keeps_finished_results_and_marks_cut_short_jobs_interrupted(serve, photo, painting, tmp_path):
    data = tmp_path / "data"
    with serve() as client:
        finished = wait(client, create(client, photo, painting)["id"])
        result_before = client.get(finished["links"]["result"]).content
        crashed = create(client, photo, painting, settings={"iterations": 3000, "size": 32})
        wait_for_progress(client, crashed["id"])
        stopped = create(client, photo, painting)  # still queued when the server stops
    # Leaving the client shut the server down cleanly: the running job stopped with its best picture.
    on_disk = json.loads((data / crashed["id"] / JOB_FILE).read_text())
    assert on_disk["status"] == "interrupted" and on_disk["partial"] is True
    # And a crash (kill -9) leaves a job.json that still says "running".
    write_json_atomic(data / crashed["id"] / JOB_FILE, dict(on_disk, status="running", result=False))

    with serve() as client:
        jobs = {j["id"]: j for j in client.get("/api/jobs").json()}
        assert jobs[finished["id"]]["status"] == "done"
        assert client.get(finished["links"]["result"]).content == result_before
        for job_id in (crashed["id"], stopped["id"]):
            assert jobs[job_id]["status"] == "interrupted"
            assert "server stopped" in jobs[job_id]["error"]
        # A re-run of an interrupted job is a new job from its inputs; the interrupted one stays as it was.
        response = client.post(f"/api/jobs/{stopped['id']}/rerun")
        assert response.status_code == 202 and response.json()["status"] in ("queued", "running")
        assert response.json()["rerun_of"] == stopped["id"]
        rerun = wait(client, response.json()["id"])
        assert rerun["status"] == "done" and rerun["error"] is None and rerun["settings"]["size"] == 48
        assert image_of(client.get(rerun["links"]["result"])).size == (48, 40)
        assert client.get(f"/api/jobs/{stopped['id']}").json()["status"] == "interrupted"
        # The long one runs again with the settings it asked for (and is cancelled: it is long).
        response = client.post(f"/api/jobs/{crashed['id']}/rerun")
        assert response.status_code == 202
        again = wait_for_progress(client, response.json()["id"])
        assert again["settings"]["size"] == 32 and again["progress"]["total"] == 3000 and not again["result"]
        client.post(f"/api/jobs/{again['id']}/cancel")
        assert wait(client, again["id"])["status"] == "cancelled"
        response = client.post(f"/api/jobs/{finished['id']}/rerun")
        assert response.status_code == 202
        assert wait(client, response.json()["id"])["status"] == "done"
        assert client.get(finished["links"]["result"]).content == result_before


def test_a_rerun_the_restarted_server_would_refuse_keeps_the_old_result(serve, photo, painting, base_settings):
    with serve() as client:
        done = wait(client, create(client, photo, painting, settings={"size": 40})["id"])
    with serve(limits=Limits(max_size=36), base_settings=dict(base_settings, size=32)) as client:
        response = client.post(f"/api/jobs/{done['id']}/rerun")
        assert response.status_code == 422 and "size must be at most 36" in detail(response)
        job = client.get(f"/api/jobs/{done['id']}").json()
        assert job["status"] == "done" and client.get(done["links"]["result"]).status_code == 200


def fake_finished_job(data: Path, job_id: str, finished: float, status: str = "done") -> None:
    folder = data / job_id
    folder.mkdir(parents=True)
    Image.new("RGB", (16, 16)).save(folder / "content.png")
    write_json_atomic(folder / JOB_FILE, {
        "id": job_id, "status": status, "created": finished - 10, "finished": finished, "request": {}, "settings": {},
        "content": {"file": "content.png", "name": "c.png", "size": [16, 16]}, "styles": [],
    })  # fmt: skip


def test_old_jobs_are_cleaned_up_by_age_and_by_count(serve, tmp_path):
    data = tmp_path / "data"
    now = time.time()
    ids = [f"00000000-0000-4000-8000-00000000000{i}" for i in range(6)]
    ages_days = [30, 10, 3, 2, 1, 0.5]
    for job_id, age in zip(ids, ages_days):
        fake_finished_job(data, job_id, now - age * 86400)
    fake_finished_job(data, "00000000-0000-4000-8000-00000000000a", now - 90 * 86400, status="running")  # cut short
    (data / "not-a-job").mkdir()
    with serve(keep_days=7, keep_jobs=3) as client:
        kept = {j["id"] for j in client.get("/api/jobs").json()}
    # 30 and 10 days are too old; of the rest, the 3 newest finished stay. The job found running
    # becomes interrupted, finished now, so it counts as the newest.
    assert kept == {"00000000-0000-4000-8000-00000000000a", ids[4], ids[5]}
    assert sorted(p.name for p in data.iterdir()) == sorted(kept | {"not-a-job"})


# -- access ----------------------------------------------------------------------------------------


def test_a_token_protects_the_api_but_not_the_page(serve):
    with serve(token="s3cret") as client:
        response = client.get("/api/jobs")
        assert response.status_code == 401 and "token" in detail(response)
        assert client.get("/api/jobs", headers={"Authorization": "Bearer wrong"}).status_code == 401
        assert client.get("/api/jobs", headers={"Authorization": "Bearer s3cret"}).status_code == 200
        assert client.get("/api/jobs?token=s3cret").status_code == 200
        assert client.post("/api/jobs").status_code == 401  # before any parsing
        assert client.get("/").status_code == 200 and client.get("/static/app.js").status_code == 200
        schema = client.get("/openapi.json").json()
        assert "/api/jobs" in schema["paths"] and "/api/jobs/{job_id}/events" in schema["paths"]


def test_the_openapi_schema_documents_the_api(serve):
    with serve() as client:
        schema = client.get("/openapi.json").json()
        assert {"/api/jobs", "/api/jobs/{job_id}", "/api/jobs/{job_id}/events", "/api/jobs/{job_id}/result",
                "/api/jobs/{job_id}/progress.gif", "/api/jobs/{job_id}/cancel", "/api/jobs/{job_id}/rerun",
                "/api/options"} <= set(schema["paths"])  # fmt: skip
        assert "JobView" in schema["components"]["schemas"]
        assert client.get("/docs").status_code == 200


def test_foreign_host_headers_and_cross_site_posts_are_refused(serve, photo, painting):
    with serve() as client:
        assert client.get("/api/jobs", headers={"host": "evil.example"}).status_code == 400  # DNS rebinding
        response = client.post("/api/jobs", files=files(photo, painting), headers={"origin": "http://evil.example"})
        assert response.status_code == 403 and "cross-site" in detail(response)
        assert client.get("/api/jobs").json() == []


def test_non_loopback_hosts_are_refused_unless_allowed(capsys):
    assert is_loopback("127.0.0.1") and is_loopback("localhost") and is_loopback("::1") and is_loopback("127.0.0.2")
    assert not is_loopback("0.0.0.0") and not is_loopback("192.168.1.20") and not is_loopback("::")
    with pytest.raises(ImpastoError, match="refusing to listen on 0.0.0.0.*--allow-remote"):
        cli_main(["--host", "0.0.0.0"])
    assert check_host("0.0.0.0", allow_remote=True) is False
    assert cli.main(["serve", "--host", "192.168.1.20", "--port", "1"]) == 2
    assert "impasto: error: refusing to listen on 192.168.1.20" in capsys.readouterr().err


def test_serve_says_which_extra_is_missing(monkeypatch, capsys):
    import sys

    monkeypatch.setitem(sys.modules, "uvicorn", None)  # as if it were not installed
    assert cli.main(["serve"]) == 2
    assert "pip install 'impasto[web]'" in capsys.readouterr().err


def test_serve_says_at_start_when_the_first_job_would_download_the_network(monkeypatch, tmp_path, synthetic_weights):
    from impasto import ImpastoWarning
    from impasto.web import check_weights_at_hand

    monkeypatch.delenv("IMPASTO_WEIGHTS", raising=False)
    monkeypatch.setenv("IMPASTO_HOME", str(tmp_path / "empty-home"))
    monkeypatch.setenv("TORCH_HOME", str(tmp_path / "empty-torch"))
    with pytest.warns(ImpastoWarning, match=r"no vgg19 weights here yet: the first job will download them \(https://.*vgg19.*restart with --weights PATH"):
        check_weights_at_hand({})
    monkeypatch.setenv("IMPASTO_WEIGHTS", str(synthetic_weights))
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        check_weights_at_hand({})  # found: nothing to say
    # A path that is not there is no download to come: the server refuses to start.
    monkeypatch.setenv("IMPASTO_WEIGHTS", str(tmp_path / "gone"))
    with pytest.raises(ImpastoError, match=r"^\$IMPASTO_WEIGHTS .*gone: no such file or folder$"):
        check_weights_at_hand({})


def test_bad_server_options_fail_at_start(capsys, synthetic_weights, tmp_path):
    assert cli.main(["serve", "--workers", "0", "--data-dir", str(tmp_path)]) == 2
    assert "--workers must be at least 1" in capsys.readouterr().err
    assert cli.main(["serve", "--style-loss", "best", "--data-dir", str(tmp_path)]) == 2
    assert "style-loss must be one of" in capsys.readouterr().err
    for flag in ("--max-upload-mb", "--max-megapixels"):  # inf was a traceback from int(inf)
        assert cli.main(["serve", flag, "inf", "--data-dir", str(tmp_path)]) == 2
        assert "must be positive numbers" in capsys.readouterr().err
    # A server whose every job would fail on its weights is not started.
    assert cli.main(["serve", "--weights", str(tmp_path / "none.pth"), "--data-dir", str(tmp_path)]) == 2
    assert "none.pth: no such file or folder" in capsys.readouterr().err
    for option in ("--keep-days", "--keep-jobs"):  # 0 deleted each result as its job ended
        assert cli.main(["serve", option, "0", "--data-dir", str(tmp_path)]) == 2
        assert "--keep-days must be above 0 and --keep-jobs at least 1" in capsys.readouterr().err


def test_a_job_record_that_cannot_be_saved_fails_that_job_not_the_worker(serve, photo, painting):
    # A full disk when the worker marks a job running used to end its thread: every later job waited for good.
    with serve() as client:
        manager = client.app.state.manager
        real_save = manager.store.save
        failed_once = []

        def save(job):
            if job["status"] == "running" and not failed_once:
                failed_once.append(job["id"])
                raise OSError(28, "No space left on device")
            real_save(job)

        manager.store.save = save
        first = create(client, photo, painting, settings={"iterations": 2, "size": 32})
        broken = wait(client, first["id"])
        assert broken["status"] == "failed" and "No space left on device" in broken["error"]
        second = create(client, photo, painting, settings={"iterations": 2, "size": 32})
        assert wait(client, second["id"])["status"] == "done"


def test_a_rerun_is_a_new_job_with_the_changes_asked_and_the_old_result_is_kept(serve, photo, painting, tmp_path):
    other = png_bytes(smooth_image(32, 32, seed=5))
    with serve() as client:
        response = client.post("/api/jobs", files=files(photo, painting, other),
                               data={"settings": json.dumps({"seed": 3, "iterations": 2, "size": 32}), "style_weights": "0.7,0.3"})  # fmt: skip
        first = wait(client, response.json()["id"])
        result_before = client.get(first["links"]["result"]).content
        files_before = sorted(p.name for p in (tmp_path / "data" / first["id"]).rglob("*"))

        response = client.post(f"/api/jobs/{first['id']}/rerun", json={"settings": {"seed": 5, "iterations": 3000}})
        assert response.status_code == 202, response.text
        second = response.json()
        assert second["id"] != first["id"] and second["rerun_of"] == first["id"]
        assert second["settings"]["seed"] == 5 and second["settings"]["size"] == 32  # the rest as the first job asked
        assert [s["weight"] for s in second["styles"]] == [0.7, 0.3]
        assert [s["name"] for s in second["styles"]] == [s["name"] for s in first["styles"]]
        wait_for_progress(client, second["id"])
        client.post(f"/api/jobs/{second['id']}/cancel")
        assert wait(client, second["id"])["status"] == "cancelled"
        # The first job is untouched: its picture, its files, its record.
        assert client.get(first["links"]["result"]).content == result_before
        assert sorted(p.name for p in (tmp_path / "data" / first["id"]).rglob("*")) == files_before
        assert client.get(f"/api/jobs/{first['id']}").json()["status"] == "done"

        # No body: the same settings again. Weights and the preset may be changed too.
        same = client.post(f"/api/jobs/{first['id']}/rerun").json()
        assert same["settings"] == first["settings"] and same["request"] == first["request"]
        client.post(f"/api/jobs/{same['id']}/cancel")
        changed = client.post(f"/api/jobs/{first['id']}/rerun", json={"preset": "fast", "style_weights": [0, 1],
                                                                       "settings": {"iterations": 2}}).json()  # fmt: skip
        assert changed["request"]["preset"] == "fast" and [s["weight"] for s in changed["styles"]] == [0, 1]
        assert changed["settings"]["size"] == 32  # the first job's explicit size still wins over the preset's
        assert wait(client, changed["id"])["status"] == "done"
        # A deleted first job leaves its re-runs whole (they share no file that can vanish).
        assert client.delete(f"/api/jobs/{first['id']}").status_code == 204
        assert client.get(f"/api/jobs/{changed['id']}/result").status_code == 200
        assert client.get(f"/api/jobs/{changed['id']}/inputs/style-1").status_code == 200
        response = client.post(f"/api/jobs/{first['id']}/rerun")
        assert response.status_code == 404
        response = client.post(f"/api/jobs/{changed['id']}/rerun", json={"style_weights": [0, 0]})
        assert response.status_code == 422 and "at least one above 0" in detail(response)


def test_a_queued_job_says_how_many_jobs_are_ahead_of_it(serve, photo, painting):
    with serve(workers=1) as client:
        first = create(client, photo, painting, settings={"iterations": 3000, "size": 32})
        second = create(client, photo, painting, settings={"iterations": 2, "size": 32})
        third = create(client, photo, painting, settings={"iterations": 2, "size": 32})
        wait_for_progress(client, first["id"])
        assert client.get(f"/api/jobs/{first['id']}").json()["ahead"] is None
        assert client.get(f"/api/jobs/{second['id']}").json()["ahead"] == 1
        assert client.get(f"/api/jobs/{third['id']}").json()["ahead"] == 2
        client.post(f"/api/jobs/{second['id']}/cancel")
        assert client.get(f"/api/jobs/{third['id']}").json()["ahead"] == 1
        client.post(f"/api/jobs/{first['id']}/cancel")
        assert wait(client, third["id"])["status"] == "done"


def test_downloads_are_named_after_the_pictures(serve, photo, painting):
    with serve() as client:
        response = client.post("/api/jobs", files=files(photo, painting, names=("Café déjà vu.jpg", "The Scream (1893).png")),
                               data={"settings": json.dumps({"iterations": 2, "size": 32})})  # fmt: skip
        done = wait(client, response.json()["id"])
        short = done["id"][:8]
        disposition = client.get(done["links"]["result"] + "?download=1").headers["content-disposition"]
        assert disposition == f'attachment; filename="impasto-Cafe-deja-vu-The-Scream-1893-{short}.png"'
        disposition = client.get(done["links"]["gif"] + "?download=1").headers["content-disposition"]
        assert disposition == f'attachment; filename="impasto-Cafe-deja-vu-The-Scream-1893-{short}.gif"'


def test_a_photo_too_long_and_narrow_for_the_size_is_refused_at_once_in_the_pages_words(serve, painting, tmp_path):
    strip = png_bytes(smooth_image(24, 480))  # 20:1, at 48 px: 48x2
    with serve() as client:
        response = client.post("/api/jobs", files=files(strip, painting, names=("strip.png", "s.png")))
        assert response.status_code == 422
        assert detail(response).startswith("Photo (strip.png): at a Size of 48 px the picture would be 48×2 px")
        assert "--size" not in detail(response) and "choose a larger Size" in detail(response)
        assert client.get("/api/jobs").json() == []
        # A re-run asking for a smaller size is checked the same way.
        photo = png_bytes(smooth_image(20, 60))  # 3:1: 48x16 at 48 px, 32x11 at 32
        job = create(client, photo, painting, settings={"iterations": 2})
        response = client.post(f"/api/jobs/{job['id']}/rerun", json={"settings": {"size": 64}})
        assert response.status_code == 202
        response = client.post(f"/api/jobs/{job['id']}/rerun", json={"settings": {"size": 32}})
        assert response.status_code == 422 and "Photo (photo.png): at a Size of 32 px" in detail(response)
        for listed in client.get("/api/jobs").json():
            wait(client, listed["id"])
    assert len(list((tmp_path / "data").iterdir())) == 2


def test_the_options_say_where_jobs_run(serve):
    with serve() as client:
        assert client.get("/api/options").json()["device"] == "cpu"


def test_a_rerun_whose_record_cannot_be_saved_leaves_no_folder_behind(serve, photo, painting, tmp_path):
    with serve() as client:
        first = wait(client, create(client, photo, painting, settings={"iterations": 2, "size": 32})["id"])
        manager = client.app.state.manager

        def disk_full(job):
            raise OSError(28, "No space left on device")

        manager.store.save = disk_full
        with pytest.raises(OSError):
            manager.rerun(first["id"], first["request"], first["settings"], [s["weight"] for s in first["styles"]])
        # Only the first job's folder: a folder without its record is one no start-up or clean-up finds.
        assert [p.name for p in (tmp_path / "data").iterdir() if p.is_dir()] == [first["id"]]
