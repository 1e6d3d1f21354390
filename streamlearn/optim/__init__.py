"""How a step is sized. Each rule is a pure function over tensors."""

from streamlearn.optim.adagrad import AdagradState, adagrad_step, proximal_grad

__all__ = ["AdagradState", "adagrad_step", "proximal_grad"]
