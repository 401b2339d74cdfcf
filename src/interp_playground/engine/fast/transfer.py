"""Copies between host and device that never make the host wait for queued device work.

A copy from pageable host memory to the GPU blocks the host until the stream has run everything
queued before it (a decode step in flight: ~30 ms); allocating pinned memory per copy costs about as
much. :class:`Staging` keeps a few banks of pinned memory: each call of the runner that sends data
(a prefill, a release, a compaction) takes the next bank, writes its tensors into it and queues
their copies; a bank is rewritten only once the device has done the copies out of it (an event
recorded after each), and a bank too small for a call grows (once). :class:`Ticket` brings tokens
back the same way, into pinned buffers that are reused in turn; a ticket whose buffer is about to
be reused reads its tokens first.

On the CPU both are plain copies.
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterator

import torch

#: Pinned bytes a staging bank starts with (it grows for a call that sends more).
BANK_BYTES = 16 << 20
#: Staging banks (a bank is reused after this many sending calls).
BANKS = 4
#: Byte alignment of each tensor inside a bank.
ALIGN = 64


class Ticket:
    """Tokens that queued device work will produce, copied to host memory as the device gets there:
    :meth:`tokens` waits for them (and only for them)."""

    def __init__(self, values: torch.Tensor, host: torch.Tensor) -> None:
        self.n = len(values)
        self.host = host
        host[: self.n].copy_(values, non_blocking=True)
        self.event = None
        if values.device.type == "cuda":
            self.event = torch.cuda.Event()
            self.event.record()
        self._tokens: list[int] | None = None

    def tokens(self) -> list[int]:
        """The tokens, one per row (waits for the device to reach them; read once, then kept)."""
        if self._tokens is None:
            if self.event is not None:
                self.event.synchronize()
            self._tokens = self.host[: self.n].tolist()
        return self._tokens


class TicketRing:
    """Pinned host buffers of ``size`` tokens for tickets, used in turn: before a buffer is reused,
    the ticket that last used it reads its tokens."""

    def __init__(self, count: int, size: int, device: torch.device) -> None:
        pinned = device.type == "cuda"
        self.buffers = [torch.zeros(size, dtype=torch.long, pin_memory=pinned) for _ in range(count)]
        self.holders: list[Ticket | None] = [None] * count
        self.next = 0

    def ticket(self, values: torch.Tensor) -> Ticket:
        """A ticket for ``values`` (at most ``size`` of them) in the next buffer."""
        i = self.next
        self.next = (i + 1) % len(self.buffers)
        holder = self.holders[i]
        if holder is not None:
            holder.tokens()
        ticket = self.holders[i] = Ticket(values, self.buffers[i])
        return ticket


class Staging:
    """Pinned banks for host-to-device copies (see the module); :meth:`to_device` outside a
    :meth:`bank` scope, or on the CPU, copies plainly."""

    def __init__(self, device: torch.device, banks: int = BANKS, nbytes: int = BANK_BYTES) -> None:
        self.device = device
        self.on = device.type == "cuda"
        self.banks = [torch.empty(nbytes if self.on else 0, dtype=torch.uint8, pin_memory=self.on)
                      for _ in range(banks)]
        self.events: list[torch.cuda.Event | None] = [None] * banks
        self.current: int | None = None
        self.offset = 0
        self.turn = 0

    @contextlib.contextmanager
    def bank(self) -> Iterator[None]:
        """Send this scope's tensors through the next bank (a nested scope shares its bank)."""
        if not self.on or self.current is not None:
            yield
            return
        i = self.current = self.turn
        self.turn = (i + 1) % len(self.banks)
        event = self.events[i]
        if event is not None:
            event.synchronize()  # the device has read what the bank last held
        self.offset = 0
        try:
            yield
        finally:
            self.current = None

    def to_device(self, t: torch.Tensor) -> torch.Tensor:
        """``t`` (a host tensor) on the device, without waiting for queued device work when it fits
        in the current bank."""
        if self.current is None:
            return t.to(self.device)
        i = self.current
        n = t.numel() * t.element_size()
        start = -(-self.offset // ALIGN) * ALIGN
        if start + n > len(self.banks[i]):
            # a larger bank (the old one's memory stays with the host allocator until the copies
            # already queued from it have run)
            self.banks[i] = torch.empty(2 * (len(self.banks[i]) + n), dtype=torch.uint8, pin_memory=True)
            start = 0
        view = self.banks[i][start: start + n].view(t.dtype).view(t.shape)
        view.copy_(t)
        self.offset = start + n
        out = view.to(self.device, non_blocking=True)
        event = self.events[i] = torch.cuda.Event()
        event.record()
        return out
