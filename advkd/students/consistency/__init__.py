"""Consistency distillation student (Song et al. 2023): a consistency function learnt from one teacher ODE step
between adjacent times of the teacher's DDIM grid against an EMA target network, sampled with 1 to a few steps.
params: its parameters, without torch; model: training and sampling."""
