"""Closed forms for a Gaussian-mixture data law along the rectified-flow path (spec section 10).

Data ``p0 = sum_k pi_k N(mu_k, Sigma_k)`` in ``d`` dimensions, path ``x = (1 - sigma) x0 + sigma eps``:
marginal components ``N(m_k, C_k)`` with ``m_k = (1 - sigma) mu_k``, ``C_k = (1 - sigma)^2 Sigma_k + sigma^2 I``.
All arithmetic is float64.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch
from torch import Tensor


@dataclass(frozen=True)
class Mixture:
    weights: Tensor  # (K,) summing to 1
    means: Tensor  # (K, d)
    covs: Tensor  # (K, d, d)

    @staticmethod
    def create(weights, means, covs) -> Mixture:
        w = torch.as_tensor(weights, dtype=torch.float64)
        return Mixture(w / w.sum(), torch.as_tensor(means, dtype=torch.float64),
                       torch.as_tensor(covs, dtype=torch.float64))

    @property
    def dim(self) -> int:
        return self.means.shape[1]

    def subset(self, components: list[int]) -> Mixture:
        index = torch.as_tensor(components)
        return Mixture.create(self.weights[index], self.means[index], self.covs[index])

    def sample(self, n: int, generator: torch.Generator) -> tuple[Tensor, Tensor]:
        """``n`` exact samples and their component labels."""
        labels = torch.multinomial(self.weights, n, replacement=True, generator=generator)
        chol = torch.linalg.cholesky(self.covs)[labels]
        z = torch.randn(n, self.dim, 1, generator=generator, dtype=torch.float64)
        return self.means[labels] + (chol @ z).squeeze(-1), labels

    def _eig(self) -> tuple[Tensor, Tensor]:
        """``Sigma_k = U_k diag(lam_k) U_k^T``; then ``C_k = U_k diag((1-sigma)^2 lam_k + sigma^2) U_k^T``."""
        lam, u = torch.linalg.eigh(self.covs)
        return lam, u

    def log_prob_components(self, x: Tensor, sigma: Tensor) -> tuple[Tensor, Tensor, Tensor]:
        """At levels ``sigma (B,)``: ``log pi_k + log N(x; m_k, C_k)`` ``(B, K)``, ``C_k^-1 (x - m_k)`` and
        ``Sigma_k C_k^-1 (x - m_k)`` (both ``(B, K, d)``)."""
        lam, u = self._eig()
        s = sigma.double().reshape(-1, 1, 1)
        resid = x.double()[:, None, :] - (1 - s) * self.means[None]  # (B, K, d)
        y = torch.einsum("bkd,kde->bke", resid, u)  # coordinates in each component's eigenbasis
        c = (1 - s) ** 2 * lam[None] + s**2  # eigenvalues of C_k, (B, K, d)
        sol = torch.einsum("bke,kde->bkd", y / c, u)
        cov_sol = torch.einsum("bke,kde->bkd", lam[None] * y / c, u)
        logp = torch.log(self.weights)[None] - 0.5 * ((y**2 / c).sum(-1) + torch.log(c).sum(-1)
                                                      + self.dim * math.log(2 * math.pi))
        return logp, sol, cov_sol

    def log_prob(self, x: Tensor, sigma: Tensor | float = 0.0) -> Tensor:
        sigma = torch.as_tensor(sigma, dtype=torch.float64).expand(x.shape[0])
        return torch.logsumexp(self.log_prob_components(x, sigma)[0], dim=1)

    def responsibilities(self, x: Tensor, sigma: Tensor | float = 0.0) -> Tensor:
        sigma = torch.as_tensor(sigma, dtype=torch.float64).expand(x.shape[0])
        return torch.softmax(self.log_prob_components(x, sigma)[0], dim=1)

    def velocity(self, x: Tensor, sigma: Tensor) -> Tensor:
        """Exact velocity ``E[eps - x0 | x_sigma = x]`` at per-sample levels ``sigma (B,)``; dtype of ``x``."""
        logp, sol, cov_sol = self.log_prob_components(x, sigma)
        r = torch.softmax(logp, dim=1)[..., None]  # (B, K, 1)
        s = sigma.double().reshape(-1, 1, 1)
        e_eps = s * sol  # E[eps | x, k] = sigma C_k^-1 (x - m_k)
        e_x0 = self.means[None] + (1 - s) * cov_sol  # E[x0 | x, k] = mu_k + (1 - sigma) Sigma_k C_k^-1 (x - m_k)
        return (r * (e_eps - e_x0)).sum(1).to(x.dtype)

    def score(self, x: Tensor, sigma: Tensor) -> Tensor:
        logp, sol, _ = self.log_prob_components(x, sigma)
        r = torch.softmax(logp, dim=1)[..., None]
        return -(r * sol).sum(1).to(x.dtype)

    def tilt_linear(self, w: Tensor, beta: float) -> Mixture:
        """``p0 * exp(w^T x / beta)``: components shift by ``Sigma_k a``, weights ``pi_k exp(a^T mu_k + a^T Sigma_k a / 2)``
        with ``a = w / beta``."""
        a = torch.as_tensor(w, dtype=torch.float64) / beta
        shift = self.covs @ a
        logw = torch.log(self.weights) + self.means @ a + 0.5 * (shift @ a)
        return Mixture(torch.softmax(logw, 0), self.means + shift, self.covs)

    def tilt_quadratic(self, center: Tensor, precision: Tensor, beta: float) -> Mixture:
        """``p0 * exp(-(x - c)^T A (x - c) / (2 beta))``: each component's precision grows by ``A / beta``."""
        c = torch.as_tensor(center, dtype=torch.float64)
        a = torch.as_tensor(precision, dtype=torch.float64) / beta
        prec = torch.linalg.inv(self.covs)
        new_cov = torch.linalg.inv(prec + a)
        new_mean = (new_cov @ ((prec @ self.means[..., None]).squeeze(-1) + a @ c)[..., None]).squeeze(-1)
        # weight_k ~ pi_k * integral N(x; mu_k, S_k) exp(-(x-c)^T a (x-c)/2) dx
        #         = pi_k * N(c; mu_k, S_k + a^-1) * (2 pi)^{d/2} |a|^{-1/2}; the constant factor cancels.
        cov_c = self.covs + torch.linalg.inv(a)
        resid = c - self.means
        maha = (resid[:, None, :] @ torch.linalg.solve(cov_c, resid[..., None])).reshape(-1)
        logw = torch.log(self.weights) - 0.5 * (maha + torch.logdet(cov_c))
        return Mixture(torch.softmax(logw, 0), new_mean, new_cov)


def energy_distance(x: Tensor, y: Tensor) -> float:
    """Energy distance ``2 E|X - Y| - E|X - X'| - E|Y - Y'|`` (V-statistics, float64)."""
    x, y = x.double().flatten(1), y.double().flatten(1)
    return float(2 * torch.cdist(x, y).mean() - torch.cdist(x, x).mean() - torch.cdist(y, y).mean())
