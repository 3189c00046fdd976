"""`impasto serve`: a local web page and HTTP API to stylise pictures (needs `impasto[web]`).

    impasto serve [--host 127.0.0.1] [--port 8000] [--data-dir DIR] [--workers N] [--token T]

The app itself is in app.py, the job queue in jobs.py; this module is the command,
and imports FastAPI and uvicorn only when it runs.
"""

from __future__ import annotations

import argparse
import ipaddress
import logging
import math
import os
import re
import secrets
import socket
import sys
from pathlib import Path
from typing import Any, Optional, Sequence

from ..errors import ImpastoError, command_line
from ..locks import FolderLock

WEB_HINT = "pip install 'impasto[web]'"
DEFAULT_PORT = 8000
LOOPBACK_NAMES = ("localhost",)


def build_parser() -> argparse.ArgumentParser:
    from ..cli import Parser, add_settings_arguments

    p = Parser(
        prog="impasto serve",
        description="Serve a web page and an HTTP API to paint photos in the style of artworks. Jobs run one at a "
        "time (see --workers) and are kept in --data-dir across restarts. The API is described at /docs.",
        formatter_class=argparse.RawDescriptionHelpFormatter,
        epilog="examples:\n  impasto serve                                  # http://127.0.0.1:8000/\n"
        "  impasto serve --port 8080 --size 256           # smaller pictures by default\n"
        "  impasto serve --host 0.0.0.0 --allow-remote --token SECRET   # reachable from other machines",
    )
    p.add_argument("--host", default="127.0.0.1", help="address to listen on (default: 127.0.0.1, this machine only)")
    p.add_argument("--port", type=int, default=DEFAULT_PORT, help=f"port (default: {DEFAULT_PORT})")
    p.add_argument("--allow-remote", action="store_true",
                   help="allow a --host other machines can reach; a token is then required (--token, $IMPASTO_TOKEN, "
                   "or a random one printed at start)")  # fmt: skip
    p.add_argument("--token", help="require this token from every API client (default: $IMPASTO_TOKEN, if set)")
    p.add_argument("--data-dir", type=Path, help="where jobs and results are kept (default: $IMPASTO_HOME/web, "
                   "i.e. ~/.cache/impasto/web)")  # fmt: skip
    p.add_argument("--workers", type=int, default=1, help="jobs run at the same time (default: 1)")
    p.add_argument("--keep-days", type=float, default=7.0, metavar="DAYS",
                   help="delete finished jobs older than this many days (default: 7)")  # fmt: skip
    p.add_argument("--keep-jobs", type=int, default=200, metavar="N", help="keep at most this many finished jobs (default: 200)")
    p.add_argument("--max-upload-mb", type=float, default=25.0, metavar="MB", help="largest accepted file (default: 25)")
    p.add_argument("--max-megapixels", type=float, default=50.0, metavar="MPX", help="largest accepted picture (default: 50)")
    p.add_argument("--max-size", type=int, default=2048, metavar="PX", help="largest output size a job may ask for (default: 2048)")
    p.add_argument("--gif-frames", type=int, default=30, metavar="N", help="frames in each job's progress GIF (default: 30)")
    add_settings_arguments(p)
    return p


def cli_main(argv: Sequence[str]) -> int:
    args = build_parser().parse_args(argv)
    uvicorn = require_web()
    token = args.token or os.environ.get("IMPASTO_TOKEN") or None
    loopback = check_host(args.host, args.allow_remote)
    if not loopback and token is None:
        token = secrets.token_urlsafe(18)  # exposed without a token is never what anyone wants
    config = config_from_args(args, token, loopback)
    check_port_free(args.host, args.port)
    check_weights_at_hand(config.base_settings)
    from ..device import resolve_device, warn_if_emulated

    # Said here, in the flags' words, to whoever starts the server: its jobs cannot change the precision.
    base = config.base_settings
    warn_if_emulated(base.get("precision", "auto"), resolve_device(base.get("device", "auto")))

    from .app import create_app
    from .uploads import allow_pixels

    allow_pixels(config.max_pixels)
    app = create_app(config)  # makes the data folder
    # Held for the server's life: a second server on the same folder would mark this one's running
    # jobs interrupted at its start, offer to delete them, and clean up the jobs it did not make.
    lock = FolderLock(Path(config.data_dir).expanduser(), ".impasto-serve.lock", "another impasto serve keeps its jobs in this "
                      "folder", "stop it, or give this server a folder of its own with --data-dir").acquire()
    shown_host = f"[{args.host}]" if ":" in args.host else args.host
    url = f"http://{shown_host}:{args.port}/" + (f"?token={token}" if token else "")
    print(f"impasto: serving on {url}  (API docs: /docs; jobs in {config.data_dir}; Ctrl-C stops)", file=sys.stderr)
    server = uvicorn.Server(uvicorn.Config(app, host=args.host, port=args.port, log_level="info", timeout_graceful_shutdown=5))
    logging.getLogger("uvicorn.access").addFilter(HideToken())  # after uvicorn.Config, which sets up its logging
    stop_signal = server.handle_exit

    def handle_exit(sig: int, frame: Any) -> None:
        # Uvicorn waits for open connections before the app hears of the stop; event
        # streams and the running job must hear at once, or Ctrl-C would wait for the job.
        app.state.manager.stopping.set()
        stop_signal(sig, frame)

    server.handle_exit = handle_exit  # type: ignore[method-assign]
    # The server's own options were checked above with the CLI's flags; from here on, messages
    # go to clients that name settings as JSON fields (style_weight), not as --style-weight.
    try:
        with command_line(False):
            server.run()
    finally:
        lock.release()
    return 0


class HideToken(logging.Filter):
    """Keeps the token out of uvicorn's access log: the page sends it in the query of its event
    streams and pictures (they cannot send headers), and a log is read by more people than a token."""

    QUERY_TOKEN = re.compile(r"([?&]token=)[^&\s\"]*")

    def filter(self, record: logging.LogRecord) -> bool:
        if isinstance(record.args, tuple):
            record.args = tuple(self.QUERY_TOKEN.sub(r"\1[hidden]", a) if isinstance(a, str) else a for a in record.args)
        elif isinstance(record.msg, str):
            record.msg = self.QUERY_TOKEN.sub(r"\1[hidden]", record.msg)
        return True


def require_web() -> Any:
    """uvicorn, once FastAPI and the multipart parser are known to be importable."""
    try:
        import fastapi  # noqa: F401
        import uvicorn
    except ImportError as exc:
        raise ImpastoError(f"impasto serve needs the web extra ({exc.name} is missing): {WEB_HINT}") from None
    try:  # python-multipart, FastAPI's form parser: `multipart` is its old name, still what older releases have
        import python_multipart  # noqa: F401
    except ImportError:
        try:
            import multipart  # noqa: F401
        except ImportError:
            raise ImpastoError(f"impasto serve needs the web extra (python-multipart is missing): {WEB_HINT}") from None
    return uvicorn


def check_host(host: str, allow_remote: bool) -> bool:
    """True for a loopback address; a reachable one is refused unless allow_remote."""
    if is_loopback(host):
        return True
    if not allow_remote:
        raise ImpastoError(
            f"refusing to listen on {host}: other machines could reach it. Pass --allow-remote to mean it "
            "(a token is then required), or use --host 127.0.0.1"
        )
    return False


def is_loopback(host: str) -> bool:
    if host.lower() in LOOPBACK_NAMES:
        return True
    try:
        return ipaddress.ip_address(host.strip("[]")).is_loopback
    except ValueError:
        pass
    # A host name: loopback only if every address it names is.
    try:
        infos = socket.getaddrinfo(host, None)
    except OSError:
        raise ImpastoError(f"--host {host}: not an address or a known host name") from None
    return bool(infos) and all(ipaddress.ip_address(str(info[4][0]).split("%")[0]).is_loopback for info in infos)


def check_port_free(host: str, port: int) -> None:
    if not 0 < port < 65536:
        raise ImpastoError(f"--port must be between 1 and 65535, not {port}")
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    with socket.socket(family, socket.SOCK_STREAM) as probe:
        probe.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            probe.bind((host.strip("[]"), port))
        except OSError as exc:
            raise ImpastoError(f"cannot listen on {host}:{port} ({exc.strerror}); is another server there? Try --port {port + 1}") from None


def check_weights_at_hand(base: dict[str, Any]) -> None:
    """Say now, in the server's terminal, when the first job would have to download the network."""
    from .. import weights as W
    from ..errors import warn

    if base.get("weights"):
        return  # checked to exist by config_from_args
    model = base.get("model") or "vgg19"
    named = os.environ.get("IMPASTO_WEIGHTS")
    if named and not Path(named).expanduser().exists():
        # Not a download to come: every job would fail on it, so the server does not start.
        raise ImpastoError(f"$IMPASTO_WEIGHTS {named}: no such file or folder")
    try:
        W.resolve(model, None, download=False)
    except ImpastoError:
        warn(f"no {model} weights here yet: the first job will download them ({W.OFFICIAL_URLS[model]}) to "
             f"{W.cache_dir()}; to use a file you have, restart with --weights PATH")


def default_data_dir() -> Path:
    from ..weights import cache_dir

    return cache_dir() / "web"


def config_from_args(args: argparse.Namespace, token: Optional[str], loopback: bool) -> Any:
    from ..cli import explicit_settings, settings_from_args
    from .app import WebConfig
    from .options import Limits

    settings_from_args(args)  # the server's options fail here, with the CLI's messages and warnings
    base = explicit_settings(args)  # every job's settings are made from these again (Settings.from_given)
    for name, value, low in (("--workers", args.workers, 1), ("--gif-frames", args.gif_frames, 1), ("--max-size", args.max_size, 16)):
        if value < low:
            raise ImpastoError(f"{name} must be at least {low}, not {value}")
    if not all(math.isfinite(v) and v > 0 for v in (args.max_upload_mb, args.max_megapixels)):
        raise ImpastoError("--max-upload-mb and --max-megapixels must be positive numbers")
    if base.get("weights") and not Path(base["weights"]).exists():
        # Checked now: otherwise the server would start and every job would fail on it.
        raise ImpastoError(f"--weights {base['weights']}: no such file or folder")
    # Clean-up runs as each job ends: 0 would delete every result before anyone could fetch it.
    if not args.keep_days > 0 or args.keep_jobs < 1:
        raise ImpastoError("--keep-days must be above 0 and --keep-jobs at least 1 (a result is kept until then)")
    return WebConfig(
        data_dir=(args.data_dir or default_data_dir()).expanduser(),
        token=token,
        workers=args.workers,
        base_settings=base,
        base_preset=args.preset,
        limits=Limits(max_size=args.max_size),
        max_upload_bytes=int(args.max_upload_mb * 1_000_000),
        max_pixels=int(args.max_megapixels * 1_000_000),
        keep_days=args.keep_days,
        keep_jobs=args.keep_jobs,
        gif_frames=args.gif_frames,
        # Behind a loopback address only these Host headers are genuine (no DNS rebinding).
        allowed_hosts=sorted({"127.0.0.1", "localhost", "::1", "[::1]", args.host}) if loopback else None,
    )


__all__ = ["cli_main", "build_parser", "check_host", "is_loopback"]
