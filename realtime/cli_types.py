"""Click types the commands share (no library imports: ``--help`` stays light)."""

from __future__ import annotations

import click


class Limited(click.ParamType):
    """A number checked against the one table of limits (``engines.limits.LIMITS[key]``),
    as a usage error before any work: ``--crop-scale 10: expected 0.5 to 4``."""

    def __init__(self, key: str, integer: bool = False):
        self.key, self.integer = key, integer
        self.name = "integer" if integer else "number"

    def convert(self, value, param, ctx):
        from engines.limits import LIMITS

        number = value
        if isinstance(value, str):
            try:
                number = int(value) if self.integer else float(value)
            except ValueError:
                self.fail(f"{value!r} is not {'an integer' if self.integer else 'a number'}", param, ctx)
        problem = LIMITS[self.key].problem(number)
        if problem:
            self.fail(f"{value!r}: {problem}", param, ctx)
        return number
