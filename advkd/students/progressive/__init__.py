"""Progressive distillation student (Salimans and Ho 2022): rounds that halve the teacher's deterministic sampler,
each round's student learning two steps of the previous one in one; one training run gives a row at every step
count it passes. params: its parameters, without torch; model: training and sampling."""
