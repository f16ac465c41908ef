"""Model-quality metrics as QUALITY.md defines them (nats; per document unless said otherwise).

ELBO NLL = reconstruction NLL + KL(q(z|x) || N(0, I)); perplexity = exp(total NLL / total target
tokens), <eos> counted, <bos> not; IW-NLL with K importance samples; mutual information I(x; z) with
the aggregate posterior over the whole evaluation set; active units; a posterior-collapse detector.
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Sequence
from dataclasses import dataclass

import torch
from torch import Tensor

from vaelm.model.decode import eval_mode, greedy
from vaelm.model.vae import TextVAE, bag_of_words_nll, kl_divergence, reconstruction_nll

LOG_2PI = math.log(2 * math.pi)
COLLAPSE_KL = 0.1  # nats
AU_THRESHOLD = 0.01


def perplexity(total_nll: float, total_tokens: int) -> float:
    """exp(total NLL / total target tokens)."""
    return math.exp(total_nll / max(total_tokens, 1))


def gaussian_log_density(z: Tensor, mu: Tensor, logvar: Tensor) -> Tensor:
    """log N(z; mu, diag(exp(logvar))) summed over the last dimension (broadcasting)."""
    return -0.5 * (((z - mu) ** 2) / logvar.exp() + logvar + LOG_2PI).sum(dim=-1)


@torch.no_grad()
def iw_nll(
    model: TextVAE,
    tokens: Tensor,
    lengths: Tensor,
    *,
    k: int,
    chunk: int = 50,
    generator: torch.Generator | None = None,
) -> Tensor:
    """Importance-weighted NLL per document (B,): -(logsumexp_k [log p(z_k) + log p(x|z_k) - log q(z_k|x)]
    - log K), z_k ~ q(z|x). Samples are drawn `chunk` at a time to bound memory (chunk * B rows).
    In lm mode there is no z and this is the exact NLL."""
    if k < 1 or chunk < 1:
        raise ValueError(f"k={k}, chunk={chunk}: both must be at least 1")
    with eval_mode(model):
        mu, logvar = model.encode(tokens, lengths)  # (B, Z)
        inputs, targets = tokens[:, :-1], tokens[:, 1:]  # (B, T-1)
        if model.z_dim == 0:
            return reconstruction_nll(model.decode(inputs, None)[0], targets)
        log_w = [_log_weights(model, inputs, targets, mu, logvar, c, generator) for c in _chunks(k, chunk)]
        return -(torch.cat(log_w, dim=0).logsumexp(dim=0) - math.log(k))  # (B,)


def _chunks(total: int, size: int) -> list[int]:
    return [min(size, total - start) for start in range(0, total, size)]


def _log_weights(
    model: TextVAE,
    inputs: Tensor,
    targets: Tensor,
    mu: Tensor,
    logvar: Tensor,
    c: int,
    generator: torch.Generator | None,
) -> Tensor:
    """log p(z) + log p(x|z) - log q(z|x) for c samples per document: (c, B)."""
    B, Z = mu.shape
    eps = torch.randn((c, B, Z), generator=generator, device=mu.device)  # (c, B, Z)
    z = mu + eps * (0.5 * logvar).exp()  # (c, B, Z)
    log_q = gaussian_log_density(z, mu, logvar)  # (c, B)
    log_prior = gaussian_log_density(z, torch.zeros_like(z), torch.zeros_like(z))  # (c, B)
    logits, _ = model.decode(inputs.repeat(c, 1), z.reshape(c * B, Z))  # (c*B, T-1, V)
    log_px = -reconstruction_nll(logits, targets.repeat(c, 1)).view(c, B)  # (c, B)
    return log_prior + log_px - log_q


def mutual_information(
    mus: Tensor, logvars: Tensor, *, generator: torch.Generator | None = None, chunk: int = 256
) -> float:
    """I(x; z) = E[log q(z|x)] - E[log q(z)] with one z_i ~ q(z|x_i) per document and q(z) the average
    posterior over all N documents given (He et al. 2019's `calc_mi`, over the whole set, not a batch).
    Both terms are evaluated at the same z_i (calc_mi takes the first in closed form: same expectation,
    less variance, and exactly 0 when every posterior is the same). Cost N^2 * Z, in chunks of rows."""
    N, Z = mus.shape
    if N == 0 or Z == 0:
        return 0.0
    mus, logvars = mus.double(), logvars.double()
    eps = torch.randn((N, Z), generator=generator, device=mus.device, dtype=mus.dtype)
    z = mus + eps * (0.5 * logvars).exp()  # (N, Z)
    log_qzx = gaussian_log_density(z, mus, logvars)  # (N,)
    log_qz = []
    for start in range(0, N, chunk):
        dens = gaussian_log_density(z[start : start + chunk, None], mus[None], logvars[None])  # (c, N)
        log_qz.append(dens.logsumexp(dim=1) - math.log(N))  # (c,)
    return float((log_qzx - torch.cat(log_qz)).mean())


def active_units(mus: Tensor, *, threshold: float = AU_THRESHOLD) -> int:
    """Dimensions whose variance of mu(x) across the evaluation set (N, Z) is >= threshold."""
    if mus.size(0) < 2 or mus.size(1) == 0:
        return 0
    return int((mus.double().var(dim=0) >= threshold).sum())


@dataclass(frozen=True)
class CollapseReport:
    collapsed: bool
    kl: float
    active_units: int
    distinct_decodes: int
    decodes: int

    def describe(self) -> str:
        state = "posterior collapse" if self.collapsed else "z is used"
        return (
            f"{state}: KL {self.kl:.3f} nats (collapse < {COLLAPSE_KL}), active units {self.active_units}, "
            f"{self.distinct_decodes} distinct greedy decodes of {self.decodes} different z"
        )


def detect_collapse(*, kl: float, au: int, greedy_decodes: Sequence[Sequence[int] | str]) -> CollapseReport:
    """Collapsed when KL < 0.1 nats, no active unit, and greedy decodes of different z are all the same."""
    distinct = len({tuple(d) if not isinstance(d, str) else d for d in greedy_decodes})
    collapsed = kl < COLLAPSE_KL and au == 0 and distinct <= 1
    return CollapseReport(collapsed, kl, au, distinct, len(greedy_decodes))


def probe_decodes(model: TextVAE, *, n: int = 8, seed: int = 0, max_len: int | None = None) -> list[list[int]]:
    """Greedy decodes of n different z drawn from the prior (seeded), for the collapse detector."""
    device = next(model.parameters()).device
    gen = torch.Generator(device=device).manual_seed(seed)
    z = torch.randn((n, model.z_dim), generator=gen, device=device)  # (n, Z)
    return greedy(model, z=z, max_len=max_len)


@dataclass
class _Totals:
    rec: float = 0.0
    kl: float = 0.0
    iw: float = 0.0
    bow: float | None = None
    docs: int = 0
    tokens: int = 0


@torch.no_grad()
def evaluate(
    model: TextVAE,
    batches: Iterable[tuple[Tensor, Tensor]],
    *,
    iw_samples: int = 0,
    iw_chunk: int = 50,
    seed: int = 0,
    probes: int = 8,
) -> dict[str, float | int | bool]:
    """Metrics over (tokens, lengths) batches, one z sample per document, in eval mode (restored after).

    Keys: docs, tokens, rec_nll, kl, elbo_nll (per document), ppl (ELBO perplexity), rec_ppl, mi, au,
    iw_nll and iw_ppl when iw_samples > 0; in vae mode also collapsed and distinct_decodes; bow_nll (the
    bag-of-words NLL per document given z) with a bow head."""
    device = next(model.parameters()).device
    gen = torch.Generator(device=device).manual_seed(seed)
    tot, mus, logvars = _Totals(), [], []
    with eval_mode(model):
        for tokens, lengths in batches:
            out = model(tokens, lengths, generator=gen)
            tot.rec += float(reconstruction_nll(out.logits, tokens[:, 1:]).sum())
            tot.kl += float(kl_divergence(out.mu, out.logvar).sum())
            if out.bow_logits is not None:
                tot.bow = (tot.bow or 0.0) + float(bag_of_words_nll(out.bow_logits, tokens[:, 1:]).sum())
            tot.docs += tokens.size(0)
            tot.tokens += int((tokens[:, 1:] != 0).sum())
            mus.append(out.mu.float())
            logvars.append(out.logvar.float())
            if iw_samples > 0:
                tot.iw += float(iw_nll(model, tokens, lengths, k=iw_samples, chunk=iw_chunk, generator=gen).sum())
    return _summary(model, tot, torch.cat(mus), torch.cat(logvars), iw_samples=iw_samples, gen=gen, probes=probes)


def _summary(
    model: TextVAE,
    tot: _Totals,
    mu: Tensor,
    logvar: Tensor,
    *,
    iw_samples: int,
    gen: torch.Generator,
    probes: int,
) -> dict[str, float | int | bool]:
    docs = max(tot.docs, 1)
    result: dict[str, float | int | bool] = {
        "docs": tot.docs,
        "tokens": tot.tokens,
        "rec_nll": tot.rec / docs,
        "kl": tot.kl / docs,
        "elbo_nll": (tot.rec + tot.kl) / docs,
        "ppl": perplexity(tot.rec + tot.kl, tot.tokens),
        "rec_ppl": perplexity(tot.rec, tot.tokens),
        "mi": mutual_information(mu, logvar, generator=gen),
        "au": active_units(mu),
    }
    if tot.bow is not None:
        result["bow_nll"] = tot.bow / docs
    if iw_samples > 0:
        result.update(iw_nll=tot.iw / docs, iw_ppl=perplexity(tot.iw, tot.tokens))
    if model.z_dim > 0 and probes > 1:
        report = detect_collapse(
            kl=float(result["kl"]), au=int(result["au"]), greedy_decodes=probe_decodes(model, n=probes)
        )
        result.update(collapsed=report.collapsed, distinct_decodes=report.distinct_decodes)
    return result
