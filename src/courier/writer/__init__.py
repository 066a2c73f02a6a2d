"""Writer: consume each type's stream into durable staging files (DESIGN §6)."""

from courier.writer.service import Writer, default_writer_id

__all__ = ["Writer", "default_writer_id"]
