"""The Denoising Student (Luhman & Luhman 2021): one network from x_T straight to the teacher's x_0, trained by
regression. params: its parameters, without torch; model: the family's class."""
