"""The Gradio page: upload an image, talk about it (the conversation keeps its context), watch answers stream in.

Each browser session holds one `ImageChat` in a `gr.State`: the image is encoded once, on the first question,
and a new or cleared image starts a new conversation. Gradio hands over the uploaded file untouched and sgeo
decodes it, as `sgeo ask` does. Events wait in Gradio's queue, one at a time, and the
model lock behind them is shared with the HTTP API.
"""

from __future__ import annotations

from pathlib import Path

from ...errors import SgeoError
from ...model.conversation import IMAGE_TOKEN
from ...pipeline.images import load_image
from .engine import Engine, clean_text

CSS = "#sgeo-chat {min-height: 420px}"


def theme():
    """Gradio's default look with system fonts: the page loads nothing from outside the server."""
    import gradio as gr

    return gr.themes.Default(
        font=["ui-sans-serif", "system-ui", "sans-serif"], font_mono=["ui-monospace", "monospace"]
    )


def _messages(turns: list[dict]) -> list[dict]:
    """ImageChat turns -> the chatbot's messages (without the `<image>` placeholder)."""
    role = {"human": "user", "gpt": "assistant"}
    return [{"role": role[t["from"]], "content": t["value"].replace(IMAGE_TOKEN, "").strip()} for t in turns]


def build_page(engine: Engine, examples: list[tuple[Path, str]], temperature: float, max_tokens: int):
    """The `gr.Blocks` of the page, queued one event at a time."""
    import gradio as gr

    def send(question, image, chat, temperature, max_tokens):
        """Stream the answer into the chatbot: yields (messages, chat state, question box)."""
        question = clean_text(question or "")
        if image is None:
            gr.Warning("Upload an image first (or pick an example).")
            yield _messages(chat.turns) if chat else [], chat, question
            return
        if not question:
            return
        before = _messages(chat.turns) if chat else []
        shown = [*before, {"role": "user", "content": question}, {"role": "assistant", "content": ""}]
        yield shown, chat, ""
        try:
            if chat is None:  # decoded as `sgeo ask` decodes files: EXIF turned, alpha over white
                chat = engine.open_chat(load_image(image)[0])
            engine.prompt_tokens(chat, question)
        except SgeoError as error:
            gr.Warning(str(error))
            yield before, chat, question
            return
        for piece in engine.reply(chat, question, float(temperature), int(max_tokens)):
            shown[-1]["content"] += piece
            yield shown, chat, ""
        yield _messages(chat.turns), chat, ""

    def new_conversation():
        return [], None

    with gr.Blocks(title=f"sgeo · {engine.name}", analytics_enabled=False) as page:
        chat = gr.State(None)
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

        inputs = [question, image, chat, temperature_box, max_tokens_box]
        outputs = [chatbot, chat, question]
        question.submit(send, inputs, outputs)
        send_button.click(send, inputs, outputs)
        clear_button.click(new_conversation, None, [chatbot, chat], queue=False)
        image.change(new_conversation, None, [chatbot, chat], queue=False)  # a new image: a new conversation
    return page.queue(default_concurrency_limit=1, max_size=64)
