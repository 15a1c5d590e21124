# Two entry points: `make demo` (the main job) and `make test` (every test).
# Both install what they need into .venv from pinned versions.
PY ?= python3
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed
EXTRAS ?= dev,testbed,plot

.PHONY: venv demo demo-local simulate test test-fast lint bench clean cluster cluster-build cluster-down

# Two distributions, both editable: the data plane (images/) and the control plane with
# the test bed (the root).
$(STAMP): pyproject.toml images/pyproject.toml
	test -x $(BIN)/python || $(PY) -m venv $(VENV)
	$(BIN)/pip install --disable-pip-version-check -q -e "./images[datasets,storage]" -e ".[$(EXTRAS)]"
	touch $(STAMP)

venv: $(STAMP)

# The paper's replay when the shared WITS trace is beside the repository, else synthetic.
TRACE ?= $(if $(wildcard ../shared/traces/wits_logs.txt),../shared/traces/wits_logs.txt,synthetic)

# The main job, on a kind cluster where a Docker engine can run: the cluster, Knative
# Serving and serflow's images made by hack/kind.sh, the chart installed with helm, the
# example served to a replayed trace, a report in out/demo-kind. A Docker engine this
# target started is stopped at the end. Where none can run, or the kind path cannot be
# built here (exit 3), it says so and runs demo-local.
KIND_MANIFEST ?= examples/digits-kind.yaml
demo: $(STAMP)
	@started=; hack/docker.sh status >/dev/null 2>&1 || started=1; \
	if hack/docker.sh up; then hack/kind.sh build; rc=$$?; else rc=3; fi; \
	if [ $$rc -eq 0 ]; then \
	  $(BIN)/python -m serflow_testbed.kind_demo -f $(KIND_MANIFEST) --out out/demo-kind; rc=$$?; \
	elif [ $$rc -eq 3 ]; then \
	  echo "make: the kind path cannot run here; running demo-local"; \
	  $(MAKE) --no-print-directory demo-local; rc=$$?; \
	fi; \
	if [ -n "$$started" ]; then hack/docker.sh down; fi; exit $$rc

# The fast path beside it: the local control plane (kwok nodes) with real workers,
# functions and Envoy as local processes, ending with a report in out/demo.
# MANIFEST=examples/digits-resnet.yaml serves the residual network instead of the VGG.
MANIFEST ?= examples/digits-demo.yaml
demo-local: $(STAMP)
	hack/cluster.sh build
	$(BIN)/python -m serflow_testbed.demo -f $(MANIFEST) --out out/demo

# What it would cost: the paper's setup planned and replayed by the simulator.
simulate: $(STAMP)
	mkdir -p out
	$(BIN)/serflow plan -f preset:paper --plot out/paper-cip.png
	$(BIN)/serflow simulate -f preset:paper --trace $(TRACE) --epochs 400 --plot out/paper-timeline.png
	@echo "figures: out/paper-cip.png out/paper-timeline.png"

# The local Kubernetes control plane is built from pinned Go modules (long the first time,
# cached after) before pytest, so its progress shows; exit 3 = cannot be built here, and
# then the cluster tests skip saying why. The pytest fixtures start and stop it.
test: $(STAMP)
	$(BIN)/ruff check operator images testbed tests bench
	$(BIN)/mypy
	hack/cluster.sh build || test $$? -eq 3
	@# The kind path (a Docker engine, kind, the node image, Knative), built here so its
	@# progress shows; where no engine can run or nothing can be built, the kind test skips.
	@# A Docker engine this target started is stopped at the end.
	@started=; hack/docker.sh status >/dev/null 2>&1 || started=1; \
	if hack/docker.sh up; then hack/kind.sh build || test $$? -eq 3; \
	else echo "make: no Docker engine can run here; the kind test will skip"; fi \
	&& $(BIN)/pytest; rc=$$?; \
	if [ -n "$$started" ]; then hack/docker.sh down; fi; exit $$rc

# The fast tier: lint, types, and the tests that need no cluster, no Docker and no server
# processes (pure functions, in-process models and renderers); `make test` runs them all.
# The CRD tests under tests/schema need the API server: they are marked cluster.
FAST_TESTS := tests/policy tests/sim tests/schema tests/cli tests/k8s tests/test_wire.py tests/test_imports.py \
	tests/test_status.py tests/test_docs.py tests/controller/test_planning.py \
	tests/testbed/test_demo_report.py tests/testbed/test_layout.py \
	tests/controller/test_builders.py tests/controller/test_decide.py \
	tests/controller/test_epoch.py tests/controller/test_fingerprint.py \
	tests/controller/test_replan.py tests/runtime/test_artefact.py \
	tests/runtime/test_checkpoint_data.py tests/runtime/test_codec.py \
	tests/runtime/test_dockerfiles.py tests/runtime/test_engine.py \
	tests/runtime/test_metrics.py tests/runtime/test_model.py tests/runtime/test_oip.py
test-fast: $(STAMP)
	$(BIN)/ruff check operator images testbed tests bench
	$(BIN)/mypy
	$(BIN)/pytest -m "not cluster and not kind" $(FAST_TESTS)

cluster-build:
	hack/cluster.sh build

cluster: cluster-build
	hack/cluster.sh up

cluster-down:
	hack/cluster.sh down

lint: $(STAMP)
	$(BIN)/ruff check operator images testbed tests bench
	$(BIN)/mypy

clean:
	rm -rf $(VENV) build *.egg-info

# The kind path (hack/kind.sh): a Docker engine, kind and a node image built from pinned
# Go modules and the Debian archive, no image pulled. `make test` runs its e2e test.
.PHONY: kind-build kind-up kind-down

kind-build:
	hack/docker.sh up
	hack/kind.sh build

kind-up:
	hack/kind.sh up

kind-down:
	hack/kind.sh down

# serflow's images, each built FROM the local Python base by its digest in REGISTRY
# (host[:port], where your cluster pulls from; `docker login` to it first), pushed as
# REGISTRY/serflow/<name>:TAG, and printed as `NAME REFERENCE-BY-DIGEST`. The kind path
# (hack/kind.sh load) runs the same script against the cluster's own registry.
.PHONY: images
TAG ?= local
IMAGE_NAMES ?= operator worker fn envoy storage
images:
	@test -n "$(REGISTRY)" || { echo "make images: set REGISTRY=host[:port], the registry your cluster pulls from" >&2; exit 2; }
	hack/docker.sh up
	SERFLOW_IMAGE_TAG=$(TAG) hack/images.sh publish $(REGISTRY) $(IMAGE_NAMES)
