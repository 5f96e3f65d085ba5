"""ContrastHealthMonitor: is the contrastive term learning, is it structurally zero, does it fight cross-entropy?"""

from __future__ import annotations

import time
from collections import defaultdict
from typing import Any

import torch
from lightning import Callback, LightningModule, Trainer
from lightning.pytorch.utilities import rank_zero_warn
from torch import Tensor

from contrastseg._compat import logged_step, logs_this_step
from contrastseg.losses.contrastive import MultiScaleContrast
from contrastseg.losses.health import (
    alignment_uniformity,
    anchor_statistics,
    classes_with_positives,
    shared_classes,
)
from contrastseg.losses.memory import ClassMemory
from contrastseg.losses.pixel_contrast import PixelContrast
from contrastseg.losses.region_contrast import RegionContrast

__all__ = ["ContrastHealthMonitor"]

MEMORY_TERMS = (PixelContrast, RegionContrast)  # the Table 2 competitors: whole terms in the gradient figures


class ContrastHealthMonitor(Callback):
    """Logs what every :class:`~contrastseg.losses.MultiScaleContrast` term sees and does, under
    ``train/contrast_health/``, at the trainer's ``log_every_n_steps``.

    Per scale (``s4``, ``s8``, ...): ``anchors`` drawn, ``pairs`` ((image, class) pairs with a labelled pixel),
    ``sampled_pairs``, ``views`` (``V``, anchors per sampled pair), ``classes_with_positives``,
    ``median_pair_pixels``, ``zero_share`` (share of the steps since the last log where the term was an exact,
    structural 0: no anchor with both a positive and a negative), and Wang & Isola's ``alignment`` (mean squared
    distance of same-class embeddings; 0 = classes collapsed to points) and ``uniformity`` (log of the mean Gaussian
    potential of all pairs; lower = spread over the sphere) of the normalised anchors. Per cross-scale pair
    (``cs_4_32``, ...): ``shared_classes`` (row classes with a positive among the columns) and ``zero_share``.

    Every ``grad_every_n_steps`` batches it measures, with one extra backward pass per sub-term, the gradient each
    loss term sends into the shared encoder (``model.net.encoder``, else the whole net), as it enters the objective
    (weights, lambdas and warm-up applied): ``grad_norm/<term>`` for every non-contrastive term (``ce``, ...) and
    every contrastive sub-term (``ms_s4``, ``cs_4_32``, ...), ``grad_norm/contrast`` for their sum,
    ``grad_ratio`` (contrast over the rest) and ``grad_cos``, the cosine between the two sums' gradients (negative:
    the terms pull the encoder in opposite directions). ``overhead`` is the monitor's share of the training steps'
    host time so far. Under DDP the figures are process 0's batch.

    It warns once about setups that leave the term with little to learn from, judged over the first
    ``warn_after_steps`` steps (and after): fewer than two classes with positives at a scale in most steps,
    ``min_views_per_class`` above the median pair size in most logged steps (most pairs never sampled),
    ``max_anchors`` below the number of pairs in most logged steps, and a resumed run whose process count changed
    (the anchors drawn per optimiser step change with it).

    :class:`~contrastseg.losses.PixelContrast` and :class:`~contrastseg.losses.RegionContrast` terms count as
    contrastive terms in the gradient figures (``grad_norm/<name>``, in the contrastive sum), and their
    memories are logged: ``<name>/<memory>/entries`` and ``<name>/<memory>/classes`` (classes with an entry; a class
    absent from the memory has no positives there).

    :class:`~contrastseg.ContrastSegModule` adds one with these defaults to every run with a contrastive term
    (``model.contrast_health: false`` turns that off); list it in ``trainer.callbacks`` to change them.

    Args:
        grad_every_n_steps: batches between gradient measurements (0: never). A measurement costs about one
            backward pass per sub-term; with the default the monitor took 1.2-1.4% of the training steps' time on
            the contrastive quickstart (2 CPU cores), 12% with 24.
        max_anchors: anchors per scale used for alignment and uniformity (a ``max_anchors^2`` matrix).
        warn_after_steps: steps seen before a warning about the setup may fire.
    """

    def __init__(self, *, grad_every_n_steps: int = 250, max_anchors: int = 1024, warn_after_steps: int = 50) -> None:
        if grad_every_n_steps < 0:
            raise ValueError(f"grad_every_n_steps must be >= 0, got {grad_every_n_steps}")
        self.grad_every_n_steps, self.max_anchors = int(grad_every_n_steps), int(max_anchors)
        self.warn_after_steps = int(warn_after_steps)
        self.terms: list[MultiScaleContrast] = []
        self.memory_terms: list[PixelContrast | RegionContrast] = []
        self._warned: set[str] = set()
        self._world = self._saved_world = None
        self._probe, self._batches = False, 0
        self._window: dict[str, Tensor] = {}  # zero-loss steps per tag since the last log (device counters)
        self._window_steps = 0
        self._few: dict[str, Tensor] = {}  # steps with < 2 classes with positives per scale, whole run
        self._few_steps = 0
        self._budget: dict[str, dict[str, Any]] = {}  # per scale: logged steps with a budget problem
        self._pending: dict[str, Tensor] = {}  # the last gradient measurement, logged at the next logging step
        self._monitor_s = self._train_s = 0.0
        self._step_began = 0.0

    # ------------------------------------------------------------------ setup and state

    def setup(self, trainer: Trainer, pl_module: LightningModule, stage: str) -> None:
        self._world = trainer.world_size

    def state_dict(self) -> dict[str, Any]:
        return {"world_size": self._world, "batches": self._batches}  # a resumed run keeps its measurement steps

    def load_state_dict(self, state_dict: dict[str, Any]) -> None:
        self._saved_world = state_dict.get("world_size")
        self._batches = int(state_dict.get("batches", 0))

    def on_train_start(self, trainer: Trainer, pl_module: LightningModule) -> None:
        self.terms = [t for t in getattr(pl_module, "losses", []) if isinstance(t, MultiScaleContrast)
                      and t.loss is not None]
        for term in self.terms:
            term.loss.keep_anchors = True
        self.memory_terms = [t for t in getattr(pl_module, "losses", []) if isinstance(t, MEMORY_TERMS)]
        if self._saved_world is not None and self._saved_world != trainer.world_size and self.terms:
            per_process = not any(t.gather_distributed for t in self.terms)
            rank_zero_warn(
                f"this run was saved with {self._saved_world} process(es) and continues with {trainer.world_size}: "
                + ("each process draws up to max_anchors per scale from its own images, so an optimiser step now "
                   f"contrasts {trainer.world_size} anchor sets instead of {self._saved_world}"
                   if per_process else "the global batch has another size, so the views per (image, class) pair "
                   "change") + "; the contrastive term's strength changes with it (keep the process count, or "
                "scale lambda)", category=UserWarning)

    def on_train_end(self, trainer: Trainer, pl_module: LightningModule) -> None:
        for term in self.terms:
            term.loss.keep_anchors, term.loss.kept = False, None

    # ------------------------------------------------------------------ every batch

    def on_train_batch_start(self, trainer: Trainer, pl_module: LightningModule, batch: Any, batch_idx: int) -> None:
        self._step_began = time.perf_counter()
        every = self.grad_every_n_steps
        # A count of batches, the same on every process (a measurement runs collectives under SyncBatchNorm).
        self._probe = bool(self.terms or self.memory_terms) and every > 0 and self._batches % every == 0
        self._batches += 1
        if self._probe:
            pl_module.record_terms = True
            for term in self.terms:
                term.record_pieces = True

    def on_before_backward(self, trainer: Trainer, pl_module: LightningModule, loss: Tensor) -> None:
        if not self._probe:
            return
        began = time.perf_counter()
        contrastive = {t.name for t in self.terms} | {t.name for t in self.memory_terms}
        pieces = {name: value for name, value in pl_module.recorded_terms.items() if name not in contrastive}
        contrast = {key: value for t in self.terms for key, value in t.pieces.items()}
        contrast |= {t.name: pl_module.recorded_terms[t.name] for t in self.memory_terms
                     if t.name in pl_module.recorded_terms}
        self._pending = gradient_figures(_shared_parameters(pl_module), pieces, contrast)
        self._monitor_s += time.perf_counter() - began

    def on_train_batch_end(self, trainer: Trainer, pl_module: LightningModule, outputs: Any, batch: Any,
                           batch_idx: int) -> None:
        if not self.terms and not self.memory_terms:
            return
        began = time.perf_counter()
        if self._probe:
            pl_module.record_terms, pl_module.recorded_terms = False, {}
            for term in self.terms:
                term.record_pieces, term.pieces = False, {}
        kept = [(term, term.loss.kept) for term in self.terms]
        for term, _ in kept:
            term.loss.kept = None
        prefix = len(self.terms) > 1
        self._window_steps += 1
        self._few_steps += 1
        for term, step in kept:
            if step is not None:
                self._count(term, step, prefix, pl_module.num_classes)
        logs: dict[str, Tensor] = {}
        if self._pending:  # logged in the step it was measured in
            logs |= {f"grad_{k}": v for k, v in self._pending.items()}
            self._pending = {}
        if logs_this_step(trainer):
            if trainer.is_global_zero:
                logs |= self._figures(kept, prefix, pl_module.num_classes)
                for term in self.memory_terms:
                    for name, memory in _memories(term).items():
                        logs[f"{term.name}/{name}/entries"] = memory.count.sum().float()
                        logs[f"{term.name}/{name}/classes"] = (memory.count > 0).sum().float()
            self._window, self._window_steps = {}, 0
            self._check_warnings()
        self._monitor_s += time.perf_counter() - began
        self._train_s += time.perf_counter() - self._step_began
        if logs and trainer.is_global_zero:
            logs["overhead"] = torch.tensor(self._monitor_s / max(self._train_s, 1e-9))
            # Straight to the loggers: a value given to LightningModule.log is repeated at every later logging step
            # until it is logged again, which would pass one gradient measurement off as many.
            metrics = {f"train/contrast_health/{k}": float(v) for k, v in logs.items()}
            for logger in trainer.loggers:
                logger.log_metrics(metrics, step=logged_step(trainer))

    # ------------------------------------------------------------------ figures

    def _count(self, term: MultiScaleContrast, step: dict, prefix: bool, num_classes: int) -> None:
        """Device counters of this step (no host synchronisation)."""
        tags = _tags(term, prefix)
        for s, loss in enumerate(step["per_scale"]):
            if s not in step["anchors"] or term.loss.scale_weights[s] == 0:
                continue
            self._add(self._window, tags[s], loss.detach() == 0)
            few = classes_with_positives(step["anchors"][s][1], num_classes) < 2
            self._add(self._few, tags[s], few)
        for (a, b), loss in zip(term.loss.cross_scale_pairs, step["cross_scale"]):
            self._add(self._window, f"cs_{tags[a][1:]}_{tags[b][1:]}", loss.detach() == 0)

    @staticmethod
    def _add(counters: dict[str, Tensor], key: str, flag: Tensor) -> None:
        counters[key] = counters[key] + flag.long() if key in counters else flag.long()

    def _figures(self, kept: list, prefix: bool, num_classes: int) -> dict[str, Tensor]:
        logs: dict[str, Tensor] = {}
        for key, zeros in self._window.items():
            logs[f"{key}/zero_share"] = zeros.float() / max(self._window_steps, 1)
        for term, step in kept:
            if step is None:
                continue
            tags, sampling = _tags(term, prefix), term.loss.sampling
            for s, (z, y) in step["anchors"].items():
                tag = tags[s]
                if s in step["indices"]:
                    stats = anchor_statistics(step["labels"][s], step["indices"][s], y, num_classes=num_classes,
                                              ignore_index=sampling["ignore_index"])
                    logs |= {f"{tag}/{k}": v for k, v in stats.items()}
                    self._check_budget(tag, stats, sampling)
                else:  # gather_distributed: the anchors come from every process's images
                    logs[f"{tag}/anchors"] = torch.tensor(float(y.numel()))
                    logs[f"{tag}/classes_with_positives"] = classes_with_positives(y, num_classes).float()
                alignment, uniformity = alignment_uniformity(z, y, max_anchors=self.max_anchors)
                if not torch.isnan(alignment):
                    logs[f"{tag}/alignment"] = alignment
                if not torch.isnan(uniformity):
                    logs[f"{tag}/uniformity"] = uniformity
            for a, b in term.loss.cross_scale_pairs:
                if a in step["anchors"] and b in step["anchors"]:
                    pair = f"cs_{tags[a][1:]}_{tags[b][1:]}"
                    logs[f"{pair}/shared_classes"] = shared_classes(
                        step["anchors"][a][1], step["anchors"][b][1], num_classes).float()
        return logs

    def _check_budget(self, tag: str, stats: dict[str, Tensor], sampling: dict[str, Any]) -> None:
        """Count the logged steps whose batch had its typical pair below ``min_views_per_class`` or more pairs than
        ``max_anchors`` (judged over the run by :meth:`_check_warnings`, not on one batch)."""
        median, pairs = float(stats["median_pair_pixels"]), int(stats["pairs"])
        counts = self._budget.setdefault(tag, {"logged": 0, "views": 0, "anchors": 0, "median": [], "pairs": []})
        counts["logged"] += 1
        if pairs and median < sampling["min_views_per_class"]:
            counts["views"] += 1
            counts["median"].append(median)
        if pairs > sampling["max_anchors"]:
            counts["anchors"] += 1
            counts["pairs"].append(pairs)
        counts["sampling"] = sampling

    def _check_warnings(self) -> None:
        """One-time warnings, once ``warn_after_steps`` steps were seen, for what held in most of them."""
        if self._few_steps < self.warn_after_steps:
            return
        for tag, few in self._few.items():
            share = float(few) / self._few_steps
            self._warn(f"few {tag}", share > 0.5,
                       f"contrastive scale {tag}: fewer than two classes had positives in {100 * share:.0f}% of "
                       f"{self._few_steps} steps, so its term is mostly a structural 0 (use larger crops or batches, "
                       "lower min_views_per_class, or drop this scale)")
        for tag, counts in self._budget.items():
            sampling, logged = counts["sampling"], max(counts["logged"], 1)
            if counts["views"] / logged > 0.5:
                median = sorted(counts["median"])[len(counts["median"]) // 2]
                self._warn(f"views {tag}", True,
                           f"contrastive scale {tag}: min_views_per_class={sampling['min_views_per_class']} is above "
                           f"the median (image, class) pair size in {counts['views']} of {logged} logged steps "
                           f"(typically {median:g} pixels at this scale): most pairs are never sampled (lower "
                           "min_views_per_class, use larger crops, or drop this scale)")
            if counts["anchors"] / logged > 0.5:
                pairs = sorted(counts["pairs"])[len(counts["pairs"]) // 2]
                self._warn(f"anchors {tag}", True,
                           f"contrastive scale {tag}: max_anchors={sampling['max_anchors']} is below the number of "
                           f"(image, class) pairs (typically {pairs}) in {counts['anchors']} of {logged} logged "
                           "steps: the sampler cannot give every pair a view (raise max_anchors)")

    def _warn(self, key: str, condition: bool, message: str) -> None:
        if condition and key not in self._warned:
            self._warned.add(key)
            rank_zero_warn(message, category=UserWarning)


def _memories(term: Any) -> dict[str, ClassMemory]:
    """The term's memories by attribute name (``pixel_memory``, ...): empty for a term without one."""
    children = term.named_children() if isinstance(term, torch.nn.Module) else ()
    return {name: m for name, m in children if isinstance(m, ClassMemory)}


def _tags(term: MultiScaleContrast, prefix: bool) -> list[str]:
    """The term's scale tags by position in its loss (``s4``, ...), prefixed with its name when there are several."""
    return [f"{term.name}_{t}" if prefix else t for t in term.scale_tags]


def _shared_parameters(pl_module: LightningModule) -> list[Tensor]:
    net = getattr(pl_module, "net", pl_module)
    shared = getattr(net, "encoder", net)
    return [p for p in shared.parameters() if p.requires_grad]


def gradient_figures(params: list[Tensor], supervised: dict[str, Tensor],
                     contrast: dict[str, Tensor]) -> dict[str, Tensor]:
    """Gradient norms of each term on ``params``, and how the contrastive sum relates to the rest.

    Args:
        params: the shared parameters (the encoder's).
        supervised: the non-contrastive terms as they enter the objective (graph attached).
        contrast: the contrastive sub-terms as they enter the objective.

    Returns:
        ``norm/<name>`` per term, ``norm/contrast`` (the contrastive sum), ``ratio`` (contrastive over
        non-contrastive norm) and ``cos`` (cosine of the two sums' gradients; absent when either is zero).
    """
    figures: dict[str, Tensor] = {}
    sums: dict[str, list[Tensor] | None] = defaultdict(lambda: None)
    for group, terms in (("supervised", supervised), ("contrast", contrast)):
        for name, value in terms.items():
            if not value.requires_grad:
                figures[f"norm/{name}"] = torch.zeros(())
                continue
            grads = torch.autograd.grad(value, params, retain_graph=True, allow_unused=True)
            grads = [torch.zeros_like(p) if g is None else g.float() for g, p in zip(grads, params)]
            figures[f"norm/{name}"] = torch.linalg.vector_norm(torch.stack([g.norm() for g in grads])).cpu()
            total = sums[group]
            sums[group] = grads if total is None else [t + g for t, g in zip(total, grads)]
    sup, con = sums["supervised"], sums["contrast"]
    norm_con = None if con is None else torch.linalg.vector_norm(torch.stack([g.norm() for g in con]))
    if norm_con is not None:
        figures["norm/contrast"] = norm_con.cpu()
    if sup is not None and norm_con is not None:
        dot = sum((a * b).sum() for a, b in zip(sup, con))
        norm_sup = torch.linalg.vector_norm(torch.stack([g.norm() for g in sup]))
        figures["ratio"] = (norm_con / norm_sup.clamp_min(1e-30)).cpu()
        if float(norm_sup) > 0 and float(norm_con) > 0:
            figures["cos"] = (dot / (norm_sup * norm_con)).cpu()
    return figures
