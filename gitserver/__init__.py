"""The platform's own git remote: ``git push http://<host>/git/<user>/<repo>.git main``.

For users without GitHub. ``git http-backend`` answers the smart-HTTP protocol
(``cgi.py``); ``app.py`` is the composition root, route table and access policy (push:
the owner with their token; fetch: the owner, or the pipeline with its read token);
``users.py`` the users ``ofc user add`` creates; ``repos.py`` the bare repositories,
created on first push; ``events.py`` the GitHub-shaped push events a push produces, and
``delivery.py`` sends them, signed with the webhook secret, to github-event: the very
path a GitHub push takes. Run it with ``python -m gitserver``; ``ofc up`` starts it.
"""
