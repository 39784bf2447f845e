"""The paper's equations, one component at a time, on hand values."""

from __future__ import annotations

import math

import pytest
import torch
import torch.nn.functional as F

from sigma_vla.models.action import ActionTokenizer
from sigma_vla.models.language import LanguageModulator, SemanticMemory
from sigma_vla.models.layers import masked_mean
from sigma_vla.models.vision import TauFiLM


def _gelu(x: float) -> float:
    return x * 0.5 * (1.0 + math.erf(x / math.sqrt(2.0)))


def _sigmoid(x: float) -> float:
    return 1.0 / (1.0 + math.exp(-x))


def test_memory_recurrence_matches_the_paper_formula_on_hand_values() -> None:
    # u = GELU(W_u z + b_u); lambda = sigmoid(W_l [m_prev; z] + b_l); m_t = lambda m_prev + (1 - lambda) u
    mem = SemanticMemory(2)
    with torch.no_grad():
        mem.w_u.weight.copy_(torch.tensor([[1.0, 0.0], [0.0, 1.0]]))
        mem.w_u.bias.copy_(torch.tensor([0.0, 0.5]))
        mem.w_l.weight.copy_(torch.tensor([[1.0, 0.0, 0.0, 0.0], [0.0, 0.0, 0.0, 1.0]]))
        mem.w_l.bias.copy_(torch.tensor([0.0, 0.5]))
    m_prev, z = [2.0, 0.0], [1.0, -1.0]
    u = [_gelu(1.0), _gelu(-1.0 + 0.5)]
    lam = [_sigmoid(2.0), _sigmoid(-1.0 + 0.5)]  # rows pick m_prev[0] and z[1]
    expected = [lam[i] * m_prev[i] + (1 - lam[i]) * u[i] for i in range(2)]
    got = mem(torch.tensor([z]), torch.tensor([m_prev]))
    assert got.shape == (1, 2)
    assert got[0].tolist() == pytest.approx(expected, abs=1e-6)
    assert expected == pytest.approx([1.861885, -0.096026], abs=1e-5)


def _random_film(d: int = 6, dt: int = 3) -> TauFiLM:
    film = TauFiLM(dt, 5, d, tau_log_scale=0.3, mod_log_scale=0.0)
    with torch.no_grad():
        film.fc2.weight.normal_(0, 0.5)  # leave the zero init so FiLM actually changes V_base
    return film


def test_film_follows_the_paper_equations() -> None:
    torch.manual_seed(0)
    film = _random_film()
    v_base, tau = torch.randn(2, 4, 6), torch.randn(2, 3)
    with torch.no_grad():
        film.mod_log_scale.fill_(math.log(0.25))
        h = F.gelu(film.fc1(math.exp(0.3) * tau))  # tau' = exp(theta_t) tau
        gamma, beta = film.fc2(h).chunk(2, dim=-1)
        v_film = gamma[:, None] * v_base + beta[:, None]
        expected = v_base + 0.25 * (v_film - v_base)  # exp(theta_mod) = 0.25
        assert torch.allclose(film(v_base, tau), expected, atol=1e-6)


def test_film_with_closed_valve_returns_v_base() -> None:
    torch.manual_seed(1)
    film = _random_film()
    v_base, tau = torch.randn(2, 4, 6), 10 * torch.randn(2, 3)
    with torch.no_grad():
        assert not torch.allclose(film(v_base, tau), v_base)
        film.mod_log_scale.fill_(-1e4)  # exp(theta_mod) -> 0
        assert torch.equal(film(v_base, tau), v_base)


def test_language_modulator_is_identity_at_tau_zero() -> None:
    torch.manual_seed(2)
    mod = LanguageModulator(dim=6, tau_dim=3, gate_dim=4, log_scale=0.0)
    hidden = torch.randn(2, 5, 6)
    assert torch.equal(mod(hidden, torch.zeros(2, 3)), hidden)
    assert not torch.allclose(mod(hidden, torch.randn(2, 3)), hidden)


def test_action_tokenizer_round_trip() -> None:
    tok = ActionTokenizer(bins=9, bin_range=4.0)  # centres -4, -3, ..., 4
    a = torch.tensor([[-4.0, 0.2, 3.4]])
    idx = tok.encode(a)
    assert idx.tolist() == [[0, 4, 7]]
    logits = F.one_hot(idx, 9).float() * 1e4
    assert tok.decode(logits).tolist() == [[-4.0, 0.0, 3.0]]


def test_masked_mean_ignores_padding() -> None:
    x = torch.tensor([[[1.0], [3.0], [100.0]]])
    assert masked_mean(x, torch.tensor([[True, True, False]])).item() == 2.0
