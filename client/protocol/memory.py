"""Operations of the memory area (declared with define_op; see base.py)."""

from __future__ import annotations
