"""A minimal AWD-LSTM in plain PyTorch: the recipe this project is measured against.

Per layer a `torch.nn.LSTM`-shaped set of weights whose hidden-to-hidden matrix is
DropConnect-masked once per forward pass and handed, with the others, to PyTorch's
fused LSTM kernel (`torch._VF.lstm`, what `nn.LSTM.forward` calls); embedding dropout
(whole word types), locked (variational) dropout on the embeddings, between layers and
on the output; a decoder tied to the embedding; AR and TAR; SGD with weight decay and
gradient-norm clipping. Hidden states are carried between segments without gradient.
No Keras here: this is what a PyTorch user would write.
"""

import torch
from torch import nn
from torch.nn import functional as F


def locked_dropout(x, rate, training):
    """`x` is `(time, batch, features)`; one mask per sequence."""
    if not training or rate == 0:
        return x
    mask = x.new_empty(1, x.size(1), x.size(2)).bernoulli_(1 - rate) / (1 - rate)
    return x * mask


class TorchAWDLSTM(nn.Module):
    def __init__(
        self,
        vocab_size,
        embedding_size,
        hidden_size,
        num_layers,
        embedding_dropout=0.1,
        input_dropout=0.4,
        hidden_dropout=0.25,
        output_dropout=0.4,
        weight_dropout=0.5,
    ):
        super().__init__()
        self.embedding = nn.Embedding(vocab_size, embedding_size)
        nn.init.uniform_(self.embedding.weight, -0.1, 0.1)
        self.sizes = []
        self.layers = nn.ModuleList()
        for layer in range(num_layers):
            inputs = embedding_size if layer == 0 else hidden_size
            units = embedding_size if layer == num_layers - 1 else hidden_size
            self.layers.append(nn.LSTM(inputs, units))  # its weights; its forward is not used
            self.sizes.append(units)
        self.decoder_bias = nn.Parameter(torch.zeros(vocab_size))
        self.rates = (embedding_dropout, input_dropout, hidden_dropout, output_dropout)
        self.weight_dropout = weight_dropout

    def init_hidden(self, batch):
        device = self.decoder_bias.device
        return [
            (
                torch.zeros(1, batch, units, device=device),
                torch.zeros(1, batch, units, device=device),
            )
            for units in self.sizes
        ]

    def forward(self, ids, hidden):
        """`ids` is `(time, batch)`; returns logits `(time, batch, vocab)`, the new
        hidden states, and the last layer's raw and dropped outputs (for AR/TAR)."""
        embedding_dropout, input_dropout, hidden_dropout, output_dropout = self.rates
        table = self.embedding.weight
        if self.training and embedding_dropout:
            keep = table.new_empty(table.size(0), 1).bernoulli_(1 - embedding_dropout)
            table = table * keep / (1 - embedding_dropout)
        x = locked_dropout(F.embedding(ids, table), input_dropout, self.training)
        new_hidden = []
        for i, lstm in enumerate(self.layers):
            w_hh = F.dropout(lstm.weight_hh_l0, self.weight_dropout, self.training)
            weights = [lstm.weight_ih_l0, w_hh, lstm.bias_ih_l0, lstm.bias_hh_l0]
            x, h, c = torch._VF.lstm(
                x, hidden[i], weights, True, 1, 0.0, self.training, False, False
            )
            new_hidden.append((h, c))
            raw = x
            if i < len(self.layers) - 1:
                x = locked_dropout(x, hidden_dropout, self.training)
        dropped = locked_dropout(raw, output_dropout, self.training)
        logits = F.linear(dropped, self.embedding.weight, self.decoder_bias)
        return logits, new_hidden, raw, dropped


def training_step(model, optimizer, ids, targets, hidden, alpha=2.0, beta=1.0, clip=0.25):
    """One step of the recipe; returns the cross-entropy and the detached hidden."""
    model.train()
    optimizer.zero_grad(set_to_none=True)
    logits, hidden, raw, dropped = model(ids, hidden)
    ce = F.cross_entropy(logits.reshape(-1, logits.size(-1)), targets.reshape(-1))
    loss = ce
    if alpha:
        loss = loss + alpha * dropped.pow(2).mean()
    if beta:
        loss = loss + beta * (raw[1:] - raw[:-1]).pow(2).mean()
    loss.backward()
    torch.nn.utils.clip_grad_norm_(model.parameters(), clip)
    optimizer.step()
    return float(ce), [(h.detach(), c.detach()) for h, c in hidden]
