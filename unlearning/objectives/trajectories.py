"""Noisy latents from partial sampling trajectories (ESD and the constrained objectives draw them), and the
two parameters that shape them."""
from ...divergences import Parameter
from ..sources import Trajectory

TRAJECTORY_STEPS = Parameter("trajectory_steps", 20, 2, 200, "Euler steps of the partial-sampling trajectories "
                                                              "that x_t is taken from.")
TRAJECTORY_CFG = Parameter("trajectory_cfg", 3.0, 0.0, 30.0, "CFG scale of those trajectories (ESD: 3).")


def trajectory(params: dict, trained: bool) -> Trajectory:
    """The trajectories an objective with TRAJECTORY_STEPS and TRAJECTORY_CFG among its parameters draws from:
    of the trained model (on-policy) or of the frozen one."""
    return Trajectory(trained, int(params["trajectory_steps"]), params["trajectory_cfg"])
