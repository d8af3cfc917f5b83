"""A conversation about one image (`ImageChat`): what `sgeo ask` runs, and what `sgeo serve`'s answers are
checked against."""

from __future__ import annotations

import time

from ..errors import SgeoError
from ..model.conversation import clean_text, question_turn
from .options import MAX_NEW_TOKENS

# The model's own template (its processor_config.json's; LLaVA-1.5's vicuna_v1 for every LLaVA / SpatialGeo
# model): `processor.tokenize(turns, TEMPLATE)` and `processor.template()` resolve it.
TEMPLATE = None


class ImageChat:
    """A conversation about one image: the image is encoded once, its features reused on every turn."""

    def __init__(self, model, processor, image, template=TEMPLATE, system: str | None = None):
        # the model's own template unless another is named; `system` replaces its system message
        self.model, self.processor = model, processor
        self.template = processor.resolve_template(template, system)
        pixel_values = processor.preprocess_images([image])  # [1, 3, S, S]
        self.image_features = model.encode_images(pixel_values)  # {tower: [1, ...]}
        self.turns: list[dict] = []

    def ask(
        self, question: str, temperature: float = 0.0, max_new_tokens: int = MAX_NEW_TOKENS, streamer=None
    ) -> dict:
        """Add a human turn, generate the reply (streamed if `streamer`), keep it; returns answer and counts.

        `<image>` in `question` is dropped: the chat shows its one image in the first turn itself."""
        question = clean_text(question)
        if not question:
            raise SgeoError("the question is empty once <image> is taken out; ask it in words")
        turns = [*self.turns, question_turn(question, first=not self.turns)]
        tokens = self.processor.tokenize(turns, self.template, add_generation_prompt=True)
        input_ids = self._tensor(tokens["input_ids"])  # [1, N]
        sampling = (
            {"do_sample": True, "temperature": temperature} if temperature > 0 else {"do_sample": False}
        )
        start = time.perf_counter()
        new_tokens = self.model.generate(
            input_ids, image_features=self.image_features,
            max_new_tokens=max_new_tokens, streamer=streamer,
            pad_token_id=self.processor.tokenizer.pad_token_id, **sampling,
        )[0]  # fmt: skip
        seconds = time.perf_counter() - start
        # the answer ends before the model's end-of-turn token (a chat template's, or </s>)
        answer_ids = self.processor.answer_ids(new_tokens.tolist())
        answer = self.processor.decode_answer(answer_ids)
        self.turns = [*turns, {"from": "gpt", "value": answer}]
        return {"answer": answer, "tokens": len(answer_ids), "seconds": seconds}

    def _tensor(self, ids: list[int]):
        import torch

        return torch.tensor([ids], device=self.model.device)
