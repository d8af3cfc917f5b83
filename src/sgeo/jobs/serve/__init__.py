"""`sgeo serve`: a Gradio page and an OpenAI-compatible `/v1/chat/completions` endpoint for one model.

- `engine`: the loaded model, its thread and the request slots; image chats opened, answers started.
- `features`: images -> tower features on the model's thread, the recent ones kept.
- `reply`: one answer streamed token by token (`Reply`), its conversation (`Chat`) and request slot (`Slot`).
- `chat_request`: OpenAI request bodies and image URLs -> engine inputs, or a 4xx `ApiError`.
- `api`: the HTTP routes (JSON and server-sent events) and their one-line JSON errors.
- `web`: the Gradio page.
- `examples`: the page's synthetic example scenes.
- `app`: `ServeConfig`, `run_serve`: one uvicorn server for both.
"""

from .app import ServeConfig, build_app, run_serve

__all__ = ["ServeConfig", "build_app", "run_serve"]
