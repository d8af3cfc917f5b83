"""Answering with a trained model, shared by `sgeo ask`, `sgeo eval` and `sgeo serve`: loading it onto a device
(`loading`: device, dtype, 4/8-bit LLM), the answer options and their checks (`options`), and a conversation
about one image (`image_chat`). Light at import: the job configs import `options`, and `sgeo --help` imports
those."""
