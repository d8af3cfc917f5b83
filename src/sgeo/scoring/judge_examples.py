"""The worked examples of SpatialRGPT's qualitative judge prompt, one set per category, verbatim.

Source: github.com/AnjieCheng/SpatialRGPT, scripts/srgpt/eval/prompt_templates/<category>.txt, read by
`evaluate_qual_question` in scripts/srgpt/eval/evaluate_spatial_with_gpt4.py, which strips each file and fills
its `{question}`; every `*_choice` category uses `choice`. The files lie beside this module as published
(prompt_templates/, package data) and are read once, stripped as that script strips them.
"""

from pathlib import Path

TEMPLATES = Path(__file__).with_name("prompt_templates")

EXAMPLES: dict[str, str] = {
    path.stem: path.read_text(encoding="utf-8").strip() for path in sorted(TEMPLATES.glob("*.txt"))
}
