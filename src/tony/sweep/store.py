"""The sweep folder's tables (Parquet, through pyarrow): results.parquet (one row per point, the
synthesis figures of its overlay and the Pareto marks joined in) and synth.parquet (one row per
synthesized overlay). Each is rewritten whole, through a temporary file moved into place, after
every point that finishes, so the file on disk always holds every finished point and nothing half
written; a rerun reads it to skip what is done."""
from __future__ import annotations

from pathlib import Path

from ..build import _atomic
from ..errors import InputError

RESULTS = "results.parquet"
SYNTH = "synth.parquet"

# column -> arrow type name; the point's own figures (what task.run_point returns)
POINT_COLUMNS = {
    "point": "string", "model": "string", "model_sha": "string", "rows": "int64", "cols": "int64", "pes": "int64",
    "abuf_words": "int64", "mem_bits": "int64", "batch": "int64", "status": "string", "error": "string",
    "cycles": "int64", "cycles_per_inference": "float64", "macs": "int64", "utilization": "float64",
    "instructions": "int64", "abuf": "int64", "wbuf": "int64", "bbuf": "int64", "imem": "int64",
    "buffer_words": "int64", "buffer_bits": "int64", "traffic_bytes": "int64", "weight_bytes": "int64",
    "act_bytes": "int64", "layers": "string",
    "sim_samples": "int64", "bit_exact": "bool", "sim_cycles": "int64", "cycles_match": "bool",
}
# joined in when the results are written: the overlay's synthesis and the Pareto marks
JOINED_COLUMNS = {
    "overlay": "string", "target": "string", "lut": "int64", "ff": "int64", "dsp": "int64", "bram": "int64",
    "fmax_mhz": "float64", "latency_us": "float64", "pareto": "bool", "pareto_overall": "bool",
}
RESULT_COLUMNS = {**POINT_COLUMNS, **JOINED_COLUMNS}
SYNTH_COLUMNS = {
    "synth": "string", "target": "string", "pnr": "bool", "status": "string", "error": "string",
    "lut": "int64", "ff": "int64", "dsp": "int64", "bram": "int64", "fmax_mhz": "float64", "report": "string",
}


def _schema(columns: dict):
    import pyarrow as pa

    return pa.schema([(k, getattr(pa, "bool_" if t == "bool" else t)()) for k, t in columns.items()])


def write_table(path: Path, rows: list[dict], columns: dict) -> None:
    import pyarrow as pa
    import pyarrow.parquet as pq

    table = pa.Table.from_pylist([{k: r.get(k) for k in columns} for r in rows], schema=_schema(columns))
    _atomic(path, lambda t: pq.write_table(table, t))


def read_table(path: Path, columns: dict) -> list[dict]:
    """The rows of a table (missing columns read as None); [] when the file is not there."""
    if not path.is_file():
        return []
    import pyarrow.parquet as pq

    try:
        rows = pq.read_table(path).to_pylist()
    except Exception as e:
        raise InputError(f"{path} is not a readable Parquet table ({type(e).__name__})",
                         hint="remove it to start the sweep again") from None
    if rows and "point" in columns and "point" not in rows[0] or rows and "synth" in columns and "synth" not in rows[0]:
        raise InputError(f"{path} is not a Tony sweep table", hint="use another output folder")
    return [{k: r.get(k) for k in columns} for r in rows]


def read_results(sweep_dir) -> list[dict]:
    """The rows of a sweep's results.parquet."""
    p = Path(sweep_dir) / RESULTS
    if not p.is_file():
        raise InputError(f"no {RESULTS} in {sweep_dir}", hint="run `tony sweep MODEL... -o DIR` first")
    return read_table(p, RESULT_COLUMNS)
