"""Help texts that must agree across commands and with the models, built without importing torch (so
`unnoise --help` stays instant), and one fix to how typer shows flags."""

from __future__ import annotations

import json
from importlib import resources

from .limits import DEFAULT_SPACING, PAINT_DEFAULTS

# The Painter's own defaults for a model whose unnoise.json leaves one out (modeldir.paint_defaults), from the
# one table in limits.py (no torch import); tests/test_cli_habits.py checks that every bundled model's help
# line equals what paint_defaults gives it.
_PROJECT_DEFAULTS = {**PAINT_DEFAULTS, "spacing": DEFAULT_SPACING}

SEED_HELP = "Seed of image 1; image k paints with seed + k − 1, whatever the batch size"


def bundled_defaults() -> dict[str, dict]:
    """{bundled model name: its painting defaults}, read from the installed unnoise.json files, teachers first."""
    root = resources.files("unnoise") / "bundled"
    found = {}
    try:
        entries = sorted(root.iterdir(), key=lambda p: (p.name.split("-")[0] != "emoji", len(p.name), p.name))
    except (FileNotFoundError, NotADirectoryError):
        return {}
    for entry in entries:
        try:
            meta = json.loads((entry / "unnoise.json").read_text())
        except (OSError, ValueError):
            continue
        found[entry.name] = {**_PROJECT_DEFAULTS, **meta.get("defaults", {})}
    return found


def model_default(key: str) -> str:
    """"default: the model's own, 20 for emoji and digits, 4 for emoji-fast and digits-fast, 1 for
    digits-1step" for a painting setting, the bundled models grouped by their value."""
    groups: dict[str, list[str]] = {}
    for name, defaults in bundled_defaults().items():
        value = defaults[key]
        groups.setdefault(f"{value:g}" if isinstance(value, float) else str(value), []).append(name)
    listed = [f"{value} for {_and(names)}" for value, names in groups.items()]
    return "default: the model's own" + (f", {', '.join(listed)}" if listed else "")


def _and(names: list[str]) -> str:
    return names[0] if len(names) == 1 else f"{', '.join(names[:-1])} and {names[-1]}"


def hide_flag_types() -> None:
    """Recent typer (0.29 here) labels every on/off flag `<bool>` in its rich help, as if it took a value; a flag
    shows no type (as click's plain help has it).  Only the label changes; on a typer without that method, nothing."""
    try:
        from typer.core import TyperOption
    except ImportError:
        return
    shown = getattr(TyperOption, "display_type_rich", None)
    if shown is None or getattr(shown, "hides_flags", False):
        return

    def display_type_rich(self, ctx):
        return None if getattr(self, "is_flag", False) else shown(self, ctx)

    display_type_rich.hides_flags = True  # type: ignore[attr-defined]
    TyperOption.display_type_rich = display_type_rich  # type: ignore[method-assign]
