"""A memory of the shared model's settled concepts, recalled when one fits new labels better.

Why: drifting streams go back to concepts they have seen (seasons, weekdays, a campaign
that returns). The shared model (:mod:`streamlearn.learning.shared`) then re-learns what it knew a
while ago, and at a tight label budget that takes thousands of events. ``bench/
active_ceiling.py`` measures what putting back, at each recurring drift, the shared weights
of that concept's last segment is worth (an oracle that knows the drift times; this module
has to find out from the labels).

How:

- **Snapshots when settled.** The shared weights are followed by a moving average over
  ``snapshot_labels`` labels (the weights of one moment carry the noise of their last
  steps). Every ``snapshot_labels`` labels that average is compared with the one of the
  previous snapshot time: if it moved by less than ``settled_change`` of its norm, the
  model is settled on a concept, and the average replaces the nearest member when within
  ``merge_distance`` (relative) of it, or else joins the memory (the least recently used
  member leaves when ``members`` are kept). A model in the middle of re-learning is a blend
  of two concepts and is not stored.
- **Recall by a paired test on every label.** Each member, with each key's own offset
  (``w_k - theta0``) added, is scored on the labels as they come against the weights in
  force: a CUSUM of the log-loss difference, ``S = max(0, S + clip(loss_now - loss_member)
  - margin)``, per member. When one passes ``threshold`` nats, the shared weights, and every
  key with them by the same shift, move to that member. The test is paired (both models on
  the same labels), so the labels a query policy picks, hard cases for the weights in
  force, are evidence too: a member that knows the concept predicts them well.
- **Only while the weights in force fail.** Members are scored (and gather evidence) only
  while the weights in force average a log loss of at least ``gate`` times a coin's on the
  last ~20 scored labels; otherwise their evidence waits. Without a gate, with every label
  given, the memory switched often, each time to weights that had fit the last labels a
  little better, and cost accuracy: a model that tracks well loses more by a jump than it
  gains. With every label given the gate is mostly shut, and the memory
  costs one forward pass over ``check_labels`` labels per poll. (The labels an
  uncertainty policy picks keep the weights in force near a coin's loss, so at a tight
  budget the gate is open and the paired test alone decides.)
- A poll's labels are scored before they are learned and the move comes after the poll,
  so no prediction is made by weights chosen on its own label.

Classification only: regression has no coin to tell failing weights by.

At most ``check_labels`` labels per poll are scored (evenly spaced, :meth:`ConceptMemory.pick`):
with every event labelled that is plenty to decide within a poll, and it bounds the cost.
"""

from __future__ import annotations

from typing import Any

import numpy as np
import torch

from streamlearn.config import RecallConfig
from streamlearn.model import lanes
from streamlearn.model.spec import ModelSpec
from streamlearn.optim.cusum import cusum_paths

# Nats: the most one label counts for or against a member. Unclipped, one noisy label that
# the weights in force predicted confidently (log loss ~5) passed the threshold alone.
_CLIP = 1.0
_GATE_LABELS = 20  # scored labels the weights in force's loss is averaged over


class ConceptMemory:
    """Earlier shared weights, and the running evidence for each against the weights in force.

    >>> spec = ModelSpec(n_features=1)
    >>> mem = ConceptMemory(spec, RecallConfig(snapshot_labels=1, threshold=2.0))
    >>> old = np.array([4.0, 0.0], dtype=np.float32)  # a settled concept: y = 1 when x > 0
    >>> x, y = np.ones((8, 1), dtype=np.float32), np.ones(8, dtype=np.float32)
    >>> for _ in range(3):  # labels seen with it in force: snapshots once settled
    ...     mem.score_labels(old[None].repeat(8, 0), old, x, y); mem.maybe_snapshot()
    >>> len(mem.members)
    1
    >>> now = np.array([-4.0, 0.0], dtype=np.float32)  # a drift: weights saying y = 0
    >>> mem.score_labels(now[None].repeat(8, 0), now, x, y)  # the labels still say y = 1
    >>> [round(float(v), 1) for v in mem.take_recall(now)]  # the shift back to the old one
    [8.0, 0.0]
    """

    def __init__(self, spec: ModelSpec, cfg: RecallConfig) -> None:
        self.spec = spec
        self.cfg = cfg
        self.members = np.zeros((0, spec.n_params), dtype=np.float32)
        self.used = np.zeros(0, dtype=np.int64)  # label count when last stored or recalled
        self.evidence = np.zeros(0, dtype=np.float64)  # CUSUM per member
        self.labels = 0
        self.recalls = 0
        self.average: np.ndarray | None = None  # theta0 smoothed over snapshot_labels
        self._last_seen: np.ndarray | None = None  # the average at the last snapshot time
        self._since_snapshot = 0
        self._due: int | None = None  # member to recall after this poll
        self.in_force_loss = 0.0  # moving mean of the weights in force's loss, scored labels
        self._coin = spec.coin_loss

    def pick(self, n: int) -> np.ndarray:
        """Which of a poll's ``n`` labels to score: at most ``check_labels``, evenly spaced
        (the caller gathers just those rows)."""
        check = self.cfg.check_labels
        if n <= check:
            return np.arange(n)
        return np.arange(check) * (n - 1) // max(check - 1, 1)

    def score_labels(
        self,
        w: np.ndarray,
        theta0: np.ndarray,
        x: np.ndarray,
        y: np.ndarray,
        labels: int | None = None,
    ) -> None:
        """A poll's labels (those :meth:`pick` chose), before they are learned: ``w`` the
        keys' weights in force (``[L, P]``, theta0 included), ``x`` standardised features,
        ``y`` labels; ``labels`` the poll's labels in all (default ``len(y)``)."""
        n = len(y)
        if not n:
            return
        total = n if labels is None else labels
        self.labels += total
        self._since_snapshot += total
        self._follow(theta0, total)
        spec = self.spec
        with np.errstate(all="ignore"):
            now = lanes.loss(spec, w, x, y).astype(np.float64)
        a = 1.0 - (1.0 - 1.0 / _GATE_LABELS) ** n
        # fmin: a nan loss (overflow) counts as a large one, not as a poisoned mean.
        self.in_force_loss += a * (float(np.fmin(now, 10.0).mean()) - self.in_force_loss)
        k = len(self.members)
        if not k or not self._failing():
            # The weights in force do well: nothing to recall, and with every label given
            # this is most polls, so the members are not even scored (one forward pass).
            # Their evidence waits: near a coin's loss the gate opens and shuts from poll to
            # poll, and evidence started over at every shut never reached the threshold.
            return
        with np.errstate(all="ignore"):
            tried = (self.members[:, None, :] + (w - theta0)[None]).reshape(k * n, -1)
            loss = lanes.loss(spec, tried, np.tile(x, (k, 1)), np.tile(y, k))
        # Against the better of the weights in force and a coin: weights that are lost
        # after a drift would make any member look good, a coin does not.
        if self._coin is not None:
            now = np.minimum(now, self._coin)
        gain = now[None, :] - loss.reshape(k, n).astype(np.float64)
        gain = np.clip(np.nan_to_num(gain, nan=-_CLIP), -_CLIP, _CLIP) - self.cfg.margin
        path = cusum_paths(gain, self.evidence)  # over the poll's labels, all members
        self.evidence = path[:, -1]
        best = int(np.argmax(path.max(axis=1)))
        if path[best].max() > self.cfg.threshold:
            self._due = best

    def _follow(self, theta0: np.ndarray, n: int) -> None:
        if self.average is None or not np.isfinite(self.average).all():
            self.average = theta0.astype(np.float64)
            return
        self.average += min(1.0, n / self.cfg.snapshot_labels) * (theta0 - self.average)

    def _failing(self) -> bool:
        """The weights in force predict the recent scored labels no better than
        ``gate`` times what a coin would (never, for regression: no coin; the learner
        builds no memory then)."""
        return self._coin is not None and self.in_force_loss >= self.cfg.gate * self._coin

    def take_recall(self, theta0: np.ndarray) -> np.ndarray | None:
        """After the poll: the shift from ``theta0`` to the member the evidence chose, if
        one passed the threshold (and all evidence starts over)."""
        j, self._due = self._due, None
        if j is None:
            return None
        self.evidence[:] = 0.0
        self.used[j] = self.labels
        self.recalls += 1
        self.average = self.members[j].astype(np.float64)
        self._last_seen = None  # the weights jump: not a sign of being settled
        return np.asarray(self.members[j] - theta0, dtype=np.float32)

    def maybe_snapshot(self) -> None:
        """Every ``snapshot_labels`` labels: store the averaged shared weights if settled."""
        if self._since_snapshot < self.cfg.snapshot_labels or self.average is None:
            return
        self._since_snapshot = 0
        now = self.average.astype(np.float32)
        last, self._last_seen = self._last_seen, now
        scale = max(float(np.linalg.norm(now)), 1e-6)
        if last is None or float(np.linalg.norm(now - last)) > self.cfg.settled_change * scale:
            return
        dist = np.linalg.norm(self.members - now, axis=1)
        if len(dist) and dist.min() <= self.cfg.merge_distance * scale:
            j = int(np.argmin(dist))  # the same concept: the fresher weights replace it
        elif len(dist) < self.cfg.members:
            self.members = np.concatenate([self.members, now[None]])
            self.used = np.append(self.used, self.labels)
            self.evidence = np.append(self.evidence, 0.0)
            return
        else:
            j = int(np.argmin(self.used))  # full: the least recently used leaves
        self.members[j], self.used[j], self.evidence[j] = now, self.labels, 0.0

    def state_dict(self) -> dict[str, Any]:
        def opt(a: np.ndarray | None) -> torch.Tensor | None:
            return None if a is None else torch.from_numpy(a.copy())

        return {
            "members": torch.from_numpy(self.members.copy()),
            "used": torch.from_numpy(self.used.copy()),
            "evidence": torch.from_numpy(self.evidence.copy()),
            "counts": torch.tensor([self.labels, self.recalls, self._since_snapshot]),
            "in_force_loss": self.in_force_loss,
            "average": opt(self.average),
            "last_seen": opt(self._last_seen),
        }

    def load_state_dict(self, state: dict[str, Any]) -> None:
        members = state["members"].numpy().astype(np.float32)
        if members.ndim != 2 or members.shape[1] != self.spec.n_params:
            raise ValueError(
                f"checkpoint's concept memory holds weights of {members.shape[-1]} "
                f"parameters; this model has {self.spec.n_params}: was model.* changed?"
            )
        self.members = members
        self.used = state["used"].numpy().astype(np.int64)
        self.evidence = state["evidence"].numpy().astype(np.float64)
        self.labels, self.recalls, self._since_snapshot = (int(v) for v in state["counts"])
        self.in_force_loss = float(state["in_force_loss"])
        avg, last = state["average"], state["last_seen"]
        self.average = None if avg is None else avg.numpy().astype(np.float64)
        self._last_seen = None if last is None else last.numpy().astype(np.float32)
        self._due = None
