"""The root of every error unnoise raises on purpose.

An `UnnoiseError` is something the user can cause and fix (a bad value, a missing or broken file); its
message names the value or file at fault and reads as one line.  The CLI prints it as `error: …` with exit
code 2 and the lab answers it with a 4xx; anything else is a bug and surfaces as one.
"""

from __future__ import annotations


class UnnoiseError(Exception):
    """A user-facing error: one line naming the file or value at fault."""
