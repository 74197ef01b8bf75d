"""The shared input and state checks of bistable.units.base."""

import math

import pytest
import torch

from bistable.units.base import check_input, check_state, check_step_input


def test_valid_inputs_pass():
    for dtype in (torch.float16, torch.bfloat16, torch.float32, torch.float64):
        check_input(torch.zeros(2, 3, 4, dtype=dtype), 4)
        check_step_input(torch.zeros(2, 4, dtype=dtype), 4)
    check_state(torch.zeros(2, 5), (2, 5))
    check_state(torch.zeros(2, 5, dtype=torch.complex64), (2, 5))


@pytest.mark.parametrize("bad,message", [
    ([[[0.0] * 4]], r"x: expected a torch.Tensor of shape \(B, T, 4\), got list"),
    (torch.zeros(3, 4), r"x: expected shape \(B, T, 4\) with T >= 1, got \(3, 4\)"),
    (torch.zeros(2, 3, 5), r"x: expected shape \(B, T, 4\) with T >= 1, got \(2, 3, 5\)"),
    (torch.zeros(2, 0, 4), r"got \(2, 0, 4\)"),
    (torch.zeros(2, 3, 4, dtype=torch.int32), r"x: expected a floating dtype .* got torch.int32"),
    (torch.zeros(2, 3, 4, dtype=torch.complex64), "x: expected a floating dtype"),
    (torch.tensor([[[0, 0, 0, math.inf]]]), "x: expected finite values"),
])
def test_check_input_names_argument_expected_and_received(bad, message):
    with pytest.raises(ValueError, match=message):
        check_input(bad, 4)


def test_check_step_input_and_state():
    with pytest.raises(ValueError, match=r"x_t: expected shape \(B, 4\), got \(2, 1, 4\)"):
        check_step_input(torch.zeros(2, 1, 4), 4)
    with pytest.raises(ValueError, match=r"inp: expected finite"):
        check_step_input(torch.tensor([[math.nan] * 4]), 4, name="inp")
    with pytest.raises(ValueError, match=r"state: expected shape \(2, 5\), got \(2, 6\)"):
        check_state(torch.zeros(2, 6), (2, 5))
    with pytest.raises(ValueError, match=r"h: expected a floating or complex dtype, got torch.int"):
        check_state(torch.zeros(2, 5, dtype=torch.int64), (2, 5), name="h")
    with pytest.raises(ValueError, match="state: expected finite"):
        check_state(torch.full((2, 5), math.nan), (2, 5))
