"""The template's test, kept in every function that does not bring its own handler_test.py.

It checks what holds for any handler: the module imports and ``handle`` takes
``(event, context)``. A function's own handler_test.py replaces this file; the
template's default greeting is tested in the platform's tests/template/.
"""

import inspect

# A plain import rather than `from .handler import handle`, so the test runs both
# inside the image (function/ is a package there) and from a build folder (it is
# not); tox.ini puts this folder on pytest's path. To skip tests at build time set
# the build arg TEST_ENABLED=false.
import handler


def test_handler_defines_handle_taking_event_and_context():
    assert callable(handler.handle)
    params = inspect.signature(handler.handle).parameters
    assert len(params) >= 2 or any(p.kind is p.VAR_POSITIONAL for p in params.values())
