# The course repo's commands. On a fresh clone, `make book` and `make test` do all set-up themselves:
# they create .venv (if missing), install rnnkit with everything the course needs, then build / test.
PYTHON ?= python3
VENV   := .venv
BIN    := $(VENV)/bin
STAMP  := $(VENV)/.installed-stamp
# nbgrader calls `alembic` from PATH: put the venv first for every recipe
export PATH := $(abspath $(BIN)):$(PATH)

.PHONY: venv system-deps book test clean-book

$(STAMP): pyproject.toml
	test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --disable-pip-version-check -e '.[course]'
	touch $(STAMP)

venv: $(STAMP)

# Debian packages the tests drive: headless Chromium (browser check), bubblewrap (grading sandbox),
# PostgreSQL (gradebook at scale). Installs only what is missing; needs root or sudo on Debian/Ubuntu.
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

# Grading (issue 8): every submission under grading/submitted/<student>/<assignment>/ runs in its own bubblewrap
# sandbox (JOBS at once), is judged outside it, lands in the gradebook, and grades.csv gets a row per student.
# AUTOGRADE_ARGS passes options, e.g. AUTOGRADE_ARGS="--db-url postgresql://... --cell-timeout 30" (see --help).
JOBS ?= 1
.PHONY: autograde feedback
autograde: $(STAMP)
	$(BIN)/python -m rnnkit.grading.autograde --jobs $(JOBS) $(AUTOGRADE_ARGS)

# (Re)generate the students' HTML feedback from the autograded notebooks and the gradebook.
feedback: $(STAMP)
	$(BIN)/python -m rnnkit.grading.autograde --feedback-only $(AUTOGRADE_ARGS)

# Assignments (issue 5): regenerate the student release exercises/ from solutions/ with nbgrader's API (normalised,
# byte-identical on every run; also records the assignments in grading/gradebook.db), and the grader's stored
# expected values rnnkit/grading/fixtures/*.npz from rnnkit (CI runs `--check` to prove they are current).
.PHONY: release fixtures
release: $(STAMP)
	$(BIN)/python -m rnnkit.grading.release

fixtures: $(STAMP)
	$(BIN)/python -m rnnkit.grading.fixtures --write
