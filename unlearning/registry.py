"""Every objective a user can pick, by name: the training objectives (objectives/) and the closed-form edits
(closed_form/). The option nodes, the docs' lists and the engine read this one registry; adding an objective is
its file and one `register_objective` line here."""
from .closed_form import UCE
from .method import Method
from .objectives import ESD, VDU, Anchor, ConstrainedForwardKL, ConstrainedLikelihood, ConstrainedReverseKL

OBJECTIVES: dict[str, type[Method]] = {}


def register_objective(objective: type[Method]) -> type[Method]:
    """Add a training objective or closed-form edit class; TypeError naming what it leaves out."""
    objective.check_described()
    OBJECTIVES[objective.name] = objective
    return objective


for _objective in (Anchor, ESD, ConstrainedReverseKL, ConstrainedForwardKL, ConstrainedLikelihood, VDU, UCE):
    register_objective(_objective)


def get_objective(name: str) -> type[Method]:
    try:
        return OBJECTIVES[name]
    except KeyError:
        raise ValueError(f"objective '{name}' is unknown; choose one of: {', '.join(OBJECTIVES)}") from None
