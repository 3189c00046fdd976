"""End to end: `impasto serve` in a child process, its page driven in headless Chromium,
and the process stopped with Ctrl-C in the middle of a job.

Uses Debian's chromium (/usr/bin/chromium; `.ci/run` installs it) through Playwright's
Python API, never a downloaded browser. The screenshot of the finished page is kept
in tests/artifacts/ (ignored by git) and its path printed.
"""

from __future__ import annotations

import base64
import json
import os
import signal
import socket
import subprocess
import sys
import time
import http.client
from pathlib import Path
from typing import Iterator

import pytest

from conftest import FAST_CONTENT_LAYERS, FAST_STYLE_LAYERS, impasto_command, smooth_image, textured_image, write_png

CHROMIUM = Path("/usr/bin/chromium")
ARTIFACTS = Path(__file__).resolve().parent / "artifacts"
CHROMIUM_ARGS = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
                 "--disable-background-networking", "--disable-component-update", "--disable-sync"]  # fmt: skip


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def wait_until_up(port: int, path: str, server: subprocess.Popen, timeout: float = 60) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if server.poll() is not None:
            raise AssertionError(f"impasto serve exited with {server.returncode}: {server.stderr.read()}")
        # http.client, not urllib: conftest switches urllib off so no test reaches the network.
        connection = http.client.HTTPConnection("127.0.0.1", port, timeout=2)
        try:
            connection.request("GET", path)
            if connection.getresponse().status == 200:
                return
        except OSError:
            time.sleep(0.2)
        finally:
            connection.close()
    raise AssertionError(f"impasto serve did not answer on port {port} in {timeout} s")


@pytest.fixture
def server(serve_process) -> Iterator[str]:
    process, url = serve_process()
    yield url


TOKEN = "page-test-token"


@pytest.fixture
def serve_process(tmp_path, synthetic_weights):
    """serve_process() -> (process, url): `impasto serve` as a user starts it, small synthetic-weight runs its defaults."""
    started: list[subprocess.Popen] = []

    def start(*extra: str) -> tuple[subprocess.Popen, str]:
        process, url = launch(tmp_path, synthetic_weights, extra)
        started.append(process)
        return process, url

    yield start
    for process in started:
        if process.poll() is None:
            process.terminate()
            try:
                process.wait(timeout=20)
            except subprocess.TimeoutExpired:
                process.kill()
                process.wait()


def launch(tmp_path: Path, synthetic_weights: Path, extra: tuple[str, ...] = ()) -> tuple[subprocess.Popen, str]:
    port = free_port()
    command = impasto_command() + [
        "serve", "--port", str(port), "--data-dir", str(tmp_path / "data"),
        "--weights", str(synthetic_weights), "--device", "cpu", "--size", "48", "--min-size", "32",
        "--initial-iterations", "8", "--iterations", "4",
        "--style-layers", ",".join(FAST_STYLE_LAYERS), "--content-layers", ",".join(FAST_CONTENT_LAYERS), *extra,
    ]  # fmt: skip
    env = dict(os.environ, OMP_NUM_THREADS="1", IMPASTO_HOME=str(tmp_path / "home"))
    env.pop("IMPASTO_TOKEN", None)
    process = subprocess.Popen(command, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=env)
    try:
        wait_until_up(port, "/", process)
    except AssertionError:
        process.kill()
        raise
    return process, f"http://127.0.0.1:{port}/"


@pytest.fixture
def browser():
    if not CHROMIUM.exists():
        pytest.skip(f"{CHROMIUM} is absent (Debian: apt-get install chromium; .ci/run installs it)")
    sync_api = pytest.importorskip("playwright.sync_api", reason="playwright is not installed (pip install -e '.[dev]')")
    with sync_api.sync_playwright() as playwright:
        browser = playwright.chromium.launch(executable_path=str(CHROMIUM), args=CHROMIUM_ARGS, headless=True)
        try:
            yield browser
        finally:
            browser.close()


def wait_until(page, predicate: str, timeout: float = 30.0) -> None:
    """Poll a JS function until it returns true.

    Not page.wait_for_function: with a string it re-evaluates the string with eval() when
    the first try is false, which the page's own policy (script-src 'self') forbids, so it
    failed or passed by timing. page.evaluate calls the function without eval().
    """
    deadline = time.monotonic() + timeout
    while not page.evaluate(predicate):
        if time.monotonic() > deadline:
            raise AssertionError(f"still false after {timeout:g} s: {predicate}")
        time.sleep(0.05)


def drop_file(page, selector: str, path: Path) -> None:
    """Drop a file on an element, as a drag from the desktop does."""
    data = base64.b64encode(path.read_bytes()).decode()
    transfer = page.evaluate_handle(
        """([name, data]) => {
            const bytes = Uint8Array.from(atob(data), (c) => c.charCodeAt(0));
            const transfer = new DataTransfer();
            transfer.items.add(new File([bytes], name, { type: "image/png" }));
            return transfer;
        }""",
        [path.name, data],
    )
    page.dispatch_event(selector, "drop", {"dataTransfer": transfer})


def test_the_page_paints_a_picture_from_two_uploads(serve_process, browser, tmp_path):
    # With a token, as on a server others can reach: the page passes it on its requests,
    # its event stream and its pictures.
    _, server = serve_process("--token", TOKEN)
    photo = write_png(tmp_path / "photo.png", smooth_image(48, 64))
    painting = write_png(tmp_path / "painting.png", textured_image(56, 48))
    page = browser.new_page(viewport={"width": 1280, "height": 900})
    problems: list[str] = []
    page.on("pageerror", lambda error: problems.append(f"page error: {error}"))
    page.on("console", lambda msg: problems.append(f"console: {msg.text}") if msg.type == "error" else None)

    page.goto(server + "?token=" + TOKEN)
    wait_until(page, "() => document.getElementById('size').value !== ''")
    assert page.input_value("#size") == "48"  # the server's own --size is the page's default
    assert "token" not in page.url  # kept for the tab, not left in the address bar

    page.set_input_files("#content-input", str(photo))  # chosen in the file dialog
    drop_file(page, "#style-drop", painting)  # dragged onto the page
    assert page.is_visible("#content-thumb")
    assert page.locator("#style-list li").count() == 1
    page.fill("#seed", "7")
    page.click("#start")

    try:
        page.wait_for_selector("#status[data-status=done]", timeout=60_000)
    except Exception:
        ARTIFACTS.mkdir(exist_ok=True)
        page.screenshot(path=str(ARTIFACTS / "web-page-failed.png"), full_page=True)
        status = page.inner_text("#status")
        message = page.inner_text("#message") if page.is_visible("#message") else ""
        raise AssertionError(f"no result; status {status!r}, message {message!r}, {problems}; see {ARTIFACTS}") from None
    picture = page.locator("#picture")
    wait_until(
        page,
        "() => { const img = document.getElementById('picture');"
        " return img.complete && img.naturalWidth > 0 && img.src.includes('/result'); }",
    )
    assert picture.evaluate("img => [img.naturalWidth, img.naturalHeight]") == [48, 36]
    assert page.is_visible("#download") and "download=1" in page.get_attribute("#download", "href")
    assert page.is_visible("#download-gif")
    page.wait_for_selector("#jobs li[data-status=done]")
    jobs = page.request.get(server + "api/jobs", headers={"Authorization": f"Bearer {TOKEN}"}).json()
    assert len(jobs) == 1 and jobs[0]["settings"]["seed"] == 7 and jobs[0]["settings"]["style_weight"] == 30
    assert [s["name"] for s in jobs[0]["styles"]] == ["painting.png"]
    assert page.locator("#progress").evaluate("p => p.value === p.max && p.max > 0")

    ARTIFACTS.mkdir(exist_ok=True)
    shot = ARTIFACTS / "web-page.png"
    page.screenshot(path=str(shot), full_page=True)
    print(f"\nscreenshot of the finished page: {shot}", file=sys.stderr)
    assert not problems, problems


def test_a_bad_upload_shows_the_servers_message(server, browser, tmp_path):
    text = tmp_path / "notes.jpg"
    text.write_text("not a picture\n" * 10)
    painting = write_png(tmp_path / "painting.png", textured_image(56, 48))
    page = browser.new_page()
    page.goto(server)
    wait_until(page, "() => document.getElementById('size').value !== ''")
    # The chooser takes any file; the server decides from the contents, not the name.
    page.set_input_files("#content-input", {"name": "notes.jpg", "mimeType": "image/jpeg", "buffer": text.read_bytes()})
    page.set_input_files("#style-input", str(painting))
    page.click("#start")
    message = page.locator("#message")
    message.wait_for(state="visible")
    assert message.inner_text().startswith("content: not a picture")


def test_ctrl_c_in_the_middle_of_a_job_stops_at_once_and_a_restart_marks_it_interrupted(serve_process, tmp_path):
    httpx = pytest.importorskip("httpx")
    photo = write_png(tmp_path / "photo.png", smooth_image(40, 48))
    painting = write_png(tmp_path / "painting.png", textured_image(48, 40))
    process, url = serve_process()
    with httpx.Client(base_url=url, timeout=30) as client:
        files = [("content", ("p.png", photo.read_bytes(), "image/png")), ("style", ("s.png", painting.read_bytes(), "image/png"))]
        job = client.post("/api/jobs", files=files, data={"settings": json.dumps({"initial_iterations": 5000})}).json()
        deadline = time.monotonic() + 60
        while (client.get(f"/api/jobs/{job['id']}").json()["progress"] or {}).get("done", 0) < 2:
            assert time.monotonic() < deadline, "the job never started"
            time.sleep(0.1)
        # An open page follows the job: its event stream must not hold the server up.
        with client.stream("GET", job["links"]["events"]) as events:
            next(events.iter_lines())
            process.send_signal(signal.SIGINT)
            started = time.monotonic()
            code = process.wait(timeout=30)
        seconds = time.monotonic() - started
    log = process.stderr.read()
    assert code == 130 and seconds < 10, (code, seconds, log[-2000:])  # 130: Ctrl-C, as for every impasto command
    assert "Traceback" not in log, log[-3000:]
    on_disk = json.loads((tmp_path / "data" / job["id"] / "job.json").read_text())
    assert on_disk["status"] == "interrupted" and on_disk["partial"] is True and on_disk["progress"]["done"] < 5000

    process, url = serve_process()
    with httpx.Client(base_url=url, timeout=30) as client:
        again = client.get(f"/api/jobs/{job['id']}").json()
        assert again["status"] == "interrupted"
        assert client.get(again["links"]["result"]).headers["content-type"] == "image/png"
