"""engine/fast/transfer.py: host/device copies that never wait for queued work."""

from __future__ import annotations

import torch


def test_a_ticket_reads_its_tokens_before_its_buffer_is_reused():
    from interp_playground.engine.fast.transfer import Staging, TicketRing

    ring = TicketRing(2, 4, torch.device("cpu"))
    tickets = [ring.ticket(torch.tensor([i, i + 1, i + 2])) for i in range(5)]  # buffers reused twice
    assert [t.tokens() for t in tickets] == [[i, i + 1, i + 2] for i in range(5)]
    staging = Staging(torch.device("cpu"))
    with staging.bank():
        t = torch.arange(6).view(2, 3)
        assert torch.equal(staging.to_device(t), t)

