"""A dependency-free progress bar showing count, rate (items/s) and ETA."""

import sys
import time


def format_duration(seconds):
    """``H:MM:SS`` for a number of seconds."""
    seconds = int(round(seconds))
    return f"{seconds // 3600}:{seconds % 3600 // 60:02d}:{seconds % 60:02d}"


class ProgressBar:
    """Progress of ``total`` items written to ``stream``.

    On a terminal the bar redraws in place (at most ten times a second); in a
    log file it prints one line every ``log_interval`` seconds. ``write`` prints
    a message without breaking the bar.
    """

    def __init__(self, total, label, stream=None, log_interval=10.0):
        self.total = total
        self.label = label
        self.stream = sys.stderr if stream is None else stream
        self.is_terminal = self.stream.isatty()
        self.min_interval = 0.1 if self.is_terminal else log_interval
        self.count = 0
        self.start = time.perf_counter()
        self.last_draw = float("-inf")

    def rate(self):
        """Items per second so far."""
        elapsed = time.perf_counter() - self.start
        return self.count / elapsed if elapsed > 0 else 0.0

    def line(self):
        """The bar as text, e.g. ``prepare  40/100  40% [####......]  12.0 img/s  ETA 0:00:05``."""
        fraction = self.count / self.total if self.total else 1.0
        filled = int(fraction * 20)
        rate = self.rate()
        eta = format_duration((self.total - self.count) / rate) if rate > 0 else "?"
        return (
            f"{self.label}  {self.count}/{self.total}  {fraction:4.0%} "
            f"[{'#' * filled}{'.' * (20 - filled)}]  {rate:.1f} img/s  ETA {eta}"
        )

    def update(self, count=1):
        """Advance by ``count`` items and redraw if it is time to."""
        self.count += count
        now = time.perf_counter()
        if now - self.last_draw >= self.min_interval:
            self.last_draw = now
            self._draw()

    def write(self, message):
        """Print ``message`` on its own line, keeping the bar below it."""
        if self.is_terminal:
            self.stream.write("\r\033[K" + message + "\n")
            self._draw()
        else:
            self.stream.write(message + "\n")
        self.stream.flush()

    def close(self):
        """Draw the final state and end the bar's line."""
        self._draw()
        if self.is_terminal:
            self.stream.write("\n")
            self.stream.flush()

    def _draw(self):
        if self.is_terminal:
            self.stream.write("\r\033[K" + self.line())
        else:
            self.stream.write(self.line() + "\n")
        self.stream.flush()
