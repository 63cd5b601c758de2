"""2-rectified flow (Liu, Gong and Liu 2023) on the teacher's couplings: the distillation set pairs each x_T with
the deterministic teacher's x_0, and the straight path between them, x_s = s x_T + (1 - s) x_0 (s = 1 at the
noise), has the constant velocity x_T - x_0. A network w(x_s, s) learns it by regression at random s; sampling
runs Euler steps from s = 1 to 0: x <- x - (1/K) w(x, s).

The network is the teacher's UNet, teacher-initialised, called at the DDPM timestep 999 s. At s = 1 the teacher's
output is its noise estimate, close to x_T, so one Euler step x_T - w starts where the Denoising Student's
residual reading starts (a blank image) and the two differ only in that reflow also learns the rest of the path.
"""

from __future__ import annotations

import torch

from ...data import save_grid, to_uint8
from ..common import generator_weights
from ..family import Sampling, StudentFamily
from ..networks import count, unet_from_config
from ..vp import TimedUNet


def make_network(cfg: dict, unet=None) -> TimedUNet:
    return TimedUNet(unet if unet is not None else unet_from_config(cfg["unet_config"]), cfg["timestep"])


def euler(net: TimedUNet, x_T, steps: int):
    """x_T to the image in `steps` equal Euler steps of the learnt velocity."""
    x, top = x_T, net.default_time
    for i in range(steps):
        x = x - net(x, top * (1 - i / steps)) / steps
    return x


class Reflow(StudentFamily):
    name = "reflow"

    def networks(self, cfg, teacher, device):
        return make_network(cfg, teacher)

    def segments(self, net, cfg, traj, device):
        x_T, x_0 = traj["x_T"], traj["states"][:, -1]

        def loss(idx, gen):
            s = torch.rand(len(idx), generator=gen).view(-1, 1, 1, 1)
            a, b = x_T[idx], x_0[idx]
            x_s = (s * a + (1 - s) * b).to(device)
            value = torch.nn.functional.mse_loss(net(x_s, (net.default_time * s.flatten()).to(device)),
                                                 (a - b).to(device))
            return value, {"velocity": value.item()}
        return [self.one_network_segment(net, cfg, loss)]

    def modules(self, net):
        return {"gen": net}

    def sample_fn(self, net, cfg):
        return lambda z: euler(net, z, 1)

    def panel(self, net, cfg, traj, path, examples: int = 6):
        """Per training run: x_T, the teacher's x_0, the student's with 1 and 2 Euler steps."""
        x_T, x_0 = traj["x_T"][:examples], traj["states"][:examples, -1]
        with torch.no_grad():
            one, two = euler(net, x_T, 1), euler(net, x_T, 2)
        tiles = torch.stack([x_T.clamp(-1, 1), x_0, one.clamp(-1, 1), two.clamp(-1, 1)], 1)
        save_grid(path, to_uint8(tiles.flatten(0, 1)), nrow=4)

    def sampling(self, name, params, cfg, tensors, device):
        net = make_network(cfg)
        if tensors is not None:
            net.load_state_dict(generator_weights(tensors))
        info = {"epochs": cfg["epochs"], "steps": params.steps, "generator_parameters": count(net)}
        return Sampling(lambda x: euler(net, x, params.steps).clamp(-1, 1), net, count(net), info)
