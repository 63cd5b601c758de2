"""The Adv-KD student family (Mekonnen et al. 2024): a progressive generator whose blocks are the denoising phases,
trained phase by phase against per-phase conditional critics. params: its parameters (the published recipe as
defaults) and layout rules, without torch; networks: the generator and critics; model: training and sampling."""
