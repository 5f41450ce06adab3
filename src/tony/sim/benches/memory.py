"""A light external-memory model for tony_accel's valid/ready memory port.

The memory accepts a request in every cycle (mem_req_ready_i tied high by the caller) and
answers a read accepted in cycle t with one cycle of mem_resp_valid_i in cycle t + latency.
It touches signals only while requests are in flight: when the port is idle it sleeps until
mem_req_valid_o rises, so a long compute phase costs no Python time.
"""
from __future__ import annotations

from collections import deque

import cocotb
from cocotb.triggers import FallingEdge, RisingEdge
from cocotb.utils import get_sim_time


class Memory:
    """Word-addressed memory of MEM_BITS-bit beats, served on the DUT's mem_* port."""

    def __init__(self, dut, words, latency: int = 2, period_ns: int = 10, pause=None, latencies=None):
        """`latency`: cycles from an accepted read to its response (fixed, what the cycle model
        assumes). Optional, for stress tests: `pause` yields True for a cycle in which no request
        is accepted (mem_req_ready_i low), `latencies` yields each read's latency (responses
        stay in order)."""
        if latency < 1:
            raise ValueError("latency must be >= 1 cycle")
        self.dut = dut
        self.mem = list(int(w) for w in words)
        self.latency = latency
        self.period = period_ns
        self.pause = pause
        self.latencies = latencies
        self.reads = self.writes = 0
        self._ready = 0 if pause is not None and next(pause) else 1
        dut.mem_req_ready_i.value = self._ready
        dut.mem_resp_valid_i.value = 0
        dut.mem_resp_rdata_i.value = 0
        self._task = cocotb.start_soon(self._serve())

    def _now(self) -> int:
        return int(get_sim_time(unit="ns")) // self.period

    async def _serve(self) -> None:
        d = self.dut
        pending: deque = deque()  # (due cycle, data)
        driving = False
        last_due = -1
        ready = self._ready  # (a value just written is not readable back until the next step)
        while True:
            if not pending and not driving and not int(d.mem_req_valid_o.value):
                await RisingEdge(d.mem_req_valid_o)
            await FallingEdge(d.clk_i)
            now = self._now()
            # what is driven now is what the DUT samples at the edge that ends this cycle
            if self.pause is not None:
                ready = 0 if next(self.pause) else 1
                d.mem_req_ready_i.value = ready
            if ready and int(d.mem_req_valid_o.value):
                addr = int(d.mem_req_addr_o.value)
                if int(d.mem_req_we_o.value):
                    self.mem[addr] = int(d.mem_req_wdata_o.value)
                    self.writes += 1
                else:
                    lat = next(self.latencies) if self.latencies is not None else self.latency
                    last_due = max(now + lat, last_due + 1)
                    pending.append((last_due, self.mem[addr]))
                    self.reads += 1
            if pending and pending[0][0] == now:
                _, data = pending.popleft()
                d.mem_resp_valid_i.value = 1
                d.mem_resp_rdata_i.value = data
                driving = True
            elif driving:
                d.mem_resp_valid_i.value = 0
                driving = False
