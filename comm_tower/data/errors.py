"""The error raised for bad training data: it names the sample, the field and the fix."""

from __future__ import annotations


class DataError(ValueError):
    """A problem with one sample or the data file: "image 'x.jpg' in sample 17 (field 'image'): ..."."""

    def __init__(
        self, reason: str, index: int | None = None, field: str | None = None, subject: str | None = None
    ) -> None:
        self.reason, self.index, self.field, self.subject = reason, index, field, subject
        super().__init__(self._format())

    def _format(self) -> str:
        where = [self.subject] if self.subject else []
        if self.index is not None:
            where.append(f"in sample {self.index}" if self.subject else f"sample {self.index}")
        if self.field is not None:
            where.append(f"(field '{self.field}')")
        return f"{' '.join(where)}: {self.reason}" if where else self.reason

    def at(self, index: int | None = None, field: str | None = None) -> DataError:
        """The same error, with the sample index / field filled in where they were unknown."""
        return type(self)(
            self.reason,
            self.index if self.index is not None else index,
            self.field if self.field is not None else field,
            self.subject,
        )


class ImageTooLargeError(DataError):
    """An image whose canvas is over the pixel limit (`comm_tower.data.images.max_image_pixels`)."""
