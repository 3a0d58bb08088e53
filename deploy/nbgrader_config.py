"""Machine-wide nbgrader config for every server on the hub: install as /etc/jupyter/nbgrader_config.py.

Students' servers use it to fetch and submit through the exchange; the formgrader service adds the course root's own
nbgrader_config.py (this repository's, which sets solutions/, exercises/, grading/ and the gradebook URL).
"""
import os

from nbgrader.auth import JupyterHubAuthPlugin

c = get_config()  # noqa: F821

# A shared folder on the hub machine (or NFS), mode 1777 (every account may create its course folder, none may
# remove another's). The hub passes NBGRADER_EXCHANGE on to every server (deploy/rnnkit.env). For Kubernetes /
# DockerSpawner, where no folder is shared, use ngshare instead (see deploy/README.md).
c.Exchange.root = os.environ.get("NBGRADER_EXCHANGE", "/srv/nbgrader/exchange")
c.Exchange.path_includes_course = True
c.Exchange.timezone = "UTC"
# which courses a user sees comes from the hub's groups nbgrader-<course> / formgrade-<course>
c.Authenticator.plugin_class = JupyterHubAuthPlugin
