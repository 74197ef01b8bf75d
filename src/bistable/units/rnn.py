"""PyTorch's GRU and LSTM behind the unit interface (batch-first, explicit state, ``step``)."""

from __future__ import annotations

import torch
from torch import nn

from .base import check_input, check_sizes, check_state, check_step_input, transforms_active


class _TorchRNN(nn.Module):
    """A one-layer ``rnn_class`` (batch_first); subclasses convert the state to and from PyTorch's
    ``(1, B, H)`` layout. ``step`` runs the same module on a one-step sequence."""

    rnn_class: type[nn.RNNBase]

    def __init__(self, input_size: int, hidden_size: int):
        super().__init__()
        check_sizes(input_size=input_size, hidden_size=hidden_size)
        self.input_size, self.hidden_size = input_size, hidden_size
        self.rnn = self.rnn_class(input_size, hidden_size, batch_first=True)

    def _to_torch(self, state, batch: int):
        raise NotImplementedError

    def _from_torch(self, hidden):
        raise NotImplementedError

    def forward(self, x: torch.Tensor, state=None):
        """x ``(B, T, F)``, state or None → (y ``(B, T, H)``, state)."""
        check_input(x, self.input_size, module=self)
        hidden = None if state is None else self._to_torch(state, x.shape[0])
        try:
            y, hidden = self.rnn(x, hidden)
        except RuntimeError as err:
            if transforms_active():  # torch's own message names a broadcast, not the cause
                raise RuntimeError(
                    f"{type(self).__name__.lower()}: torch.func.vmap (per-sample gradients) "
                    f"cannot batch torch's {self.rnn_class.__name__} kernel here (no batching "
                    "rule); torch.func.grad and the Jacobians work, and the bistable units run "
                    "under vmap") from err
            raise
        return y, self._from_torch(hidden)

    def step(self, x_t: torch.Tensor, state=None):
        """One step: x_t ``(B, F)``, state or None → (y_t ``(B, H)``, state)."""
        check_step_input(x_t, self.input_size, module=self)
        y, state = self.forward(x_t.unsqueeze(1), state)
        return y[:, 0], state

    def extra_repr(self) -> str:
        return f"{self.input_size}, {self.hidden_size}"


class GRU(_TorchRNN):
    r"""``nn.GRU`` with the unit interface; PyTorch's equations and init:

        r_t = σ(W_ir x_t + b_ir + W_hr h_{t-1} + b_hr)
        z_t = σ(W_iz x_t + b_iz + W_hz h_{t-1} + b_hz)
        n_t = tanh(W_in x_t + b_in + r_t ⊙ (W_hn h_{t-1} + b_hn))
        h_t = (1 − z_t) ⊙ n_t + z_t ⊙ h_{t-1},   y_t = h_t

    Shapes: x ``(B, T, input_size)`` → y ``(B, T, hidden_size)``; state ``(B, hidden_size)``,
    zeros by default.
    """

    rnn_class = nn.GRU

    def _to_torch(self, state, batch: int):
        w = self.rnn.weight_hh_l0
        check_state(state, (batch, self.hidden_size), dtype=w.dtype, device=w.device)
        return state.unsqueeze(0).contiguous()

    def _from_torch(self, hidden):
        return hidden[0]


class LSTM(_TorchRNN):
    r"""``nn.LSTM`` with the unit interface; PyTorch's equations and init:

        (i_t, f_t, g_t, o_t) = (σ, σ, tanh, σ)(W_i x_t + b_i + W_h h_{t-1} + b_h)
        c_t = f_t ⊙ c_{t-1} + i_t ⊙ g_t,   h_t = o_t ⊙ tanh(c_t),   y_t = h_t

    Shapes: x ``(B, T, input_size)`` → y ``(B, T, hidden_size)``; the state is the tuple
    ``(h, c)``, each ``(B, hidden_size)``, zeros by default.
    """

    rnn_class = nn.LSTM

    def _to_torch(self, state, batch: int):
        if not isinstance(state, tuple) or len(state) != 2:
            raise ValueError(f"state: expected a tuple (h, c), got {type(state).__name__}")
        for name, s in zip(("state[0] (h)", "state[1] (c)"), state):
            check_state(s, (batch, self.hidden_size), name, self.rnn.weight_hh_l0.dtype,
                        self.rnn.weight_hh_l0.device)
        return tuple(s.unsqueeze(0).contiguous() for s in state)

    def _from_torch(self, hidden):
        return hidden[0][0], hidden[1][0]
