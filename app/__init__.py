"""Pursuit: Conformal Information Pursuit as a service."""

from importlib.metadata import PackageNotFoundError, version

try:
    __version__ = version("pursuit")
except PackageNotFoundError:  # running from a source tree without installation
    __version__ = "0.0.0+source"
