"""Students distilled from the teacher's trajectories. One module per family (advkd, denoising); the networks
(generator), the shared training loop (training) and the stage plumbing (common) are shared. Which families exist
is decided by the registry, advkd.methods.FAMILIES; the distill stage is advkd.stages.students."""
