"""Guards against a broken Qt binding: PySide6 6.12.0 leaked a reference to True per emit."""

import sys

from PySide6.QtCore import QObject, Signal


class _Emitter(QObject):
    fired = Signal(int)


def test_signal_emits_do_not_leak_references_to_true():
    emitter = _Emitter()
    received = []
    emitter.fired.connect(received.append)
    before = sys.getrefcount(True)
    for i in range(200):
        emitter.fired.emit(i)
    after = sys.getrefcount(True)
    assert received == list(range(200))
    # A few references may come and go with the interpreter's own bookkeeping; a leak of one
    # per emit (the 6.12.0 bug, fatal after a few thousand emits) shows as -200.
    assert abs(after - before) < 20
