"""PyTorch: weight masks from raw bits, and the per-token cross-entropy."""

import math

import keras
import torch

from awd_lstm.backend._keras import torch_device, torch_generator


def keep_mask(shape, rate, seed):
    """Every entry from 16 random bits, kept when they are at least
    `round(rate * 2**16)`, four entries per 64-bit word drawn by the seed generator's
    `torch.Generator` (a float per entry took 4.6 times as long as three 16-bit fields
    per word, which took 2.5 times as long as four)."""
    size = math.prod(shape)
    threshold = round(rate * 2**16)
    words = torch.empty(-(-size // 4), dtype=torch.int64, device=torch_device())
    # Every 64-bit pattern but one (the range's end is exclusive): each 16-bit field
    # is uniform to within 2**-48. As signed 16-bit numbers the fields are shifted
    # down by 2**15, and so is the threshold.
    words.random_(-(2**63), 2**63 - 1, generator=torch_generator(seed))
    return (words.view(torch.int16)[:size] >= threshold - 2**15).reshape(shape)


def decoder_logits(inputs, table, bias):
    """`torch.nn.functional.linear`: `inputs @ table^T + bias` in one `addmm`."""
    as_tensor = keras.ops.convert_to_tensor
    return torch.nn.functional.linear(as_tensor(inputs), as_tensor(table), as_tensor(bias))


def move_averages(averages, variables, weight):
    """One `torch._foreach_lerp_` over every average: `average += (variable -
    average) * weight`. `_foreach_lerp_` is the private fused entry PyTorch's own
    optimizers (and Keras' PyTorch optimizers, with the other `_foreach_` ops) use;
    no public function updates a list of tensors in one call. The weight stays a
    tensor: no wait for the device at every step."""
    if not averages:
        return
    weight = keras.ops.convert_to_tensor(weight).to(averages[0].value.dtype)
    with torch.no_grad():
        torch._foreach_lerp_([a.value for a in averages], [v.value for v in variables], weight)


def target_cross_entropy(logits, targets):
    """On the flattened `(tokens, vocabulary)` logits: Keras' PyTorch loss moves the
    vocabulary axis to position 1 for `cross_entropy`, and the softmax and its
    gradient over that strided axis copy the whole array (10% of a small step)."""
    flat = torch.nn.functional.cross_entropy(
        logits.reshape(-1, logits.shape[-1]), targets.reshape(-1).long(), reduction="none"
    )
    return flat.reshape(targets.shape)


def native_lstm(sequences, h0, c0, kernel, recurrent_kernel, bias, go_backwards, return_sequences):
    """PyTorch's own fused LSTM (`torch._VF.lstm`, what `torch.nn.LSTM` runs: cuDNN on
    a GPU, its C++ kernel on CPU) with the given (dropped) kernels, as
    `(last_output, outputs, [h, c])`; None while `torch.compile` or tracing runs,
    where Keras' own loop serves."""
    compiling = hasattr(torch.compiler, "is_compiling") and torch.compiler.is_compiling()
    if compiling or torch.jit.is_tracing():
        return None
    as_tensor = keras.ops.convert_to_tensor
    kernel = as_tensor(kernel)
    dtype = kernel.dtype
    recurrent_kernel = as_tensor(recurrent_kernel).to(dtype)
    bias = as_tensor(bias).to(dtype)
    inputs = as_tensor(sequences).to(dtype)
    if go_backwards:
        inputs = torch.flip(inputs, dims=[1])
    # torch's layout: (4 units, inputs) with the same gate order i, f, c, o; one bias.
    params = [kernel.T.contiguous(), recurrent_kernel.T.contiguous(), bias]
    params.append(torch.zeros_like(bias))
    state = (
        as_tensor(h0).to(dtype).unsqueeze(0).contiguous(),
        as_tensor(c0).to(dtype).unsqueeze(0).contiguous(),
    )
    # torch._VF.lstm is the private entry torch.nn.LSTM itself calls; it takes the
    # weights as arguments, where the module would need them as its parameters.
    # (input, hx, params, has_biases, num_layers, dropout, train, bidirectional,
    # batch_first)
    outputs, h, c = torch._VF.lstm(
        inputs, state, params, True, 1, 0.0, torch.is_grad_enabled(), False, True
    )
    last = outputs[:, -1]
    if not return_sequences:
        outputs = last.unsqueeze(1)
    return last, outputs, [h.squeeze(0), c.squeeze(0)]


def activation_modules():
    return (torch,)


def has_gpu():
    """Whether Keras' PyTorch backend computes on a CUDA device."""
    return torch.cuda.is_available()


def device_memory():
    """CUDA's free memory plus what PyTorch's cache holds unused."""
    free, _ = torch.cuda.mem_get_info()
    return free + torch.cuda.memory_reserved() - torch.cuda.memory_allocated()


def is_out_of_memory(error):
    if isinstance(error, torch.cuda.OutOfMemoryError):
        return True
    # The CPU allocator's failure is a plain RuntimeError.
    return isinstance(error, RuntimeError) and "can't allocate memory" in str(error)
