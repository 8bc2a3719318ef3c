import os
import signal

import pytest

from yolomlu import interrupts


@pytest.fixture
def installed():
    previous = {s: signal.getsignal(s) for s in (signal.SIGINT, signal.SIGTERM)}
    interrupts.install()
    yield
    for signum, handler in previous.items():
        signal.signal(signum, handler)


def test_sigterm_raises_terminated(installed) -> None:
    with pytest.raises(interrupts.Terminated, match="SIGTERM"):
        os.kill(os.getpid(), signal.SIGTERM)  # the handler runs at the next bytecode


def test_a_signal_inside_an_uninterrupted_block_waits_for_its_end(installed) -> None:
    finished = []
    with pytest.raises(KeyboardInterrupt) as caught:
        with interrupts.uninterrupted():
            with interrupts.uninterrupted():  # nested: only the outermost end raises
                os.kill(os.getpid(), signal.SIGINT)
                finished.append("inner")
            finished.append("outer")
    assert finished == ["inner", "outer"]  # the block ran to its end first
    assert not isinstance(caught.value, interrupts.Terminated)
    with interrupts.uninterrupted():
        pass  # nothing pending any more


def test_a_swallowed_interrupt_is_raised_again_by_check(installed) -> None:
    try:
        os.kill(os.getpid(), signal.SIGTERM)
        for _ in range(1000):  # the handler raises within the next bytecodes
            pass
    except BaseException:  # what some library code does
        pass
    with pytest.raises(interrupts.Terminated):
        interrupts.check()
    interrupts.check()  # raised once: nothing left
