"""Operations of the documents area (declared with define_op; see base.py)."""

from __future__ import annotations
