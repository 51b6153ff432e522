"""The function builder: ``POST /build`` turns a signed tar (config + context) into an image.

``app.py`` is the composition root and route table, ``config.py`` the settings,
``tarball.py`` the checks on the untrusted tar, ``backends/`` the ways to build
(``local``: the process runtime's artifact store and venv cache). Run it with
``python -m builder``; ``ofc up`` starts it beside the runtime.
"""
