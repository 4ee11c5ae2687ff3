"""Independent reference computations for the tests (NumPy and PyTorch)."""

import numpy as np


def sigmoid(x):
    return 1.0 / (1.0 + np.exp(-x))


def numpy_lstm(x, kernel, recurrent_kernel, bias, h0=None, c0=None):
    """Keras-layout LSTM in NumPy (gates i, f, c, o); returns (outputs, h, c)."""
    x = np.asarray(x, dtype=np.float64)
    batch, steps, _ = x.shape
    units = recurrent_kernel.shape[0]
    h = np.zeros((batch, units)) if h0 is None else np.asarray(h0, np.float64)
    c = np.zeros((batch, units)) if c0 is None else np.asarray(c0, np.float64)
    outputs = []
    for t in range(steps):
        z = x[:, t] @ kernel + h @ recurrent_kernel + bias
        i, f, g, o = np.split(z, 4, axis=1)
        c = sigmoid(f) * c + sigmoid(i) * np.tanh(g)
        h = sigmoid(o) * np.tanh(c)
        outputs.append(h)
    return np.stack(outputs, axis=1), h, c


def numpy_tf1_lstm(
    x,
    kernel,
    bias,
    c0,
    h0,
    masks=None,
    forget_bias=1.0,
    projection=None,
    cell_clip=None,
    proj_clip=None,
    peepholes=None,
):
    """TensorFlow 1.x's `LSTMCell` in NumPy (float64), in TF1's own layout.

    Args:
        x: `(batch, time, features)`.
        kernel: TF1's `[W; U]`, `(features + h_size, 4 * units)`, gates `i, j, f, o`.
        bias: `(4 * units,)`, without `forget_bias` (added at every step, as TF1 does).
        c0, h0: The initial state.
        masks: None, one DropConnect mask of the kernel's shape for every step, or a
            list with one mask per step.
        projection: `(units, num_proj)` or None; `peepholes`: `(w_i, w_f, w_o)` or None.

    Returns:
        `(outputs, c, h)`.
    """
    x = np.asarray(x, np.float64)
    c, h = np.asarray(c0, np.float64), np.asarray(h0, np.float64)
    outputs = []
    for t in range(x.shape[1]):
        mask = masks[t] if isinstance(masks, list) else masks
        k = kernel if mask is None else kernel * mask
        i, j, f, o = np.split(np.concatenate([x[:, t], h], axis=1) @ k + bias, 4, axis=1)
        if peepholes is not None:
            w_i, w_f, w_o = peepholes
            c = sigmoid(f + forget_bias + w_f * c) * c + sigmoid(i + w_i * c) * np.tanh(j)
        else:
            c = sigmoid(f + forget_bias) * c + sigmoid(i) * np.tanh(j)
        if cell_clip is not None:
            c = np.clip(c, -cell_clip, cell_clip)
        h = sigmoid(o + (peepholes[2] * c if peepholes is not None else 0.0)) * np.tanh(c)
        if projection is not None:
            h = h @ projection
            if proj_clip is not None:
                h = np.clip(h, -proj_clip, proj_clip)
        outputs.append(h)
    return np.stack(outputs, axis=1), c, h


def torch_lstm_outputs_and_grads(x, kernel, recurrent_kernel, bias, recurrent_mask, upstream):
    """`torch.nn.LSTM` run with `weight_hh = (U * mask).T`; returns outputs and the
    gradients of `sum(outputs * upstream)` with respect to x, W, U and b.

    Keras stores `kernel` as (input, 4*units) with gates [i, f, c, o]; torch stores
    `weight_ih` as (4*units, input) with gates [i, f, g, o]: the same order,
    transposed. Keras has one bias; torch has `bias_ih + bias_hh`, so `bias_hh = 0`.
    """
    import torch

    torch.manual_seed(0)
    units = recurrent_kernel.shape[0]
    lstm = torch.nn.LSTM(kernel.shape[0], units, batch_first=True, dtype=torch.float64)
    x_t = torch.tensor(x, dtype=torch.float64, requires_grad=True)
    w = torch.tensor(kernel, dtype=torch.float64, requires_grad=True)
    u = torch.tensor(recurrent_kernel, dtype=torch.float64, requires_grad=True)
    b = torch.tensor(bias, dtype=torch.float64, requires_grad=True)
    m = torch.tensor(recurrent_mask, dtype=torch.float64)
    params = {
        "weight_ih_l0": w.T,
        "weight_hh_l0": (u * m).T,
        "bias_ih_l0": b,
        "bias_hh_l0": torch.zeros(4 * units, dtype=torch.float64),
    }
    out, _ = torch.func.functional_call(lstm, params, (x_t,))
    loss = (out * torch.tensor(upstream, dtype=torch.float64)).sum()
    loss.backward()
    grads = {
        "inputs": x_t.grad.numpy(),
        "kernel": w.grad.numpy(),
        "recurrent_kernel": u.grad.numpy(),
        "bias": b.grad.numpy(),
    }
    return out.detach().numpy(), grads


def torch_lstm_state_grads(x, h0, c0, kernel, recurrent_kernel, bias, upstreams, reverse=False):
    """`torch.nn.LSTM` (float64) from the state `(h0, c0)`, on `x` reversed in time
    if `reverse` (as Keras' `go_backwards`: outputs in processing order); returns
    `(outputs, h, c)` and the gradients of
    `sum(outputs * u_out) + sum(h * u_h) + sum(c * u_c)` with respect to x, h0, c0,
    W, U and b, for `upstreams = (u_out, u_h, u_c)`."""
    import torch

    units = recurrent_kernel.shape[0]
    lstm = torch.nn.LSTM(kernel.shape[0], units, batch_first=True, dtype=torch.float64)

    def leaf(array):
        return torch.tensor(np.asarray(array, dtype=np.float64), requires_grad=True)

    leaves = {
        "inputs": leaf(x),
        "h0": leaf(h0),
        "c0": leaf(c0),
        "kernel": leaf(kernel),
        "recurrent_kernel": leaf(recurrent_kernel),
        "bias": leaf(bias),
    }
    params = {
        "weight_ih_l0": leaves["kernel"].T,
        "weight_hh_l0": leaves["recurrent_kernel"].T,
        "bias_ih_l0": leaves["bias"],
        "bias_hh_l0": torch.zeros(4 * units, dtype=torch.float64),
    }
    inputs = torch.flip(leaves["inputs"], dims=[1]) if reverse else leaves["inputs"]
    state = (leaves["h0"][None], leaves["c0"][None])
    out, (h, c) = torch.func.functional_call(lstm, params, (inputs, state))
    results = (out, h[0], c[0])
    loss = sum((r * torch.tensor(u, dtype=torch.float64)).sum() for r, u in zip(results, upstreams))
    loss.backward()
    grads = {name: value.grad.numpy() for name, value in leaves.items()}
    return [r.detach().numpy() for r in results], grads
