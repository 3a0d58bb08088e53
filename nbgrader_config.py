"""nbgrader configuration of the course (nbgrader 0.9). Run nbgrader from the repository root.

Layout: the course root is this folder; sources with solutions live in ``solutions/<assignment>/``, the generated
student release in ``exercises/<assignment>/`` (committed; regenerate with ``make release``), and all grading state
(submissions, autograded copies, feedback, the gradebook) under the git-ignored ``grading/`` folder.
"""
import os

from nbconvert.exporters import NotebookExporter
from nbgrader.converters.base import NbGraderException

c = get_config()  # noqa: F821  (provided by traitlets when nbgrader loads this file)

ROOT = os.path.dirname(os.path.abspath(__file__))
GRADING = os.path.join(ROOT, "grading")
os.makedirs(GRADING, exist_ok=True)  # nbgrader's sqlite gradebook fails when its folder is missing

c.CourseDirectory.root = ROOT
c.CourseDirectory.course_id = "rnnkit"
c.CourseDirectory.source_directory = "solutions"
c.CourseDirectory.release_directory = "exercises"
c.CourseDirectory.submitted_directory = "grading/submitted"
c.CourseDirectory.autograded_directory = "grading/autograded"
c.CourseDirectory.feedback_directory = "grading/feedback"
c.CourseDirectory.solution_directory = "grading/solution"
c.CourseDirectory.db_url = "sqlite:///" + os.path.join(GRADING, "gradebook.db")
# Only the notebooks are assignment material: fixtures, data and anything else in a source folder never reaches
# exercises/ (nbgrader copies every non-ignored file of solutions/<assignment>/ into the release).
c.CourseDirectory.ignore = [".ipynb_checkpoints", "*.pyc", "__pycache__", "feedback", ".*", "*.npz", "*.npy",
                            "*.pt", "*.pkl", "*.json", "*.csv", "*.py", "*.md", "fixtures", "data"]

# Per-cell wall-clock limit while autograding; a cell past it is interrupted and scores 0, the rest still runs.
c.Execute.timeout = 60
c.Execute.interrupt_on_timeout = True
# Restore graded cells a student deleted, from the gradebook's copy, before autograding.
c.OverwriteCells.add_missing_cells = True

c.ClearSolutions.code_stub = {"python": "# YOUR CODE HERE\nraise NotImplementedError()"}
c.ClearSolutions.enforce_metadata = True

# nbgrader's own autograde (`nbgrader autograde`, the formgrader's Autograde button) would run student code
# unsandboxed, in the grader's account, and write the hidden tests into the autograded notebook and so into the
# feedback. This course grades with `make autograde` (rnnkit/grading/autograde.py) instead; nbgrader's autograde
# stops here, before it touches the gradebook or grading/autograded/ (the exporter is made before anything is read).
REFUSAL = ("nbgrader autograde is switched off for this course: it would run student code outside the sandbox and "
           "put the hidden tests into the feedback. Grade with `make autograde` in the course root (as root on the "
           "grading machine; AUTOGRADE_ARGS='--assignment A --student S' for one submission), then use the "
           "formgrader to review, grade by hand and release feedback.")


class SandboxedGradingOnly(NotebookExporter):
    def __init__(self, *args, parent=None, **kwargs):
        if parent is not None:
            parent.log.error(REFUSAL)
        raise NbGraderException(REFUSAL)


c.Autograde.exporter_class = SandboxedGradingOnly

# The grading machine's own settings (its PostgreSQL gradebook): deploy/grader_nbgrader_config.py copied to
# grading/nbgrader_config.py, git-ignored and readable by the grader account only. Absent on development machines.
load_subconfig("nbgrader_config.py", path=GRADING)  # noqa: F821  (provided by traitlets, like get_config)
