"""The host's driver sequence for one run, written once for every target.

A run of the accelerator, as XRT and PYNQ drive any ``ap_ctrl_hs`` kernel (the
register map is :mod:`rtl.control.registers`): check that the kernel is idle, write
the kernel arguments, enable the done interrupt, set ap_start, wait for ap_done,
read the status registers, acknowledge the interrupt. :func:`run_sequence` is that
sequence as a generator of
register operations, so the synchronous board drivers (PYNQ MMIO, XRT) and the
asynchronous simulation testbenches (cocotb, the Amaranth simulator) execute the
same steps in the same order:

``("write", offset, word)``
    a 32-bit register write; the generator's ``send`` value is ignored;
``("wait", timeout_cycles)``
    wait until the run is done: the interrupt, or polling ``ap_done`` in the control
    register (bit 1, clear on read); raise :class:`DriverTimeout` after the timeout;
``("read", offset)``
    a 32-bit register read; ``send`` the value back.

The generator returns a :class:`RunStatus` (``StopIteration.value``);
:func:`execute` runs it against an object with ``read(offset)`` and
``write(offset, word)`` methods (a PYNQ ``MMIO``, an XRT IP handle), polling ap_done;
:func:`execute_async` against an object with the same methods as coroutines and a
``wait(timeout)`` coroutine (a simulation testbench, waiting for the interrupt).
"""

import time
from dataclasses import dataclass

from rtl.control.registers import CONTROL, ERRORS, GIE, IER, ISR, STATUS, argument_words

__all__ = ["AP_START", "AP_DONE", "AP_IDLE", "DriverTimeout", "DriverBusy", "RunStatus",
           "decode_status",
           "error_name", "run_sequence", "execute", "execute_async"]

AP_START, AP_DONE, AP_IDLE = 1 << 0, 1 << 1, 1 << 2
_ERROR_NAMES = {code: name for name, code in ERRORS.items()}


class DriverTimeout(RuntimeError):
    """No ap_done within the timeout."""


class DriverBusy(RuntimeError):
    """A run was requested while the accelerator was not idle."""


@dataclass(frozen=True)
class RunStatus:
    """The status registers of a finished run, decoded.

    Members
    -------
    code : int
        The error register (:data:`rtl.control.registers.ERRORS`), 0 if the run completed.
    error : str
        The code's name; an unknown code reads ``"unknown(<code>)"``.
    cycles : int
        Cycles from ap_start to ap_done.
    busy : dict {engine: int}
        Busy cycles per engine (:data:`rtl.control.registers.ENGINES`).
    ignored_starts : int
        ap_start writes ignored because a run was going.
    """

    code: int
    error: str
    cycles: int
    busy: dict
    ignored_starts: int

    @property
    def ok(self):
        return self.error == "none"


def error_name(code):
    """The name of an error code (:data:`rtl.control.registers.ERRORS`)."""
    return _ERROR_NAMES.get(code, f"unknown({code})")


def decode_status(values):
    """A :class:`RunStatus` from the raw status registers ``{name: value}`` (names of
    :data:`rtl.control.registers.STATUS`)."""
    code = values["error"]
    return RunStatus(code=code, error=error_name(code), cycles=values["cycles"],
                     busy={name[5:]: v for name, v in values.items() if name.startswith("busy_")},
                     ignored_starts=values["ignored_starts"])


def run_sequence(arguments, timeout):
    """One run (module docstring): ``arguments`` ``{name: value}`` of
    :data:`rtl.control.registers.ARGUMENTS`, ``timeout`` in cycles.

    It starts by reading the control register, which also clears an ap_done left by an
    earlier run (clear on read), and raises :class:`DriverBusy` if the accelerator is not
    idle; interrupt bits still pending are acknowledged before the start and after the
    run (ISR toggles on write, so only the set bits are written)."""
    control = yield ("read", CONTROL)
    if not control & AP_IDLE:
        raise DriverBusy("the accelerator is running (ap_idle is 0): an earlier run has not "
                         "finished; wait for it or reset the kernel")
    yield from _acknowledge()
    for offset, word in argument_words(arguments):
        yield ("write", offset, word)
    yield ("write", GIE, 1)
    yield ("write", IER, 1)
    yield ("write", CONTROL, AP_START)
    yield ("wait", timeout)
    values = {}
    for name, offset in STATUS.items():
        values[name] = yield ("read", offset)
    yield from _acknowledge()
    return decode_status(values)


def _acknowledge():
    pending = yield ("read", ISR)
    if pending:
        yield ("write", ISR, pending)


class _Polling:
    """A synchronous register file as the host of :func:`execute_async`; ``wait`` polls
    ap_done. Its coroutines never suspend, so :func:`execute` runs them without an event
    loop (and works where one is already running, as in a Jupyter notebook on PYNQ)."""

    def __init__(self, registers, poll_seconds, clock_hz):
        self.registers, self.poll_seconds, self.clock_hz = registers, poll_seconds, clock_hz

    async def read(self, offset):
        return self.registers.read(offset)

    async def write(self, offset, word):
        self.registers.write(offset, word)

    async def wait(self, timeout):
        deadline = time.monotonic() + timeout / self.clock_hz + 1.0
        while not self.registers.read(CONTROL) & AP_DONE:
            if time.monotonic() > deadline:
                raise DriverTimeout(f"no ap_done within {timeout} cycles "
                                    f"({timeout / self.clock_hz:.3f} s at "
                                    f"{self.clock_hz / 1e6:.0f} MHz, plus 1 s)")
            time.sleep(self.poll_seconds)


def execute(sequence, registers, poll_seconds=1e-4, clock_hz=300e6):
    """Run a :func:`run_sequence` on ``registers`` (``read(offset)``, ``write(offset,
    word)``), waiting by polling ap_done; the timeout in cycles is converted to seconds at
    ``clock_hz``. Returns the :class:`RunStatus`."""
    run = execute_async(sequence, _Polling(registers, poll_seconds, clock_hz))
    try:
        run.send(None)
    except StopIteration as stop:
        return stop.value
    run.close()
    raise RuntimeError("internal: the polling host suspended")


async def execute_async(sequence, host):
    """Run a :func:`run_sequence` on ``host`` whose ``read(offset)``, ``write(offset, word)``
    and ``wait(timeout)`` are coroutines. Returns the :class:`RunStatus`."""
    value = None
    try:
        while True:
            op = sequence.send(value)
            value = None
            if op[0] == "write":
                await host.write(op[1], op[2])
            elif op[0] == "read":
                value = await host.read(op[1])
            else:
                await host.wait(op[1])
    except StopIteration as stop:
        return stop.value
