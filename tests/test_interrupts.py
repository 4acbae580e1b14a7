"""Ctrl-C while a send delivers (``leadrelay.interrupts.CtrlC``), in this process.

SIGINT is sent to this process for real (``os.kill``); pytest runs tests in the main thread,
where Python delivers signals. The whole send is in ``test_cli_send``; here are the steps.
"""

from __future__ import annotations

import asyncio
import os
import signal
import threading

import pytest

from leadrelay.interrupts import CtrlC


class _Worker:
    """Batches in flight that only a second Ctrl-C ends (as Meta taking longer than the drain)."""

    drain_timeout_s = 20.0

    def __init__(self, batches: int) -> None:
        self.batches = batches
        self.cut = asyncio.Event()

    @property
    def batches_in_flight(self) -> int:
        return self.batches

    def cut_short(self) -> int:
        cut, self.batches = self.batches, 0
        self.cut.set()
        return cut


def _ctrl_c() -> None:
    os.kill(os.getpid(), signal.SIGINT)


async def _send(ctrl_c: CtrlC, worker: _Worker, presses: int, log: list[str]) -> str:
    """A send that drains as a real one does: cancelled, it waits for its batches. The user
    presses Ctrl-C ``presses`` times, 50 ms apart."""
    ctrl_c.worker = worker
    timers = [threading.Timer(0.05 * (n + 1), _ctrl_c) for n in range(presses)]
    for timer in timers:
        timer.start()
    try:
        await asyncio.sleep(30)
    except asyncio.CancelledError:
        log.append("cancelled")
        if worker.batches:
            await asyncio.wait_for(asyncio.shield(worker.cut.wait()), 30)
        log.append("drained")
        raise
    finally:
        for timer in timers:
            timer.join()
    return "delivered"


def test_the_first_ctrl_c_stops_the_send_and_says_a_second_one_stops_the_wait() -> None:
    said: list[str] = []
    log: list[str] = []
    worker = _Worker(3)
    with CtrlC(said.append) as ctrl_c, pytest.raises(KeyboardInterrupt):
        ctrl_c.run(_send(ctrl_c, worker, 2, log))
    assert log == ["cancelled", "drained"]  # the second Ctrl-C ended the wait, no traceback
    assert worker.batches == 0
    assert said == [
        "Stopping (Ctrl-C): waiting up to 20 s for the 3 batches in flight; Ctrl-C again to "
        "stop now (their events stay queued for the next run)."
    ]


def test_without_batches_in_flight_one_ctrl_c_stops_the_send_quietly() -> None:
    said: list[str] = []
    log: list[str] = []
    with CtrlC(said.append) as ctrl_c, pytest.raises(KeyboardInterrupt):
        ctrl_c.run(_send(ctrl_c, _Worker(0), 1, log))
    assert log == ["cancelled", "drained"]
    assert said == []


def test_once_the_loop_has_ended_ctrl_c_is_noted_until_a_third_one() -> None:
    """Storing what was read and printing the summary follow the loop: not cut short."""
    previous = signal.getsignal(signal.SIGINT)

    async def sent() -> str:
        return "delivered"

    said: list[str] = []
    with CtrlC(said.append) as ctrl_c:
        assert ctrl_c.run(sent()) == "delivered"
        _ctrl_c()  # e.g. while the write-behind store stores what it holds
        _ctrl_c()
        assert ctrl_c.presses == 2
        assert said == 2 * [
            "Stopping (Ctrl-C): storing what was read, then the summary; Ctrl-C again to stop "
            "at once."
        ]
        with pytest.raises(KeyboardInterrupt):
            _ctrl_c()  # the third: stuck somewhere, the user wants out
    assert signal.getsignal(signal.SIGINT) is previous


def test_a_process_that_ignores_ctrl_c_keeps_ignoring_it() -> None:
    """A background job of a script is started with SIGINT ignored: a send there runs on."""
    previous = signal.signal(signal.SIGINT, signal.SIG_IGN)
    try:

        async def sending() -> str:
            _ctrl_c()
            await asyncio.sleep(0.05)
            return "delivered"

        with CtrlC(lambda text: None) as ctrl_c:
            assert ctrl_c.run(sending()) == "delivered"
        assert ctrl_c.presses == 0
        assert signal.getsignal(signal.SIGINT) is signal.SIG_IGN
    finally:
        signal.signal(signal.SIGINT, previous)


def test_outside_the_main_thread_the_loop_is_asyncio_run() -> None:
    results: list[object] = []

    async def sent() -> str:
        return "delivered"

    def host() -> None:
        with CtrlC(lambda text: None) as ctrl_c:
            results.append(ctrl_c.run(sent()))
            results.append(signal.getsignal(signal.SIGINT))

    thread = threading.Thread(target=host)
    thread.start()
    thread.join()
    assert results == ["delivered", signal.default_int_handler]


def test_ctrl_c_while_the_send_gets_ready_stops_it_before_it_sends() -> None:
    """Pressed while the store opens (before the loop): noted, and the send sends nothing."""
    started: list[str] = []

    async def sending() -> str:
        started.append("sending")
        return "delivered"

    said: list[str] = []
    with CtrlC(said.append) as ctrl_c:
        _ctrl_c()  # e.g. while the store opens: not raised there
        with pytest.raises(KeyboardInterrupt):
            ctrl_c.run(sending())
    assert started == []
    assert said == ["Stopping (Ctrl-C) once the store is open; Ctrl-C again to stop now."]


def test_a_second_ctrl_c_while_the_send_gets_ready_stops_it_at_once() -> None:
    """Getting ready may hang (a Redis that never answers, a FIFO report nobody reads)."""
    with CtrlC(lambda text: None):
        _ctrl_c()
        with pytest.raises(KeyboardInterrupt):
            _ctrl_c()
