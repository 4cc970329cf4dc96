"""Comparing float32 results with stored references at a tolerance that follows float32 arithmetic.

A float32 result carries rounding errors of about FLOAT32_EPS times the magnitude of the terms that went into it,
and how many of them add up depends on the CPU: the SIMD width and the use of FMA decide the order in which a
matrix product or a sum accumulates its terms, so the same code gives results a few to a few hundred eps apart
on an AVX-512 Xeon and on an AMD EPYC. A fixed rtol = 1e-5 / atol = 1e-9 is a tolerance of a single machine: it
fails on entries near zero, whose error is set by the magnitude of the terms they were summed from, not by their
own. The tolerance here is a number of float32 ulps of a scale: the largest magnitude of the reference (errors
that come from terms of that size), or each value's own magnitude (sums of non-negative terms, which have no
cancellation). One "ulp" of x is FLOAT32_EPS x |x|, the spacing of float32 numbers at x to within a factor 2.
"""
import torch

FLOAT32_EPS = torch.finfo(torch.float32).eps   # 2^-23 = 1.19e-7: one ulp of float32 at 1
# Weight changes trained by Adam through a ComfyUI model, compared with a recorded run or with the same training
# along another route (gradient checkpointing). Adam moves every entry by about the learning rate each step, whatever
# its gradient's size, so an entry whose gradient is at rounding level moves by an amount set by rounding: such
# entries differ on the scale of max|delta| (the learning rate times the steps), not of their own value. Measured:
# the default erasure of the tiny SD1.5 model against its record, up to 400 ulps of max|reference| on an AVX-512
# Xeon; Flux's blocks with and without checkpointing on ComfyUI 0.3.64, 1,319. 4,096 ulps (4.9e-4 x max|reference|) leaves three times
# the worst; a wrong gradient or a changed setting moves the changes by their own size.
TRAINED_ULPS = 4096


def assert_float32_close(actual, reference, ulps, *, per_value=False, what=""):
    """Assert |actual - reference| <= ulps x FLOAT32_EPS x scale, elementwise.

    scale is max|reference| (the default) or, with per_value, |reference| of each value. The failure message gives
    the worst error in those ulps, so that a tolerance can be judged against what a CPU actually produced.
    """
    actual = torch.as_tensor(actual, dtype=torch.float64)
    reference = torch.as_tensor(reference, dtype=torch.float64)
    assert actual.shape == reference.shape, f"{what}: shape {tuple(actual.shape)}, reference {tuple(reference.shape)}"
    scale = reference.abs() if per_value else reference.abs().max()
    error = (actual - reference).abs()
    allowed = ulps * FLOAT32_EPS * scale
    if (error > allowed).any():
        in_ulps = error / (FLOAT32_EPS * scale).clamp_min(torch.finfo(torch.float64).tiny)
        worst = int(in_ulps.argmax())
        raise AssertionError(
            f"{what}: {int((error > allowed).sum())} of {error.numel()} values differ by more than {ulps} float32 "
            f"ulps of {'their own magnitude' if per_value else f'max|reference| = {float(scale):.4g}'}; the worst, "
            f"at index {worst}, is {float(actual.flatten()[worst]):.9g} against {float(reference.flatten()[worst]):.9g}"
            f" ({float(in_ulps.flatten()[worst]):.0f} ulps)")
