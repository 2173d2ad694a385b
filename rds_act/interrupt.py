"""SIGTERM / SIGINT turned into a recorded stop in every phase of a run: Lightning raises
``SIGTERMException`` inside its loops only; outside them (set-up, between stages, while results
are written) these handlers raise ``Interrupted``, so the entry points can write
``status: interrupted`` and exit 143 / 130 instead of dying without a record."""

from __future__ import annotations

import signal
import threading
from contextlib import contextmanager

import lightning as L

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
def signals_interrupt(trainer: L.Trainer | None = None):
    """SIGTERM and SIGINT raise ``Interrupted`` inside the block (in the main thread, where
    Python lets handlers be set): in set-up, between fit and test, while results are written.
    Inside a stage's loops Lightning's own SIGTERM handler runs first and stops the loop at the
    next batch (``SIGTERMException``); this one then stands aside, unless that batch has not
    ended ``SIGTERM_GRACE_S`` later or a second SIGTERM comes: then the run stops where it is
    (a cluster sends SIGKILL after its own grace, leaving no record at all). Without a trainer
    yet (rds-act-eval builds it from the checkpoint inside the block), ``stopped.trainer`` is
    set once there is one."""
    stopped = _Stopped()
    stopped.trainer = trainer
    if threading.current_thread() is not threading.main_thread():
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
        if _pending:  # one came before this block: stop now, inside it, so it is recorded
            stopped.signum = _pending.pop(0)
            raise Interrupted(stopped.signum)
        yield stopped
    finally:
        for timer in grace:
            timer.cancel()
        for s, h in old.items():
            signal.signal(s, h)
