r"""Named loss recipes for :class:`~pointcmt_pyg.nn.CrossModalDistiller`.

A recipe is the set of stage-III loss settings; every field can still be
overridden one by one (``CrossModalDistiller(..., recipe="official", w_fe=3)``).

* ``"official"``: exactly the loss of the official PointCMT code
  (`ZhanHeshen/PointCMT <https://github.com/ZhanHeshen/PointCMT>`_,
  ``train_pointcmt.py``): label-smoothed CE (0.2), feature enhancement with
  weight 30, classifier enhancement ``0.3 * KL`` summed over a batch of 32
  (``w_ce = 9.6`` per sample), temperature 1, no warm-up, no Hinton term. The
  official weights were set for 1,000 epochs at a nearly constant learning
  rate; at short budgets they cost accuracy (RESULTS.md).
* ``"kd"``: plain Hinton knowledge distillation (`Hinton et al., 2015
  <https://arxiv.org/abs/1503.02531>`_) from the teacher's own image classifier,
  ``T = 4``, weight 1; no PointCMT term. The paper compares against it; it is
  here as the control arm.
* ``"balanced"``: the default until session 23, chosen then on the ModelNet10
  validation carve (RESULTS.md, "Recipes"): knowledge distillation from the teacher's own
  classifier at ``T = 1`` (weight 1), plus the PointCMT feature enhancement at
  a tenth of the official weight (``w_fe = 3``, about as large as the CE at
  initialisation instead of twice it), ramped in linearly over the first
  quarter of training. ``T = 1`` rather than Hinton's 4: the teacher is
  trained with label smoothing, so at ``T = 4`` its prediction on a training
  shape is nearly uniform (entropy 2.20 of at most 2.30 nats on ModelNet10)
  and the KD term acts as extra label smoothing. The head-on-teacher-feature
  KL (``w_ce``) is off: in every measurement so far it cost accuracy at our
  budgets (RESULTS.md, stage-III ablation).
* ``"aligned"`` (the default): knowledge distillation from the teacher's
  classifier at ``T = 1`` (as ``"balanced"``) plus a direct, batch-centred
  feature alignment (``w_align = 4``, ``align_center=True``): the student's
  feature, projected
  to the teacher's width, is pulled towards the teacher's image feature by
  ``1 - cos`` after each side's batch mean is removed (a FitNets-style hint,
  `Romero et al., 2015 <https://arxiv.org/abs/1412.6550>`_). It is **not** the
  paper's feature enhancement: no CMPG and no EMD, so stage II is skipped and
  the step costs what the plain step costs. Centring matters: the teacher's
  features share a common direction (two random shapes' features have
  ``1 - cos`` 0.12, 0.96 once centred), which the uncentred cosine mostly
  rewards. Its weight (4 of 1, 2, 4) and its KD term (kept, a tie) were
  chosen on the ModelNet10 validation carve with PointNet++ at 64 points
  (RESULTS.md, session 23), where it beats ``"balanced"`` there by 3.4 points
  and the plain student on the test split by 4.6 (eight seeds).
"""
from dataclasses import asdict, dataclass
from typing import Any, Dict, Optional

__all__ = ["Recipe", "RECIPES", "DEFAULT_RECIPE", "get_recipe"]


@dataclass(frozen=True)
class Recipe:
    r"""Stage-III loss settings (see :class:`~pointcmt_pyg.nn.CrossModalDistiller`
    for each field's meaning).

    Attributes:
        w_fe (float): Feature-enhancement weight (EMD of CMPG outputs).
        w_ce (float): Classifier-enhancement weight (KL from the student head
            on the teacher feature to the head on the student feature), per
            sample.
        w_kd (float): Hinton KD weight: KL from the teacher's own classifier
            to the student's prediction, per sample, times ``T^2``.
        temperature (float): ``T`` of both KL terms.
        label_smoothing (float): Official-style smoothing of the label CE.
        w_proj (float): Label CE that trains the teacher-to-student projection
            (only when feature sizes differ and ``w_ce > 0``).
        detach_teacher_logits (bool, optional): Constant target for the
            classifier-enhancement KL; ``None``: automatic (see the distiller).
        w_align (float): Direct feature alignment ``1 - cos`` between the
            (projected) student feature and the teacher's, no CMPG; not in the
            paper (RESULTS.md, sessions 22-23, has its measurements).
        align_center (bool): Remove each side's batch mean before the
            alignment's cosine.
        warmup_fraction (float): Share of the training schedule over which
            ``w_fe`` and ``w_ce`` ramp from 0 (the pipeline turns it into
            steps).
    """
    w_fe: float = 30.0
    w_ce: float = 9.6
    w_kd: float = 0.0
    temperature: float = 1.0
    label_smoothing: float = 0.2
    w_proj: float = 1.0
    detach_teacher_logits: Optional[bool] = None
    warmup_fraction: float = 0.0
    w_align: float = 0.0
    align_center: bool = False

    def to_dict(self) -> Dict[str, Any]:
        return asdict(self)


RECIPES: Dict[str, Recipe] = {
    # w_proj / detach_teacher_logits act only when the student's feature size
    # differs from the teacher's, a set-up the official code never has (there
    # the official KL collapses the head; see CrossModalDistiller).
    "official": Recipe(w_fe=30.0, w_ce=9.6, w_kd=0.0, temperature=1.0, label_smoothing=0.2,
                       w_proj=1.0, detach_teacher_logits=None, warmup_fraction=0.0),
    "kd": Recipe(w_fe=0.0, w_ce=0.0, w_kd=1.0, temperature=4.0, label_smoothing=0.2,
                 w_proj=0.0, detach_teacher_logits=None, warmup_fraction=0.0),
    "balanced": Recipe(w_fe=3.0, w_ce=0.0, w_kd=1.0, temperature=1.0, label_smoothing=0.2,
                       w_proj=0.0, detach_teacher_logits=None, warmup_fraction=0.25),
    "aligned": Recipe(w_fe=0.0, w_ce=0.0, w_kd=1.0, temperature=1.0, label_smoothing=0.2,
                      w_proj=0.0, detach_teacher_logits=None, warmup_fraction=0.0,
                      w_align=4.0, align_center=True),
}

#: The recipe used when none is named.
DEFAULT_RECIPE = "aligned"


def get_recipe(recipe: Any) -> Recipe:
    r"""A :class:`Recipe` from its name (or the recipe itself).

    Raises:
        ValueError: For an unknown name.
    """
    if isinstance(recipe, Recipe):
        return recipe
    if not isinstance(recipe, str) or recipe not in RECIPES:
        raise ValueError(f"recipe must be one of {sorted(RECIPES)} (or a Recipe), got {recipe!r}")
    return RECIPES[recipe]
