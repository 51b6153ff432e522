"""edge-auth: sign-in with GitHub, the platform's session cookie, and the router's access check.

``app.py`` is the composition root and route table, ``config.py`` the settings,
``views.py`` the endpoints (``/login``, ``/callback``, ``/q/``, ``/logout``),
``github.py`` GitHub's OAuth web flow, ``state.py`` the signed single-use OAuth state,
``redirects.py`` which return URLs are allowed, ``keys.py`` the secrets it reads.
The session token itself is :mod:`sdk.tokens`. Run it with ``python -m auth``; it is
served as ``auth.system.<domain>`` behind the router.
"""
