# The course repo's commands. On a fresh clone, `make book` and `make test` do all set-up themselves:
# they create .venv (if missing), install rnnkit with everything the course needs, then build / test.
PYTHON ?= python3
VENV   := .venv
BIN    := $(VENV)/bin
STAMP  := $(VENV)/.installed-stamp
# nbgrader calls `alembic` from PATH: put the venv first for every recipe
export PATH := $(abspath $(BIN)):$(PATH)

.PHONY: venv system-deps book test clean-book constraints

# constraints.txt pins every package of the course environment (torch 2.13.0's CPU wheel included): reproducible
# builds, while pyproject.toml keeps the ranges a library declares. `make constraints` regenerates it.
$(STAMP): pyproject.toml constraints.txt
	test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --disable-pip-version-check -c constraints.txt -e '.[course]'
	touch $(STAMP)

venv: $(STAMP)

# Debian packages the tests drive: headless Chromium (browser check), bubblewrap (grading sandbox),
# PostgreSQL (gradebook at scale), Node.js/npm (the JupyterHub proxy of the deployment test). Installs only what is missing; needs root or sudo on Debian/Ubuntu.
system-deps:
	bash .ci/system-deps.sh

# Build the course site into _build/html (chapters execute, with a cache in _build/.jupyter_cache).
book: $(STAMP)
	$(BIN)/jupyter-book build . -W -n --keep-going

# Every test: rnnkit equality suites, data/training, assignments and grading gates,
# hostile submissions, and a clean zero-warning book build checked in headless Chromium.
test: $(STAMP) system-deps
	$(BIN)/python -m pytest

clean-book:
	rm -rf _build

# Publish the built site (run `make book` first) to the gh-pages branch of PUBLISH_REMOTE with ghp-import: the
# branch holds exactly _build/html plus .nojekyll (GitHub Pages would otherwise hide _static/ and _images/).
# GitHub Pages then serves it (Settings -> Pages -> Deploy from a branch: gh-pages). The workflow in
# .github/workflows/book.yml is the automatic alternative.
PUBLISH_REMOTE ?= origin
PUBLISH_BRANCH ?= gh-pages
SITE ?= _build/html
.PHONY: publish
publish: $(STAMP)
	@test -f $(SITE)/index.html || { echo "no site in $(SITE): run 'make book' first"; exit 1; }
	$(BIN)/ghp-import --no-jekyll --push --force --no-history --remote $(PUBLISH_REMOTE) \
		--branch $(PUBLISH_BRANCH) --message "Publish the course site from $$(git rev-parse --short HEAD)" $(SITE)

# Grading: every submission under grading/submitted/<student>/<assignment>/ runs in its own bubblewrap
# sandbox (JOBS at once), is judged outside it, lands in the gradebook, and grades.csv gets a row per student.
# AUTOGRADE_ARGS passes options, e.g. AUTOGRADE_ARGS="--db-url postgresql://... --cell-timeout 30" (see --help).
JOBS ?= 1
.PHONY: autograde feedback
autograde: $(STAMP)
	$(BIN)/python -m rnnkit.grading.autograde --jobs $(JOBS) $(AUTOGRADE_ARGS)

# (Re)generate the students' HTML feedback from the autograded notebooks and the gradebook, and grades.csv.
feedback: $(STAMP)
	$(BIN)/python -m rnnkit.grading.autograde --feedback-only $(AUTOGRADE_ARGS)

# Rewrite grading/grades.csv from the gradebook as it is (after grading by hand in the formgrader); of
# AUTOGRADE_ARGS it reads --root, --db-url and --export.
.PHONY: export
export: $(STAMP)
	$(BIN)/python -m rnnkit.grading.gradebook $(AUTOGRADE_ARGS)

# Assignments: regenerate the student release exercises/ from solutions/ with nbgrader's API (normalised,
# byte-identical on every run; each notebook's Rules paragraph is first rewritten from the rule table in
# rnnkit/grading/specs/table.py; also records the assignments in grading/gradebook.db), and the grader's stored
# expected values solutions/fixtures/*.npz from rnnkit (instructors only: never in the package students import;
# CI runs `--check` to prove they are current).
.PHONY: release fixtures
release: $(STAMP)
	$(BIN)/python -m rnnkit.grading.release

fixtures: $(STAMP)
	$(BIN)/python -m rnnkit.grading.fixtures --write

# Re-pin the course environment after changing pyproject.toml's ranges: freeze what `make venv` installed.
constraints: $(STAMP)
	$(BIN)/python -m pip freeze --exclude-editable --disable-pip-version-check | grep -v '^rnnkit' \
		| sed 's/^torch==\(.*\)+cpu$$/torch==\1/' > constraints.txt  # the local CPU wheel's pin, as pip is asked for it

# Copy detection for instructors: compares the answer cells of every grading/submitted/<student>/<assignment>/
# (the course's code removed) and writes grading/similarity/<assignment>.html (pairs ranked, matching code side by
# side), .csv and .json. ASSIGNMENT="03_lstm 04_gru" limits it; SIMILARITY_ARGS passes options (see --help).
ASSIGNMENT ?=
.PHONY: similarity
similarity: $(STAMP)
	$(BIN)/python -m rnnkit.grading.similarity $(foreach a,$(ASSIGNMENT),--assignment $(a)) $(SIMILARITY_ARGS)
