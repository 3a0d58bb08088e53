"""Settings of the grading machine: copy to ``grading/nbgrader_config.py`` in the course root (git-ignored, read by
the course's nbgrader_config.py after its own settings). The repository's own config stays as it is for development
and CI.
"""
c = get_config()  # noqa: F821

# One PostgreSQL gradebook shared by the formgrader service and `make autograde`. .ci/postgres.sh creates this role,
# password and database (RNNKIT_PG_ROLE / RNNKIT_PG_PASSWORD / RNNKIT_PG_DB change them: then copy the URL it
# prints here, with the +psycopg2 driver). Or point this at the institution's database server.
c.CourseDirectory.db_url = "postgresql+psycopg2://nbgrader:nbgrader@127.0.0.1:5432/nbgrader"
