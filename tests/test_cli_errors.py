"""Bad input gets one clear line and a non-zero exit, never a traceback."""
from pathlib import Path

import onnx
from onnx import TensorProto, helper


def _one_line_error(res, *needles):
    assert res.returncode != 0
    err = res.stderr.strip()
    assert "Traceback" not in err
    assert len(err.splitlines()) == 1, err
    for n in needles:
        assert n in err, err
    return err


def test_non_onnx_file(tmp_path, tony_cli):
    p = tmp_path / "notes.onnx"
    p.write_text("this is not a model\n" * 10)
    _one_line_error(tony_cli("ir", p), "not", "ONNX")


def test_truncated_onnx(tmp_path, tony_cli, digits_mlp):
    data = (digits_mlp / "model.onnx").read_bytes()
    p = tmp_path / "cut.onnx"
    p.write_bytes(data[: len(data) // 2])
    _one_line_error(tony_cli("ir", p), "cut.onnx")


def test_missing_file(tmp_path, tony_cli):
    _one_line_error(tony_cli("ir", tmp_path / "nope.onnx"), "no such file")


def test_unsupported_op_names_node_and_type(tmp_path, tony_cli):
    x = helper.make_tensor_value_info("x", TensorProto.FLOAT, [1, 4])
    y = helper.make_tensor_value_info("y", TensorProto.FLOAT, [1, 4])
    s = helper.make_tensor("s", TensorProto.FLOAT, [], [0.125])
    z = helper.make_tensor("z", TensorProto.INT8, [], [0])
    nodes = [helper.make_node("QuantizeLinear", ["x", "s", "z"], ["xq"], name="q0"),
             helper.make_node("DequantizeLinear", ["xq", "s", "z"], ["xd"], name="dq0"),
             helper.make_node("Softsign", ["xd"], ["y"], name="weird_layer")]
    m = helper.make_model(helper.make_graph(nodes, "g", [x], [y], [s, z]),
                          opset_imports=[helper.make_opsetid("", 13)])
    p = tmp_path / "softsign.onnx"
    onnx.save(m, p)
    _one_line_error(tony_cli("ir", p), "weird_layer", "Softsign")
    _one_line_error(tony_cli("compile", p, "-o", tmp_path / "out"), "weird_layer", "Softsign")
    assert not (tmp_path / "out").exists()


def test_bad_flag(tmp_path, tony_cli, digits_mlp):
    _one_line_error(tony_cli("compile", digits_mlp / "model.onnx", "-o", tmp_path / "o", "--array", "8by8"),
                    "--array")
    res = tony_cli("compile", "--no-such-flag")
    assert res.returncode == 2 and "Traceback" not in res.stderr


def test_wrong_input_shape(tmp_path, tony_cli, digits_mlp):
    import numpy as np

    np.save(tmp_path / "x.npy", np.zeros((3, 7), np.float32))
    _one_line_error(tony_cli("run", digits_mlp / "model.onnx", "--inputs", tmp_path / "x.npy"),
                    "input 'input' has shape (3, 7); the model expects (1, 64) or a stack of N of them, (N, 1, 64); "
                    "give an array of one of these shapes")


def test_debug_shows_traceback(tmp_path, tony_cli):
    res = tony_cli("--debug", "ir", tmp_path / "nope.onnx")
    assert res.returncode != 0 and "Traceback" in res.stderr


def test_run_writes_outputs(tmp_path, tony_cli, digits_mlp):
    import numpy as np

    import tony

    res = tony_cli("run", digits_mlp / "model.onnx", "--inputs", digits_mlp / "inputs.npy", "-o", tmp_path / "y.npy")
    assert res.returncode == 0, res.stderr
    y = np.load(tmp_path / "y.npy")
    assert np.array_equal(y, tony.run_reference(digits_mlp / "model.onnx", np.load(digits_mlp / "inputs.npy"))[0])


def test_run_writes_each_output_to_its_own_file_when_names_sanitize_alike(tmp_path, tony_cli, digits_mlp):
    """`tony run -o y.npy` on a model with more outputs writes each extra output beside y.npy, one
    file each even for names that sanitize to the same identifier ('o-1', 'o_1'), and says where."""
    import numpy as np

    import tony

    m = onnx.load(digits_mlp / "model.onnx")
    new = {"relu0_dq": "o-1", "input_dq": "o_1"}
    for n in m.graph.node:
        n.input[:] = [new.get(i, i) for i in n.input]
        n.output[:] = [new.get(o, o) for o in n.output]
    m.graph.output.extend([helper.make_tensor_value_info("o-1", TensorProto.FLOAT, [1, 32]),
                           helper.make_tensor_value_info("o_1", TensorProto.FLOAT, [1, 64])])
    onnx.save(m, tmp_path / "multi.onnx")
    x = np.load(digits_mlp / "inputs.npy")[:5]
    np.save(tmp_path / "x.npy", x)
    res = tony_cli("run", tmp_path / "multi.onnx", "--inputs", tmp_path / "x.npy", "-o", tmp_path / "y.npy")
    assert res.returncode == 0, res.stderr
    want = tony.run_reference(tmp_path / "multi.onnx", x)
    files = [tmp_path / "y.npy", tmp_path / "y.o_1.npy", tmp_path / "y.o_1_2.npy"]
    for f, w in zip(files, want):
        assert np.array_equal(np.load(f), w), f.name
        assert str(f) in res.stdout
    assert sorted(p.name for p in tmp_path.glob("y*")) == sorted(f.name for f in files)


def _qdq_gemm_model(tmp_path, *, input_dims=(1, 4), weight_zp=0, name="m.onnx"):
    import numpy as np
    from onnx import numpy_helper

    x = helper.make_tensor_value_info("x", TensorProto.FLOAT, list(input_dims))
    y = helper.make_tensor_value_info("y", TensorProto.FLOAT, [input_dims[0], 3])
    inits = [numpy_helper.from_array(np.array(0.125, np.float32), "s"),
             numpy_helper.from_array(np.array(0, np.int8), "z"),
             numpy_helper.from_array(np.ones((4, 3), np.int8), "w"),
             numpy_helper.from_array(np.array(0.0625, np.float32), "ws"),
             numpy_helper.from_array(np.array(weight_zp, np.int8), "wz")]
    nodes = [helper.make_node("QuantizeLinear", ["x", "s", "z"], ["xq"], name="qx"),
             helper.make_node("DequantizeLinear", ["xq", "s", "z"], ["xd"], name="dqx"),
             helper.make_node("DequantizeLinear", ["w", "ws", "wz"], ["wd"], name="dqw"),
             helper.make_node("MatMul", ["xd", "wd"], ["mm"], name="the_matmul"),
             helper.make_node("QuantizeLinear", ["mm", "s", "z"], ["yq"], name="qy"),
             helper.make_node("DequantizeLinear", ["yq", "s", "z"], ["y"], name="dqy")]
    m = helper.make_model(helper.make_graph(nodes, "g", [x], [y], inits), opset_imports=[helper.make_opsetid("", 13)])
    p = tmp_path / name
    onnx.save(m, p)
    return p


def test_dynamic_non_batch_dimension_is_refused(tmp_path, tony_cli):
    p = _qdq_gemm_model(tmp_path, input_dims=("N", "features"))
    err = _one_line_error(tony_cli("compile", p, "-o", tmp_path / "o"), "dynamic dimension", "axis 1")
    assert "static shapes" in err
    # a symbolic batch axis alone is fine
    ok = _qdq_gemm_model(tmp_path, input_dims=("N", 4), name="ok.onnx")
    assert tony_cli("ir", ok).returncode == 0


def test_weight_zero_point_is_refused_for_hardware_but_runs_in_the_reference(tmp_path, tony_cli):
    import numpy as np

    p = _qdq_gemm_model(tmp_path, weight_zp=3)
    _one_line_error(tony_cli("compile", p, "-o", tmp_path / "o"), "the_matmul", "zero point")
    assert not (tmp_path / "o").exists()
    np.save(tmp_path / "x.npy", np.ones((1, 4), np.float32))
    res = tony_cli("run", p, "--inputs", tmp_path / "x.npy")
    assert res.returncode == 0, res.stderr


def _empty_graph(tmp_path):
    """input wired straight to output, no nodes"""
    import numpy as np

    x = helper.make_tensor_value_info("x", TensorProto.FLOAT, [1, 4])
    m = helper.make_model(helper.make_graph([], "empty", [x], [x]), opset_imports=[helper.make_opsetid("", 13)])
    onnx.save(m, tmp_path / "empty.onnx")
    np.save(tmp_path / "x.npy", np.zeros((3, 1, 4), np.float32))
    return tmp_path / "empty.onnx"


def test_empty_graph_is_refused_by_compile_and_quantize(tmp_path, tony_cli):
    p = _empty_graph(tmp_path)
    _one_line_error(tony_cli("compile", p, "-o", tmp_path / "o"), "no operator that runs on the device")
    _one_line_error(tony_cli("compile", "--backend", "hls", p, "-o", tmp_path / "o"), "no operator")
    _one_line_error(tony_cli("quantize", p, "--calib", tmp_path / "x.npy", "-o", tmp_path / "q.onnx"),
                    "nothing to quantize")
    assert sorted(f.name for f in tmp_path.iterdir()) == ["empty.onnx", "x.npy"]


def test_a_node_name_with_a_newline_stays_on_one_line(tmp_path, tony_cli):
    x = helper.make_tensor_value_info("x", TensorProto.FLOAT, [1, 4])
    y = helper.make_tensor_value_info("y", TensorProto.FLOAT, [1, 4])
    m = helper.make_model(helper.make_graph([helper.make_node("Softsign", ["x"], ["y"], name="bad\nname\x1b[2J")],
                                            "g", [x], [y]), opset_imports=[helper.make_opsetid("", 13)])
    onnx.save(m, tmp_path / "m.onnx")
    err = _one_line_error(tony_cli("ir", tmp_path / "m.onnx"), "Softsign")
    assert "bad\\nname\\x1b[2J" in err


def test_an_output_path_the_file_system_refuses_names_the_path_and_the_file_in_the_way(tmp_path, tony_cli,
                                                                                      digits_mlp):
    """An output folder or file under a file (or where no folder can be made) is refused naming the
    path the user gave and what is in the way, never the hidden temporary written beside it, and
    leaves nothing behind."""
    (tmp_path / "afile").write_text("mine")
    model = digits_mlp / "model.onnx"
    for argv in (["compile", model, "-o", tmp_path / "afile" / "sub", "--array", "2x2"],
                 ["run", model, "--inputs", digits_mlp / "inputs.npy", "-o", tmp_path / "afile" / "sub" / "y.npy"]):
        err = _one_line_error(tony_cli(*argv), f"cannot write {argv[argv.index('-o') + 1]}",
                              f"{tmp_path / 'afile'} is not a folder")
        assert "/." not in err, err  # no hidden temporary's name
    for o in (tmp_path / "afile", tmp_path / "afile" / "x"):   # refused before any training
        _one_line_error(tony_cli("example", "digits-cnn", "-o", o),
                        f"cannot write {o} ({tmp_path / 'afile'} is not a folder)")
    assert sorted(p.name for p in tmp_path.iterdir()) == ["afile"] and (tmp_path / "afile").read_text() == "mine"
    r = tony_cli("compile", model, "-o", "/proc/tony_no_such_folder", "--array", "2x2")
    _one_line_error(r, "cannot write /proc/tony_no_such_folder (")
    if Path("/dev/null").exists():   # a parent that is neither a file nor a folder
        _one_line_error(tony_cli("compile", model, "-o", "/dev/null/b"),
                        "cannot write /dev/null/b (/dev/null is not a folder)")


def test_options_of_the_other_back_end_are_refused_not_ignored(tmp_path, tony_cli, digits_mlp):
    """`tony compile`'s rtl-only options (--batch, --mem-bits, buffer depths, ...) with --backend hls,
    and the hls-only --weights with the rtl back end, are refused in one line naming the option and
    the back end it applies to; nothing is written. The defaults still compile with either."""
    model = digits_mlp / "model.onnx"
    for flag, backend, other in ((["--batch", "3"], "hls", "rtl"), (["--mem-bits", "32"], "hls", "rtl"),
                                 (["--abuf-words", "999"], "hls", "rtl"), (["--per-channel", "mult"], "hls", "rtl"),
                                 (["--weights", "axi"], "rtl", "hls"), (["--weights", "const"], "rtl", "hls")):
        r = tony_cli("compile", model, "-o", tmp_path / "b", "--backend", backend, "--array", "2x3", *flag)
        _one_line_error(r, f"{flag[0]} with --backend {backend}: applies to --backend {other} only")
        assert not (tmp_path / "b").exists()
    for backend in ("rtl", "hls"):
        r = tony_cli("compile", model, "-o", tmp_path / backend, "--backend", backend, "--array", "2x3",
                     "--samples", "2")
        assert r.returncode == 0, r.stderr


def test_a_folder_or_device_given_for_a_file_is_named_as_such(tmp_path, tony_cli, digits_mlp):
    """A folder (the example's folder for its model.onnx, say) or a device given where a file is
    read is refused as what it is, not as a missing file."""
    model = digits_mlp / "model.onnx"
    _one_line_error(tony_cli("compile", digits_mlp, "-o", tmp_path / "b"), f"{digits_mlp}: is a folder; give the path")
    _one_line_error(tony_cli("run", model, "--inputs", tmp_path), f"--inputs {tmp_path}: is a folder")
    if Path("/dev/null").exists():
        _one_line_error(tony_cli("ir", "/dev/null"), "/dev/null: is not a regular file")
    _one_line_error(tony_cli("ir", tmp_path / "nope.onnx"), "nope.onnx: no such file")
    assert not (tmp_path / "b").exists()


def test_a_bad_sim_option_leaves_the_build_and_its_last_report_as_they_were(tmp_path, tony_cli, digits_mlp):
    """`tony sim --axi-stall 2` is refused before the build folder is touched: the report of the
    last simulation (here a stand-in file) and everything else stay as they were."""
    out = tmp_path / "b"
    assert tony_cli("compile", digits_mlp / "model.onnx", "-o", out, "--array", "2x2", "--samples", "1").returncode == 0
    (out / "sim_report.json").write_text('{"stand-in": true}\n')
    def snapshot():
        return {p: p.read_bytes() if p.is_file() else None for p in out.rglob("*")}

    before = snapshot()
    _one_line_error(tony_cli("sim", out, "--axi-stall", "2"), "--axi-stall 2.0: expected a probability in [0, 1)")
    assert snapshot() == before


def test_samples_with_inputs_is_refused_not_ignored(tmp_path, tony_cli, digits_mlp):
    """--samples counts seeded random samples; with --inputs (whose samples are the golden ones) it
    would be ignored, so it is refused, for either back end."""
    for backend in ("rtl", "hls"):
        r = tony_cli("compile", digits_mlp / "model.onnx", "-o", tmp_path / "b", "--backend", backend,
                     "--inputs", digits_mlp / "inputs.npy", "--samples", "2")
        _one_line_error(r, "--samples with --inputs: the golden samples are those of --inputs; drop --samples")
        assert not (tmp_path / "b").exists()
