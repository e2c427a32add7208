"""Hook implementations of rscore-underwater (entry point ``rscore: underwater``).

- ``rscore_preprocess``: colour-cast correction (:mod:`rscore_underwater.correction`), ``auto`` or forced with
  ``-O underwater_correction=auto|none|greyworld|redcomp|clahe``. The corrected scene keeps the original's size, so
  masks lie on the original pixels; the original stays reachable as ``scene.metadata["original_source"]``. What was
  done is appended to ``scene.metadata["preprocess"]`` (plan steps); the measurements and the scene's backlight
  colour go to ``scene.metadata["underwater"]``.
- analytic templates (:mod:`rscore_underwater.water`): low visibility, open water, sea floor and structures;
- VLM prompt expansions for marine animals, coral, divers, man-made objects and debris.
"""

from __future__ import annotations

import logging

from rscore import hookimpl
from rscore.sdk import AdapterSpec, Operator, Template, Param
from rscore.types import Request, Scene

from rscore_underwater import water

log = logging.getLogger(__name__)


def _vlm(name: str, label: str, description: str, examples: tuple[str, ...], prompt: str,
         keywords: tuple[str, ...]) -> Template:
    return Template(name, label, description, examples, prompt=prompt, keywords=keywords, kinds=water.KINDS)


VLM_TEMPLATES = (
    _vlm("marine_animals", "marine animal", "fish, turtles, rays and other marine animals",
         ("fish", "the turtle", "marine animals", "rays", "sharks"),
         "Find every marine animal (fish, turtles, rays, sharks, cephalopods). Box each one.",
         ("fish", "turtle", "turtles", "ray", "rays", "animal", "animals", "shark", "sharks")),
    _vlm("coral_reef", "coral / reef", "coral colonies and reef structure", ("coral", "the reef", "coral reef"),
         "Segment coral colonies and reef structure; exclude sand, rocks without coral and open water.",
         ("coral", "corals", "reef")),
    _vlm("divers", "diver", "scuba divers and snorkellers", ("divers", "the scuba diver", "snorkeller"),
         "Find every diver (body and equipment). Box each one.", ("diver", "divers", "scuba", "snorkeller")),
    _vlm("man_made", "man-made object", "ROVs, wrecks, ropes, nets and other man-made objects",
         ("the ROV", "shipwreck", "man-made objects", "fishing nets"),
         "Find man-made objects: ROVs, wrecks, ropes, nets, anchors, pipes. Box each one.",
         ("rov", "wreck", "shipwreck", "man-made", "net", "nets", "rope", "pipe")),
    _vlm("debris", "marine debris", "litter and debris on the sea floor or in the water",
         ("marine debris", "plastic litter", "trash on the seabed"),
         "Find litter and debris (plastic, bottles, cans, bags) in the water or on the sea floor.",
         ("debris", "litter", "trash", "plastic", "garbage")),
)


@hookimpl
def rscore_operators() -> list[Operator]:
    return list(water.OPERATORS)


# classes of underwater detectors (Brackish, TrashCan/Trash-ICRA19 and diver models) and phrases for open-vocabulary
# ones: with -O detector_model=PATH these templates answer offline from the detector's boxes (rscore.detectors)
DETECTOR_CLASSES = {
    "marine_animals": (("fish", "small fish", "turtle", "ray", "shark", "jellyfish", "starfish", "crab", "shrimp",
                        "animal", "animal fish", "animal crab", "animal eel", "animal etc", "animal starfish"),
                       ("fish", "turtle", "ray", "shark")),
    "divers": (("diver", "scuba diver", "person", "human"), ("scuba diver",)),
    "man_made": (("rov", "net", "fishing net", "rope", "wreck", "shipwreck", "pipe", "anchor", "man made object"),
                 ("rov", "fishing net", "rope", "shipwreck")),
    "debris": (("debris", "trash", "plastic", "litter", "rubbish", "bottle", "can", "bag", "trash plastic",
                "trash metal", "trash wood", "trash fabric", "trash rubber", "trash paper", "trash fishing gear",
                "trash etc"), ("plastic debris", "litter")),
}


@hookimpl
def rscore_options() -> list[Param]:
    """The colour-correction option of the preprocess hook."""
    from rscore_underwater.correction import MODES

    return [Param("underwater_correction", "enum", "colour-cast correction", default="auto", choices=MODES)]


@hookimpl
def rscore_query_templates() -> list[Template]:
    from rscore.detectors.programs import answer_with_detector

    detected = [answer_with_detector(t, *DETECTOR_CLASSES[t.name]) if t.name in DETECTOR_CLASSES else t
                for t in VLM_TEMPLATES]  # fmt: skip
    return [*water.TEMPLATES, *detected]


@hookimpl
def rscore_preprocess(scene: Scene, request: Request) -> Scene | None:
    """Colour-correct RGB scenes and record what was done; other scenes pass through with a note."""
    from rscore_underwater.correction import RGB, correct_scene

    previous = list(scene.metadata.get("preprocess", ()))
    if not scene.has(*RGB):
        note = f"underwater: no colour correction (needs red, green, blue; this input has " \
               f"{', '.join(scene.band_roles) or 'none'})"
        return scene.replace(metadata={**scene.metadata, "preprocess": [*previous, note]})
    mode = str(request.option("underwater_correction", "auto") or "auto").strip().lower()
    done = correct_scene(scene, mode)
    out = done.scene
    stats = {
        "mode": mode,
        "methods": list(done.methods),
        "before": done.before.__dict__,
        "after": None if done.after is None else done.after.__dict__,
        **done.extra,
    }
    backlight = water.grid_backlight(*done.grid) if done.grid is not None else water.scene_backlight(out)
    stats["backlight_rgb"] = [float(v) for v in backlight]
    meta = {**scene.metadata, "preprocess": [*previous, *done.steps], "underwater": stats}
    if out.source is not scene.source:
        meta["original_source"] = scene.source
        meta["original_rgb_bands"] = [scene.band_index(r) for r in RGB]
    log.info("%s", "; ".join(done.steps))
    return out.replace(metadata=meta)


@hookimpl
def rscore_adapters() -> list[AdapterSpec]:
    return [
        AdapterSpec(
            "underwater-lora",
            "LoRA on the VLM reasoner for underwater imagery (RefUDS / USIS10K-style data)",
            augmentations=("hflip", "underwater_colour_jitter", "haze", "gaussian_blur"),
            options={"colour_jitter": {"red_attenuation": [0.3, 1.0], "blue_green_cast": [0.0, 0.3]}},
        )
    ]
