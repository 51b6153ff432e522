"""The platform's one shared package.

Copied into each function's build context by ``configuration.copy`` in the root
``stack.yml`` (faas-cli's way), and importable as ``sdk`` from the repository root
in development. Modules here read no environment variables themselves: entrypoints
build configuration and pass values in.
"""
