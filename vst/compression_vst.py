"""The pure-VST row of the compression harness (issue #16): generating in visual space.

The arms of `vst.compression` read a context and write text. The pure VST reads the
same context pages as the codec's tokens and writes the continuation page as tokens too;
the frozen codec decoder turns them into the likelihood of the text. It is the project's
own VST (`vst.model.VST`, vector modality) trained with the `learn` recipe's objective
(`vst.losses.compute_losses`: decoder-CE through the frozen decoder on every page it
predicts, from a head that starts at the decoder's prior), on windows
`[context pages][continuation page]` built from the same pairs.

Scored like the arms: teacher-forced (each continuation token predicted from the true
tokens before it, as each arm's byte t reads the true bytes < t), then the frozen
decoder's NLL of the first whole lines of the continuation page within `limit` bytes
(`Pairs.score_len`), per byte of those lines. Two references are scored the same way
(`decoder_references`): the decoder given null tokens (its prior: what the VST's
zero-initialised head starts at) and given the page's true tokens (what a perfect VST
would reach).

    from vst.compression_vst import PureVST
    vst = PureVST(pairs, codec, flavour="debug")
    loss = vst.loss(range(8)); bpb = vst.heldout(val_index, limit=128)
    refs = decoder_references(codec, pairs, val_index, limit=128)
"""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence

import numpy as np
import torch
from torch import nn

from vst.data import Window, collate_vector
from vst.losses import compute_losses
from vst.model import VST


class PairWindows:
    """The pairs as VST windows: [context pages][continuation page] (a `WindowSource`)."""

    def __init__(self, pairs, codec) -> None:
        self.pairs, self.codec = pairs, codec
        self.grid, self.D, self.n = tuple(codec.grid), int(pairs.vis.shape[2]), codec.n
        self.k = pairs.page_end.shape[1]

    def __len__(self) -> int:
        return len(self.pairs)

    def window(self, i: int) -> Window:
        p, n, k = self.pairs, self.n, self.k
        tokens = np.concatenate([p.vis[i], p.nxt[i]]).astype(np.float32)
        texts = [*p.page_texts(i), p.next_page_text(i)]
        T = (k + 1) * n
        # a window opens mid-document (its first token has no input, as in the store)
        return Window(tokens=tokens, doc_start=np.zeros(T, bool),
                      page=np.repeat(np.arange(k + 1), n), slot=np.tile(np.arange(n), k + 1),
                      pages=[(j * n, n, t) for j, t in enumerate(texts)], doc_ids=[str(i)])


class PureVST(nn.Module):
    """A VST trained on the pairs' windows with the `learn` recipe's objective."""

    def __init__(self, pairs, codec, flavour: str = "debug", seed: int = 0, **overrides) -> None:
        from vst.train import build_model_config
        from vst.train_config import TrainConfig

        super().__init__()
        self.source = PairWindows(pairs, codec)
        self.codec = codec
        self.tcfg = TrainConfig.from_recipe("learn", flavour=flavour, seed=seed,
                                            pages_per_window=self.source.k + 1, **overrides)
        torch.manual_seed(seed)
        self.model = VST(build_model_config(self.tcfg, self.source))
        self.lcfg = self.tcfg.loss_config()

    def batch(self, index: Sequence[int]):
        m = self.model.cfg
        return collate_vector([self.source.window(int(i)) for i in index], m.grid, m.rope)

    def loss(self, index: Sequence[int]) -> torch.Tensor:
        loss, _ = compute_losses(self.model, self.batch(index), self.lcfg, self.codec)
        return loss

    @torch.no_grad()
    def predict_next_page(self, index: Sequence[int]) -> torch.Tensor:
        """Teacher-forced predictions of the continuation page's tokens, [B, n, D]."""
        b = self.batch(index)
        h = self.model(b.inputs, b.bos, b.positions, b.doc_ids)
        k, n = self.source.k, self.source.n
        return self.model.head(h[:, k * n:(k + 1) * n]).float()

    def heldout(self, index: Sequence[int], limit: int) -> float:
        """Bits per byte of the scored continuation lines under the frozen decoder given
        the VST's predicted tokens."""
        return decoder_bpb(self.codec, self.source.pairs, index, limit, self.predict_next_page)


def decoder_references(codec, pairs, index: Sequence[int], limit: int) -> dict[str, float]:
    """The frozen decoder's bits per byte of the scored lines given null tokens (its prior:
    where the VST's zero-initialised head starts) and given the page's true tokens (what a
    perfect VST would reach)."""
    return {"decoder_prior": decoder_bpb(codec, pairs, index, limit,
                                         lambda idx: codec.null_tokens(len(idx)).float().cpu()),
            "decoder_true_tokens": decoder_bpb(
                codec, pairs, index, limit,
                lambda idx: torch.from_numpy(pairs.nxt[idx].astype(np.float32)))}


@torch.no_grad()
def decoder_bpb(codec, pairs, index: Sequence[int], limit: int,
                tokens_of: Callable[[np.ndarray], torch.Tensor], batch: int = 16) -> float:
    """Bits per byte of the scored continuation lines of pairs `index` under the frozen
    decoder given `tokens_of(idx)` ([B, n, D]) for each batch of pair indices."""
    nll, nbytes = 0.0, 0
    for s in range(0, len(index), batch):
        idx = np.asarray(index[s:s + batch])
        nll += float(scored_nll(codec, tokens_of(idx), pairs, idx, limit))
        nbytes += int(pairs.score_len(limit)[idx].sum())
    return nll / (math.log(2) * max(nbytes, 1))


def scored_nll(codec, tokens: torch.Tensor, pairs, index, limit: int) -> torch.Tensor:
    """Summed NLL (nats) of the scored lines of each continuation page given `tokens`
    [B, n, D]: the first `Pairs.score_lines(limit)` layout lines of every page."""
    lines = torch.from_numpy(pairs.score_lines(limit)[index])
    if bool((lines == 0).any()):
        raise ValueError("a continuation page's first line is longer than the scored bytes")
    texts = [pairs.next_page_text(int(i)) for i in index]
    dev = getattr(codec, "device", tokens.device)
    if codec.n_lines == 1:  # one line: the whole page
        return codec.line_nll(tokens.to(dev), texts).nll.sum().cpu()
    which = torch.arange(int(lines.max())).expand(len(texts), -1)
    nll = codec.line_nll(tokens.to(dev), texts, which.clamp(max=codec.n_lines - 1)).nll.cpu()
    return (nll * (which < lines[:, None])).sum()
