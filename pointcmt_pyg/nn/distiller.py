r"""Stage III of PointCMT (`paper <https://arxiv.org/abs/2210.04208>`_): train a
point-cloud student with image knowledge, then use the student alone.

.. code-block:: python

    teacher, cmpg = load_teacher("teacher.pt"), load_cmpg("cmpg.pt")
    model = CrossModalDistiller(MyPygNet(), teacher, cmpg)   # finds the head itself
    loss = model(data).loss                                  # CE + feature + classifier

:class:`CrossModalDistiller` wraps any ``nn.Module`` whose forward takes a PyG
``Data``/``Batch`` (or ``(x, pos, batch)``) and ends in a classifier head. It
captures the head's input (the student's global feature) with hooks that exist
only during a training forward, so the user's class stays untouched and
``model.student`` is the plain model.
"""
from dataclasses import dataclass, field
from typing import Any, Dict, Iterator, List, Optional, Tuple, Union

import torch
from torch import Tensor, nn
from torch.func import functional_call

from .losses import (classifier_enhancement_loss, feature_alignment_loss,
                     feature_enhancement_loss, label_smoothing_cross_entropy)
from .recipes import DEFAULT_RECIPE, Recipe, get_recipe

__all__ = ["CrossModalDistiller", "DistillerOutput", "find_head"]

#: Names (top-level attributes first, then anywhere) taken as the classifier head.
HEAD_NAMES: Tuple[str, ...] = ("mlp", "head", "classifier", "fc", "lin")
TEACHER_SOURCES = ("auto", "cache", "views")


@dataclass
class DistillerOutput:
    r"""What :class:`CrossModalDistiller` returns.

    Attributes:
        logits (Tensor): The student's output ``[B, C]``, exactly as the plain
            student returns it.
        loss (Tensor, optional): ``ce + feature + classifier`` in training mode
            with labels; ``None`` in eval mode or without labels.
        losses (dict): The weighted terms ``{"ce", "feature", "classifier"}``
            (empty when ``loss`` is ``None``).
    """
    logits: Tensor
    loss: Optional[Tensor] = None
    losses: Dict[str, Tensor] = field(default_factory=dict)


def _linear_types() -> Tuple[type, ...]:
    types: List[type] = [nn.Linear]
    try:
        from torch_geometric.nn import Linear as PygLinear
        types.append(PygLinear)
    except ImportError:  # pragma: no cover
        pass
    return tuple(types)


def find_head(student: nn.Module,
              head: Union[str, nn.Module, None] = None) -> Tuple[str, nn.Module]:
    r"""Finds the classifier head of ``student``.

    In order: ``head`` when given (a dotted submodule name or the module
    itself); a top-level submodule named one of :data:`HEAD_NAMES` (``mlp``,
    ``head``, ``classifier``, ``fc``, ``lin``; a PyG ``MLP`` counts); the last
    registered submodule with one of those names at any depth; the last
    registered ``nn.Linear`` (or PyG ``Linear``).

    Returns:
        (str, nn.Module): The dotted name and the module.

    Raises:
        ValueError: When ``head`` names no submodule, or nothing is findable.
    """
    if isinstance(head, str):
        try:
            module = student.get_submodule(head)
        except AttributeError:
            names = [n for n, _ in student.named_modules() if n]
            raise ValueError(
                f"head={head!r} is not a submodule of {type(student).__name__}; "
                f"submodules are: {names}") from None
        if module is student:
            raise ValueError("head must be a proper submodule of the student, not the student")
        return head, module
    if isinstance(head, nn.Module):
        for name, module in student.named_modules():
            if module is head and name:
                return name, module
        raise ValueError(f"head (a {type(head).__name__}) is not a submodule of "
                         f"{type(student).__name__}")
    if head is not None:
        raise TypeError(f"head must be a str (dotted submodule name), an nn.Module "
                        f"or None, got {type(head).__name__}")

    children = dict(student.named_children())
    for name in HEAD_NAMES:
        if isinstance(children.get(name), nn.Module):
            return name, children[name]
    named = [(n, m) for n, m in student.named_modules() if n]
    for name, module in reversed(named):
        if name.rsplit(".", 1)[-1] in HEAD_NAMES:
            return name, module
    linear = _linear_types()
    for name, module in reversed(named):
        if isinstance(module, linear):
            return name, module
    raise ValueError(
        f"could not find a classifier head in {type(student).__name__}: no submodule "
        f"named one of {list(HEAD_NAMES)} and no nn.Linear; pass head='dotted.name' "
        "(the module whose input is the global feature and whose output is the logits)")


def _head_in_features(head: nn.Module) -> Optional[int]:
    r"""The input width of ``head`` when it can be read off the module."""
    try:
        from torch_geometric.nn import MLP as PygMLP
        if isinstance(head, PygMLP):
            return int(head.channel_list[0]) if head.channel_list[0] > 0 else None
    except ImportError:  # pragma: no cover
        pass
    for module in head.modules():
        if isinstance(module, nn.Linear) and not isinstance(module, nn.LazyLinear):
            return module.in_features
        if isinstance(module, _linear_types()) and not isinstance(module, nn.Linear):
            return module.in_channels if module.in_channels > 0 else None
    return None


def _cmpg_in_features(cmpg: nn.Module) -> Optional[int]:
    dim = getattr(cmpg, "in_dim", None)
    if isinstance(dim, int):
        return dim
    for module in cmpg.modules():
        if isinstance(module, nn.Linear) and not isinstance(module, nn.LazyLinear):
            return module.in_features
    return None


def _freeze(module: Any) -> None:
    if isinstance(module, nn.Module):
        module.requires_grad_(False)
        module.eval()


class CrossModalDistiller(nn.Module):
    r"""Wraps a point-cloud classifier for PointCMT cross-modal training.

    In training mode with labels, ``model(data)`` runs the student, captures
    its global feature :math:`f_s` (the input of its classifier head
    :math:`h`), gets the image feature :math:`f_t` (from ``data.img_feat``, or
    from ``data.views`` through the frozen teacher) and returns
    ``loss = ce + feature + classifier`` (see :mod:`pointcmt_pyg.nn.losses`):

    * ``ce``: cross-entropy with the official label smoothing (``0.2``);
    * ``feature``: ``w_fe * sqrt-EMD(CMPG(P_st f_s), CMPG(f_t))`` with the
      frozen CMPG (eval mode) and no gradient through the teacher branch;
    * ``classifier``: ``w_ce * T^2 * KL(softmax(h(P_ts f_t)/T) || softmax(h(f_s)/T))``,
      a per-sample mean. As in the official code the head also gets gradient
      through the teacher branch; ``detach_head_teacher=True`` stops that
      (the projection ``P_ts`` still learns).
    * ``projection`` (only with ``P_ts`` and ``w_proj > 0``): label CE of the
      head, its parameters detached, on ``P_ts f_t``.
    * ``kd`` (only with ``w_kd > 0``): Hinton KD,
      ``w_kd * T^2 * KL(softmax(g(f_t)/T) || softmax(z_s/T))`` with ``g`` the
      teacher's own frozen classifier (``teacher.head``) and ``z_s`` the
      student's logits; not ramped by ``warmup_steps`` (its target is the
      trained teacher's prediction, informative from the first step).
    * ``align`` (only with ``w_align > 0``; not part of PointCMT, a control
      without the CMPG): ``w_align * mean(1 - cos(P_st f_s, f_t))``, the
      student feature pulled straight towards the teacher's
      (:func:`~pointcmt_pyg.nn.losses.feature_alignment_loss`); not ramped
      either. It shares ``P_st`` with the feature term. ``align_center=True``
      removes each side's batch mean first.

    The defaults of every weight come from ``recipe`` (see
    :mod:`pointcmt_pyg.nn.recipes`): ``"official"`` is exactly the official
    loss, ``"kd"`` plain Hinton KD, ``"aligned"`` (default: KD + the centred
    alignment, no CMPG) and ``"balanced"`` (KD + the CMPG feature term) the
    recipes chosen on validation splits (RESULTS.md). Any argument given
    explicitly overrides the recipe's value.

    ``P_st`` / ``P_ts`` are learnable ``nn.Linear`` maps (attributes
    ``student_to_teacher`` / ``teacher_to_student``) created when the term
    using each is on (``P_st`` for the feature and alignment terms, ``P_ts``
    for the classifier enhancement) and the student's feature size differs
    from the teacher's; otherwise ``None`` (identity). The alignment gets
    ``P_st`` also when the sizes match (``align_projection=True``, the
    default): aligning a 1,024-d student feature to a 1,024-d teacher feature
    through the identity gave 2.6 test points less than through a learned
    map (RESULTS.md, session 25, H48). Give them to the optimizer:
    :meth:`trainable_parameters` holds the student's and theirs.

    Feature sizes that differ are not an official set-up (the official
    PointNet++ feeds a 512-d feature to a linear head, the size of ResNet-18's
    image feature), and there the official KL collapses: trained only through
    the KL, ``P_ts f_t`` carries no class information, and the KL is cheapest
    to satisfy by shrinking the shared head's logits until both predictions
    are uniform (measured on ModelNet10 with PyG's PointNet++, whose head takes
    1024 features: logit spread 0.15, prediction entropy 2.29 of at most
    2.30, see RESULTS.md). So when ``P_ts`` exists the defaults are
    ``detach_teacher_logits=True`` and ``w_proj=1``: ``P_ts`` learns to express
    the teacher feature in the head's space from the labels, and the KL pulls
    the student towards that prediction as a fixed target. With equal sizes
    the defaults are exactly the official loss.

    In eval mode, or without labels, the forward is exactly
    ``self.student(...)``: no hooks, no teacher, no CMPG, the same output bit
    for bit, and ``loss`` is ``None``.

    Official loss scale: ``w_fe = 30`` as the official code; the official
    classifier term is ``0.3 * KL`` summed over a batch of 32, i.e. ``9.6``
    times the per-sample mean used here, hence ``w_ce = 9.6`` (independent of
    the batch size from then on).

    Args:
        student (nn.Module): The point model. Its forward takes a PyG
            ``Data``/``Batch``, or ``(x, pos, batch)``, and returns logits
            ``[B, C]`` (log-probabilities are fine too).
        teacher (nn.Module, optional): Frozen image model with
            ``.features(views[B, V, C, H, W]) -> [B, D_t]`` and ``.feat_dim``.
            Needed only to compute features online from ``views``.
        cmpg (nn.Module, optional): Frozen cross-modal point generator
            ``[B, D_t] -> [B, P, 3]``. Without it the feature term is ``0``.
        head (str or nn.Module, optional): The student's classifier head
            (dotted name). Found automatically when ``None``
            (see :func:`find_head`).
        w_fe (float, optional): Feature enhancement weight (official: ``30``).
            (default: the recipe's)
        w_ce (float, optional): Classifier enhancement weight for a
            per-sample mean (official: ``9.6``). (default: the recipe's)
        label_smoothing (float, optional): Official-style smoothing of the CE
            target. (default: the recipe's, ``0.2`` in every recipe)
        temperature (float, optional): Temperature :math:`T` of both KL terms
            (official: ``1``). (default: the recipe's)
        w_proj (float, optional): Weight of an extra term that exists only when ``P_ts``
            does (feature sizes differ, which the official code never has):
            the label cross-entropy of the head, its parameters detached, on
            ``P_ts f_t``. It teaches ``P_ts`` to express the teacher feature in
            the student's head space; with ``0`` ``P_ts`` learns from the KL
            alone. Reported as ``losses["projection"]``. (default: ``1.0``)
        detach_head_teacher (bool): Keep the head's parameters out of the
            teacher branch's graph. (default: ``False``, official)
        detach_teacher_logits (bool, optional): Use ``h(P_ts f_t)`` as a
            constant KL target: neither the head nor ``P_ts`` gets gradient
            from the KL through the teacher branch (so ``P_ts`` then needs
            ``w_proj > 0`` to learn). ``None``: ``True`` when ``P_ts`` exists
            and ``w_proj > 0``, else ``False`` (official). (default: ``None``)
        w_kd (float, optional): Hinton KD weight (teacher's own classifier).
            (default: the recipe's)
        w_align (float, optional): Weight of the direct feature alignment
            ``1 - cos(P_st f_s, f_t)`` (no CMPG; not in the paper).
            (default: the recipe's, ``4`` in ``"aligned"``, else ``0``)
        align_center (bool, optional): Batch-centre both features before the
            alignment's cosine (see
            :func:`~pointcmt_pyg.nn.losses.feature_alignment_loss`).
            (default: the recipe's, ``True`` only in ``"aligned"``)
        align_projection (bool): With ``w_align > 0``, align through a learned
            ``P_st`` even where the student's and teacher's feature sizes
            match; ``False``: the identity there (as before session 25). It
            is then also the map the feature term sees. (default: ``True``)
        recipe (str or Recipe): Where the unset weights come from:
            ``"balanced"``, ``"aligned"``, ``"official"`` or ``"kd"``.
            (default: :data:`~pointcmt_pyg.nn.recipes.DEFAULT_RECIPE`)
        teacher_classifier (nn.Module, optional): The teacher's classifier
            ``[B, D_t] -> [B, C]`` for the KD term; defaults to ``teacher.head``.
            Not needed when every batch brings the teacher's logits
            (``img_logits``: a :class:`~pointcmt_pyg.datasets.FeatureCache`
            built with ``logits=`` attaches them), which then are the KD
            target; this is how a teacher that is not a
            :class:`~pointcmt_pyg.nn.MultiViewTeacher` (another image model,
            one trained elsewhere, a point model on denser clouds) teaches.
        teacher_source (str): ``"cache"`` (require ``img_feat``), ``"views"``
            (run the teacher on ``views``) or ``"auto"`` (``img_feat`` when
            present, else ``views``). (default: ``"auto"``)
        normalize_points (bool): Normalise both generated clouds by their
            bounding box before the EMD, as the official code. (default: ``True``)
        emd_eps (float, optional): Certified relative gap of the feature
            term's EMD assignment (:func:`pointcmt_pyg.ops.emd`); ``None``:
            the op's default (``1e-3``). ``1e-2`` changes the loss by <0.1%
            and is cheaper where the auction needs many rounds.
        warmup_steps (int): Ramp ``w_fe`` and ``w_ce`` linearly from ``0`` over
            this many training forwards (counted in the buffer ``num_steps``,
            so a resumed checkpoint continues the ramp; with gradient
            accumulation each micro-batch counts). ``0``: the full weights
            from the start, as the official code. (default: ``0``)
        student_dim (int, optional): The student's feature size, when it cannot
            be read off the head (e.g. a lazy or custom head).
        teacher_dim (int, optional): The teacher's feature size, when neither
            ``teacher`` nor ``cmpg`` tells it (e.g. cache only, no CMPG).
            Defaults to the student's feature size in that case.
    """

    def __init__(
        self,
        student: nn.Module,
        teacher: Optional[nn.Module] = None,
        cmpg: Optional[nn.Module] = None,
        head: Union[str, nn.Module, None] = None,
        w_fe: Optional[float] = None,
        w_ce: Optional[float] = None,
        w_proj: Optional[float] = None,
        label_smoothing: Optional[float] = None,
        temperature: Optional[float] = None,
        detach_head_teacher: bool = False,
        detach_teacher_logits: Optional[bool] = None,
        w_kd: Optional[float] = None,
        w_align: Optional[float] = None,
        align_center: Optional[bool] = None,
        align_projection: bool = True,
        recipe: Union[str, Recipe] = DEFAULT_RECIPE,
        teacher_classifier: Optional[nn.Module] = None,
        teacher_source: str = "auto",
        normalize_points: bool = True,
        emd_eps: Optional[float] = None,
        warmup_steps: int = 0,
        student_dim: Optional[int] = None,
        teacher_dim: Optional[int] = None,
    ) -> None:
        super().__init__()
        self.recipe = get_recipe(recipe)
        self.recipe_name = recipe if isinstance(recipe, str) else "custom"
        w_fe = self.recipe.w_fe if w_fe is None else w_fe
        w_ce = self.recipe.w_ce if w_ce is None else w_ce
        w_kd = self.recipe.w_kd if w_kd is None else w_kd
        w_align = self.recipe.w_align if w_align is None else w_align
        align_center = self.recipe.align_center if align_center is None else align_center
        w_proj = self.recipe.w_proj if w_proj is None else w_proj
        label_smoothing = (self.recipe.label_smoothing if label_smoothing is None
                           else label_smoothing)
        temperature = self.recipe.temperature if temperature is None else temperature
        if detach_teacher_logits is None:
            detach_teacher_logits = self.recipe.detach_teacher_logits
        if not isinstance(student, nn.Module):
            raise TypeError(f"student must be an nn.Module, got {type(student).__name__}")
        if teacher is not None:
            if not callable(getattr(teacher, "features", None)):
                raise TypeError("teacher must have a .features(views) method "
                                f"(got a {type(teacher).__name__} without one)")
            if not isinstance(getattr(teacher, "feat_dim", None), int):
                raise TypeError("teacher must have an integer .feat_dim "
                                f"(got {getattr(teacher, 'feat_dim', None)!r})")
        if cmpg is not None and not isinstance(cmpg, nn.Module):
            raise TypeError(f"cmpg must be an nn.Module or None, got {type(cmpg).__name__}")
        for name, value in (("w_fe", w_fe), ("w_ce", w_ce), ("w_proj", w_proj), ("w_kd", w_kd),
                            ("w_align", w_align)):
            if not isinstance(value, (int, float)) or value < 0:
                raise ValueError(f"{name} must be a number >= 0, got {value!r}")
        if not isinstance(align_projection, bool):
            raise TypeError(f"align_projection must be a bool, got {type(align_projection).__name__}")
        if not isinstance(label_smoothing, (int, float)) or not 0 <= label_smoothing < 1:
            raise ValueError(f"label_smoothing must be in [0, 1), got {label_smoothing!r}")
        if not isinstance(temperature, (int, float)) or not temperature > 0:
            raise ValueError(f"temperature must be > 0, got {temperature!r}")
        if teacher_source not in TEACHER_SOURCES:
            raise ValueError(f"teacher_source must be one of {TEACHER_SOURCES}, "
                             f"got {teacher_source!r}")
        if teacher_source == "views" and teacher is None:
            raise ValueError("teacher_source='views' needs a teacher to run on the views")

        self.student = student
        self.head_name, head_module = find_head(student, head)
        # Not registered as a submodule (it lives inside the student already).
        object.__setattr__(self, "_head", head_module)

        # Feature sizes.
        d_s = _head_in_features(head_module)
        if student_dim is not None:
            if d_s is not None and d_s != student_dim:
                raise ValueError(f"student_dim={student_dim} but the head "
                                 f"{self.head_name!r} takes {d_s} features")
            d_s = student_dim
        if d_s is None:
            raise ValueError(f"cannot tell the input size of the head {self.head_name!r} "
                             f"({type(head_module).__name__}); pass student_dim=")
        dims = {}
        if teacher is not None:
            dims["teacher.feat_dim"] = int(teacher.feat_dim)
        if cmpg is not None:
            d_c = _cmpg_in_features(cmpg)
            if d_c is None:
                raise ValueError(f"cannot tell the input size of cmpg "
                                 f"({type(cmpg).__name__}): give it an int .in_dim")
            dims["cmpg in_dim"] = d_c
        if teacher_dim is not None:
            dims["teacher_dim"] = int(teacher_dim)
        if len(set(dims.values())) > 1:
            raise ValueError("teacher and CMPG feature sizes do not fit: "
                             + ", ".join(f"{k} = {v}" for k, v in dims.items()))
        d_t = next(iter(dims.values())) if dims else d_s
        self.student_dim, self.teacher_dim = int(d_s), int(d_t)

        self.teacher = teacher
        self.cmpg = cmpg
        _freeze(teacher)
        _freeze(cmpg)
        if teacher_classifier is not None and not isinstance(teacher_classifier, nn.Module):
            raise TypeError("teacher_classifier must be an nn.Module (features -> logits), got "
                            f"{type(teacher_classifier).__name__}")
        if teacher_classifier is not None:
            self.teacher_classifier: Optional[nn.Module] = teacher_classifier
            _freeze(teacher_classifier)
        else:
            # The teacher's own head, when it has one (already a submodule of
            # self.teacher, so not registered twice).
            head_t = getattr(teacher, "head", None)
            object.__setattr__(self, "teacher_classifier",
                               head_t if isinstance(head_t, nn.Module) else None)
        # Without a classifier the KD target must come with each batch
        # (``img_logits``, e.g. a feature cache that holds the teacher's logits);
        # a batch without them is refused in forward.

        # Projections only where the term that uses them is on (an unused
        # parameter would trip DistributedDataParallel): where the sizes differ,
        # and for the alignment also where they match (align_projection).
        differ = self.student_dim != self.teacher_dim
        self.student_to_teacher: Optional[nn.Linear] = (
            nn.Linear(self.student_dim, self.teacher_dim)
            if (differ and cmpg is not None and w_fe > 0)
            or (w_align > 0 and (differ or align_projection)) else None)
        self.teacher_to_student: Optional[nn.Linear] = (
            nn.Linear(self.teacher_dim, self.student_dim) if differ and w_ce > 0 else None)

        if detach_teacher_logits is None:
            detach_teacher_logits = self.teacher_to_student is not None and w_proj > 0
        if self.teacher_to_student is not None and detach_teacher_logits and not w_proj > 0:
            raise ValueError(
                f"detach_teacher_logits=True with feature sizes {self.student_dim} (student) and "
                f"{self.teacher_dim} (teacher) would leave the teacher_to_student projection "
                "untrained (the KL no longer reaches it); set w_proj > 0 (e.g. 1.0)")
        self.w_fe = float(w_fe)
        self.w_ce = float(w_ce)
        self.w_kd = float(w_kd)
        self.w_align = float(w_align)
        if not isinstance(align_center, bool):
            raise TypeError(f"align_center must be a bool, got {align_center!r}")
        self.align_center = align_center
        self.w_proj = float(w_proj)
        self.label_smoothing = float(label_smoothing)
        self.temperature = float(temperature)
        self.detach_head_teacher = bool(detach_head_teacher)
        self.detach_teacher_logits = bool(detach_teacher_logits)
        self.teacher_source = teacher_source
        self.normalize_points = bool(normalize_points)
        if emd_eps is not None and (isinstance(emd_eps, bool) or not isinstance(emd_eps, (int, float))
                                    or not 0 <= emd_eps < 1):
            raise ValueError(f"emd_eps must be None or a float in [0, 1), got {emd_eps!r}")
        self.emd_eps = None if emd_eps is None else float(emd_eps)
        if isinstance(warmup_steps, bool) or not isinstance(warmup_steps, int) or warmup_steps < 0:
            raise ValueError(f"warmup_steps must be an int >= 0, got {warmup_steps!r}")
        self.warmup_steps = warmup_steps
        # Training forwards seen so far; a buffer, so checkpoints resume the ramp.
        self.register_buffer("num_steps", torch.zeros((), dtype=torch.long))

    # ------------------------------------------------------------------ modes
    def train(self, mode: bool = True) -> "CrossModalDistiller":
        r"""Sets train/eval mode; the teacher and the CMPG always stay in eval."""
        super().train(mode)
        for frozen in (self.teacher, self.cmpg, getattr(self, "teacher_classifier", None)):
            if isinstance(frozen, nn.Module):
                frozen.eval()
        return self

    @property
    def head(self) -> nn.Module:
        r"""The student's classifier head (a submodule of :attr:`student`)."""
        return self._head

    def trainable_parameters(self) -> Iterator[nn.Parameter]:
        r"""The parameters the optimizer should see: the student's and the
        projections' (the teacher and the CMPG are frozen)."""
        return (p for p in self.parameters() if p.requires_grad)

    # ---------------------------------------------------------------- forward
    def forward(self, *args: Any, y: Optional[Tensor] = None,
                img_feat: Optional[Tensor] = None, views: Optional[Tensor] = None,
                img_logits: Optional[Tensor] = None, **kwargs: Any) -> DistillerOutput:
        r"""Runs the student and, in training mode with labels, the losses.

        Args:
            *args: What the student's forward takes: a PyG ``Data``/``Batch``
                (whose ``y``, ``img_feat`` and ``views`` are used), or
                ``(x, pos, batch)``.
            y (Tensor, optional): Labels ``[B]``; defaults to ``data.y``.
            img_feat (Tensor, optional): Cached teacher features ``[B, D_t]``;
                defaults to ``data.img_feat``.
            views (Tensor, optional): Rendered views ``[B, V, C, H, W]``;
                defaults to ``data.views``.
            img_logits (Tensor, optional): Cached teacher logits ``[B, C]``,
                the Hinton term's target instead of the teacher's classifier
                on ``img_feat`` (e.g. out-of-fold logits of cross-fitted
                teachers, see :class:`~pointcmt_pyg.datasets.FeatureCache`);
                defaults to ``data.img_logits``.
            **kwargs: Passed on to the student.

        Returns:
            DistillerOutput: ``logits``, ``loss`` and ``losses``.
        """
        data = args[0] if args else None
        if data is not None and _is_pyg_data(data):
            y = y if y is not None else getattr(data, "y", None)
            img_feat = img_feat if img_feat is not None else getattr(data, "img_feat", None)
            views = views if views is not None else getattr(data, "views", None)
            img_logits = img_logits if img_logits is not None else getattr(data, "img_logits",
                                                                          None)

        if not self.training or y is None:
            return DistillerOutput(logits=self.student(*args, **kwargs))

        ramp = self.warmup_factor()
        logits, f_s, head_logits = self._student_forward(args, kwargs)
        target = self._check_labels(y, logits)
        f_t = self._teacher_features(img_feat, views, f_s)

        ce = label_smoothing_cross_entropy(logits, target, self.label_smoothing)

        feature_on = self.cmpg is not None and self.w_fe > 0
        f_s_t = None
        if feature_on or self.w_align > 0:        # both terms see P_st f_s
            f_s_t = f_s if self.student_to_teacher is None else self.student_to_teacher(f_s)
        if feature_on:
            feature = feature_enhancement_loss(f_s_t, f_t, self.cmpg, weight=self.w_fe * ramp,
                                               normalize_points=self.normalize_points,
                                               emd_eps=self.emd_eps)
        else:
            feature = logits.new_zeros(())

        if self.w_ce > 0:
            f_t_s = f_t if self.teacher_to_student is None else self.teacher_to_student(f_t)
            teacher_logits = self._head_on(f_t_s)
            if teacher_logits.shape != head_logits.shape:
                raise ValueError(
                    f"the head {self.head_name!r} gives {tuple(teacher_logits.shape)} on the "
                    f"teacher feature but {tuple(head_logits.shape)} on the student's")
            if self.detach_teacher_logits:
                teacher_logits = teacher_logits.detach()
            classifier = classifier_enhancement_loss(head_logits, teacher_logits,
                                                     weight=self.w_ce * ramp,
                                                     temperature=self.temperature)
        else:
            classifier = logits.new_zeros(())

        losses = {"ce": ce, "feature": feature, "classifier": classifier}
        if self.w_kd > 0:
            # Hinton KD from the teacher's own image classifier (a fixed
            # target), or from the cached (e.g. out-of-fold) teacher logits.
            if img_logits is not None:
                kd_target, source = img_logits.to(logits.device), "img_logits has shape"
            elif self.teacher_classifier is None:
                raise ValueError(
                    f"w_kd={self.w_kd:g} (Hinton KD) needs the teacher's logits: the batch has no "
                    "img_logits (a feature cache with logits attaches them) and the distiller has "
                    "no teacher classifier (pass teacher= (a MultiViewTeacher, whose .head is "
                    "used) or teacher_classifier=), or set w_kd=0")
            else:
                with torch.no_grad():
                    kd_target = self.teacher_classifier(f_t)
                source = "the teacher's classifier gives, on the teacher feature,"
            if kd_target.shape != logits.shape:
                raise ValueError(f"{source} {tuple(kd_target.shape)} but the student returns "
                                 f"{tuple(logits.shape)} logits (one row of teacher logits per "
                                 "cloud)")
            losses["kd"] = classifier_enhancement_loss(logits, kd_target.detach(),
                                                       weight=self.w_kd,
                                                       temperature=self.temperature)
        if self.teacher_to_student is not None and self.w_ce > 0 and self.w_proj > 0:
            # Teach P_ts to express the teacher feature in the student's head
            # space: the label CE of the frozen head on P_ts f_t.
            anchor_logits = self._head_on(f_t_s, detach=True)
            losses["projection"] = self.w_proj * label_smoothing_cross_entropy(
                anchor_logits, target, self.label_smoothing)
        if self.w_align > 0:
            losses["align"] = feature_alignment_loss(f_s_t, f_t, weight=self.w_align,
                                                     center=self.align_center)
        self.num_steps += 1                     # only forwards that produced a loss count
        return DistillerOutput(logits=logits, loss=sum(losses.values()), losses=losses)

    def compile_targets(self) -> List[nn.Module]:
        r"""The student's top-level submodules that do not hold its head: what
        :class:`~pointcmt_pyg.train.Trainer` compiles in place for
        ``compile=...``. The head stays eager, because the distiller reads the
        student feature with forward hooks that it registers on the head around
        each student forward, and a compiled region runs no hooks registered
        inside it. For PyG's PointNet++ that is the set abstractions, where the
        time goes."""
        return [module for name, module in self.student.named_children()
                if self.head_name != name and not self.head_name.startswith(name + ".")]

    def warmup_factor(self) -> float:
        r"""The factor on ``w_fe`` and ``w_ce`` for the next training forward:
        ``min(1, num_steps / warmup_steps)`` (``1`` without warm-up)."""
        if self.warmup_steps <= 0:
            return 1.0
        return min(1.0, int(self.num_steps) / self.warmup_steps)

    # ---------------------------------------------------------------- helpers
    def _student_forward(self, args: tuple, kwargs: dict) -> Tuple[Tensor, Tensor, Tensor]:
        calls: List[Tuple[Tensor, Tensor]] = []
        pending: List[Tensor] = []

        def pre_hook(module, h_args, h_kwargs):
            if h_args:
                x = h_args[0]
            elif h_kwargs:
                x = next(iter(h_kwargs.values()))
            else:
                x = None
            pending.append(x)

        def post_hook(module, h_args, h_kwargs, output):
            calls.append((pending.pop(), output))

        handles = [
            self._head.register_forward_pre_hook(pre_hook, with_kwargs=True),
            self._head.register_forward_hook(post_hook, with_kwargs=True),
        ]
        try:
            logits = self.student(*args, **kwargs)
        finally:
            for handle in handles:
                handle.remove()

        if not isinstance(logits, Tensor) or logits.dim() != 2:
            raise TypeError(
                f"the student must return logits as a [B, C] tensor, got "
                f"{tuple(logits.shape) if isinstance(logits, Tensor) else type(logits).__name__}")
        if len(calls) != 1:
            raise ValueError(
                f"the head {self.head_name!r} ran {len(calls)} times in the student's forward "
                "(expected once); pass head='dotted.name' naming the classifier head")
        f_s, head_logits = calls[0]
        if not isinstance(f_s, Tensor) or f_s.dim() != 2:
            raise ValueError(
                f"the input of the head {self.head_name!r} must be a [B, D] global feature, "
                f"got {tuple(f_s.shape) if isinstance(f_s, Tensor) else type(f_s).__name__}; "
                "pass head='dotted.name' naming the classifier head")
        if f_s.size(1) != self.student_dim:
            raise ValueError(f"the head {self.head_name!r} received {f_s.size(1)} features, "
                             f"expected student_dim = {self.student_dim}")
        if not isinstance(head_logits, Tensor) or head_logits.shape != logits.shape:
            raise ValueError(
                f"the output of the head {self.head_name!r} "
                f"({tuple(head_logits.shape) if isinstance(head_logits, Tensor) else type(head_logits).__name__})"
                f" does not match the student's logits {tuple(logits.shape)}; "
                "pass head='dotted.name' naming the classifier head")
        return logits, f_s, head_logits

    def _check_labels(self, y: Tensor, logits: Tensor) -> Tensor:
        if not isinstance(y, Tensor):
            raise TypeError(f"labels y must be a tensor, got {type(y).__name__}")
        if y.is_floating_point() or y.is_complex() or y.dtype == torch.bool:
            raise TypeError(f"labels y must be an integer tensor, got {y.dtype}")
        target = y.reshape(-1).to(device=logits.device, dtype=torch.long)
        num, num_classes = logits.shape
        if target.numel() != num:
            raise ValueError(f"labels y have {target.numel()} entries but the student "
                             f"returned {num} rows of logits")
        if num > 0:
            lo, hi = int(target.min()), int(target.max())
            if lo < 0 or hi >= num_classes:
                raise ValueError(f"labels y out of range: found {lo if lo < 0 else hi}, "
                                 f"the student has {num_classes} classes (0..{num_classes - 1})")
        return target

    def _teacher_features(self, img_feat: Optional[Tensor], views: Optional[Tensor],
                          f_s: Tensor) -> Tensor:
        num = f_s.size(0)
        use_cache = self.teacher_source == "cache" or (
            self.teacher_source == "auto" and img_feat is not None)
        if use_cache:
            if img_feat is None:
                raise ValueError(
                    "teacher_source='cache' but the batch has no img_feat; attach teacher "
                    "features with pointcmt_pyg.datasets.features.AttachImageFeatures(cache)")
            if not isinstance(img_feat, Tensor) or img_feat.shape != (num, self.teacher_dim):
                shape = tuple(img_feat.shape) if isinstance(img_feat, Tensor) else type(img_feat)
                raise ValueError(
                    f"img_feat must be [B, D_t] = [{num}, {self.teacher_dim}], got {shape} "
                    "(each sample holds img_feat as [1, D_t]; AttachImageFeatures does this)")
            return img_feat.detach().to(device=f_s.device, dtype=f_s.dtype)

        if views is None:
            raise ValueError("no teacher features: the batch has neither img_feat (cached "
                             "teacher features) nor views (images for the teacher)")
        if self.teacher is None:
            raise ValueError("the batch has views but no img_feat, and the distiller has no "
                             "teacher to compute features from them")
        if not isinstance(views, Tensor) or views.dim() != 5 or views.size(0) != num:
            shape = tuple(views.shape) if isinstance(views, Tensor) else type(views).__name__
            raise ValueError(f"views must be [B, V, C, H, W] with B = {num}, got {shape}")
        channels = getattr(self.teacher, "in_channels", None)
        if isinstance(channels, int) and views.size(2) != channels:
            raise ValueError(f"views have {views.size(2)} channels, the teacher takes {channels}")
        with torch.no_grad():
            f_t = self.teacher.features(views)
        if not isinstance(f_t, Tensor) or f_t.shape != (num, self.teacher_dim):
            shape = tuple(f_t.shape) if isinstance(f_t, Tensor) else type(f_t).__name__
            raise ValueError(f"teacher.features returned {shape}, expected "
                             f"[{num}, {self.teacher_dim}]")
        return f_t.detach().to(dtype=f_s.dtype)

    def _head_on(self, feature: Tensor, detach: bool = False) -> Tensor:
        if not (detach or self.detach_head_teacher):
            return self._head(feature)
        params = {n: p.detach() for n, p in self._head.named_parameters()}
        return functional_call(self._head, params, (feature,))

    def extra_repr(self) -> str:
        return (f"recipe={self.recipe_name!r}, "
                f"head={self.head_name!r}, student_dim={self.student_dim}, "
                f"teacher_dim={self.teacher_dim}, w_fe={self.w_fe}, w_ce={self.w_ce}, "
                f"w_kd={self.w_kd}, "
                f"w_proj={self.w_proj}, "
                f"label_smoothing={self.label_smoothing}, temperature={self.temperature}, "
                f"detach_head_teacher={self.detach_head_teacher}, "
                f"detach_teacher_logits={self.detach_teacher_logits}, "
                f"teacher_source={self.teacher_source!r}")


def _is_pyg_data(obj: Any) -> bool:
    try:
        from torch_geometric.data.data import BaseData
    except ImportError:  # pragma: no cover
        return False
    return isinstance(obj, BaseData)
