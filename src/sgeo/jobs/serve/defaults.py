"""The server's own defaults, declared once: `ServeConfig` (the `sgeo serve` options) and the classes a test or
a library user builds without it (`Engine`, `Limits`) start from these. Light: `sgeo --help` imports it.
The answer defaults (temperature, length) are `sgeo ask`'s too: `inference.options`."""

MAX_BATCH = 32  # answers generated together
MAX_QUEUE = 32  # requests waiting beyond MAX_BATCH before 429
MAX_REQUEST_MB = 20.0  # the largest request body, upload or image file read, in MiB
MAX_IMAGE_MB = 128.0  # the most one image may take once decoded, in MiB
MIB = 2**20
