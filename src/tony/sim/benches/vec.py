"""What the unit testbenches of tony_vec_unit share: the activation buffer's two registered read
ports served from a dict, the idle inputs, one EWISE's walk over consecutive words, and the loop
that runs an instruction and hands each result word to the bench's check."""
from __future__ import annotations

from typing import Callable

from cocotb.triggers import FallingEdge, Timer

from .common import start_clock, unpack

AMASK = (1 << 20) - 1      # the ISA's address width

# the parameter sets the unit benches run: ACC_BITS 32, and 24, whose byte shifts do not fill a power of 2
PARAMS = [{"COLS": 4, "A_BITS": 8, "ACC_BITS": 32}, {"COLS": 8, "A_BITS": 8, "ACC_BITS": 24}]


def param_id(params: dict) -> str:
    return "_".join(f"{k}{v}" for k, v in params.items())

INPUTS = ("go_i", "pool_i", "a_signed_i", "b_signed_i", "has_b_i", "max_i", "merge_i", "table_i", "tab_we_i",
          "tab_waddr_i", "tab_wdata_i", "rot_i", "mlo_i", "boff_i", "sa_i", "sb_i", "mult_i", "shift_i", "lo_i",
          "hi_i", "act_rdata_i")


def ewise_walk(base: int, obase: int, words: int) -> dict:
    """The walk fields of an EWISE over `words` consecutive words (as the compiler emits it)."""
    return dict(ibase=base, obase=obase, npix=words, ow=4095, oh=1, oy0=0, sw=1, sh=1, ixs=0, iys=0, ix0=0,
                iy0=0, rjump=0, sjump=1, h=1, w=4095, kh=1, kw=1, dh=1, dw=1, dhw=0, lane0=0, cstride=0,
                klen=1, period=1)


class VecBench:
    def __init__(self, dut, rng):
        self.dut, self.rng = dut, rng
        self.cols = int(dut.COLS.value)
        self.a_bits = int(dut.A_BITS.value)
        self.acc_bits = int(dut.ACC_BITS.value)
        self.act: dict[int, int] = {}       # activation word address -> packed lanes
        self.pending = (0, 0, 0)            # (read enable, address a, address b) of the previous cycle
        start_clock(dut.clk_i)

    def idle(self) -> None:
        for name in INPUTS:
            getattr(self.dut, name).value = 0

    def store(self, base: int, words: list[list[int]]) -> None:
        """Words of COLS lane values from `base` on, each lane's low A_BITS bits."""
        mask = (1 << self.a_bits) - 1
        for k, w in enumerate(words):
            self.act[(base + k) & AMASK] = sum((v & mask) << (lane * self.a_bits) for lane, v in enumerate(w))

    def set_fields(self, fields: dict) -> None:
        """Each field's `<name>_i` input, cut to its width."""
        for k, v in fields.items():
            port = getattr(self.dut, f"{k}_i")
            port.value = v & ((1 << len(port)) - 1)

    async def execute(self, obase: int, words: int, check: Callable[[int, list[int]], None],
                      timeout: int) -> None:
        """Pulse go_i (the fields already set), serve the reads, and call check(k, lanes) with the k-th
        result word (pp_acc_o's signed lanes), in order at obase + k, until all `words` are out and
        the unit is idle."""
        d = self.dut
        d.go_i.value = 1
        await FallingEdge(d.clk_i)
        d.go_i.value = 0
        got = 0
        for _ in range(timeout):
            # the activation buffer: a read in cycle t is answered during cycle t + 1, both ports
            en, ra, rb = self.pending
            d.act_rdata_i.value = (self.act.get(ra, 0) | self.act.get(rb, 0) << (self.cols * self.a_bits)) if en else 0
            await Timer(1, unit="ns")
            addr = int(d.act_raddr_o.value)
            self.pending = (int(d.act_re_o.value) & 1, addr & AMASK, (addr >> 20) & AMASK)
            if int(d.pp_valid_o.value):
                k = (int(d.pp_waddr_o.value) - obase) & AMASK
                assert k == got, f"result {got} written at obase + {k}"
                check(k, unpack(int(d.pp_acc_o.value), self.cols, self.acc_bits, is_signed=True))
                got += 1
            await FallingEdge(d.clk_i)
            if got == words and not int(d.busy_o.value):
                break
        assert got == words, f"{got} of {words} results"
