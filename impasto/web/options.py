"""Settings from a web request: typed, limited, and checked by the one Settings object.

A request gives an optional preset and any Settings fields (as JSON values or as
form strings). They go on top of the server's own settings (`impasto serve
--size 256 ...`), are converted to each field's type, and are checked by
Settings.validate(), so the web refuses exactly what the CLI refuses, plus a few
limits that protect a shared server.
"""

from __future__ import annotations

import difflib
import json
import math
from dataclasses import dataclass, fields
from typing import Any, Optional

from ..errors import ImpastoError, option
from ..images import fit_long_side
from ..settings import ALL_LAYERS, GATYS_STYLE_LAYERS, INIT_NAMES, BadSettingValue, Settings, parse_setting

# The server decides these: a client must not name files or devices on it, nor the
# arithmetic its hardware runs (fp16 on a CPU server would make every job ~25x slower) or how.
SERVER_ONLY = ("weights", "device", "precision", "cuda_graphs")

# The style-layer choices the page offers (any list of layer names works in the API).
LAYER_SETS: dict[str, tuple[str, ...]] = {
    "gatys": GATYS_STYLE_LAYERS,
    "fine": ("conv1_1", "conv2_1", "conv3_1"),
    "coarse": ("conv3_1", "conv4_1", "conv5_1"),
    "all": (ALL_LAYERS,),
}


@dataclass
class Limits:
    """What one job may ask of the server."""

    max_size: int = 2048
    max_iterations: int = 5000
    max_style_scale: float = 4.0
    max_styles: int = 5

    def check(self, settings: Settings) -> None:
        if settings.size > self.max_size:
            raise ImpastoError(f"{option('size')} must be at most {self.max_size} pixels on this server, not {settings.size} (impasto serve --max-size raises it)")
        for name in ("iterations", "initial_iterations"):
            if getattr(settings, name) > self.max_iterations:
                raise ImpastoError(f"{option(name)} must be at most {self.max_iterations} on this server, not {getattr(settings, name)}")
        if settings.style_scale > self.max_style_scale:
            raise ImpastoError(f"{option('style_scale')} must be at most {self.max_style_scale:g} on this server, not {settings.style_scale}")


class SettingsResolver:
    """Turns a job's request {"preset": ..., "settings": {...}} into validated Settings."""

    def __init__(self, base: Optional[dict[str, Any]] = None, base_preset: Optional[str] = None, limits: Optional[Limits] = None) -> None:
        self.base = dict(base or {})
        self.base_preset = base_preset
        self.limits = limits or Limits()
        self.said: set[str] = set()  # what jobs were warned of: once in the server's log, not at each job and each run of it

    def __call__(self, request: dict[str, Any]) -> Settings:
        overrides = coerce_settings(request.get("settings") or {})
        preset = request.get("preset") or self.base_preset
        # The page sends both step fields every time, and greys out the one a run of one scale leaves
        # unused: iterations given here are Settings' own, not run at one scale as a command line's are.
        settings = Settings.from_given(preset, self.base | overrides, honour_iterations=False)
        self.limits.check(settings)
        # The server's own options were warned of when it started; the page sends every field it
        # shows, so only a value the request changes is one the user asked for.
        plain = self.preset(preset) if preset else Settings(**self.base)
        settings.warn_unused({name for name, value in overrides.items() if getattr(plain, name) != value}, self.said)
        return settings

    def defaults(self) -> Settings:
        return self({})

    def preset(self, name: str) -> Settings:
        """A preset on top of the server's options, unchecked by the limits (the page shows what it sets)."""
        return Settings.from_preset(name, **self.base)


def parse_settings_json(text: Optional[str]) -> dict[str, Any]:
    """The `settings` form field: a JSON object of Settings fields."""
    if not text:
        return {}
    try:
        data = json.loads(text)
    except ValueError as exc:
        raise ImpastoError(f"settings: not valid JSON ({exc})") from None
    if not isinstance(data, dict):
        raise ImpastoError("settings: must be a JSON object such as {\"size\": 256}")
    return data


def coerce_settings(data: dict[str, Any]) -> dict[str, Any]:
    """Each value converted to its Settings field's type (settings.parse_setting), with a one-line error naming the field."""
    known = {f.name for f in fields(Settings)}
    out: dict[str, Any] = {}
    for name, value in data.items():
        if name not in known:
            guess = difflib.get_close_matches(name, sorted(known), n=1, cutoff=0.7)
            hint = f" (did you mean {guess[0]}?)" if guess else ""
            raise ImpastoError(f"unknown setting {name!r}{hint}; GET /api/options lists the settings")
        if name in SERVER_ONLY:
            raise ImpastoError(f"{name} is set by the server (impasto serve --{name} ...), not by a job")
        try:
            out[name] = parse_setting(name, value)
        except BadSettingValue as exc:  # said as validate says it, the words of the rest of the API's answers
            raise ImpastoError(exc.must()) from None
    # `init` may name a picture file on the CLI; over the web only the built-in starts.
    if "init" in out and out["init"] not in INIT_NAMES:
        raise ImpastoError(f"init must be one of {', '.join(INIT_NAMES)}, not {out['init']!r}")
    if "style_layers" in out and len(out["style_layers"]) == 1 and out["style_layers"][0] in LAYER_SETS:
        out["style_layers"] = LAYER_SETS[out["style_layers"][0]]
    return out


def parse_style_weights(text: Optional[str], count: int) -> list[float]:
    """`style_weights`: a JSON list or comma-separated numbers, one per style image (default: equal)."""
    if not text:
        return [1.0] * count
    try:
        values = json.loads(text) if text.strip().startswith("[") else [float(v) for v in text.split(",")]
        weights = [float(v) for v in values]
    except (ValueError, TypeError):
        raise ImpastoError(f"Style blend (style_weights): give numbers such as 0.7,0.3, not {text!r}") from None
    if len(weights) != count:
        raise ImpastoError(f"Style blend (style_weights): {len(weights)} weights given for {count} style picture(s)")
    if any(not math.isfinite(w) or w < 0 for w in weights) or sum(weights) <= 0:
        raise ImpastoError("Style blend: each style picture's weight must be 0 or more, and at least one above 0 (style_weights)")
    return weights


def check_proportions(size: tuple[int, int], settings: Settings, label: str) -> None:
    """Refuse, before a job is queued, a photo too long and narrow to paint at settings.size.

    The run would refuse it too, but only once its turn came, and in the CLI's words
    (--size); this is the same rule (scales.check_short_side), said for the page.
    """
    from ..scales import min_side

    width, height = fit_long_side(size[0], size[1], settings.size)
    least = min_side(settings)
    if min(width, height) < least:
        raise ImpastoError(
            f"{label}: at a Size of {settings.size} px the picture would be {width}×{height} px, too thin to paint "
            f"(its short side must be at least {least} px); choose a larger Size, or a less long and narrow photo"
        )


def server_device(settings: Settings) -> str:
    """The kind of device jobs run on (cpu, cuda, mps), for the page's advice on sizes."""
    from ..device import resolve_device

    return resolve_device(settings.device).type
