# bea: the first two targets do all set-up on a fresh machine.
#   make convergence   # venv + install + the default sweep (bilinear, full-batch Adam)
#   make test          # venv + install + the test suite (what CI runs)
PYTHON ?= python3
VENV ?= .venv
PY := $(VENV)/bin/python
STAMP := $(VENV)/.installed-stamp

.PHONY: convergence test lint practical orders orders-long second-order grid-processes install clean

$(STAMP): pyproject.toml
	test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PY) -m pip install -q --upgrade pip
	$(PY) -m pip install -q -e '.[dev]'
	touch $(STAMP)

install: $(STAMP)

convergence: $(STAMP)
	$(PY) -m experiments.convergence --out results/convergence

test: $(STAMP)
	$(PY) -m pytest -q -n 2 --durations=15

lint: $(STAMP)
	$(PY) -m ruff check bea experiments tests benchmarks

# the paper's practical setting (beta = 0.9, rho = 0.999, eps = 1e-3) on the bilinear model
practical: $(STAMP)
	$(PY) -m experiments.convergence --beta 0.9 --rho 0.999 --eps 1e-3 --T 1 \
	  --h 1e-4 5e-5 2.5e-5 1.25e-5 --out results/practical

# every measured order of docs/orders.md: run the sweeps, then rewrite its tables from them
orders: $(STAMP)
	$(PY) -m experiments.orders run
	$(PY) -m experiments.orders report --keep-missing

# the long-memory mini-batch sweeps (docs/math.md section 7): hours on two cores
orders-long: $(STAMP)
	$(PY) -m experiments.orders run --long
	$(PY) -m experiments.orders report --keep-missing

# one grid as P local processes forming one JAX cluster (docs/sweeps.md, "Several processes")
P ?= 2
grid-processes: $(STAMP)
	$(PY) -m experiments.launch -n $(P) -- $(PY) -m experiments.convergence \
	  --grid beta=0.5,0.7 rho=0.7,0.9 --h 0.05 0.025 0.0125 --out results/grid-processes

# the size of the second-order term along Adam runs (docs/second_order.md); refreshes its figure
second-order: $(STAMP)
	$(PY) -m experiments.second_order --out results/second_order
	mkdir -p docs/img
	cp results/second_order/second_order_size.png docs/img/

clean:
	rm -rf results .pytest_cache

-include Makefile.bilinear Makefile.train Makefile.notebooks
