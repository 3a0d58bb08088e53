"""Extra settings for the grading machine: append to the course root's nbgrader_config.py there (or put in
~grader-rnnkit/.jupyter/nbgrader_config.py). The repository's own config stays as it is for development and CI.
"""
c = get_config()  # noqa: F821

# One PostgreSQL gradebook shared by the formgrader service and `make autograde` (sqlite locks under JOBS>1
# writers from several machines; the autograder itself is a single writer, so sqlite is fine on one machine).
# Start/prepare it with .ci/postgres.sh, or point this at the institution's database server.
c.CourseDirectory.db_url = "postgresql+psycopg2://nbgrader:CHANGE-ME@127.0.0.1:5432/rnnkit"

# Collected submissions land here (nbgrader collect), and autograde reads them from here.
c.CourseDirectory.submitted_directory = "grading/submitted"
# Per-cell limit in the sandbox (make autograde passes it on); the per-notebook limit is --timeout.
c.Execute.timeout = 60
