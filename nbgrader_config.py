"""nbgrader configuration of the course (nbgrader 0.9). Run nbgrader from the repository root.

Layout: the course root is this folder; sources with solutions live in ``solutions/<assignment>/``, the generated
student release in ``exercises/<assignment>/`` (committed; regenerate with ``make release``), and all grading state
(submissions, autograded copies, feedback, the gradebook) under the git-ignored ``grading/`` folder.
"""
import os

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
