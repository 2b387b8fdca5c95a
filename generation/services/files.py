"""Removing stored files (images, thumbnails, canvas sources) once the rows that named them are gone."""

from __future__ import annotations

import logging

from django.core.files.storage import default_storage
from django.db import transaction

logger = logging.getLogger(__name__)


def files_delete_on_commit(names: list[str]) -> None:
    """Delete these files from storage after the current transaction commits, so a rolled-back
    delete never leaves a row without its files. A missing file or a storage hiccup leaves an
    orphan file and a log line, never an error."""
    names = [name for name in names if name]
    transaction.on_commit(lambda: files_delete_now(names))


def files_delete_now(names: list[str]) -> None:
    """Delete these files at once (files stored for rows that were never written)."""
    for name in names:
        try:
            default_storage.delete(name)
        except Exception:
            logger.warning("Could not delete %s", name, exc_info=True)
