"""The answer options `sgeo ask` and `sgeo serve` share, declared once: their defaults, and the checks of
them that `sgeo eval` (whose decoding is the benchmark protocol's) applies too.

Light on purpose: the job configs import it, and `sgeo --help` imports those."""

from __future__ import annotations

from ..errors import SgeoError

# the default decoding of `sgeo ask` and `sgeo serve` (a request may ask for other values)
TEMPERATURE = 0.2
MAX_NEW_TOKENS = 256
MAX_TEMPERATURE = 2.0  # as OpenAI's API: past it, sampling is noise


def check_temperature(temperature: float) -> float:
    """`temperature` if it is from 0 (greedy) to 2; NaN and infinities fail the comparison and are refused too
    (NaN would otherwise read as "not above 0" and answer greedily)."""
    if not 0 <= temperature <= MAX_TEMPERATURE:
        raise SgeoError(f"--temperature must be from 0 (greedy) to {MAX_TEMPERATURE:g}, got {temperature}")
    return temperature


def check_max_new_tokens(max_new_tokens: int) -> int:
    """`max_new_tokens` if it is at least 1."""
    if max_new_tokens < 1:
        raise SgeoError(f"--max-new-tokens must be at least 1, got {max_new_tokens}")
    return max_new_tokens


def context_length(model, processor) -> tuple[int, str]:
    """(tokens, what bounds them): the most tokens the model reads, prompt and answer together: the
    processor's `model_max_length`, or the LLM's `max_position_embeddings` where that is smaller."""
    limit, name = int(processor.model_max_length), "model_max_length"
    positions = getattr(getattr(model.config, "text_config", None), "max_position_embeddings", None)
    if isinstance(positions, int) and 0 < positions < limit:
        limit, name = positions, "max_position_embeddings"
    return limit, name


def check_fits_context(max_new_tokens: int, model, processor) -> None:
    """Refuse an answer length the model could never produce: more new tokens than its whole context."""
    limit, name = context_length(model, processor)
    if max_new_tokens > limit:
        raise SgeoError(
            f"--max-new-tokens {max_new_tokens} is more than the model's context of {limit} tokens ({name}); "
            f"pass at most {limit}"
        )
