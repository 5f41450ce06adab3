"""The onnx package's own node test cases for the integer operators run bit-exactly in the reference
(golden values: the cases' expected outputs), and float8/float4/dynamic cases are refused."""
import pytest

from tony.errors import UnsupportedError
from tony.tools import conformance

CASES = conformance.node_cases()


def test_the_integer_cases_are_all_there():
    names = {c.name for c in CASES}
    expected_pass = [c for c in CASES if conformance.expectation(c)[0] == "pass"]
    assert len(expected_pass) >= 31, len(expected_pass)
    for must in ("test_qlinearconv", "test_qlinearmatmul_3D_int8_float16", "test_convinteger_with_padding",
                 "test_matmulinteger", "test_quantizelinear_blocked_symmetric", "test_dequantizelinear_int2"):
        assert must in names


@pytest.mark.parametrize("case", CASES, ids=[c.name for c in CASES])
def test_node_case(case):
    r = conformance.run_case(case)
    assert r.ok, f"{r.name}: expected {r.expect}, got {r.status}: {r.detail}"


@pytest.mark.parametrize("case", [c for c in CASES if conformance.expectation(c)[0] == "refuse"],
                         ids=lambda c: c.name)
def test_refusal_is_an_unsupported_error_naming_the_cause(case):
    from tony.api import load_ir

    model, _, _ = conformance.as_tony_model(case)
    with pytest.raises(UnsupportedError) as e:
        load_ir(model, requant="multiplier")
    msg = str(e.value)
    assert any(k in msg for k in ("FLOAT8", "FLOAT4", "DynamicQuantizeLinear")), msg


def test_qlinear_cases_need_multiplier_mode():
    """pow2 mode must refuse QLinearConv's non-pow2 rescale, pointing to the two ways out."""
    from tony.api import load_ir

    case = next(c for c in CASES if c.name == "test_qlinearconv")
    model, _, _ = conformance.as_tony_model(case)
    with pytest.raises(UnsupportedError, match="--requant multiplier.*--snap-pow2"):
        load_ir(model, requant="pow2")


def test_conformance_table_lists_every_case():
    results = [conformance.CaseResult("test_x", "QLinearConv", "pass", "fail", "1 of 4 elements differ")]
    text = conformance.table(results)
    assert "| QLinearConv | 1 | 0 | 0 | 1 |" in text
    assert "**(wrong)**" in text
