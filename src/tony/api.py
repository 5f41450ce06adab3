"""Python API: load a model into the IR, run the reference."""
from __future__ import annotations

from . import ir
from .frontend.load import load_model
from .frontend.lower import lower
from .frontend.passes import fold_batchnorm, fold_constants, toposort
from .frontend.qonnx import expand_qonnx
from .frontend.qop import expand_qoperators
from .ir.types import Rounding
from .ref.feeds import normalize_inputs, restack

__all__ = ["load_ir", "normalize_inputs", "restack", "run_reference"]


def load_ir(model, *, requant: str = "auto", rounding: str | Rounding = Rounding.HALF_EVEN) -> ir.Graph:
    """ONNX model (path or ModelProto) -> verified integer IR."""
    m = load_model(model)
    m = fold_constants(toposort(m))
    m = fold_batchnorm(m)
    m = expand_qonnx(m, Rounding(rounding))
    m = expand_qoperators(m)
    return lower(m, requant=requant, rounding=Rounding(rounding))


def run_reference(model, inputs, *, requant: str = "auto") -> list:
    """See tony.run_reference."""
    from .ref import execute

    g = model if isinstance(model, ir.Graph) else load_ir(model, requant=requant)
    feeds, stacked = normalize_inputs(g, inputs)
    return restack(g, execute(g, feeds), stacked)
