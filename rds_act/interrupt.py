"""SIGTERM / SIGINT turned into a recorded stop in every phase of a run: Lightning raises
``SIGTERMException`` inside its loops only; outside them (set-up, between stages, while results
are written) these handlers raise ``Interrupted``; either way the entry point writes
``status: interrupted`` and exits 143 / 130 instead of dying without a record."""

from __future__ import annotations

import signal
import threading
from collections.abc import Callable, Iterator
from contextlib import contextmanager

import lightning as L
from lightning.pytorch.utilities.exceptions import SIGTERMException

# signals noted by ``deferred_signals`` before ``signals_interrupt`` took over
_pending: list[int] = []


@contextmanager
def deferred_signals():
    """From just before Hydra makes the run dir until ``signals_interrupt`` takes over, note a
    SIGTERM / SIGINT instead of dying by it (no record): the run stops, recorded, once its
    handlers are in place. The caller's handlers are back afterwards."""
    if threading.current_thread() is not threading.main_thread():
        yield
        return
    old = {s: signal.signal(s, lambda signum, frame: _pending.append(signum))
           for s in (signal.SIGTERM, signal.SIGINT)}
    try:
        yield
    finally:
        _pending.clear()
        for s, h in old.items():
            signal.signal(s, h)


# seconds a SIGTERM inside a batch waits for that batch to end before the run stops mid-batch
SIGTERM_GRACE_S = 10.0


class Interrupted(Exception):
    """A SIGTERM / SIGINT that arrived where Lightning's loops do not turn it into an exit."""

    def __init__(self, signum: int | str):
        # a library that re-raises it as ``type(exc)(message)`` (OmegaConf inside instantiate)
        # passes the message, whose first word is the signal's name
        name = signal.Signals(signum).name if isinstance(signum, int) else str(signum).split()[0]
        sig = signal.Signals.__members__.get(name, signal.SIGTERM)
        super().__init__(sig.name)
        self.name, self.exit_code = sig.name, 128 + sig.value


class _Stopped:
    """The signal ``signals_interrupt`` received, for ``check`` after a phase: a handler's
    exception can be swallowed where it lands (inside ``logging``, say), the record must not be."""

    signum: int | None = None
    trainer: L.Trainer | None = None

    def check(self) -> None:
        if self.signum is not None:
            raise Interrupted(self.signum)


@contextmanager
def _recorded(on_stop: Callable[[str], None]) -> Iterator[None]:
    """A stop by signal, however it surfaces, becomes ``on_stop(signal name)`` and exit 128 + n."""
    try:
        yield
    except SIGTERMException:  # Lightning's loops raise it at a batch end after a SIGTERM
        on_stop("SIGTERM")
        raise SystemExit(143) from None
    except Interrupted as signal_:  # a signal where Lightning's loops do not run
        on_stop(signal_.name)
        raise SystemExit(signal_.exit_code) from None
    except SystemExit as exit_:  # Lightning turns a Ctrl-C it catches into sys.exit(1)
        if exit_.code in (0, None, 2):  # a success, or bad input already reported in one line
            raise
        on_stop("SIGINT")
        raise SystemExit(130) from None


@contextmanager
def signals_interrupt(on_stop: Callable[[str], None]) -> Iterator[_Stopped]:
    """SIGTERM and SIGINT stop the block wherever it is — set-up, between fit and test, while
    results are written — calling ``on_stop(signal name)`` (the caller writes its record) and
    exiting 143 / 130. Inside a stage's loops Lightning's own SIGTERM handler runs first and stops
    the loop at the next batch (``SIGTERMException``); this one then stands aside, unless that
    batch has not ended ``SIGTERM_GRACE_S`` later or a second SIGTERM comes: then the run stops
    where it is (a cluster sends SIGKILL after its own grace, leaving no record at all). Set
    ``stopped.trainer`` once the trainer exists, so that its handler is known to have run.
    Handlers can only be set in the main thread; elsewhere only Lightning's stops are recorded."""
    stopped = _Stopped()
    if threading.current_thread() is not threading.main_thread():
        with _recorded(on_stop):
            yield stopped
        return
    main = threading.main_thread().ident
    grace: list[threading.Timer] = []

    def handler(signum, frame):
        inside = stopped.trainer is not None and stopped.trainer.received_sigterm
        if signum == signal.SIGTERM and inside and not grace:
            # Lightning's handler took it; its loop raises SIGTERMException at the batch end
            grace.append(threading.Timer(SIGTERM_GRACE_S, signal.pthread_kill, (main, signal.SIGTERM)))
            grace[0].daemon = True
            grace[0].start()
            return
        stopped.signum = signum
        raise Interrupted(signum)

    old = {s: signal.signal(s, handler) for s in (signal.SIGTERM, signal.SIGINT)}
    try:
        with _recorded(on_stop):
            if _pending:  # one came before this block: stop now, inside it, so it is recorded
                stopped.signum = _pending.pop(0)
                raise Interrupted(stopped.signum)
            yield stopped
    finally:
        for timer in grace:
            timer.cancel()
        for s, h in old.items():
            signal.signal(s, h)
