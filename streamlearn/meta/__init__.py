"""Meta-learning the starting point ``theta0``: unrolled MAML with learned per-parameter
inner rates, and the implicit (iMAML) path."""
