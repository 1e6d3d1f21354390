"""A model shared by every key, learned from every label: per-key weights become the shared
weights plus the key's own offset.

Why: an entity with few labels (a new key, a key after a drift, or any key when labels are
bought sparingly) cannot fit a model alone, but entities of one population share most of
their concept. With ``learner.shared.enabled`` the learner's ``theta0`` is no longer fixed:
at the first round end after every ``learner.shared.step_labels`` labels it takes one
AdaGrad step (its own accumulator, rate ``learner.shared.learning_rate``) on the mean data
gradient of the labels since the last step (within a poll, or over several polls when
labels are sparse: one step per poll made the shared model's speed depend on the poll size,
and starved it at small label budgets),
the accumulator first decayed by ``learner.shared.forgetting`` (RMSprop's running average
instead of AdaGrad's sum: the shared weights must keep moving after a drift that the few
labels of a tight budget never let a detector see; with 1.0 it is plain AdaGrad),
and every key's weights move by the same step. A key's weights are thus ``theta0 + d_k``,
where the offset ``d_k`` is what the key's own steps added; the proximal term
``(lambda/2)||w_k - theta0||^2`` is ``(lambda/2)||d_k||^2``. This is joint online learning
of the hierarchical model ``f(x; theta + d_k)``: the gradient of a key's loss in ``theta``
is its gradient in ``w_k``. A global drift reset sends the shared weights (and their
accumulator) back to the installed start, so that the new concept is learned from a clean
slate, and the keys with them.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
import torch

from streamlearn.optim import AdagradState, adagrad_step


class SharedWeights:
    """The shared part's optimiser state; the weights themselves are the learner's theta0.

    >>> s = SharedWeights(np.zeros(2, dtype=np.float32), rate=0.1, initial_accumulator=0.0)
    >>> s.accumulate(np.array([[2.0, -1.0], [2.0, -1.0]], dtype=np.float32))
    >>> [round(float(v), 6) for v in s.step(np.zeros(2, dtype=np.float32))]  # mean grad's
    [-0.1, 0.1]
    """

    def __init__(
        self,
        start: np.ndarray,
        *,
        rate: float,
        initial_accumulator: float,
        forgetting: float = 1.0,
        eps: float = 1e-10,
        step_labels: int = 1,
    ) -> None:
        if step_labels < 1:
            raise ValueError(f"learner.shared.step_labels must be >= 1, got {step_labels}")
        self.step_labels = step_labels
        self.rate = rate
        self.forgetting = forgetting
        self.eps = eps
        self.initial_accumulator = initial_accumulator
        self.start = start.copy()  # where a global drift sends the shared weights back
        self.accum = np.full_like(start, initial_accumulator)
        # The data gradients since the last step: their sum (float64; a compiled round loop
        # adds to it in place, then reports how many through counted()) and how many.
        self.grad_sum = np.zeros_like(start, dtype=np.float64)
        self._count = 0
        self._ramp_from: np.ndarray | None = None  # the accumulator before an alarm's restart
        self._ramp_steps = 0

    def accumulate(self, grads: np.ndarray) -> None:
        """Data gradients (no proximal term) of labelled lanes, ``[L, P]``."""
        if len(grads):
            self.grad_sum += grads.sum(0)
            self._count += len(grads)

    @property
    def count(self) -> int:
        """Data gradients in :attr:`grad_sum`."""
        return self._count

    def counted(self, n: int) -> None:
        """``n`` more gradients were added to :attr:`grad_sum` in place."""
        self._count += n

    @property
    def ready(self) -> bool:
        """At least ``step_labels`` gradients are in: time for a step."""
        return self._count >= self.step_labels

    def pieces(self, sizes: Sequence[int], n_labelled: np.ndarray) -> list[int]:
        """Ends of the pieces the rounds (``sizes``, in sorted event order) are cut into so
        that a step falls between pieces every ``step_labels`` labels (``n_labelled[j]``:
        labels among the first ``j`` events). Steps are due where :attr:`ready` says. For
        batches of label answers (one round, mostly: distinct keys), which are small.

        >>> s = SharedWeights(np.zeros(1, dtype=np.float32), rate=1.0,
        ...                   initial_accumulator=0.0, step_labels=2)
        >>> s.pieces([3, 2], np.array([0, 1, 2, 3, 4, 5]))  # all labelled
        [2, 3, 4, 5]
        """
        out: list[int] = []
        count, lo = self._count, 0
        for size in sizes:
            end = lo + size
            while lo < end:
                if count >= self.step_labels:
                    count = 0
                counts = n_labelled[lo : end + 1] - n_labelled[lo]
                room = self.step_labels - count
                hi = end if counts[-1] <= room else lo + int(np.searchsorted(counts, room))
                count += int(counts[hi - lo])
                out.append(hi)
                lo = hi
        return out

    def step(self, theta0: np.ndarray) -> np.ndarray | None:
        """The step of the shared weights on the mean gradient since the last step (None
        when there was none, or it is not finite)."""
        if self._count == 0:
            return None
        g = (self.grad_sum / self._count).astype(np.float32)
        self.grad_sum[:] = 0.0
        self._count = 0
        decayed = AdagradState(self.accum * np.float32(self.forgetting))
        new, state, _ = adagrad_step(theta0, decayed, g, self.rate, self.eps)
        if not (np.isfinite(new).all() and np.isfinite(state.accum).all()):
            return None
        self.accum = state.accum
        if self._ramp_from is not None:
            self._ramp_steps += 1
            back = min(1.0, self._ramp_steps * (1.0 - self.forgetting))
            self.accum = np.maximum(self.accum, self._ramp_from * np.float32(back))
            if back >= 1.0:
                self._ramp_from = None
        return np.asarray(new - theta0, dtype=np.float32)

    def restart(self, start: np.ndarray | None = None, *, ramp: bool = False) -> None:
        """Fresh accumulator (and a new start when a meta-init is installed).

        With ``ramp`` (a drift alarm's restart) the accumulator goes back to its old value
        over the steps it remembers, ``1 / (1 - forgetting)``: at step ``t`` it is at least
        ``t (1 - forgetting)`` times the old one. The large steps re-learn a new concept;
        once it is learned they were noise. Plain AdaGrad (``forgetting`` 1) remembers every
        step: no ramp."""
        self._ramp_from = self.accum.copy() if ramp and self.forgetting < 1.0 else None
        self._ramp_steps = 0
        if start is not None:
            self.start = start.copy()
        self.accum = np.full_like(self.start, self.initial_accumulator)
        self.grad_sum[:] = 0.0
        self._count = 0

    def state_dict(self) -> dict[str, torch.Tensor]:
        return {
            "start": torch.from_numpy(self.start.copy()),
            "accum": torch.from_numpy(self.accum.copy()),
            "grad": torch.from_numpy(self.grad_sum.copy()),
            "count": torch.tensor(self._count),
            "ramp_from": torch.from_numpy(
                self._ramp_from.copy() if self._ramp_from is not None else np.zeros(0, np.float32)
            ),
            "ramp_steps": torch.tensor(self._ramp_steps),
        }

    def load_state_dict(self, state: dict[str, torch.Tensor]) -> None:
        self.start = state["start"].numpy().astype(np.float32)
        self.accum = state["accum"].numpy().astype(np.float32)
        if "grad" in state:  # absent in checkpoints before learner.shared.step_labels
            self.grad_sum = state["grad"].numpy().astype(np.float64)
            self._count = int(state["count"])
        ramp = state.get("ramp_from")  # absent before the alarm's ramp: none under way
        self._ramp_from = (
            ramp.numpy().astype(np.float32) if ramp is not None and ramp.numel() else None
        )
        self._ramp_steps = int(state.get("ramp_steps", 0))
