# The two commands a fresh machine needs: `make run` and `make test`.
PYTHON ?= python3
VENV := .venv
PY := $(VENV)/bin/python
PIP := $(VENV)/bin/pip
HOST ?= 127.0.0.1
PORT ?= 8000

.PHONY: help run test chromium lint fmt worker beat migrate seed schema clean

help:
	@echo "make run     create .venv, install, migrate, load demo data, serve on http://$(HOST):$(PORT)"
	@echo "make test    the whole test suite (SQLite unless DATABASE_URL is set)"
	@echo "make lint    ruff check, ruff format --check, makemigrations --check, schema validation"
	@echo "make fmt     format and auto-fix"
	@echo "make worker  a Celery worker (needs CELERY_BROKER_URL)"
	@echo "make beat    the Celery beat scheduler (schedules editable in the admin)"
	@echo "make bench-quick / bench   every benchmark, one table, non-zero exit on a missed target (bench/README.md)"
	@echo "make bench-award / bench-events / bench-tiers   one suite alone"

$(PY): requirements.txt requirements-dev.txt
	$(PYTHON) -m venv $(VENV)
	$(PIP) install --quiet --disable-pip-version-check -r requirements-dev.txt
	@touch $(PY)

run: export DEBUG ?= true
run: $(PY)
	$(PY) manage.py migrate --no-input
	$(PY) manage.py collectstatic --no-input --verbosity 0
	$(PY) manage.py seed_demo --url http://$(HOST):$(PORT)
	$(PY) manage.py runserver $(HOST):$(PORT)

# The dashboard's browser test drives Debian's Chromium (no browser download at run time).
chromium:
	@command -v chromium >/dev/null || { [ "$$(id -u)" = 0 ] && apt-get update -qq \
		&& DEBIAN_FRONTEND=noninteractive apt-get install -y -qq chromium chromium-driver >/dev/null; } \
		|| { echo "Chromium is missing: apt-get install -y chromium" >&2; exit 1; }

test: $(PY) chromium
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
# `make bench-quick` (50,000 members, under 5 minutes) and `make bench` (100,000 and 1,000,000
# members) run every suite through bench/run.py and print one table (bench/results/latest.md);
# they exit 1 when a target is missed, 2 when a suite crashed. Needs PostgreSQL, Redis and wrk.
# The bench database is created when missing and reset by the benchmark; its name must contain
# "bench". The Redis database is flushed (analytics cold-cache runs).
BENCH_DB_HOST ?= 127.0.0.1
BENCH_DB_PORT ?= 5432
BENCH_DB_USER ?= postgres
BENCH_DB_NAME ?= loyalty_bench
BENCH_DATABASE_URL ?= postgres://$(BENCH_DB_USER)@$(BENCH_DB_HOST):$(BENCH_DB_PORT)/$(BENCH_DB_NAME)
BENCH_REDIS_URL ?= redis://127.0.0.1:6379/7
BENCH_ARGS ?=
BENCH_ENV = DJANGO_SETTINGS_MODULE=bench.settings DATABASE_URL=$(BENCH_DATABASE_URL) \
	BENCH_REDIS_URL=$(BENCH_REDIS_URL)

.PHONY: bench bench-quick bench-db bench-deps bench-award bench-events bench-tiers

bench-db:
	@out=$$(createdb -h $(BENCH_DB_HOST) -p $(BENCH_DB_PORT) -U $(BENCH_DB_USER) $(BENCH_DB_NAME) 2>&1) \
		|| case "$$out" in *"already exists"*) ;; *) echo "$$out" >&2; exit 1 ;; esac

bench-deps: $(PY)
	@command -v wrk >/dev/null || { [ "$$(id -u)" = 0 ] && apt-get install -y -qq wrk >/dev/null; } \
		|| { echo "wrk is missing: apt-get install -y wrk" >&2; exit 1; }
	$(PIP) install --quiet --disable-pip-version-check -r bench/requirements.txt

bench: bench-deps bench-db
	$(BENCH_ENV) $(PY) -m bench.run $(BENCH_ARGS)

bench-quick: bench-deps bench-db
	$(BENCH_ENV) $(PY) -m bench.run --quick $(BENCH_ARGS)

# The award endpoint alone, with its detailed report (bench/results/award.md).
bench-award: $(PY) bench-db
	$(BENCH_ENV) $(PY) -m bench.award_throughput $(BENCH_ARGS)

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
