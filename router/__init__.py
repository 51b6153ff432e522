"""The edge router: the platform's only ingress (``python -m router``)."""
