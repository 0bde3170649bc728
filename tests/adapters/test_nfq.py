# SPDX-License-Identifier: MIT
"""The NFQUEUE adapter's callback with fake packets: exactly one verdict, always."""

from __future__ import annotations

import pytest

from shim.core.model import Action, Decision, Origin, Verdict
from shim.adapters.nfq import QueueReader
from shim.adapters.reader import Judge, apply_verdict


class FakePacket:
    """Records verdicts; raises, like netfilterqueue, on a second one."""

    def __init__(self, payload: bytes = b"\x60" + bytes(47), mark: int = 0, hook: int = 1) -> None:
        self.payload = payload
        self.mark = mark
        self.hook = hook
        self.indev = 2
        self.outdev = 0
        self.verdicts: list[str] = []
        self.fail_payload = False

    def get_payload(self) -> bytes:
        if self.fail_payload:
            raise RuntimeError("payload unavailable")
        return self.payload

    def get_mark(self) -> int:
        return self.mark

    def set_mark(self, mark: int) -> None:
        self.mark = mark

    def _verdict(self, name: str) -> None:
        if self.verdicts:
            raise RuntimeError("Verdict already given for this packet")
        self.verdicts.append(name)

    def accept(self) -> None:
        self._verdict("accept")

    def drop(self) -> None:
        self._verdict("drop")


def _decision(verdict: Verdict, name: str = "r", log: bool = False) -> Decision:
    return Decision(verdict=verdict, rule=name, origin=Origin.USER, priority=0, log=log)


ACCEPT = Verdict(action=Action.ACCEPT)
DROP = Verdict(action=Action.DROP)
MARK = Verdict(action=Action.MARK, mark=0x1, mask=0xFF, mark_name="bypass")


def _reader(classify: object, decisions: tuple[Decision, ...], on_error: Verdict = ACCEPT,
            **kw: object) -> QueueReader:
    return QueueReader(0, Judge.build(classify, decisions, on_error=on_error), **kw)  # type: ignore[arg-type]


class TestCallback:
    @pytest.mark.parametrize(("verdict", "expected", "mark"), [
        (ACCEPT, "accept", 0xABCD00), (DROP, "drop", 0xABCD00), (MARK, "accept", 0xABCD01)])
    def test_one_verdict_per_packet(self, verdict: Verdict, expected: str, mark: int) -> None:
        """The table's verdict is given once; a mark keeps the bits outside its mask."""
        reader = _reader(lambda *a: 0, (_decision(verdict),))
        pkt = FakePacket(mark=0xABCD00)
        reader._callback(pkt)
        assert pkt.verdicts == [expected]
        assert pkt.mark == mark
        assert reader.stats.packets == 1

    @pytest.mark.parametrize("on_error", [ACCEPT, DROP, MARK])
    def test_exception_in_classify_gives_on_error(self, on_error: Verdict) -> None:
        """A failing classifier costs no verdict: on_error is applied and counted."""
        def boom(*_a: object) -> int:
            raise ValueError("boom")
        seen: list[BaseException] = []
        reader = _reader(boom, (_decision(ACCEPT),), on_error, on_exception=seen.append)
        pkt = FakePacket()
        reader._callback(pkt)
        assert pkt.verdicts == ["drop" if on_error is DROP else "accept"]
        assert reader.stats.errors == 1 and isinstance(seen[0], ValueError)

    def test_payload_failure_gives_on_error(self) -> None:
        """Even reading the payload failing yields exactly one verdict."""
        reader = _reader(lambda *a: 0, (_decision(DROP),), ACCEPT)
        pkt = FakePacket()
        pkt.fail_payload = True
        reader._callback(pkt)
        assert pkt.verdicts == ["accept"]

    def test_out_of_range_index_gives_on_error(self) -> None:
        """An index the plan does not hold is an error, not a crash."""
        reader = _reader(lambda *a: 7, (_decision(DROP),), ACCEPT)
        pkt = FakePacket()
        reader._callback(pkt)
        assert pkt.verdicts == ["accept"] and reader.stats.errors == 1

    def test_failing_logger_keeps_the_verdict(self) -> None:
        """A failure after the verdict (logging) is counted but never re-verdicts."""
        def bad_log(*_a: object) -> None:
            raise OSError("journal full")
        reader = _reader(lambda *a: 0, (_decision(DROP, log=True),), ACCEPT, on_logged=bad_log)
        pkt = FakePacket()
        reader._callback(pkt)
        assert pkt.verdicts == ["drop"] and reader.stats.errors == 1

    def test_judge_swap_is_seen_by_next_packet(self) -> None:
        """Swapping the Judge changes the next packet's verdict, not the current one's."""
        reader = _reader(lambda *a: 0, (_decision(ACCEPT),))
        first = FakePacket()
        reader._callback(first)
        reader.judge = Judge.build(lambda *a: 0, (_decision(DROP),), on_error=ACCEPT)
        second = FakePacket()
        reader._callback(second)
        assert (first.verdicts, second.verdicts) == (["accept"], ["drop"])


class TestApplyVerdict:
    def test_mark_with_mask(self) -> None:
        """apply_verdict sets (mark & ~mask) | value and accepts."""
        pkt = FakePacket(mark=0xF0F0)
        apply_verdict(pkt, Verdict(action=Action.MARK, mark=0x5, mask=0xF))
        assert pkt.mark == 0xF0F5 and pkt.verdicts == ["accept"]


class TestBindErrors:
    def test_kernel_without_nfnetlink_queue(self, monkeypatch: pytest.MonkeyPatch) -> None:
        """No nfnetlink_queue in the kernel: a precise EnvironmentProblem naming the module."""
        import shim.adapters.reader
        from shim.core.errors import EnvironmentProblem

        import netfilterqueue

        def no_support(**_kw: object) -> None:
            raise OSError(97, "Address family not supported by protocol")

        # What a kernel without the module does: the handle cannot be opened, /proc has no file.
        monkeypatch.setattr(netfilterqueue, "NetfilterQueue", no_support)
        monkeypatch.setattr(shim.adapters.reader, "NFQUEUE_PROC", "/nonexistent/nfnetlink_queue")
        reader = _reader(lambda *a: 0, (_decision(ACCEPT),))
        with pytest.raises(EnvironmentProblem, match="modprobe nfnetlink_queue") as info:
            reader.bind()
        assert info.value.exit_code == 3
