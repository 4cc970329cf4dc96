"""Training objectives, one file each (the constrained family together), on the contract of contract.py."""
from .anchor import Anchor
from .constrained import ConstrainedForwardKL, ConstrainedLikelihood, ConstrainedReverseKL, dual_ascent
from .contract import Loss, Objective
from .esd import ESD
from .vdu import VDU

__all__ = ["ESD", "VDU", "Anchor", "ConstrainedForwardKL", "ConstrainedLikelihood", "ConstrainedReverseKL", "Loss",
           "Objective", "dual_ascent"]
