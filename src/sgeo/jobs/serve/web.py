"""The Gradio page: upload an image, talk about it (the conversation keeps its context), watch answers stream in.

Each browser session holds a `Session` in a `gr.State`: its `Chat` holds the image encoded once, on the first
question, and a new or cleared image starts a new conversation. Gradio hands over the uploaded file untouched
and sgeo decodes it, as `sgeo ask` does, within the API's per-image budget. The page opens only files in
Gradio's upload folder (uploads, and the examples Gradio copies there): Gradio's call API also accepts a
file *path* from the client, and no such path is ever read. Up to the engine's `max_batch` questions are
answered at once, batched with the API's; further ones wait in Gradio's queue (which shows their place). A
question takes an engine slot as an API request does; with none free the page says the server is busy.
"""

from __future__ import annotations

from contextlib import aclosing
from dataclasses import dataclass
from pathlib import Path

from PIL import Image

from ...errors import SgeoError
from ...model.conversation import IMAGE_TOKEN, clean_text
from ...pipeline.images import read_file, resolve_inside
from .chat_request import ApiError, Limits, decode_for_serving
from .engine import Busy, Engine
from .reply import Chat

CSS = "#sgeo-chat {min-height: 420px}"


def theme():
    """Gradio's default look with system fonts: the page loads nothing from outside the server."""
    import gradio as gr

    return gr.themes.Default(
        font=["ui-sans-serif", "system-ui", "sans-serif"], font_mono=["ui-monospace", "monospace"]
    )


@dataclass
class Session:
    """One browser session's conversation about `image` (the uploaded file's path).

    Starting over changes it in place and bumps `epoch`, so that an answer still streaming (Gradio runs it
    on another thread) sees it is stale and stops. A question names the image it is about, so a question
    that reaches the server before the upload's change event still starts the right conversation, and the
    late event then changes nothing.
    """

    chat: Chat | None = None
    image: str | None = None
    epoch: int = 0

    def start_over(self, image: str | None = None) -> None:
        self.chat, self.image, self.epoch = None, image, self.epoch + 1

    def messages(self) -> list[dict]:
        """The chat's turns as the chatbot's messages (without the `<image>` placeholder)."""
        role = {"human": "user", "gpt": "assistant"}
        turns = self.chat.turns if self.chat else []
        return [
            {"role": role[t["from"]], "content": t["value"].replace(IMAGE_TOKEN, "").strip()} for t in turns
        ]


def uploaded_image(path: str, limits: Limits) -> Image.Image:
    """The image at `path`, which must be in Gradio's upload folder: the page reads nothing a client names."""
    from gradio.utils import get_upload_folder

    try:
        target = resolve_inside(get_upload_folder(), path)
    except SgeoError:
        raise SgeoError(
            "the page takes uploaded images only; upload the image (or pick an example)"
        ) from None
    data = read_file(target, max_bytes=limits.max_file_bytes, name="the uploaded image")
    try:
        return decode_for_serving(data, limits, "the uploaded image")
    except ApiError as error:
        raise SgeoError(error.message) from None


def build_page(
    engine: Engine, limits: Limits, examples: list[tuple[Path, str]], temperature: float, max_tokens: int
):
    """The `gr.Blocks` of the page, answering as many questions at once as the engine batches."""
    import gradio as gr
    from starlette.concurrency import run_in_threadpool

    async def send(question, image, session: Session, temperature, max_tokens):
        """Stream the answer into the chatbot: yields (messages, question box)."""
        question = clean_text(question or "")
        if image is None:
            gr.Warning("Upload an image first (or pick an example).")
            return
        if not question:
            return
        if image != session.image:
            session.start_over(image)
        epoch = session.epoch
        shown = [
            *session.messages(),
            {"role": "user", "content": question},
            {"role": "assistant", "content": ""},
        ]
        try:
            slot = engine.admit()
        except Busy as busy:  # an error, not a warning: Gradio's call API passes it on to scripts too
            raise gr.Error(
                f"The server is busy answering other questions; send yours again in {busy.retry_after} s.",
                title="Busy",
                print_exception=False,
            ) from None
        yield shown, ""
        try:
            # decoded as `sgeo ask` decodes files: EXIF orientation applied, alpha over white
            chat = session.chat or await engine.open_chat_async(
                await run_in_threadpool(uploaded_image, image, limits)
            )
            prompt = await run_in_threadpool(engine.prompt_ids, chat, question)
        except SgeoError as error:
            slot.release()
            gr.Warning(str(error))
            yield session.messages(), question
            return
        except BaseException:
            slot.release()
            raise
        if session.epoch != epoch:
            slot.release()
            return
        session.chat = chat
        reply = engine.reply(
            chat, question, float(temperature), int(max_tokens), slot=slot, prompt_ids=prompt
        )
        # closing the reply stops its generation and frees its slot
        async with aclosing(reply.stream()) as pieces:
            async for piece in pieces:
                if session.epoch != epoch:
                    return
                shown[-1]["content"] += piece
                yield shown, ""
        if session.epoch == epoch:
            yield session.messages(), ""

    def new_image(image, session: Session):
        if image == session.image:  # a question about this image came first and started its conversation
            return gr.skip()
        session.start_over(image)
        return []

    def clear(session: Session):
        session.start_over(session.image)
        return []

    with gr.Blocks(title=f"sgeo · {engine.name}", analytics_enabled=False) as page:
        session = gr.State(Session())
        gr.Markdown(
            f"## sgeo · SpatialGeo\nModel **`{engine.name}`**. Upload an image and ask about distances, sizes "
            "and positions; follow-up questions keep the conversation. The same server answers "
            "`POST /v1/chat/completions` (OpenAI format)."
        )
        question = gr.Textbox(
            placeholder="Ask about the image, e.g. How far is the red box from the blue sphere?",
            show_label=False, scale=5, elem_id="sgeo-question", render=False, autofocus=True,
        )  # fmt: skip
        with gr.Row(equal_height=False):
            with gr.Column(scale=2):
                image = gr.Image(
                    type="filepath", image_mode=None, label="Image", sources=["upload", "clipboard"],
                    height=320, elem_id="sgeo-image",
                )  # fmt: skip
                with gr.Accordion("Generation", open=True):
                    temperature_box = gr.Slider(
                        0.0, 1.5, value=temperature, step=0.05, label="Temperature (0: greedy)",
                        elem_id="sgeo-temperature",
                    )  # fmt: skip
                    max_tokens_box = gr.Slider(
                        1, max(max_tokens, 1024), value=max_tokens, step=1, label="Max new tokens",
                        elem_id="sgeo-max-tokens",
                    )  # fmt: skip
                if examples:
                    gr.Examples(
                        [[str(path), text] for path, text in examples], inputs=[image, question],
                        label="Examples (synthetic scenes)", examples_per_page=len(examples),
                    )  # fmt: skip
            with gr.Column(scale=3):
                chatbot = gr.Chatbot(label="Conversation", elem_id="sgeo-chat", height=440)
                with gr.Row():
                    question.render()
                    send_button = gr.Button("Send", variant="primary", scale=1, elem_id="sgeo-send")
                clear_button = gr.Button("Clear conversation", elem_id="sgeo-clear")

        inputs = [question, image, session, temperature_box, max_tokens_box]
        question.submit(send, inputs, [chatbot, question])
        send_button.click(send, inputs, [chatbot, question])
        clear_button.click(clear, session, chatbot, queue=False)
        image.change(new_image, [image, session], chatbot, queue=False)  # a new image: a new conversation
    return page.queue(default_concurrency_limit=engine.max_batch, max_size=max(engine.max_queue, 1))
