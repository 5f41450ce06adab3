"""One accelerator per board: `tony hw` renders an overlay once, `tony compile --hw` compiles models
for it without re-rendering (docs/overlay.md).

With one ecp5-85k overlay every bundled workload compiles (the program checker and the cycle model
run on each), the build's Verilog is the overlay's byte for byte, and the digits models run
bit-exact in the Python model; digits-cnn and digits-mlp run on Verilator bit-exact with the cycles
predicted, every workload behind -m slow. Fixed weight and bias buffers smaller than a model wants
are tiled (weight blocks without prefetch, bias windows reloaded); what cannot fit is refused in one
line naming the layer and the buffer."""
import filecmp
import json

import numpy as np
import pytest

from tony.accel import model as am
from tony.accel.compiler import compile_program
from tony.accel.layout import input_beats, read_outputs
from tony.api import load_ir, normalize_inputs
from tony.compiler import compile_model
from tony.hw import PARTS, PRESETS, estimate, open_overlay, render_overlay
from tony.ref import execute

WORKLOADS = ["digits-mlp", "digits-cnn", "digits-mobilenet", "resnet8", "dscnn", "mobilenet-v1-025",
             "fc-autoencoder"]


@pytest.fixture(scope="module")
def workload(bundled):
    return bundled


@pytest.fixture(scope="module")
def hw85(tmp_path_factory):
    out = tmp_path_factory.mktemp("hw") / "ecp5_85k"
    render_overlay(PRESETS["ecp5-85k"], out)
    return out


def _same_tree(a, b, sub):
    files = sorted(p.name for p in (a / sub).iterdir())
    assert files and files == sorted(p.name for p in (b / sub).iterdir())
    match, mismatch, errors = filecmp.cmpfiles(a / sub, b / sub, files, shallow=False)
    assert not mismatch and not errors, (mismatch, errors)


def _bit_exact_in_model(model_dir, prog, g, samples=1):
    x = np.load(model_dir / "inputs.npy")[:samples]
    feeds, _ = normalize_inputs(g, x)
    env = execute(g, feeds, keep_all=True)
    qin = next(op.outputs[0] for op in g.ops if op.host and op.kind == "quantize")
    compared = 0
    for s in range(samples):
        ext = am.run(prog, input_beats(prog, {qin: env[qin][s:s + 1]}))
        for name, y in read_outputs(prog, ext).items():
            assert np.array_equal(y, env[name][s:s + 1]), (name, s)
            compared += y.size
    assert compared > 0


# ---- the overlay folder ------------------------------------------------------------------------------

def test_overlay_folder_holds_config_part_hashes_and_rtl(hw85):
    info = json.loads((hw85 / "hw.json").read_text())
    assert info["kind"] == "hw" and info["name"] == "ecp5-85k" and info["rounding"] == "half_even"
    assert info["part"]["device"] == "LFE5U-85F"
    assert info["accel"]["rows"] == 8 and info["accel"]["imem_words"] == 2048
    assert info["hdl_params"]["ROUND_MODE"] == 0 and len(info["templates_sha256"]) == 64
    assert (hw85 / "rtl" / "tony_accel.v").is_file() and (hw85 / "rtl_axi" / "tony_axi_top.v").is_file()
    assert (hw85 / "tony_accel.core").is_file() and (hw85 / "filelist_axi.f").is_file()
    header = (hw85 / "rtl" / "tony_accel.v").read_text().splitlines()[1]
    assert "ABUF_WORDS=2048" in header and "IMEM_WORDS=2048" in header and "ROUND_MODE=0" in header
    assert set(info["files_sha256"]) == {f"rtl/{f}" for f in info["rtl"]} | set(info["axi"]["rtl"])


@pytest.mark.parametrize("name", sorted(PRESETS))
def test_preset_estimate_is_within_the_part_except_ice40(name):
    ov = PRESETS[name]
    est = estimate(ov.cfg, PARTS[ov.part])
    assert est["bram"]["used"] == sum(est["bram"]["per_buffer"].values())
    # the UP5K cannot hold the 512-bit instruction memory (32 EBRs wide) nor the PPU's multipliers
    assert est["over"] == (["bram", "dsp"] if name == "ice40-up5k" else [])


def test_estimate_counts_each_activation_bank_in_whole_block_rams():
    """A split on a block-RAM boundary costs no block RAM; elsewhere each bank of each copy rounds
    up on its own (ecp5-85k: 2048 x 64 bits is 8 DP16KD of 2048 x 9 per copy, 9 copies)."""
    from dataclasses import replace

    cfg, part = PRESETS["ecp5-85k"].cfg, PARTS["ecp5-85k"]
    one = estimate(cfg, part)["bram"]["per_buffer"]["activation"]
    assert estimate(replace(cfg, abuf_split=1024), part)["bram"]["per_buffer"]["activation"] == one == 9 * 8
    # 1000 x 64 bits: 4 cells of 1024 x 18; 1048 x 64: 6 cells of 512 x 36
    assert estimate(replace(cfg, abuf_split=1000), part)["bram"]["per_buffer"]["activation"] == 9 * (4 + 6)


# ---- every workload on the ecp5-85k overlay -------------------------------------------------------------

@pytest.mark.parametrize("name", WORKLOADS)
def test_every_workload_compiles_for_the_ecp5_85k_overlay(workload, hw85, tmp_path, name):
    d = workload(name)
    out = tmp_path / "build"
    m = compile_model(d / "model.onnx", out, hw=hw85, samples=1)  # checks the program, predicts cycles
    info = json.loads((hw85 / "hw.json").read_text())
    assert m["accel"] == info["accel"] and m["rounding"] == info["rounding"]
    assert m["hw"]["hw_json_sha256"] == open_overlay(hw85).sha256
    assert 0 < m["program"]["boot"] <= info["accel"]["imem_words"]
    assert m["predicted_cycles"] > 0 and m["rtl"] == info["rtl"]
    assert m["axi"]["build_id"] == info["axi"]["build_id"]
    _same_tree(hw85, out, "rtl")
    _same_tree(hw85, out, "rtl_axi")


@pytest.mark.parametrize("name", ["digits-mlp", "digits-cnn", "digits-mobilenet"])
def test_digits_workloads_on_the_overlay_are_bit_exact_in_the_model(workload, name):
    d = workload(name)
    g = load_ir(d / "model.onnx", requant="pow2")
    prog = compile_program(g, PRESETS["ecp5-85k"].cfg)
    assert prog.cfg == PRESETS["ecp5-85k"].cfg
    _bit_exact_in_model(d, prog, g, samples=2)


def _sim(workload, hw, tmp_path, name, samples):
    from tony.sim.accel import simulate

    d = workload(name)
    out = tmp_path / name
    compile_model(d / "model.onnx", out, hw=hw, inputs=np.load(d / "inputs.npy")[:samples])
    rep = simulate(out, progress=False)
    assert rep["bit_exact"] and rep["compared"] > 0, rep["first_mismatches"]
    assert rep["cycles_match"] and rep["issue_match"], (rep["cycles_per_run"], rep["predicted_cycles"])
    return rep


@pytest.mark.sim
@pytest.mark.parametrize("name", ["digits-cnn", "digits-mlp"])
def test_overlay_build_is_bit_exact_and_cycle_exact_on_verilator(workload, hw85, tmp_path, name):
    rep = _sim(workload, hw85, tmp_path, name, samples=2)
    assert rep["runs"] == 2


@pytest.mark.sim
@pytest.mark.slow
@pytest.mark.parametrize("name", WORKLOADS)
def test_every_workload_on_the_overlay_on_verilator(workload, hw85, tmp_path, name):
    _sim(workload, hw85, tmp_path, name, samples=1)


# ---- fixed weight and bias buffers smaller than the model wants: tiled -----------------------------------

def _toml(tmp_path, text, name="small"):
    p = tmp_path / f"{name}.toml"
    p.write_text(text)
    return p


SMALL = """rows = 4
cols = 4
abuf_words = 256
wbuf_words = 130
bbuf_words = 3
imem_words = 512
mem_bits = 32
"""


def test_small_weight_and_bias_buffers_are_tiled_bit_exact(workload, tmp_path):
    from tony.hw import from_toml

    ov = from_toml(_toml(tmp_path, SMALL))
    after_stream = {}
    for name in ("digits-mobilenet", "digits-cnn"):
        d = workload(name)
        g = load_ir(d / "model.onnx", requant="pow2")
        prog = compile_program(g, ov.cfg)  # the checker holds every weight/bias hazard rule
        assert prog.cfg == ov.cfg
        assert sum(t.startswith("LOAD bias") for t in prog.text) > 1  # bias windows reloaded
        # a weight block loaded only after the previous CONV streamed: LOAD wgt right after SYNC dma|stream
        after_stream[name] = any(a == "SYNC dma|stream" and b.startswith("LOAD wgt")
                                 for a, b in zip(prog.text, prog.text[1:]))
        _bit_exact_in_model(d, prog, g)
    # digits-cnn's 72-word blocks do not fit the small weight buffer twice; mobilenet's all do
    assert after_stream == {"digits-mobilenet": False, "digits-cnn": True}


@pytest.mark.sim
def test_small_buffers_are_bit_exact_and_cycle_exact_on_verilator(workload, tmp_path):
    from tony.hw import from_toml

    hw = tmp_path / "hw"
    render_overlay(from_toml(_toml(tmp_path, SMALL)), hw)
    _sim(workload, hw, tmp_path, "digits-cnn", samples=1)


# ---- what cannot fit is refused in one line, nothing written ----------------------------------------------

def _huge_dense(path):
    from onnx import TensorProto, helper, numpy_helper

    from tony.quant.qdq import quantize_static

    rng = np.random.default_rng(0)
    w = numpy_helper.from_array(rng.normal(0, 0.05, (4096, 16)).astype(np.float32), "w")
    x = helper.make_tensor_value_info("x", TensorProto.FLOAT, [1, 4096])
    y = helper.make_tensor_value_info("y", TensorProto.FLOAT, [1, 16])
    n = helper.make_node("MatMul", ["x", "w"], ["y"], name="huge_fc")
    m = helper.make_model(helper.make_graph([n], "g", [x], [y], [w]), opset_imports=[helper.make_opsetid("", 13)])
    q = quantize_static(m, rng.uniform(-1, 1, (4, 4096)).astype(np.float32))
    from tony.build import write_onnx

    write_onnx(path, q)
    return path


def _refused(tony_cli, *args):
    r = tony_cli(*args)
    assert r.returncode == 1, r.stdout + r.stderr
    lines = r.stderr.strip().splitlines()
    assert len(lines) == 1 and "Traceback" not in r.stderr, r.stderr
    return lines[0]


def test_a_weight_block_larger_than_the_weight_buffer_is_refused_naming_the_layer(hw85, tmp_path, tony_cli):
    model = _huge_dense(tmp_path / "huge.onnx")
    line = _refused(tony_cli, "compile", model, "--hw", hw85, "-o", tmp_path / "out")
    assert '"huge_fc"' in line and "weight buffer holds 2048" in line and "4096" in line
    assert not (tmp_path / "out").exists()


def test_a_preset_too_small_is_refused_naming_the_layer_and_the_buffer(workload, tmp_path, tony_cli):
    hw = tmp_path / "up5k"
    render_overlay(PRESETS["ice40-up5k"], hw)
    line = _refused(tony_cli, "compile", workload("resnet8") / "model.onnx", "--hw", hw, "-o", tmp_path / "out")
    assert line.startswith('tony compile: error: node "') and "activation-buffer words" in line
    assert "the buffer has 256" in line
    assert not (tmp_path / "out").exists()


@pytest.mark.sim
def test_a_program_longer_than_the_instruction_memory_runs_in_pages_on_verilator(workload, tmp_path):
    """digits-cnn (27 instructions) on an ecp5-85k overlay with a 16-word instruction memory: the
    host boots the first page, each page loads the next; bit-exact, cycles and every issue cycle as
    the cycle model predicts."""
    from dataclasses import replace

    from tony.hw import Overlay

    hw = tmp_path / "hw"
    render_overlay(Overlay("tiny-imem", replace(PRESETS["ecp5-85k"].cfg, imem_words=16)), hw)
    rep = _sim(workload, hw, tmp_path, "digits-cnn", samples=2)
    m = json.loads((tmp_path / "digits-cnn" / "manifest.json").read_text())
    assert m["program"]["length"] > 16 and m["program"]["boot"] == 16
    text = (tmp_path / "digits-cnn" / "program.txt").read_text()
    assert text.count("LOAD imem[0]") == -(-(m["program"]["length"] - 16) // 16)
    assert rep["runs"] == 2


@pytest.mark.parametrize("name", ["digits-mlp", "digits-mobilenet"])
def test_programs_in_pages_are_bit_exact_in_the_model(workload, name):
    """Pages of 16 instructions: the model runs them page by page; the checker holds every page LOAD
    to the instructions that follow it."""
    from dataclasses import replace

    d = workload(name)
    g = load_ir(d / "model.onnx", requant="pow2")
    cfg = replace(PRESETS["ecp5-85k"].cfg, imem_words=16)
    prog = compile_program(g, cfg)
    assert len(prog.words) > 16 and prog.boot_words == 16
    _bit_exact_in_model(d, prog, g, samples=2)


# ---- bad configurations and options ------------------------------------------------------------------------

@pytest.mark.parametrize("text,needle", [
    ("rows = 8\n", "missing key(s) cols"),
    ('preset = "ecp5-85k"\nrowz = 4\n', "unknown key(s) rowz"),
    ('preset = "ecp5-85k"\nrows = 0\n', "rows = 0"),
    ('preset = "ecp5-85k"\nabuf_words = "big"\n', "abuf_words = 'big'"),
    ('preset = "ecp5-85k"\nmem_bits = 48\n', "mem_bits = 48"),
    ('preset = "ecp5-85k"\nrounding = "nearest"\n', "rounding = 'nearest'"),
    ('preset = "ecp5-85k"\npart = "ice99"\n', "part = 'ice99'"),
    ('preset = "ecp5-99k"\n', "no preset 'ecp5-99k'"),
    ('preset = "ecp5-85k"\nimem_words = 100000\n', "imem_words = 100000"),
    ('preset = "ecp5-85k"\nabuf_split = 2048\n', "abuf_split = 2048"),
    ('preset = "ecp5-85k"\nsmx_n = -2\n', "smx_n = -2"),
    ('preset = "ecp5-85k"\nsmx_n = 5000\n', "smx_n = 5000"),
    ('preset = "ecp5-85k"\nln_n = -2\n', "ln_n = -2"),
    ('preset = "ecp5-85k"\nln_n = 5000\n', "ln_n = 5000"),
    ("rows = [\n", "not a TOML file"),
])
def test_bad_config_is_refused_in_one_line(tmp_path, tony_cli, text, needle):
    line = _refused(tony_cli, "hw", "--config", _toml(tmp_path, text, "bad"), "-o", tmp_path / "hw")
    assert needle in line and "--config" in line
    assert not (tmp_path / "hw").exists()


def test_bad_preset_name_and_missing_choice_are_refused(tmp_path, tony_cli):
    r = tony_cli("hw", "--preset", "ecp5-12k", "-o", tmp_path / "hw")
    assert r.returncode == 2 and "invalid choice: 'ecp5-12k'" in r.stderr and len(r.stderr.splitlines()) == 1
    line = _refused(tony_cli, "hw", "-o", tmp_path / "hw")
    assert "--preset NAME or --config HW.toml" in line


def test_config_from_a_preset_with_rounding_is_honoured(workload, tmp_path, tony_cli):
    hw = tmp_path / "hw"
    r = tony_cli("hw", "--config", _toml(tmp_path, 'preset = "ecp5-85k"\nrounding = "half_up"\n', "hu"), "-o", hw)
    assert r.returncode == 0, r.stderr
    assert "ROUND_MODE=1" in (hw / "rtl" / "tony_accel.v").read_text().splitlines()[1]
    model = workload("digits-mlp") / "model.onnx"
    r = tony_cli("compile", model, "--hw", hw, "-o", tmp_path / "b", "--samples", "1")
    assert r.returncode == 0, r.stderr
    assert json.loads((tmp_path / "b" / "manifest.json").read_text())["rounding"] == "half_up"
    line = _refused(tony_cli, "compile", model, "--hw", hw, "--rounding", "half_even", "-o", tmp_path / "c")
    assert "rounds half_up (ROUND_MODE 1)" in line


@pytest.mark.parametrize("flag", [["--array", "4x4"], ["--abuf-words", "512"], ["--backend", "hls"]])
def test_options_the_overlay_fixes_are_refused_with_hw(workload, hw85, tmp_path, tony_cli, flag):
    line = _refused(tony_cli, "compile", workload("digits-mlp") / "model.onnx", "--hw", hw85, *flag,
                    "-o", tmp_path / "out")
    assert flag[0] in line


def test_a_folder_that_is_not_an_overlay_or_was_edited_is_refused(workload, hw85, tmp_path, tony_cli):
    import shutil

    model = workload("digits-mlp") / "model.onnx"
    line = _refused(tony_cli, "compile", model, "--hw", tmp_path, "-o", tmp_path / "out")
    assert "not an overlay folder (no hw.json)" in line
    edited = tmp_path / "edited"
    shutil.copytree(hw85, edited)
    with open(edited / "rtl" / "tony_mac.v", "a") as f:
        f.write("// edited\n")
    line = _refused(tony_cli, "compile", model, "--hw", edited, "-o", tmp_path / "out")
    assert "rtl/tony_mac.v is not what this Tony" in line and "tony hw" in line


def test_hw_does_not_overwrite_a_folder_that_is_not_an_overlay(tmp_path, tony_cli):
    keep = tmp_path / "mine"
    keep.mkdir()
    (keep / "notes.txt").write_text("keep")
    line = _refused(tony_cli, "hw", "--preset", "ecp5-25k", "-o", keep)
    assert "refusing to overwrite" in line and (keep / "notes.txt").read_text() == "keep"


def test_fixed_buffer_flags_of_a_model_sized_build(workload, tmp_path, tony_cli):
    out = tmp_path / "b"
    r = tony_cli("compile", workload("digits-cnn") / "model.onnx", "--wbuf-words", "130", "--bbuf-words", "2",
                 "--imem-words", "64", "--samples", "1", "-o", out)
    assert r.returncode == 0, r.stderr
    acc = json.loads((out / "manifest.json").read_text())["accel"]
    assert (acc["wbuf_words"], acc["bbuf_words"], acc["imem_words"]) == (130, 2, 64)
    assert "WBUF_WORDS=130" in (out / "rtl" / "tony_accel.v").read_text().splitlines()[1]


def test_overlay_name_is_sanitized_in_the_fusesoc_core(tmp_path):
    from tony.hw import Overlay

    hw = tmp_path / "hw"
    render_overlay(Overlay('a"; rm -rf /\n#x', PRESETS["ecp5-25k"].cfg), hw)
    core = (hw / "tony_accel.core").read_text()
    name = next(line for line in core.splitlines() if line.startswith("name: "))
    assert name.startswith("name: tony:generated:overlay_a_rm_rf") and '"' not in name and ";" not in name
    assert json.loads((hw / "hw.json").read_text())["name"] == 'a"; rm -rf /\n#x'


def test_an_overlay_has_a_softmax_unit_only_when_its_config_asks_for_one(tmp_path):
    """No Softmax unit unless HW.toml sets smx_n (its longest row): a preset renders tony_accel without
    it, smx_n = 48 with it, and the overlay's configuration carries that limit to `tony compile --hw`."""
    from tony.hw import from_toml, preset

    assert preset("ecp5-85k", "test").cfg.smx_n == 0
    assert from_toml(_toml(tmp_path, 'preset = "ecp5-85k"\n', "plain")).cfg.hdl_params()["SMX_N"] == 0
    ov = from_toml(_toml(tmp_path, 'preset = "ecp5-85k"\nsmx_n = 48\n', "smx"))
    assert ov.cfg.smx_n == 48 and ov.hdl_params()["SMX_N"] == 48


def test_an_overlay_has_a_layernorm_unit_only_when_its_config_asks_for_one(tmp_path):
    """No LayerNorm unit unless HW.toml sets ln_n (its longest row): a preset and a config without
    it render none, ln_n = 64 gives the overlay's configuration that limit for `tony compile --hw`."""
    from tony.hw import from_toml, preset

    assert preset("ecp5-85k", "test").cfg.ln_n == 0
    assert from_toml(_toml(tmp_path, 'preset = "ecp5-85k"\n', "plain")).cfg.hdl_params()["LN_N"] == 0
    ov = from_toml(_toml(tmp_path, 'preset = "ecp5-85k"\nln_n = 64\n', "ln"))
    assert ov.cfg.ln_n == 64 and ov.hdl_params()["LN_N"] == 64
