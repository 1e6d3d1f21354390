"""Configuration of how the model learns (step rules) and which labels it asks for."""

from __future__ import annotations

from typing import Annotated, Literal

from pydantic import Field, model_validator

from streamlearn.config.base import PositiveFloat, Probability, _Strict


class CurriculumConfig(_Strict):
    """Per-sample step multiplier ``floor + (1 - floor) * sigmoid(steepness * (margin -
    midpoint))`` (streamlearn.optim.curriculum)."""

    enabled: bool = False
    midpoint: float = -2.0
    steepness: PositiveFloat = 2.0
    floor: Annotated[float, Field(ge=0, le=1)] = 0.1


class HypergradientConfig(_Strict):
    """Online adaptation of the base rate from ``d loss_t / d eta``
    (streamlearn.optim.hypergradient), within ``[low, high]``."""

    enabled: bool = False
    beta: PositiveFloat = 0.01
    low: PositiveFloat = 0.01
    high: PositiveFloat = 10.0


class CurvatureConfig(_Strict):
    """Extreme eigenvalues of the AdaGrad-preconditioned Hessian of the loss over the last
    ``window`` labels, by Lanczos on HVPs, every ``every_labels`` labels; they cap the rate
    at ``2 / (lambda_min + lambda_max)`` (streamlearn.optim.sharpness)."""

    enabled: bool = True  # a safety cap: it never bound at the default rate (bench/step_size.py)
    every_labels: Annotated[int, Field(ge=1)] = 20_000
    window: Annotated[int, Field(ge=8, le=100_000)] = 256
    iterations: Annotated[int, Field(ge=2, le=200)] = 20


class ControllerConfig(_Strict):
    """PI control of ``log eta`` on the sharpness ``eta * lambda_max`` (stable below 2) or on
    the loss trend (fast / slow moving mean of the loss, 1 = flat), sampled every
    ``curvature.every_labels`` labels; the gain on ``learning_rate`` stays in [low, high]."""

    enabled: bool = False
    signal: Literal["sharpness", "loss_trend"] = "sharpness"
    setpoint: PositiveFloat = 1.0
    kp: Annotated[float, Field(ge=0)] = 0.5
    ki: Annotated[float, Field(ge=0)] = 0.2
    low: PositiveFloat = 0.01
    high: PositiveFloat = 100.0


class RecallConfig(_Strict):
    """A memory of the shared model's settled concepts, recalled when one fits the newest
    labels better than the weights in force (streamlearn.learning.recall). ``settled_change`` and
    ``merge_distance`` are relative to the norm of the shared weights; ``threshold`` and
    ``margin`` are nats of paired log-loss evidence (the margin per label)."""

    enabled: bool = True
    members: Annotated[int, Field(ge=1, le=256)] = 8
    snapshot_labels: Annotated[int, Field(ge=1)] = 150
    settled_change: PositiveFloat = 0.2
    merge_distance: PositiveFloat = 0.3
    threshold: PositiveFloat = 5.0
    margin: Annotated[float, Field(ge=0)] = 0.1
    check_labels: Annotated[int, Field(ge=1, le=100_000)] = 64
    # Recall only while the weights in force average at least this times a coin's log
    # loss on the last ~20 scored labels.
    gate: Annotated[float, Field(ge=0)] = 1.0


class SharedConfig(_Strict):
    """A model shared by all keys, learned from every label; each key's weights are the
    shared weights plus its own offset (streamlearn.learning.shared). The oracle tests of the
    per-key rules turn it off to check those rules alone."""

    enabled: bool = True
    learning_rate: PositiveFloat = 0.1
    # The shared accumulator decays by this factor per step (1: plain AdaGrad, whose steps
    # shrink for good; below 1 the shared weights keep tracking drift nobody detected).
    # 0.999 (a memory of ~1,000 steps) rather than 0.99: the network's steps must settle
    # on noise-free and slowly drifting concepts (docs/benchmarks.md, the ablation).
    forgetting: Annotated[float, Field(gt=0, le=1)] = 0.999
    # A step every this many labels, whatever the poll size (pieces of a poll, or several
    # polls when labels are sparse).
    step_labels: Annotated[int, Field(ge=1, le=1_000_000)] = 8
    recall: RecallConfig = RecallConfig()


class LinearExpertConfig(_Strict):
    """One logistic (softmax) regression for the whole stream at a steady rate, an expert of
    the mixture (streamlearn.learning.linear)."""

    enabled: bool = True
    learning_rate: PositiveFloat = 0.5
    # Its AdaGrad accumulator decays by this per label: the rate stays up (1: plain AdaGrad).
    forgetting: Annotated[float, Field(gt=0, le=1)] = 0.999
    # > 0: its weights' running average (decaying by this per label) is an expert too: the
    # steady rate's noise averaged out, for a concept that holds still (0: none).
    average: Annotated[float, Field(ge=0, lt=1)] = 0.999


class SplineExpertConfig(_Strict):
    """One network for the whole stream on a piecewise-linear (spline) encoding of each
    feature, knots at its quantiles: an expert of the mixture for rules on intervals of
    single features (streamlearn.learning.spline)."""

    enabled: bool = True
    knots: Annotated[int, Field(ge=2, le=256)] = 16
    # One layer: two of 32 bought ~0.003 on elec and rbf_d for twice the cost per event.
    hidden: Annotated[list[Annotated[int, Field(ge=1, le=4096)]], Field(min_length=1)] = Field(
        default_factory=lambda: [32]
    )
    learning_rate: PositiveFloat = 0.1
    # Its AdaGrad accumulator decays by this per label: the rate stays up (1: plain AdaGrad).
    forgetting: Annotated[float, Field(gt=0, le=1)] = 0.999
    # The knots are fitted on the first this many events; the expert sleeps until then.
    warmup: Annotated[int, Field(ge=1, le=1_000_000)] = 1000
    seed: int = 0


class MixtureConfig(_Strict):
    """The prediction served is a fixed-share mixture of experts (streamlearn.learning.
    mixture): the key's weights, the shared weights alone (with learner.shared on), the
    linear expert and the spline expert; off: the key's weights alone."""

    enabled: bool = True
    # Herbster and Warmuth's share: the weight passed on per label, what lets the mixture
    # follow a switch of the best expert (about 1 / the labels between switches).
    share: Annotated[float, Field(ge=0, lt=1)] = 0.001
    # Each expert's probabilities are calibrated online before they are mixed (a scale on
    # their log-probabilities and a bias per output, AdaGrad at this rate; 0: off): an
    # accurate but overconfident expert then earns the weight its accuracy deserves.
    calibration_rate: Annotated[float, Field(ge=0, le=10)] = 0.03
    linear: LinearExpertConfig = LinearExpertConfig()
    spline: SplineExpertConfig = SplineExpertConfig()


class LearnerConfig(_Strict):
    learning_rate: PositiveFloat = 0.1  # as config/default.yaml (benchmarked there)
    adagrad_eps: PositiveFloat = 1e-10
    initial_accumulator: Annotated[float, Field(ge=0)] = 0.1
    proximal_lambda: Annotated[float, Field(ge=0)] = 0.1
    max_step_norm: PositiveFloat = 1e3
    # > 0: an update that raises its own example's loss above this factor times the loss
    # before (plus guard_loss_floor) is rolled back; 0: off.
    guard_loss_factor: Annotated[float, Field(ge=0)] = 0.0
    guard_loss_floor: Annotated[float, Field(ge=0)] = 0.01
    curriculum: CurriculumConfig = CurriculumConfig()
    hypergradient: HypergradientConfig = HypergradientConfig()
    curvature: CurvatureConfig = CurvatureConfig()
    controller: ControllerConfig = ControllerConfig()
    shared: SharedConfig = SharedConfig()
    mixture: MixtureConfig = MixtureConfig()
    # A key's own steps on the hidden layers (the representation) at this fraction of its
    # rate on the output layer: 1 personalises the whole network, 0 only its head (the
    # hidden layers are then the shared model's alone).
    personal_hidden: Annotated[float, Field(ge=0, le=1)] = 1.0
    # Keys kept in memory; beyond it the least recently used are spilled beside the
    # checkpoints and brought back on their next event (streamlearn.state.residency). 0: no bound.
    max_keys: Annotated[int, Field(ge=0)] = 1_000_000

    @model_validator(mode="after")
    def _rate_in_bounds(self) -> LearnerConfig:
        c = self.controller
        if c.enabled and c.signal == "sharpness" and not self.curvature.enabled:
            raise ValueError(
                "learner.controller.signal 'sharpness' needs learner.curvature.enabled: it "
                "acts on the sharpness the curvature measures"
            )
        if c.signal == "sharpness" and c.setpoint >= 2:
            raise ValueError(
                f"learner.controller.setpoint must be below 2 for 'sharpness' (stable below "
                f"2), got {c.setpoint}"
            )
        if not self.controller.low < self.controller.high:
            raise ValueError(
                f"learner.controller.low ({self.controller.low}) must be below "
                f"learner.controller.high ({self.controller.high})"
            )
        h = self.hypergradient
        if h.enabled and not h.low <= self.learning_rate <= h.high:
            raise ValueError(
                f"learner.learning_rate ({self.learning_rate}) must lie within "
                f"learner.hypergradient.low..high ({h.low}..{h.high})"
            )
        return self


class LambdaTuningConfig(_Strict):
    """Online tuning of ``learner.proximal_lambda`` by its validation hypergradient
    ``dL_val/dlambda`` (implicit differentiation, :mod:`streamlearn.active.lambda_watch`):
    ``log lambda`` takes a normalised step of size ``rate`` against it at every refresh,
    within ``[low, high]``."""

    enabled: bool = True
    rate: PositiveFloat = 0.5
    low: PositiveFloat = 1e-5
    high: PositiveFloat = 10.0

    @model_validator(mode="after")
    def _bounds(self) -> LambdaTuningConfig:
        if not self.low < self.high:
            raise ValueError(
                f"active.lambda_tuning.low ({self.low}) must be below "
                f"active.lambda_tuning.high ({self.high})"
            )
        return self


class PacingConfig(_Strict):
    """Spend the label budget where the model errs (:mod:`streamlearn.active.pacing`): the
    share queried follows the ratio of a fast to a slow average of the answered labels' loss,
    within ``[budget / max_boost, budget * max_boost]``; a bank of labels earned and spent,
    on the scale of what the budget earns over ``bank_events``, keeps the long-run share at
    the budget."""

    enabled: bool = True
    max_boost: Annotated[float, Field(ge=1, le=100)] = 4.0
    fast_labels: Annotated[int, Field(ge=1)] = 30
    slow_labels: Annotated[int, Field(ge=2)] = 1000
    bank_events: Annotated[int, Field(ge=1)] = 10_000
    # A surge: the maximum share for this many events once the answers' evidence that the
    # model does no better than a coin passes alarm_nats (0: no surges; classification only).
    surge_events: Annotated[int, Field(ge=0)] = 2000
    alarm_nats: PositiveFloat = 8.0
    # The first events at the maximum share, paid back by the bank: a new model's first
    # labels teach it the most (0: none; not again after a resume from a checkpoint).
    warmup_events: Annotated[int, Field(ge=0)] = 3000
    # An alarm restarts the shared model's accumulator (a drift of the population is
    # re-learned faster) unless one key carried more than restart_key_share of its
    # evidence (that key's hard stretch: larger shared steps only add noise). Not 0.5: an
    # alarm's run is a few answers, and one key of many may carry over half of it.
    # Measurements: docs/active-learning.md.
    restart_shared: bool = True
    restart_key_share: Probability = 0.75

    @model_validator(mode="after")
    def _fast_below_slow(self) -> PacingConfig:
        if self.fast_labels >= self.slow_labels:
            raise ValueError(
                f"active.pacing.fast_labels ({self.fast_labels}) must be below "
                f"active.pacing.slow_labels ({self.slow_labels})"
            )
        return self


class ActiveConfig(_Strict):
    """Which unlabelled events to ask a label for, at what budget, and how long to wait.

    ``budget`` is the share of unlabelled events queried; ``budget_per_second`` (> 0) also
    caps queries per second (the tighter of the two holds). Scores:
    ``uncertainty`` of the prediction, ``sensitivity`` of the prediction to the proximal
    strength lambda (``|grad_w f(x; w*) . dw*/dlambda|``), ``combined`` (``mix`` of the
    two's quantiles) or ``random``. ``dw*/dlambda`` is solved per key on the last
    ``sensitivity_window`` labels every ``sensitivity_every_labels`` labels."""

    enabled: bool = False
    policy: Literal["uncertainty", "sensitivity", "combined", "random"] = "uncertainty"
    budget: Annotated[float, Field(gt=0, le=1)] = 0.05
    budget_per_second: Annotated[float, Field(ge=0)] = 0.0
    mix: Probability = 0.5
    # A share of the budget spent on random events, whose labels alone feed drift detection
    # (the scored ones are hard cases by design: their error says little about the model's).
    explore: Annotated[float, Field(ge=0, lt=1)] = 0.2
    horizon: Annotated[int, Field(ge=1)] = 2500  # events the queried share is smoothed over
    reference: Annotated[int, Field(ge=10, le=1_000_000)] = 2000
    kp: Annotated[float, Field(ge=0)] = 2.0
    ki: Annotated[float, Field(ge=0)] = 0.5
    expiry_s: PositiveFloat = 3600.0
    max_pending: Annotated[int, Field(ge=1, le=10_000_000)] = 100_000
    remember: Annotated[int, Field(ge=1, le=10_000_000)] = 100_000
    sensitivity_every_labels: Annotated[int, Field(ge=1)] = 200
    sensitivity_window: Annotated[int, Field(ge=8, le=100_000)] = 2048
    sensitivity_per_key: Annotated[int, Field(ge=2, le=10_000)] = 32
    sensitivity_max_keys: Annotated[int, Field(ge=1, le=100_000)] = 256
    sensitivity_min_interval_s: Annotated[float, Field(ge=0)] = 2.0
    newton_steps: Annotated[int, Field(ge=0, le=50)] = 3
    cg_iterations: Annotated[int, Field(ge=1, le=500)] = 20
    lambda_tuning: LambdaTuningConfig = LambdaTuningConfig()
    pacing: PacingConfig = PacingConfig()
