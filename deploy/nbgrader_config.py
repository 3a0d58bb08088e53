"""Machine-wide nbgrader config for every server on the hub: install as /etc/jupyter/nbgrader_config.py.

Students' servers use it to fetch and submit through the exchange; the formgrader service adds the course root's own
nbgrader_config.py (this repository's, which sets solutions/, exercises/, grading/ and the gradebook URL).
"""
from nbgrader.auth import JupyterHubAuthPlugin

c = get_config()  # noqa: F821

# a shared folder on the hub machine (or NFS): /srv/nbgrader/exchange, mode 0777 with the sticky bit.
# For Kubernetes / DockerSpawner, where no folder is shared, use ngshare instead (see deploy/README.md).
c.Exchange.root = "/srv/nbgrader/exchange"
c.Exchange.path_includes_course = True
c.Exchange.timezone = "UTC"
c.Authenticator.plugin_class = JupyterHubAuthPlugin
c.NbGrader.course_titles = {"rnnkit": "Recurrent networks: RNN, LSTM, GRU"}
c.CourseDirectory.course_id = "rnnkit"
