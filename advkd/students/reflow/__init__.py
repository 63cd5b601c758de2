"""Rectified-flow reflow student (Liu et al. 2023, 2-rectified flow): a velocity network trained on straight paths
between the teacher's paired (x_T, x_0) runs, sampled with a few Euler steps. params: its parameters, without
torch; model: training and sampling."""
