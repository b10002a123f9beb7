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
