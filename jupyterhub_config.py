# JupyterHub's configuration for brainrecon's dashboard, used by `brainrecon hub` (which starts JupyterHub with
# `-f jupyterhub_config.py` and the settings file it wrote in $BRAINRECON_HUB_SETTINGS). Every setting is made by
# brainrecon.app_hub.configure_hub (nbs/21_app_hub.ipynb, tested there); a lab adds its own lines below that call,
# e.g. c.JupyterHub.bind_url behind a TLS-terminating proxy.
from brainrecon.app_hub import configure_hub

configure_hub(c)  # noqa: F821 (JupyterHub defines `c`)
