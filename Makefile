# parse: set up, run, test and measure the OCR service.
#   make setup        .venv from requirements.txt, plus the verified weights (idempotent)
#   make test         setup, then the whole test suite (what .ci/run calls)
#   make test-fast    the unit and model tests only, no server started (under 2 minutes on 2 cores)
#   make bench-model  both model families (ppocr in both pipelines) on the SROIE dev pages, 2 threads
#   make bench-rapidocr  PP-OCR (both pipelines) against RapidOCR 3.10.0 (defaults, use_cls off), same pages, threads, machine
#   make reading-order  the page text's reading order scored on the dev set (score.py --order given)
#   make bench-easyocr   CRAFT + english_g2 against EasyOCR 1.7.2 itself, the 40 SROIE pages, 2 threads
#   make bench-layout    the layout model (both settings) against RapidLayout 1.2.1 itself, 20 structure dev pages, 2 threads
#   make bench-documents a 20-page scanned PDF against the same pages as images (s/page, peak RSS), and the dpi sweep
#   make bench-pdf    searchable PDFs of 40 scanned receipts: parse against OCRmyPDF 17 (text CER, size, s/page)
#   make run          the declared instances + Nginx on loopback (runtime files in run/); returns when ready;
#                     on a running stack, a rolling reload (make reload) that names what needs a restart
#   make stop         stops what `make run` started, by PID, gracefully
#   make reload       rolling reload of what `make run` started: Nginx, then each instance's workers in turn
#   make status       each instance's readiness
#   make bench        the serving stack through Nginx: throughput, latency, overhead, 1 vs 2 instances
#   make bench-jobs   pages per second of a 50-page job against one request at a time; fleet: 2 hosts vs 1, host loss
#   make bench-load   goodput, p50/p99 and refusals at 1x/2x/4x capacity, then a soak (SOAK_MINUTES=10)
#   make bench-table     tables: ours (both settings) against RapidTable 0.3.0 on the PubTabNet crops, TEDS and s/table, 2 threads
#   make bench-structure  regions, tables and Markdown on ../shared/structure-dev (default, exact, reference), their cost, memory (SOAK_PAGES=500)
#   make bench-gpu    one GPU at full use: pages/s and p50/p99 at concurrency 1-64, kernel vs host time, batched vs unbatched accuracy
#   sudo make install systemd units + Nginx site on a real host (PREFIX=/opt/parse)

SHELL := /bin/bash
PYTHON ?= python3
VENV := .venv
PY := $(VENV)/bin/python
# Root installs system packages directly; anyone else goes through sudo.
SUDO := $(shell [ "$$(id -u)" = 0 ] || echo sudo)
# The ONNX reader is needed only to convert the PP-OCR, SLANet and layout weights, never to serve.
ONNX_REQ := onnx==1.23.2

# Where `sudo make install` puts the service; systemd/parse@.service names /opt/parse.
PREFIX ?= /opt/parse

.PHONY: setup system-deps uwsgi weights test test-fast bench-model bench-rapidocr bench-easyocr bench-documents bench-pdf nginx poppler postgresql reading-order run stop reload status bench bench-jobs bench-load bench-gpu bench-structure bench-table bench-layout install

setup: $(VENV)/.installed weights

# What a fresh Debian/Ubuntu lacks to build the venv and uWSGI (C compiler, Python headers, venv,
# and OpenSSL headers: uWSGI builds its TLS, the sslrouter gateway between hosts, only with them).
system-deps:
	@missing=""; \
	$(PYTHON) -c 'import ensurepip' 2>/dev/null || missing="$$missing python3-venv"; \
	[ -f "$$($(PYTHON) -c 'import sysconfig; print(sysconfig.get_paths()["include"])')/Python.h" ] || missing="$$missing python3-dev"; \
	command -v gcc >/dev/null || missing="$$missing build-essential"; \
	command -v patch >/dev/null || missing="$$missing patch"; \
	[ -f /usr/include/openssl/ssl.h ] || missing="$$missing libssl-dev"; \
	if [ -n "$$missing" ]; then \
		echo "installing:$$missing"; \
		$(SUDO) apt-get update -q && $(SUDO) DEBIAN_FRONTEND=noninteractive apt-get install -y -q $$missing; \
	fi

$(VENV)/.installed: requirements.txt conf/uwsgi/sslrouter.patch
	$(MAKE) --no-print-directory system-deps
	$(PYTHON) -m venv $(VENV)
	$(PY) -m pip install -q -r requirements.txt
	$(MAKE) --no-print-directory uwsgi
	touch $@

# uWSGI has no wheels: pip always compiles it from its source. Here that source is pinned by its
# sha256 and gets conf/uwsgi/sslrouter.patch first, without which the sslrouter gateway between
# hosts crashes on any request over one TLS record (16 KiB), i.e. on a real upload.
UWSGI_VERSION := 2.0.31
UWSGI_SHA256 := e8f8b350ccc106ff93a65247b9136f529c14bf96b936ac5b264c6ff9d0c76257
UWSGI_SRC := build/uwsgi-$(UWSGI_VERSION)
uwsgi:
	rm -rf $(UWSGI_SRC) && mkdir -p build
	$(PY) -m pip download -q --no-binary :all: --no-deps uwsgi==$(UWSGI_VERSION) -d build
	echo "$(UWSGI_SHA256)  $(UWSGI_SRC).tar.gz" | sha256sum -c --quiet
	tar -xzf $(UWSGI_SRC).tar.gz -C build
	patch -s -d $(UWSGI_SRC) -p1 < conf/uwsgi/sslrouter.patch
	$(PY) -m pip install -q --no-deps --force-reinstall ./$(UWSGI_SRC)

weights: $(VENV)/.installed
	$(PY) -m service.ocr.weights fetch weights
	@# PP-OCR: ONNX initializers -> torch state_dicts (onnx is installed only when a conversion is due).
	$(PY) -m service.ocr.ppocr.convert --check weights || { \
		$(PY) -c 'import onnx' 2>/dev/null || $(PY) -m pip install -q $(ONNX_REQ); \
		$(PY) -m service.ocr.ppocr.convert weights; }
	@# SLANet_plus (tables): the same, for service/structure/slanet.py.
	$(PY) -m service.structure.convert_table --check weights || { \
		$(PY) -c 'import onnx' 2>/dev/null || $(PY) -m pip install -q $(ONNX_REQ); \
		$(PY) -m service.structure.convert_table weights; }
	@# Layout (PicoDet, CDLA): ONNX -> torch state_dict, the same way.
	$(PY) -m service.structure.convert_layout --check weights || { \
		$(PY) -c 'import onnx' 2>/dev/null || $(PY) -m pip install -q $(ONNX_REQ); \
		$(PY) -m service.structure.convert_layout weights; }

test: setup nginx poppler postgresql
	$(PY) -m pytest -q tests

# The markers are in pytest.ini; a unit or model test that also starts a server is left to `make test`.
test-fast: setup poppler
	$(PY) -m pytest -q -m "(unit or model) and not (stack or browser)" tests
bench-documents: setup
	$(PY) -m tests.bench_documents compare --pages 20
	$(PY) -m tests.bench_documents dpi --pages 10

# OCRmyPDF 17 in a venv of its own, with Tesseract and Ghostscript from apt (none of it serves),
# against parse's searchable PDF on scans made from the 40 SROIE receipts (tests/bench_pdf.py).
OCRMYPDF_VENV := build/ocrmypdf-venv
bench-pdf: setup poppler
	@missing=""; command -v tesseract >/dev/null || missing="$$missing tesseract-ocr"; \
	command -v gs >/dev/null || missing="$$missing ghostscript"; \
	if [ -n "$$missing" ]; then \
		echo "installing:$$missing"; \
		$(SUDO) apt-get update -q && $(SUDO) DEBIAN_FRONTEND=noninteractive apt-get install -y -q $$missing; \
	fi
	[ -x $(OCRMYPDF_VENV)/bin/ocrmypdf ] || { $(PYTHON) -m venv $(OCRMYPDF_VENV) && \
		$(OCRMYPDF_VENV)/bin/pip install -q ocrmypdf==17.13.0; }
	$(PY) -m tests.bench_pdf

bench-model: setup
	$(PY) -m tests.devset --family easyocr --subset sroie --threads 2
	$(PY) -m tests.devset --family ppocr --subset sroie --threads 2 --pipeline parse
	$(PY) -m tests.devset --family ppocr --subset sroie --threads 2 --pipeline rapidocr

# RapidOCR and ONNX Runtime, the versions its reference outputs were made with, go in a venv of
# their own (serving needs neither); then ours (pipelines parse and rapidocr) and RapidOCR (defaults
# and use_cls off) read the same 10 SROIE pages at 2 threads, taking turns page by page.
BENCH_VENV := build/bench-venv
bench-rapidocr: setup $(BENCH_VENV)/.installed
	$(PY) -m tests.compare_original --family ppocr --pages 10 --threads 2 --original-python $(BENCH_VENV)/bin/python

$(BENCH_VENV)/.installed:
	$(PYTHON) -m venv $(BENCH_VENV)
	$(BENCH_VENV)/bin/pip install -q rapidocr==3.10.0 onnxruntime==1.31.1
	touch $@

# EasyOCR 1.7.2 needs torchvision, which PyPI builds only beside its own torch (a CUDA build of
# several GB; it runs on the CPU too): a venv of its own again, never the service's.
EASYOCR_VENV := build/easyocr-venv
bench-easyocr: setup $(EASYOCR_VENV)/.installed
	$(PY) -m tests.compare_original --family easyocr --pages 40 --threads 2 --original-python $(EASYOCR_VENV)/bin/python

$(EASYOCR_VENV)/.installed:
	$(PYTHON) -m venv $(EASYOCR_VENV)
	$(EASYOCR_VENV)/bin/pip install -q torch==2.14.1 torchvision==0.29.1 easyocr==1.7.2
	touch $@

# RapidLayout 1.2.1, RapidTable 0.3.0 with RapidOCR 3.10.0 and onnxruntime, the versions of
# ../shared/structure-dev-reference (its lock file), in a venv of their own again (serving needs
# none of them): the table parity test compares cell boxes with it where it exists; bench-table
# times ours against RapidTable on the PubTabNet crops, bench-layout ours ("parse" and
# "rapidlayout") against RapidLayout on 20 structure dev pages, taking turns, 2 threads.
STRUCTURE_REF_VENV := build/structure-ref-venv
STRUCTURE_LOCK := ../shared/structure-dev-reference/requirements-rapid-structure.lock.txt
bench-table: setup $(STRUCTURE_REF_VENV)/.installed
	$(PY) -m tests.bench_table --threads 2 --original-python $(STRUCTURE_REF_VENV)/bin/python

bench-layout: setup $(STRUCTURE_REF_VENV)/.installed
	$(PY) -m tests.bench_layout --pages 20 --threads 2 --original-python $(STRUCTURE_REF_VENV)/bin/python

$(STRUCTURE_REF_VENV)/.installed:
	$(PYTHON) -m venv $(STRUCTURE_REF_VENV)
	$(STRUCTURE_REF_VENV)/bin/pip install -q -r $(STRUCTURE_LOCK)
	touch $@

# Nginx from apt for the dev stack and the tests (they start their own, on loopback, from run/).
nginx:
	@command -v nginx >/dev/null || [ -x /usr/sbin/nginx ] || { \
		echo "installing: nginx"; \
		$(SUDO) apt-get update -q && $(SUDO) DEBIAN_FRONTEND=noninteractive apt-get install -y -q nginx; }

# The searchable-PDF tests read the PDFs back with poppler's pdftotext, and draw their Chinese
# page in Droid Sans Fallback (fonts-droid-fallback).
poppler:
	@missing=""; command -v pdftotext >/dev/null || missing="$$missing poppler-utils"; \
	[ -f /usr/share/fonts/truetype/droid/DroidSansFallbackFull.ttf ] || missing="$$missing fonts-droid-fallback"; \
	if [ -n "$$missing" ]; then \
		echo "installing:$$missing"; \
		$(SUDO) apt-get update -q && $(SUDO) DEBIAN_FRONTEND=noninteractive apt-get install -y -q $$missing; \
	fi

# PostgreSQL's binaries for the store tests (tests/pg.py runs initdb + pg_ctl in a folder of its own).
# Debian starts a package's service on install unless policy-rc.d says no: the system's server is
# never started, so the rule is put in place for the install only (when none was there).
postgresql:
	@ls /usr/lib/postgresql/*/bin/initdb >/dev/null 2>&1 || command -v initdb >/dev/null || { \
		echo "installing: postgresql (binaries only; its service is not started)"; \
		policy=""; [ -e /usr/sbin/policy-rc.d ] || { policy=1; printf '#!/bin/sh\nexit 101\n' | $(SUDO) tee /usr/sbin/policy-rc.d >/dev/null; $(SUDO) chmod 755 /usr/sbin/policy-rc.d; }; \
		$(SUDO) apt-get update -q && $(SUDO) DEBIAN_FRONTEND=noninteractive apt-get install -y -q postgresql; rc=$$?; \
		[ -z "$$policy" ] || $(SUDO) rm -f /usr/sbin/policy-rc.d; exit $$rc; }

# The page text's reading order against the dev set's ground truth (score.py --order given).
reading-order: setup
	$(PY) -m tests.reading_order

run: setup nginx
	$(PY) -m service.deploy up

stop:
	$(PY) -m service.deploy down

reload:
	$(PY) -m service.ops.reload --dev

status:
	$(PY) -m service.deploy status

bench: setup nginx
	$(PY) -m tests.bench_stack

# A 50-page job on the default stack against the same pages sent one request at a time; then, as
# root, on the namespace fleet (PostgreSQL store): two hosts against one, and a host's loss.
bench-jobs: setup nginx postgresql
	$(PY) -m tests.bench_jobs
	$(PY) -m tests.bench_jobs --fleet

# The soak runs at 80% of the measured capacity for SOAK_MINUTES (a benchmark, never part of make test).
SOAK_MINUTES ?= 10
bench-load: setup nginx
	$(PY) -m tests.bench_load --soak-minutes $(SOAK_MINUTES)

# One instance on cuda:0 by default; BENCH_GPU_ARGS="--device cpu --pages 6 --concurrency 1,2" tries it on a CPU.
BENCH_GPU_ARGS ?=
bench-gpu: setup nginx
	$(PY) -m tests.bench_gpu $(BENCH_GPU_ARGS)

# Structure: scored with ../shared/tools/score_structure.py; SOAK_PAGES structured pages for the memory check.
SOAK_PAGES ?= 50
bench-structure: setup
	$(PY) -m tests.bench_structure --soak-pages $(SOAK_PAGES)

# A real host: code and venv in $(PREFIX), files rendered from conf/parse.toml into /etc, one
# parse@PORT unit per declared instance under parse.target, the Nginx site enabled.
install: nginx
	@[ "$$(id -u)" = 0 ] || { echo "run it as root: sudo make install"; exit 1; }
	id -u parse >/dev/null 2>&1 || useradd --system --home-dir $(PREFIX) --shell /usr/sbin/nologin parse
	mkdir -p $(PREFIX)
	git ls-files -z --cached --others --exclude-standard | tar --null -T - -cf - | tar -xf - -C $(PREFIX)
	cp -a weights/. $(PREFIX)/weights/
	$(MAKE) -C $(PREFIX) --no-print-directory setup
	@# Which [[hosts]] entry this machine is: the one whose bind address it has (or PARSE_HOST=NAME).
	cd $(PREFIX) && $(PY) -m service.ops.fleet whoami
	cd $(PREFIX) && $(PY) -m service.deploy render --host
	@# Beyond loopback: this host's certificate, key and CA bundle from pki/hosts/NAME (service.ops.certs).
	cd $(PREFIX) && host="$$($(PY) -m service.ops.fleet whoami)"; \
	if [ -d "$(CURDIR)/pki/hosts/$$host" ]; then \
		install -d -m 0750 -g parse /etc/parse/tls; \
		install -m 0644 $(CURDIR)/pki/hosts/$$host/host.crt $(CURDIR)/pki/hosts/$$host/ca.crt /etc/parse/tls/; \
		install -m 0640 -g parse $(CURDIR)/pki/hosts/$$host/host.key /etc/parse/tls/; \
	fi; \
	if grep -qs PARSE_SSLROUTER /etc/parse/instances/*.env || [ -f /etc/sysctl.d/60-parse.conf ]; then \
		[ -f /etc/parse/tls/host.crt ] || { echo "no /etc/parse/tls/host.crt: copy pki/hosts/$$host/ here first"; exit 1; }; \
	fi
	[ ! -f /etc/sysctl.d/60-parse.conf ] || sysctl -q -p /etc/sysctl.d/60-parse.conf
	@# ?annotate=1 writes result PNGs here (writable through the drop-in's ReadWritePaths);
	@# Nginx's user reads them as a member of group parse (the unit's UMask=0027 keeps them 0640).
	install -d -o parse -g parse -m 0750 "$$(cd $(PREFIX) && $(PY) -c 'from service import settings; print(settings.load().results.dir)')"
	@# The job store: SQLite, uploads and page results, shared by every instance (the drop-in's ReadWritePaths).
	install -d -o parse -g parse -m 0750 "$$(cd $(PREFIX) && $(PY) -c 'from service import settings; print(settings.load().jobs.dir)')"
	@# A fleet's store: the PostgreSQL password from pki/store-password, where [store] password_file
	@# names it (API keys and the internal key are in the store itself: no key file to copy).
	cd $(PREFIX) && pw="$$($(PY) -c 'from service import settings; print(settings.load().store.password_file or "")')"; \
	if [ -n "$$pw" ] && [ -f "$(CURDIR)/pki/store-password" ]; then \
		install -D -m 0640 -g parse "$(CURDIR)/pki/store-password" "$$pw"; \
	elif [ -n "$$pw" ] && [ ! -f "$$pw" ]; then echo "no $$pw: put the store's password in pki/store-password first"; exit 1; fi
	id -u www-data >/dev/null 2>&1 && usermod -aG parse www-data || true
	sed 's#/opt/parse#$(PREFIX)#g' systemd/parse@.service > /etc/systemd/system/parse@.service
	sed 's#/opt/parse#$(PREFIX)#g' systemd/parse.target > /etc/systemd/system/parse.target
	@# The Nginx site on the front host only ([nginx] host).
	if (cd $(PREFIX) && $(PY) -m service.ops.fleet is-front); then \
		ln -sfn $(PREFIX)/conf/nginx/parse.conf /etc/nginx/sites-enabled/parse.conf; \
	else rm -f /etc/nginx/sites-enabled/parse.conf; fi
	systemctl daemon-reload
	@# Exactly the declared instances are wanted by parse.target: enable new ones, retire removed ones.
	cd $(PREFIX) && ports="$$($(PY) -m service.ops.fleet ports)"; \
	for unit in $$(cd /etc/systemd/system/parse.target.wants 2>/dev/null && ls parse@*.service); do \
		port=$${unit#parse@}; port=$${port%.service}; \
		echo "$$ports" | grep -qx "$$port" || systemctl disable --now "$$unit"; \
	done; \
	for port in $$ports; do systemctl enable "parse@$$port.service"; done
	systemctl enable parse.target
	@# One instance at a time: each restart returns when its models are ready (ExecStartPost probe).
	cd $(PREFIX) && for port in $$($(PY) -m service.ops.fleet ports); do systemctl restart "parse@$$port.service"; done
	if (cd $(PREFIX) && $(PY) -m service.ops.fleet is-front); then nginx -t && systemctl reload-or-restart nginx; fi
	@echo "installed: http://$$(cd $(PREFIX) && $(PY) -c 'from service import settings; print(settings.load().nginx.listen)')/"
