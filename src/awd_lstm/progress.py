"""Progress of long work: Keras' progress bar on a terminal, plain lines elsewhere.

In a terminal (or a notebook) `Progress` is `keras.utils.Progbar`, redrawn in place.
When standard output is a file or a pipe (a log, a batch job), it writes one plain
line every `every` of the work (10%) and at its end, with no carriage returns or
terminal colour codes, so that the log reads well.
"""

import sys
import time

import keras


def _interactive(stream):
    return (hasattr(stream, "isatty") and stream.isatty()) or "ipykernel" in sys.modules


class Progress:
    """Progress over `total` units (`unit`: "token", "sentence").

    Args:
        total: The units the work has.
        unit: Their name, singular.
        enabled: False: nothing is shown.
        stateful_metrics: Names whose value is shown as given (not averaged), as in
            `keras.utils.Progbar`.
        every: Fraction of the work between two plain lines.
        stream: Where plain lines go (default: standard output).
    """

    def __init__(
        self, total, unit="token", enabled=True, stateful_metrics=None, every=0.1, stream=None
    ):
        self.total = int(total)
        self.unit = unit
        self.enabled = bool(enabled)
        self.stream = stream
        self.every = every
        self._next = every * self.total
        self._started = time.perf_counter()
        self._bar = None
        if self.enabled and _interactive(stream or sys.stdout):
            self._bar = keras.utils.Progbar(
                self.total, verbose=1, stateful_metrics=stateful_metrics, unit_name=unit
            )

    def update(self, current, values=()):
        """Shows that `current` units are done; `values`: `(name, value)` pairs."""
        if not self.enabled:
            return
        if self._bar is not None:
            self._bar.update(current, values)
            return
        if current < self._next and current < self.total:
            return
        while self._next <= current:
            self._next += self.every * self.total or 1
        seconds = time.perf_counter() - self._started
        parts = [
            f"{100 * current / max(self.total, 1):3.0f}% {current:,}/{self.total:,} {self.unit}s"
        ]
        parts += [f"{name} {_number(value)}" for name, value in values]
        parts.append(f"{seconds:.0f} s")
        print(", ".join(parts), file=self.stream or sys.stdout, flush=True)


def _number(value):
    """4 significant digits, thousands in full with separators (no `6.886e+04`)."""
    return f"{value:,.0f}" if abs(value) >= 1000 else f"{value:.4g}"
