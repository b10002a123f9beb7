# The two commands a fresh machine needs: `make run` and `make test`.
PYTHON ?= python3
VENV := .venv
PY := $(VENV)/bin/python
PIP := $(VENV)/bin/pip
HOST ?= 127.0.0.1
PORT ?= 8000

.PHONY: help run test lint fmt worker beat migrate seed schema clean

help:
	@echo "make run     create .venv, install, migrate, load demo data, serve on http://$(HOST):$(PORT)"
	@echo "make test    the whole test suite (SQLite unless DATABASE_URL is set)"
	@echo "make lint    ruff check, ruff format --check, makemigrations --check, schema validation"
	@echo "make fmt     format and auto-fix"
	@echo "make worker  a Celery worker (needs CELERY_BROKER_URL)"
	@echo "make beat    the Celery beat scheduler (schedules editable in the admin)"
	@echo "make bench-quick / bench / bench-events / bench-tiers   benchmarks on PostgreSQL (bench/README.md)"

$(PY): requirements.txt requirements-dev.txt
	$(PYTHON) -m venv $(VENV)
	$(PIP) install --quiet --disable-pip-version-check -r requirements-dev.txt
	@touch $(PY)

run: export DEBUG ?= true
run: $(PY)
	$(PY) manage.py migrate --no-input
	$(PY) manage.py collectstatic --no-input --verbosity 0
	$(PY) manage.py seed_demo
	$(PY) manage.py runserver $(HOST):$(PORT)

test: $(PY)
	$(PY) -m pytest -n 2 -p no:cacheprovider $(PYTEST_ARGS)

lint: export DEBUG ?= true
lint: $(PY)
	$(VENV)/bin/ruff check .
	$(VENV)/bin/ruff format --check .
	$(PY) manage.py makemigrations --check --dry-run
	$(PY) manage.py spectacular --validate --fail-on-warn --file /dev/null

fmt: $(PY)
	$(VENV)/bin/ruff check --fix .
	$(VENV)/bin/ruff format .

worker: $(PY)
	$(VENV)/bin/celery -A loyalty worker --loglevel=INFO -Q default,bulk,webhooks

beat: $(PY)
	$(VENV)/bin/celery -A loyalty beat --loglevel=INFO

schema: export DEBUG ?= true
schema: $(PY)
	$(PY) manage.py spectacular --validate --file schema.yml

clean:
	rm -rf $(VENV) db.sqlite3 db.sqlite3-wal db.sqlite3-shm staticfiles

# --- Benchmarks (bench/; never part of `make test`) --------------------------------------------
# The award endpoint against a minimal DRF view on PostgreSQL (SPEC §5). The bench database is
# created when missing and reset by the benchmark itself; its name must contain "bench".
BENCH_DB_HOST ?= 127.0.0.1
BENCH_DB_PORT ?= 5432
BENCH_DB_USER ?= postgres
BENCH_DB_NAME ?= loyalty_bench
BENCH_DATABASE_URL ?= postgres://$(BENCH_DB_USER)@$(BENCH_DB_HOST):$(BENCH_DB_PORT)/$(BENCH_DB_NAME)
BENCH_ARGS ?=

.PHONY: bench bench-quick bench-db bench-events bench-tiers

bench-db:
	@out=$$(createdb -h $(BENCH_DB_HOST) -p $(BENCH_DB_PORT) -U $(BENCH_DB_USER) $(BENCH_DB_NAME) 2>&1) \
		|| case "$$out" in *"already exists"*) ;; *) echo "$$out" >&2; exit 1 ;; esac

bench: $(PY) bench-db
	DJANGO_SETTINGS_MODULE=bench.settings DATABASE_URL=$(BENCH_DATABASE_URL) \
		$(PY) -m bench.award_throughput $(BENCH_ARGS)

bench-quick: $(PY) bench-db
	DJANGO_SETTINGS_MODULE=bench.settings DATABASE_URL=$(BENCH_DATABASE_URL) \
		$(PY) -m bench.award_throughput --quick $(BENCH_ARGS)

# Event ingestion (batches of 1,000 through the API) against plain multi-row INSERTs.
bench-events: $(PY)
	@out=$$(createdb -h $(BENCH_DB_HOST) -p $(BENCH_DB_PORT) -U $(BENCH_DB_USER) $(BENCH_DB_NAME)_events 2>&1) \
		|| case "$$out" in *"already exists"*) ;; *) echo "$$out" >&2; exit 1 ;; esac
	DJANGO_SETTINGS_MODULE=bench.settings DATABASE_URL=$(BENCH_DATABASE_URL)_events \
		$(PY) -m bench.event_ingestion $(BENCH_ARGS)

# Population tier reassessment (100,000 and 1,000,000 members) against hand-written SQL.
bench-tiers: $(PY)
	@out=$$(createdb -h $(BENCH_DB_HOST) -p $(BENCH_DB_PORT) -U $(BENCH_DB_USER) $(BENCH_DB_NAME)_tiers 2>&1) \
		|| case "$$out" in *"already exists"*) ;; *) echo "$$out" >&2; exit 1 ;; esac
	DJANGO_SETTINGS_MODULE=bench.settings DATABASE_URL=$(BENCH_DATABASE_URL)_tiers \
		$(PY) -m bench.reassessment $(BENCH_ARGS)
