"""What the builder needs from a backend: turn one unpacked build context into an image.

A backend is any object with ``async def build(job, log) -> str``. ``local`` (this
package's ``local.py``) stores the context in the process runtime's artifact store;
``buildkit`` (``buildkit.py``) builds the context's Dockerfile with BuildKit and pushes
the image to its registry. Both sit behind the same interface, so the HTTP API, the tar
checks and the limits are the same for each.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Protocol

__all__ = ["BACKENDS", "Backend", "BuildFailed", "BuildJob", "LogLine"]

# Names accepted by OFC_BUILDER_BACKEND; app.py builds the matching object.
BACKENDS = ("local", "buildkit")

LogLine = Callable[[str], None]


class BuildFailed(Exception):
    """The build ran and failed for a reason the user can act on; the message says which.

    The message becomes the last line of the build log, so it carries no secret and no
    stack trace. Anything else a backend raises is reported as an internal error.
    """


@dataclass(frozen=True)
class BuildJob:
    """One checked build request, as the backend receives it."""

    image: str  # normalised reference to produce, e.g. "127.0.0.1:5000/alice/hello:latest"
    context: Path  # the unpacked ``context/`` folder; the backend may write into it
    build_args: Mapping[str, str] = field(default_factory=dict)  # docker build --build-arg
    platforms: tuple[str, ...] = ()  # requested target platforms, e.g. ("linux/amd64",)


class Backend(Protocol):
    """Builds contexts into images."""

    async def build(self, job: BuildJob, log: LogLine) -> str:
        """Build ``job``, passing progress lines to ``log``; return the image reference.

        Raises :class:`BuildFailed` when the build fails (bad requirements, failing tests).
        """
        ...
