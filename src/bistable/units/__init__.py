"""Recurrent units: one file per unit, each an ``nn.Module`` with ``forward`` and ``step``."""
