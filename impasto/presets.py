"""Named groups of settings: `--preset NAME` on the CLI, `Settings.from_preset(NAME)` in Python.

A preset sets only the fields it is about; everything else keeps its default,
and any explicitly given option overrides the preset.
"""

from __future__ import annotations

import difflib
from dataclasses import dataclass, fields
from typing import Any

from .errors import ImpastoError, on_command_line
from .settings import GATYS_STYLE_LAYERS, Settings, typed_list


@dataclass(frozen=True)
class Preset:
    name: str
    description: str
    settings: dict[str, Any]


PRESETS: dict[str, Preset] = {
    p.name: p
    for p in (
        Preset(
            "gatys2015",
            "the original method (Gatys, Ecker & Bethge 2015): Gram matrices of conv1_1..conv5_1 weighted equally, "
            "content conv4_2, average pooling, one scale, from white noise, no smoothness term. Slow: "
            "it needs many iterations",
            dict(
                style_loss="gram",
                style_layers=GATYS_STYLE_LAYERS,
                style_layer_weights=None,
                style_layer_decay=1.0,
                content_layers=("conv4_2",),
                fine_content_layers=(),
                gram_shift=0.0,
                style_chain=False,
                pooling="avg",
                multiscale=False,
                init="noise",
                optimizer="lbfgs",
                iterations=500,
                tv_weight=0.0,
            ),
        ),
        Preset(
            "novak2016",
            "Novak & Nikulin 2016, 'Improving the Neural Algorithm of Artistic Style': every conv layer as a "
            "style layer with geometrically decaying weights, activations shifted by -1 in the Gram matrices, "
            "and chained inference (correlations between adjacent layers)",
            dict(
                style_loss="gram",
                style_layers=("all",),
                style_layer_weights=None,
                # The paper's w_l ∝ 2^(D-l): each conv layer half as heavy as the one before.
                # (Tried 2^(1/4) too: it looked like the default; 2 kept the subject clearer.)
                style_layer_decay=2.0,
                gram_shift=-1.0,
                style_chain=True,
            ),
        ),
        Preset(
            "fast",
            "a quick preview: 256 px, two scales and few iterations",
            dict(size=256, min_size=128, initial_iterations=60, iterations=30),
        ),
        Preset(
            "hq",
            "a large, careful picture: 1024 px, more iterations at the fine scales (minutes on a GPU, long on a CPU)",
            dict(size=1024, min_size=192, initial_iterations=300, iterations=120),
        ),
    )
}


def get_preset(name: str) -> Preset:
    if name not in PRESETS:
        close = difflib.get_close_matches(name, PRESETS, n=1)
        hint = f" (did you mean {close[0]}?)" if close else ""
        listing = " (see `impasto presets`)" if on_command_line() else ""  # a web page or notebook has no such command
        raise ImpastoError(f"unknown preset {name!r}{hint}; choose one of {', '.join(PRESETS)}{listing}")
    return PRESETS[name]


def preset_settings(name: str) -> dict[str, Any]:
    """The fields a preset sets, as Settings keyword arguments."""
    return dict(get_preset(name).settings)


def describe_presets() -> str:
    """Each preset, what it is for and what it sets (the `impasto presets` listing)."""
    lines = []
    for preset in PRESETS.values():
        lines.append(f"{preset.name}: {preset.description}")
        for key, value in preset.settings.items():
            flag = "--" + key.replace("_", "-")
            if isinstance(value, bool):  # as typed on the command line
                lines.append(f"    {flag if value else '--no-' + flag[2:]}")
                continue
            if isinstance(value, tuple):
                shown = typed_list(value)
            elif isinstance(value, float):
                shown = f"{value:.4g}"
            else:
                shown = "default" if value is None else str(value)
            lines.append(f"    {flag} {shown}")
        lines.append("")
    lines.append("Use one with --preset NAME; options given explicitly override it.")
    return "\n".join(lines)


def _check() -> None:
    # A preset naming a setting that does not exist is a bug here, caught at import.
    known = {f.name for f in fields(Settings)}
    for preset in PRESETS.values():
        unknown = set(preset.settings) - known
        assert not unknown, f"preset {preset.name} sets unknown settings {unknown}"


_check()
