"""The signals that stop a long job (SIGINT: Ctrl-C; SIGTERM: a scheduler's preemption), and handling them a while.

Shared by prepare_data (which stops at once and deletes its unfinished build) and train (which stops after the
current iteration, with a checkpoint).
"""

import contextlib
import signal
import threading

STOP_SIGNALS = (signal.SIGINT, signal.SIGTERM)


@contextlib.contextmanager
def handling_stop_signals(handler):
    """While entered in the main thread, SIGINT and SIGTERM call ``handler(signum, frame)``; the previous handlers
    come back on exit. Elsewhere nothing changes: Python delivers signals to the main thread only."""
    if threading.current_thread() is not threading.main_thread():
        yield
        return
    previous = {signum: signal.signal(signum, handler) for signum in STOP_SIGNALS}
    try:
        yield
    finally:
        for signum, saved in previous.items():
            signal.signal(signum, saved)
