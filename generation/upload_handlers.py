"""Django upload handler that bounds every uploaded file at STUDIO_UPLOAD_MAX_BYTES + 1 bytes.

Django writes an upload to memory (small) or a temporary file (large) before any view runs,
whatever its size. Listed first in FILE_UPLOAD_HANDLERS, this handler passes on at most the limit
plus one byte of each file and drops the rest, so an oversized file never fills memory or the disk;
the upload service then sees a file one byte over the limit and refuses it with its message (413).
The rest of the request body is still read (and discarded): cap the body at the proxy too.
A LoRA import (form field LORA_FIELD) has its own, larger limit, STUDIO_LORA_MAX_BYTES.
"""

from __future__ import annotations

from django.conf import settings
from django.core.files.uploadhandler import FileUploadHandler


LORA_FIELD = "lora_file"


class UploadSizeLimitHandler(FileUploadHandler):
    def new_file(self, *args, **kwargs):
        super().new_file(*args, **kwargs)
        self.passed_on = 0
        lora = self.field_name == LORA_FIELD
        self.limit = settings.STUDIO_LORA_MAX_BYTES if lora else settings.STUDIO_UPLOAD_MAX_BYTES

    def receive_data_chunk(self, raw_data: bytes, start: int) -> bytes | None:
        room = self.limit + 1 - self.passed_on
        if room <= 0:
            return None  # the handlers after this one get nothing more of this file
        chunk = raw_data[:room]
        self.passed_on += len(chunk)
        return chunk

    def file_complete(self, file_size: int) -> None:
        return None  # the next handler (memory or temporary file) makes the file
