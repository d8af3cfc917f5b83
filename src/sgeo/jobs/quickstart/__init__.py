"""`sgeo quickstart`: the main job end to end on the demo preset, in about twelve minutes on 2 CPU cores.

    synthetic data -> extract (Ray) -> stage 1 -> stage 2 (DeepSpeed) -> eval of it, and of the untrained
    model, on held-out images -> ask (a held-out question it answered right)

The default asks what ten CPU minutes teach a random-init model: left/right, as yes/no predicates ("Is the
A to the left of the B?") and choices ("Which is more to the right, the A or the B?"). `--full` asks every
category (the longer run); `--branches` also trains stage 2 with CLIP tokens only and with MoGe tokens only
(what each encoder adds; it triples stage 2).

Every step calls the library function its command calls and skips when its output is already complete, so
rerunning the command after a kill continues where it stopped. It ends with every score side by side, the
best constant answer (fitted on questions about the training images, scored on the held-out ones), the
verdict line trained minus constant, and with --branches what each branch adds.

recipe.py: the sizes and schedule (`QuickstartRecipe`); steps.py: each step and what says it is done; job.py:
`run_quickstart`, which runs them in order and prints the results.
"""

from .job import run_quickstart
from .recipe import FULL_QUICKSTART, QUICKSTART, QuickstartRecipe

__all__ = ["FULL_QUICKSTART", "QUICKSTART", "QuickstartRecipe", "run_quickstart"]
