"""advkd: a reproducible benchmark of Adv-KD and the samplers/students it competes with."""

__version__ = "0.1.0"
