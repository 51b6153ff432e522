"""Stands in for the platform's sdk/ as faas-cli's configuration.copy delivers it."""

MARKER = "copied-into-function-folder"
