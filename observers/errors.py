"""Errors of the observers layer.

::

    ObserverError
    ├── ConfigurationError      observers set up wrongly (two on one column, bad column)
    │   └── PluginError         a plugin spec or entry point could not be loaded
    └── WorkerError             a worker could not do what was asked
        ├── WorkerTimeout       run_until_idle's deadline passed with work still pending
        └── WorkerFailed        a worker thread died of an unexpected error

Errors of the layers below (``percolator.errors``, ``bigtable_lite.errors``) pass
through unchanged; an observer's own exceptions never escape a worker: they are
counted, retried with backoff and finally parked (see ``observers._parking``).
"""

from __future__ import annotations


class ObserverError(Exception):
    """Base of every error raised by the observers layer."""


class ConfigurationError(ObserverError, ValueError):
    """Observers are configured wrongly, e.g. two observers registered on one column."""


class PluginError(ConfigurationError):
    """A ``pkg.module:name`` spec or a ``percolator.observers`` entry point failed to load."""


class WorkerError(ObserverError):
    """A worker could not do what was asked."""


class WorkerTimeout(WorkerError):
    """``run_until_idle`` reached its deadline while notifications were still pending."""


class WorkerFailed(WorkerError):
    """A worker thread died of an unexpected error (the cause is chained)."""
