"""What ``--ild-preset`` and the ILD options of ``cr_ild`` resolve to.

A preset fills in every option left at "preset" / empty: which objects are distilled, the
layer-map spec, mixup, the consistency term's weight and objects, how padding counts and
when fit_dense projects. :func:`resolve_options` does that once, checks the combination and
returns an :class:`IldOptions` the criterion and its other units read; nothing here needs the
models (the layer map itself is resolved in :mod:`~fairseq_crild.criterions.ild_layers`).
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from typing import Dict, List, Protocol

logger = logging.getLogger(__name__)

OBJECTS = ("hidden", "attention", "qkv", "cls")
#: objects a consistency term can compare (PKD's [CLS] vectors are not among them)
CONSISTENCY_OBJECTS = ("hidden", "attention", "qkv")


@dataclass(frozen=True)
class Preset:
    """What ``--ild-preset`` fills in for every option left at "preset" / empty."""

    objects: str
    layer_map: str
    mixup: bool = False
    consistency_weight: float = 0.0
    #: "all": every ILD object (the paper's CR-ILD); "attention,hidden": only those among
    #: the ILD objects, as the authors' code applies its consistency flags
    consistency_objects: str = "attention,hidden"
    padding: str = "exclude"
    hidden_projection: str = "when-widths-differ"


PRESETS: Dict[str, Preset] = {
    # the paper's method: last-layer Q/K/V relations on mixup inputs + consistency on them
    "cr_ild": Preset("qkv", "last", mixup=True, consistency_weight=0.1,
                     consistency_objects="all"),
    # the authors' released script: same objects and mixup; their consistency flags act on
    # attention/hidden objects only (inert on Q/K/V); relations over the padded 128 x 128 grid
    "cr_ild_release": Preset("qkv", "last", mixup=True, padding="include"),
    "l_ild": Preset("qkv", "last"),
    "minilm": Preset("qkv", "last"),
    "tinybert": Preset("attention,hidden", "uniform", hidden_projection="always"),
    "pkd": Preset("cls", "uniform", hidden_projection="always"),
    "emd": Preset("attention,hidden", "emd", hidden_projection="always"),
    "custom": Preset("hidden", "last"),
}


class PresetOptions(Protocol):
    """The ``CrIldConfig`` fields a preset fills in (typed here so this module does not
    import the criterion)."""

    ild_preset: str
    ild_objects: str
    ild_layer_map: str
    mixup: str
    consistency_weight: float
    consistency_objects: str
    consistency_on_relations: bool
    ild_padding: str
    relation_padding: str
    hidden_projection: str


@dataclass(frozen=True)
class IldOptions:
    """The ILD options after the preset filled in the unset ones."""

    preset: str
    objects: List[str]  # the distilled objects, in the order given
    layer_map_spec: str  # last | uniform | emd | explicit "s:t,..."
    use_mixup: bool
    consistency_weight: float  # before the ramp-up; 0: no consistency term
    consistency_objects: List[str]  # empty: the consistency term is inert
    pad_mode: str  # exclude | include: padding in hidden MSE, attention CE (and relations)
    relation_pad_mode: str  # exclude | include: padding in the Q/K/V relation loss
    projection_mode: str  # always | when-widths-differ (fit_dense)

    @property
    def consistency_acts(self) -> bool:
        """A consistency term is configured to act on at least one object."""
        return self.consistency_weight > 0 and bool(self.consistency_objects) and self.use_mixup

    @property
    def counts_padding(self) -> bool:
        """Padded positions count in some loss: only the authors' fixed-length batches make
        that their loss, so the task must pad every batch."""
        return "include" in (self.pad_mode, self.relation_pad_mode)


def comma_list(text: str) -> List[str]:
    """The non-empty, stripped items of a comma list option."""
    return [o.strip() for o in text.split(",") if o.strip()]


def resolve_options(cfg: PresetOptions) -> IldOptions:
    """Fills the unset options from the preset and refuses combinations that cannot work
    (unknown objects, consistency without mixup, consistency on objects not distilled); warns
    when a consistency weight acts on nothing, since its loss is then that of weight 0."""
    preset = PRESETS[str(cfg.ild_preset)]
    objects = comma_list(cfg.ild_objects or preset.objects)
    bad = [o for o in objects if o not in OBJECTS]
    if bad or not objects:
        raise ValueError(f"--ild-objects {cfg.ild_objects!r}: unknown {bad}; choose from "
                         f"{', '.join(OBJECTS)}")
    use_mixup = {"on": True, "off": False}.get(str(cfg.mixup), preset.mixup)
    consistency_weight = (preset.consistency_weight if cfg.consistency_weight < 0
                          else cfg.consistency_weight)
    if consistency_weight > 0 and not use_mixup:
        raise ValueError("--consistency-weight > 0 needs mixup (--mixup on)")
    consistency_objects = resolve_consistency_objects(
        cfg.consistency_objects, cfg.consistency_on_relations, objects, preset)
    if consistency_weight > 0 and not consistency_objects:
        logger.warning(f"--consistency-weight {consistency_weight} acts on no object "
                       f"(ILD objects {objects}, consistency objects of preset "
                       f"{cfg.ild_preset}: {preset.consistency_objects}): the loss is that "
                       "of weight 0; name the objects with --consistency-objects")
    pad_mode = preset.padding if cfg.ild_padding == "preset" else str(cfg.ild_padding)
    relation_pad_mode = (pad_mode if cfg.relation_padding == "ild"
                         else str(cfg.relation_padding))
    projection_mode = (preset.hidden_projection if cfg.hidden_projection == "preset"
                       else str(cfg.hidden_projection))
    return IldOptions(
        preset=str(cfg.ild_preset), objects=objects,
        layer_map_spec=cfg.ild_layer_map or preset.layer_map, use_mixup=use_mixup,
        consistency_weight=consistency_weight, consistency_objects=consistency_objects,
        pad_mode=pad_mode, relation_pad_mode=relation_pad_mode,
        projection_mode=projection_mode)


def resolve_consistency_objects(chosen_text: str, on_relations: bool, objects: List[str],
                                preset: Preset) -> List[str]:
    """The objects the consistency term compares (empty: it is inert): ``chosen_text``
    (--consistency-objects) if given, else the preset's; ``on_relations`` adds qkv."""
    if chosen_text:
        chosen = comma_list(chosen_text)
        bad = [o for o in chosen if o not in CONSISTENCY_OBJECTS or o not in objects]
        if bad:
            raise ValueError(f"--consistency-objects {chosen_text!r}: "
                             f"{bad} not among the ILD objects {objects} that a "
                             f"consistency term can compare ({', '.join(CONSISTENCY_OBJECTS)})")
    elif preset.consistency_objects == "all":
        chosen = [o for o in objects if o in CONSISTENCY_OBJECTS]
    else:
        chosen = [o for o in objects if o in comma_list(preset.consistency_objects)]
    if on_relations and "qkv" in objects and "qkv" not in chosen:
        chosen.append("qkv")
    return chosen
