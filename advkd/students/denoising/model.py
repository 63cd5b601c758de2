"""The Denoising Student (Luhman & Luhman 2021): one network maps the full noise x_T straight to the deterministic
teacher's x_0, trained by regression only.

The network is the teacher's own UNet (diffusers UNet2DModel, same config), by default initialised from the
teacher's weights and called at the last timestep, as Luhman & Luhman did: the teacher already knows the data's
shapes at every scale, and a UNet sees the whole noise, of which x_0 is a deterministic function under DDIM.
"""

from __future__ import annotations

import torch

from ...data import save_grid, to_uint8
from ..common import generator_weights
from ..family import Sampling, StudentFamily
from ..networks import UNetStudent, count, unet_from_config
from ..training import regression_loss


def make_network(cfg: dict, unet=None) -> UNetStudent:
    return UNetStudent(unet if unet is not None else unet_from_config(cfg["unet_config"]), cfg["timestep"],
                       cfg["output"] == "residual")


class DenoisingStudent(StudentFamily):
    name = "denoising-student"

    def networks(self, cfg, teacher, device):
        return make_network(cfg, teacher if cfg["init"] == "teacher" else unet_from_config(cfg["unet_config"]))

    def segments(self, net, cfg, traj, device):
        x_T, x_0 = traj["x_T"], traj["states"][:, -1]

        def loss(idx, gen):
            value = regression_loss(cfg["regression"], net(x_T[idx].to(device)), x_0[idx].to(device))
            return value, {"regression": value.item()}
        return [self.one_network_segment(net, cfg, loss)]

    def modules(self, net):
        return {"gen": net}

    def sample_fn(self, net, cfg):
        return net

    def panel(self, net, cfg, traj, path, examples: int = 6):
        """Per training run: x_T, the teacher's x_0 and the student's, side by side."""
        x_T, x_0 = traj["x_T"][:examples], traj["states"][:examples, -1]
        with torch.no_grad():
            out = net(x_T)
        tiles = torch.stack([x_T.clamp(-1, 1), x_0, out], 1).flatten(0, 1)
        save_grid(path, to_uint8(tiles), nrow=3)

    def sampling(self, name, params, cfg, tensors, device):
        net = make_network(cfg)
        if tensors is not None:
            net.load_state_dict(generator_weights(tensors))
        return Sampling(net, net, count(net), {"epochs": cfg["epochs"], "generator_parameters": count(net)})
