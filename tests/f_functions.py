"""The f of each f-GAN pair, with its slope f' and its convex conjugate f*, as the f-GAN paper (arXiv 1606.00709)
tabulates them: the mathematics the variational forms in divergences/variational.py are checked against (the
Fenchel identity, the conjugate of the activation, the integral of f), kept with the tests that read them."""
from dataclasses import dataclass
from typing import Callable

import torch


@dataclass(frozen=True)
class FFunction:
    f: Callable[[torch.Tensor], torch.Tensor]          # f(u)
    slope: Callable[[torch.Tensor], torch.Tensor]      # f'(u)
    conjugate: Callable[[torch.Tensor], torch.Tensor]  # f*(t)


F_FUNCTIONS = {
    "kl": FFunction(lambda u: u * torch.log(u), lambda u: torch.log(u) + 1, lambda t: torch.exp(t - 1)),
    "reverse_kl": FFunction(lambda u: -torch.log(u), lambda u: -1 / u, lambda t: -1 - torch.log(-t)),
    "hellinger": FFunction(lambda u: (u.sqrt() - 1) ** 2, lambda u: 1 - u.rsqrt(), lambda t: t / (1 - t)),
    "jensen_shannon": FFunction(lambda u: u * torch.log(u) - (u + 1) * torch.log((u + 1) / 2),
                                lambda u: torch.log(2 * u / (u + 1)), lambda t: -torch.log(2 - torch.exp(t))),
    "pearson_chi2": FFunction(lambda u: (u - 1) ** 2, lambda u: 2 * (u - 1), lambda t: t * t / 4 + t),
    "total_variation": FFunction(lambda u: (u - 1).abs() / 2, lambda u: torch.sign(u - 1) / 2, lambda t: t),
}


def f_function(pair_name: str) -> FFunction:
    assert pair_name in F_FUNCTIONS, (f"the f-GAN pair '{pair_name}' has no f, f' and f* in tests/f_functions.py: "
                                      f"add them to F_FUNCTIONS")
    return F_FUNCTIONS[pair_name]
