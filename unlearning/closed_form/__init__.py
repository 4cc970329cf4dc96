"""Closed-form edits: solved once, outside the training loop, on the contract of base.py."""
from .base import ClosedFormEdit, Edit, EditInputs
from .uce import UCE

__all__ = ["UCE", "ClosedFormEdit", "Edit", "EditInputs"]
